"""A screen mixing an image plate and a CellProfiler plate, run end to end (issue 22).

The session's finished tiny run (conftest.tiny_run: image plates simulated and segmented here) is copied;
a plate ``PCH`` is added whose ``cellprofiler`` is the real 5-channel Cell Health cytominer-database SQLite
(../shared/data), its two wells mapped by a plate map onto perturbation ids of the tiny registry (a control
and a targeting perturbation the image plate has too). Only PCH's loading and the screen-wide steps run;
then the paired product holds both plates' wells and cells, PCH's values equal an independent pandas median
of the SQLite's tables, the ledger balances for both plates (the image plate's unchanged), and the report,
datasheet and croissant.json name PCH's source and the feature families it lacks."""

from __future__ import annotations

import json
import shutil
import sqlite3

import numpy as np
import pandas as pd
import pytest
from workdir import planned_jobs, snakemake

pytestmark = [pytest.mark.e2e, pytest.mark.realdata]

HEALTH = "cellprofiler_sqlite_parquet/CellHealth_test-SQ00014613.sqlite"
KEY = ["TableNumber", "ImageNumber"]
AGGREGATE_RULES = {"profiles", "quality", "pair", "datasheet", "report", "all", "train_batch_holdout",
                   "train_rna", "train_eval_cells", "train_celleval", "train_evals", "train_croissant"}
FEATURES = ["Cytoplasm_AreaShape_Area", "Cells_AreaShape_Area", "Cells_Intensity_MeanIntensity_Mito",
            "Nuclei_Correlation_Costes_AGP_DNA"]


def _sqlite(path, query):
    with sqlite3.connect(path) as con:
        return pd.read_sql_query(query, con)


def _truth(src) -> pd.DataFrame:
    """The SQLite's cells by pandas alone: cytoplasm joined to its parent cell and nucleus, with the well."""
    img = _sqlite(src, "SELECT TableNumber, ImageNumber, Image_Metadata_Well AS well FROM Image")
    cyto = _sqlite(src, "SELECT TableNumber, ImageNumber, Cytoplasm_Parent_Cells AS c, "
                        "Cytoplasm_Parent_Nuclei AS n, Cytoplasm_AreaShape_Area FROM Cytoplasm")
    cells = _sqlite(src, "SELECT TableNumber, ImageNumber, ObjectNumber AS c, Cells_AreaShape_Area, "
                         "Cells_Intensity_MeanIntensity_Mito FROM Cells")
    nuc = _sqlite(src, "SELECT TableNumber, ImageNumber, ObjectNumber AS n, "
                       "Nuclei_Correlation_Costes_AGP_DNA FROM Nuclei")
    out = cyto.merge(cells, on=[*KEY, "c"]).merge(nuc, on=[*KEY, "n"]).merge(img, on=KEY)
    for f in FEATURES:
        out[f] = pd.to_numeric(out[f], errors="coerce")   # the shrunk plate has text values on purpose
    return out


@pytest.fixture(scope="module")
def mixed(tiny_run, shared_data, tmp_path_factory):
    """(copy of the tiny run with PCH added and run, its plate map, the run's datasheet before PCH, the
    jobs the dry run planned)."""
    src = shared_data(HEALTH)
    wd = tmp_path_factory.mktemp("mixed") / "screen"
    shutil.copytree(tiny_run.workdir, wd, symlinks=True)
    before = json.loads((wd / "results" / "datasheet.json").read_text())
    sheet = wd / "config" / "plates.tsv"
    plates = pd.read_csv(sheet, sep="\t", dtype=str, keep_default_na=False)
    registry = pd.read_csv(wd / "config" / "perturbations.tsv", sep="\t", dtype=str)
    control = registry.loc[registry["is_control"].str.lower() == "true", "perturbation_id"].iloc[0]
    p1 = pd.read_csv(wd / plates["plate_map"].iloc[0], sep="\t", dtype=str)
    target = sorted(set(p1["perturbation_id"]) - {control} - set(
        registry.loc[registry["is_control"].str.lower() == "true", "perturbation_id"]))[0]
    wells = sorted(_sqlite(src, "SELECT DISTINCT Image_Metadata_Well AS w FROM Image")["w"])
    assert wells == ["A01", "O18"]
    pm = pd.DataFrame({"well": wells, "perturbation_id": [control, target], "replicate": "1"})
    pm.to_csv(wd / "config" / "plate_maps" / "PCH.tsv", sep="\t", index=False)
    row = {"plate_id": "PCH", "batch": plates["batch"].iloc[0], "image_dir": "", "cellprofiler": str(src),
           "plate_map": "config/plate_maps/PCH.tsv"}
    if "cellprofiler" not in plates:
        plates = plates.assign(cellprofiler="")
    pd.concat([plates, pd.DataFrame([row])], ignore_index=True).to_csv(sheet, sep="\t", index=False)
    dry = snakemake(wd, "-n")
    assert dry.returncode == 0, (dry.stdout + dry.stderr)[-4000:]
    res = snakemake(wd, "--cores", "2")
    assert res.returncode == 0, (res.stdout + res.stderr)[-6000:]
    return wd, pm, before, planned_jobs(dry.stdout)


def test_only_the_cellprofiler_plate_and_the_screen_wide_steps_run(mixed):
    _, _, _, jobs = mixed
    assert {(r, w["plate"]) for r, w in jobs if "plate" in w} == {("paint_load_cellprofiler", "PCH")}, jobs
    assert {r for r, w in jobs if "plate" not in w} <= AGGREGATE_RULES, jobs
    assert not any("library" in w for _, w in jobs)


def test_paired_product_holds_both_plates_and_the_sqlite_medians(mixed, shared_data):
    import anndata as ad
    import mudata

    wd, pm, before, _ = mixed
    truth = _truth(shared_data(HEALTH))
    image_plates = [str(p) for p in before["counts"]["pair"]["plates"]]
    # the arm's well table: PCH's medians = pandas' median of the SQLite join, per well
    wells = pd.read_parquet(wd / "results" / "paint" / "PCH" / "wells.parquet").set_index("Metadata_Well")
    want = truth.groupby("well")[FEATURES].median()
    assert sorted(wells.index) == sorted(want.index) == sorted(pm["well"])
    np.testing.assert_allclose(wells.loc[want.index, FEATURES].to_numpy(float), want.to_numpy(float),
                               rtol=1e-12, equal_nan=True)
    assert wells.loc[want.index, "Metadata_Count_Cells"].tolist() == truth.groupby("well").size().tolist()
    # the profiles and the paired per-perturbation product: both plates' wells and perturbations
    prof = pd.read_parquet(wd / "results" / "paint" / "profiles.parquet", columns=["Metadata_Plate",
                                                                                    "Metadata_Well"])
    assert set(prof["Metadata_Plate"]) == {*image_plates, "PCH"}
    assert sorted(prof.loc[prof["Metadata_Plate"] == "PCH", "Metadata_Well"]) == sorted(pm["well"])
    obs = ad.read_h5ad(wd / "results" / "paired" / "paint.h5ad").obs
    cells = pd.concat([pd.read_parquet(wd / "results" / "paint" / p / "cells.parquet",
                                       columns=["Metadata_Plate", "Metadata_Perturbation"])
                       for p in image_plates] +
                      [truth.merge(pm, on="well").rename(columns={"perturbation_id": "Metadata_Perturbation"})
                       .assign(Metadata_Plate="PCH")[["Metadata_Plate", "Metadata_Perturbation"]]])
    for pert, n in cells.groupby("Metadata_Perturbation").size().items():
        assert int(obs.loc[pert, "n_cells"]) == n, pert
    for pert in pm["perturbation_id"]:
        plates_of = set(cells.loc[cells["Metadata_Perturbation"] == pert, "Metadata_Plate"])
        assert "PCH" in plates_of and int(obs.loc[pert, "n_plates"]) == len(plates_of)
        assert bool(obs.loc[pert, "in_paint"])
    # the paired cells: PCH's painted cells with the SQLite's values (stored as float32)
    m = mudata.read_h5mu(wd / "results" / "paired" / "cells.h5mu")
    paint = m.mod["paint"]
    sel = (paint.obs["plate"].astype(str) == "PCH").to_numpy()
    assert int(sel.sum()) == len(truth) == 12
    got = pd.DataFrame(np.asarray(paint[sel, FEATURES].X, dtype=np.float64), columns=FEATURES)
    got["well"] = paint.obs.loc[sel, "well"].astype(str).to_numpy()
    np.testing.assert_allclose(got.groupby("well")[FEATURES].median().loc[want.index].to_numpy(),
                               want.to_numpy(float), rtol=1e-6, equal_nan=True)


def test_ledger_balances_for_both_plates(mixed, shared_data):
    wd, pm, before, _ = mixed
    src = shared_data(HEALTH)
    sheet = json.loads((wd / "results" / "datasheet.json").read_text())
    led = sheet["ledger"]
    assert led["balanced"] and not led["unbalanced"], led["unbalanced"]
    for plate, old in before["ledger"]["paint"].items():       # the image plates' counts unchanged
        assert led["paint"][plate] == old, plate
    pch = led["paint"]["PCH"]["counts"]
    for comp in ("Cells", "Cytoplasm", "Nuclei"):               # every source object counted ...
        n = int(_sqlite(src, f"SELECT COUNT(*) AS n FROM {comp}")["n"].iloc[0])
        assert pch[f"source_{comp.lower()}"] == n
        assert n == pch["source_cells_joined"] + pch[f"source_{comp.lower()}_not_joined"]   # ... kept or not
    assert pch["source_cells_joined"] == len(_truth(src)) == pch["cells_in_plate_table"]
    assert pch["wells"] == len(pm) and pch["cells_in_wells"] == pch["cells_in_profiles"] + \
        pch["cells_not_in_profiles"]
    assert set(led["paint"]["PCH"]["losses"]) == {"nuclei_not_joined", "cells_not_joined",
                                                  "cytoplasm_not_joined", "cells_in_wells_not_profiled"}
    profiled = sum(v["counts"]["cells_in_profiles"] for v in led["paint"].values())
    cross = {e["equation"].split(" =")[0]: e for e in led["pair"]["equations"]}
    assert cross["paint_cells_in_paired"]["terms"]["paint_cells_in_paired"] == profiled


def test_report_datasheet_and_croissant_name_the_cellprofiler_source(mixed, shared_data):
    wd, _, _, _ = mixed
    src = str(shared_data(HEALTH))
    sheet = json.loads((wd / "results" / "datasheet.json").read_text())
    rec = sheet["cellprofiler"]["PCH"]
    assert (rec["source"], rec["format"], rec["source_plate"]) == (src, "sqlite_cytominer", "SQ00014613")
    assert any(w.startswith("plate PCH (CellProfiler sqlite_cytominer") and src in w and
               "feature families missing vs ours: none" in w for w in sheet["warnings"]), sheet["warnings"]
    html = (wd / "results" / "report.html").read_text()
    section = html[html.index('id="plate-PCH"'):]
    section = section[:section.index("</section>")]
    for text in ("Source: CellProfiler output", "cytominer-database SQLite", src, "SQ00014613",
                 "feature families of ours missing", "channels of ours missing"):
        assert text in section, text
    assert "image_index.parquet missing" not in section and "illum missing" not in section
    doc = json.loads((wd / "results" / "train" / "croissant.json").read_text())
    collection = doc["rai:dataCollection"]
    assert "plate PCH: cytominer-database SQLite" in collection and src in collection
    steps = [s for s in doc["rai:dataPreprocessingProtocol"] if s.startswith("Paint plate PCH")]
    assert len(steps) == 1 and "feature families of ours missing: none" in steps[0], steps
    assert "source plate SQ00014613" in steps[0]
