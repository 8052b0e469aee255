"""Today's (pre-issue-20) cell-load export and eval-cells subsample, kept verbatim as the reference the
streamed writers (:mod:`pairedscreen.train.rna_export`, :mod:`pairedscreen.train.eval_cells`) must
reproduce: they held the screen's obs as one pandas table (export order by ``sort_values``) and the eval
subsample read the export's whole obs. Used by tests/test_train_export_exact.py only."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp

from pairedscreen.expression import BLOCK_NNZ, log1p_cp10k, row_blocks, usable_cells
from pairedscreen.io import atomic_output
from pairedscreen.train.rna_export import (
    LogNormMoments,
    _runs,
    _source_files,
    perturbation_labels,
    read_rows,
)
from pairedscreen.train.splits import CONTROL_SPLIT, cell_splits, seeded_uniform

PathLike = str | os.PathLike
KEY_PREFIX = "eval_cells:"
UNIT = "perturbation_id"


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


def reference_export(rna_cells: PathLike | Sequence[PathLike], registry: pd.DataFrame, splits: pd.DataFrame,
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



def reference_subsample_rows(names: Sequence[str], groups: Sequence[str], max_cells: int,
                             seed: int) -> np.ndarray:
    """Positions (ascending) of the kept cells: per group, the ``max_cells`` cells with the smallest seeded
    hash of their name (ties: name)."""
    names = np.asarray(names, dtype=str)
    groups = np.asarray(groups, dtype=str)
    if max_cells < 1:
        raise ValueError(f"max_cells must be >= 1, got {max_cells}")
    key = seeded_uniform((KEY_PREFIX + n for n in names), seed)
    order = np.lexsort((names, key, groups))
    g = groups[order]
    start = np.r_[True, g[1:] != g[:-1]]
    first = np.maximum.accumulate(np.where(start, np.arange(len(g)), 0))
    rank = np.arange(len(g)) - first
    return np.sort(order[rank < max_cells])


def reference_subsample_summary(groups: Sequence[str], rows: np.ndarray, max_cells: int,
                                seed: int) -> dict[str, Any]:
    """What ``evals.json`` records about the subsample."""
    counts = pd.Series(np.asarray(groups, dtype=str)).value_counts()
    return {"max_cells_per_perturbation": int(max_cells), "seed": int(seed), "unit": UNIT,
            "selection": f"per {UNIT}, the cells with the smallest SHA-256 of '{{seed}}:{KEY_PREFIX}"
                         "{obs_name}' (pairedscreen.train.eval_cells)",
            "n_cells": int(len(rows)), "n_cells_exported": int(counts.sum()),
            "n_perturbations": int(len(counts)), "n_perturbations_capped": int((counts > max_cells).sum())}


def reference_eval_cells(export: PathLike, max_cells: int, seed: int, out: PathLike) -> dict[str, Any]:
    """Write the subsample of the cell-load export ``export`` to ``out`` (see the module docstring); returns
    its summary. Memory: the export's obs + the subsample + one block of the export."""
    import anndata as ad
    import h5py
    from anndata.io import read_elem

    with h5py.File(export, "r") as f:
        obs, var = read_elem(f["obs"]), read_elem(f["var"])
    groups = obs[UNIT].astype(str).to_numpy()
    rows = reference_subsample_rows(obs.index.astype(str), groups, max_cells, seed)
    summary = reference_subsample_summary(groups, rows, max_cells, seed)
    x = read_rows(export, rows, len(var))
    sub = ad.AnnData(X=x, obs=obs.iloc[rows].copy(), var=var)
    sub.uns["eval_subsample"] = summary
    with atomic_output(out) as tmp:
        sub.write_h5ad(tmp)
    return summary
