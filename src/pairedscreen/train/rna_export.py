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

Memory: the export is streamed from the per-library cells files (``results/rna/{lib}/cells.h5ad``), never
the merged one: obs is gathered from every library (the export order is global), then one library at a time
its exported rows are read (:func:`read_rows`), written into their places in the file's CSR arrays and added
to the HVG moments (:class:`LogNormMoments`: per-gene sums of log1p CP10k and its square, so the gene choice
needs no whole matrix); ``obsm['X_hvg']`` is then filled from the written X one row block at a time. Peak ~
one library's exported counts + one block + the obs table, whatever the number of libraries (see
``benchmarks/train_export.py``).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp

from pairedscreen.expression import BLOCK_NNZ, log1p_cp10k, row_blocks, usable_cells
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


class LogNormMoments:
    """Per-gene sums of log1p CP10k (:func:`pairedscreen.expression.log1p_cp10k`) and of its square over the
    count rows added so far: the HVG statistic accumulated one row block at a time, so it never needs the
    whole matrix (rows may come in any order and from any number of files)."""

    def __init__(self, n_genes: int) -> None:
        self.n = 0
        self.s1 = np.zeros(n_genes)
        self.s2 = np.zeros(n_genes)

    def add(self, counts: sp.spmatrix) -> None:
        """Add the rows of a count block (cells x genes)."""
        blk = log1p_cp10k(counts)
        self.n += blk.shape[0]
        self.s1 += np.asarray(blk.sum(axis=0)).ravel()
        self.s2 += np.asarray(blk.multiply(blk).sum(axis=0)).ravel()

    def variance(self) -> np.ndarray:
        """Per-gene variance (ddof 0) of log1p CP10k over the rows added."""
        mean = self.s1 / max(self.n, 1)
        return self.s2 / max(self.n, 1) - mean**2

    def top(self, n_top: int) -> np.ndarray:
        """Indices (sorted) of the ``n_top`` genes with the highest variance (ties: lower gene index)."""
        var = self.variance()
        order = np.lexsort((np.arange(len(var)), -var))
        return np.sort(order[: min(n_top, len(var))])


def hvg_variance(x: sp.csr_matrix, n_top: int, block_nnz: int | None = None) -> np.ndarray:
    """Indices (sorted) of the ``n_top`` genes with the highest variance of log1p CP10k over the rows of
    ``x`` (:class:`LogNormMoments`, one row block at a time; ties: lower gene index first)."""
    m = LogNormMoments(x.shape[1])
    for a, b in row_blocks(x.indptr, block_nnz):
        m.add(x[a:b])
    return m.top(n_top)


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


def _source_files(rna_cells: PathLike | Sequence[PathLike]) -> list[PathLike]:
    if isinstance(rna_cells, str | os.PathLike):
        return [rna_cells]
    return list(rna_cells)


SOURCE_OBS = ("perturbation", "library", "guide_ids", "batch", "barcode", "pass_qc", "predicted_doublet")


def _read_source(path: PathLike) -> tuple[pd.DataFrame, pd.DataFrame, np.ndarray]:
    """One cells file's obs, var and X row lengths (stored values per row), without reading X's values."""
    import h5py
    from anndata.io import read_elem

    with h5py.File(path, "r") as f:
        grp = f["obs"]      # only the columns the export and usable_cells read: per cell, not ~30 columns
        obs = pd.DataFrame({c: read_elem(grp[c]) for c in SOURCE_OBS if c in grp},
                           index=pd.Index(np.asarray(read_elem(grp[grp.attrs["_index"]]), dtype=str)))
        var = read_elem(f["var"])
        g = f["X"]
        if isinstance(g, h5py.Group) and g.attrs.get("encoding-type") == "csr_matrix":
            lens = np.diff(g["indptr"][:].astype(np.int64))
        else:   # not CSR: row lengths from the rows themselves (read through anndata, one block at a time)
            a = ad.read_h5ad(path, backed="r")
            lens = np.concatenate([np.diff(sp.csr_matrix(a.X[s:s + 4096]).indptr)
                                   for s in range(0, a.n_obs, 4096)] or [np.zeros(0, np.int64)])
            a.file.close()
    return obs, var, lens.astype(np.int64)


def _shared_var(vars_: list[pd.DataFrame], files: list[PathLike]) -> pd.DataFrame:
    """The genes every library file holds (same names, same order: one reference) with the var columns
    whose values agree in all of them (what merging the libraries keeps)."""
    first = vars_[0]
    for v, f in zip(vars_[1:], files[1:], strict=True):
        if not v.index.equals(first.index):
            raise ValueError(f"{f}: genes differ from {files[0]}; the libraries must share one reference")
    keep = [c for c in first.columns if all(c in v and v[c].equals(first[c]) for v in vars_[1:])]
    return first[keep].copy()


def _runs(pos: np.ndarray) -> list[tuple[int, int]]:
    """Maximal runs ``[i, j)`` of consecutive values in ``pos`` (increasing positions)."""
    if not len(pos):
        return []
    cut = np.flatnonzero(np.diff(pos) != 1) + 1
    starts, stops = np.r_[0, cut], np.r_[cut, len(pos)]
    return list(zip(starts.tolist(), stops.tolist(), strict=True))


def export_rna(rna_cells: PathLike | Sequence[PathLike], registry: pd.DataFrame, splits: pd.DataFrame,
               holdout: pd.DataFrame, params: Mapping[str, Any], out: PathLike,
               obs_out: PathLike | None = None, block_nnz: int | None = None) -> ad.AnnData:
    """Write ``results/train/rna/{cell_type}.h5ad`` (see the module docstring) from the per-library cells
    files (``results/rna/{lib}/cells.h5ad``, in sheet order; one merged file works the same) and, with
    ``obs_out``, its obs as ``{cell_type}.obs.parquet`` (``cell_id`` + the obs columns, same rows: the
    Croissant record set). Returns the export's obs and var (no X: the counts go to the file only).

    Streaming: pass 1 reads one library at a time (its exported rows, in export order), writes them into
    their runs of the file's CSR arrays and adds them to the HVG moments (:class:`LogNormMoments`); pass 2
    reads the written X back one row block at a time into ``obsm['X_hvg']``. Peak ~ one library's exported
    counts + one block, whatever the number of libraries."""
    import h5py
    from anndata.io import write_elem

    files = _source_files(rna_cells)
    if not files:
        raise ValueError("no RNA cells files to export")
    obs_parts, vars_, lens_parts = [], [], []
    for f in files:
        o, v, lens = _read_source(f)
        obs_parts.append(o)
        vars_.append(v)
        lens_parts.append(lens)
    var = _shared_var(vars_, files)
    n_vars = len(var)
    lib_of = np.repeat(np.arange(len(files)), [len(o) for o in obs_parts])
    local = np.concatenate([np.arange(len(o)) for o in obs_parts])
    lens = np.concatenate(lens_parts)
    src_obs = pd.concat(obs_parts, axis=0) if len(files) > 1 else obs_parts[0]
    del obs_parts, vars_, lens_parts
    ids = registry["perturbation_id"].astype(str).tolist()
    keep = np.flatnonzero(usable_cells(ad.AnnData(obs=src_obs), categories=ids))
    table = export_table(src_obs.iloc[keep], registry, splits, holdout, params)
    rows = keep[table.pop("row").to_numpy()]   # export order -> position in the concatenated sources
    del src_obs
    n = len(rows)
    out_ptr = np.zeros(n + 1, np.int64)
    np.cumsum(lens[rows], out=out_ptr[1:])
    nnz = int(out_ptr[-1])
    # the index dtype scipy gives the same matrix (int32 while everything fits)
    idx_dtype = np.int32 if max(nnz, n, n_vars) <= np.iinfo(np.int32).max else np.int64
    obs = table.copy()
    for c in obs.columns:
        if c != "is_control":
            obs[c] = pd.Categorical(obs[c].astype(str))
    n_top = int(params["n_hvg"])
    var["highly_variable"] = False   # set after pass 1 (the file's var is rewritten then)
    adata = ad.AnnData(obs=obs, var=var)
    adata.uns["log1p"] = {"base": None}   # obsm X_hvg is natural-log log1p (as scanpy records it)
    adata.uns["pairedscreen"] = {"control_label": str(params["control_label"]),
                                 "cell_type": str(params["cell_type"]),
                                 "normalization": "obsm['X_hvg'] = log1p(counts / total * 1e4), HVG columns"}
    moments = LogNormMoments(n_vars)
    with atomic_output(out) as tmp:
        adata.write_h5ad(tmp)   # obs, var, uns; X and obsm['X_hvg'] are streamed in below
        with h5py.File(tmp, "a") as fh:
            dtype = None
            for li, f in enumerate(files):
                mine = np.flatnonzero(lib_of[rows] == li)   # this library's exported rows, export order
                if not len(mine):
                    continue
                x = read_rows(f, local[rows[mine]], n_vars, block_nnz or BLOCK_NNZ)
                if x.dtype.kind == "f" and x.nnz and not np.all(np.mod(x.data, 1) == 0):
                    raise ValueError(f"{f}: X is not integer counts; the cell-load export needs raw counts")
                if dtype is None:
                    dtype = x.dtype
                    g = fh.create_group("X")
                    g.attrs.update({"encoding-type": "csr_matrix", "encoding-version": "0.1.0",
                                    "shape": np.array([n, n_vars])})
                    g.create_dataset("indptr", data=out_ptr.astype(idx_dtype))
                    data = g.create_dataset("data", shape=(nnz,), dtype=dtype)
                    indices = g.create_dataset("indices", shape=(nnz,), dtype=idx_dtype)
                elif x.dtype != dtype:
                    raise ValueError(f"{f}: X dtype {x.dtype} differs from the other libraries' {dtype}")
                for a, b in row_blocks(x.indptr, block_nnz):
                    moments.add(x[a:b])
                for i, j in _runs(mine):   # rows of this library that are contiguous in the export
                    lo, hi = int(out_ptr[mine[i]]), int(out_ptr[mine[i]] + x.indptr[j] - x.indptr[i])
                    if hi > lo:
                        data[lo:hi] = x.data[x.indptr[i]:x.indptr[j]]
                        indices[lo:hi] = x.indices[x.indptr[i]:x.indptr[j]]
                del x
            if dtype is None:   # no exported cell
                write_elem(fh, "X", sp.csr_matrix((0, n_vars), dtype=np.int32))
            genes = moments.top(n_top)
            adata.var["highly_variable"] = np.isin(np.arange(n_vars), genes)
            adata.uns["X_hvg_genes"] = np.asarray(adata.var_names[genes], dtype=str)
            write_elem(fh, "var", adata.var)
            write_elem(fh["uns"], "X_hvg_genes", adata.uns["X_hvg_genes"])
            # obsm['X_hvg'] from the X just written, one row block at a time, stored as anndata stores a
            # dense obsm array
            ds = fh["obsm"].create_dataset("X_hvg", shape=(n, len(genes)), dtype="float32",
                                           chunks=(max(1, min(n, 4096)), max(1, len(genes))))
            ds.attrs["encoding-type"] = "array"
            ds.attrs["encoding-version"] = "0.2.0"
            xg = fh["X"]
            data, indices = xg["data"], xg["indices"]
            for a, b in row_blocks(out_ptr, block_nnz):
                lo, hi = int(out_ptr[a]), int(out_ptr[b])
                blk = sp.csr_matrix((data[lo:hi], indices[lo:hi], out_ptr[a:b + 1] - lo),
                                    shape=(b - a, n_vars))
                ds[a:b] = log1p_cp10k(blk)[:, genes].toarray()
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
