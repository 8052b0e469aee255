"""Cell Painting profiles: per-well aggregation, per-plate normalisation, feature selection, consensus.

Tables follow the pycytominer/CellProfiler conventions: feature columns start with a compartment
(``Cells_``, ``Nuclei_``, ``Cytoplasm_``), metadata columns with ``Metadata_``; ``n_cells`` is the number of
cells aggregated into a row. Canonical metadata: ``Metadata_Plate``, ``Metadata_Well``,
``Metadata_Perturbation``, ``Metadata_IsControl``, ``Metadata_Batch`` (lower-case ``plate``, ``well``,
``perturbation_id``... columns of ``cells.parquet`` are mapped onto them by :func:`harmonize_metadata`).

Order of work (:func:`build_profiles`): aggregate each plate's cells to wells (one plate in memory at a
time), optional position correction, normalise each plate to its negative-control wells, select features
over all plates, then a median consensus per perturbation. The screen-wide steps run in
:mod:`pairedscreen.paint.screen_profiles` (plate by plate, column block by column block), which the
``profiles`` rule uses on the per-plate files without ever holding the screen's well x feature table.

Aggregation is :func:`pairedscreen.paint.aggregate.aggregate_wells` (the one well aggregator); from plate
files it reads a plate's ``cells.parquet`` metadata, then the feature columns in chunks of ~64 MB.
Normalisation (mad_robustize/standardize) and the correlation filter are vectorised re-implementations
with pycytominer's exact numbers (tested against it); its per-column pandas code costs ~10 s per plate and
minutes per correlation filter at JUMP width. The other feature-selection steps call pycytominer.
"""

from __future__ import annotations

import os
import tempfile
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pyarrow.types as pa_types
from pycytominer import feature_select as _pcm_feature_select

from pairedscreen.columns import (
    ALIASES,
    COMPARTMENTS,
    COUNT_CELLS,
    IS_CONTROL,
    N_CELLS,
    N_WELLS,
    PERT,
    PLATE,
    SPLIT,
    WELL,
    feature_columns,
    parse_bool,
)
from pairedscreen.paint.aggregate import aggregate_table
from pairedscreen.plate import PLATE_SHAPE, edge_mask, well_positions
from pairedscreen.robust import median_mad

# pycytominer's operations (which ones, and drop_outliers' cutoff: `profiles.feature_select` and
# `profiles.outlier_cutoff` of the config schema); drop_outliers (any |normalised value| > outlier_cutoff)
# removes features whose control wells are nearly constant (quantised or degenerate features: a tiny MAD
# blows every other well up by orders of magnitude and one such feature then dominates every distance)
FEATURE_SELECT_ORDER = ("drop_na_columns", "blocklist", "variance_threshold", "frequency_threshold",
                        "drop_outliers", "correlation_threshold")


def meta_columns(df: pd.DataFrame, features: Sequence[str] | None = None) -> list[str]:
    """Every column that is not a feature (Metadata_*, n_cells, ...)."""
    feats = set(features if features is not None else feature_columns(df))
    return [c for c in df.columns if c not in feats]


def harmonize_metadata(df: pd.DataFrame, registry: pd.DataFrame | None = None) -> pd.DataFrame:
    """Add canonical ``Metadata_*`` columns from lower-case aliases; ``Metadata_IsControl`` from registry.

    ``registry`` (perturbations.tsv: perturbation_id, is_control) fills ``Metadata_IsControl`` when the
    table lacks it. The input is not modified.
    """
    out = df.copy(deep=False)
    for alias, canon in ALIASES.items():
        if canon not in out.columns and alias in out.columns:
            out[canon] = out[alias]
    if IS_CONTROL not in out.columns and registry is not None and PERT in out.columns:
        ctrl = dict(zip(registry["perturbation_id"].astype(str), registry["is_control"].map(_as_bool),
                        strict=True))
        out[IS_CONTROL] = out[PERT].astype(str).map(ctrl).fillna(False).astype(bool)
    if IS_CONTROL in out.columns:
        out[IS_CONTROL] = out[IS_CONTROL].map(_as_bool).astype(bool)
    if N_CELLS not in out.columns and COUNT_CELLS in out.columns:    # paint arm's wells.parquet
        out[N_CELLS] = out[COUNT_CELLS].fillna(0).astype(np.int64)
    return out


def read_wells(paths: Iterable[str | os.PathLike], registry: pd.DataFrame | None = None) -> pd.DataFrame:
    """The paint arm's per-plate ``wells.parquet`` files as one table with canonical metadata
    (:func:`harmonize_metadata`)."""
    return pd.concat([harmonize_metadata(pd.read_parquet(p), registry) for p in paths],
                     ignore_index=True, sort=False)


def _as_bool(v: Any) -> bool:
    return bool(parse_bool(v))


# --------------------------------------------------------------------------------------- aggregation
def aggregate_plate_file(path: str | os.PathLike, *, operation: str,
                         registry: pd.DataFrame | None = None, chunk_bytes: int = 64 << 20,
                         features: Sequence[str] | None = None, n_splits: int = 0,
                         seed: int | None = None) -> pd.DataFrame:
    """Aggregate one plate's ``cells.parquet`` to wells, reading feature columns in chunks.

    Peak memory is the metadata columns plus one chunk of about ``chunk_bytes`` of features (never the
    whole per-cell table). ``features``: aggregate only these (those the file has, in this order; default
    every numeric compartment column). ``n_splits`` > 0: sub-well replicates, cells split at random within
    wells by :func:`assign_splits` (``seed``, required then) and aggregated per (plate, well, split).
    """
    schema = pq.read_schema(path)
    names = schema.names
    prefixes = tuple(f"{c}_" for c in COMPARTMENTS)
    measured = [n for n in names if n.startswith(prefixes)
                and (pa_types.is_floating(schema.field(n).type) or pa_types.is_integer(schema.field(n).type))]
    feats = measured if features is None else [f for f in features if f in set(names)]
    meta_names = [n for n in names if n not in set(feats) | set(measured)]   # features never carried
    meta = harmonize_metadata(pq.read_table(path, columns=meta_names).to_pandas(), registry)
    strata = [PLATE, WELL]
    if n_splits:
        if seed is None:
            raise ValueError("aggregate_plate_file: n_splits > 0 needs a seed (quality.seed)")
        meta = assign_splits(meta, n_splits, seed=seed)
        strata.append(SPLIT)
    keys = meta[strata]
    rest = meta.drop(columns=[*strata, N_CELLS], errors="ignore")

    def load(cols: list[str]) -> np.ndarray:
        tbl = pq.read_table(path, columns=cols)
        return np.column_stack([tbl.column(c).to_numpy().astype(np.float32, copy=False) for c in cols])

    return aggregate_table(keys, rest, load, feats, operation, chunk_bytes)


def assign_splits(cells: pd.DataFrame, n_splits: int, *, seed: int, by: Sequence[str] = (PLATE, WELL),
                  column: str = SPLIT) -> pd.DataFrame:
    """Add ``column``: a random, balanced split label 0..n_splits-1 within each well (sub-well replicates for
    replicate mAP when a screen has one well per perturbation); aggregate with
    ``strata=(PLATE, WELL, column)``."""
    rng = np.random.default_rng(seed)
    out = cells.copy(deep=False)
    labels = np.zeros(len(cells), np.int64)
    for idx in cells.groupby(list(by), sort=True, observed=True).indices.values():
        labels[idx] = rng.permutation(len(idx)) % n_splits
    out[column] = labels
    return out


def aggregate_plates(paths: Iterable[str | os.PathLike], *, operation: str,
                     registry: pd.DataFrame | None = None) -> pd.DataFrame:
    """Aggregate plates one after the other (peak memory = one plate's metadata + a feature chunk)."""
    parts = [aggregate_plate_file(p, operation=operation, registry=registry) for p in paths]
    return pd.concat(parts, ignore_index=True, sort=False)


# ------------------------------------------------------------------------------------- normalisation
def normalize_plates(wells: pd.DataFrame, *, method: str, reference: str = "controls",
                     min_reference_wells: int = 3, by: str = PLATE, epsilon: float = 1e-18,
                     features: Sequence[str] | None = None) -> tuple[pd.DataFrame, dict[str, str]]:
    """Normalise each plate to its negative-control wells: pycytominer's ``mad_robustize``
    ((x - median) / (1.4826 MAD + epsilon)) or ``standardize`` ((x - mean) / SD), vectorised.

    Same numbers as ``pycytominer.normalize(..., samples=<controls>)`` (tested), which is not called here
    because its per-column pandas overhead costs ~10 s per plate at JUMP width (6,000 features).
    ``reference`` = ``controls`` (wells with ``Metadata_IsControl``) or ``all``; a plate with fewer than
    ``min_reference_wells`` control wells falls back to all of its wells. Features whose reference scale
    is zero become NaN on that plate (pycytominer would blow them up by 1/epsilon; feature selection drops
    them). Returns the normalised table and, per plate, the reference actually used.
    """
    if method not in ("mad_robustize", "standardize"):
        raise ValueError(f"unsupported normalisation {method!r}")
    feats = list(features) if features is not None else feature_columns(wells)
    meta = meta_columns(wells, feats)
    parts, used = [], {}
    for plate, df in wells.groupby(by, sort=False, observed=True):
        df = df.reset_index(drop=True)
        ref = df[IS_CONTROL].to_numpy(bool) if reference == "controls" else np.ones(len(df), bool)
        if ref.sum() < min_reference_wells:
            ref = np.ones(len(df), bool)
            used[str(plate)] = "all"
        else:
            used[str(plate)] = reference
        x = df[feats].to_numpy(np.float64)
        r = x[ref]
        with np.errstate(invalid="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            if method == "standardize":
                center, scale = np.nanmean(r, axis=0), np.nanstd(r, axis=0)
                y = (x - center) / np.where(scale > 0, scale, 1.0)
            else:
                center, scale = median_mad(r, axis=0, skipna=True)
                y = (x - center) / (scale + epsilon)
        y[:, ~(scale > 0)] = np.nan
        parts.append(pd.concat([df[meta], pd.DataFrame(y.astype(np.float32), columns=feats)], axis=1))
    return pd.concat(parts, ignore_index=True, sort=False), used


def correlation_threshold(profiles: pd.DataFrame, features: Sequence[str], *, threshold: float = 0.9,
                          samples: str = "all") -> list[str]:
    """pycytominer's ``correlation_threshold`` rule, vectorised: for every feature pair with Pearson
    correlation > ``threshold``, exclude the member with the larger total absolute correlation to all
    features. (pycytominer builds a long table of all pairs and applies a Python function per pair:
    minutes at 6,000 features; results are identical, tested.)"""
    df = profiles.query(samples) if samples != "all" else profiles
    feats = list(features)
    x = df[feats].to_numpy(np.float64)
    if x.shape[1] < 2:
        return []
    with np.errstate(invalid="ignore", divide="ignore"):
        c = np.corrcoef(x, rowvar=False) if np.isfinite(x).all() else df[feats].corr().to_numpy()
    return correlated_features(c, feats, threshold)


def correlated_features(c: np.ndarray, features: Sequence[str], threshold: float) -> list[str]:
    """pycytominer's exclusion rule on a feature x feature correlation matrix ``c`` (NaN where undefined):
    of every pair correlated above ``threshold``, the member with the larger total absolute correlation
    (ties: the later feature)."""
    feats = list(features)
    rank = np.empty(len(feats), np.int64)
    rank[np.argsort(np.nansum(np.abs(c), axis=0), kind="stable")] = np.arange(len(feats))
    ii, jj = np.nonzero(np.triu(np.nan_to_num(c, nan=-np.inf) > threshold, k=1))
    drop = np.where(rank[ii] > rank[jj], ii, jj)
    return [feats[k] for k in sorted(set(drop.tolist()))]


# --------------------------------------------------------------------------------- feature selection
def select_features(profiles: pd.DataFrame, operations: Sequence[str], *,
                    samples: str = "all", na_cutoff: float = 0.05, corr_threshold: float = 0.9,
                    outlier_cutoff: float, blocklist: list[str] | None,
                    drop_nonfinite: bool = True) -> tuple[pd.DataFrame, dict]:
    """``pycytominer.feature_select`` with the operations run in a fixed order (cheap filters first,
    ``correlation_threshold`` last, with our vectorised copy of pycytominer's rule); then columns still
    holding NaN/inf are dropped (downstream distances need finite profiles). Returns the table and a
    record of what was removed by which step.
    """
    ops = [o for o in FEATURE_SELECT_ORDER if o in operations]
    unknown = set(operations) - set(FEATURE_SELECT_ORDER)
    if unknown:
        raise ValueError(f"unknown feature selection operation(s) {sorted(unknown)}")
    feats = feature_columns(profiles)
    record: dict[str, Any] = {"n_features_in": len(feats), "removed": {}}
    out = profiles.replace([np.inf, -np.inf], np.nan)
    for op in ops:
        cur = feature_columns(out)
        if not cur:
            break
        if op == "correlation_threshold":
            drop = correlation_threshold(out, cur, threshold=corr_threshold, samples=samples)
            record["removed"][op] = len(drop)
            out = out.drop(columns=drop)
            continue
        kw: dict[str, Any] = {}
        if op == "blocklist" and blocklist is not None:
            kw["blocklist"] = blocklist
        if op == "drop_outliers":
            kw["outlier_cutoff"] = outlier_cutoff
        try:
            sel = _pcm_feature_select(out, features=cur, samples=samples, operation=op, na_cutoff=na_cutoff,
                                      corr_threshold=corr_threshold, output_file=None, **kw)
        except ValueError as e:     # sklearn's VarianceThreshold refuses to keep nothing: every one goes
            if "No feature in X meets the variance threshold" not in str(e):
                raise
            sel = out.drop(columns=cur)
        record["removed"][op] = len(cur) - len(feature_columns(sel))
        out = sel
    if drop_nonfinite:
        cur = feature_columns(out)
        finite = np.isfinite(out[cur].to_numpy(np.float64)).all(axis=0)
        record["removed"]["nonfinite"] = int((~finite).sum())
        out = out.drop(columns=np.asarray(cur)[~finite].tolist())
    record["n_features_out"] = len(feature_columns(out))
    return out.reset_index(drop=True), record


# ------------------------------------------------------------------------------- position correction
def correct_position(profiles: pd.DataFrame, *, reference: str = "all", edge_term: bool = True,
                     min_wells: int = 3, n_iter: int = 5, by: str = PLATE,
                     plate_shape: tuple[int, int] | None = None) -> pd.DataFrame:
    """Remove plate-position effects per plate and feature: an edge offset, then row/column median polish.

    The edge offset is median(edge wells) - median(interior wells); row and column effects are the
    Tukey median polish of the residuals. Effects are estimated on ``reference`` wells (``all`` or
    ``controls``) and subtracted from every well. A median is only an effect estimate when most of its
    wells carry no shared perturbation effect, so a row/column (or the edge/interior split) gets no effect
    when it has fewer than ``min_wells`` reference wells or when one
    non-control perturbation fills half or more of them: sparse plates are left alone rather than having
    their perturbations polished away.
    """
    feats = feature_columns(profiles)
    out = profiles.copy()
    for _, idx in profiles.groupby(by, sort=False, observed=True).groups.items():
        df = profiles.loc[idx]
        wells = df[WELL].astype(str).tolist()
        shape = plate_shape or PLATE_SHAPE
        pos = well_positions(wells)
        rows, cols = pos.row.to_numpy(), pos.col.to_numpy()
        edge = edge_mask(wells, shape)
        is_ctrl = df[IS_CONTROL].to_numpy(bool)
        ref = is_ctrl if reference == "controls" else np.ones(len(df), bool)
        pert = np.where(is_ctrl, "", df[PERT].astype(str).to_numpy()) if PERT in df else np.full(len(df), "")
        x = df[feats].to_numpy(np.float64)
        fit = np.zeros_like(x)
        if edge_term and _estimable(ref & edge, pert, min_wells) and _estimable(ref & ~edge, pert, min_wells):
            off = np.nanmedian(x[ref & edge], axis=0) - np.nanmedian(x[ref & ~edge], axis=0)
            fit[edge] += off
        resid = x - fit
        for _ in range(n_iter):
            for labels in (rows, cols):
                eff = _group_median(resid, labels, ref, pert, min_wells)
                resid = resid - eff
                fit = fit + eff
        out.loc[idx, feats] = (x - fit).astype(np.float32)
    return out


def _estimable(sel: np.ndarray, pert: np.ndarray, min_wells: int) -> bool:
    """Enough wells, and no single non-control perturbation (``pert`` != "") in half or more of them."""
    n = int(sel.sum())
    if n < min_wells:
        return False
    names, counts = np.unique(pert[sel], return_counts=True)
    counts = counts[names != ""]
    return not (counts.size and 2 * int(counts.max()) >= n)


def _group_median(x: np.ndarray, labels: np.ndarray, ref: np.ndarray, pert: np.ndarray,
                  min_wells: int) -> np.ndarray:
    """Per-well effect: median over reference wells of the same label, centred; 0 where not estimable."""
    eff = np.zeros_like(x)
    center = np.nanmedian(x[ref], axis=0)
    for lab in np.unique(labels):
        sel = ref & (labels == lab)
        if _estimable(sel, pert, min_wells):
            eff[labels == lab] = np.nanmedian(x[sel], axis=0) - center
    return eff


# ----------------------------------------------------------------------------------------- consensus
def consensus(profiles: pd.DataFrame, *, by: str = PERT, operation: str = "median") -> pd.DataFrame:
    """One row per perturbation: median (or mean) over its wells, ``n_wells``, summed ``n_cells``."""
    feats = feature_columns(profiles)
    g = profiles.groupby(by, sort=True, observed=True)
    agg = g[feats].median() if operation == "median" else g[feats].mean()
    info = pd.DataFrame({N_WELLS: g.size()})
    if N_CELLS in profiles.columns:
        info[N_CELLS] = g[N_CELLS].sum()
    if IS_CONTROL in profiles.columns:
        info[IS_CONTROL] = g[IS_CONTROL].first().astype(bool)
    if PLATE in profiles.columns:
        info["n_plates"] = g[PLATE].nunique()
    return pd.concat([info, agg.astype(np.float32)], axis=1).reset_index()


# ---------------------------------------------------------------------------------------- end to end
@dataclass
class ProfileResult:
    wells: pd.DataFrame          # aggregated, raw
    profiles: pd.DataFrame       # corrected (optional), normalised, selected well profiles
    consensus: pd.DataFrame      # per perturbation
    info: dict[str, Any] = field(default_factory=dict)


def build_profiles(plate_files: Iterable[str | os.PathLike] | None = None, *,
                   wells: pd.DataFrame | None = None, registry: pd.DataFrame | None = None,
                   aggregate: str, normalize: str,
                   feature_select: Sequence[str],
                   outlier_cutoff: float,
                   position_correction: bool | str, min_reference_wells: int = 3,
                   blocklist: list[str] | None) -> ProfileResult:
    """The ``profiles:`` config block end to end; give per-plate ``cells.parquet`` files or ``wells``
    (e.g. the paint arm's per-plate ``wells.parquet`` concatenated). Wells without cells are dropped.
    The result holds the screen's tables in memory (for tests and notebooks); the workflow streams the
    same computation to files (:func:`pairedscreen.paint.screen_profiles.write_profiles`).

    ``position_correction``: False, True/"all" (estimate on all wells) or "controls".
    """
    from pairedscreen.paint.screen_profiles import ScreenProfiles  # (it builds on this module)

    if wells is None:
        if plate_files is None:
            raise ValueError("give plate_files or wells")
        wells = aggregate_plates(plate_files, operation=aggregate, registry=registry)
    else:
        wells = harmonize_metadata(wells, registry)
    with tempfile.TemporaryDirectory(prefix="pairedscreen_profiles_") as tmp:
        sp = ScreenProfiles([wells], Path(tmp), registry=registry, normalize=normalize,
                            position_correction=position_correction, min_reference_wells=min_reference_wells)
        info = sp.info
        info["feature_selection"] = sp.select(list(feature_select), outlier_cutoff=outlier_cutoff,
                                              blocklist=blocklist)
        prof, cons = sp.frames()
    return ProfileResult(wells=wells, profiles=prof, consensus=cons, info=info)
