"""Empty and unusable data: plates and libraries left with nothing usable, perturbations left with no cells.

Each finding is one record ``{arm, what, id, reason, fix}``. The aggregate stages decide per unit:

* a **plate** with every site quarantined, no cell segmented in its usable sites, or every feature NA in
  every well that has cells; a **library** with no cell that passes QC, is a singlet and carries one
  guide. With ``on_empty: quarantine`` the unit is left out of the arm's aggregates and recorded
  (``results/paint/quarantine.tsv``, ``results/rna/quarantine.tsv``, the datasheet's ``quarantine``
  section, the report); with ``on_empty: error`` (the default) the aggregate stops with every finding
  at once. Either way an arm left with no usable unit stops: there is nothing to pair.
* a **perturbation** with no usable cells in an arm is never an error (a lethal perturbation has none):
  it stays a NaN row of that modality and is recorded.

Checks only read the per-unit outputs (``wells.parquet`` columns, ``cells.h5ad`` obs), so changing
``on_empty`` reruns the aggregates, never per-plate or per-library work.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pairedscreen.errors import PairedscreenError

COLUMNS = ["arm", "what", "id", "reason", "fix"]
ON_EMPTY = ("error", "quarantine")
PathLike = str | os.PathLike

PLATE_FIX = {
    "sites": "check the plate's images and their quarantine reasons in "
             "results/paint/{id}/image_index.parquet",
    "cells": "check the plate's images (results/paint/{id}/image_index.parquet) and the segmentation "
             "models/diameters (paint.segmentation)",
    "features": "check the plate's images and feature options (paint.features); the NA features are listed "
                "in results/paint/{id}/wells.parquet",
}
LIBRARY_FIX = ("check the library's QC flags in results/rna/{id}/cells.h5ad (qc_fail_* columns) and loosen "
               "rna.qc (e.g. max_pct_mt) or rna.guides if they are too strict, or remove the library from "
               "the sheet")
NO_GUIDES_FIX = ("point the library's cellranger_outs (config/rna_libraries.tsv) at a Cell Ranger "
                 "count/multi run that included the CRISPR Guide Capture library, with config/guides.tsv as "
                 "its feature reference, or remove the library from the sheet")
QUARANTINE_HINT = "or set on_empty: quarantine to pair the others without it"


class EmptyDataError(PairedscreenError, ValueError):
    """A plate or library (or a whole arm) has nothing usable; the message names each one and the fix."""


def record(arm: str, what: str, id: str, reason: str, fix: str) -> dict[str, str]:
    return {"arm": arm, "what": what, "id": str(id), "reason": reason, "fix": fix}


def table(records: Iterable[Mapping[str, Any]]) -> pd.DataFrame:
    return pd.DataFrame(list(records), columns=COLUMNS)


def read_table(path: PathLike | None) -> pd.DataFrame:
    """A ``quarantine.tsv`` (or an empty table when ``path`` is None)."""
    if path is None:
        return table([])
    return pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False).reindex(columns=COLUMNS)


def message(records: Sequence[Mapping[str, Any]]) -> str:
    return "\n".join(f"{r['what']} {r['id']}: {r['reason']}. Fix: {r['fix']}" for r in records)


# ---------------------------------------------------------------------------------------------- plates
def plate_problem(wells: pd.DataFrame, plate: str, features: Sequence[str]) -> dict[str, str] | None:
    """The reason a plate's ``wells.parquet`` has nothing to profile, or None when it is usable."""
    sites = int(wells["Metadata_Count_Sites"].sum()) if "Metadata_Count_Sites" in wells else None
    usable = int(wells["Metadata_Count_SitesUsable"].sum()) if "Metadata_Count_SitesUsable" in wells else None
    n_cells = int(wells["Metadata_Count_Cells"].sum()) if "Metadata_Count_Cells" in wells else 0
    if usable == 0:
        return record("paint", "plate", plate, f"every site is quarantined ({sites} sites, 0 usable)",
                      PLATE_FIX["sites"].format(id=plate))
    if n_cells == 0:
        return record("paint", "plate", plate, f"no cell segmented in {usable} usable site(s)",
                      PLATE_FIX["cells"].format(id=plate))
    with_cells = wells[wells["Metadata_Count_Cells"] > 0] if "Metadata_Count_Cells" in wells else wells
    feats = [f for f in features if f in wells.columns]
    if not feats or with_cells[feats].isna().all(axis=None):
        return record("paint", "plate", plate,
                      f"every feature is NA in all {len(with_cells)} well(s) with cells ({n_cells} cells)",
                      PLATE_FIX["features"].format(id=plate))
    return None


# ------------------------------------------------------------------------------------------- libraries
def library_problem(obs: pd.DataFrame, library: str, usable: np.ndarray,
                    no_guide_features: str | None = None) -> dict[str, str] | None:
    """The reason a library's called cells (``obs``; ``usable`` = behind the pseudobulk) contribute
    nothing, or None when some are usable. ``no_guide_features``: the Cell Ranger matrix the library was
    read from when it has no CRISPR Guide Capture features (a GEX-only library: no cell can carry a
    guide)."""
    if int(np.asarray(usable).sum()) > 0:
        return None
    if no_guide_features is not None:
        return record("rna", "library", library,
                      f"no CRISPR Guide Capture features in its Cell Ranger matrix {no_guide_features} "
                      f"(a GEX-only library: {len(obs)} cells called, none can carry a guide)",
                      NO_GUIDES_FIX)
    n = len(obs)
    if n == 0:
        return record("rna", "library", library, "no cell called", LIBRARY_FIX.format(id=library))
    steps = [f"{n} cells called"]
    if "pass_qc" in obs:
        steps.append(f"{int(obs['pass_qc'].astype(bool).sum())} pass QC")
    if "predicted_doublet" in obs:
        steps.append(f"{int((~obs['predicted_doublet'].astype(bool)).sum())} singlets")
    if "perturbation" in obs:
        pert = obs["perturbation"].astype(str)
        steps.append(f"{int((~pert.isin(['unassigned', 'multiple'])).sum())} with one guide")
    return record("rna", "library", library, "no usable cell (" + ", ".join(steps) + ")",
                  LIBRARY_FIX.format(id=library))


# ------------------------------------------------------------------------------------------- decisions
def decide(records: Sequence[Mapping[str, Any]], units: Sequence[str], on_empty: str, arm: str,
           unit: str) -> pd.DataFrame:
    """Apply ``on_empty`` to the findings: raise :class:`EmptyDataError` (all findings at once) under
    ``error``, or when every unit of the arm is affected; else the quarantine table."""
    if on_empty not in ON_EMPTY:
        raise ValueError(f"on_empty must be one of {ON_EMPTY}, got {on_empty!r}")
    records = list(records)
    if not records:
        return table([])
    bad = {r["id"] for r in records}
    if set(units) <= bad:
        raise EmptyDataError(f"no usable {unit} left in the {arm} arm:\n{message(records)}")
    if on_empty == "error":
        raise EmptyDataError(f"{message(records)}\n(Fix each, {QUARANTINE_HINT}.)")
    return table(records)


def perturbations_without_cells(missing: Mapping[str, Sequence[str]],
                                arms: Sequence[str]) -> list[dict[str, str]]:
    """Records for perturbations with no usable cells (``uns['missing']`` of the paired object) in the
    arms that were measured."""
    what = {"rna": "no usable cell in any library (QC-passing singlet with this guide)",
            "paint": "no profiled well on any plate"}
    fix = {"rna": "expected for a lethal perturbation; otherwise check its guides in config/guides.tsv",
           "paint": "expected for a lethal perturbation; otherwise check the plate maps list it"}
    return [record(arm, "perturbation", pid, what[arm], fix[arm])
            for arm in arms for pid in missing.get(arm, [])]


def usable_files(paths: Sequence[PathLike] | None, held: pd.DataFrame, what: str = "plate") -> list[PathLike]:
    """Per-unit files (``results/paint/{plate}/...``, ``results/rna/{library}/...``) minus those of the
    units quarantined in ``held``."""
    bad = set(held.loc[held["what"] == what, "id"].astype(str))
    return [p for p in (paths or []) if Path(p).parent.name not in bad]
