"""Shared column names, the one definition: ``Metadata_*`` columns of the paint tables, AnnData ``obs``
columns of both arms, and the rule telling feature columns from metadata.

Paint tables (per-cell ``cells.parquet``, per-well ``wells.parquet``, profiles) follow pycytominer/
CellProfiler: features are numeric ``{Compartment}_{Family}_{Feature}[_{Channel}[_{Scale}]]`` columns,
metadata columns start with ``Metadata_``. A low-level module: it imports nothing else of pairedscreen
(import-linter contract in pyproject.toml).
"""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd

# ------------------------------------------------------------------------------ paint table metadata
PLATE, WELL, SITE = "Metadata_Plate", "Metadata_Well", "Metadata_Site"
PERT, IS_CONTROL, BATCH = "Metadata_Perturbation", "Metadata_IsControl", "Metadata_Batch"
REPLICATE, OBJECT_NUMBER = "Metadata_Replicate", "Metadata_ObjectNumber"
COUNT_CELLS = "Metadata_Count_Cells"   # cells behind a row of the paint arm's wells.parquet
SPLIT = "Metadata_Split"               # sub-well replicate label (quality)
N_CELLS, N_WELLS = "n_cells", "n_wells"
COMPARTMENTS = ("Cells", "Nuclei", "Cytoplasm")
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


def feature_columns(df: pd.DataFrame, compartments: Sequence[str] = COMPARTMENTS) -> list[str]:
    """Numeric columns named ``{Compartment}_...`` (pycytominer's ``infer_cp_features`` rule), in table
    order. Everything else (``Metadata_*``, ``n_cells``, ids) is metadata."""
    prefixes = tuple(f"{c}_" for c in compartments)
    dtypes = df.dtypes
    return [c for c, dt in zip(df.columns, dtypes, strict=True)
            if isinstance(c, str) and c.startswith(prefixes) and pd.api.types.is_numeric_dtype(dt)]


def metadata_columns(df: pd.DataFrame) -> list[str]:
    """Columns named ``Metadata_*``, in table order."""
    return [c for c in df.columns if isinstance(c, str) and c.startswith("Metadata_")]
