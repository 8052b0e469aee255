"""Expression statistics shared by the RNA arm, quality and pair, the one definition: log1p CP10k and the
rule for which called cells count in perturbation-level summaries.

A low-level module (imports nothing else of pairedscreen but :mod:`pairedscreen.columns`), so quality and
pair use the RNA arm's normalisation without importing the arm.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp

from pairedscreen.columns import MULTIPLE, OBS_PERTURBATION, UNASSIGNED

TARGET_SUM = 1e4   # counts per 10,000


def cp10k_scale(tot: np.ndarray) -> np.ndarray:
    """Per-cell factor 1e4 / total (0 for empty cells), as in :func:`log1p_cp10k`."""
    return np.divide(TARGET_SUM, tot, out=np.zeros_like(tot), where=tot > 0)


# Stored values per row block for float64 temporaries (8 MB), so they stay a sliver of the matrix.
BLOCK_NNZ = 1 << 20


def row_blocks(indptr: np.ndarray, max_nnz: int | None = None) -> Iterator[tuple[int, int]]:
    """(start, stop) row ranges of a CSR matrix with at most ``max_nnz`` (default :data:`BLOCK_NNZ`) stored
    values (or a single longer row)."""
    max_nnz = BLOCK_NNZ if max_nnz is None else max_nnz
    n, s = len(indptr) - 1, 0
    while s < n:
        e = int(np.searchsorted(indptr, indptr[s] + max_nnz, side="right")) - 1
        e = min(n, max(e, s + 1))
        yield s, e
        s = e


def log1p_cp10k(counts: sp.spmatrix | np.ndarray, *, inplace: bool = False) -> sp.csr_matrix:
    """log1p of counts per 10,000 (per row = cell): ``log1p(count * 1e4 / total)``, sparse float64; empty
    rows stay 0.

    ``inplace=True`` takes a float64 CSR matrix and turns its stored values into the result one row block
    at a time (memory: no copy of the matrix; same values bit for bit) and returns it."""
    if inplace:
        if not sp.issparse(counts) or counts.format != "csr" or counts.dtype != np.float64:
            raise TypeError("log1p_cp10k(inplace=True) needs a float64 CSR matrix")
        x = counts
        scale = cp10k_scale(np.asarray(x.sum(axis=1)).ravel())
        for s, e in row_blocks(x.indptr):
            lo, hi = x.indptr[s], x.indptr[e]
            x.data[lo:hi] *= np.repeat(scale[s:e], np.diff(x.indptr[s : e + 1]))
        np.log1p(x.data, out=x.data)
        return x
    x = sp.csr_matrix(counts, dtype=np.float64)
    scale = cp10k_scale(np.asarray(x.sum(axis=1)).ravel())
    x = sp.csr_matrix(sp.diags(scale) @ x)
    x.data = np.log1p(x.data)
    return x


def qc_singlets(obs: pd.DataFrame) -> np.ndarray:
    """Mask of the cells passing QC (``pass_qc``, when present) that are not predicted doublets
    (``predicted_doublet``, when present): :func:`usable_cells` before the guide."""
    ok = np.ones(len(obs), bool)
    if "pass_qc" in obs:
        ok &= obs["pass_qc"].to_numpy(dtype=bool)
    if "predicted_doublet" in obs:
        ok &= ~obs["predicted_doublet"].to_numpy(dtype=bool)
    return ok


def usable_cells(cells: ad.AnnData, *, key: str = OBS_PERTURBATION,
                 categories: Sequence[str] | None = None) -> np.ndarray:
    """Mask of cells behind perturbation-level summaries (pseudobulk, knockdown, replicates, effect sizes):
    ``pass_qc`` (when present), not ``predicted_doublet`` (when present), exactly one perturbation in
    ``obs[key]`` (not ``multiple``/``unassigned``/empty/NaN), and, when ``categories`` is given, one of
    them (registry ids)."""
    obs = cells.obs
    ok = qc_singlets(obs)
    pert = obs[key].astype(str).to_numpy()
    ok &= ~np.isin(pert, [MULTIPLE, UNASSIGNED, "nan", "None", ""])
    if categories is not None:
        ok &= np.isin(pert, np.asarray(categories, dtype=str))
    return ok
