"""Per-cell QC: scanpy's metrics, per-library MAD outlier flags and scrublet doublet scores.

Nothing is dropped: cells are only flagged (``qc_fail_counts``, ``qc_fail_genes``, ``qc_fail_mt``,
``pass_qc``, ``predicted_doublet``); the thresholds go to ``uns['qc_thresholds']`` for the report.
The metric columns are scanpy's own (``sc.pp.calculate_qc_metrics``), untouched.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import anndata as ad
import numpy as np
import pandas as pd
import scanpy as sc
import scipy.sparse as sp

from pairedscreen.rna.scrublet import scrublet
from pairedscreen.robust import median_mad


def gene_sets(var_names: pd.Index, mt_prefix: str, ribo_prefixes: Sequence[str]) -> pd.DataFrame:
    """Boolean 'mt' / 'ribo' columns by case-insensitive gene-name prefix."""
    upper = var_names.astype(str).str.upper()
    mt = upper.str.startswith(mt_prefix.upper()) if mt_prefix else np.zeros(len(upper), bool)
    ribo = np.zeros(len(upper), bool)
    for p in ribo_prefixes:
        ribo |= upper.str.startswith(p.upper())
    return pd.DataFrame({"mt": np.asarray(mt), "ribo": ribo}, index=var_names)


def _mad_bounds(values: np.ndarray, nmads: float) -> tuple[float, float]:
    med, mad = (float(v) for v in median_mad(values))
    return med - nmads * mad, med + nmads * mad


def _metric_bounds(thresholds: dict[str, dict[str, float]]) -> dict[str, dict[str, float]]:
    """Per-metric {lower, upper} (the report's layout) when there is a single group."""
    if len(thresholds) != 1:
        return {}
    t = next(iter(thresholds.values()))
    return {
        "total_counts": {"lower": t["total_counts_min"], "upper": t["total_counts_max"]},
        "n_genes_by_counts": {"lower": t["n_genes_min"], "upper": t["n_genes_max"]},
        "pct_counts_mt": {"upper": t["pct_counts_mt_max"]},
    }


def compute_qc(
    adata: ad.AnnData,
    *,
    mt_prefix: str,
    ribo_prefixes: Sequence[str],
    nmads_counts: float,
    nmads_genes: float,
    nmads_mt: float,
    max_pct_mt: float,
    batch_key: str | None = "library",
) -> ad.AnnData:
    """A copy of ``adata`` (X = counts) with scanpy QC metrics and outlier flags.

    Flags, per ``batch_key`` group (all cells when absent): ``qc_fail_counts`` / ``qc_fail_genes``
    outside median +- nmads * MAD of log1p total counts / genes; ``qc_fail_mt`` above median +
    nmads_mt * MAD of pct_counts_mt or above ``max_pct_mt``; ``pass_qc`` = none of them.
    """
    out = adata.copy()
    sets = gene_sets(out.var_names, mt_prefix, ribo_prefixes)
    out.var["mt"], out.var["ribo"] = sets["mt"].to_numpy(), sets["ribo"].to_numpy()
    # scanpy's default percent_top, minus the tops a small panel cannot have (scanpy raises on them)
    top = tuple(p for p in (50, 100, 200, 500) if p <= out.n_vars) or None
    sc.pp.calculate_qc_metrics(out, qc_vars=["mt", "ribo"], percent_top=top, log1p=True, inplace=True)
    groups = (
        out.obs[batch_key].astype(str).to_numpy() if batch_key and batch_key in out.obs
        else np.full(out.n_obs, "all")
    )
    fail = {k: np.zeros(out.n_obs, bool) for k in ("counts", "genes", "mt")}
    thresholds: dict[str, dict[str, float]] = {}
    for g in pd.unique(groups):
        m = groups == g
        lc = out.obs["log1p_total_counts"].to_numpy()[m]
        lg = out.obs["log1p_n_genes_by_counts"].to_numpy()[m]
        mt = out.obs["pct_counts_mt"].to_numpy()[m]
        c_lo, c_hi = _mad_bounds(lc, nmads_counts)
        g_lo, g_hi = _mad_bounds(lg, nmads_genes)
        mt_hi = min(_mad_bounds(mt, nmads_mt)[1], max_pct_mt) if sets["mt"].any() else float("inf")
        fail["counts"][m] = (lc < c_lo) | (lc > c_hi)
        fail["genes"][m] = (lg < g_lo) | (lg > g_hi)
        fail["mt"][m] = mt > mt_hi
        thresholds[str(g)] = {
            "total_counts_min": float(np.expm1(c_lo)), "total_counts_max": float(np.expm1(c_hi)),
            "n_genes_min": float(np.expm1(g_lo)), "n_genes_max": float(np.expm1(g_hi)),
            "pct_counts_mt_max": float(mt_hi),
        }
    for k, v in fail.items():
        out.obs[f"qc_fail_{k}"] = v
    out.obs["pass_qc"] = ~(fail["counts"] | fail["genes"] | fail["mt"])
    out.uns["qc_thresholds"] = {
        **_metric_bounds(thresholds),
        "by_group": thresholds, "batch_key": batch_key or "", "nmads_counts": nmads_counts,
        "nmads_genes": nmads_genes, "nmads_mt": nmads_mt, "max_pct_mt": max_pct_mt,
        "n_mt_genes": int(sets["mt"].sum()), "n_ribo_genes": int(sets["ribo"].sum()),
    }
    return out


def flag_doublets(
    adata: ad.AnnData,
    *,
    expected_rate: float,
    batch_key: str | None = "library",
    seed: int = 0,
    knn: Literal["exact", "sklearn"],
    threads: int | None = None,
) -> ad.AnnData:
    """A copy with scrublet's obs['doublet_score'] / obs['predicted_doublet'] (per ``batch_key``).

    X must hold raw counts. The number of principal components is capped for small panels/libraries
    (scrublet's default 30 needs more genes and cells than a tiny screen has). ``knn='exact'`` (the
    default) is :func:`pairedscreen.rna.scrublet.scrublet`: scanpy's scrublet step by step, in row
    chunks, with exact neighbours (:mod:`pairedscreen.rna.knn`), at a few times the count matrix's
    memory whatever the library size. ``knn='sklearn'`` is the reference: scanpy's own
    ``sc.pp.scrublet`` with its exact sklearn brute-force neighbours (its dense copies peak at ~14x the
    count matrix: for checks and small libraries). Neighbours are exact either way.
    """
    if knn not in ("exact", "sklearn"):
        raise ValueError(f"doublets knn {knn!r}: use 'exact' or 'sklearn'")
    key = batch_key if batch_key and batch_key in adata.obs else None
    groups = adata.obs[key].astype(str).to_numpy() if key else np.full(adata.n_obs, "all")
    scores = np.full(adata.n_obs, np.nan)
    called = np.zeros(adata.n_obs, bool)
    thresholds: dict[str, float] = {}
    x = sp.csr_matrix(adata.X)  # no copy when X is already CSR
    for g in pd.unique(groups):
        m = groups == g
        part = x if m.all() else x[m]
        n_pcs = int(max(2, min(30, part.shape[0] // 10, part.shape[1] // 5)))
        if knn == "exact":
            res = scrublet(part, expected_rate=expected_rate, n_pcs=n_pcs, seed=seed, threads=threads)
            scores[m], called[m], thresholds[str(g)] = res.scores, res.called, res.threshold
        else:
            scores[m], called[m], thresholds[str(g)] = _scanpy_scrublet(part, expected_rate, n_pcs, seed)
        del part
    out = adata.copy()  # only now: the copy never coexists with scrublet's working copies
    out.obs["doublet_score"] = scores
    out.obs["predicted_doublet"] = called
    out.uns["doublets"] = {
        "method": "scrublet", "expected_rate": float(expected_rate), "by_group": thresholds, "knn": knn,
    }
    if len(thresholds) == 1:
        out.uns["doublets"]["threshold"] = next(iter(thresholds.values()))
    return out


def _scanpy_scrublet(
    part: sp.csr_matrix, expected_rate: float, n_pcs: int, seed: int
) -> tuple[np.ndarray, np.ndarray, float]:
    """scanpy's own ``sc.pp.scrublet`` with exact (sklearn) neighbours: (scores, calls, threshold)."""
    # scrublet copies its input before touching it: float32 counts sharing part's index arrays
    counts = sp.csr_matrix((part.data.astype(np.float32), part.indices, part.indptr), shape=part.shape)
    sub = ad.AnnData(X=counts)
    sc.pp.scrublet(sub, expected_doublet_rate=expected_rate, n_prin_comps=n_pcs, random_state=seed,
                   verbose=False, use_approx_neighbors=False)
    thr = sub.uns.get("scrublet", {}).get("threshold")
    called = sub.obs["predicted_doublet"].astype("boolean").fillna(False).to_numpy(dtype=bool)
    return sub.obs["doublet_score"].to_numpy(), called, float(thr) if thr is not None else float("nan")
