"""croissant.json carries Croissant 1.1's Responsible-AI properties filled from the datasheet (inputs,
counts, configuration, licence ledger, warnings) and ``train.croissant``, and mlcroissant validates it and
reads the records back. A small export laid out as the train stages write it, no workflow run."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from pairedscreen import licences
from pairedscreen.config import load_config
from pairedscreen.pair import datasheet as D
from pairedscreen.train.croissant import CROISSANT, CROISSANT_RAI, build_croissant

REPO = Path(__file__).resolve().parents[1]
RAI = ("dataCollection", "dataCollectionType", "dataPreprocessingProtocol", "dataAnnotationProtocol",
       "machineAnnotationTools", "dataLimitations", "dataBiases", "dataUseCases",
       "personalSensitiveInformation", "dataReleaseMaintenancePlan")


def _as_list(v):
    return v if isinstance(v, list) else [v]


@pytest.fixture
def export(tmp_path):
    wd = tmp_path / "wd"
    train = wd / "results" / "train"
    (train / "rna").mkdir(parents=True)
    (train / "paint" / "P1").mkdir(parents=True)
    pd.DataFrame({"perturbation_id": ["TGT01", "NTC"], "n_umis": [1200, 900]}).to_parquet(
        train / "rna" / "cell.obs.parquet", index=False)
    pd.DataFrame({"Metadata_Well": ["A01", "B02"], "area": [310.5, 280.0]}).to_parquet(
        train / "paint" / "P1" / "obs.parquet", index=False)
    pd.DataFrame({"perturbation_id": ["TGT01", "TGT02"], "split": ["train", "test"]}).to_csv(
        train / "splits.tsv", sep="\t", index=False)
    fastq = wd / "raw" / "fastq" / "L1_gex_R1.fastq.gz"
    fastq.parent.mkdir(parents=True)
    fastq.write_bytes(b"@r\nACGT\n+\nIIII\n")
    image = wd / "raw" / "images" / "P1" / "A01_s1_w1.tif"
    image.parent.mkdir(parents=True)
    image.write_bytes(b"\0" * 100)
    return wd, train, [fastq, image]


def test_rai_filled_croissant_validates(export):
    import mlcroissant as mlc

    wd, train, (fastq, image) = export
    config = load_config(REPO / "config" / "config.yaml")
    config["truth_dir"] = ""
    config["paint"]["segmentation"]["cells"]["model"] = "cyto3"   # pretrained: restricted commercial use
    config["train"]["croissant"]["data_biases"] = ["plates imaged on one microscope"]
    prehashed = [{"role": "fastq:L1", "path": "raw/fastq/L1_gex_R1.fastq.gz", "sha256": "a" * 64},
                 {"role": "image:P1", "path": str(image), "sha256": "b" * 64}]   # absolute, as the index
    sheet = D.build_datasheet(config=config, prehashed=prehashed, root=wd, counts={
        "rna": {"reads": 5000, "cells_called": 2, "cells_removed": {"mt": 1}},
        "paint": {"images": 1, "sites": 1}, "pair": {"libraries": ["L1"], "plates": ["P1"]}},
        metrics={"batch": {"paint_plate": {"accuracy": 0.9, "chance": 0.5, "p_value": 0.01}}})
    sheet["licences"] = licences.run_ledger(config, workdir=wd, basedir=REPO, paint=True, rna=True)
    sheet["warnings"] = []
    assert [(r["path"], r["bytes"]) for r in sheet["inputs"]] == [
        ("raw/fastq/L1_gex_R1.fastq.gz", fastq.stat().st_size), ("raw/images/P1/A01_s1_w1.tif", 100)]

    params = config["train"]["croissant"]
    out = train / "croissant.json"
    build_croissant(train, sheet, params, train / "rna" / "cell.obs.parquet",
                    {"P1": train / "paint" / "P1" / "obs.parquet"}, train / "splits.tsv", out)
    doc = json.loads(out.read_text())
    assert doc["@context"]["rai"] == "http://mlcommons.org/croissant/RAI/"
    assert set(_as_list(doc["conformsTo"])) == {CROISSANT, CROISSANT_RAI}
    for key in RAI:
        assert _as_list(doc[f"rai:{key}"]) and all(str(v).strip() for v in _as_list(doc[f"rai:{key}"])), key
    assert _as_list(doc["rai:dataUseCases"]) == params["data_use_cases"]
    assert doc["rai:dataReleaseMaintenancePlan"] == params["data_release_maintenance_plan"]
    assert "Experiments" in _as_list(doc["rai:dataCollectionType"])   # truth_dir empty: not simulated
    # sizes from the datasheet's inputs: 1 FASTQ of its size, 1 image of 100 bytes
    assert f"1 FASTQ files ({fastq.stat().st_size} bytes)" in doc["rai:dataCollection"]
    assert "1 images (100 bytes)" in doc["rai:dataCollection"]
    tools = " ".join(_as_list(doc["rai:machineAnnotationTools"]))
    assert "cyto3" in tools and "pairedscreen_nuclei" in tools and "cellpose" in tools
    limits = " ".join(_as_list(doc["rai:dataLimitations"]))
    assert "model cyto3: commercial use restricted" in limits
    biases = _as_list(doc["rai:dataBiases"])
    assert "plates imaged on one microscope" in biases and any("paint_plate" in b for b in biases)

    ds = mlc.Dataset(jsonld=str(out))   # raises on a validation error
    assert ds.metadata.data_use_cases == params["data_use_cases"]
    assert "cyto3" in " ".join(ds.metadata.machine_annotation_tools)
    got = pd.DataFrame(list(ds.records("perturbations")))
    assert [v.decode() for v in got["perturbations/perturbation_id"]] == ["TGT01", "TGT02"]
