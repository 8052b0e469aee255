"""Per-plate assembly and per-well aggregation against values computed independently with numpy."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from config_values import SCHEMA

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
    wells = plate_wells(cells, pm, "P1", "B1", how=SCHEMA["profiles.aggregate"]).set_index("Metadata_Well")
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
    wells = plate_wells(cells, pm, "P1", "B1", how=SCHEMA["profiles.aggregate"])
    assert len(cells) == 0 and list(wells.Metadata_Well) == ["A01", "B02", "C03"]
    assert (wells.Metadata_Count_Cells == 0).all()


# ------------------------------------------------------------------ streamed plate (paint_plate)
def _chunked_plate(tmp_path, pm_order, wells_per_job=3, n_feats=5, seed=7):
    """A plate written as per-chunk features files the way paint_features writes them (wells grouped in
    plate-map order): uneven cell counts, a well without cells, an empty chunk, NaN feature values."""
    from pairedscreen.paths import chunk_wells

    rng = np.random.default_rng(seed)
    pm = pd.DataFrame({"well": pm_order, "perturbation_id": [f"P{i % 4}" for i in range(len(pm_order))],
                       "replicate": [1 + i % 2 for i in range(len(pm_order))],
                       "note": ["x" if i % 3 else None for i in range(len(pm_order))]})
    feats = [f"{c}_Intensity_MeanIntensity_DNA" for c in ("Cells", "Nuclei")] + \
        [f"Cytoplasm_Texture_F{i}_ER_3" for i in range(n_feats - 2)]
    files = []
    for i, (chunk, wells) in enumerate(chunk_wells(pm_order, wells_per_job).items()):
        rows = []
        for w in wells:
            n = 0 if (w == pm_order[1] or i == 2) else int(rng.integers(1, 12))
            sites = rng.integers(1, 4, n)
            df = pd.DataFrame({"Metadata_Well": w, "Metadata_Site": sites.astype(np.int64),
                               "Metadata_ObjectNumber": rng.permutation(n).astype(np.int64) + 1})
            x = rng.normal(size=(n, len(feats)))
            x[rng.random(x.shape) < 0.1] = np.nan
            rows.append(pd.concat([df, pd.DataFrame(x, columns=feats)], axis=1))
        table = pd.concat(rows, ignore_index=True).sample(frac=1, random_state=i).reset_index(drop=True)
        if i == 2:   # a chunk without any cell: features writes only the id columns
            table = pd.DataFrame(columns=["Metadata_Well", "Metadata_Site", "Metadata_ObjectNumber"])
        table.insert(0, "Metadata_Plate", "P1")
        path = tmp_path / f"{chunk}.parquet"
        table.to_parquet(path, index=False)
        files.append(path)
    return pm, files


@pytest.mark.parametrize("order", ["sorted", "shuffled"])
@pytest.mark.parametrize("how", ["median", "mean"])
def test_streamed_plate_equals_whole_plate(tmp_path, order, how):
    """stream_plate (chunk by chunk) writes the same cells.parquet (values, dtypes, Arrow schema incl. the
    pandas metadata, row order) and returns the same wells table as the whole-plate functions."""
    import pyarrow.parquet as pq

    from pairedscreen.digest import content_digest
    from pairedscreen.io import write_parquet
    from pairedscreen.paint.aggregate import _file_wells, plate_segments, stream_plate
    from pairedscreen.plate import well_name

    wells = [well_name(r, c) for r in range(4) for c in range(6)]
    if order == "shuffled":   # chunks interleave in well order: runs are smaller than chunks
        wells = list(np.random.default_rng(1).permutation(wells))
    pm, files = _chunked_plate(tmp_path, wells)
    whole = assemble_cells([pd.read_parquet(f) for f in files], pm, "P1", "B1")
    ref = tmp_path / "whole.parquet"
    write_parquet(whole, ref)
    out = tmp_path / "cells.parquet"
    wells_stream = stream_plate(files, pm, "P1", "B1", out, how=how)
    streamed = pd.read_parquet(out)
    pd.testing.assert_frame_equal(streamed, whole, check_exact=True)
    assert pq.read_schema(out).equals(pq.read_schema(ref), check_metadata=True)
    assert content_digest(out) == content_digest(ref)
    pd.testing.assert_frame_equal(wells_stream, plate_wells(whole, pm, "P1", "B1", how=how),
                                  check_exact=True)
    runs = plate_segments([_file_wells(f) for f in files])
    n_files = sum(bool(_file_wells(f)) for f in files)
    assert (len(runs) == n_files) if order == "sorted" else (len(runs) > n_files)
    assert pq.ParquetFile(out).metadata.num_row_groups == len(runs)


def test_streamed_plate_without_any_object(tmp_path):
    from pairedscreen.paint.aggregate import stream_plate

    pm = pd.DataFrame({"well": ["A01", "A02"], "perturbation_id": ["P0", "P1"], "replicate": [1, 1]})
    f = tmp_path / "c000.parquet"
    pd.DataFrame(columns=["Metadata_Plate", "Metadata_Well", "Metadata_Site", "Metadata_ObjectNumber"]) \
        .to_parquet(f, index=False)
    wells = stream_plate([f], pm, "P1", "B1", tmp_path / "cells.parquet", how=SCHEMA["profiles.aggregate"])
    whole = assemble_cells([pd.read_parquet(f)], pm, "P1", "B1")
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "cells.parquet"), whole)
    pd.testing.assert_frame_equal(wells, plate_wells(whole, pm, "P1", "B1", how=SCHEMA["profiles.aggregate"]))


def test_streamed_plate_refuses_unmapped_wells_before_writing(tmp_path, tables):
    from pairedscreen.paint.aggregate import stream_plate

    pm, chunks = tables
    files = []
    for i, c in enumerate(chunks):
        files.append(tmp_path / f"c{i:03d}.parquet")
        c.to_parquet(files[-1], index=False)
    with pytest.raises(ValueError, match=r"wells \['B02'\]"):
        stream_plate(files, pm.iloc[[0, 2]], "P1", "B1", tmp_path / "cells.parquet",
                     how=SCHEMA["profiles.aggregate"])
    assert not (tmp_path / "cells.parquet").exists()
