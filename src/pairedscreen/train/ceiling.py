"""Split-half ceilings and normalised scores of the held-out evals (Virtual Cell Challenge 2026 style).

Every eval is scored three ways on the same test perturbations: the model ``u``, the mean-of-train baseline
``b`` and a ceiling ``r`` from the real data alone; the normalised score is ``(u - b) / (r - b)`` (0 = the
baseline, 1 = as good as a replicate of the experiment).

The ceiling is cell-eval's (``MetricsEvaluator.compute_ceiling``): each perturbation's cells are split at
random into two disjoint halves (here within each perturbation and library, or within each well of a
plate: :mod:`pairedscreen.train.halves`), one half is scored as the "prediction" of the other with the
same metric, the per-perturbation scores are averaged and the half-depth mean ``c`` is taken to full depth
with the Spearman-Brown correction ``2c / (1 + c)``; ``c <= 0`` has no defensible ceiling (``None``, as in
cell-eval). The ceiling is a replicate's score, not a hard bound: a model that denoises (predicts the true
effect rather than another noisy measurement) can exceed it, so normalised scores are not clipped.

Intervals: the test perturbations are resampled (one bootstrap index set shared by ``u``, ``b`` and the
half-depth scores), the ceiling and the normalised score recomputed per resample; ``n_valid`` counts the
resamples where ``r - b`` was above :data:`MIN_GAP` (the others have no normalised score).
"""

from __future__ import annotations

from typing import Any

import numpy as np

# r - b at or below this: the data replicate no better than the baseline, normalising would divide by ~0
MIN_GAP = 1e-6


def spearman_brown(c: float | np.ndarray) -> float | np.ndarray:
    """``2c / (1 + c)`` for ``c > 0``, NaN otherwise (cell-eval's ``_spearman_brown_correct`` rule)."""
    c = np.asarray(c, dtype=float)
    with np.errstate(invalid="ignore", divide="ignore"):
        out = np.where(c > 0, 2 * c / (1 + c), np.nan)
    return out if out.ndim else float(out)


def _f(v: float) -> float | None:
    return float(v) if np.isfinite(v) else None


def ceiling_block(u: np.ndarray, b: np.ndarray, half: np.ndarray, idx: np.ndarray) -> dict[str, Any]:
    """Ceiling and normalised score over rows: ``u``, ``b`` = per-perturbation model and baseline scores,
    ``half`` = the per-perturbation half-vs-half score, ``idx`` = bootstrap index sets (resamples x n)."""
    mu, mb, mh = np.nanmean(u), np.nanmean(b), np.nanmean(half) if np.isfinite(half).any() else np.nan
    r = spearman_brown(mh)
    norm = (mu - mb) / (r - mb) if np.isfinite(r) and r - mb > MIN_GAP else np.nan
    with np.errstate(invalid="ignore"):
        bu, bb = np.nanmean(u[idx], axis=1), np.nanmean(b[idx], axis=1)
        hh = half[idx]
        cnt = np.isfinite(hh).sum(axis=1)
        bh = np.where(cnt > 0, np.nansum(hh, axis=1) / np.maximum(cnt, 1), np.nan)
    br = spearman_brown(bh)
    gap = br - bb
    ok = np.isfinite(br) & (gap > MIN_GAP)
    bn = (bu[ok] - bb[ok]) / gap[ok]
    rci = np.quantile(br[np.isfinite(br)], [0.025, 0.975]) if np.isfinite(br).any() else [np.nan, np.nan]
    nci = np.quantile(bn, [0.025, 0.975]) if len(bn) else [np.nan, np.nan]
    out = {"ceiling": _f(r), "ceiling_ci": [_f(rci[0]), _f(rci[1])], "ceiling_half_depth": _f(mh),
           "n_ceiling": int(np.isfinite(half).sum()),
           "normalised": _f(norm), "normalised_ci": [_f(nci[0]), _f(nci[1])], "n_valid": int(ok.sum())}
    if not np.isfinite(mh):
        out["ceiling_reason"] = ("no test perturbation has cells in both halves of its parts (one cell, one "
                                 "sub-well or one well per perturbation): no split-half replicate")
    elif not np.isfinite(r):
        out["ceiling_reason"] = (f"the halves agree no better than chance (half-depth score {mh:.3g} <= 0): "
                                 "Spearman-Brown is undefined, no ceiling")
    if not np.isfinite(norm):
        out["normalised_reason"] = (out.get("ceiling_reason") or
                                    f"the ceiling ({r:.3g}) is not above the mean-of-train baseline "
                                    f"({mb:.3g}): a replicate of the experiment scores no better than the "
                                    "baseline, so (u - b) / (r - b) is undefined")
    return out


def pearson_halves(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per row: Pearson r between the two halves (NaN where a half is missing or constant)."""
    ok = np.isfinite(a).all(axis=1) & np.isfinite(b).all(axis=1)
    out = np.full(len(a), np.nan)
    if ok.any():
        x = a[ok] - a[ok].mean(axis=1, keepdims=True)
        y = b[ok] - b[ok].mean(axis=1, keepdims=True)
        den = np.sqrt((x * x).sum(axis=1) * (y * y).sum(axis=1))
        out[ok] = np.divide((x * y).sum(axis=1), den, out=np.full(len(x), np.nan), where=den > 0)
    return out
