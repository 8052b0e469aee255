"""Learning curves of the cross-modal evals: how the held-out score grows with the training data.

Two axes, each at ``fractions`` (default 25/50/75/100 %) of the full training set, scored on the same test
perturbations against their full data (as :func:`pairedscreen.train.evals.cross_modal`):

- ``perturbations``: the ridge trained on a random subset of the train perturbations; ``repeats`` random
  orders, the subsets of one order nested (the 25 % inside the 50 %), mean and SD over the orders;
- ``cells``: every train perturbation, its profiles (input and target arm) from the first ``k`` of the
  ``K`` random cell parts (:class:`pairedscreen.train.parts.Parts`), ``k = fraction * K``; the test
  perturbations' inputs stay at full depth (the model meets full data when used).

Trend: least squares of the mean score on ``log2`` of the amount (perturbations, or the cell fraction):
``score = intercept + slope * log2(amount)``; ``next_doubling_gain`` = ``slope`` (the extrapolated change
from doubling the full training set), ``predicted_at_double`` the extrapolated score there. Over four
points that is a trend, not a forecast: the datasheet states it with the points it came from.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from pairedscreen.train.evals import _pearson_rows, discrimination, ridge_predict
from pairedscreen.train.parts import Parts


def _score(x_tr: np.ndarray, y_tr: np.ndarray, x_te: np.ndarray, y_te: np.ndarray, *, n_pcs: int,
           alpha: float) -> tuple[float, float]:
    ok = np.isfinite(x_tr).all(axis=1) & np.isfinite(y_tr).all(axis=1)
    if ok.sum() < 2:
        return np.nan, np.nan
    pred = ridge_predict(x_tr[ok], y_tr[ok], x_te, n_pcs=n_pcs, alpha=alpha)
    return float(np.nanmean(_pearson_rows(pred, y_te))), float(np.nanmean(discrimination(pred, y_te)[0]))


def fit_trend(amount: Sequence[float], score: Sequence[float]) -> dict[str, Any]:
    """``score = intercept + slope * log2(amount)`` by least squares over the finite points."""
    a, s = np.asarray(amount, float), np.asarray(score, float)
    ok = np.isfinite(s) & (a > 0)
    if ok.sum() < 2 or np.ptp(np.log2(a[ok])) == 0:
        return {"model": "score = intercept + slope * log2(amount)", "slope": None, "intercept": None,
                "next_doubling_gain": None, "predicted_at_double": None, "n_points": int(ok.sum())}
    slope, intercept = np.polyfit(np.log2(a[ok]), s[ok], 1)
    top = float(a[ok].max())
    return {"model": "score = intercept + slope * log2(amount)", "slope": float(slope),
            "intercept": float(intercept), "next_doubling_gain": float(slope),
            "predicted_at_double": float(intercept + slope * np.log2(2 * top)), "n_points": int(ok.sum())}


def _curve(points: list[dict[str, Any]], amount_key: str) -> dict[str, Any]:
    amounts = [p[amount_key] for p in points]
    trend = {m: fit_trend(amounts, [p[m] for p in points]) for m in ("correlation", "discrimination")}
    out: dict[str, Any] = {"points": points, "trend": trend}
    if trend["correlation"]["slope"] is None:
        finite = sum(np.isfinite(p["correlation"]) for p in points)
        out["note"] = (f"not measured: {finite} of {len(points)} points have a score (a point needs test "
                       "perturbations with cells in every part it uses, and a trend two points)")
    return out


def learning_curve(x: np.ndarray, y: np.ndarray, train: np.ndarray, test: np.ndarray, *,
                   fractions: Sequence[float], repeats: int, n_pcs: int, alpha: float, seed: int,
                   parts: tuple[tuple[Parts, np.ndarray], tuple[Parts, np.ndarray]] | None = None
                   ) -> dict[str, Any]:
    """Both axes for one direction ``x`` -> ``y`` (rows = perturbations, changes from controls).
    ``parts`` = ((x parts, x offset), (y parts, y offset)): the cell parts of the two arms on the columns of
    ``x`` and ``y`` and the offsets that make their means changes from controls; without it the cells axis
    is left out."""
    ok = np.isfinite(x).all(axis=1) & np.isfinite(y).all(axis=1)
    tr, te = np.flatnonzero(train & ok), np.flatnonzero(test & ok)
    out: dict[str, Any] = {"fractions": [float(f) for f in fractions], "n_train": int(len(tr)),
                           "n_test": int(len(te)), "repeats": int(repeats)}
    if len(tr) < 2 or len(te) < 2:
        return {**out, "note": "too few train/test perturbations with both arms"}
    kw = {"n_pcs": n_pcs, "alpha": alpha}
    rng = np.random.default_rng([seed, 2026])
    orders = [rng.permutation(tr) for _ in range(int(repeats))]
    pts = []
    for f in fractions:
        m = max(2, int(round(float(f) * len(tr))))
        sc = np.array([_score(x[o[:m]], y[o[:m]], x[te], y[te], **kw) for o in orders])
        pts.append({"fraction": float(f), "n_perturbations": m,
                    "correlation": float(np.nanmean(sc[:, 0])), "correlation_sd": float(np.nanstd(sc[:, 0])),
                    "discrimination": float(np.nanmean(sc[:, 1])),
                    "discrimination_sd": float(np.nanstd(sc[:, 1]))})
    out["perturbations"] = _curve(pts, "n_perturbations")
    if parts is not None:
        (xp, xo), (yp, yo) = parts
        k_all = min(xp.n_parts, yp.n_parts)
        cpts = []
        for f in fractions:
            k = max(1, int(round(float(f) * k_all)))
            xt, yt = xp.mean(range(k))[tr] - xo, yp.mean(range(k))[tr] - yo
            c, d = _score(xt, yt, x[te], y[te], **kw)
            cpts.append({"fraction": float(f), "parts": k, "cells_fraction": k / k_all,
                         "correlation": c, "discrimination": d})
        out["cells"] = _curve(cpts, "cells_fraction")
    return out


def learning_curves(prep: Any, arm_parts: dict[str, tuple[Parts, np.ndarray]], params: dict[str, Any], *,
                    seed: int) -> dict[str, Any]:
    """Both directions on :func:`pairedscreen.train.evals.prepare`'s tables; ``params`` = the config's
    ``train.evals`` block (``learning_fractions``, ``learning_repeats``, ``n_pcs``, ``ridge_alpha``)."""
    kw = {"fractions": list(params["learning_fractions"]), "repeats": int(params["learning_repeats"]),
          "n_pcs": int(params["n_pcs"]), "alpha": float(params["ridge_alpha"]), "seed": seed}
    both = "rna" in arm_parts and "paint" in arm_parts
    return {
        "method": __doc__.split("\n\n")[0].replace("\n", " "),
        "rna_to_paint": learning_curve(prep.rna, prep.paint, prep.train, prep.test, **kw,
                                       parts=(arm_parts["rna"], arm_parts["paint"]) if both else None),
        "paint_to_rna": learning_curve(prep.paint, prep.rna, prep.train, prep.test, **kw,
                                       parts=(arm_parts["paint"], arm_parts["rna"]) if both else None),
    }
