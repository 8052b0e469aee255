"""Datasheet: assembly, checksums, stage counts, validation against workflow/schemas/datasheet.schema.json."""

from __future__ import annotations

import hashlib
import json

import jsonschema
import numpy as np
import pandas as pd
import pytest
from config_values import SCHEMA

from pairedscreen.pair import datasheet as D
from pairedscreen.quality.summary import summarize_hits


def _counts() -> dict:
    obs = pd.DataFrame({"perturbation": ["a", "b", "unassigned", "multiple", "a", "NTC"],
                        "pass_qc": [True, True, True, True, False, True],
                        "qc_fail_mt": [False, False, False, False, True, False],
                        "qc_fail_counts": [False, False, False, False, True, False],
                        "predicted_doublet": [False, False, False, True, False, False],
                        "library": ["L1", "L1", "L2", "L2", "L2", "L2"]})
    rna = D.rna_stage_counts(obs, reads=12345, barcodes=900)
    idx = pd.DataFrame({"plate": "P1", "well": ["A01"] * 5 + ["A02"] * 5, "site": 1,
                        "channel": ["DNA", "ER", "RNA", "AGP", "Mito"] * 2,
                        "status": ["ok"] * 9 + ["quarantined"],
                        "qc_flag": [False] * 7 + [True] + [False] * 2})
    paint = D.paint_stage_counts(idx, objects=250, cells_profiled=240, wells_profiled=2)
    return {"rna": rna, "paint": paint}


def test_stage_counts():
    c = _counts()
    rna, paint = c["rna"], c["paint"]
    assert rna["cells_called"] == 6 and rna["cells_kept"] == 3          # a, b, NTC
    # guide losses among the QC-passing singlets, as the ledger counts them: the "multiple" cell is a
    # predicted doublet (counted there), the "unassigned" one passes QC
    assert rna["cells_removed"] == {"mt": 1, "counts": 1, "doublet": 1, "unassigned_guide": 1,
                                    "multiple_guides": 0}
    assert rna["cells_kept_by_library"] == {"L1": 2, "L2": 1}
    assert paint["images"] == 10 and paint["images_quarantined"] == 1
    assert paint["sites"] == 2 and paint["sites_flagged"] == 1


def test_datasheet_valid_and_hashes(tmp_path):
    f = tmp_path / "perturbations.tsv"
    f.write_text("perturbation_id\tis_control\nTGT01\tFalse\n")
    sub = tmp_path / "plate_maps"
    sub.mkdir()
    (sub / "P1.tsv").write_text("well\tperturbation_id\nA01\tTGT01\n")
    config = {"truth_dir": "", "quality": {"permutations": 1000, "seed": 0},
              "profiles": {"aggregate": "median"}}
    calls = pd.DataFrame({"perturbation": ["TGT01", "NTC_1"], "is_control": [False, True],
                          "mean_average_precision": [0.9, np.nan], "p_value": [0.001, np.nan],
                          "q_value": [0.002, np.nan]})
    metrics = {
        "replicate": {"paint": summarize_hits(calls, alpha=SCHEMA["quality.alpha"])},
        "position": {"before": {"edge_detected": True, "median_r2_edge": 0.3, "plates": {}},
                     "after": {"edge_detected": False, "median_r2_edge": np.float64(0.01), "plates": {}}},
        "batch": {"paint_plate": {"n_samples": 10, "n_classes": 2, "accuracy": 0.9, "chance": 0.5,
                                  "p_value": 0.01}},
        "concordance": {"n_perturbations": 20, "mantel_r": 0.4, "mantel_p": 0.001, "cka": 0.7,
                        "cka_p": 0.002},
    }
    sheet = D.build_datasheet(config=config, inputs={"registry": f, "plate_maps": sub}, counts=_counts(),
                              metrics=metrics)
    D.validate_datasheet(sheet)
    json.dumps(sheet, allow_nan=False)                                    # plain JSON, NaN -> null
    assert sheet["inputs"][0]["sha256"] == hashlib.sha256(f.read_bytes()).hexdigest()
    assert [i["role"] for i in sheet["inputs"]] == ["registry", "plate_maps"]
    canonical = json.dumps(config, sort_keys=True, separators=(",", ":"))
    assert sheet["config_sha256"] == hashlib.sha256(canonical.encode()).hexdigest()
    for pkg in ("python", "pairedscreen", "snakemake", "scanpy", "anndata", "mudata", "numpy", "torch",
                "cellpose", "kb-python"):
        assert pkg in sheet["software"]
    assert sheet["metrics"]["replicate"]["paint"]["n_hits"] == 1
    assert sheet["metrics"]["replicate"]["paint"]["per_perturbation"][1]["q_value"] is None
    # deterministic: same inputs, same sheet
    again = D.build_datasheet(config=config, inputs={"registry": f, "plate_maps": sub}, counts=_counts(),
                              metrics=metrics)
    assert again == sheet


def test_truth_dir_requires_truth_recovery(tmp_path):
    config = {"truth_dir": "truth"}
    with pytest.raises(ValueError, match="truth_recovery"):
        D.build_datasheet(config=config)
    # the schema enforces it too
    sheet = D.build_datasheet(config={"truth_dir": ""})
    sheet["config"]["truth_dir"] = "truth"
    with pytest.raises(jsonschema.ValidationError):
        D.validate_datasheet(sheet)
    rec = {"rna": {"precision": 1.0, "recall": 0.95}, "paint": {"precision": None, "recall": 0.0},
           "edge": {"planted": True, "detected": True, "correct": True, "edge_definition_agreement": 1.0}}
    ok = D.build_datasheet(config=config, truth_recovery=rec)
    D.validate_datasheet(ok)
    bad = json.loads(json.dumps(ok))
    bad["truth_recovery"]["rna"]["precision"] = 1.5
    with pytest.raises(jsonschema.ValidationError):
        D.validate_datasheet(bad)


def test_schema_is_valid_draft_2020_12(repo):
    schema = json.loads((repo / "workflow" / "schemas" / "datasheet.schema.json").read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    assert D.schema_path() == repo / "workflow" / "schemas" / "datasheet.schema.json"
