"""The pair/quality/datasheet stages on files laid out as the arms write them (ARCHITECTURE.md paths),
from the planted-truth synthetic screen of test_quality_recovery."""

from __future__ import annotations

import json
import os
from pathlib import Path

import anndata as ad
import mudata as md
import numpy as np
import pandas as pd
import pytest
from config_values import SCHEMA
from test_quality_recovery import make_screen

from pairedscreen import columns as C
from pairedscreen.config import load_config, resolve_section
from pairedscreen.paint import aggregate as A
from pairedscreen.paint.stages import run_profiles
from pairedscreen.pair import stages
from pairedscreen.quality.stage import run_quality
from pairedscreen.rna.pseudobulk import pseudobulk

REPO = Path(__file__).resolve().parents[1]


def _full_config(truth_dir: str, permutations: int, nuclei: str | None = None, cells: str | None = None
                 ) -> dict:
    """The shipped config (every key filled from the schema) with these values, as the datasheet gets it."""
    config = load_config(REPO / "config" / "config.yaml")
    config["truth_dir"], config["quality"]["permutations"] = truth_dir, permutations
    for comp, model in (("nuclei", nuclei), ("cells", cells)):
        if model:
            config["paint"]["segmentation"][comp]["model"] = model
    return config


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    s = make_screen(3)
    wd = tmp_path_factory.mktemp("wd")
    (wd / "config").mkdir()
    reg_path = wd / "config" / "perturbations.tsv"
    s.registry.to_csv(reg_path, sep="\t", index=False)
    res = wd / "results"
    plates = []
    for plate, df in s.paint_cells.groupby("plate"):
        d = res / "paint" / str(plate)
        d.mkdir(parents=True)
        cells = df.rename(columns={"plate": "Metadata_Plate", "well": "Metadata_Well",
                                   "site": "Metadata_Site", "object_id": "Metadata_ObjectNumber",
                                   "perturbation_id": "Metadata_Perturbation", "batch": "Metadata_Batch"})
        cells.to_parquet(d / "cells.parquet", index=False)
        wells = A.aggregate_wells(cells, operation=SCHEMA["profiles.aggregate"]).rename(
            columns={C.N_CELLS: "Metadata_Count_Cells"})
        wells.to_parquet(d / "wells.parquet", index=False)
        idx = pd.DataFrame({"plate": plate, "well": sorted(cells.Metadata_Well.unique()), "site": 1})
        idx = idx.merge(pd.DataFrame({"channel": ["DNA", "ER", "RNA", "AGP", "Mito"]}), how="cross")
        # absolute paths, as the paint arm's image index holds them; real (tiny) files with distinct sizes
        idx["path"] = [str(wd / "raw" / f"{w}_{c}.tif") for w, c in zip(idx.well, idx.channel, strict=True)]
        (wd / "raw").mkdir(exist_ok=True)
        for i, f in enumerate(idx.path):
            Path(f).write_bytes(b"x" * (i + 1))
        idx["sha256"], idx["status"], idx["qc_flag"] = "0" * 64, "ok", False
        idx.to_parquet(d / "image_index.parquet", index=False)
        plates.append(str(plate))
    (res / "rna" / "L1").mkdir(parents=True)
    s.rna_cells.write_h5ad(res / "rna" / "cells.h5ad")
    s.rna_cells.write_h5ad(res / "rna" / "L1" / "cells.h5ad")
    s.rna_cells.write_h5ad(res / "rna" / "L1" / "raw.h5ad")
    (wd / "raw" / "fastq").mkdir(parents=True)
    (wd / "raw" / "fastq" / "L1_gex_R1.fastq.gz").write_bytes(b"@r\nACGT\n+\nIIII\n")
    (res / "rna" / "L1" / "inputs.json").write_text(json.dumps(
        {"library": "L1", "fastqs": {"raw/fastq/L1_gex_R1.fastq.gz": "a" * 64},
         "kb_gex": {"n_processed": 5000}}))
    pb = pseudobulk(s.rna_cells, order=s.registry.perturbation_id.tolist())
    pb.write_h5ad(res / "rna" / "pseudobulk.h5ad")
    active = s.truth.rna_active.to_numpy()
    kd = pd.DataFrame({"perturbation_id": s.truth.perturbation_id, "log2fc": np.where(active, -2.0, 0.0),
                       "padj": np.where(active, 1e-5, 0.8), "remaining_fraction": 0.2})
    kd.to_csv(res / "rna" / "knockdown.tsv", sep="\t", index=False)
    tdir = wd / "truth"
    tdir.mkdir()
    s.truth.to_csv(tdir / "perturbations.tsv", sep="\t", index=False)
    s.paint_wells.to_csv(tdir / "paint_wells.tsv", sep="\t", index=False)
    return {"wd": wd, "res": res, "plates": plates, "screen": s, "registry": reg_path, "truth": tdir}


def test_stages_end_to_end(workdir):
    res, plates, s = workdir["res"], workdir["plates"], workdir["screen"]
    wells = [res / "paint" / p / "wells.parquet" for p in plates]
    cells = [res / "paint" / p / "cells.parquet" for p in plates]
    params = resolve_section("profiles", {
        "aggregate": "median", "normalize": "mad_robustize", "position_correction": True,
        "feature_select": ["variance_threshold", "correlation_threshold", "drop_na_columns", "blocklist"]})
    run_profiles(wells, workdir["registry"], params, res / "paint" / "profiles.parquet",
                 res / "paint" / "consensus.parquet", on_empty=SCHEMA["on_empty"])
    metrics = run_quality(
        res / "paint" / "profiles.parquet", res / "paint" / "consensus.parquet",
        res / "rna" / "cells.h5ad", res / "rna" / "pseudobulk.h5ad", res / "rna" / "knockdown.tsv", wells,
        workdir["registry"],
        resolve_section("quality", {"permutations": 100, "seed": 0, "max_cells": 60, "n_top_genes": 200}),
        workdir["truth"],
        res / "quality" / "metrics.json", res / "quality" / "perturbations.tsv",
        similarity_out=res / "quality" / "similarity.parquet",
        position_out=res / "quality" / "position.parquet", profiles_config=params)
    # the stored tables behind the report's figures are the ones behind the metrics
    sim = pd.read_parquet(res / "quality" / "similarity.parquet")
    off = sim[sim.perturbation_a != sim.perturbation_b]
    ids = sorted(set(sim.perturbation_a))
    assert len(ids) == metrics["concordance"]["n_perturbations"]
    assert len(off) == len(ids) * (len(ids) - 1) // 2
    assert not set(ids) & set(s.registry.loc[s.registry.is_control, "perturbation_id"])
    assert np.isclose(np.corrcoef(off.rna_similarity, off.paint_similarity)[0, 1],
                      metrics["concordance"]["mantel_r"], rtol=1e-9)
    r2 = pd.read_parquet(res / "quality" / "position.parquet")
    for stage in ("before", "after"):
        for plate, v in metrics["position"][stage]["plates"].items():
            feat = r2[(r2.profiles == stage) & (r2.plate == plate)]
            assert len(feat) and np.nanmedian(feat.r2_edge) == v["r2_edge"], (stage, plate)
    for arm in ("rna", "paint"):
        rec = metrics["truth_recovery"][arm]
        assert rec["precision"] >= 0.9 and rec["recall"] >= 0.9, rec
    assert metrics["position"]["before"]["edge_detected"]
    assert not metrics["position"]["after"]["edge_detected"]
    assert metrics["truth_recovery"]["edge"]["correct"]
    assert metrics["batch"]["paint_plate_raw"]["p_value"] < 0.05
    assert metrics["concordance"]["mantel_p"] < 0.05
    table = pd.read_csv(res / "quality" / "perturbations.tsv", sep="\t")
    assert table.perturbation_id.tolist() == s.registry.perturbation_id.tolist()
    assert {"rna_map", "rna_q_value", "paint_map", "paint_q_value", "rna_edistance", "paint_edistance",
            "rna_knockdown_log2fc"} <= set(table.columns)

    paired = res / "paired"
    stages.run_pair(res / "rna" / "pseudobulk.h5ad", res / "paint" / "consensus.parquet",
                     res / "quality" / "perturbations.tsv", workdir["registry"], res / "rna" / "cells.h5ad",
                     cells, paired / "perturbations.h5mu", paired / "rna.h5ad", paired / "paint.h5ad",
                     paired / "cell_index.tsv", paired / "cells.h5mu")
    with md.set_options(pull_on_update=False):   # mudata 0.4 behaviour
        mdata = md.read_h5mu(paired / "perturbations.h5mu")
    order = s.registry.perturbation_id.tolist()
    assert mdata["rna"].obs_names.tolist() == order and mdata["paint"].obs_names.tolist() == order
    counts = s.rna_cells.obs.perturbation.value_counts().reindex(order).tolist()
    assert mdata["rna"].obs["n_cells"].tolist() == counts
    painted = s.paint_cells.perturbation_id.value_counts().reindex(order).tolist()
    assert mdata["paint"].obs["n_cells"].tolist() == painted
    assert "paint_q_value" in mdata.obs and "rna_knockdown_log2fc" in mdata.obs
    index = pd.read_csv(paired / "cell_index.tsv", sep="\t")
    assert (index.modality == "rna").sum() == s.rna_cells.n_obs
    assert (index.modality == "paint").sum() == len(s.paint_cells)
    with md.set_options(pull_on_update=False):   # mudata 0.4 behaviour
        cells_md = md.read_h5mu(paired / "cells.h5mu")
    assert cells_md["rna"].n_obs == s.rna_cells.n_obs and cells_md["paint"].n_obs == len(s.paint_cells)
    assert ad.read_h5ad(paired / "paint.h5ad").obs_names.tolist() == order

    config = _full_config(truth_dir=str(workdir["truth"]), permutations=100)
    inputs = {"h5mu": str(paired / "perturbations.h5mu"), "metrics": str(res / "quality" / "metrics.json"),
              "rna_inputs": [str(res / "rna" / "L1" / "inputs.json")],
              "rna_cells": [str(res / "rna" / "L1" / "cells.h5ad")],
              "raw": [str(res / "rna" / "L1" / "raw.h5ad")],
              "image_index": [str(res / "paint" / p / "image_index.parquet") for p in plates],
              "paint_cells": [str(c) for c in cells], "sheets": [str(workdir["registry"])], "plate_maps": []}
    sheet = stages.run_datasheet(inputs, config, workdir["truth"], ["L1"], plates, res / "datasheet.json",
                                 workdir=workdir["wd"])
    on_disk = json.loads((res / "datasheet.json").read_text())
    assert on_disk == sheet
    assert sheet["counts"]["rna"]["reads"] == 5000
    assert sheet["counts"]["rna"]["cells_kept"] == s.rna_cells.n_obs
    assert sheet["counts"]["paint"]["cells_profiled"] == len(s.paint_cells)
    assert sheet["truth_recovery"]["paint"]["recall"] == metrics["truth_recovery"]["paint"]["recall"]
    assert any(r["role"].startswith("fastq") for r in sheet["inputs"])
    # every input: a path relative to the working directory and its size on disk (FASTQs from inputs.json,
    # images from the image index, which holds absolute paths)
    wd = workdir["wd"]
    assert {r["role"].split(":")[0] for r in sheet["inputs"]} == {"sheets", "fastq", "image"}
    for r in sheet["inputs"]:
        assert not os.path.isabs(r["path"]) and not r["path"].startswith(".."), r
        assert r["bytes"] == os.path.getsize(wd / r["path"]), r
    # the licence ledger names each segmentation model the configuration uses, and the reference
    models = [r for r in sheet["licences"] if r["kind"] == "model"]
    assert [m["name"] for m in models] == [Path(config["paint"]["segmentation"][c]["model"]).name
                                           for c in ("nuclei", "cells")]
    assert {r["name"] for r in sheet["licences"] if r["kind"] == "reference"} == {
        f"reference.{k}" for k, v in config["reference"].items() if v} | {"rna.whitelist"}
    assert all(r["commercial_use"] in ("allowed", "restricted", "unknown") and r["reason"]
               for r in sheet["licences"])
    # no guide stage record in these synthetic cells: an empty record per library, no warning
    assert sheet["counts"]["rna"]["guide_assignment_by_library"] == {"L1": {}} and sheet["warnings"] == []


def test_single_well_screen_uses_sub_well_replicates(workdir, tmp_path):
    """A tiny-like plate (one well per perturbation): replicate mAP falls back to random cell splits."""
    s = workdir["screen"]
    cells = pd.read_parquet(workdir["res"] / "paint" / "P1" / "cells.parquet")
    first = cells.groupby("Metadata_Perturbation")["Metadata_Well"].transform("first")
    ctrl = cells["Metadata_Perturbation"].str.startswith("NTC")
    cells = cells[ctrl | (cells["Metadata_Well"] == first)]
    cells.to_parquet(tmp_path / "cells.parquet", index=False)
    wells = A.aggregate_wells(cells, operation=SCHEMA["profiles.aggregate"]).rename(
        columns={C.N_CELLS: "Metadata_Count_Cells"})
    wells.to_parquet(tmp_path / "wells.parquet", index=False)
    run_profiles([tmp_path / "wells.parquet"], workdir["registry"], resolve_section("profiles"),
                 tmp_path / "profiles.parquet", tmp_path / "consensus.parquet", on_empty=SCHEMA["on_empty"])
    res = workdir["res"]
    metrics = run_quality(
        tmp_path / "profiles.parquet", tmp_path / "consensus.parquet", res / "rna" / "cells.h5ad",
        res / "rna" / "pseudobulk.h5ad", res / "rna" / "knockdown.tsv", [tmp_path / "wells.parquet"],
        workdir["registry"],
        resolve_section("quality", {"permutations": 50, "max_cells": 40, "n_top_genes": 100}), None,
        tmp_path / "metrics.json", tmp_path / "perturbations.tsv", paint_cells=[tmp_path / "cells.parquet"],
        profiles_config=resolve_section("profiles"))
    rep = metrics["replicate"]["paint"]
    assert rep["replicate_unit"].startswith("sub-wells") and rep["n_scored"] == len(s.registry)
    assert metrics["batch"]["paint_plate_raw"]["accuracy"] is None          # one plate: nothing to predict
    assert "truth_recovery" not in metrics


def _html_table(html: str, table_id: str) -> pd.DataFrame:
    """A report table (``<table id="tbl-{table_id}">``) as the text of its cells."""
    import html as html_mod
    import re

    body = html[html.index(f'id="tbl-{table_id}"'):]
    body = body[:body.index("</table>")]
    cols = re.findall(r'<th data-col="([^"]*)"', body)
    rows = [[html_mod.unescape(c) for c in re.findall(r"<td[^>]*>(.*?)</td>", tr, flags=re.S)]
            for tr in re.findall(r"<tr>(.*?)</tr>", body.split("<tbody>", 1)[1], flags=re.S)]
    return pd.DataFrame(rows, columns=cols)


def test_unmeasurable_knockdown_reason_reaches_tsv_h5mu_datasheet_and_report(workdir, tmp_path):
    """Acceptance (issue 21): the screen's registry names each targeting perturbation's real target gene,
    but one (an inert `neither` perturbation) a gene absent from the annotation. From the cells through
    rna_merge, quality, pair, the datasheet and the report, that perturbation carries "target gene not in
    the reference annotation" and no "no"; the planted unexpressed targets (`paint` class: mean 0 in every
    cell) carry "target not detected in control cells"; the planted knockdowns stay significant. A
    perturbation painted in a single well has no replicate mAP: its paint_active is NA with "fewer than 2
    replicates", not "no"."""
    import shutil

    from test_report import _config

    from pairedscreen import report as report_pkg
    from pairedscreen.rna.stages import run_rna_merge

    s, src = workdir["screen"], workdir["res"]
    truth = s.truth.set_index("perturbation_id")
    reg = s.registry.copy()
    targeting = ~reg["is_control"].to_numpy(bool)
    reg.loc[targeting, "target_gene"] = [f"GENE{10 + i:04d}" for i in range(int(targeting.sum()))]
    absent = truth.index[truth["effect_class"] == "neither"][0]
    reg.loc[reg["perturbation_id"] == absent, "target_gene"] = "NOT_IN_ANNOTATION"
    wd = tmp_path / "screen"
    (wd / "config").mkdir(parents=True)
    reg_path = wd / "config" / "perturbations.tsv"
    reg.to_csv(reg_path, sep="\t", index=False)
    res = wd / "results"
    single = truth.index[truth["effect_class"] == "neither"][1]     # painted in one well only: no mAP
    for plate in workdir["plates"]:
        shutil.copytree(src / "paint" / plate, res / "paint" / plate)
        for name in ("wells", "cells"):
            t = pd.read_parquet(res / "paint" / plate / f"{name}.parquet")
            ours = t[C.PERT] == single
            keep = ~ours | ((t[C.WELL] == t.loc[ours, C.WELL].min()) & (plate == workdir["plates"][0]))
            t[keep.to_numpy()].to_parquet(res / "paint" / plate / f"{name}.parquet", index=False)
    shutil.copytree(src / "rna" / "L1", res / "rna" / "L1")
    rna = res / "rna"
    lib = ad.read_h5ad(rna / "L1" / "cells.h5ad")      # + obs columns rna_cells writes, read by the report
    lib.obs["doublet_score"], lib.obs["predicted_doublet"], lib.obs["n_guides"] = 0.0, False, 1
    lib.write_h5ad(rna / "L1" / "cells.h5ad")
    run_rna_merge([rna / "L1" / "cells.h5ad"], reg_path, 0.05, rna / "cells.h5ad", rna / "pseudobulk.h5ad",
                  rna / "knockdown.tsv", rna / "quarantine.tsv", on_empty=SCHEMA["on_empty"])
    text = {"reason": str, "measurable": str, "significant": str}       # the file's own words
    kd = pd.read_csv(rna / "knockdown.tsv", sep="\t", dtype=text, keep_default_na=False,
                     na_values={c: [""] for c in ("log2fc", "pvalue", "padj", "remaining_fraction")})
    kd = kd.set_index("perturbation_id")
    print("\n" + kd[["target_gene", "n_cells", "control_mean_cp10k", "padj", "significant", "measurable",
                     "reason"]].to_string())
    unexpressed = set(truth.index[truth["effect_class"] == "paint"])
    knocked = set(truth.index[truth["effect_class"].isin(["both", "rna"])])
    assert kd.loc[absent, "reason"] == "target gene not in the reference annotation"
    assert kd.loc[absent, "measurable"] == "False" and kd.loc[absent, "significant"] == ""   # NA, not False
    assert np.isnan(kd.loc[absent, "padj"]) and np.isnan(kd.loc[absent, "log2fc"])
    assert set(kd.index[kd["reason"] == "target not detected in control cells"]) == unexpressed
    assert set(kd.index[kd["measurable"] == "True"]) == set(kd.index) - unexpressed - {absent}
    assert set(kd.index[kd["significant"] == "True"]) == knocked          # the planted knockdowns
    assert (kd.loc[kd["measurable"] == "False", "significant"] == "").all()

    wells = [res / "paint" / p / "wells.parquet" for p in workdir["plates"]]
    cells = [res / "paint" / p / "cells.parquet" for p in workdir["plates"]]
    run_profiles(wells, reg_path, resolve_section("profiles"), res / "paint" / "profiles.parquet",
                 res / "paint" / "consensus.parquet", on_empty=SCHEMA["on_empty"])
    q = res / "quality"
    metrics = run_quality(res / "paint" / "profiles.parquet", res / "paint" / "consensus.parquet",
                          rna / "cells.h5ad", rna / "pseudobulk.h5ad", rna / "knockdown.tsv", wells, reg_path,
                          resolve_section("quality", {"permutations": 50, "max_cells": 40,
                                                      "n_top_genes": 100}),
                          None, q / "metrics.json", q / "perturbations.tsv",
                          profiles_config=resolve_section("profiles"))
    row = pd.read_csv(q / "perturbations.tsv", sep="\t").set_index("perturbation_id").loc[single]
    assert row["paint_n_replicates"] == 1 and np.isnan(row["paint_q_value"])
    assert pd.isna(row["paint_active"]) and row["paint_active_reason"] == "fewer than 2 replicates"
    expected = {"target gene not in the reference annotation": 1,
                "target not detected in control cells": len(unexpressed)}
    assert metrics["knockdown"]["not_measurable_by_reason"] == expected
    paired = res / "paired"
    stages.run_pair(rna / "pseudobulk.h5ad", res / "paint" / "consensus.parquet", q / "perturbations.tsv",
                    reg_path, rna / "cells.h5ad", cells, paired / "perturbations.h5mu", paired / "rna.h5ad",
                    paired / "paint.h5ad", paired / "cell_index.tsv")
    with md.set_options(pull_on_update=False):
        obs = md.read_h5mu(paired / "perturbations.h5mu").obs
    assert obs.loc[absent, "rna_knockdown_reason"] == "target gene not in the reference annotation"
    assert obs.loc[absent, "rna_knockdown_significant"] is pd.NA            # missing, not False
    assert not obs.loc[absent, "rna_knockdown_measurable"]
    undetected = obs["rna_knockdown_reason"] == "target not detected in control cells"
    assert set(obs.index[undetected]) == unexpressed
    assert obs.loc[sorted(knocked), "rna_knockdown_significant"].astype(bool).all()
    assert obs.loc[single, "paint_active"] is pd.NA and obs.loc[single, "paint_active_reason"] == \
        "fewer than 2 replicates"

    inputs = {"h5mu": str(paired / "perturbations.h5mu"), "metrics": str(q / "metrics.json"),
              "rna_inputs": [str(rna / "L1" / "inputs.json")], "rna_cells": [str(rna / "L1" / "cells.h5ad")],
              "raw": [str(rna / "L1" / "raw.h5ad")],
              "image_index": [str(res / "paint" / p / "image_index.parquet") for p in workdir["plates"]],
              "paint_cells": [str(c) for c in cells], "sheets": [str(reg_path)], "plate_maps": []}
    # no plate named: the plates here are stand-ins without image QC, the report's plate sections are not
    # asked for (its RNA, knockdown and per-perturbation sections are)
    # pretrained Cellpose weights: the ledger records their non-commercial training data
    config = _full_config(truth_dir="", permutations=50, nuclei="nuclei", cells="cyto3")
    sheet = stages.run_datasheet(inputs, config, None, ["L1"], [], res / "datasheet.json")
    assert sheet["metrics"]["knockdown"]["not_measurable_by_reason"] == expected
    assert sheet["metrics"]["knockdown"]["measurable"] == len(kd) - 1 - len(unexpressed)

    out = tmp_path / "report.html"
    report_pkg.build_report(res, _config(wd), out)
    html = out.read_text()
    table = _html_table(html, "knockdown").set_index("perturbation_id")
    assert table.loc[absent, "significant"] == "not measurable: target gene not in the reference annotation"
    assert (table.loc[sorted(unexpressed), "significant"]
            == "not measurable: target not detected in control cells").all()
    assert (table.loc[sorted(knocked), "significant"] == "yes").all()
    # the licence table: the datasheet's ledger, the pretrained models marked restricted with the reason
    lic = _html_table(html, "licences")
    models = lic[lic.kind == "model"].set_index("name")
    assert models.index.tolist() == ["nuclei", "cyto3"]
    assert (models.commercial_use == "restricted").all() and models.reason.str.len().gt(0).all()
    assert len(lic) == len(sheet["licences"])
    assert any(w.startswith("licence: model cyto3") for w in sheet["warnings"])
    per = _html_table(html, "per-perturbation").set_index("perturbation_id")
    assert per.loc[absent, "rna_knockdown_significant"] == \
        "not measurable: target gene not in the reference annotation"
    assert per.loc[single, "paint_active"] == "not measurable: fewer than 2 replicates"
    assert set(per["paint_active"]) == {"yes", "no", "not measurable: fewer than 2 replicates"}
    assert ("knockdown not measurable for 1 perturbation(s): target gene not in the reference annotation"
            in html)
