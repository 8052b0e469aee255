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

Given the arms' split parts (:class:`pairedscreen.train.parts.Parts`, per perturbation sums over random
cell parts), every score also gets its split-half ceiling and the normalised score ``(u - b) / (r - b)``
(:mod:`pairedscreen.train.ceiling`), and ``per_arm`` gives each arm's baseline and ceiling on its own.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from pairedscreen.train.ceiling import ceiling_block, pearson_halves
from pairedscreen.train.parts import Parts

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
             disc_b: np.ndarray, rows: np.ndarray, n_bootstrap: int, seed: int,
             half: tuple[np.ndarray, np.ndarray] | None = None) -> dict[str, Any]:
    """Means + bootstrap intervals over ``rows``; ``half`` = per-row half-vs-half (correlation,
    discrimination) adds each metric's ceiling and normalised score."""
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
    if half is not None:
        out["correlation"].update(ceiling_block(rm, rb, half[0][rows], idx))
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
    if half is not None and fin:
        out["discrimination"].update(ceiling_block(dm, db, half[1][rows], idx))
    out["beats_baseline"] = bool(n >= MIN_N and ci[0] is not None and ci[0] > 0)
    return out


def half_scores(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per row, one half scored as the prediction of the other: Pearson r, and discrimination (each half
    as the prediction of the other half among all rows, both ways averaged); NaN where a half is
    missing."""
    r = pearson_halves(a, b)
    d = np.full(len(a), np.nan)
    ok = np.flatnonzero(np.isfinite(a).all(axis=1) & np.isfinite(b).all(axis=1))
    if len(ok) >= 2:
        d[ok] = 0.5 * (discrimination(a[ok], b[ok])[0] + discrimination(b[ok], a[ok])[0])
    return r, d


def cross_modal(x: np.ndarray, y: np.ndarray, train: np.ndarray, test: np.ndarray, *, n_pcs: int,
                alpha: float, n_bootstrap: int, seed: int, labels: np.ndarray | None = None,
                classes: np.ndarray | None = None,
                y_halves: tuple[np.ndarray, np.ndarray] | None = None) -> dict[str, Any]:
    """Ridge ``x`` -> ``y`` (rows = perturbations, changes from controls) trained on ``train`` rows, scored
    on ``test`` rows vs the mean-of-train baseline; ``classes`` (per row, e.g. the planted effect class)
    adds ``by_class``; ``y_halves`` (the target arm's two split halves, rows and columns as ``y``) adds
    the ceilings and normalised scores. Rows with a non-finite value in either arm are left out
    (counted)."""
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
    half = half_scores(y_halves[0][te], y_halves[1][te]) if y_halves is not None else None
    res["overall"] = _summary(r_model, r_base, disc_m, top1_m, disc_b, all_rows, n_bootstrap, seed, half)
    if labels is not None:
        res["test_perturbations"] = [str(v) for v in np.asarray(labels)[te]]
        res["per_perturbation"] = [
            {"perturbation": str(lab), "r_model": float(a), "r_baseline": float(b)}
            for lab, a, b in zip(np.asarray(labels)[te], r_model, r_base, strict=True)]
        if half is not None:
            for row, h in zip(res["per_perturbation"], half[0], strict=True):
                row["r_half_split"] = float(h) if np.isfinite(h) else None
    if classes is not None:
        cls = np.asarray(classes, dtype=str)[te]
        res["by_class"] = {c: _summary(r_model, r_base, disc_m, top1_m, disc_b, np.flatnonzero(cls == c),
                                       n_bootstrap, seed, half) for c in sorted(set(cls))}
    return res


def arm_ceiling(y: np.ndarray, y_halves: tuple[np.ndarray, np.ndarray], train: np.ndarray,
                test: np.ndarray, *, n_bootstrap: int, seed: int,
                classes: np.ndarray | None = None) -> dict[str, Any]:
    """One arm on its own: the mean-of-train baseline's scores on the test perturbations (vs the full
    data) and the arm's split-half ceiling, overall and by class; the room a model of this arm has."""
    ok = np.isfinite(y).all(axis=1)
    tr, te = np.flatnonzero(train & ok), np.flatnonzero(test & ok)
    if len(tr) < 1 or len(te) < 2:
        return {"n_train": int(len(tr)), "n_test": int(len(te)), "note": "too few perturbations"}
    base = np.repeat(y[tr].mean(axis=0, keepdims=True), len(te), axis=0)
    r_b = _pearson_rows(base, y[te])
    d_b, _ = discrimination(base, y[te])
    half = half_scores(y_halves[0][te], y_halves[1][te])

    def block(rows: np.ndarray) -> dict[str, Any]:
        s = _summary(r_b, r_b, d_b, np.zeros(len(te)), d_b, rows, n_bootstrap, seed, half)
        out: dict[str, Any] = {"n": s["n"]}
        for m in ("correlation", "discrimination"):
            v = s.get(m)
            out[m] = None if v is None else {k: v[k] for k in (
                "baseline", "ceiling", "ceiling_ci", "ceiling_half_depth", "n_ceiling") if k in v}
            if v is not None and "baseline_ci" in v:
                out[m]["baseline_ci"] = v["baseline_ci"]
        return out

    res: dict[str, Any] = {"n_train": int(len(tr)), "n_test": int(len(te)),
                           "overall": block(np.arange(len(te)))}
    if classes is not None:
        cls = np.asarray(classes, dtype=str)[te]
        res["by_class"] = {c: block(np.flatnonzero(cls == c)) for c in sorted(set(cls))}
    return res


def top_variable(y: np.ndarray, rows: np.ndarray, n: int) -> np.ndarray:
    """Columns of ``y`` with the highest variance over ``rows`` (ties: lower index), sorted."""
    v = np.nanvar(y[rows], axis=0)
    order = np.lexsort((np.arange(y.shape[1]), -np.nan_to_num(v, nan=-1.0)))
    return np.sort(order[: min(n, y.shape[1])])


@dataclass
class Prepared:
    """The eval's per-perturbation tables: ``rna`` = change from the control mean on the ``genes`` (the
    paint-to-RNA target, the RNA input of RNA-to-paint), ``paint`` = the consensus' finite features
    (``paint_columns``), ``rna_offset`` = the control mean on ``genes`` (subtracted from RNA parts)."""
    rna: np.ndarray
    paint: np.ndarray
    genes: np.ndarray
    paint_columns: np.ndarray
    rna_offset: np.ndarray
    train: np.ndarray
    test: np.ndarray


def prepare(rna: np.ndarray, paint: np.ndarray, split: np.ndarray, is_control: np.ndarray,
            n_hvg: int) -> Prepared:
    """RNA change relative to the mean of the control rows, the ``n_hvg`` genes most variable over the
    train perturbations, the paint features finite for every perturbation."""
    ctrl = np.asarray(is_control, bool)
    rna_ctrl = rna[ctrl & np.isfinite(rna).all(axis=1)]
    offset = rna_ctrl.mean(axis=0) if len(rna_ctrl) else np.zeros(rna.shape[1])
    rna_change = rna - offset
    split = np.asarray(split, dtype=str)
    train, test = (split == "train") & ~ctrl, (split == "test") & ~ctrl
    fin = np.isfinite(paint).all(axis=0) if paint.size else np.zeros(paint.shape[1], bool)
    genes = top_variable(rna_change, np.flatnonzero(train & np.isfinite(rna_change).all(axis=1)), n_hvg)
    return Prepared(rna_change[:, genes], paint[:, fin], genes, np.flatnonzero(fin), offset[genes],
                    train, test)


def arm_parts(prep: Prepared, rna_parts: Parts | None, paint_parts: Parts | None
              ) -> dict[str, tuple[Parts, np.ndarray]]:
    """Each arm's parts on the eval's columns with the offset that makes them changes from controls
    (``rna_parts`` on ``prep.genes``, ``paint_parts`` on the consensus' feature columns)."""
    out: dict[str, tuple[Parts, np.ndarray]] = {}
    if rna_parts is not None:
        if rna_parts.sums.shape[2] != len(prep.genes):
            raise ValueError(f"RNA parts hold {rna_parts.sums.shape[2]} genes, the eval {len(prep.genes)}")
        out["rna"] = (rna_parts, prep.rna_offset)
    if paint_parts is not None:
        out["paint"] = (paint_parts.columns(prep.paint_columns), np.zeros(len(prep.paint_columns)))
    return out


def parts_halves(parts: Parts, offset: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    a, b = parts.halves()
    return a - offset, b - offset


def evaluate(rna: np.ndarray, paint: np.ndarray, split: np.ndarray, is_control: np.ndarray,
             params: Mapping[str, Any], *, labels: np.ndarray, classes: np.ndarray | None = None,
             seed: int, rna_parts: Parts | None = None, paint_parts: Parts | None = None,
             learning: bool = False) -> dict[str, Any]:
    """Both directions on per-perturbation tables: ``rna`` = RNA pseudobulk (mean log1p CP10k), ``paint`` =
    consensus (already relative to the plate controls), rows = perturbations with ``split`` and
    ``is_control``. The RNA change is relative to the mean of the control rows. ``rna_parts`` (on the
    columns :func:`prepare` picks, ``genes``) and ``paint_parts`` (on every column of ``paint``) add the
    split-half ceilings, normalised scores and ``per_arm``; ``learning`` adds the learning curves
    (:mod:`pairedscreen.train.learning`; ``params`` then needs ``learning_fractions`` and
    ``learning_repeats``)."""
    prep = prepare(rna, paint, split, is_control, int(params["n_hvg"]))
    kw = {"n_pcs": int(params["n_pcs"]), "alpha": float(params["ridge_alpha"]),
          "n_bootstrap": int(params["n_bootstrap"]), "seed": seed, "labels": labels, "classes": classes}
    out: dict[str, Any] = {
        "method": "ridge on train-fitted PCA of the input arm vs mean-of-train baseline, test perturbations",
        "params": {k: params[k] for k in ("n_pcs", "ridge_alpha", "n_bootstrap", "n_hvg")},
        "n_features": {"rna": int(rna.shape[1]), "rna_target_genes": int(len(prep.genes)),
                       "paint": int(prep.paint.shape[1])},
    }
    if not prep.paint.shape[1] or not rna.shape[1]:
        out["note"] = "an arm has no features: cross-modal prediction not evaluated"
        return out
    parts = arm_parts(prep, rna_parts, paint_parts)
    halves = {arm: parts_halves(*v) for arm, v in parts.items()}
    out["rna_to_paint"] = cross_modal(prep.rna, prep.paint, prep.train, prep.test, **kw,
                                      y_halves=halves.get("paint"))
    out["paint_to_rna"] = cross_modal(prep.paint, prep.rna, prep.train, prep.test, **kw,
                                      y_halves=halves.get("rna"))
    if halves:
        out["per_arm"] = {arm: arm_ceiling(y, halves[arm], prep.train, prep.test,
                                           n_bootstrap=kw["n_bootstrap"], seed=seed, classes=classes)
                          for arm, y in (("rna", prep.rna), ("paint", prep.paint)) if arm in halves}
    if learning:
        from pairedscreen.train.learning import learning_curves

        out["learning_curve"] = learning_curves(prep, parts, dict(params), seed=seed)
    return out
