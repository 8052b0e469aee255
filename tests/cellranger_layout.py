"""Test helper: write a Cell Ranger output folder (10x HDF5 feature-barcode matrix, protospacer calls) from
count matrices, as ``cellranger count`` lays out its ``outs/``."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import scipy.sparse as sp

GEX, CRISPR = "Gene Expression", "CRISPR Guide Capture"


def write_10x_h5(path: Path, barcodes: list[str], gex: sp.spmatrix, gene_ids: list[str],
                 gene_names: list[str], guides: sp.spmatrix | None = None,
                 guide_ids: list[str] | None = None, genome: str = "sim",
                 software_version: str = "cellranger-8.0.1",
                 chemistry: str = "Single Cell 3' v3") -> Path:
    """The 10x HDF5 (v3) layout: group ``matrix`` with barcodes, data, indices, indptr, shape (features x
    barcodes, column = barcode) and features/{id,name,feature_type,genome,_all_tag_keys}; file attributes
    as Cell Ranger writes them."""
    mats, ids, names, types = [sp.csr_matrix(gex)], list(gene_ids), list(gene_names), [GEX] * len(gene_ids)
    if guides is not None and guide_ids:
        mats.append(sp.csr_matrix(guides))
        ids += list(guide_ids)
        names += list(guide_ids)
        types += [CRISPR] * len(guide_ids)
    x = sp.csr_matrix(sp.hstack(mats)).astype(np.int32)   # barcodes x features == CSC of features x barcodes
    x.sort_indices()
    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w") as f:
        f.attrs["filetype"] = "matrix"
        f.attrs["version"] = 2
        f.attrs["software_version"] = software_version
        f.attrs["chemistry_description"] = chemistry
        f.attrs["library_ids"] = np.array([b"lib1"])
        m = f.create_group("matrix")
        m.create_dataset("barcodes", data=np.array(barcodes, dtype="S"))
        m.create_dataset("data", data=x.data.astype(np.int32))
        m.create_dataset("indices", data=x.indices.astype(np.int64))
        m.create_dataset("indptr", data=x.indptr.astype(np.int64))
        m.create_dataset("shape", data=np.array([x.shape[1], x.shape[0]], dtype=np.int32))
        ft = m.create_group("features")
        ft.create_dataset("id", data=np.array(ids, dtype="S"))
        ft.create_dataset("name", data=np.array(names, dtype="S"))
        ft.create_dataset("feature_type", data=np.array(types, dtype="S"))
        ft.create_dataset("genome", data=np.array([genome] * len(ids), dtype="S"))
        ft.create_dataset("_all_tag_keys", data=np.array([b"genome"]))
    return path


def write_calls(path: Path, calls: pd.Series) -> Path:
    """``crispr_analysis/protospacer_calls_per_cell.csv`` from {barcode: ';'-joined guide ids} (non-empty)."""
    calls = calls[calls.astype(str) != ""]
    feats = calls.astype(str).str.split(";")
    df = pd.DataFrame({"cell_barcode": calls.index, "num_features": feats.map(len).to_numpy(),
                       "feature_call": feats.map("|".join).to_numpy(),
                       "num_umis": feats.map(lambda f: "|".join("10" for _ in f)).to_numpy()})
    path.parent.mkdir(parents=True, exist_ok=True)
    df.to_csv(path, index=False)
    return path


def outs_from_kb(kb_gex: Path, kb_guide: Path, outs: Path, library_id: str, keep: list[str] | None = None,
                 calls: pd.Series | None = None, name: str = "raw_feature_bc_matrix.h5") -> Path:
    """A Cell Ranger ``outs/`` made of kb's own count matrices of a library (barcodes get Cell Ranger's
    ``-1``): the union of the GEX and guide barcodes in kb's order, as the FASTQ route loads them.
    ``keep``: only these barcodes (kb spelling; a filtered matrix); ``calls``: Cell Ranger guide calls
    {kb barcode: ids}."""
    from pairedscreen.rna.count import load_library

    gex, guides = load_library(kb_gex, kb_guide, library_id)
    if keep is not None:
        gex, guides = gex[gex.obs["barcode"].isin(keep).to_numpy()], guides[guides.obs["barcode"].isin(keep)
                                                                         .to_numpy()]
    bcs = [f"{b}-1" for b in gex.obs["barcode"]]
    write_10x_h5(outs / name, bcs, gex.X, list(gex.var["gene_id"]), list(gex.var_names),
                 guides.X, list(guides.var_names))
    if calls is not None:
        c = calls.copy()
        c.index = [f"{b}-1" for b in c.index]
        write_calls(outs / "crispr_analysis" / "protospacer_calls_per_cell.csv", c)
    return outs
