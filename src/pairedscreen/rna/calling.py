"""Cell calling on a raw (all-barcode) count matrix: barcode-rank knee/inflection + EmptyDrops.

EmptyDrops (Lun et al. 2019, DropletUtils): the ambient profile is the summed expression of barcodes
with at most ``ambient_max_umis`` UMIs; each barcode with at least ``min_umis`` UMIs is tested for
deviation from it with a multinomial log-likelihood and a Monte-Carlo p-value (draws of the same total
from the ambient profile); p-values are BH-adjusted. Barcodes above the knee are retained whatever
their p-value (DropletUtils' ``retain``). The simulation runs incrementally (one UMI at a time, the
log-likelihood updated in O(1)), so one pass per iteration covers every tested total below the knee.
"""

from __future__ import annotations

import anndata as ad
import numba
import numpy as np
import pandas as pd
import scipy.sparse as sp
from scipy.ndimage import gaussian_filter1d
from scipy.special import gammaln
from statsmodels.stats.multitest import multipletests


def _totals(x: sp.spmatrix | np.ndarray) -> np.ndarray:
    return np.asarray(x.sum(axis=1)).ravel().astype(np.int64)


def barcode_ranks(totals: np.ndarray, *, lower: int = 100, exclude_from: int = 50) -> dict[str, float]:
    """Knee and inflection of the log-log barcode-rank curve (DropletUtils ``barcodeRanks`` style).

    The curve (log10 rank vs log10 total, barcodes with total > ``lower``) is resampled on an even
    log-rank grid and smoothed; the inflection is the steepest descent, the knee the point of
    minimal signed curvature between the top ``exclude_from`` barcodes and the inflection.
    """
    t = np.sort(np.asarray(totals)[np.asarray(totals) > lower])[::-1]
    if len(t) < 10:
        top = float(t[0]) if len(t) else float(lower)
        return {"knee": top, "inflection": top}
    ranks = np.arange(1, len(t) + 1)
    x, y = np.log10(ranks), np.log10(t)
    grid = np.linspace(0, x[-1], 512)
    yg = gaussian_filter1d(np.interp(grid, x, y), sigma=6, mode="nearest")
    d1 = np.gradient(yg, grid)
    d2 = np.gradient(d1, grid)
    left = int(np.searchsorted(grid, np.log10(min(exclude_from, len(t) // 10 + 1))))
    right = left + int(np.argmin(d1[left:]))
    curv = d2 / (1 + d1**2) ** 1.5
    knee_i = left + int(np.argmin(curv[left : right + 1])) if right > left else left
    return {"knee": float(10 ** yg[knee_i]), "inflection": float(10 ** yg[right])}


def ambient_profile(x: sp.csr_matrix, totals: np.ndarray, ambient_max_umis: int) -> np.ndarray:
    """Ambient proportions from barcodes with 0 < total <= ambient_max_umis (Good-Turing-free:
    a pseudocount of one UMI spread over unseen genes keeps every gene possible)."""
    amb = (totals > 0) & (totals <= ambient_max_umis)
    if not amb.any():
        raise ValueError(f"no barcodes with 1..{ambient_max_umis} UMIs to estimate the ambient profile")
    s = np.asarray(x[amb].sum(axis=0)).ravel().astype(np.float64)
    unseen = s == 0
    if unseen.any():
        s[unseen] = 1.0 / unseen.sum()
    return s / s.sum()


@numba.njit(cache=True)
def _mc_counts(cum_p, log_p, totals_sorted, obs_ll, n_iter, seed):  # pragma: no cover - numba
    """For each tested barcode (sorted by total), count draws with log-likelihood <= observed."""
    np.random.seed(seed)
    n_genes = cum_p.shape[0]
    max_total = totals_sorted[-1]
    hits = np.zeros(totals_sorted.shape[0], dtype=np.int64)
    counts = np.zeros(n_genes, dtype=np.int64)
    touched = np.empty(max_total, dtype=np.int64)
    for _ in range(n_iter):
        ll = 0.0
        j = 0
        for n in range(1, max_total + 1):
            u = np.random.random() * cum_p[-1]
            g = np.searchsorted(cum_p, u, side="right")
            if g >= n_genes:
                g = n_genes - 1
            counts[g] += 1
            touched[n - 1] = g
            # multinomial log-prob: log n!/prod x! + sum x log p, updated for one more UMI of gene g
            ll += np.log(n) - np.log(counts[g]) + log_p[g]
            while j < totals_sorted.shape[0] and totals_sorted[j] == n:
                if ll <= obs_ll[j]:
                    hits[j] += 1
                j += 1
        for k in range(max_total):
            counts[touched[k]] = 0
    return hits


def emptydrops(
    x: sp.csr_matrix,
    *,
    ambient_max_umis: int,
    min_umis: int,
    n_iter: int,
    max_tested_total: float | None = None,
    seed: int = 0,
) -> tuple[pd.DataFrame, np.ndarray]:
    """EmptyDrops p-values for barcodes with ``min_umis <= total``.

    Barcodes with total >= ``max_tested_total`` (the knee, normally) are not simulated: they get
    p-value 0 (retained anyway). Returns a frame (total, tested, logprob, pvalue, fdr; NaN where
    untested) and the ambient profile.
    """
    x = sp.csr_matrix(x)
    totals = _totals(x)
    prof = ambient_profile(x, totals, ambient_max_umis)
    log_p = np.log(prof)
    tested = totals >= min_umis
    coo = x.tocoo()
    ll = np.zeros(x.shape[0])
    np.add.at(ll, coo.row, coo.data * log_p[coo.col] - gammaln(coo.data + 1.0))
    ll += gammaln(totals + 1.0)
    pval = np.full(x.shape[0], np.nan)
    pval[tested] = 0.0
    sim = tested & (totals < (max_tested_total if max_tested_total is not None else np.inf))
    idx = np.flatnonzero(sim)
    if len(idx):
        order = idx[np.argsort(totals[idx], kind="stable")]
        hits = _mc_counts(np.cumsum(prof), log_p, totals[order], ll[order], int(n_iter), int(seed))
        pval[order] = (hits + 1.0) / (n_iter + 1.0)
    fdr = np.full(x.shape[0], np.nan)
    if tested.any():
        fdr[tested] = multipletests(pval[tested], method="fdr_bh")[1]
    df = pd.DataFrame(
        {"total": totals, "tested": tested, "logprob": np.where(tested, ll, np.nan), "pvalue": pval,
         "fdr": fdr}
    )
    return df, prof


def call_cells(
    raw: ad.AnnData,
    *,
    fdr: float,
    ambient_max_umis: int,
    min_umis: int,
    n_iter: int,
    expected_cells: int | None = None,
    seed: int = 0,
) -> tuple[ad.AnnData, pd.DataFrame]:
    """Called cells of a raw library and the barcode-rank table.

    A barcode is a cell when it is tested (total >= ``min_umis``) and either above the knee or
    EmptyDrops FDR <= ``fdr``. ``expected_cells`` only bounds the knee search (Cell Ranger's ordmag:
    the knee is never below a tenth of the 99th percentile of the top expected_cells totals).
    The returned AnnData (a copy, X counts) carries obs['emptydrops_pvalue'/'emptydrops_fdr'],
    uns['cell_calling'] {knee, inflection, threshold, n_tested, n_cells, fdr, ...} and
    uns['ambient_profile'] (proportions over var, in var order). The rank table has one row per
    barcode with >= 1 UMI: obs_name, barcode, total, rank, is_cell, pvalue, fdr.
    """
    x = sp.csr_matrix(raw.X)
    totals = _totals(x)
    ranks = barcode_ranks(totals, lower=ambient_max_umis)
    knee = ranks["knee"]
    if expected_cells:
        top = np.sort(totals)[::-1][: int(expected_cells)]
        if len(top):
            knee = max(knee, float(np.percentile(top, 99)) / 10.0)
    knee = max(knee, float(min_umis))
    df, prof = emptydrops(
        x, ambient_max_umis=ambient_max_umis, min_umis=min_umis, n_iter=n_iter, max_tested_total=knee,
        seed=seed,
    )
    is_cell = df["tested"].to_numpy() & ((totals >= knee) | (df["fdr"].fillna(1.0).to_numpy() <= fdr))
    cells = raw[is_cell].copy()
    cells.obs["emptydrops_pvalue"] = df["pvalue"].to_numpy()[is_cell]
    cells.obs["emptydrops_fdr"] = df["fdr"].to_numpy()[is_cell]
    cells.uns["cell_calling"] = {
        "knee": float(knee), "inflection": float(ranks["inflection"]), "threshold": float(min_umis),
        "n_tested": int(df["tested"].sum()), "n_cells": int(is_cell.sum()), "fdr": float(fdr),
        "ambient_max_umis": int(ambient_max_umis), "n_iter": int(n_iter),
        "n_ambient_barcodes": int(((totals > 0) & (totals <= ambient_max_umis)).sum()),
    }
    cells.uns["ambient_profile"] = prof
    nz = totals > 0
    table = pd.DataFrame(
        {"obs_name": raw.obs_names[nz], "total": totals[nz], "is_cell": is_cell[nz],
         "pvalue": df["pvalue"].to_numpy()[nz], "fdr": df["fdr"].to_numpy()[nz]}
    )
    if "barcode" in raw.obs:
        table.insert(1, "barcode", raw.obs["barcode"].to_numpy()[nz])
    table = table.sort_values("total", ascending=False, kind="stable").reset_index(drop=True)
    table.insert(table.columns.get_loc("total") + 1, "rank", np.arange(1, len(table) + 1))
    return cells, table


def keep_cells(raw: ad.AnnData, *, source: str = "cellranger") -> tuple[ad.AnnData, pd.DataFrame]:
    """The cells another caller already called (Cell Ranger's filtered matrix: every barcode of ``raw`` is
    a cell), in :func:`call_cells`'s output schema so the rest of the chain and the ledger are unchanged.

    A barcode with no UMI in ``raw`` (possible when its only counts were of another feature type) is not
    kept, as :func:`call_cells` never calls one. obs['emptydrops_pvalue'/'emptydrops_fdr'] are NaN (not
    tested); uns['cell_calling'] records ``method``: ``source`` and the counts; uns['ambient_profile'] is
    the proportions of the kept cells' summed counts (such a matrix holds no ambient barcodes)."""
    x = sp.csr_matrix(raw.X)
    totals = _totals(x)
    is_cell = totals > 0
    cells = raw[is_cell].copy()
    cells.obs["emptydrops_pvalue"] = np.nan
    cells.obs["emptydrops_fdr"] = np.nan
    cells.uns["cell_calling"] = {"method": source, "n_tested": 0, "n_cells": int(is_cell.sum()),
                                 "n_ambient_barcodes": 0}
    summed = np.asarray(x[is_cell].sum(axis=0), dtype=float).ravel()
    cells.uns["ambient_profile"] = summed / summed.sum() if summed.sum() else summed
    nz = is_cell
    table = pd.DataFrame({"obs_name": raw.obs_names[nz], "total": totals[nz], "is_cell": is_cell[nz],
                          "pvalue": np.full(int(nz.sum()), np.nan), "fdr": np.full(int(nz.sum()), np.nan)})
    if "barcode" in raw.obs:
        table.insert(1, "barcode", raw.obs["barcode"].to_numpy()[nz])
    table = table.sort_values("total", ascending=False, kind="stable").reset_index(drop=True)
    table.insert(table.columns.get_loc("total") + 1, "rank", np.arange(1, len(table) + 1))
    return cells, table
