"""Either arm alone, then both: a screen whose plates land first runs the Cell Painting arm to its finished
outputs and a report that says the RNA arm is missing; when the RNA libraries land, the rerun runs exactly
the RNA jobs and the aggregates, and leaves every per-plate file byte-identical."""

from __future__ import annotations

import hashlib
import json

import pandas as pd
import pytest
from workdir import minimal_workdir, planned_jobs, snakemake

pytestmark = pytest.mark.e2e

PAINT_RULES = {"paint_index", "paint_illum", "paint_segment", "paint_features", "paint_plate"}
RNA_RULES = {"kb_ref", "kb_ref_guides", "rna_fastq_check", "kb_count_gex", "kb_count_guide", "rna_load",
             "rna_cells", "rna_summary", "rna_merge", "rna_de", "rna_de_merge"}
PAIR_RULES = {"quality", "pair", "datasheet", "report", "all"}
SPLIT_RULES = {"train_splits", "train_batch_holdout"}     # from the sheets: the pair carries the splits


def _digests(folder) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def plates_first(tmp_path_factory):
    """The tiny screen with its RNA libraries not landed yet (rna_libraries.tsv: header only), run."""
    from pairedscreen.simulate import simulate

    wd = simulate(tmp_path_factory.mktemp("arms") / "screen", preset="tiny")
    sheet = wd / "config" / "rna_libraries.tsv"
    libraries = sheet.read_text()
    sheet.write_text(libraries.splitlines()[0] + "\n")
    dry = snakemake(wd, "-n")
    assert dry.returncode == 0, (dry.stdout + dry.stderr)[-4000:]
    first = planned_jobs(dry.stdout)
    res = snakemake(wd, "--cores", "2")
    assert res.returncode == 0, (res.stdout + res.stderr)[-8000:]
    return wd, libraries, first


def test_plates_only_runs_the_paint_arm_and_says_rna_is_missing(plates_first):
    import mudata

    wd, _, first = plates_first
    rules = {r for r, _ in first}
    assert rules == PAINT_RULES | {"profiles"} | PAIR_RULES | SPLIT_RULES, rules
    for f in ("paint/P1/wells.parquet", "paint/profiles.parquet", "paint/consensus.parquet",
              "paired/perturbations.h5mu", "paired/paint.h5ad", "paired/cell_index.tsv", "report.html"):
        assert (wd / "results" / f).exists(), f
    assert not (wd / "results" / "rna").exists()
    assert not (wd / "results" / "paired" / "rna.h5ad").exists()
    sheet = json.loads((wd / "results" / "datasheet.json").read_text())
    assert sheet["arms"]["rna"]["status"] == "missing"
    assert "rna_libraries.tsv" in sheet["arms"]["rna"]["reason"]
    assert sheet["arms"]["paint"] == {"status": "present", "units": ["P1"], "used": ["P1"]}
    assert "rna" not in sheet["metrics"]["replicate"] and "paint" in sheet["metrics"]["replicate"]
    assert "concordance" not in sheet["metrics"]
    mdata = mudata.read_h5mu(wd / "results" / "paired" / "perturbations.h5mu")
    assert dict(mdata.uns["arms"]) == {"rna": "missing", "paint": "present"}
    assert mdata.mod["rna"].n_vars == 0 and not mdata.obs["in_rna"].any() and mdata.obs["in_paint"].all()
    assert "RNA arm missing" in (wd / "results" / "report.html").read_text()


def test_rna_libraries_land_and_only_rna_and_aggregate_jobs_run(plates_first):
    import mudata

    wd, libraries, _ = plates_first
    paint_before = _digests(wd / "results" / "paint")
    mtimes = {p: p.stat().st_mtime_ns for p in (wd / "results" / "paint").rglob("*") if p.is_file()}
    (wd / "config" / "rna_libraries.tsv").write_text(libraries)        # the sequencing run lands

    dry = snakemake(wd, "-n")
    assert dry.returncode == 0, (dry.stdout + dry.stderr)[-4000:]
    jobs = planned_jobs(dry.stdout)
    rules = [r for r, _ in jobs]
    # the RNA arm, the aggregates, and the training export (it pairs both arms, so it starts now: its
    # per-plate crops are train jobs under results/train/, not paint work)
    assert {r for r in rules if not r.startswith("train_")} == RNA_RULES | PAIR_RULES, sorted(set(rules))
    assert not any("plate" in w or "chunk" in w for r, w in jobs if not r.startswith("train_"))
    assert sorted(w["library"] for r, w in jobs if r == "rna_cells") == ["L1"]

    res = snakemake(wd, "--cores", "2")
    assert res.returncode == 0, (res.stdout + res.stderr)[-8000:]
    assert _digests(wd / "results" / "paint") == paint_before          # per-plate + paint aggregates
    assert all(p.stat().st_mtime_ns == t for p, t in mtimes.items())
    again = snakemake(wd, "-n")
    assert planned_jobs(again.stdout) == [], again.stdout[-3000:]

    sheet = json.loads((wd / "results" / "datasheet.json").read_text())
    assert {a: v["status"] for a, v in sheet["arms"].items()} == {"rna": "present", "paint": "present"}
    assert "concordance" in sheet["metrics"] and "rna" in sheet["metrics"]["replicate"]
    mdata = mudata.read_h5mu(wd / "results" / "paired" / "perturbations.h5mu")
    assert dict(mdata.uns["arms"]) == {"rna": "present", "paint": "present"}
    assert mdata.obs["in_rna"].all() and mdata.obs["in_paint"].all()
    assert (wd / "results" / "paired" / "rna.h5ad").exists()
    assert "arm missing" not in (wd / "results" / "report.html").read_text()


def test_libraries_only_plans_the_rna_arm_without_paint(tmp_path):
    wd = minimal_workdir(tmp_path)
    plates = wd / "config" / "plates.tsv"
    plates.write_text(plates.read_text().splitlines()[0] + "\n")
    dry = snakemake(wd, "-n")
    assert dry.returncode == 0, (dry.stdout + dry.stderr)[-4000:]
    rules = {r for r, _ in planned_jobs(dry.stdout)}
    assert rules == RNA_RULES | PAIR_RULES | SPLIT_RULES, rules


def test_no_arm_at_all_is_refused(tmp_path):
    wd = minimal_workdir(tmp_path)
    for name in ("plates.tsv", "rna_libraries.tsv"):
        sheet = wd / "config" / name
        sheet.write_text(sheet.read_text().splitlines()[0] + "\n")
    dry = snakemake(wd, "-n")
    assert dry.returncode != 0
    out = dry.stderr + dry.stdout
    assert "nothing to run" in out and "Fix: add the sequencing libraries" in out


def test_libraries_only_aggregates_on_the_run_outputs(plates_first, tmp_path):
    """The libraries-only quality, pair and datasheet (stage functions) on this run's RNA outputs."""
    import mudata

    from pairedscreen.config import load_config
    from pairedscreen.pair.stages import run_pair
    from pairedscreen.quality.stage import run_quality

    wd, _, _ = plates_first
    r, cfg = wd / "results", wd / "config"
    params = {**load_config(cfg / "config.yaml")["quality"], "permutations": 50}
    metrics = run_quality(None, None, r / "rna" / "cells.h5ad", r / "rna" / "pseudobulk.h5ad",
                          r / "rna" / "knockdown.tsv", [], cfg / "perturbations.tsv",
                          params, None, tmp_path / "metrics.json", tmp_path / "q.tsv",
                          profiles_config=load_config(cfg / "config.yaml")["profiles"])
    assert metrics["arms"] == {"rna": "present", "paint": "missing"} and "paint" not in metrics["replicate"]
    assert "paint_map" not in pd.read_csv(tmp_path / "q.tsv", sep="\t").columns
    run_pair(r / "rna" / "pseudobulk.h5ad", None, tmp_path / "q.tsv", cfg / "perturbations.tsv",
             r / "rna" / "cells.h5ad", [], tmp_path / "p.h5mu", tmp_path / "rna.h5ad", None,
             tmp_path / "cells.tsv")
    mdata = mudata.read_h5mu(tmp_path / "p.h5mu")
    assert dict(mdata.uns["arms"]) == {"rna": "present", "paint": "missing"}
    assert mdata.obs["in_rna"].all() and not mdata.obs["in_paint"].any()
    assert set(pd.read_csv(tmp_path / "cells.tsv", sep="\t")["modality"]) == {"rna"}
