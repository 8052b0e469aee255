"""Empty and unusable data: never a crash downstream, either an error naming the unit and the fix or (with
``on_empty: quarantine``) a recorded quarantine, with the remaining plates/libraries still paired.

One tiny simulated screen (2 plates, 2 libraries) carries every fault at once and runs once: P2's images
are all unreadable (``on_bad_image: quarantine`` quarantines every site), L2's cells are all mitochondrial
(every cell fails ``max_pct_mt``), and TGT99 is registered but carried by no read and no well. The last
test flips ``on_empty`` to ``error`` on the same working directory. A plate whose usable sites hold no
cell, all-NA features and feature selection are checked on the stage functions. (A plate of blank images
no longer reaches segmentation: image QC flags its sites and illumination stops with the flags and the
fix, tests/test_paint_qc_illum.py.)
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from config_values import SCHEMA
from data_faults import add_unused_perturbation, corrupt_plate, mito_library
from workdir import snakemake

from pairedscreen import quarantine
from pairedscreen.stale import clear_before_run

pytestmark = pytest.mark.e2e


def _set_config(wd, **values):
    path = wd / "config" / "config.yaml"
    conf = yaml.safe_load(path.read_text())
    for key, value in values.items():
        node = conf
        *parents, leaf = key.split(".")
        for p in parents:
            node = node[p]
        node[leaf] = value
    path.write_text(yaml.safe_dump(conf, sort_keys=False))


@pytest.fixture(scope="module")
def faulted_run(tmp_path_factory):
    from pairedscreen.simulate import simulate

    wd = simulate(tmp_path_factory.mktemp("faults") / "screen", preset="tiny",
                  overrides={"paint.n_plates": 2, "rna.n_libraries": 2})
    assert corrupt_plate(wd, "P2")
    assert mito_library(wd, "L2") > 0
    add_unused_perturbation(wd, "TGT99")
    _set_config(wd, **{"paint.on_bad_image": "quarantine", "on_empty": "quarantine"})
    res = snakemake(wd, "--cores", "2")
    assert res.returncode == 0, (res.stdout + res.stderr)[-8000:]
    sheet = json.loads((wd / "results" / "datasheet.json").read_text())
    return wd, sheet


def _records(sheet, what):
    return {r["id"]: r for r in sheet["quarantine"] if r["what"] == what}


def _report(wd) -> str:
    return (wd / "results" / "report.html").read_text()


def test_plate_with_every_site_quarantined_is_quarantined(faulted_run):
    wd, sheet = faulted_run
    rec = _records(sheet, "plate")["P2"]
    assert rec["arm"] == "paint" and rec["reason"].startswith("every site is quarantined")
    assert "image_index.parquet" in rec["fix"]
    index = pd.read_parquet(wd / "results" / "paint" / "P2" / "image_index.parquet")
    assert (index["status"] == "quarantined").all()
    assert not list((wd / "results" / "paint" / "P2" / "illum").glob("*.npy"))
    wells = pd.read_parquet(wd / "results" / "paint" / "P2" / "wells.parquet")
    assert wells["Metadata_Count_Cells"].sum() == 0
    assert "plate P2 quarantined" in _report(wd)


def test_library_without_cells_after_qc_is_quarantined(faulted_run):
    import anndata as ad

    wd, sheet = faulted_run
    rec = _records(sheet, "library")["L2"]
    obs = ad.read_h5ad(wd / "results" / "rna" / "L2" / "cells.h5ad", backed="r").obs
    assert len(obs) > 0 and not obs["pass_qc"].astype(bool).any()      # called, then all failed QC
    assert f"{len(obs)} cells called, 0 pass QC" in rec["reason"]
    assert "rna.qc" in rec["fix"]
    assert "library L2 quarantined" in _report(wd)


def test_perturbation_without_cells_is_recorded(faulted_run):
    import mudata

    wd, sheet = faulted_run
    recs = [r for r in sheet["quarantine"] if r["what"] == "perturbation" and r["id"] == "TGT99"]
    assert {r["arm"] for r in recs} == {"rna", "paint"}
    mdata = mudata.read_h5mu(wd / "results" / "paired" / "perturbations.h5mu")
    assert not mdata.obs.loc["TGT99", "in_rna"] and not mdata.obs.loc["TGT99", "in_paint"]
    assert np.isnan(mdata.mod["rna"]["TGT99"].X).all()
    assert "TGT99" in _report(wd)


def test_remaining_plate_and_library_still_paired(faulted_run):
    import anndata as ad
    import mudata

    wd, sheet = faulted_run
    assert sheet["arms"]["paint"]["used"] == ["P1"] and sheet["arms"]["rna"]["used"] == ["L1"]
    profiles = pd.read_parquet(wd / "results" / "paint" / "profiles.parquet")
    assert set(profiles["Metadata_Plate"]) == {"P1"}
    mdata = mudata.read_h5mu(wd / "results" / "paired" / "perturbations.h5mu")
    cells = pd.read_parquet(wd / "results" / "paint" / "P1" / "cells.parquet",
                            columns=["Metadata_Perturbation"])["Metadata_Perturbation"].value_counts()
    obs = ad.read_h5ad(wd / "results" / "rna" / "L1" / "cells.h5ad", backed="r").obs
    used = obs[obs["pass_qc"].astype(bool) & ~obs["predicted_doublet"].astype(bool)]
    rna_counts = used["perturbation"].astype(str).value_counts()
    for pert in mdata.obs_names:
        assert int(mdata.mod["paint"].obs.loc[pert, "n_cells"]) == int(cells.get(pert, 0)), pert
        assert int(mdata.mod["rna"].obs.loc[pert, "n_cells"]) == int(rna_counts.get(pert, 0)), pert
    registered = pd.read_csv(wd / "config" / "perturbations.tsv", sep="\t").perturbation_id
    assert mdata.obs.loc[registered[registered != "TGT99"], ["in_rna", "in_paint"]].all(axis=None)
    merged = ad.read_h5ad(wd / "results" / "rna" / "cells.h5ad", backed="r").obs   # nothing dropped
    assert set(merged["library"].astype(str)) == {"L1", "L2"}
    assert not merged.loc[merged["library"].astype(str) == "L2", "pass_qc"].astype(bool).any()
    held = pd.read_csv(wd / "results" / "paint" / "quarantine.tsv", sep="\t")
    assert set(held["id"]) == {"P2"}


def test_on_empty_error_names_each_unit_and_leaves_no_stale_output(faulted_run):
    """Same screen, ``on_empty: error``: the aggregate steps stop naming P2 and L2 with their fixes,
    and no output of the earlier (successful) run survives downstream of them."""
    wd, _ = faulted_run
    per_plate = {p: p.read_bytes() for p in (wd / "results" / "paint" / "P1").rglob("*") if p.is_file()}
    _set_config(wd, on_empty="error")
    res = snakemake(wd, "--cores", "2", "--keep-going")
    assert res.returncode != 0
    logs = "".join((wd / "logs" / rule / "all.log").read_text() for rule in ("profiles", "rna_merge"))
    for unit, fix in (("plate P2: every site is quarantined", "image_index.parquet"),
                      ("library L2: no usable cell", "rna.qc")):
        assert unit in logs and fix in logs, (unit, logs[-3000:])
    assert "on_empty: quarantine" in logs
    for key in ("paired", "quality"):
        left = [str(p) for p in (wd / "results" / key).rglob("*") if p.is_file()]
        assert not left, left
    for f in ("datasheet.json", "report.html", "paint/profiles.parquet", "rna/cells.h5ad"):
        assert not (wd / "results" / f).exists(), f
    assert {p: p.read_bytes() for p in per_plate} == per_plate       # per-plate work kept, not redone


# ------------------------------------------------------------------------------------ stage functions
def _wells(plate: str, n: int, rng, na: bool = False, cells: int = 10) -> pd.DataFrame:
    x = np.full((n, 3), np.nan) if na else rng.normal(size=(n, 3))
    df = pd.DataFrame(x, columns=["Cells_AreaShape_Area", "Nuclei_Intensity_MeanIntensity_DNA",
                                  "Cells_Texture_Contrast_ER_3_00_256"])
    df.insert(0, "Metadata_Plate", plate)
    df.insert(1, "Metadata_Well", [f"B{i + 2:02d}" for i in range(n)])
    df.insert(2, "Metadata_Perturbation", ["NTC_1" if i % 2 else "TGT01" for i in range(n)])
    df.insert(3, "Metadata_Count_Cells", cells)
    df.insert(4, "Metadata_Count_Sites", 1)
    df.insert(5, "Metadata_Count_SitesUsable", 1)
    return df


def _profile_params(**over):
    """The resolved ``profiles:`` block: the schema's defaults (pairedscreen.config) with ``over``."""
    from pairedscreen.config import load_config

    conf = yaml.safe_load((Path(__file__).resolve().parents[1] / "config" / "config.yaml").read_text())
    return {**load_config(conf)["profiles"], **over}


@pytest.fixture
def registry(tmp_path):
    p = tmp_path / "perturbations.tsv"
    p.write_text("perturbation_id\tperturbation_type\ttarget_gene\tis_control\tcontrol_type\n"
                 "TGT01\tCRISPRi\tTGT01\tfalse\t\nNTC_1\tcontrol\t\ttrue\tnon-targeting\n")
    return p


def test_plate_without_cells(tmp_path, registry):
    """Usable sites but no cell segmented (e.g. wrong segmentation model): named with the fix, or left out."""
    from pairedscreen.paint.stages import usable_plates
    from pairedscreen.sheets import read_registry

    rng = np.random.default_rng(2)
    files = []
    for plate, cells in (("P1", 10), ("P7", 0)):
        (tmp_path / plate).mkdir()
        w = _wells(plate, 12, rng, na=cells == 0, cells=cells)    # no cell -> features NaN, as aggregated
        w.to_parquet(tmp_path / plate / "wells.parquet")
        files.append(tmp_path / plate / "wells.parquet")
    msg = r"plate P7: no cell segmented in 12 usable site\(s\). Fix: .*paint.segmentation"
    with pytest.raises(quarantine.EmptyDataError, match=msg):
        usable_plates(files, read_registry(registry), on_empty="error")
    usable, held = usable_plates(files, read_registry(registry), on_empty="quarantine")
    assert usable == [files[0]] and held["id"].tolist() == ["P7"]


def test_plate_with_all_features_na(tmp_path, registry):
    from pairedscreen.paint.stages import run_profiles, usable_plates
    from pairedscreen.sheets import read_registry

    rng = np.random.default_rng(0)
    files = []
    for plate, na in (("P1", False), ("P9", True)):
        (tmp_path / plate).mkdir()
        _wells(plate, 12, rng, na=na).to_parquet(tmp_path / plate / "wells.parquet")
        files.append(tmp_path / plate / "wells.parquet")
    with pytest.raises(quarantine.EmptyDataError) as err:
        usable_plates(files, read_registry(registry), on_empty="error")
    msg = str(err.value)
    assert "plate P9: every feature is NA in all 12 well(s) with cells" in msg and "Fix:" in msg
    assert "P1" not in msg.replace("P9", "") and "on_empty: quarantine" in msg
    out = tmp_path / "out"
    info = run_profiles(files, registry, _profile_params(feature_select=["drop_na_columns"]),
                        out / "profiles.parquet", out / "consensus.parquet", out / "quarantine.tsv",
                        on_empty="quarantine")
    prof = pd.read_parquet(out / "profiles.parquet")
    assert set(prof["Metadata_Plate"]) == {"P1"} and info["feature_selection"]["n_features_out"] == 3
    assert info["n_plates"] == 1
    held = quarantine.read_table(out / "quarantine.tsv")
    assert held[["what", "id"]].values.tolist() == [["plate", "P9"]]


def test_feature_selection_removing_every_feature_is_an_error(tmp_path, registry):
    from pairedscreen.paint.stages import run_profiles

    rng = np.random.default_rng(1)
    w = _wells("P1", 12, rng)
    feats = [c for c in w.columns if not c.startswith("Metadata_")]
    w[feats] = 1.0                                     # constant in every well: no variance
    (tmp_path / "P1").mkdir()
    w.to_parquet(tmp_path / "P1" / "wells.parquet")
    out = tmp_path / "out"
    with pytest.raises(quarantine.EmptyDataError, match="removed every one of the 3 measured features"):
        run_profiles([tmp_path / "P1" / "wells.parquet"], registry,
                     _profile_params(feature_select=["variance_threshold"], normalize="standardize"),
                     out / "profiles.parquet", out / "consensus.parquet", out / "quarantine.tsv",
                     on_empty=SCHEMA["on_empty"])
    assert not out.exists() or not any(out.iterdir())


def test_every_unit_unusable_stops_even_when_quarantining():
    recs = [quarantine.record("rna", "library", "L1", "no cell called", "fix it")]
    with pytest.raises(quarantine.EmptyDataError, match="no usable library left in the rna arm"):
        quarantine.decide(recs, ["L1"], "quarantine", arm="rna", unit="library")
    held = quarantine.decide(recs, ["L1", "L2"], "quarantine", arm="rna", unit="library")
    assert held["id"].tolist() == ["L1"]
    with pytest.raises(quarantine.EmptyDataError, match="library L1: no cell called. Fix: fix it"):
        quarantine.decide(recs, ["L1", "L2"], "error", arm="rna", unit="library")


def test_stale_outputs_removed_before_a_run(tmp_path):
    """Outputs the run rewrites go when it starts; files under results/paired or results/quality that no
    job of the run declares (an arm or optional output since gone) go too; the rest stays."""
    for rel in ("results/paired/perturbations.h5mu", "results/paired/paint.h5ad", "results/paired/cells.h5mu",
                "results/quality/metrics.json", "results/paint/P1/wells.parquet", "results/rna/L1/kb_gex/x"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text("old")
    removed = clear_before_run(
        rerun_outputs=["results/quality/metrics.json", "results/rna/L1/kb_gex"],
        declared=["results/paired/perturbations.h5mu", "results/quality/metrics.json",
                  "results/paint/P1/wells.parquet", "results/rna/L1/kb_gex"], root=tmp_path)
    assert sorted(removed) == ["results/paired/cells.h5mu", "results/paired/paint.h5ad",
                               "results/quality/metrics.json", "results/rna/L1/kb_gex"]
    assert (tmp_path / "results/paired/perturbations.h5mu").exists()
    assert (tmp_path / "results/paint/P1/wells.parquet").exists()
