"""Cell Painting profiles: per-well aggregation, per-plate normalisation, feature selection, consensus.

Tables follow the pycytominer/CellProfiler conventions: feature columns start with a compartment
(``Cells_``, ``Nuclei_``, ``Cytoplasm_``), metadata columns with ``Metadata_``; ``n_cells`` is the number of
cells aggregated into a row. Canonical metadata: ``Metadata_Plate``, ``Metadata_Well``,
``Metadata_Perturbation``, ``Metadata_IsControl``, ``Metadata_Batch`` (lower-case ``plate``, ``well``,
``perturbation_id``... columns of ``cells.parquet`` are mapped onto them by :func:`harmonize_metadata`).

Order of work (:func:`build_profiles`): aggregate each plate's cells to wells (one plate in memory at a
time), optional position correction, normalise each plate to its negative-control wells, select features
over all plates, then a median consensus per perturbation.

Aggregation is our own code, not ``pycytominer.aggregate``: the latter upcasts the whole per-cell table to
float64 and concatenates a second copy before the groupby (about 5x the float32 table at peak), while the
same ``groupby(...).median()`` on the native float32 columns gives identical medians (to float32
precision) with one copy; per-well metadata that is constant within a well is carried through, which
pycytominer drops. Normalisation and feature selection call pycytominer.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
from pycytominer import feature_select as _pcm_feature_select
from pycytominer import normalize as _pcm_normalize

from pairedscreen.pair.plate import edge_mask, infer_plate_shape, well_positions

COMPARTMENTS = ("Cells", "Nuclei", "Cytoplasm")
PLATE, WELL, PERT = "Metadata_Plate", "Metadata_Well", "Metadata_Perturbation"
IS_CONTROL, BATCH, SITE = "Metadata_IsControl", "Metadata_Batch", "Metadata_Site"
N_CELLS, N_WELLS = "n_cells", "n_wells"
ALIASES = {
    "plate": PLATE, "well": WELL, "site": SITE, "perturbation_id": PERT, "perturbation": PERT,
    "is_control": IS_CONTROL, "batch": BATCH, "replicate": "Metadata_Replicate",
}
FEATURE_SELECT_ORDER = ("drop_na_columns", "blocklist", "variance_threshold", "frequency_threshold",
                        "drop_outliers", "correlation_threshold")


def feature_columns(df: pd.DataFrame, compartments: Sequence[str] = COMPARTMENTS) -> list[str]:
    """Numeric columns named ``{Compartment}_...`` (pycytominer's ``infer_cp_features`` rule)."""
    prefixes = tuple(f"{c}_" for c in compartments)
    return [c for c in df.columns if c.startswith(prefixes) and pd.api.types.is_numeric_dtype(df[c])]


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
    return out


def _as_bool(v: Any) -> bool:
    if isinstance(v, str):
        return v.strip().lower() in ("true", "1", "yes", "t")
    return bool(v) if v is not None and not (isinstance(v, float) and np.isnan(v)) else False


# --------------------------------------------------------------------------------------- aggregation
def aggregate_wells(cells: pd.DataFrame, *, operation: str = "median",
                    strata: Sequence[str] = (PLATE, WELL),
                    features: Sequence[str] | None = None) -> pd.DataFrame:
    """One row per well: ``operation`` (median|mean) of each feature, ``n_cells``, constant metadata.

    Metadata columns that take a single value within every well (perturbation, control flag, batch,
    replicate...) are carried; per-cell ones (site, object id) are dropped.
    """
    if operation not in ("median", "mean"):
        raise ValueError(f"operation must be median or mean, not {operation!r}")
    strata = list(strata)
    feats = list(features) if features is not None else feature_columns(cells)
    grouped = cells.groupby(strata, sort=True, observed=True, dropna=False)
    agg = grouped[feats].median() if operation == "median" else grouped[feats].mean()
    agg = agg.astype(np.float32, copy=False)
    meta = [c for c in meta_columns(cells, feats) if c not in strata and c != N_CELLS]
    if meta:
        nun = grouped[meta].nunique(dropna=False).max()
        keep = [c for c in meta if nun[c] <= 1]
        first = grouped[keep].first()
    else:
        first = pd.DataFrame(index=agg.index)
    counts = grouped.size().rename(N_CELLS)
    out = pd.concat([first, counts, agg], axis=1).reset_index()
    return out


def aggregate_plate_file(path: str | os.PathLike, *, operation: str = "median",
                         registry: pd.DataFrame | None = None) -> pd.DataFrame:
    """Read one plate's ``cells.parquet`` and aggregate it to wells (see :func:`aggregate_wells`)."""
    cells = harmonize_metadata(pq.read_table(path).to_pandas(), registry)
    wells = aggregate_wells(cells, operation=operation)
    del cells
    return wells


def aggregate_plates(paths: Iterable[str | os.PathLike], *, operation: str = "median",
                     registry: pd.DataFrame | None = None) -> pd.DataFrame:
    """Aggregate plates one after the other (peak memory = one plate's cells) and stack the wells."""
    parts = [aggregate_plate_file(p, operation=operation, registry=registry) for p in paths]
    return pd.concat(parts, ignore_index=True, sort=False)


# ------------------------------------------------------------------------------------- normalisation
def normalize_plates(wells: pd.DataFrame, *, method: str = "mad_robustize", reference: str = "controls",
                     min_reference_wells: int = 3, by: str = PLATE,
                     features: Sequence[str] | None = None) -> tuple[pd.DataFrame, dict[str, str]]:
    """Normalise each plate to its negative-control wells with ``pycytominer.normalize``.

    ``reference`` = ``controls`` (wells with ``Metadata_IsControl``) or ``all``. A plate with fewer than
    ``min_reference_wells`` control wells falls back to all of its wells. Features whose reference
    scale is zero (MAD or SD) become NaN on that plate (pycytominer would blow them up by 1/epsilon).
    Returns the normalised table and, per plate, the reference actually used.
    """
    if method not in ("mad_robustize", "standardize", "robustize"):
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
        tmp = df[meta + feats].copy()
        tmp["Metadata__ref"] = ref
        norm = _pcm_normalize(tmp, features=feats, meta_features=meta + ["Metadata__ref"],
                              samples="Metadata__ref == True", method=method, output_file=None)
        x = df.loc[ref, feats].to_numpy(np.float64)
        if method == "standardize":
            scale = np.nanstd(x, axis=0)
        else:
            scale = np.nanmedian(np.abs(x - np.nanmedian(x, axis=0)), axis=0)
        bad = ~(scale > 0)
        normed = norm[feats].astype(np.float32)
        if bad.any():
            normed.loc[:, np.asarray(feats)[bad]] = np.nan
        parts.append(pd.concat([df[meta], normed], axis=1))
    return pd.concat(parts, ignore_index=True, sort=False), used


# --------------------------------------------------------------------------------- feature selection
def select_features(profiles: pd.DataFrame, operations: Sequence[str] = (
        "variance_threshold", "correlation_threshold", "drop_na_columns", "blocklist"), *,
        samples: str = "all", na_cutoff: float = 0.05, corr_threshold: float = 0.9,
        blocklist: list[str] | None = None, drop_nonfinite: bool = True) -> tuple[pd.DataFrame, dict]:
    """``pycytominer.feature_select`` with the operations run in a fixed order (cheap filters first,
    ``correlation_threshold`` last); then columns still holding NaN/inf are dropped (downstream distances
    need finite profiles). Returns the table and a record of what was removed by which step.
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
        kw: dict[str, Any] = {}
        if op == "blocklist" and blocklist is not None:
            kw["blocklist"] = blocklist
        sel = _pcm_feature_select(out, features=cur, samples=samples, operation=op, na_cutoff=na_cutoff,
                                  corr_threshold=corr_threshold, output_file=None, **kw)
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
    ``controls``) and subtracted from every well; a row/column (or the edge/interior split) with fewer
    than ``min_wells`` reference wells gets no effect, so sparse plates are left alone rather than having
    their perturbations polished away.
    """
    feats = feature_columns(profiles)
    out = profiles.copy()
    for _, idx in profiles.groupby(by, sort=False, observed=True).groups.items():
        df = profiles.loc[idx]
        wells = df[WELL].astype(str).tolist()
        shape = plate_shape or infer_plate_shape(wells)
        pos = well_positions(wells)
        rows, cols = pos.row.to_numpy(), pos.col.to_numpy()
        edge = edge_mask(wells, shape)
        ref = df[IS_CONTROL].to_numpy(bool) if reference == "controls" else np.ones(len(df), bool)
        x = df[feats].to_numpy(np.float64)
        fit = np.zeros_like(x)
        if edge_term and (ref & edge).sum() >= min_wells and (ref & ~edge).sum() >= min_wells:
            off = np.nanmedian(x[ref & edge], axis=0) - np.nanmedian(x[ref & ~edge], axis=0)
            fit[edge] += off
        resid = x - fit
        for _ in range(n_iter):
            for labels in (rows, cols):
                eff = _group_median(resid, labels, ref, min_wells)
                resid = resid - eff
                fit = fit + eff
        out.loc[idx, feats] = (x - fit).astype(np.float32)
    return out


def _group_median(x: np.ndarray, labels: np.ndarray, ref: np.ndarray, min_wells: int) -> np.ndarray:
    """Per-well effect: median over reference wells of the same label, centred, 0 where too few wells."""
    eff = np.zeros_like(x)
    center = np.nanmedian(x[ref], axis=0)
    for lab in np.unique(labels):
        sel = ref & (labels == lab)
        if sel.sum() >= min_wells:
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
                   aggregate: str = "median", normalize: str = "mad_robustize",
                   feature_select: Sequence[str] = ("variance_threshold", "correlation_threshold",
                                                    "drop_na_columns", "blocklist"),
                   position_correction: bool | str = False, min_reference_wells: int = 3,
                   blocklist: list[str] | None = None) -> ProfileResult:
    """The ``profiles:`` config block end to end; give per-plate ``cells.parquet`` files or ``wells``.

    ``position_correction``: False, True/"all" (estimate on all wells) or "controls".
    """
    if wells is None:
        if plate_files is None:
            raise ValueError("give plate_files or wells")
        wells = aggregate_plates(plate_files, operation=aggregate, registry=registry)
    else:
        wells = harmonize_metadata(wells, registry)
    info: dict[str, Any] = {"n_wells": len(wells), "n_plates": int(wells[PLATE].nunique()),
                            "n_features_measured": len(feature_columns(wells))}
    prof = wells
    if position_correction:
        ref = "controls" if position_correction == "controls" else "all"
        prof = correct_position(prof, reference=ref)
        info["position_correction"] = ref
    prof, used = normalize_plates(prof, method=normalize, min_reference_wells=min_reference_wells)
    info["normalization_reference"] = used
    prof, record = select_features(prof, list(feature_select), blocklist=blocklist)
    info["feature_selection"] = record
    return ProfileResult(wells=wells, profiles=prof, consensus=consensus(prof), info=info)
