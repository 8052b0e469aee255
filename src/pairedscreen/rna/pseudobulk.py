"""Per-perturbation pseudobulk of called, QC-passing, singlet-assigned cells; merging libraries."""

from __future__ import annotations

from collections.abc import Sequence

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp

from pairedscreen.expression import log1p_cp10k, row_blocks, usable_cells


def row_totals(x: sp.csr_matrix, dtype: type[np.generic] | None = None) -> np.ndarray:
    """``x.sum(axis=1)`` (of ``x`` as ``dtype`` when given, e.g. float64 as
    :func:`pairedscreen.expression.log1p_cp10k` sums), one row block at a time: neither a float copy nor
    the sum's integer upcast (int32 -> int64, a cast copy of all stored values) then spans the whole
    matrix. Same values per row."""
    parts = [
        np.asarray(sp.csr_matrix(x[s:e], dtype=dtype).sum(axis=1)).ravel() for s, e in row_blocks(x.indptr)
    ]
    return np.concatenate(parts) if parts else np.asarray(sp.csr_matrix(x, dtype=dtype).sum(axis=1)).ravel()


def pseudobulk(
    adata: ad.AnnData, *, order: Sequence[str] | None = None, controls: set[str] | None = None
) -> ad.AnnData:
    """Perturbations x genes: layers['counts'] summed counts, X mean log1p CP10k, obs['n_cells'].

    Only :func:`pairedscreen.expression.usable_cells`. ``order`` (registry order) sorts the rows;
    perturbations without cells are left out. obs['is_control'] from ``controls`` or the cells'
    is_control column.
    """
    keep = usable_cells(adata)
    pert = adata.obs["perturbation"].astype(str).to_numpy()[keep]
    present = list(pd.unique(pert))
    if order is not None:
        rank = {p: i for i, p in enumerate(order)}
        present.sort(key=lambda p: (rank.get(p, len(rank)), p))
    codes = pd.Index(present).get_indexer(pert)
    onehot = sp.csr_matrix(
        (np.ones(len(codes)), (codes, np.arange(len(codes)))), shape=(len(present), len(codes))
    )
    x = sp.csr_matrix(adata.X)  # no copy when X is already CSR
    if not keep.all():
        x = x[keep]
    # Memory: one float64 copy of the stored values (sharing x's index arrays) holds the counts for
    # the sums, then becomes log1p CP10k in place (log1p_cp10k's values without its separate float
    # counts / scaled / log copies of the matrix).
    xf = sp.csr_matrix((x.data.astype(np.float64), x.indices, x.indptr), shape=x.shape)
    del x
    summed = onehot @ xf
    n_cells = np.asarray(onehot.sum(axis=1)).ravel()
    log1p_cp10k(xf, inplace=True)
    mean_norm = sp.diags(1.0 / np.maximum(n_cells, 1)) @ (onehot @ xf)
    del xf
    if controls is None:
        flags = adata.obs["is_control"].to_numpy(dtype=bool)[keep] if "is_control" in adata.obs else None
        controls = set(pert[flags]) if flags is not None else set()
    obs = pd.DataFrame(
        {"n_cells": n_cells.astype(np.int64), "is_control": [p in controls for p in present]},
        index=pd.Index(present, name="perturbation_id"),
    )
    out = ad.AnnData(X=np.asarray(sp.csr_matrix(mean_norm).todense()), obs=obs, var=adata.var.copy())
    out.layers["counts"] = np.asarray(summed.todense()).round().astype(np.int64)
    return out


def merge_libraries(libraries: Sequence[ad.AnnData]) -> ad.AnnData:
    """Concatenate per-library cells (same genes; obs_names already carry the library prefix).

    obsm['guide_counts'] is aligned on the union of guide names; per-library uns entries
    (cell_calling, ambient_profile, qc/doublet/guide thresholds) move to uns['libraries'][lib].
    """
    if not libraries:
        raise ValueError("no libraries to merge")
    guide_names = sorted({str(n) for a in libraries for n in a.uns.get("guide_names", [])})
    parts, per_lib = [], {}
    for a in libraries:
        lib = str(a.obs["library"].iloc[0]) if "library" in a.obs and a.n_obs else f"lib{len(parts)}"
        b = a.copy()
        if "guide_counts" in b.obsm:
            src = [str(n) for n in b.uns["guide_names"]]
            cols = pd.Index(guide_names).get_indexer(src)
            g = sp.csr_matrix(b.obsm["guide_counts"]).tocoo()
            b.obsm["guide_counts"] = sp.csr_matrix(
                (g.data, (g.row, cols[g.col])), shape=(b.n_obs, len(guide_names))
            )
        per_lib[lib] = dict(b.uns)
        b.uns = {}
        parts.append(b)
    merged = ad.concat(parts, join="outer", merge="same", fill_value=0)
    for col in ("library", "batch"):
        if col in merged.obs:
            merged.obs[col] = merged.obs[col].astype(str).astype("category")
    if guide_names:
        merged.uns["guide_names"] = np.asarray(guide_names)
    merged.uns["libraries"] = {
        lib: {k: v for k, v in u.items() if k != "guide_names"} for lib, u in per_lib.items()
    }
    return merged
