"""The licence ledger (pairedscreen.licences): every model the configuration names is on record with a
commercial-use verdict and a reason, the tools' licences agree with what their installed packages declare,
and the reference data is recorded as simulated, stated or unknown."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from pairedscreen import licences as L
from pairedscreen.config import load_config

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def config() -> dict:
    return load_config(REPO / "config" / "config.yaml")


def _models(rows: list[dict]) -> dict[str, dict]:
    return {r["name"]: r for r in rows if r["kind"] == "model"}


@pytest.mark.parametrize("nuclei,cells", [(None, None), ("nuclei", "cyto3"), ("cyto2", "cpsam")])
def test_ledger_names_every_model_the_config_uses(config, tmp_path, nuclei, cells):
    seg = config["paint"]["segmentation"]
    for comp, model in (("nuclei", nuclei), ("cells", cells)):
        if model:
            seg[comp]["model"] = model
    rows = L.run_ledger(config, workdir=tmp_path, basedir=REPO, paint=True, rna=True)
    models = _models(rows)
    assert list(models) == [Path(seg[c]["model"]).name for c in ("nuclei", "cells")]
    for r in rows:
        assert r["commercial_use"] in L.COMMERCIAL_USE and r["reason"].strip() and r["licence"].strip()
    if nuclei is None:   # the shipped demo models: random initialisation on simulated images (their sidecars)
        for m in models.values():
            side = json.loads((REPO / (m["path"] + ".json")).read_text())
            assert side["pretrained_model"] is None and side["training_data"]["spec"]
            assert m["commercial_use"] == "allowed"
    else:                # Cellpose's pretrained weights: trained on non-commercial data
        assert {m["commercial_use"] for m in models.values()} == {"restricted"}
        assert all("non-commercial" in m["training_data_licence"] for m in models.values())
        assert len(L.restricted(rows)) >= 2
    assert not _models(L.run_ledger(config, workdir=tmp_path, basedir=REPO, paint=False, rna=True))


def test_model_files_outside_the_ledger(config, tmp_path):
    # a model trained by `pairedscreen train-segmentation` under a new name: described from its sidecar
    mine = tmp_path / "models" / "my_cells"
    mine.parent.mkdir()
    mine.write_bytes(b"weights")
    shutil.copy(REPO / "resources" / "models" / "pairedscreen_cells.json", str(mine) + ".json")
    row = L.model_entry("cells", "models/my_cells", workdir=tmp_path, basedir=REPO)
    assert (row["name"], row["path"], row["commercial_use"]) == ("my_cells", "models/my_cells", "allowed")
    # fine-tuned from a pretrained model: inherits its terms, unknown here, with the reason
    side = json.loads((REPO / "resources" / "models" / "pairedscreen_cells.json").read_text())
    side["pretrained_model"] = "cyto3"
    Path(str(mine) + ".json").write_text(json.dumps(side))
    row = L.model_entry("cells", "models/my_cells", workdir=tmp_path, basedir=REPO)
    assert row["commercial_use"] == "unknown" and "cyto3" in row["reason"]
    # no record at all
    row = L.model_entry("cells", str(tmp_path / "nowhere.pt"), workdir=tmp_path, basedir=REPO)
    assert row["commercial_use"] == "unknown" and row["licence"] == "unknown" and row["reason"]


def _spdx_family(declared: str) -> str:
    d = declared.upper()
    for fam in ("GPL", "APACHE", "MIT", "BSD"):
        if fam in d or (fam == "GPL" and "GNU GENERAL PUBLIC" in d):
            return fam
    return ""


def test_tool_licences_agree_with_their_package_metadata():
    """The ledger's licence of each installed tool is the one its package declares (an SPDX id exactly;
    a free-text or classifier licence by family), and its version is the installed one."""
    from importlib.metadata import version

    ledger = L.load_ledger()
    rows = L.tool_entries()
    assert {r["name"] for r in rows} >= {"pairedscreen", "scanpy", "anndata", "cellpose", "kb-python"}
    checked = 0
    for r in rows:
        dist = ledger["tools"][r["name"]]["distribution"]
        assert version(dist) in r["version"]
        declared = L.declared_licence(dist)
        if not declared or r["name"] == "torch":   # torch declares the expression of its bundled parts
            continue
        if " " not in declared and ("-" in declared or declared == "MIT"):   # an SPDX id
            assert r["licence"] == declared, (r["name"], declared)
        else:
            assert _spdx_family(r["licence"]) == _spdx_family(declared) != "", (r["name"], declared)
        checked += 1
    assert checked >= 8


def test_reference_entries(config, tmp_path):
    config["truth_dir"] = "truth"
    rows = L.reference_entries(config, workdir=tmp_path)
    assert {r["name"] for r in rows} == {f"reference.{k}" for k, v in config["reference"].items() if v} | \
        {"rna.whitelist"}
    assert {r["commercial_use"] for r in rows} == {"allowed"}
    config["truth_dir"] = ""
    assert {(r["licence"], r["commercial_use"]) for r in L.reference_entries(config, workdir=tmp_path)} == \
        {("unknown", "unknown")}
    config["train"]["croissant"]["reference_licence"] = "Ensembl (no restrictions)"
    rows = L.reference_entries(config, workdir=tmp_path)
    assert {r["licence"] for r in rows} == {"Ensembl (no restrictions)"} and all(r["reason"] for r in rows)
