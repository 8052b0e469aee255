"""Plate-position effects: how much of the well-to-well variance the row, the column and the edge explain,
per plate and feature group, with a permutation test for the edge.

For each feature, the variance explained by a factor is the adjusted R^2 of a one-way layout (row, column,
or edge vs interior); a feature group reports the median over its features. The edge test statistic is
the mean edge R^2 over the group's features; its null permutes which wells are edge wells (the wells and
profiles stay as they are), so p-values hold whatever the feature correlation. Run it on the profiles
before and after :func:`pairedscreen.paint.profiles.correct_position` to show the correction worked.
Feature groups: ``all`` and each ``{Compartment}_{Family}`` (e.g. ``Cells_Intensity``).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from statsmodels.stats.multitest import multipletests

from pairedscreen.columns import IS_CONTROL, PLATE, WELL, feature_columns
from pairedscreen.plate import PLATE_SHAPE, edge_mask, well_positions


def feature_groups(features: Sequence[str]) -> dict[str, list[str]]:
    """``{"all": [...], "Cells_Intensity": [...], ...}``."""
    groups: dict[str, list[str]] = {"all": list(features)}
    for f in features:
        parts = f.split("_")
        key = "_".join(parts[:2]) if len(parts) > 1 else parts[0]
        groups.setdefault(key, []).append(f)
    return groups


def _adj_r2(x: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Adjusted R^2 of a one-way layout per column of ``x``."""
    n = len(x)
    levels, inv = np.unique(labels, return_inverse=True)
    k = len(levels)
    if k < 2 or n - k < 1:
        return np.full(x.shape[1], np.nan)
    g = np.zeros((n, k))
    g[np.arange(n), inv] = 1
    means = (g.T @ x) / g.sum(axis=0)[:, None]
    ss_tot = ((x - x.mean(axis=0)) ** 2).sum(axis=0)
    ss_res = ((x - g @ means) ** 2).sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        r2 = 1 - ss_res / ss_tot
        return 1 - (1 - r2) * (n - 1) / (n - k)


def _edge_r2_many(x: np.ndarray, z: np.ndarray) -> np.ndarray:
    """Mean over features of the (unadjusted) edge R^2, for each 0/1 column of ``z``."""
    n = len(x)
    xc = x - x.mean(axis=0)
    ss_tot = (xc ** 2).sum(axis=0)
    n1 = z.sum(axis=0)
    s1 = xc.T @ z                                  # features x perms: sum over edge wells
    ss_between = s1 ** 2 * n / (n1 * (n - n1))     # n1*n0/n * (mean1 - mean0)^2 with centred x
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.nanmean(ss_between / ss_tot[:, None], axis=0)


def position_effects(profiles: pd.DataFrame, features: Sequence[str] | None = None, *,
                     reference: str = "all", plate_shape: tuple[int, int] | None = None,
                     n_permutations: int, seed: int, min_wells: int = 6) -> pd.DataFrame:
    """Long table: plate, feature_group, n_wells, n_edge_wells, n_features, r2_row, r2_col, r2_edge
    (medians of adjusted R^2), edge_shift (median over features of (mean edge - mean interior) / SD),
    edge_stat, edge_p_value, edge_q_value (BH over plates within the ``all`` group and over all rows).
    ``reference``: ``all`` wells or ``controls`` only. One plate at a time: :class:`PositionEffects`
    (which a caller reading the plates one by one uses directly)."""
    feats = list(features) if features is not None else feature_columns(profiles)
    acc = PositionEffects(feats, reference=reference, plate_shape=plate_shape, n_permutations=n_permutations,
                          seed=seed, min_wells=min_wells)
    for plate, df in profiles.groupby(PLATE, sort=True, observed=True):
        acc.add(plate, df)
    return acc.table()


class PositionEffects:
    """:func:`position_effects` one plate at a time: :meth:`add` the plates in sorted order (the
    permutations of each plate come from one generator, in that order), then :meth:`table`."""

    def __init__(self, features: Sequence[str], *, reference: str = "all",
                 plate_shape: tuple[int, int] | None = None, n_permutations: int, seed: int,
                 min_wells: int = 6) -> None:
        self.feats = list(features)
        self.groups = feature_groups(self.feats)
        self.reference, self.plate_shape = reference, plate_shape
        self.n_permutations, self.min_wells = n_permutations, min_wells
        self.rng = np.random.default_rng(seed)
        self.rows: list[dict] = []

    def add(self, plate: object, df: pd.DataFrame) -> None:
        """Add one plate's wells (rows of ``df``)."""
        if self.reference == "controls":
            df = df[df[IS_CONTROL].astype(bool)]
        wells = df[WELL].astype(str).tolist()
        if len(wells) < self.min_wells:
            return
        shape = self.plate_shape or PLATE_SHAPE
        pos = well_positions(wells)
        edge = edge_mask(wells, shape)
        x_all = df[self.feats].to_numpy(np.float64)
        perms = None
        n_perm = self.n_permutations
        if 0 < edge.sum() < len(edge) and n_perm > 0:
            perms = np.stack([self.rng.permutation(edge) for _ in range(n_perm)], axis=1).astype(float)
        for name, cols in self.groups.items():
            idx = [self.feats.index(c) for c in cols]
            x = x_all[:, idx]
            x = x[:, np.isfinite(x).all(axis=0) & (x.std(axis=0) > 0)]
            rec = {"plate": str(plate), "feature_group": name, "n_wells": len(wells),
                   "n_edge_wells": int(edge.sum()), "n_features": x.shape[1]}
            if x.shape[1] == 0:
                self.rows.append(rec)
                continue
            rec["r2_row"] = float(np.nanmedian(_adj_r2(x, pos.row.to_numpy())))
            rec["r2_col"] = float(np.nanmedian(_adj_r2(x, pos.col.to_numpy())))
            rec["r2_edge"] = float(np.nanmedian(_adj_r2(x, edge)))
            if 0 < edge.sum() < len(edge):
                sd = x.std(axis=0)
                rec["edge_shift"] = float(np.median((x[edge].mean(axis=0) - x[~edge].mean(axis=0)) / sd))
                stat = float(_edge_r2_many(x, edge[:, None].astype(float))[0])
                rec["edge_stat"] = stat
                if perms is not None:
                    null = _edge_r2_many(x, perms)
                    rec["edge_p_value"] = float((1 + (null >= stat - 1e-12).sum()) / (1 + n_perm))
            self.rows.append(rec)

    def table(self) -> pd.DataFrame:
        """The long table of :func:`position_effects` over the plates added."""
        cols = ["plate", "feature_group", "n_wells", "n_edge_wells", "n_features", "r2_row", "r2_col",
                "r2_edge", "edge_shift", "edge_stat", "edge_p_value"]
        out = pd.DataFrame(self.rows).reindex(columns=cols)
        out["edge_q_value"] = np.nan
        ok = out["edge_p_value"].notna().to_numpy()
        if ok.any():
            out.loc[ok, "edge_q_value"] = multipletests(out.loc[ok, "edge_p_value"], method="fdr_bh")[1]
        return out


FEATURE_R2_COLUMNS = ["plate", "feature", "r2_row", "r2_col", "r2_edge"]


def feature_r2(profiles: pd.DataFrame, features: Sequence[str] | None = None, *,
               plate_shape: tuple[int, int] | None = None, min_wells: int = 6) -> pd.DataFrame:
    """Per plate and feature, the adjusted R^2 that :func:`position_effects` summarises (same wells, same
    features: finite with spread on the plate): long table ``plate``, ``feature``, ``r2_row``, ``r2_col``,
    ``r2_edge``. The median over a plate's features is that plate's ``all``-group figure."""
    feats = list(features) if features is not None else feature_columns(profiles)
    parts = [plate_feature_r2(plate, df, feats, plate_shape=plate_shape, min_wells=min_wells)
             for plate, df in profiles.groupby(PLATE, sort=True, observed=True)]
    parts = [p for p in parts if p is not None]
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=FEATURE_R2_COLUMNS)


def plate_feature_r2(plate: object, df: pd.DataFrame, feats: Sequence[str], *,
                     plate_shape: tuple[int, int] | None = None, min_wells: int = 6) -> pd.DataFrame | None:
    """:func:`feature_r2` of one plate's wells (None when the plate has too few wells or no usable
    feature)."""
    wells = df[WELL].astype(str).tolist()
    if len(wells) < min_wells:
        return None
    pos = well_positions(wells)
    edge = edge_mask(wells, plate_shape or PLATE_SHAPE)
    x = df[list(feats)].to_numpy(np.float64)
    ok = np.isfinite(x).all(axis=0) & (x.std(axis=0) > 0)
    x = x[:, ok]
    if x.shape[1] == 0:
        return None
    return pd.DataFrame({"plate": str(plate), "feature": np.asarray(feats, dtype=object)[ok],
                         "r2_row": _adj_r2(x, pos.row.to_numpy()),
                         "r2_col": _adj_r2(x, pos.col.to_numpy()), "r2_edge": _adj_r2(x, edge)})


def summarize(effects: pd.DataFrame, *, alpha: float) -> dict:
    """Datasheet summary from the ``all`` feature group: per plate r2 figures, edge p, and whether an edge
    effect is detected on any plate (BH q < ``alpha`` over plates)."""
    allg = effects[effects["feature_group"] == "all"].copy()
    q = allg["edge_p_value"].to_numpy(float)
    ok = np.isfinite(q)
    qv = np.full(len(q), np.nan)
    if ok.any():
        qv[ok] = multipletests(q[ok], method="fdr_bh")[1]
    allg["q"] = qv
    plates = {r.plate: {"r2_row": _f(r.r2_row), "r2_col": _f(r.r2_col), "r2_edge": _f(r.r2_edge),
                        "edge_shift": _f(r.edge_shift), "edge_p_value": _f(r.edge_p_value),
                        "edge_q_value": _f(r.q)}
              for r in allg.itertuples()}
    return {"edge_detected": bool(np.nanmin(qv) < alpha) if ok.any() else False,
            "median_r2_edge": _f(allg["r2_edge"].median()) if len(allg) else None,
            "plates": plates}


def _f(v) -> float | None:
    try:
        v = float(v)
    except (TypeError, ValueError):
        return None
    return v if np.isfinite(v) else None
