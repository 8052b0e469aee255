"""The JUMP correction chain (``profiles.correct``): cell-count regression, sphering, Harmony, PCA.

The steps of jump-profiling-recipe's ``..._cc_..._sphering_harmony_PCA_corrected`` profiles, run after
normalisation and feature selection in the order the config lists them. Every step is fitted on a bounded
input and applied one plate at a time (:class:`Store`, implemented by
:class:`pairedscreen.paint.screen_profiles.ScreenProfiles` over its per-plate scratch), so memory stays
bounded by a plate plus the fitted parameters:

- ``cell_count_regression``: per feature, the ordinary least-squares fit ``x ~ a + b * n_cells`` over every
  well (JUMP ``regress_out_cell_counts``: statsmodels ``ols`` per feature), replaced by its residual. The
  fit's sufficient statistics (sums of n_cells, n_cells^2, x, n_cells * x) are accumulated plate by plate:
  the exact least-squares coefficients without holding the screen.
- ``sphering``: pycytominer's ``Spherize`` (ZCA-cor by default) fitted on the negative-control wells (at
  most ``correct_max_fit_wells``, a seeded choice), one fit per candidate regularisation; each candidate
  sphers a sample (at most ``sphering.max_replicates`` wells per perturbation) scored by the replicate mAP
  of :mod:`pairedscreen.retrieval` (non-control perturbations against the control wells, cosine); the best
  mean mAP is applied to every plate (JUMP ``sphering_explore`` / ``select_best``).
- ``harmony``: the wells' first ``harmony.n_pcs`` principal components (PCA fitted on at most
  ``correct_max_fit_wells`` wells, every plate projected) corrected by ``harmonypy.run_harmony`` on the batch
  key (JUMP: ``nclust=300, max_iter_harmony=20``). Harmony needs every well at once: wells x n_pcs values
  (40,000 wells x 50 PCs = 16 MB), never the feature table. Features become ``Harmony_PC001``...
- ``pca``: sklearn PCA fitted on at most ``correct_max_fit_wells`` wells, ``pca.n_components`` or the
  components explaining ``pca.variance`` (JUMP ``transform_data``, 0.98); features become ``PCA_PC001``...

Each step returns a record (fitted parameters summarised, the mAP of every sphering candidate, Harmony's
iterations and convergence, the components kept) that ``profiles.parquet`` carries in its metadata
(:data:`RECORD_KEY`), the datasheet copies (``profiles_correction``) and quality extends with batch
predictability and replicate mAP after each step (``metrics.correction``; the profiles after each step but
the last are written beside ``profiles.parquet``, :func:`step_path`).
"""

from __future__ import annotations

import json
import logging
import os
import warnings
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from pairedscreen.columns import ALIASES, IS_CONTROL, N_CELLS, PERT, PLATE

STEPS = ("cell_count_regression", "sphering", "harmony", "pca")
RECORD_KEY = b"pairedscreen.correct"          # profiles.parquet schema metadata: the chain's records (JSON)
STEPS_DIR = "profiles_steps"                   # beside profiles.parquet: the profiles after each step
MAP_NULL_SIZE = 100   # copairs' null per mAP (p-values unused here: candidates are ranked by mean mAP)


class Store(Protocol):
    """Per-plate access to the screen's selected profiles (``ScreenProfiles`` implements it)."""

    rows: list[int]
    kept: list[str]

    def plate_x(self, k: int) -> np.ndarray:
        """Plate ``k``'s current features (wells x features, float64)."""

    def plate_meta(self, k: int, cols: Sequence[str]) -> pd.DataFrame:
        """Plate ``k``'s metadata columns ``cols`` (those present)."""

    def replace(self, k: int, x: np.ndarray) -> None:
        """Plate ``k``'s new features (wells x new features), kept aside until :meth:`rename`."""

    def rename(self, names: list[str]) -> None:
        """Every plate replaced: the new features are ``names``."""


# ------------------------------------------------------------------------------------- the steps
class CellCountFit:
    """Least squares ``x ~ a + b * c`` per column of ``x``, from sums accumulated a plate at a time."""

    def __init__(self, n_features: int) -> None:
        self.n = 0
        self.sc = self.scc = 0.0
        self.sx, self.scx, self.sxx = (np.zeros(n_features) for _ in range(3))

    def add(self, c: np.ndarray, x: np.ndarray) -> None:
        c = np.asarray(c, np.float64)
        self.n += len(c)
        self.sc += float(c.sum())
        self.scc += float(c @ c)
        self.sx += x.sum(axis=0)
        self.scx += c @ x
        self.sxx += (x * x).sum(axis=0)

    def result(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(intercepts, slopes, R^2) per feature; slope 0 where n_cells does not vary."""
        ccc = self.scc - self.sc ** 2 / self.n
        cxc = self.scx - self.sc * self.sx / self.n
        slope = cxc / ccc if ccc > 0 else np.zeros_like(cxc)
        intercept = (self.sx - slope * self.sc) / self.n
        sst = self.sxx - self.sx ** 2 / self.n
        with np.errstate(invalid="ignore", divide="ignore"):
            r2 = np.where(sst > 0, slope * cxc / sst, 0.0)
        return intercept, slope, np.clip(r2, 0, 1)


def regress_cell_counts(x: np.ndarray, c: np.ndarray, intercept: np.ndarray, slope: np.ndarray) -> np.ndarray:
    """Residual of ``x`` (wells x features) from the fitted line on the wells' cell counts ``c``."""
    return x - intercept - np.asarray(c, np.float64)[:, None] * slope


def fit_spherer(x_fit: np.ndarray, epsilon: float, method: str) -> Any:
    """pycytominer's ``Spherize`` fitted on ``x_fit`` (the control wells)."""
    from pycytominer.operations import Spherize

    return Spherize(epsilon=epsilon, method=method, return_numpy=True).fit(pd.DataFrame(x_fit))


def sphere(spherer: Any, x: np.ndarray) -> np.ndarray:
    """``spherer.transform`` of ``x`` (wells x features)."""
    return np.asarray(spherer.transform(pd.DataFrame(x)), np.float64)


def mean_map(x: np.ndarray, meta: pd.DataFrame, seed: int) -> float | None:
    """Mean replicate mAP of the non-control perturbations (against the control wells) of profiles ``x``:
    :func:`pairedscreen.retrieval.phenotypic_activity`, the statistic quality reports."""
    from pairedscreen.retrieval import phenotypic_activity

    m = pd.DataFrame({"perturbation": meta[PERT].astype(str).to_numpy(),
                      "is_control": meta[IS_CONTROL].to_numpy(bool)})
    act = phenotypic_activity(x, m, null_size=MAP_NULL_SIZE, seed=seed)
    vals = act.loc[~act["is_control"].to_numpy(bool), "mean_average_precision"].dropna()
    return float(vals.mean()) if len(vals) else None


def choose_sphering(x_ctrl: np.ndarray, x_sample: np.ndarray, meta_sample: pd.DataFrame,
                    candidates: Sequence[float], method: str, seed: int) -> tuple[Any, dict[str, Any]]:
    """The spherer (fitted on ``x_ctrl``) whose sphered sample has the highest mean mAP, and the record of
    every candidate (the first of equal scores wins; a candidate whose mAP is undefined never does)."""
    scores, fits = [], []
    for eps in candidates:
        sp = fit_spherer(x_ctrl, float(eps), method)
        fits.append(sp)
        scores.append(mean_map(sphere(sp, x_sample), meta_sample, seed))
    finite = [s if s is not None else -np.inf for s in scores]
    best = int(np.argmax(finite))
    chosen_by = "highest mean mAP" if np.isfinite(finite[best]) else \
        "the first candidate: no mAP (no non-control perturbation with 2 or more wells in the sample)"
    return fits[best], {"method": method, "epsilon": float(candidates[best]), "chosen_by": chosen_by,
                        "candidates": [{"epsilon": float(e), "mean_map": s}
                                       for e, s in zip(candidates, scores, strict=True)]}


def harmonize(pcs: np.ndarray, batches: np.ndarray, *, nclust: int, max_iter: int,
              seed: int) -> tuple[np.ndarray, dict[str, Any]]:
    """``harmonypy.run_harmony`` of ``pcs`` (wells x components) on ``batches``; the corrected components
    and the run's record (clusters, iterations, converged: harmonypy's own criterion on its last two
    objectives)."""
    import harmonypy

    logging.getLogger("harmonypy").setLevel(logging.WARNING)     # (its k-means notes at INFO, verbose or not)
    meta = pd.DataFrame({"batch": pd.Categorical(np.asarray(batches).astype(str))})
    ho = harmonypy.run_harmony(pcs, meta, "batch", nclust=int(nclust), max_iter_harmony=int(max_iter),
                               random_state=int(seed), verbose=False)
    iterations = len(ho.objective_harmony) - 1
    converged = bool(ho.check_convergence(1)) if iterations >= 1 else False
    return np.asarray(ho.Z_corr.T, np.float64), {
        "nclust": int(nclust), "max_iter": int(max_iter), "iterations": int(iterations),
        "converged": converged, "objective_first": float(ho.objective_harmony[0]),
        "objective_last": float(ho.objective_harmony[-1])}


def harmony_clusters(requested: int, n_wells: int) -> int:
    """The clusters harmony uses: ``requested``, at most one per 30 wells (harmonypy's default rule, so
    k-means has wells to cluster on a small screen), at least 2."""
    return int(max(2, min(int(requested), n_wells // 30)))


def fit_pca(x_fit: np.ndarray, *, n_components: int | float, seed: int) -> Any:
    """sklearn PCA (full SVD) on ``x_fit``; ``n_components`` an integer (clipped to the data's rank bound)
    or a variance share."""
    from sklearn.decomposition import PCA

    if isinstance(n_components, int):
        n_components = int(min(n_components, x_fit.shape[1], max(1, x_fit.shape[0] - 1)))
    return PCA(n_components=n_components, svd_solver="full", random_state=seed).fit(x_fit)


def component_names(prefix: str, n: int) -> list[str]:
    return [f"{prefix}_PC{i + 1:03d}" for i in range(n)]


# --------------------------------------------------------------------------- the chain on a store
def _sample(n_total: int, eligible: np.ndarray, cap: int, seed: int) -> np.ndarray:
    """Sorted positions of at most ``cap`` of the ``eligible`` rows (a seeded choice; all when fewer)."""
    idx = np.flatnonzero(eligible)
    if len(idx) > cap:
        idx = np.sort(np.random.default_rng(seed).choice(idx, cap, replace=False))
    return idx


def _per_perturbation(meta: pd.DataFrame, cap: int, seed: int) -> np.ndarray:
    """Sorted positions of at most ``cap`` rows per perturbation (seeded)."""
    rng = np.random.default_rng(seed)
    groups = meta.groupby(PERT, sort=True, observed=True).indices.values()
    keep = [rng.permutation(idx)[:cap] for idx in groups]
    return np.sort(np.concatenate(keep)) if keep else np.zeros(0, np.int64)


def read_rows(store: Store, positions: np.ndarray) -> np.ndarray:
    """The current features of the rows at ``positions`` (sorted screen positions), a plate at a time."""
    starts = np.r_[0, np.cumsum(store.rows)]
    parts = []
    for k in range(len(store.rows)):
        sel = positions[(positions >= starts[k]) & (positions < starts[k + 1])] - starts[k]
        if len(sel):
            parts.append(store.plate_x(k)[sel])
    return np.concatenate(parts) if parts else np.zeros((0, len(store.kept)))


def _apply(store: Store, fn: Callable[[int, np.ndarray], np.ndarray], names: list[str]) -> None:
    for k in range(len(store.rows)):
        store.replace(k, fn(k, store.plate_x(k)))
    store.rename(names)


def _step_cell_count(store: Store, meta: pd.DataFrame, params: Mapping[str, Any]) -> dict[str, Any]:
    if N_CELLS not in meta:
        raise ValueError(f"profiles.correct cell_count_regression needs the wells' {N_CELLS} column")
    counts = [store.plate_meta(k, [N_CELLS])[N_CELLS].to_numpy(np.float64) for k in range(len(store.rows))]
    fit = CellCountFit(len(store.kept))
    for k in range(len(store.rows)):
        fit.add(counts[k], store.plate_x(k))
    a, b, r2 = fit.result()
    _apply(store, lambda k, x: regress_cell_counts(x, counts[k], a, b), list(store.kept))
    return {"covariate": N_CELLS, "n_wells": int(fit.n), "n_features": len(b),
            "slope_abs_median": float(np.median(np.abs(b))) if len(b) else None,
            "r2_median": float(np.median(r2)) if len(r2) else None,
            "r2_max": float(r2.max()) if len(r2) else None,
            "n_features_r2_above_0.1": int((r2 > 0.1).sum())}


def _step_sphering(store: Store, meta: pd.DataFrame, params: Mapping[str, Any]) -> dict[str, Any]:
    opts, cap, seed = params["sphering"], int(params["correct_max_fit_wells"]), int(params["correct_seed"])
    ctrl = _sample(len(meta), meta[IS_CONTROL].to_numpy(bool), cap, seed)
    if len(ctrl) < 3:
        raise ValueError(f"profiles.correct sphering needs control wells to fit on: {len(ctrl)} found")
    x_ctrl = read_rows(store, ctrl)
    varies = x_ctrl.std(axis=0) > 0       # Spherize refuses features constant over its fit
    names = [f for f, ok in zip(store.kept, varies, strict=True) if ok]
    sample = _per_perturbation(meta, int(opts["max_replicates"]), seed)
    sample = sample[:cap] if len(sample) > cap else sample
    spherer, record = choose_sphering(x_ctrl[:, varies], read_rows(store, sample)[:, varies],
                                      meta.iloc[sample].reset_index(drop=True),
                                      list(opts["regularisations"]), str(opts["method"]), seed)
    del x_ctrl
    _apply(store, lambda k, x: sphere(spherer, x[:, varies]), names)
    return {**record, "n_fit_wells": int(len(ctrl)), "n_controls": int(meta[IS_CONTROL].sum()),
            "n_score_wells": int(len(sample)), "n_features": len(names),
            "n_features_constant_in_controls": int((~varies).sum())}


def _step_harmony(store: Store, meta: pd.DataFrame, params: Mapping[str, Any]) -> dict[str, Any]:
    opts, cap, seed = params["harmony"], int(params["correct_max_fit_wells"]), int(params["correct_seed"])
    key = ALIASES.get(str(opts["batch_key"]), str(opts["batch_key"]))
    if key not in meta:
        raise ValueError(f"profiles.harmony.batch_key {opts['batch_key']!r}: no column {key!r} in the wells")
    batches = meta[key].astype(str).to_numpy()
    fit_rows = _sample(len(meta), np.ones(len(meta), bool), cap, seed)
    pca = fit_pca(read_rows(store, fit_rows), n_components=int(opts["n_pcs"]), seed=seed)
    pcs = np.concatenate([pca.transform(store.plate_x(k)) for k in range(len(store.rows))])
    n_batches = len(set(batches))
    record: dict[str, Any] = {"batch_key": key, "n_batches": n_batches, "n_wells": len(pcs),
                              "n_pcs": int(pca.n_components_), "n_fit_wells": int(len(fit_rows)),
                              "pca_variance_explained": float(pca.explained_variance_ratio_.sum()),
                              "nclust_requested": int(opts["nclust"])}
    if n_batches < 2:
        corrected = pcs
        record.update(corrected=False, reason="one batch: the components are left as they are")
    else:
        corrected, run = harmonize(pcs, batches, nclust=harmony_clusters(opts["nclust"], len(pcs)),
                                   max_iter=int(opts["max_iter"]), seed=seed)
        record.update(corrected=True, **run)
    starts = np.r_[0, np.cumsum(store.rows)]
    _apply(store, lambda k, x: corrected[starts[k]:starts[k + 1]], component_names("Harmony", pcs.shape[1]))
    return record


def _step_pca(store: Store, meta: pd.DataFrame, params: Mapping[str, Any]) -> dict[str, Any]:
    opts, cap, seed = params["pca"], int(params["correct_max_fit_wells"]), int(params["correct_seed"])
    fit_rows = _sample(len(meta), np.ones(len(meta), bool), cap, seed)
    n = int(opts["n_components"]) if opts["n_components"] is not None else float(opts["variance"])
    pca = fit_pca(read_rows(store, fit_rows), n_components=n, seed=seed)
    _apply(store, lambda k, x: pca.transform(x), component_names("PCA", int(pca.n_components_)))
    return {"n_features_in": int(pca.n_features_in_), "n_components": int(pca.n_components_),
            "requested": n, "variance_explained": float(pca.explained_variance_ratio_.sum()),
            "n_fit_wells": int(len(fit_rows))}


STEP_FUNCTIONS: dict[str, Callable[[Store, pd.DataFrame, Mapping[str, Any]], dict[str, Any]]] = {
    "cell_count_regression": _step_cell_count, "sphering": _step_sphering, "harmony": _step_harmony,
    "pca": _step_pca}


def run_chain(store: Store, steps: Sequence[str], params: Mapping[str, Any], *,
              meta_columns: Sequence[str] = (PLATE, PERT, IS_CONTROL, N_CELLS),
              after_step: Callable[[int, str], None] | None = None) -> list[dict[str, Any]]:
    """The configured steps in order on ``store``; ``params`` = the resolved ``profiles:`` block.
    ``after_step(i, step)`` runs after each (e.g. to write the step's profiles). Returns the records."""
    unknown = [s for s in steps if s not in STEP_FUNCTIONS]
    if unknown:
        raise ValueError(f"unknown profiles.correct step(s) {unknown}; known: {list(STEPS)}")
    batch_key = ALIASES.get(str(params["harmony"]["batch_key"]), str(params["harmony"]["batch_key"]))
    cols = list(dict.fromkeys([*meta_columns, batch_key]))
    meta = pd.concat([store.plate_meta(k, cols) for k in range(len(store.rows))], ignore_index=True)
    records = []
    for i, step in enumerate(steps, start=1):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            rec = STEP_FUNCTIONS[step](store, meta, params)
        records.append({"step": step, "n_features_out": len(store.kept), **rec})
        if after_step is not None:
            after_step(i, step)
    return records


# ------------------------------------------------------------------------------- stored records
def step_path(profiles: str | os.PathLike, i: int, step: str) -> Path:
    """The profiles after step ``i`` (0 = before the chain), beside ``profiles.parquet``."""
    return Path(profiles).parent / STEPS_DIR / f"{i}_{step}.parquet"


def read_records(profiles: str | os.PathLike) -> list[dict[str, Any]]:
    """The chain's records stored in ``profiles.parquet`` ([] when it ran no step)."""
    meta = pq.read_schema(profiles).metadata or {}
    return json.loads(meta[RECORD_KEY]) if RECORD_KEY in meta else []


def step_tables(profiles: str | os.PathLike) -> list[tuple[str, Path]]:
    """(step, path of its profiles) for ``input`` (before the chain) and each step; the last step's are
    ``profiles.parquet`` itself. [] when the chain ran no step."""
    records = read_records(profiles)
    if not records:
        return []
    out = [("input", step_path(profiles, 0, "input"))]
    for i, rec in enumerate(records, start=1):
        last = i == len(records)
        out.append((rec["step"], Path(profiles) if last else step_path(profiles, i, rec["step"])))
    return out
