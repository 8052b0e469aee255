"""Replicate retrieval mAP (copairs), the one implementation: phenotypic activity (a perturbation's
replicates retrieving each other ahead of control replicates) and consistency (across guides, wells or
plates), with copairs' rank-permutation p-values and Benjamini-Hochberg q-values.

A low-level module so that both the quality stage (:mod:`pairedscreen.quality.replicate` re-exports it)
and the paint arm's correction chain (sphering's regularisation is chosen by this mAP,
:mod:`pairedscreen.paint.correct`) use the same statistic; it imports nothing else of pairedscreen.
"""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
from copairs.map import average_precision, mean_average_precision
from statsmodels.stats.multitest import multipletests

logging.getLogger("copairs").setLevel(logging.WARNING)

_COLS = ["perturbation", "is_control", "n_replicates", "mean_average_precision", "p_value", "q_value"]


def _map(feats: np.ndarray, meta: pd.DataFrame, pos_sameby: list[str], pos_diffby: list[str],
         neg_sameby: list[str], neg_diffby: list[str], group: str, null_size: int, seed: int) -> pd.DataFrame:
    try:
        ap = average_precision(meta, feats, pos_sameby, pos_diffby, neg_sameby, neg_diffby,
                               distance="cosine", progress_bar=False)
    except Exception as exc:  # copairs raises UnpairedException when nothing pairs
        if type(exc).__name__ != "UnpairedException":
            raise
        return pd.DataFrame(columns=[group, "mean_average_precision", "p_value"])
    ap = ap.dropna(subset=["average_precision"])
    if ap.empty:
        return pd.DataFrame(columns=[group, "mean_average_precision", "p_value"])
    res = mean_average_precision(ap, [group], null_size=null_size, threshold=0.05, seed=seed,
                                 progress_bar=False, max_workers=1)
    return res[[group, "mean_average_precision", "p_value"]]


def _prepare(features: np.ndarray, meta: pd.DataFrame, pert_col: str) -> tuple[np.ndarray, pd.DataFrame]:
    x = np.asarray(features, dtype=np.float64)
    keep = np.isfinite(x).all(axis=1) & (np.abs(x).sum(axis=1) > 0)
    m = meta.loc[keep].reset_index(drop=True).copy()
    m[pert_col] = m[pert_col].astype(str)
    return x[keep], m


def _bh(df: pd.DataFrame) -> pd.DataFrame:
    df = df.copy()
    df["q_value"] = np.nan
    ok = df["p_value"].notna().to_numpy()
    if ok.any():
        df.loc[ok, "q_value"] = multipletests(df.loc[ok, "p_value"].astype(float), method="fdr_bh")[1]
    return df


def phenotypic_activity(features: np.ndarray, meta: pd.DataFrame, *, pert_col: str = "perturbation",
                        control_col: str = "is_control", null_size: int, seed: int,
                        same_by: list[str] | None = None) -> pd.DataFrame:
    """mAP of each perturbation's replicates against control replicates (controls: against the other
    control perturbations). ``same_by`` (e.g. ``["plate"]``) restricts negatives to the same plate/batch.

    Returns one row per perturbation: perturbation, is_control, n_replicates, mean_average_precision,
    p_value, q_value (NaN where a perturbation has < 2 replicates).
    """
    x, m = _prepare(features, meta, pert_col)
    ctrl = m[control_col].to_numpy(bool)
    same_by = list(same_by or [])
    m["_ref"] = np.where(ctrl, np.arange(len(m)), -1)
    parts = [_map(x, m, [pert_col, "_ref"], [], same_by, [pert_col, "_ref"], pert_col, null_size, seed)]
    if len(set(m.loc[ctrl, pert_col])) > 1:
        mc = m.loc[ctrl].reset_index(drop=True)
        parts.append(_map(x[ctrl], mc, [pert_col], [], same_by, [pert_col], pert_col, null_size, seed + 1))
    res = pd.concat([p for p in parts if len(p)], ignore_index=True) if any(len(p) for p in parts) else \
        pd.DataFrame(columns=[pert_col, "mean_average_precision", "p_value"])
    return _finish(res, m, pert_col, control_col)


def consistency(features: np.ndarray, meta: pd.DataFrame, *, diff_col: str, pert_col: str = "perturbation",
                control_col: str = "is_control", null_size: int, seed: int) -> pd.DataFrame:
    """mAP of a perturbation's replicates from *different* ``diff_col`` (guide, well, plate) retrieving each
    other ahead of other perturbations' replicates (non-control perturbations only)."""
    x, m = _prepare(features, meta, pert_col)
    trt = ~m[control_col].to_numpy(bool)
    mt = m.loc[trt].reset_index(drop=True)
    res = _map(x[trt], mt, [pert_col], [diff_col], [], [pert_col], pert_col, null_size, seed)
    return _finish(res, mt, pert_col, control_col)


def _finish(res: pd.DataFrame, m: pd.DataFrame, pert_col: str, control_col: str) -> pd.DataFrame:
    groups = m.groupby(pert_col, sort=False)
    base = pd.DataFrame({"perturbation": list(groups.groups),
                         "is_control": groups[control_col].first().astype(bool).to_numpy(),
                         "n_replicates": groups.size().to_numpy()})
    res = res.rename(columns={pert_col: "perturbation"})
    res["perturbation"] = res["perturbation"].astype(object)  # an empty result (nothing scorable) is float
    base["perturbation"] = base["perturbation"].astype(object)
    out = base.merge(res, on="perturbation", how="left")
    out["p_value"] = out["p_value"].astype(float)
    out["mean_average_precision"] = out["mean_average_precision"].astype(float)
    return _bh(out)[_COLS].reset_index(drop=True)
