"""End to end: the whole workflow on the tiny simulated screen, then a plate lands and only its work runs."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from workdir import planned_jobs, snakemake

pytestmark = pytest.mark.e2e

AGGREGATE_RULES = {"profiles", "quality", "pair", "datasheet", "report", "all"}


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    """Tiny screen simulated with 2 plates; the run first knows only plate P1."""
    from pairedscreen.simulate import simulate

    wd = simulate(tmp_path_factory.mktemp("e2e") / "screen", preset="tiny", overrides={"paint.n_plates": 2})
    plates = pd.read_csv(wd / "config" / "plates.tsv", sep="\t", dtype=str)
    assert list(plates.plate_id) == ["P1", "P2"]
    plates.iloc[:1].to_csv(wd / "config" / "plates.tsv", sep="\t", index=False)
    res = snakemake(wd, "--cores", "2")
    assert res.returncode == 0, (res.stdout + res.stderr)[-6000:]
    return wd, plates


def test_paired_modalities_share_registry_order(finished_run):
    import mudata

    wd, _ = finished_run
    mdata = mudata.read_h5mu(wd / "results" / "paired" / "perturbations.h5mu")
    registry = pd.read_csv(wd / "config" / "perturbations.tsv", sep="\t", dtype=str)
    assert set(mdata.mod) >= {"rna", "paint"}
    expected = list(registry.perturbation_id)
    assert list(mdata.mod["rna"].obs_names) == expected
    assert list(mdata.mod["paint"].obs_names) == expected
    assert list(mdata.obs_names) == expected
    is_ctrl = registry.is_control.str.lower().eq("true").to_numpy()
    assert np.array_equal(mdata.obs["is_control"].astype(bool).to_numpy(), is_ctrl)


def test_paint_n_cells_equals_cell_level_counts(finished_run):
    import mudata

    wd, _ = finished_run
    mdata = mudata.read_h5mu(wd / "results" / "paired" / "perturbations.h5mu")
    cells = pd.read_parquet(wd / "results" / "paint" / "P1" / "cells.parquet",
                            columns=["Metadata_Perturbation"])
    counts = cells["Metadata_Perturbation"].value_counts()
    n = mdata.mod["paint"].obs["n_cells"]
    for pert in mdata.obs_names:
        assert int(np.nan_to_num(n[pert])) == int(counts.get(pert, 0)), pert


def test_rna_n_cells_equals_cell_level_counts(finished_run):
    import anndata as ad
    import mudata

    wd, _ = finished_run
    mdata = mudata.read_h5mu(wd / "results" / "paired" / "perturbations.h5mu")
    obs = ad.read_h5ad(wd / "results" / "rna" / "cells.h5ad", backed="r").obs
    # the documented rule, applied here independently: QC pass, not a predicted doublet, one perturbation
    used = obs[obs["pass_qc"].astype(bool) & ~obs["predicted_doublet"].astype(bool)]
    counts = used["perturbation"].astype(str).value_counts()
    n = mdata.mod["rna"].obs["n_cells"]
    for pert in mdata.obs_names:
        assert int(np.nan_to_num(n[pert])) == int(counts.get(pert, 0)), pert


def test_new_plate_runs_only_its_own_and_aggregate_jobs(finished_run):
    wd, plates = finished_run
    before = {p: p.stat().st_mtime_ns for p in (wd / "results").rglob("*") if p.is_file()}
    plates.to_csv(wd / "config" / "plates.tsv", sep="\t", index=False)   # plate P2 lands

    dry = snakemake(wd, "-n")
    assert dry.returncode == 0, (dry.stdout + dry.stderr)[-4000:]
    jobs = planned_jobs(dry.stdout)
    assert jobs, dry.stdout[-3000:]
    per_plate = [(r, w) for r, w in jobs if "plate" in w]
    other = {r for r, w in jobs if "plate" not in w}
    assert per_plate and all(w["plate"] == "P2" for _, w in per_plate), per_plate
    assert {r for r, _ in per_plate} >= {"paint_index", "paint_illum", "paint_segment", "paint_features",
                                           "paint_plate"}
    assert other <= AGGREGATE_RULES, other
    assert not any("library" in w for _, w in jobs)

    res = snakemake(wd, "--cores", "2")
    assert res.returncode == 0, (res.stdout + res.stderr)[-6000:]
    untouched = [p for p in before if "/paint/P1/" in str(p) or "/rna/L" in str(p)]
    assert untouched
    changed = [str(p) for p in untouched if p.stat().st_mtime_ns != before[p]]
    assert not changed, changed
    assert (wd / "results" / "paint" / "P2" / "wells.parquet").exists()


def test_report_of_the_run(finished_run, tmp_path):
    """The workflow's own report.html: loads offline with no console errors, and the data behind its plate
    heatmap and knockdown chart show the planted edge effect and knockdowns."""
    import test_report as checks
    import yaml
    from browser import find_chromium, load_page

    from pairedscreen.report import collect_report_data

    wd, _ = finished_run
    html = wd / "results" / "report.html"
    page = load_page(find_chromium(), html, tmp_path / "overview.png")
    for sid in ("overview", "rna", "paint", "paired"):
        assert f'id="{sid}"' in page.dom, sid
    assert not page.console_errors, page.console_errors
    assert not page.proxy_requests, page.proxy_requests
    config = yaml.safe_load((wd / "config" / "config.yaml").read_text())
    built = {"data": collect_report_data(wd / "results", config, truth_dir=wd / "truth")}
    checks.test_plate_heatmap_shows_planted_edge_effect(built, wd)
    checks.test_knockdown_chart_shows_planted_knockdowns(built, wd)


def test_datasheet_truth_recovery(finished_run):
    """The run itself writes truth recovery into the datasheet (a truth folder is configured)."""
    import json

    wd, _ = finished_run
    sheet = json.loads((wd / "results" / "datasheet.json").read_text())
    rna = sheet["truth_recovery"]["rna"]
    assert rna["recall"] >= 0.9 and rna["precision"] >= 0.9, rna
    assert sheet["truth_recovery"]["rna"]["controls_called"] == 0
    assert sheet["truth_recovery"]["paint"]["controls_called"] == 0
    assert sheet["truth_recovery"]["edge"]["detected"] is True
    # concordance is scored over exactly the planted shared-program (`both`) perturbations; the tiny
    # preset plants one pair, too few for a permutation test (statistics None, not significant)
    truth = pd.read_csv(wd / "truth" / "perturbations.tsv", sep="\t")
    conc = sheet["truth_recovery"]["concordance"]
    assert conc["perturbations"] == truth.loc[truth.effect_class == "both", "perturbation_id"].tolist()
    assert conc["n_perturbations"] == 2 and conc["mantel_p"] is None and conc["significant"] is False
    assert sheet["metrics"]["concordance"]["active_in_both"]["n_perturbations"] == len(
        sheet["metrics"]["concordance"]["active_in_both"]["perturbations"])


def test_snakemake_report(finished_run, tmp_path):
    """`snakemake --report` works: the usual provenance report, with the rules' report() outputs."""
    wd, _ = finished_run
    out = tmp_path / "snakemake_report.html"
    res = snakemake(wd, "--report", str(out))
    assert res.returncode == 0, (res.stdout + res.stderr)[-3000:]
    html = out.read_text(errors="replace")
    assert "perturbations.h5mu" in html and "knockdown.tsv" in html
