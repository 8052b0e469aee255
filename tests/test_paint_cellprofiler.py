"""Plates given as CellProfiler output (plates.tsv ``cellprofiler``): the four real layouts in
../shared/data are read with their own plate/well/site metadata, the per-well aggregate equals an independent
pandas groupby median of the source tables, the feature check names the families the source lacks, and a
screen mixing an image plate with a CellProfiler plate plans no image rule for the latter."""

from __future__ import annotations

import json
import sqlite3

import numpy as np
import pandas as pd
import pytest
from config_values import SCHEMA
from workdir import planned_jobs, snakemake

from pairedscreen import columns as C
from pairedscreen.paint import cellprofiler as cp
from pairedscreen.paint.features import FAMILIES
from pairedscreen.paint.stages import run_paint_load_cellprofiler
from pairedscreen.plate import normalise_well
from pairedscreen.sheets import SheetError, read_plates

SQ = "cellprofiler_sqlite_parquet"
NF1 = f"{SQ}/NF1_SchwannCell_all_cellprofiler.sqlite"
HEALTH = f"{SQ}/CellHealth_test-SQ00014613.sqlite"
CYTOTABLE = f"{SQ}/pycytominer_examplehuman_joined_profiles.parquet"
HUMAN = "cellprofiler_examplehuman"
META = {k: SCHEMA[f"paint.cellprofiler.{k}"]
        for k in ("plate_columns", "well_columns", "site_columns", "filename_regex")}
CHANNELS = ["DNA", "ER", "RNA", "AGP", "Mito"]
pytestmark = pytest.mark.realdata


def _load(tmp_path, source, wells, plate_value=None):
    """Run the stage on ``source``, plate map = ``wells`` + one empty well: (cells, wells, record)."""
    pm = pd.DataFrame({"well": [*wells, "P24"], "perturbation_id": [f"G{i}" for i in range(len(wells) + 1)],
                       "replicate": 1})
    pm.to_csv(tmp_path / "pm.tsv", sep="\t", index=False)
    out = {k: tmp_path / f"{k}.{e}" for k, e in (("cells", "parquet"), ("wells", "parquet"), ("rec", "json"))}
    run_paint_load_cellprofiler(source, plate_value, tmp_path / "pm.tsv", "PX", "B1", metadata=META,
                                families=list(FAMILIES), channels=CHANNELS,
                                aggregate=SCHEMA["profiles.aggregate"], cells_out=out["cells"],
                                wells_out=out["wells"], record_out=out["rec"])
    return (pd.read_parquet(out["cells"]), pd.read_parquet(out["wells"]).set_index(C.WELL),
            json.loads(out["rec"].read_text()))


def _sqlite(path, query):
    with sqlite3.connect(path) as con:
        return pd.read_sql_query(query, con)


def _assert_medians(ours: pd.DataFrame, truth: pd.DataFrame, features: list[str]):
    truth = truth.groupby("well")[features].median()
    assert sorted(truth.index) == sorted(ours.index[ours[C.COUNT_CELLS] > 0])
    np.testing.assert_allclose(ours.loc[truth.index, features].to_numpy(float), truth.to_numpy(float),
                               rtol=1e-12, equal_nan=True)


def test_export_to_database_sqlite(shared_data, tmp_path):
    """NF1 Schwann cells (Per_* tables): wells C6.. mapped to C06.., sites from Image_Metadata_Site, medians
    of the Cytoplasm->Cells->Nuclei join by well equal pandas' on the raw tables."""
    src = shared_data(NF1)
    img = _sqlite(src, "SELECT ImageNumber, Image_Metadata_Well AS well, Image_Metadata_Site AS site "
                       "FROM Per_Image")
    img["well"] = img["well"].map(normalise_well)
    cyto = _sqlite(src, "SELECT ImageNumber, Cytoplasm_Parent_Cells, Cytoplasm_Parent_Nuclei, "
                        "Cytoplasm_AreaShape_Area FROM Per_Cytoplasm")
    cells = _sqlite(src, "SELECT ImageNumber, Cells_Number_Object_Number, Cells_AreaShape_Area, "
                         "Cells_Intensity_MeanIntensity_GFP FROM Per_Cells")
    nuc = _sqlite(src, "SELECT ImageNumber, Nuclei_Number_Object_Number, Nuclei_AreaShape_Area "
                       "FROM Per_Nuclei")
    truth = (cyto.merge(cells, left_on=["ImageNumber", "Cytoplasm_Parent_Cells"],
                        right_on=["ImageNumber", "Cells_Number_Object_Number"])
             .merge(nuc, left_on=["ImageNumber", "Cytoplasm_Parent_Nuclei"],
                    right_on=["ImageNumber", "Nuclei_Number_Object_Number"]).merge(img, on="ImageNumber"))
    wells = sorted(img["well"].unique())
    ours_cells, ours, rec = _load(tmp_path, src, wells)
    assert rec["format"] == "sqlite_per" and rec["source_plate"] == "001"
    assert len(ours_cells) == len(truth) == 242
    assert rec["objects"] == {"cytoplasm": 242, "cells": 242, "nuclei": 433, "joined": 242}
    got = ours_cells.groupby([C.WELL, C.SITE]).size()
    want = truth.assign(site=truth["site"].astype(int)).groupby(["well", "site"]).size()
    assert got.to_dict() == want.to_dict()
    _assert_medians(ours, truth, ["Cytoplasm_AreaShape_Area", "Cells_AreaShape_Area",
                                  "Cells_Intensity_MeanIntensity_GFP", "Nuclei_AreaShape_Area"])
    assert ours.loc["P24", C.COUNT_CELLS] == 0                 # a plate-map well without cells is kept
    check = rec["feature_check"]
    assert check["channels_in_source"] == ["DAPI", "GFP", "RFP"] and check["channels_missing"] == CHANNELS


def test_cytominer_database_sqlite(shared_data, tmp_path):
    """Cell Health SQ00014613 (TableNumber + ImageNumber + ObjectNumber keys, text values in some feature
    columns): wells A01 / O18, medians equal pandas' on the raw tables (text coerced to numbers)."""
    src = shared_data(HEALTH)
    img = _sqlite(src, "SELECT TableNumber, ImageNumber, Image_Metadata_Well AS well FROM Image")
    cyto = _sqlite(src, "SELECT TableNumber, ImageNumber, ObjectNumber, Cytoplasm_Parent_Cells, "
                        "Cytoplasm_Parent_Nuclei, Cytoplasm_AreaShape_Area FROM Cytoplasm")
    cells = _sqlite(src, "SELECT TableNumber, ImageNumber, ObjectNumber AS c, Cells_AreaShape_Area, "
                         "Cells_Intensity_MeanIntensity_Mito FROM Cells")
    nuc = _sqlite(src, "SELECT TableNumber, ImageNumber, ObjectNumber AS n, "
                       "Nuclei_Correlation_Costes_AGP_DNA FROM Nuclei")
    truth = (cyto.merge(cells, left_on=["TableNumber", "ImageNumber", "Cytoplasm_Parent_Cells"],
                        right_on=["TableNumber", "ImageNumber", "c"])
             .merge(nuc, left_on=["TableNumber", "ImageNumber", "Cytoplasm_Parent_Nuclei"],
                    right_on=["TableNumber", "ImageNumber", "n"])
             .merge(img, on=["TableNumber", "ImageNumber"]))
    feats = ["Cytoplasm_AreaShape_Area", "Cells_AreaShape_Area", "Cells_Intensity_MeanIntensity_Mito",
             "Nuclei_Correlation_Costes_AGP_DNA"]
    for f in feats:
        truth[f] = pd.to_numeric(truth[f], errors="coerce")
    ours_cells, ours, rec = _load(tmp_path, src, ["A01", "O18"])
    assert rec["format"] == "sqlite_cytominer" and len(ours_cells) == len(truth) == 12
    _assert_medians(ours, truth, feats)
    assert rec["feature_check"]["channels_missing"] == []


def test_spreadsheet_csvs_and_cytotable_parquet_agree(shared_data, tmp_path):
    """ExampleHuman: no well column, so well and site come from the file name (D03, f00); the CSV folder
    and CytoTable's Parquet of the same CSVs give the same well medians, equal to pandas' of Cells.csv."""
    csv_cells, csv_wells, csv_rec = _load(tmp_path, shared_data(HUMAN), ["D03"])
    (tmp_path / "pq").mkdir()
    pq_cells, pq_wells, pq_rec = _load(tmp_path / "pq", shared_data(CYTOTABLE), ["D03"])
    assert csv_rec["format"] == "csv" and pq_rec["format"] == "parquet"
    raw = pd.read_csv(shared_data(HUMAN) / "Cells.csv")
    assert len(csv_cells) == len(pq_cells) == len(raw) == 289
    assert set(csv_cells[C.WELL]) == {"D03"} and set(csv_cells[C.SITE]) == {0}
    assert set(pq_cells[C.WELL]) == {"D03"} and set(pq_cells[C.SITE]) == {0}
    names = {"AreaShape_Area": "Cells_AreaShape_Area",
             "Intensity_MeanIntensity_DNA": "Cells_Intensity_MeanIntensity_DNA"}
    truth = raw[list(names)].rename(columns=names).assign(well="D03")
    for ours in (csv_wells, pq_wells):
        _assert_medians(ours, truth, ["Cells_AreaShape_Area", "Cells_Intensity_MeanIntensity_DNA"])
    shared = sorted(set(C.feature_columns(csv_wells)) & set(C.feature_columns(pq_wells)))
    assert len(shared) > 250
    np.testing.assert_allclose(csv_wells.loc["D03", shared].to_numpy(float),
                               pq_wells.loc["D03", shared].to_numpy(float), rtol=1e-9, equal_nan=True)


def test_feature_check_lists_the_families_the_source_lacks(shared_data):
    """ExampleHuman measured AreaShape/Intensity/Location but no texture, granularity, radial distribution,
    correlation or neighbours (its .cppipe has no such module): exactly those families are missing."""
    pipeline = (shared_data(HUMAN) / "ExampleHuman.cppipe").read_text()
    cells, _ = cp.read_cellprofiler(shared_data(HUMAN), **META)
    check = cp.feature_check(C.feature_columns(cells), families=list(FAMILIES), channels=CHANNELS)
    for module, family in (("MeasureTexture", "Texture"), ("MeasureGranularity", "Granularity"),
                           ("MeasureObjectIntensityDistribution", "RadialDistribution"),
                           ("MeasureColocalization", "Correlation"), ("MeasureObjectNeighbors", "Neighbors")):
        assert module not in pipeline
        assert {f"Cells_{family}", f"Nuclei_{family}"} <= set(check["families_missing"])
    assert "MeasureObjectSizeShape" in pipeline and "MeasureObjectIntensity" in pipeline
    assert not {"Cells_AreaShape", "Nuclei_Intensity", "Cytoplasm_AreaShape"} & set(check["families_missing"])
    assert check["channels_missing"] == ["ER", "RNA", "AGP", "Mito"]


def test_a_source_with_several_plates_needs_cellprofiler_plate(tmp_path):
    image = pd.DataFrame({"ImageNumber": [1, 2], "Image_Metadata_Plate": ["a", "b"],
                          "Image_Metadata_Well": ["A1", "B2"], "Image_Metadata_Site": [1, 1]})
    with pytest.raises(cp.CellProfilerError, match="cellprofiler_plate"):
        cp.image_metadata(image, source="s", source_plate=None, **META)
    got, rec = cp.image_metadata(image, source="s", source_plate="b", **META)
    assert got[C.WELL].tolist() == ["B02"] and rec["source_plate"] == "b"


def test_plate_rows_have_images_or_cellprofiler_not_both(tmp_path):
    sheet = tmp_path / "plates.tsv"
    sheet.write_text("plate_id\tbatch\timage_dir\tcellprofiler\tplate_map\n"
                     "P1\tb\timgs\tcp.sqlite\tpm.tsv\nP2\tb\t\t\tpm.tsv\nP3\tb\t\tcp.sqlite\tpm.tsv\n")
    with pytest.raises(SheetError) as err:
        read_plates(sheet)
    text = str(err.value)
    assert "P1 has both" in text and "P2 has neither" in text and "P3" not in text


def test_mixed_screen_plans_no_image_rule_for_the_cellprofiler_plate(shared_data, tmp_path):
    """The tiny screen's image plate P1 + a plate PCP from the real NF1 ExportToDatabase SQLite, its 8 wells
    mapped onto perturbations of the tiny registry: ``snakemake -n`` loads PCP with paint_load_cellprofiler
    only, P1 through the image rules, and the datasheet / report / crops need no image output of PCP."""
    from pairedscreen.simulate import simulate

    wd = simulate(tmp_path / "screen", preset="tiny")
    sheet = wd / "config" / "plates.tsv"
    plates = pd.read_csv(sheet, sep="\t", dtype=str, keep_default_na=False)
    pm1 = pd.read_csv(wd / plates["plate_map"].iloc[0], sep="\t", dtype=str, keep_default_na=False)
    img = _sqlite(shared_data(NF1), "SELECT DISTINCT Image_Metadata_Well AS w FROM Per_Image")
    wells = sorted(normalise_well(w) for w in img["w"])
    pm = pd.DataFrame({"well": wells, "perturbation_id": list(pm1["perturbation_id"].iloc[:len(wells)]),
                       "replicate": "1"})
    pm.to_csv(wd / "config" / "plate_maps" / "PCP.tsv", sep="\t", index=False)
    plates = plates.iloc[:1].assign(cellprofiler="")
    cp_row = {"plate_id": "PCP", "batch": plates["batch"].iloc[0], "image_dir": "",
              "cellprofiler": str(shared_data(NF1)), "plate_map": "config/plate_maps/PCP.tsv"}
    pd.concat([plates, pd.DataFrame([cp_row])], ignore_index=True).to_csv(sheet, sep="\t", index=False)
    dry = snakemake(wd, "-n", "--cores", "1")
    assert dry.returncode == 0, (dry.stdout + dry.stderr)[-6000:]
    planned = planned_jobs(dry.stdout)
    pcp = {rule for rule, wc in planned if wc.get("plate") == "PCP"}
    p1 = {rule for rule, wc in planned if wc.get("plate") == plates["plate_id"].iloc[0]}
    image_rules = {"paint_index", "paint_illum", "paint_segment", "paint_features", "paint_plate",
                   "train_crops"}
    assert pcp == {"paint_load_cellprofiler"}, pcp
    assert image_rules <= p1, p1
    rules = {rule for rule, _ in planned}
    assert {"datasheet", "report", "profiles", "train_croissant"} <= rules
    assert not (wd / "results" / "paint" / "PCP" / "image_manifest.tsv").exists()


def _two_plate_csvs(src, dst):
    """ExampleHuman's CSV folder as plate "B" of a two-plate source: plate "A" (written first) is a copy whose
    image numbers come after B's and whose every measurement is doubled, so A's rows read as B's would
    change B's values and its row counts."""
    dst.mkdir()
    image = pd.read_csv(src / "Image.csv")
    shift = int(image["ImageNumber"].max())
    a = image.assign(ImageNumber=image["ImageNumber"] + shift, Metadata_Plate="A")
    pd.concat([a, image.assign(Metadata_Plate="B")]).to_csv(dst / "Image.csv", index=False)
    for comp in cp.COMPARTMENTS:
        t = pd.read_csv(src / f"{comp}.csv")
        other = t.copy()
        other["ImageNumber"] += shift
        meas = [c for c in t.columns if c.startswith(("AreaShape_", "Intensity_"))]
        other[meas] = other[meas] * 2
        pd.concat([other, t]).to_csv(dst / f"{comp}.csv", index=False)


def _two_plate_parquet(src, dst):
    """The CytoTable Parquet as plate "B" of a two-plate file: plate "A" first, the same image numbers,
    every measurement doubled; small row groups so the filter has several batches to skip."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    t = pq.read_table(src).to_pandas()
    meas = [c for c in t.columns if c.startswith(tuple(f"{k}_" for k in cp.COMPARTMENTS))
            and pd.api.types.is_numeric_dtype(t[c]) and not pd.api.types.is_bool_dtype(t[c])]
    a = t.assign(Metadata_Plate="A")
    a[meas] = a[meas] * 2
    both = pd.concat([a, t.assign(Metadata_Plate="B")], ignore_index=True)
    pq.write_table(pa.Table.from_pandas(both, preserve_index=False), dst, row_group_size=64)


@pytest.mark.parametrize("layout", ["csv", "parquet"])
def test_a_two_plate_source_reads_only_the_asked_plate(shared_data, tmp_path, monkeypatch, layout):
    """A CSV folder / CytoTable Parquet holding two plates gives plate B exactly as the one-plate source
    does (cells, values, object counts), and only B's object rows are read into memory
    (``source_rows_read`` as for the one-plate source): the CSVs in chunks, the Parquet through a
    dataset filter."""
    monkeypatch.setattr(cp, "CSV_CHUNK_ROWS", 64)        # ExampleHuman's 289 rows per table: 5 chunks
    one = shared_data(HUMAN) if layout == "csv" else shared_data(CYTOTABLE)
    two = tmp_path / ("two" if layout == "csv" else "two.parquet")
    (_two_plate_csvs if layout == "csv" else _two_plate_parquet)(one, two)
    want, want_rec = cp.read_cellprofiler(one, **META)
    with pytest.raises(cp.CellProfilerError, match=r"holds plates \['A', 'B'\]"):
        cp.read_cellprofiler(two, **META)
    got, rec = cp.read_cellprofiler(two, source_plate="B", **META)
    assert rec["source_plates"] == ["A", "B"] and rec["source_plate"] == "B"
    assert rec["objects"] == want_rec["objects"] and rec["images"] == want_rec["images"] == 1
    assert rec["source_rows_read"] == want_rec["source_rows_read"] == \
        (3 * 289 if layout == "csv" else 289)
    pd.testing.assert_frame_equal(got, want)
    other, _ = cp.read_cellprofiler(two, source_plate="A", **META)
    np.testing.assert_allclose(other["Cells_AreaShape_Area"], 2 * want["Cells_AreaShape_Area"])


def test_report_and_croissant_name_the_source_and_the_families_it_lacks(shared_data, tmp_path):
    """ExampleHuman lacks texture, granularity, radial distribution, correlation and neighbours, and our
    ER/RNA/AGP/Mito channels: the report's source table and croissant.json's RAI texts name the source
    (format, path, plate) and list exactly the record's missing families and channels, never a blank."""
    from pairedscreen.config import resolve_section
    from pairedscreen.report.sections.paint import cellprofiler_source
    from pairedscreen.train.croissant import rai_fields

    _, _, rec = _load(tmp_path, shared_data(HUMAN), ["D03"])
    missing = rec["feature_check"]["families_missing"]
    assert {"Cells_Texture", "Nuclei_Granularity", "Cells_Neighbors"} <= set(missing)
    rows = dict(cellprofiler_source(rec))
    assert rows["format"] == "CellProfiler ExportToSpreadsheet CSV folder (csv)"
    assert rows["source"] == str(shared_data(HUMAN))
    assert rows["source plate"] == "the whole source (no plate column)"
    assert rows["feature families of ours missing"].split(", ") == missing
    assert rows["channels of ours missing"] == "ER, RNA, AGP, Mito"
    sheet = {"cellprofiler": {"PX": rec}, "counts": {"pair": {"libraries": ["L1"], "plates": ["P1", "PX"]}}}
    rai = rai_fields(sheet, resolve_section("train")["croissant"])
    assert f"plate PX: CellProfiler ExportToSpreadsheet CSV folder (csv) {shared_data(HUMAN)}" in \
        rai["data_collection"] and "2 plate(s) (1 of them from CellProfiler output" in rai["data_collection"]
    (step,) = [s for s in rai["data_preprocessing_protocol"] if s.startswith("Paint plate PX")]
    assert f"feature families of ours missing: {', '.join(missing)};" in step
    assert step.endswith("channels of ours missing: ER, RNA, AGP, Mito")
    assert "plates PX from CellProfiler output" in rai["data_annotation_protocol"][-1]
