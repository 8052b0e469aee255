"""Per-plate assembly and per-well aggregation against values computed independently with numpy."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from pairedscreen.paint.aggregate import assemble_cells, plate_wells


@pytest.fixture()
def tables():
    rng = np.random.default_rng(3)
    pm = pd.DataFrame({"well": ["A01", "B02", "C03"], "perturbation_id": ["TGT01", "NTC_1", "TGT01"],
                       "replicate": [1, 1, 2], "dose_um": [1.0, 0.0, 1.0]})
    chunks = []
    for wells in (["A01"], ["B02"]):
        n = 7
        chunks.append(pd.DataFrame({
            "Metadata_Well": np.repeat(wells, n), "Metadata_Site": np.tile([1, 2], n)[:n],
            "Metadata_ObjectNumber": np.arange(1, n + 1),
            "Cells_AreaShape_Area": rng.integers(100, 400, n).astype(float),
            "Nuclei_Intensity_MeanIntensity_DNA": rng.random(n)}))
    return pm, chunks


def test_assemble_attaches_plate_map(tables):
    pm, chunks = tables
    cells = assemble_cells(chunks, pm, "P1", "B1")
    assert len(cells) == 14
    assert (cells.loc[cells.Metadata_Well == "B02", "Metadata_Perturbation"] == "NTC_1").all()
    assert "Metadata_DoseUm" in cells and cells.columns[0] == "Metadata_Plate"


def test_aggregate_median_and_empty_wells_kept(tables):
    pm, chunks = tables
    cells = assemble_cells(chunks, pm, "P1", "B1")
    wells = plate_wells(cells, pm, "P1", "B1").set_index("Metadata_Well")
    a01 = chunks[0]["Cells_AreaShape_Area"].to_numpy()
    assert wells.loc["A01", "Cells_AreaShape_Area"] == np.median(a01)
    assert wells.loc["A01", "Metadata_Count_Cells"] == 7
    assert wells.loc["C03", "Metadata_Count_Cells"] == 0
    assert np.isnan(wells.loc["C03", "Cells_AreaShape_Area"])
    assert list(wells.index) == ["A01", "B02", "C03"]


def test_objects_in_unmapped_well_are_an_error(tables):
    pm, chunks = tables
    with pytest.raises(ValueError, match=r"wells \['B02'\]"):
        assemble_cells(chunks, pm.iloc[[0, 2]], "P1", "B1")


def test_plate_without_any_object_keeps_every_well(tables):
    pm, chunks = tables
    empty = [c.iloc[:0] for c in chunks]
    cells = assemble_cells(empty, pm, "P1", "B1")
    wells = plate_wells(cells, pm, "P1", "B1")
    assert len(cells) == 0 and list(wells.Metadata_Well) == ["A01", "B02", "C03"]
    assert (wells.Metadata_Count_Cells == 0).all()
