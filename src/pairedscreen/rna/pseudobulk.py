"""Per-perturbation pseudobulk of called, QC-passing, singlet-assigned cells; merging libraries."""

from __future__ import annotations

from collections.abc import Sequence

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp

from pairedscreen.rna.guides import MULTIPLE, UNASSIGNED


def log1p_cp10k(counts: sp.spmatrix | np.ndarray) -> sp.csr_matrix:
    """log1p of counts per 10,000 (per cell), sparse."""
    x = sp.csr_matrix(counts, dtype=np.float64)
    tot = np.asarray(x.sum(axis=1)).ravel()
    scale = np.divide(1e4, tot, out=np.zeros_like(tot), where=tot > 0)
    x = sp.csr_matrix(sp.diags(scale) @ x)
    x.data = np.log1p(x.data)
    return x


def usable_cells(adata: ad.AnnData) -> np.ndarray:
    """Mask of cells for perturbation-level summaries: pass_qc, not a predicted doublet, one perturbation."""
    obs = adata.obs
    ok = np.ones(adata.n_obs, bool)
    if "pass_qc" in obs:
        ok &= obs["pass_qc"].to_numpy(dtype=bool)
    if "predicted_doublet" in obs:
        ok &= ~obs["predicted_doublet"].to_numpy(dtype=bool)
    pert = obs["perturbation"].astype(str).to_numpy()
    return ok & (pert != MULTIPLE) & (pert != UNASSIGNED)


def pseudobulk(
    adata: ad.AnnData, *, order: Sequence[str] | None = None, controls: set[str] | None = None
) -> ad.AnnData:
    """Perturbations x genes: layers['counts'] summed counts, X mean log1p CP10k, obs['n_cells'].

    Only :func:`usable_cells`. ``order`` (registry order) sorts the rows; perturbations without
    cells are left out. obs['is_control'] from ``controls`` or the cells' is_control column.
    """
    keep = usable_cells(adata)
    sub = adata[keep]
    pert = sub.obs["perturbation"].astype(str).to_numpy()
    present = list(pd.unique(pert))
    if order is not None:
        rank = {p: i for i, p in enumerate(order)}
        present.sort(key=lambda p: (rank.get(p, len(rank)), p))
    codes = pd.Index(present).get_indexer(pert)
    onehot = sp.csr_matrix(
        (np.ones(len(codes)), (codes, np.arange(len(codes)))), shape=(len(present), len(codes))
    )
    counts = sp.csr_matrix(sub.X, dtype=np.float64)
    summed = onehot @ counts
    n_cells = np.asarray(onehot.sum(axis=1)).ravel()
    mean_norm = sp.diags(1.0 / np.maximum(n_cells, 1)) @ (onehot @ log1p_cp10k(counts))
    if controls is None:
        controls = set(pert[sub.obs["is_control"].to_numpy(dtype=bool)]) if "is_control" in sub.obs else set()
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
