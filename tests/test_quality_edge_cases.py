"""Degenerate inputs: quality metrics report NaN for what cannot be scored instead of failing the run."""

from __future__ import annotations

import numpy as np
import pandas as pd
from config_values import SCHEMA

from pairedscreen.paint import aggregate as A
from pairedscreen.paint import profiles as prof
from pairedscreen.quality.paint_units import PlateRows, paint_replicates
from pairedscreen.quality.replicate import phenotypic_activity


def test_single_replicate_perturbations_are_nan_not_an_error():
    meta = pd.DataFrame({"perturbation": ["A", "B", "C", "C"], "is_control": [False, False, True, True]})
    res = phenotypic_activity(np.random.default_rng(0).normal(size=(4, 5)), meta, null_size=100,
                              seed=SCHEMA["quality.seed"])
    assert list(res.perturbation) == ["A", "B", "C"]
    assert res.loc[res.perturbation.isin(["A", "B"]), "mean_average_precision"].isna().all()


def test_sub_well_replicates_drop_undefined_features_not_wells(tmp_path):
    """A feature constant in the control cells is undefined after normalisation: it is dropped, and every
    sub-well replicate is kept."""
    rng = np.random.default_rng(1)
    wells = ["A01", "A02", "B01", "B02"]
    perts = ["NTC_1", "NTC_1", "TGT01", "TGT02"]
    rows = []
    for w, p in zip(wells, perts, strict=True):
        for k in range(12):
            rows.append({"Metadata_Plate": "P1", "Metadata_Batch": "B1", "Metadata_Well": w,
                         "Metadata_Site": 1, "Metadata_ObjectNumber": k + 1, "Metadata_Perturbation": p,
                         "Cells_AreaShape_Area": rng.normal(300, 30),
                         "Cells_Intensity_MeanIntensity_DNA": 0.5 if p == "NTC_1" else rng.random()})
    cells = pd.DataFrame(rows)
    path = tmp_path / "cells.parquet"
    cells.to_parquet(path)
    reg = pd.DataFrame({"perturbation_id": ["TGT01", "TGT02", "NTC_1"], "is_control": [False, False, True]})
    wells_df = A.aggregate_wells(prof.harmonize_metadata(cells, reg), operation=SCHEMA["profiles.aggregate"])
    wells_path = tmp_path / "profiles.parquet"
    prof.harmonize_metadata(wells_df, reg).to_parquet(wells_path)
    rep, unit, record = paint_replicates(PlateRows(wells_path, reg), [path], reg, max_replicates=16, seed=0,
                                         aggregate=SCHEMA["profiles.aggregate"],
                                         normalize=SCHEMA["profiles.normalize"])
    assert record["replicates"] == record["replicates_total"] == 12 and record["perturbations_capped"] == 0
    assert unit.startswith("sub-wells")
    assert len(rep) == 4 * 3                                    # every well's 3 splits kept
    assert "Cells_Intensity_MeanIntensity_DNA" not in rep.columns  # undefined after normalisation
    assert rep["Cells_AreaShape_Area"].notna().all()
