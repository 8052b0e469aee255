"""Leakage audit: does the per-perturbation metadata we release predict the held-out answers?

The 2025 Virtual Cell Challenge learned that released per-perturbation cell and UMI counts predicted the
effect sizes a model was asked for. Here every released per-perturbation field (cells, UMIs per cell,
guides, libraries, wells, plate positions, cells per well: built by the stage from the same streamed pass
as the ceilings) is the input of a ridge regression (standardised inside each fold, :data:`ALPHA`) and each
answer a target, over the treated perturbations:

- ``rna_effect`` / ``paint_effect``: the effect size, ``sqrt(max(0, mean_f A_f * B_f))`` of the two split
  halves' changes from controls (:func:`effect_size`). The cross product of independent halves has no
  noise term, so a perturbation with few cells does not look stronger just by being noisier (the plain
  norm of a noisy mean would make cell counts "predict" effect size on a clean screen);
- ``rna_de_genes``: the perturbation's DE genes of the stored Wilcoxon test against its library's control
  cells (``results/rna/de_summary.tsv``, :mod:`pairedscreen.rna.de`). Its power grows with the cells, so
  on a screen whose cell counts vary a lot it depends on cell counts by construction; a model could use
  that too, and the audit says so.

Score: the ``n_folds``-fold cross-validated R^2 (out-of-fold predictions, ``1 - SSE / SST``), against a
null of ``n_permutations`` shuffles of the target through the same folds (``p = (1 + #null >= R^2) /
(1 + n_permutations)``); ``flagged`` when ``R^2 > threshold`` and ``p <= P_MAX``. Each field's own
cross-validated R^2 (``by_field``) names what leaks.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import pandas as pd

ALPHA = 1.0     # ridge penalty on standardised metadata
P_MAX = 0.05    # permutation p-value at or below which an R^2 above the threshold is flagged
MIN_ROWS = 10   # fewer treated perturbations with a target: not audited


def effect_size(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per row: ``sqrt(max(0, mean(a * b)))`` over the finite columns of both halves (NaN if none)."""
    prod = np.where(np.isfinite(a) & np.isfinite(b), a * b, np.nan)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)   # an all-NaN row: NaN
        m = np.nanmean(prod, axis=1)
    return np.sqrt(np.clip(m, 0, None))


def _folds(n: int, n_folds: int, seed: int) -> np.ndarray:
    return np.random.default_rng([seed, 23]).permutation(n) % n_folds


def cv_r2(x: np.ndarray, y: np.ndarray, folds: np.ndarray, alpha: float = ALPHA) -> float:
    """Out-of-fold R^2 of a ridge (intercept, features standardised on the training folds)."""
    pred = np.empty_like(y, dtype=float)
    for k in np.unique(folds):
        te, tr = folds == k, folds != k
        mu, sd = x[tr].mean(axis=0), x[tr].std(axis=0)
        sd = np.where(sd > 0, sd, 1.0)
        ztr, zte = (x[tr] - mu) / sd, (x[te] - mu) / sd
        ym = y[tr].mean()
        w = np.linalg.solve(ztr.T @ ztr + alpha * np.eye(x.shape[1]), ztr.T @ (y[tr] - ym))
        pred[te] = zte @ w + ym
    sst = ((y - y.mean()) ** 2).sum()
    return float(1.0 - ((y - pred) ** 2).sum() / sst) if sst > 0 else float("nan")


def audit(metadata: pd.DataFrame, targets: pd.DataFrame, *, n_folds: int, n_permutations: int,
          threshold: float, seed: int) -> dict[str, Any]:
    """Cross-validated R^2 of ``metadata`` (rows = treated perturbations, numeric fields; constant or
    non-finite fields dropped) for every column of ``targets`` (same rows), vs its shuffled null."""
    meta = metadata.astype(float)
    meta = meta.loc[:, np.isfinite(meta).all(axis=0) & (meta.std(axis=0) > 0)]
    res: dict[str, Any] = {"method": __doc__.split("\n\n")[2].replace("\n", " "),
                           "fields": list(meta.columns), "threshold": float(threshold), "p_max": P_MAX,
                           "n_folds": int(n_folds), "n_permutations": int(n_permutations), "targets": {}}
    flagged = []
    for name in targets.columns:
        y = targets[name].to_numpy(float)
        ok = np.isfinite(y)
        out: dict[str, Any] = {"n": int(ok.sum())}
        if ok.sum() < max(MIN_ROWS, 2 * n_folds) or meta.shape[1] == 0 or np.ptp(y[ok]) == 0:
            why = (f"only {int(ok.sum())} perturbations with the answer (needs {max(MIN_ROWS, 2 * n_folds)})"
                   if ok.sum() < max(MIN_ROWS, 2 * n_folds) else
                   "no released field varies across the perturbations" if meta.shape[1] == 0 else
                   "the answer is the same for every perturbation")
            res["targets"][name] = {**out, "r2": None, "flagged": None, "note": f"not measured: {why}"}
            continue
        x, yy = meta.to_numpy()[ok], y[ok]
        folds = _folds(len(yy), n_folds, seed)
        r2 = cv_r2(x, yy, folds)
        rng = np.random.default_rng([seed, 2025])
        null = np.array([cv_r2(x, rng.permutation(yy), folds) for _ in range(int(n_permutations))])
        p = float((1 + (null >= r2).sum()) / (1 + len(null)))
        by_field = {c: cv_r2(x[:, [j]], yy, folds) for j, c in enumerate(meta.columns)}
        flag = bool(r2 > threshold and p <= P_MAX)
        out.update(r2=r2, null_mean=float(null.mean()), null_q95=float(np.quantile(null, 0.95)), p_value=p,
                   flagged=flag, by_field=by_field,
                   top_field=max(by_field, key=lambda c: by_field[c]))
        res["targets"][name] = out
        if flag:
            flagged.append(name)
    res["flagged"] = flagged
    res["warning"] = (
        "released per-perturbation metadata predicts held-out answers: " + "; ".join(
            f"{t} (cross-validated R^2 {res['targets'][t]['r2']:.2f} > {threshold:g}, p = "
            f"{res['targets'][t]['p_value']:.3f}; mostly {res['targets'][t]['top_field']})" for t in flagged)
        if flagged else None)
    return res
