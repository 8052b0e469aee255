"""Per-plate assembly: per-cell feature tables + plate map -> one cell table and per-well aggregates.

Column conventions follow CellProfiler/pycytominer: ``Metadata_*`` columns describe the object, every other
column is a feature named ``{Compartment}_{Family}_{Feature}[_{Channel}[_{Scale}]]``.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

KEY = ["Metadata_Plate", "Metadata_Well"]
CORE_META = ["Metadata_Plate", "Metadata_Batch", "Metadata_Well", "Metadata_Site", "Metadata_ObjectNumber",
             "Metadata_Perturbation", "Metadata_Replicate"]


def metadata_columns(df: pd.DataFrame) -> list[str]:
    return [c for c in df.columns if c.startswith("Metadata_")]


def feature_columns(df: pd.DataFrame) -> list[str]:
    return [c for c in df.columns if not c.startswith("Metadata_")]


def plate_map_metadata(plate_map: pd.DataFrame) -> pd.DataFrame:
    """Plate map -> ``Metadata_Well``, ``Metadata_Perturbation``, ``Metadata_Replicate`` + extra columns."""
    pm = plate_map.copy()
    rename = {"well": "Metadata_Well", "perturbation_id": "Metadata_Perturbation",
              "replicate": "Metadata_Replicate"}
    for col in pm.columns:
        if col not in rename:
            rename[col] = "Metadata_" + "".join(w.capitalize() for w in col.split("_"))
    return pm.rename(columns=rename)


def assemble_cells(feature_tables: list[pd.DataFrame], plate_map: pd.DataFrame, plate: str,
                   batch: str) -> pd.DataFrame:
    """Concatenate a plate's per-chunk feature tables and attach the plate map's metadata per well."""
    non_empty = [t for t in feature_tables if len(t)]
    if non_empty:
        cells = pd.concat(non_empty, ignore_index=True)
    else:  # no object anywhere on the plate: an empty table; every well is still reported with 0 cells
        cells = pd.DataFrame({"Metadata_Well": pd.Series(dtype=object),
                              "Metadata_Site": pd.Series(dtype="int64"),
                              "Metadata_ObjectNumber": pd.Series(dtype="int64")})
    cells = cells.drop(columns=[c for c in ("Metadata_Plate", "Metadata_Batch") if c in cells])
    meta = plate_map_metadata(plate_map)
    unknown = sorted(set(cells["Metadata_Well"]) - set(meta["Metadata_Well"]))
    if unknown:
        raise ValueError(f"plate {plate}: objects in wells {unknown} that the plate map does not list")
    out = cells.merge(meta, on="Metadata_Well", how="left", validate="many_to_one")
    out.insert(0, "Metadata_Plate", plate)
    out.insert(1, "Metadata_Batch", batch)
    meta_cols = [c for c in CORE_META if c in out] + [c for c in metadata_columns(out) if c not in CORE_META]
    return out[meta_cols + feature_columns(out)].sort_values(
        ["Metadata_Well", "Metadata_Site", "Metadata_ObjectNumber"], kind="stable", ignore_index=True)


def aggregate_wells(cells: pd.DataFrame, plate_map: pd.DataFrame, plate: str, batch: str,
                    how: str = "median") -> pd.DataFrame:
    """One row per plate-map well: the ``how`` (median|mean) of every feature over its cells, plus
    ``Metadata_Count_Cells``. Wells without any cell are kept (count 0, features NaN) — never dropped."""
    if how not in ("median", "mean"):
        raise ValueError(f"aggregate must be 'median' or 'mean', got {how!r}")
    feats = feature_columns(cells)
    numeric = [c for c in feats if np.issubdtype(cells[c].dtype, np.number)]
    grouped = cells.groupby("Metadata_Well", sort=False)[numeric]
    agg = grouped.median() if how == "median" else grouped.mean()
    agg.insert(0, "Metadata_Count_Cells", cells.groupby("Metadata_Well", sort=False).size())
    meta = plate_map_metadata(plate_map).set_index("Metadata_Well")
    wells = meta.join(agg, how="left")
    wells["Metadata_Count_Cells"] = wells["Metadata_Count_Cells"].fillna(0).astype(np.int64)
    wells = wells.reset_index()
    wells.insert(0, "Metadata_Plate", plate)
    wells.insert(1, "Metadata_Batch", batch)
    meta_cols = metadata_columns(wells)
    return wells[meta_cols + [c for c in wells.columns if c not in meta_cols]]
