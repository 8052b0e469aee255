"""Replicate retrieval with copairs mAP: phenotypic activity (vs controls) and consistency (across guides,
wells or plates), with copairs' rank-permutation p-values and Benjamini-Hochberg q-values.

Replicate units (documented choice):
- paint: normalised well profiles (``results/paint/profiles.parquet``). When a screen has one well per
  perturbation, use sub-well replicates: cells split at random within each well
  (:func:`pairedscreen.paint.profiles.assign_splits`) and aggregated per (well, split).
- rna: replicate pseudobulks = random disjoint cell subsets within each perturbation x guide x library
  (:func:`pairedscreen.quality.units.replicate_pseudobulks`), featurised by :func:`rna_features`.
  Guides stay apart so consistency can require positives from different guides.

Activity: a perturbation's replicates must retrieve each other ahead of the control replicates
(copairs ``pos_sameby=[perturbation]``, negatives = control replicates only). Control perturbations are
scored the same way against the *other* control perturbations (e.g. NTC_1 vs NTC_2...), so a working
null shows as controls not called active. One BH correction covers all scored perturbations.
"""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
from copairs.map import average_precision, mean_average_precision
from statsmodels.stats.multitest import multipletests

from pairedscreen import columns as C

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


def rna_features(x: np.ndarray, is_control: np.ndarray, *, n_top: int, min_mean: float = 0.05,
                 eps: float = 0.1) -> np.ndarray:
    """Replicate pseudobulk log-expression -> features for mAP: genes with mean >= ``min_mean``, the
    ``n_top`` most variable across replicates, centred on the mean of *all* replicates and scaled by the
    control replicates' SD (floored at ``eps`` so near-constant genes cannot dominate).

    Why not centre on the controls: the control mean is estimated from the few control replicates that
    are also the negatives. Every non-control replicate then carries the same estimation error while the
    controls do not, so sibling replicates of an inert perturbation look alike relative to the controls and
    its mAP is inflated (on the tiny simulated screen 2-3 inert perturbations were called active, q < 0.05).
    Centring on all replicates gives positives and negatives the same offset; ranks carry the signal."""
    x = np.asarray(x, dtype=np.float64)
    ctrl = np.asarray(is_control, bool)
    keep = np.flatnonzero(x.mean(axis=0) >= min_mean)
    if len(keep) > n_top:
        var = x[:, keep].var(axis=0)
        keep = keep[np.argsort(var)[::-1][:n_top]]
    sub = x[:, keep]
    ref = sub[ctrl] if ctrl.sum() >= 2 else sub
    sd = np.maximum(ref.std(axis=0, ddof=1) if len(ref) > 1 else np.ones(sub.shape[1]), eps)
    return (sub - sub.mean(axis=0)) / sd


def paint_features(profiles: pd.DataFrame, features: list[str], *, eps: float = 1e-6,
                   plate_col: str | None = C.PLATE, pca_variance: float | None) -> np.ndarray:
    """Normalised well profiles -> features for mAP, columns of zero spread dropped, re-centred per plate on
    the mean of all its wells: normalisation to the plate's control wells leaves every non-control well with
    the same error of the control median, which would inflate inert perturbations' mAP (see
    :func:`rna_features`).

    With ``pca_variance`` (default 0.9) the columns are then standardised and reduced to the principal
    components explaining that share of variance: hundreds of mostly-noise features dilute cosine
    similarity between a handful of wells (on the demo screen, 2 of 4 planted morphology hits were missed
    on all 907 features and all 4 found on the components, with no control or inert perturbation called)."""
    x = profiles[features].to_numpy(np.float64, copy=True)
    if plate_col is not None and plate_col in profiles:
        plates = profiles[plate_col].astype(str).to_numpy()
        for p in np.unique(plates):
            rows = plates == p
            x[rows] -= np.nanmean(x[rows], axis=0)
    sd = np.nanstd(x, axis=0)
    x = x[:, sd > eps]
    if pca_variance is None or x.shape[1] < 2 or x.shape[0] < 3:
        return x
    from sklearn.decomposition import PCA

    z = np.nan_to_num((x - np.nanmean(x, axis=0)) / np.nanstd(x, axis=0))
    n_max = min(z.shape) - 1
    pca = PCA(n_components=min(n_max, z.shape[1]), svd_solver="full", random_state=0).fit(z)
    k = int(np.searchsorted(np.cumsum(pca.explained_variance_ratio_), pca_variance) + 1)
    return pca.transform(z)[:, : min(k, n_max)]
