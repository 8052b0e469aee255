"""A Cell Ranger ``count`` / ``multi`` output folder as a library's input, instead of FASTQs.

A library row of ``config/rna_libraries.tsv`` may name, in ``cellranger_outs``, a ``count`` run's ``outs/``
or a ``multi`` run's ``per_sample_outs/<sample>/count/`` folder (the way in for 10x Flex and CRISPR 5'
screens). From it :func:`load_outs` reads the feature-barcode matrix (10x HDF5, through scanpy's
``read_10x_h5(gex_only=False)``) into the same raw GEX and guide AnnData that
:func:`pairedscreen.rna.count.load_library` makes of kb's matrices, so cell calling, QC, doublets and guide
assignment run unchanged:

* ``raw_feature_bc_matrix.h5`` (all barcodes; the pipeline calls the cells), or with
  ``rna.cellranger.cells: cellranger`` ``filtered_feature_bc_matrix.h5`` (Cell Ranger's cells are kept:
  :func:`pairedscreen.rna.calling.keep_cells`). ``multi``'s per-sample names (``sample_*``) are accepted.
* "Gene Expression" features -> the GEX matrix (var_names unique gene names, ``var['gene_id']``);
  "CRISPR Guide Capture" features -> the guide matrix, var_names the feature ids, which must be the ids of
  ``config/guides.tsv`` (the feature reference Cell Ranger ran with). A matrix without guide features
  loads as a GEX-only library: all guide counts zero, ``uns['input']['guide_features'] == 0`` and a warning;
  no cell gets a guide, and the merge quarantines (or, under ``on_empty: error``, stops on) the library with
  that reason.
* ``crispr_analysis/protospacer_calls_per_cell.csv``, when present -> obs['cellranger_guide_ids'] (Cell
  Ranger's calls, ';'-joined, '' for none), kept alongside ours; :func:`guide_agreement` compares them.

Barcodes keep Cell Ranger's spelling (``AAAC...-1``): obs_names are ``{library}_{barcode}``.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp

from pairedscreen.errors import InputError, MissingInputError
from pairedscreen.io import sha256sum

PathLike = str | os.PathLike
log = logging.getLogger("pairedscreen.rna")

GEX, CRISPR = "Gene Expression", "CRISPR Guide Capture"
#: rna.cellranger.cells -> the matrix read
MATRIX = {"pipeline": "raw_feature_bc_matrix.h5", "cellranger": "filtered_feature_bc_matrix.h5"}
CALLS = Path("crispr_analysis") / "protospacer_calls_per_cell.csv"
#: other files of the folder recorded (sha256) when present
EXTRA = ("metrics_summary.csv", "web_summary.html")
#: HDF5 attributes of the matrix file kept in the provenance
H5_ATTRS = ("software_version", "chemistry_description", "filetype", "version", "library_ids",
            "original_gem_groups")
OBS_CALLS = "cellranger_guide_ids"


def matrix_path(outs: PathLike, cells: str) -> Path:
    """The matrix of ``outs`` for ``cells`` (``pipeline``: the raw matrix, ``cellranger``: the filtered one);
    ``multi``'s ``sample_`` names accepted. Raises :class:`MissingInputError` naming the folder, what it holds
    and the fix."""
    if cells not in MATRIX:
        raise ValueError(f"rna.cellranger.cells must be one of {sorted(MATRIX)}, got {cells!r}")
    outs = Path(outs)
    name = MATRIX[cells]
    for cand in (outs / name, outs / f"sample_{name}"):
        if cand.is_file():
            return cand
    have = sorted(p.name for p in outs.glob("*.h5")) if outs.is_dir() else []
    other = "cellranger" if cells == "pipeline" else "pipeline"
    fix = (f"point cellranger_outs at a Cell Ranger count run's outs/ or a multi run's "
           f"per_sample_outs/<sample>/count/ folder that has {name}")
    if any(MATRIX[other] in h for h in have):
        who = "Cell Ranger's cells are kept" if other == "cellranger" else "the pipeline calls the cells"
        fix += f", or set rna.cellranger.cells: {other} in config/config.yaml to read {MATRIX[other]} ({who})"
    raise MissingInputError(f"Cell Ranger folder {outs}: no {name} (nor sample_{name}); "
                            f"its .h5 files: {', '.join(have) or 'none'}. Fix: {fix}")


def _plain(x: Any) -> Any:
    return x.decode() if isinstance(x, bytes) else (x.item() if hasattr(x, "item") else x)


def h5_attrs(path: PathLike) -> dict[str, Any]:
    """The 10x HDF5 file attributes (Cell Ranger version, chemistry, ...) present, as plain values."""
    import h5py

    out: dict[str, Any] = {}
    with h5py.File(path, "r") as f:
        for k in H5_ATTRS:
            if k in f.attrs:
                v = f.attrs[k]
                v = v.tolist() if isinstance(v, np.ndarray) else v
                out[k] = [_plain(x) for x in v] if isinstance(v, list) else _plain(v)
    return out


def _int_csr(x: Any) -> sp.csr_matrix:
    x = sp.csr_matrix(x)
    if x.nnz and not np.array_equal(x.data, np.round(x.data)):
        raise InputError("the Cell Ranger matrix holds non-integer counts: it is not a feature-barcode "
                         "count matrix")
    return sp.csr_matrix(x.astype(np.int32))


def read_matrix(path: PathLike, library_id: str, guide_ids: list[str], batch: str | None = None
                ) -> tuple[ad.AnnData, ad.AnnData, int]:
    """Raw GEX and guide AnnData of a 10x feature-barcode h5 (same obs, Cell Ranger's barcode order) and
    the number of CRISPR Guide Capture features found.

    ``guide_ids``: the ids of ``config/guides.tsv``; every guide feature of the matrix must be one of them.
    Without guide features the guide AnnData has those ids as all-zero columns."""
    import scanpy as sc

    full = sc.read_10x_h5(str(path), gex_only=False)
    ftype = (full.var["feature_types"].astype(str) if "feature_types" in full.var
             else pd.Series(GEX, index=full.var_names)).to_numpy()
    ids = (full.var["gene_ids"].astype(str) if "gene_ids" in full.var
           else pd.Series(full.var_names, index=full.var_names)).to_numpy()
    barcodes = full.obs_names.astype(str).to_numpy()
    obs = pd.DataFrame({"barcode": barcodes, "library": library_id},
                       index=pd.Index([f"{library_id}_{b}" for b in barcodes]))
    obs["library"] = obs["library"].astype("category")
    is_gex, is_guide = ftype == GEX, ftype == CRISPR
    if not is_gex.any():
        raise InputError(f"{path}: no 'Gene Expression' features (feature types: "
                         f"{', '.join(sorted(set(ftype)))}). Fix: point cellranger_outs at the run whose "
                         "matrix holds the library's gene expression")
    names = full.var_names.astype(str).to_numpy()[is_gex]
    gex = ad.AnnData(X=_int_csr(full.X[:, is_gex]), obs=obs.copy(),
                     var=pd.DataFrame({"gene_id": ids[is_gex]},
                                      index=ad.utils.make_index_unique(pd.Index(names))))
    n_guides = int(is_guide.sum())
    if n_guides:
        gids = ids[is_guide]
        unknown = sorted(set(gids) - set(guide_ids))
        if unknown:
            raise InputError(f"{path}: {len(unknown)} CRISPR Guide Capture feature id(s) not in the guides "
                             f"sheet, e.g. {unknown[:5]}. Fix: use the feature reference Cell Ranger "
                             "ran with as config/guides.tsv (its ids), or add those guides to it")
        gx = _int_csr(full.X[:, is_guide])
    else:
        gids = np.asarray(guide_ids, dtype=str)
        gx = sp.csr_matrix((full.n_obs, len(gids)), dtype=np.int32)
        log.warning("%s has no CRISPR Guide Capture features (a GEX-only matrix): library %s gets no guide "
                    "calls, so no usable cell. Fix: point cellranger_outs at a count/multi run that included "
                    "the CRISPR Guide Capture library with config/guides.tsv as its feature reference, or "
                    "remove the library", path, library_id)
    guides = ad.AnnData(X=gx, obs=obs.copy(), var=pd.DataFrame(index=pd.Index(gids, dtype=str)))
    if batch is not None:
        for a in (gex, guides):
            a.obs["batch"] = pd.Categorical([batch] * a.n_obs)
    return gex, guides, n_guides


def read_calls(path: PathLike, library_id: str, obs_names: pd.Index) -> np.ndarray:
    """Cell Ranger's guide calls (``protospacer_calls_per_cell.csv``: cell_barcode, num_features,
    feature_call 'g1|g2', num_umis) over ``obs_names``: ';'-joined ids, '' where Cell Ranger called none."""
    df = pd.read_csv(path, dtype=str, keep_default_na=False)
    if not {"cell_barcode", "feature_call"} <= set(df.columns):
        raise InputError(f"{path}: columns {list(df.columns)}, not Cell Ranger's cell_barcode, feature_call. "
                         "Fix: use the run's crispr_analysis/protospacer_calls_per_cell.csv unchanged")
    calls = pd.Series(df["feature_call"].str.replace("|", ";", regex=False).to_numpy(),
                      index=library_id + "_" + df["cell_barcode"])
    return calls.reindex(obs_names).fillna("").to_numpy(dtype=object).astype(str)


def load_outs(outs: PathLike, library_id: str, guide_ids: list[str], batch: str | None = None,
              *, cells: str) -> tuple[ad.AnnData, ad.AnnData, dict[str, Any]]:
    """A Cell Ranger folder -> raw GEX AnnData, guide AnnData (same obs) and its provenance record
    ``{outs, matrix, cells, guide_features, files: {path: sha256}, h5 attrs..., metrics}``.

    GEX ``uns['input']`` holds the record (less the checksums); with ``cells == 'cellranger'`` the matrix is
    Cell Ranger's filtered one and :func:`pairedscreen.rna.calling.keep_cells` keeps its barcodes."""
    outs = Path(outs)
    h5 = matrix_path(outs, cells)
    gex, guides, n_guides = read_matrix(h5, library_id, guide_ids, batch)
    calls_path = outs / CALLS
    if calls_path.is_file():
        gex.obs[OBS_CALLS] = read_calls(calls_path, library_id, gex.obs_names)
    files = [h5] + ([calls_path] if calls_path.is_file() else []) + [
        outs / n for n in EXTRA if (outs / n).is_file()]
    attrs = h5_attrs(h5)
    info: dict[str, Any] = {"kind": "cellranger", "outs": str(outs), "matrix": str(h5), "cells": cells,
                            "guide_features": n_guides,
                            "guide_calls": str(calls_path) if calls_path.is_file() else "",
                            "software_version": None, **attrs}   # older h5s lack the version
    metrics = outs / "metrics_summary.csv"
    if metrics.is_file():
        row = pd.read_csv(metrics, dtype=str, keep_default_na=False)
        info["metrics"] = row.iloc[0].to_dict() if len(row) else {}
    gex.uns["input"] = {k: v for k, v in info.items() if k != "metrics" and v is not None}   # h5ad: no None
    log.info("Cell Ranger %s (%s): %s, %d barcodes x %d genes, %d guide features%s",
             attrs.get("software_version", "(version not recorded in the h5)"),
             attrs.get("chemistry_description", "?"), h5,
             gex.n_obs, gex.n_vars, n_guides,
             ", Cell Ranger's guide calls read" if calls_path.is_file() else "")
    info["files"] = {str(p): sha256sum(p) for p in files}
    return gex, guides, info


def guide_agreement(obs: pd.DataFrame) -> dict[str, Any] | None:
    """Our guide calls (obs['guide_ids']) against Cell Ranger's (obs['cellranger_guide_ids']) over a
    library's called cells; None without Cell Ranger's calls. Counts cells whose called guide sets are
    equal (both none included), ours-only, Cell Ranger-only and different, and the share equal."""
    if OBS_CALLS not in obs or "guide_ids" not in obs:
        return None

    def sets(s: pd.Series) -> list[frozenset[str]]:
        return [frozenset(g for g in str(v).split(";") if g and g != "nan") for v in s]

    ours, theirs = sets(obs["guide_ids"]), sets(obs[OBS_CALLS])
    same = sum(a == b for a, b in zip(ours, theirs, strict=True))
    ours_only = sum(bool(a) and not b for a, b in zip(ours, theirs, strict=True))
    cr_only = sum(bool(b) and not a for a, b in zip(ours, theirs, strict=True))
    n = len(ours)
    return {"cells": n, "same_guides": same, "ours_only": ours_only, "cellranger_only": cr_only,
            "different": n - same - ours_only - cr_only, "agreement": same / n if n else None}
