"""Shared column names, the one definition: ``Metadata_*`` columns of the paint tables, AnnData ``obs``
columns of both arms, and the rule telling feature columns from metadata.

Paint tables (per-cell ``cells.parquet``, per-well ``wells.parquet``, profiles) follow pycytominer/
CellProfiler: features are numeric ``{Compartment}_{Family}_{Feature}[_{Channel}[_{Scale}]]`` columns,
metadata columns start with ``Metadata_``. A low-level module: it imports nothing else of pairedscreen
(import-linter contract in pyproject.toml).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pandas as pd

# ------------------------------------------------------------------------------ paint table metadata
PLATE, WELL, SITE = "Metadata_Plate", "Metadata_Well", "Metadata_Site"
PERT, IS_CONTROL, BATCH = "Metadata_Perturbation", "Metadata_IsControl", "Metadata_Batch"
REPLICATE, OBJECT_NUMBER = "Metadata_Replicate", "Metadata_ObjectNumber"
COUNT_CELLS = "Metadata_Count_Cells"   # cells behind a row of the paint arm's wells.parquet
SPLIT = "Metadata_Split"               # sub-well replicate label (quality)
N_CELLS, N_WELLS = "n_cells", "n_wells"
COMPARTMENTS = ("Cells", "Nuclei", "Cytoplasm")
# the components that replace the measured features after profiles.correct's harmony or pca step
# (pairedscreen.paint.correct): ``Harmony_PC001``..., ``PCA_PC001``...; features like the compartments'
COMPONENTS = ("Harmony", "PCA")
# lower-case plate-map / obs names -> canonical Metadata_* names
ALIASES = {
    "plate": PLATE, "well": WELL, "site": SITE, "perturbation_id": PERT, "perturbation": PERT,
    "is_control": IS_CONTROL, "batch": BATCH, "replicate": REPLICATE,
}

# ------------------------------------------------------------------------------------- obs columns
OBS_PERTURBATION, OBS_IS_CONTROL = "perturbation", "is_control"
OBS_PLATE, OBS_WELL, OBS_SITE = "plate", "well", "site"
OBS_LIBRARY, OBS_BATCH = "library", "batch"
# values of obs['perturbation'] for cells without exactly one registry perturbation
UNASSIGNED, MULTIPLE = "unassigned", "multiple"


def feature_columns(df: pd.DataFrame,
                    compartments: Sequence[str] = (*COMPARTMENTS, *COMPONENTS)) -> list[str]:
    """Numeric columns named ``{Compartment}_...`` (pycytominer's ``infer_cp_features`` rule; or a
    correction's components, ``Harmony_...``/``PCA_...``), in table order. Everything else
    (``Metadata_*``, ``n_cells``, ids) is metadata."""
    prefixes = tuple(f"{c}_" for c in compartments)
    dtypes = df.dtypes
    return [c for c, dt in zip(df.columns, dtypes, strict=True)
            if isinstance(c, str) and c.startswith(prefixes) and pd.api.types.is_numeric_dtype(dt)]


def metadata_columns(df: pd.DataFrame) -> list[str]:
    """Columns named ``Metadata_*``, in table order."""
    return [c for c in df.columns if isinstance(c, str) and c.startswith("Metadata_")]


# -------------------------------------------------------------------------------- boolean columns
TRUE = frozenset({"true", "t", "yes", "y", "1"})
FALSE = frozenset({"false", "f", "no", "n", "0"})


def parse_bool(value: Any) -> bool | None:
    """The one boolean coercion of the sheets: true/t/yes/y/1 and false/f/no/n/0 (any case), real
    booleans and 0/1 numbers; None for anything else (empty, NaN, 'maybe')."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int | float) and not isinstance(value, bool):
        return bool(value) if value in (0, 1) else None
    v = str(value).strip().lower() if value is not None else ""
    return True if v in TRUE else False if v in FALSE else None


def bool_column(values: Any) -> pd.Series:
    """A boolean column (e.g. a registry's ``is_control``) with :func:`parse_bool`'s rules; values that
    are not booleans count as False (sheets are validated on reading, so that only happens for tables
    made in code)."""
    s = values if isinstance(values, pd.Series) else pd.Series(values)
    if s.dtype == bool:
        return s
    return s.map(lambda v: bool(parse_bool(v))).astype(bool)
