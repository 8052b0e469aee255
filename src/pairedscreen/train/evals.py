"""Held-out evals of the paired dataset: cross-modal prediction on the test perturbations.

A ridge regression maps one arm's per-perturbation change from controls to the other's (``rna_to_paint``:
RNA pseudobulk change -> morphology consensus; ``paint_to_rna``: consensus -> RNA change of the ``n_hvg``
genes most variable over the train perturbations, which are also the RNA input of ``rna_to_paint``). The
input arm is centred and reduced by PCA fitted on the train perturbations only
(``n_pcs``); the ridge (``ridge_alpha``, intercept) is fitted on train perturbations and scored on the test
perturbations against the mean-of-train baseline (the mean train profile predicted for every test
perturbation):

- ``correlation``: Pearson r between the predicted and the true change from controls, per test perturbation;
  reported as the mean over test perturbations with a bootstrap interval (resampling test perturbations),
  for the ridge, the baseline and their paired difference (``beats_baseline`` = the difference's 95 %
  interval lies above 0, with at least :data:`MIN_N` = 5 test perturbations);
- ``discrimination``: for each test perturbation, the fraction of the other test perturbations whose true
  profile is farther (correlation distance) from its prediction than its own true profile (1 = its own is
  the closest, 0.5 = chance), mean + bootstrap interval, ``top1`` (its own is the closest), and the
  paired difference to the baseline's (``discrimination.beats_baseline``, same rule).

With the simulator's truth, the same figures are given per planted effect class (``by_class``): a model can
only transfer between arms where the perturbations share biology (``both``); for ``rna``-only and
``paint``-only perturbations the ridge should not beat the baseline.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

ARMS = ("rna", "paint")
# fewer test perturbations than this: figures are reported, but a bootstrap over 2-4 values has too few
# distinct resamples for its interval to mean anything, so nothing is called better than the baseline
MIN_N = 5


def _pearson_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a - a.mean(axis=1, keepdims=True)
    b = b - b.mean(axis=1, keepdims=True)
    den = np.sqrt((a * a).sum(axis=1) * (b * b).sum(axis=1))
    return np.divide((a * b).sum(axis=1), den, out=np.full(len(a), np.nan), where=den > 0)


def _corr_matrix(pred: np.ndarray, true: np.ndarray) -> np.ndarray:
    """r[i, j] = Pearson(pred_i, true_j)."""
    p = pred - pred.mean(axis=1, keepdims=True)
    t = true - true.mean(axis=1, keepdims=True)
    p /= np.maximum(np.linalg.norm(p, axis=1, keepdims=True), 1e-12)
    t /= np.maximum(np.linalg.norm(t, axis=1, keepdims=True), 1e-12)
    return p @ t.T


def discrimination(pred: np.ndarray, true: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per row: the fraction of other rows' true profiles farther (1 - r) from the prediction than its own
    (ties count half), and whether its own is strictly the closest."""
    d = 1.0 - _corr_matrix(pred, true)
    n = len(d)
    if n < 2:
        return np.full(n, np.nan), np.full(n, np.nan)
    own = np.diag(d)[:, None]
    off = ~np.eye(n, dtype=bool)
    farther = ((d > own) & off).sum(axis=1) + 0.5 * ((d == own) & off).sum(axis=1)
    score = farther / (n - 1)
    top1 = ((d > own) | ~off).all(axis=1).astype(float)
    return score, top1


def _pca_fit(x: np.ndarray, n_pcs: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Centring (no scaling: log1p expression and control-normalised features are on comparable scales)
    and the top principal axes of the train rows."""
    mean = x.mean(axis=0)
    keep = x.std(axis=0) > 1e-12
    sd = np.ones_like(mean)
    z = x[:, keep] - mean[keep]
    k = max(1, min(n_pcs, z.shape[0] - 1, z.shape[1]))
    _, _, vt = np.linalg.svd(z, full_matrices=False)
    return mean, sd, keep, vt[:k].T


def ridge_predict(x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray, *, n_pcs: int,
                  alpha: float) -> np.ndarray:
    """Centre + PCA (fitted on train) of the inputs, ridge with intercept to the targets."""
    mean, sd, keep, comps = _pca_fit(x_train, n_pcs)
    ztr = ((x_train[:, keep] - mean[keep]) / sd[keep]) @ comps
    zte = ((x_test[:, keep] - mean[keep]) / sd[keep]) @ comps
    ym = y_train.mean(axis=0)
    w = np.linalg.solve(ztr.T @ ztr + alpha * np.eye(ztr.shape[1]), ztr.T @ (y_train - ym))
    return zte @ w + ym


def _interval(values: np.ndarray, idx: np.ndarray) -> list[float | None]:
    if not len(values):
        return [None, None]
    boot = np.nanmean(values[idx], axis=1)
    lo, hi = np.nanquantile(boot, [0.025, 0.975])
    return [float(lo), float(hi)]


def _summary(r_model: np.ndarray, r_base: np.ndarray, disc_m: np.ndarray, top1_m: np.ndarray,
             disc_b: np.ndarray, rows: np.ndarray, n_bootstrap: int, seed: int) -> dict[str, Any]:
    n = len(rows)
    out: dict[str, Any] = {"n": int(n)}
    if n == 0:
        return {**out, "beats_baseline": False, "correlation": None, "discrimination": None}
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, n, size=(n_bootstrap, n))
    rm, rb = r_model[rows], r_base[rows]
    diff = rm - rb
    ci = _interval(diff, idx)
    out["correlation"] = {
        "model": float(np.nanmean(rm)), "model_ci": _interval(rm, idx),
        "baseline": float(np.nanmean(rb)), "baseline_ci": _interval(rb, idx),
        "difference": float(np.nanmean(diff)), "difference_ci": ci,
    }
    dm, db = disc_m[rows], disc_b[rows]
    fin = bool(np.isfinite(dm).any())
    dci = _interval(dm - db, idx) if fin else [None, None]
    out["discrimination"] = {
        "model": float(np.nanmean(dm)) if fin else None,
        "model_ci": _interval(dm, idx) if fin else [None, None],
        "model_top1": float(np.nanmean(top1_m[rows])) if fin else None,
        "baseline": float(np.nanmean(db)) if fin else None,
        "difference_ci": dci, "chance": 0.5,
        "beats_baseline": bool(n >= MIN_N and dci[0] is not None and dci[0] > 0),
    }
    out["beats_baseline"] = bool(n >= MIN_N and ci[0] is not None and ci[0] > 0)
    return out


def cross_modal(x: np.ndarray, y: np.ndarray, train: np.ndarray, test: np.ndarray, *, n_pcs: int,
                alpha: float, n_bootstrap: int, seed: int, labels: np.ndarray | None = None,
                classes: np.ndarray | None = None) -> dict[str, Any]:
    """Ridge ``x`` -> ``y`` (rows = perturbations, changes from controls) trained on ``train`` rows, scored
    on ``test`` rows vs the mean-of-train baseline; ``classes`` (per row, e.g. the planted effect class)
    adds ``by_class``. Rows with a non-finite value in either arm are left out (counted)."""
    ok = np.isfinite(x).all(axis=1) & np.isfinite(y).all(axis=1)
    tr, te = np.flatnonzero(train & ok), np.flatnonzero(test & ok)
    res: dict[str, Any] = {"n_train": int(len(tr)), "n_test": int(len(te)),
                           "n_left_out": int(((train | test) & ~ok).sum())}
    if len(tr) < 2 or len(te) < 1:
        return {**res, "overall": _summary(*(np.empty(0),) * 5, np.empty(0, int), n_bootstrap, seed),
                "note": "too few train/test perturbations with both arms"}
    pred = ridge_predict(x[tr], y[tr], x[te], n_pcs=n_pcs, alpha=alpha)
    base = np.broadcast_to(y[tr].mean(axis=0), pred.shape)
    true = y[te]
    r_model, r_base = _pearson_rows(pred, true), _pearson_rows(np.array(base), true)
    disc_m, top1_m = discrimination(pred, true)
    disc_b, _ = discrimination(np.array(base), true)
    all_rows = np.arange(len(te))
    res["overall"] = _summary(r_model, r_base, disc_m, top1_m, disc_b, all_rows, n_bootstrap, seed)
    if labels is not None:
        res["test_perturbations"] = [str(v) for v in np.asarray(labels)[te]]
        res["per_perturbation"] = [
            {"perturbation": str(lab), "r_model": float(a), "r_baseline": float(b)}
            for lab, a, b in zip(np.asarray(labels)[te], r_model, r_base, strict=True)]
    if classes is not None:
        cls = np.asarray(classes, dtype=str)[te]
        res["by_class"] = {c: _summary(r_model, r_base, disc_m, top1_m, disc_b, np.flatnonzero(cls == c),
                                       n_bootstrap, seed) for c in sorted(set(cls))}
    return res


def top_variable(y: np.ndarray, rows: np.ndarray, n: int) -> np.ndarray:
    """Columns of ``y`` with the highest variance over ``rows`` (ties: lower index), sorted."""
    v = np.nanvar(y[rows], axis=0)
    order = np.lexsort((np.arange(y.shape[1]), -np.nan_to_num(v, nan=-1.0)))
    return np.sort(order[: min(n, y.shape[1])])


def evaluate(rna: np.ndarray, paint: np.ndarray, split: np.ndarray, is_control: np.ndarray,
             params: Mapping[str, Any], *, labels: np.ndarray, classes: np.ndarray | None = None,
             seed: int) -> dict[str, Any]:
    """Both directions on per-perturbation tables: ``rna`` = RNA pseudobulk (mean log1p CP10k), ``paint`` =
    consensus (already relative to the plate controls), rows = perturbations with ``split`` and
    ``is_control``. The RNA change is relative to the mean of the control rows."""
    ctrl = np.asarray(is_control, bool)
    rna_ctrl = rna[ctrl & np.isfinite(rna).all(axis=1)]
    rna_change = rna - (rna_ctrl.mean(axis=0) if len(rna_ctrl) else 0.0)
    split = np.asarray(split, dtype=str)
    train, test = (split == "train") & ~ctrl, (split == "test") & ~ctrl
    kw = {"n_pcs": int(params["n_pcs"]), "alpha": float(params["ridge_alpha"]),
          "n_bootstrap": int(params["n_bootstrap"]), "seed": seed, "labels": labels, "classes": classes}
    fin = np.isfinite(paint).all(axis=0) if paint.size else np.zeros(paint.shape[1], bool)
    paint_f = paint[:, fin] if paint.shape[1] else paint
    genes = top_variable(rna_change, np.flatnonzero(train & np.isfinite(rna_change).all(axis=1)),
                         int(params["n_hvg"]))
    out: dict[str, Any] = {
        "method": "ridge on train-fitted PCA of the input arm vs mean-of-train baseline, test perturbations",
        "params": {k: params[k] for k in ("n_pcs", "ridge_alpha", "n_bootstrap", "n_hvg")},
        "n_features": {"rna": int(rna.shape[1]), "rna_target_genes": int(len(genes)),
                       "paint": int(paint_f.shape[1])},
    }
    if not paint_f.shape[1] or not rna.shape[1]:
        out["note"] = "an arm has no features: cross-modal prediction not evaluated"
        return out
    out["rna_to_paint"] = cross_modal(rna_change[:, genes], paint_f, train, test, **kw)
    out["paint_to_rna"] = cross_modal(paint_f, rna_change[:, genes], train, test, **kw)
    return out
