"""RNA for Arc Institute's cell-load: ``results/train/rna/{cell_type}.h5ad`` + ``cell_load.toml``.

The h5ad holds the cells behind the pseudobulk (QC-passing singlets with one assigned registry perturbation,
controls included: :func:`pairedscreen.expression.usable_cells`):

- ``X``: raw integer counts (CSR, as counted); ``var``: the genes (``gene_id``, ``highly_variable``);
- ``obsm['X_hvg']``: log1p CP10k (:func:`pairedscreen.expression.log1p_cp10k`) of the ``train.n_hvg``
  genes with the highest variance of log1p CP10k over the exported cells (float32, dense);
- ``obs``: ``perturbation`` (target gene symbol for CRISPR targets, ``train.control_label`` for controls),
  ``perturbation_id`` (registry id), ``guide_id``, ``gem_group`` (= library), ``library``, ``batch``,
  ``cell_type``, ``is_control``, ``split``, ``batch_split``, ``barcode`` (categoricals, as cell-load
  reads them);
- rows sorted by (cell_type, perturbation) so each pair is contiguous (cell-load's consecutive loading).

The TOML names the export folder (absolute path: cell-load resolves dataset paths from its working
directory), trains on the dataset and lists the held-out perturbations (``val``/``test`` of splits.tsv) under
``[fewshot."pairedscreen.{cell_type}"]``.

Memory: the exported count rows are streamed from the merged cells file straight into their export
order (:func:`read_rows`), the log-normalised HVG block is written into the file one row block at a time;
peak ~ the exported counts + one block (see ``benchmarks/train_export.py``).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp

from pairedscreen.expression import log1p_cp10k, row_blocks, usable_cells
from pairedscreen.io import atomic_output
from pairedscreen.train.splits import CONTROL_SPLIT, cell_splits

PathLike = str | os.PathLike
DATASET = "pairedscreen"
OBS_COLUMNS = ("perturbation", "perturbation_id", "guide_id", "gem_group", "library", "batch", "cell_type",
               "is_control", "split", "batch_split", "barcode")


def perturbation_labels(registry: pd.DataFrame, control_label: str) -> dict[str, str]:
    """Registry id -> the label cell-load sees: the target gene symbol (the id when it has none), the
    control label for controls."""
    out = {}
    for r in registry.itertuples():
        gene = str(getattr(r, "target_gene", "") or "")
        pid = str(r.perturbation_id)
        out[pid] = control_label if bool(r.is_control) else (gene or pid)
    return out


def hvg_variance(x: sp.csr_matrix, n_top: int) -> np.ndarray:
    """Indices (sorted) of the ``n_top`` genes with the highest variance of log1p CP10k, computed one row
    block at a time (ties: lower gene index first)."""
    n, g = x.shape
    s1, s2 = np.zeros(g), np.zeros(g)
    for a, b in row_blocks(x.indptr):
        blk = log1p_cp10k(x[a:b])
        s1 += np.asarray(blk.sum(axis=0)).ravel()
        s2 += np.asarray(blk.multiply(blk).sum(axis=0)).ravel()
    mean = s1 / max(n, 1)
    var = s2 / max(n, 1) - mean**2
    order = np.lexsort((np.arange(g), -var))
    return np.sort(order[: min(n_top, g)])


def hvg_embedding(x: sp.csr_matrix, genes: np.ndarray, out: Any = None) -> Any:
    """Dense float32 log1p CP10k (normalised on all genes) of ``genes``, one row block at a time, into
    ``out`` (an array or an h5py dataset of shape cells x genes; a new array when None)."""
    if out is None:
        out = np.empty((x.shape[0], len(genes)), np.float32)
    for a, b in row_blocks(x.indptr):
        out[a:b] = log1p_cp10k(x[a:b])[:, genes].toarray()
    return out


def read_rows(h5ad: PathLike, rows: np.ndarray, n_vars: int, block_nnz: int = 1 << 20) -> sp.csr_matrix:
    """Rows ``rows`` (in that order) of the h5ad's CSR ``X``, streamed from the file one block of source rows
    at a time into the output arrays: peak ~ the output matrix + one block (no sorted copy, then a permuted
    copy). Files whose X is not CSR are read through anndata."""
    import h5py

    rows = np.asarray(rows, dtype=np.int64)
    with h5py.File(h5ad, "r") as f:
        g = f["X"]
        if not isinstance(g, h5py.Group) or g.attrs.get("encoding-type") != "csr_matrix":
            a = ad.read_h5ad(h5ad, backed="r")
            return sp.csr_matrix(a.X[rows]) if len(rows) else sp.csr_matrix((0, n_vars), dtype=np.int32)
        indptr = g["indptr"][:].astype(np.int64)
        lens = np.diff(indptr)
        out_ptr = np.zeros(len(rows) + 1, np.int64)
        np.cumsum(lens[rows], out=out_ptr[1:])
        data = np.empty(int(out_ptr[-1]), dtype=g["data"].dtype)
        indices = np.empty(int(out_ptr[-1]), dtype=g["indices"].dtype)
        dest = np.full(len(lens), -1, np.int64)
        dest[rows] = np.arange(len(rows))
        for a, b in row_blocks(indptr, block_nnz):
            sel = np.flatnonzero(dest[a:b] >= 0) + a
            if not sel.size:
                continue
            base = int(indptr[a])
            blk_data = g["data"][base:int(indptr[b])]
            blk_ind = g["indices"][base:int(indptr[b])]
            seg = lens[sel]
            total = int(seg.sum())
            if not total:
                continue
            within = np.arange(total) - np.repeat(np.cumsum(seg) - seg, seg)
            src_pos = np.repeat(indptr[sel] - base, seg) + within
            dst_pos = np.repeat(out_ptr[dest[sel]], seg) + within
            data[dst_pos] = blk_data[src_pos]
            indices[dst_pos] = blk_ind[src_pos]
            del blk_data, blk_ind, src_pos, dst_pos, within
    return sp.csr_matrix((data, indices, out_ptr), shape=(len(rows), n_vars))


def export_table(obs: pd.DataFrame, registry: pd.DataFrame, splits: pd.DataFrame, holdout: pd.DataFrame,
                 params: Mapping[str, Any]) -> pd.DataFrame:
    """The exported cells' obs (usable cells only, in export order), with ``row`` = position in ``obs``."""
    labels = perturbation_labels(registry, str(params["control_label"]))
    pid = obs["perturbation"].astype(str)
    lib = obs["library"].astype(str) if "library" in obs else pd.Series("", index=obs.index)
    sp_ = cell_splits(pid.to_numpy(), obs.index.astype(str), lib.to_numpy(), splits, holdout, "rna",
                      val_fraction=float(params["val_fraction"]),
                      test_fraction=float(params["test_fraction"]))
    ctrl_ids = set(splits.loc[splits["split"] == CONTROL_SPLIT, "perturbation_id"].astype(str))
    table = pd.DataFrame({
        "row": np.arange(len(obs)),
        "perturbation": pid.map(labels).to_numpy(),
        "perturbation_id": pid.to_numpy(),
        "guide_id": obs["guide_ids"].astype(str).to_numpy() if "guide_ids" in obs else "",
        "gem_group": lib.to_numpy(),
        "library": lib.to_numpy(),
        "batch": obs["batch"].astype(str).to_numpy() if "batch" in obs else "",
        "cell_type": str(params["cell_type"]),
        "is_control": pid.isin(ctrl_ids).to_numpy(),
        "split": sp_["split"].to_numpy(),
        "batch_split": sp_["batch_split"].to_numpy(),
        "barcode": obs["barcode"].astype(str).to_numpy() if "barcode" in obs else obs.index.astype(str),
    }, index=obs.index.astype(str))
    return table.sort_values(["cell_type", "perturbation", "perturbation_id", "row"], kind="stable")


def export_rna(rna_cells: PathLike, registry: pd.DataFrame, splits: pd.DataFrame, holdout: pd.DataFrame,
               params: Mapping[str, Any], out: PathLike, obs_out: PathLike | None = None) -> ad.AnnData:
    """Write ``results/train/rna/{cell_type}.h5ad`` (see the module docstring) and, with ``obs_out``, its obs
    as ``{cell_type}.obs.parquet`` (``cell_id`` + the obs columns, same rows: the Croissant record set);
    returns the AnnData as written, without ``obsm['X_hvg']`` (streamed to the file only)."""
    src = ad.read_h5ad(rna_cells, backed="r")
    ids = registry["perturbation_id"].astype(str).tolist()
    keep = np.flatnonzero(usable_cells(src, categories=ids))
    table = export_table(src.obs.iloc[keep], registry, splits, holdout, params)
    rows = keep[table.pop("row").to_numpy()]
    var = src.var.copy()
    n_vars = src.n_vars
    src.file.close()
    x = read_rows(rna_cells, rows, n_vars)
    if x.dtype.kind == "f" and x.nnz and not np.all(np.mod(x.data, 1) == 0):
        raise ValueError(f"{rna_cells}: X is not integer counts; the cell-load export needs raw counts")
    genes = hvg_variance(x, int(params["n_hvg"]))
    var["highly_variable"] = np.isin(np.arange(len(var)), genes)
    obs = table.copy()
    for c in obs.columns:
        if c != "is_control":
            obs[c] = pd.Categorical(obs[c].astype(str))
    adata = ad.AnnData(X=x, obs=obs, var=var)
    adata.uns["log1p"] = {"base": None}   # obsm X_hvg is natural-log log1p (as scanpy records it)
    adata.uns["X_hvg_genes"] = np.asarray(var.index[genes], dtype=str)
    adata.uns["pairedscreen"] = {"control_label": str(params["control_label"]),
                                 "cell_type": str(params["cell_type"]),
                                 "normalization": "obsm['X_hvg'] = log1p(counts / total * 1e4), HVG columns"}
    with atomic_output(out) as tmp:
        adata.write_h5ad(tmp)
        # obsm['X_hvg'] streamed into the file one row block at a time (never the whole block in memory),
        # stored as anndata stores a dense obsm array
        import h5py

        with h5py.File(tmp, "a") as f:
            ds = f["obsm"].create_dataset("X_hvg", shape=(x.shape[0], len(genes)), dtype="float32",
                                          chunks=(max(1, min(x.shape[0], 4096)), max(1, len(genes))))
            ds.attrs["encoding-type"] = "array"
            ds.attrs["encoding-version"] = "0.2.0"
            hvg_embedding(x, genes, out=ds)
    if obs_out is not None:
        with atomic_output(obs_out) as tmp:
            table.reset_index(names="cell_id").to_parquet(tmp, index=False)
    return adata


def _toml_list(values: list[str]) -> str:
    return "[" + ", ".join('"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"' for v in values) + "]"


def cell_load_toml(rna_dir: PathLike, splits: pd.DataFrame, registry: pd.DataFrame,
                   params: Mapping[str, Any]) -> str:
    """The cell-load experiment TOML: the export folder as dataset ``pairedscreen``, trained on, with the
    held-out perturbations (labels as in the h5ad's ``perturbation``) as fewshot val/test lists."""
    labels = perturbation_labels(registry, str(params["control_label"]))
    trt = splits[~splits["is_control"].astype(bool)]
    lists = {s: sorted({labels[p] for p in trt.loc[trt["split"] == s, "perturbation_id"].astype(str)})
             for s in ("val", "test")}
    key = f"{DATASET}.{params['cell_type']}"
    return "\n".join([
        "# cell-load experiment config written by pairedscreen (results/train/cell_load.toml)",
        "[datasets]", f'{DATASET} = "{Path(rna_dir).resolve()}"', "",
        "[training]", f'{DATASET} = "train"', "",
        "[zeroshot]", "",
        "[fewshot]", f'[fewshot."{key}"]', f"val = {_toml_list(lists['val'])}",
        f"test = {_toml_list(lists['test'])}", ""])


def write_cell_load_toml(rna_dir: PathLike, splits: pd.DataFrame, registry: pd.DataFrame,
                         params: Mapping[str, Any], out: PathLike) -> None:
    with atomic_output(out) as tmp:
        Path(tmp).write_text(cell_load_toml(rna_dir, splits, registry, params))
