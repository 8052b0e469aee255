"""Replicate retrieval with copairs mAP (the statistic itself lives in :mod:`pairedscreen.retrieval`):
phenotypic activity (vs controls) and consistency (across guides,
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

import numpy as np
import pandas as pd

from pairedscreen import columns as C
from pairedscreen.retrieval import consistency, phenotypic_activity

__all__ = ["consistency", "paint_features", "phenotypic_activity", "rna_features"]


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
