"""End to end: the whole workflow on the tiny simulated screen, then a plate lands and only its work runs;
its ledger balances; a copy of the screen killed mid-job (segmentation, kb count) and rerun as the README
says gives the same outputs (content digests) and leaves no temp files; faults injected into it
(quarantined images, a stricter QC) are accounted for in its ledger."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from workdir import REPO, planned_jobs, snakemake, start_snakemake

pytestmark = pytest.mark.e2e

AGGREGATE_RULES = {"profiles", "quality", "pair", "datasheet", "report", "all", "train_batch_holdout",
                   "train_rna", "train_eval_cells", "train_celleval", "train_evals", "train_croissant"}


@pytest.fixture(scope="module")
def finished_run(tiny_run):
    """The session's tiny run (2 simulated plates, the run first knows only P1): conftest.tiny_run."""
    return tiny_run.workdir, tiny_run.plates


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


def test_rna_aggregates_from_library_summaries_equal_the_whole_matrix(finished_run):
    """rna_merge combines the libraries' summary.h5ad (map-reduce); on the run's merged cells the
    whole-matrix pseudobulk and knockdown give the same table (counts and test statistics exactly)."""
    import anndata as ad

    from pairedscreen.rna.knockdown import knockdown_table
    from pairedscreen.rna.pseudobulk import pseudobulk
    from pairedscreen.sheets import read_registry

    wd, _ = finished_run
    reg = read_registry(wd / "config" / "perturbations.tsv")
    merged = ad.read_h5ad(wd / "results" / "rna" / "cells.h5ad")
    whole = pseudobulk(merged, order=list(reg["perturbation_id"]),
                       controls=set(reg.loc[reg["is_control"], "perturbation_id"]))
    stored = ad.read_h5ad(wd / "results" / "rna" / "pseudobulk.h5ad")
    pd.testing.assert_frame_equal(stored.obs, whole.obs)
    np.testing.assert_array_equal(stored.layers["counts"], whole.layers["counts"])
    np.testing.assert_allclose(stored.X, whole.X, rtol=1e-12, atol=0)
    kd = pd.read_csv(wd / "results" / "rna" / "knockdown.tsv", sep="\t")
    kd["reason"] = kd["reason"].fillna("")          # "" (measurable) reads back as missing
    ref = knockdown_table(merged, reg)
    pd.testing.assert_frame_equal(kd.drop(columns="significant"), ref, check_dtype=False)
    assert (wd / "results" / "rna" / "L1" / "summary.h5ad").exists()


def test_new_plate_runs_only_its_own_and_aggregate_jobs(finished_run, capsys):
    """P2 lands in a landing folder; `pairedscreen discover` appends it; only its jobs + aggregates run."""
    from pairedscreen.cli import main

    wd, plates = finished_run
    before = {p: p.stat().st_mtime_ns for p in (wd / "results").rglob("*") if p.is_file()}
    sheet_before = (wd / "config" / "plates.tsv").read_bytes()
    batch = plates.set_index("plate_id").loc["P2", "batch"]
    landing = wd / "landing" / batch                 # a delivery folder named after its batch
    landing.mkdir(parents=True)
    shutil.copytree(wd / "raw" / "images" / "P2", landing / "P2")   # (raw/ stays whole for later copies)
    assert main(["discover", str(landing), "--directory", str(wd)]) == 0
    assert "added plate P2" in capsys.readouterr().out
    sheet = (wd / "config" / "plates.tsv").read_bytes()
    assert sheet.startswith(sheet_before)            # the P1 row is not rewritten
    row = pd.read_csv(wd / "config" / "plates.tsv", sep="\t", dtype=str).set_index("plate_id").loc["P2"]
    assert (row.batch, row.image_dir) == (batch, f"landing/{batch}/P2")
    assert row.plate_map == "config/plate_maps/P2.tsv"
    assert main(["discover", str(landing), "--directory", str(wd)]) == 0   # again: nothing new
    assert (wd / "config" / "plates.tsv").read_bytes() == sheet

    dry = snakemake(wd, "-n")
    assert dry.returncode == 0, (dry.stdout + dry.stderr)[-4000:]
    jobs = planned_jobs(dry.stdout)
    assert jobs, dry.stdout[-3000:]
    per_plate = [(r, w) for r, w in jobs if "plate" in w]
    other = {r for r, w in jobs if "plate" not in w}
    assert per_plate and all(w["plate"] == "P2" for _, w in per_plate), per_plate
    assert {r for r, _ in per_plate} >= {"paint_index", "paint_illum", "paint_segment", "paint_features",
                                           "paint_plate", "train_crops"}
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
    # every concordance, QC-bound and plate-position figure printed is the stored one
    assert checks.check_report_matches_stored(html.read_text(), built["data"], wd) > 20
    # ... and every file the report opened is an input its rule declares
    dry = snakemake(wd, "-n", "--forcerun", "report", "--", "results/report.html")
    assert dry.returncode == 0, (dry.stdout + dry.stderr)[-4000:]
    block = dry.stdout[dry.stdout.index("rule report:"):]
    declared = [wd / p.strip() for p in re.search(r"^\s*input: (.*)$", block, re.M).group(1).split(",")]
    raw_images = {Path(x) if Path(x).is_absolute() else wd / x for d in declared
                  if d.name == "image_index.parquet" for x in pd.read_parquet(d, columns=["path"])["path"]}
    for p in built["data"]["inputs_read"]:  # the overlay's raw images are the ones the image index names
        assert any(p == d or d in p.parents for d in declared) or p in raw_images, (p, declared)


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


# ------------------------------------------------------------------------------------------- ledger
def _first_sheet(finished_run) -> dict:
    wd, _ = finished_run
    return json.loads((wd.parent / "datasheet_first_run.json").read_text())


def _assert_balanced(sheet: dict) -> dict:
    from pairedscreen.pair import ledger

    led = sheet["ledger"]
    checks = ledger.check_ledger(led)   # re-evaluated from the terms, not the recorded flags
    assert len(checks) >= 20, checks
    assert all(checks.values()), [led_eq for led_eq, ok in checks.items() if not ok]
    assert led["balanced"] is True and led["unbalanced"] == []
    assert all(eq["balanced"] for _, eq in ledger.equations(led))
    return led


def test_ledger_balances_on_the_e2e_run(finished_run):
    """Every equation balances, and its counts agree with what is on disk and with the planted truth."""
    import anndata as ad

    wd, _ = finished_run
    led = _assert_balanced(_first_sheet(finished_run))
    spec = json.loads((wd / "truth" / "spec.json").read_text())["paint"]
    pm = pd.read_csv(wd / "config" / "plate_maps" / "P1.tsv", sep="\t")
    p1 = led["paint"]["P1"]["counts"]
    assert p1["images_in"] == len(list((wd / "raw" / "images" / "P1").glob("*.tif")))
    assert p1["sites"] == len(pm) * spec["sites_per_well"]
    truth_objects = pd.read_parquet(wd / "truth" / "paint_objects.parquet")
    assert p1["objects_segmented"] == int((truth_objects["plate"] == "P1").sum())   # simulated: perfect
    cells = pd.read_parquet(wd / "results" / "paint" / "P1" / "cells.parquet", columns=["Metadata_Well"])
    assert p1["cells_in_plate_table"] == len(cells)
    l1 = led["rna"]["L1"]["counts"]
    barcodes = pd.read_csv(wd / "truth" / "rna_barcodes.tsv", sep="\t")
    assert l1["barcodes"] == int((barcodes["library_id"] == "L1").sum())
    assert l1["cells_called"] == ad.read_h5ad(wd / "results" / "rna" / "L1" / "cells.h5ad", backed="r").n_obs
    info = json.loads((wd / "results" / "rna" / "L1" / "inputs.json").read_text())
    assert l1["gex_reads_in"] == info["kb_gex"]["n_processed"]
    assert l1["gex_reads_in_bus"] == info["kb_gex_inspect"]["numReads"]   # bustools' own count
    losses = led["rna"]["L1"]["losses"]
    assert set(losses) == {"no_umis", "not_a_cell", "qc_fail", "doublet", "no_guide", "multiple_guides"}
    assert losses["not_a_cell"] > 0 and losses["qc_fail"] > 0 and losses["doublet"] > 0   # planted


# ----------------------------------------------------------------------------- kill, rerun, digests
def _kill_when(proc, root: Path, pattern: str, log: Path, timeout: float = 900) -> list[Path]:
    """SIGKILL the run's whole process group once ``root.glob(pattern)`` finds a job's temp folder."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        hits = list(root.glob(pattern))
        if hits:
            time.sleep(1.0)                       # the job is writing into it
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            return hits
        if proc.poll() is not None:
            raise AssertionError(f"run ended before {pattern} appeared:\n{log.read_text()[-4000:]}")
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)
    raise AssertionError(f"{pattern} did not appear within {timeout} s")


def _leftovers(results: Path) -> list[str]:
    """Temp files and folders under results/ (Snakemake's own .snakemake_timestamp markers aside)."""
    return sorted(str(p.relative_to(results)) for p in results.rglob("*")
                  if (p.name.startswith(".") and p.name != ".snakemake_timestamp") or p.name == "partial")


@pytest.fixture(scope="module")
def recovered_run(finished_run, tmp_path_factory):
    """The e2e screen (P1 only) in a fresh folder with ``on_bad_image: quarantine`` (no image is bad, so the
    outputs must not change), killed during segmentation, then during kb count, then rerun to the end."""
    wd, plates = finished_run
    k = tmp_path_factory.mktemp("killed") / "screen"
    shutil.copytree(wd / "config", k / "config")
    plates.iloc[:1].to_csv(k / "config" / "plates.tsv", sep="\t", index=False)
    cfg = yaml.safe_load((k / "config" / "config.yaml").read_text())
    cfg["paint"]["on_bad_image"] = "quarantine"
    (k / "config" / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    for sub in ("fastq", "reference", "images/P1"):
        shutil.copytree(wd / "raw" / sub, k / "raw" / sub)
    (k / "truth").symlink_to(wd / "truth")
    logs = k.parent
    seen: dict[str, list[str]] = {}

    # 1. killed while Cellpose writes the first chunk's masks
    log = logs / "run1.log"
    proc = start_snakemake(k, "--cores", "2", "--prioritize", "results/paint/P1/masks/c000", log=log)
    _kill_when(proc, k / "results" / "paint" / "P1" / "masks", ".c000.*", log)
    seen["segmentation"] = _leftovers(k / "results")
    # the stale lock is refused with the README's fix
    res = snakemake(k, "--cores", "2")
    assert res.returncode != 0 and "--unlock" in res.stdout + res.stderr, (res.stdout + res.stderr)[-3000:]
    assert snakemake(k, "--unlock").returncode == 0

    # 2. killed while kb count writes the GEX counts
    log = logs / "run2.log"
    proc = start_snakemake(k, "--cores", "2", "--prioritize", "results/rna/L1/kb_gex", log=log)
    _kill_when(proc, k / "results" / "rna" / "L1", ".kb_gex.*", log)
    seen["kb count"] = _leftovers(k / "results")

    # 3. the README's recovery: unlock, then the same command again
    assert snakemake(k, "--unlock").returncode == 0
    res = snakemake(k, "--cores", "2")
    assert res.returncode == 0, (res.stdout + res.stderr)[-6000:]
    return k, seen


def test_killed_runs_left_temp_folders_and_the_rerun_removed_them(recovered_run):
    k, seen = recovered_run
    assert any(s.startswith("paint/P1/masks/.c000.") for s in seen["segmentation"]), seen
    assert any(s.startswith("rna/L1/.kb_gex.") for s in seen["kb count"]), seen
    assert _leftovers(k / "results") == []
    incomplete = k / ".snakemake" / "incomplete"
    assert not incomplete.exists() or not any(p.is_file() for p in incomplete.rglob("*"))


def test_rerun_after_kills_equals_the_uninterrupted_run(finished_run, recovered_run):
    """Two clean runs (the e2e run; the killed-and-rerun copy in another folder) agree output by output."""
    from pairedscreen import digest

    k, _ = recovered_run
    first = _first_sheet(finished_run)
    again = json.loads((k / "results" / "datasheet.json").read_text())
    paths = [r["path"] for r in first["outputs"]]
    assert len(paths) >= 15 and "results/paired/perturbations.h5mu" in paths, paths
    assert digest.compare(first["outputs"], again["outputs"]) == {}
    _assert_balanced(again)
    # the datasheet's digest is the file's: recomputed here from the file, in another folder
    h5mu = next(r for r in again["outputs"] if r["path"] == "results/paired/perturbations.h5mu")
    assert digest.content_digest(k / h5mu["path"], root=k) == h5mu["digest"]


def test_provenance_of_the_run(recovered_run):
    """The datasheet names the library that made it (this checkout's src/) and, per output, which one made
    it; nothing is stale right after a run."""
    from pairedscreen import provenance

    k, _ = recovered_run
    sheet = json.loads((k / "results" / "datasheet.json").read_text())
    lib = sheet["provenance"]["library"]
    here = provenance.library_provenance()
    assert lib["source_sha256"] == here["source_sha256"] and lib["version"] == here["version"]
    made = {r["path"]: r for r in sheet["provenance"]["outputs"]}
    for r in sheet["outputs"]:
        assert made[r["path"]]["source_sha256"] == here["source_sha256"], r["path"]
    assert provenance.stale_outputs(k) == []


def test_ledger_accounts_for_injected_faults(finished_run, recovered_run):
    """Plate P2 lands with one site's image truncated and one site's image missing (quarantined), and a
    stricter mitochondrial QC fails more cells: every loss is counted with its reason and still balances."""
    wd, plates = finished_run
    k, _ = recovered_run
    before = json.loads((k / "results" / "datasheet.json").read_text())["ledger"]
    pm = pd.read_csv(wd / "config" / "plate_maps" / "P2.tsv", sep="\t", dtype=str)
    ctrl = set(pd.read_csv(wd / "config" / "perturbations.tsv", sep="\t", dtype=str)
               .query("is_control.str.lower() == 'true'", engine="python")["perturbation_id"])
    sub = pd.concat([pm[pm.perturbation_id.isin(ctrl)].head(3), pm[~pm.perturbation_id.isin(ctrl)].head(3)])
    sub.to_csv(k / "config" / "plate_maps" / "P2.tsv", sep="\t", index=False)
    plates.to_csv(k / "config" / "plates.tsv", sep="\t", index=False)
    images = k / "raw" / "images" / "P2"
    images.mkdir(parents=True)
    for w in sub.well:
        for f in (wd / "raw" / "images" / "P2").glob(f"{w}_s*"):
            shutil.copy(f, images / f.name)
    broken_well, missing_well = sub.well.iloc[-1], sub.well.iloc[0]
    broken = sorted(images.glob(f"{broken_well}_s1_w2.tif"))[0]
    broken.write_bytes(broken.read_bytes()[: broken.stat().st_size // 3])     # truncated TIFF
    sorted(images.glob(f"{missing_well}_s1_w5.tif"))[0].unlink()              # a missing channel
    cfg = yaml.safe_load((k / "config" / "config.yaml").read_text())
    cfg["rna"]["qc"]["max_pct_mt"] = 8.0
    (k / "config" / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))

    res = snakemake(k, "--cores", "2")
    assert res.returncode == 0, (res.stdout + res.stderr)[-6000:]
    led = _assert_balanced(json.loads((k / "results" / "datasheet.json").read_text()))
    p2 = led["paint"]["P2"]
    sites = len(sub) * json.loads((wd / "truth" / "spec.json").read_text())["paint"]["sites_per_well"]
    assert p2["counts"]["sites"] == sites and p2["counts"]["images_in"] == 5 * sites
    assert p2["counts"]["sites_quarantined"] == 2 and p2["counts"]["images_quarantined"] == 10
    assert p2["losses"]["quarantined_images"] == 10
    assert any("missing" in r for r in p2["quarantine_reasons"]), p2["quarantine_reasons"]
    if sites == len(sub):      # one site per well: the two wells have no cells and are not profiled
        assert p2["counts"]["wells_not_profiled_no_cells"] == 2
    assert p2["counts"]["images_used"] + p2["counts"]["images_qc_flagged"] == 5 * sites - 10
    l1, l1_before = led["rna"]["L1"], before["rna"]["L1"]
    assert l1["qc_fail_by_flag"]["mt"] > l1_before["qc_fail_by_flag"]["mt"]
    assert l1["counts"]["cells_qc_fail"] > l1_before["counts"]["cells_qc_fail"]
    assert l1["counts"]["cells_called"] == l1_before["counts"]["cells_called"]
    assert _leftovers(k / "results") == []


# ------------------------------------------------------------------------------ training export (train)
def _train_params(wd):
    import yaml
    from snakemake.utils import validate

    conf = yaml.safe_load((wd / "config" / "config.yaml").read_text())
    validate(conf, str(REPO / "workflow" / "schemas" / "config.schema.yaml"))   # applies the defaults
    return conf["train"]


def test_cell_load_reads_the_export_and_holds_out_the_test_perturbations(finished_run):
    """cell-load's PerturbationDataModule built from the exported TOML (embed key X_hvg, consecutive
    loading): a train batch and a test batch; the test batch's perturbations are the split's test ones."""
    import anndata as ad
    import torch
    from cell_load.data_modules import PerturbationDataModule

    wd, _ = finished_run
    params = _train_params(wd)
    train = wd / "results" / "train"
    splits = pd.read_csv(train / "splits.tsv", sep="\t", keep_default_na=False)
    h5ad = ad.read_h5ad(train / "rna" / f"{params['cell_type']}.h5ad")
    label = dict(zip(h5ad.obs["perturbation_id"].astype(str), h5ad.obs["perturbation"].astype(str),
                     strict=False))
    expected_test = {label[p] for p in splits.loc[splits["split"] == "test", "perturbation_id"] if p in label}
    assert expected_test
    assert np.issubdtype(h5ad.X.dtype, np.integer)
    torch.manual_seed(0)
    dm = PerturbationDataModule(toml_config_path=str(train / "cell_load.toml"), embed_key="X_hvg",
                                num_workers=0, batch_col="gem_group", pert_col="perturbation",
                                cell_type_key="cell_type", control_pert=params["control_label"],
                                use_consecutive_loading=True, batch_size=4, cell_sentence_len=8,
                                output_space="gene")
    dm.setup()
    train_batch = next(iter(dm.train_dataloader()))
    assert train_batch["pert_cell_emb"].shape[1] == h5ad.obsm["X_hvg"].shape[1]
    assert not set(train_batch["pert_name"]) & expected_test
    seen = set()
    for batch in dm.test_dataloader():
        seen |= set(batch["pert_name"])
    assert seen - {params["control_label"]} == expected_test, (seen, expected_test)


def test_croissant_validates_and_reads_back_the_source_tables(finished_run):
    import json

    import mlcroissant as mlc

    from pairedscreen.io import sha256sum

    wd, _ = finished_run
    train = wd / "results" / "train"
    doc = json.loads((train / "croissant.json").read_text())
    ds = mlc.Dataset(jsonld=str(train / "croissant.json"))   # raises on validation errors
    files = {d["contentUrl"]: d["sha256"] for d in doc["distribution"]}
    on_disk = sorted(p.relative_to(train).as_posix() for p in train.rglob("*")   # not Snakemake's dotfiles
                     if p.is_file() and p.name != "croissant.json" and not p.name.startswith("."))
    assert sorted(files) == on_disk
    for rel, digest in files.items():
        assert sha256sum(train / rel) == digest, rel
    params = _train_params(wd)
    source = pd.read_parquet(train / "rna" / f"{params['cell_type']}.obs.parquet")
    rows = pd.DataFrame(list(ds.records(record_set="rna_cells")))
    rows.columns = [c.split("/", 1)[1] for c in rows.columns]
    rows = rows.map(lambda v: v.decode() if isinstance(v, bytes) else v)
    assert len(rows) == len(source)
    for col in source.columns:
        assert rows[col].astype(str).tolist() == source[col].astype(str).tolist(), col
    assert {r["@id"] for r in doc["recordSet"]} >= {"rna_cells", "perturbations", "painted_cells_P1",
                                                     "quality_summary"}


def test_crops_are_the_corrected_image_around_each_centroid(finished_run):
    """A crop equals the illumination-corrected image (raw / 65535 / illumination, read independently here)
    around the object's centroid, rounded to the crops' dtype (the schema's default, float16: within half a
    float16 step), and its mask channel equals the object's own mask."""
    import tifffile
    import zarr

    wd, _ = finished_run
    plate = wd / "results" / "train" / "paint" / "P1"
    obs = pd.read_parquet(plate / "obs.parquet")
    group = zarr.open_group(str(plate / "crops.zarr"), mode="r")
    arr = group["crops"]
    channels = group.attrs["channels"]
    assert arr.shape[0] == len(obs) and channels[-1] == "mask"
    size = arr.shape[-1]
    dtype = np.dtype(_train_params(wd)["crops"]["dtype"])   # the schema default unless configured
    assert arr.dtype == dtype and group.attrs["dtype"] == dtype.name
    # float64 -> float32 -> dtype: within one step of the dtype (relative), or its smallest step near zero
    rtol, atol = float(np.finfo(dtype).eps), float(np.finfo(dtype).smallest_subnormal)
    cells = pd.read_parquet(wd / "results" / "paint" / "P1" / "cells.parquet",
                            columns=["Metadata_Well", "Metadata_Site", "Metadata_ObjectNumber"])
    assert len(cells) == len(obs)
    index = pd.read_parquet(wd / "results" / "paint" / "P1" / "image_index.parquet")
    masks = sorted((wd / "results" / "paint" / "P1" / "masks").glob("c*"))
    for i in [0, len(obs) // 2, len(obs) - 1]:
        r = obs.iloc[i]
        crop = arr[i]
        rows = index[(index["well"] == r.well) & (index["site"] == r.site)].set_index("channel")
        y0 = int(np.round(r.centroid_y)) - size // 2
        x0 = int(np.round(r.centroid_x)) - size // 2
        for k, ch in enumerate(channels[:-1]):
            img = tifffile.imread(rows.loc[ch, "path"] if Path(rows.loc[ch, "path"]).is_absolute()
                                  else wd / rows.loc[ch, "path"]).astype(np.float64) / 65535.0
            img = img / np.load(wd / "results" / "paint" / "P1" / "illum" / f"{ch}.npy")
            pad = np.pad(img, size)
            expected = pad[y0 + size:y0 + 2 * size, x0 + size:x0 + 2 * size]
            np.testing.assert_allclose(crop[k].astype(np.float64), expected, rtol=rtol, atol=atol)
        label = next(tifffile.imread(m / f"{r.well}_s{r.site}_cells.tif") for m in masks
                     if (m / f"{r.well}_s{r.site}_cells.tif").exists())
        own = np.pad(label == r.object_id, size)[y0 + size:y0 + 2 * size, x0 + size:x0 + 2 * size]
        assert np.array_equal(crop[-1] > 0.5, own)
    assert obs["split"].isin(["train", "val", "test"]).all()


def test_splits_are_shared_by_every_export(finished_run):
    import json

    import anndata as ad
    import mudata

    wd, _ = finished_run
    train = wd / "results" / "train"
    splits = pd.read_csv(train / "splits.tsv", sep="\t", keep_default_na=False).set_index("perturbation_id")
    mdata = mudata.read_h5mu(wd / "results" / "paired" / "perturbations.h5mu")
    assert mdata.obs["split"].astype(str).tolist() == splits["split"].reindex(mdata.obs_names).tolist()
    trt = splits[splits["split"] != "all"]
    h5ad = ad.read_h5ad(train / "rna" / f"{_train_params(wd)['cell_type']}.h5ad", backed="r")
    crops_obs = pd.read_parquet(train / "paint" / "P1" / "obs.parquet")
    for name, obs, key in (("rna", h5ad.obs, "perturbation_id"), ("paint", crops_obs, "perturbation")):
        pid = obs[key].astype(str)
        is_trt = pid.isin(trt.index)
        got = obs.loc[is_trt, "split"].astype(str).to_numpy()
        assert (got == trt["split"].reindex(pid[is_trt]).to_numpy()).all(), name
        assert set(obs.loc[~is_trt, "split"].astype(str)) <= {"train", "val", "test"}, name
    # contiguous (cell type, perturbation) blocks for cell-load's consecutive loading
    keys = (h5ad.obs["cell_type"].astype(str) + "|" + h5ad.obs["perturbation"].astype(str)).to_numpy()
    starts = np.flatnonzero(np.r_[True, keys[1:] != keys[:-1]])
    assert len(starts) == len(set(keys))
    sheet = json.loads((wd / "results" / "datasheet.json").read_text())
    assert sheet["train"]["splits"]["perturbations"]["test"] == trt.index[trt["split"] == "test"].tolist()


def test_evals_recorded_in_datasheet_with_n_and_the_cell_eval_floor(finished_run):
    """The run's held-out evals: both directions with n and bootstrap intervals; the tiny screen holds out
    too few perturbations for power (n is recorded, beats_baseline needs >= 5); cell-eval ran in its own env
    (required under CI, where `make env` builds .venv-eval)."""
    import json
    import os

    wd, _ = finished_run
    ev = json.loads((wd / "results" / "quality" / "evals.json").read_text())
    sheet = json.loads((wd / "results" / "datasheet.json").read_text())
    n_test = ev["splits"]["n"]["test"]
    assert n_test >= 1
    for d in ("rna_to_paint", "paint_to_rna"):
        o = ev[d]["overall"]
        assert o["n"] == ev[d]["n_test"] <= n_test
        assert len(o["correlation"]["difference_ci"]) == 2
        if o["n"] < 5:   # too few test perturbations to call anything better than the baseline
            assert o["beats_baseline"] is False and o["discrimination"]["beats_baseline"] is False
        assert sheet["train"]["evals"][d]["overall"] == o
        assert set(ev[d]["by_class"]) <= {"both", "rna", "paint", "neither"}
    have_env = (REPO / ".venv-eval" / "bin" / "python").exists()
    if have_env or os.environ.get("CI", "").lower() == "true":
        ce = ev["celleval"]
        assert ce["status"] == "ok", ce
        assert set(ce["predictors"]) == {"mean_of_train", "control"}
        assert "pearson_delta" in ce["predictors"]["mean_of_train"]
        # cell-eval's own data ceiling on the same cells: bounded metrics stay in their range
        ceiling = ce["ceiling"]["metrics"]
        assert "pearson_delta" in ceiling and "discrimination_score_l1" in ceiling
        assert ceiling["pearson_delta"] is None or -1 <= ceiling["pearson_delta"] <= 1
        assert ceiling["discrimination_score_l1"] is None or 0 <= ceiling["discrimination_score_l1"] <= 1
    # the split-half ceilings and the leakage audit ran on the run's cells (the rule's inputs)
    assert ev["ceilings"]["status"] == "ok", ev["ceilings"]
    assert ev["leakage"]["status"] in {"ok", "not run"}, ev["leakage"]
    assert sheet["train"]["evals"]["celleval"]["status"] == ev["celleval"]["status"]
    # cell-eval's cells: the configured per-perturbation bound, recorded in evals.json and the datasheet
    import anndata as ad

    sub = ev["eval_cells"]
    assert sub["max_cells_per_perturbation"] == _train_params(wd)["eval_max_cells_per_perturbation"]
    assert sheet["train"]["evals"]["eval_cells"] == sub
    cells = ad.read_h5ad(wd / "results" / "quality" / "eval_cells.h5ad", backed="r").obs
    export = ad.read_h5ad(wd / "results" / "train" / "rna" / f"{_train_params(wd)['cell_type']}.h5ad",
                          backed="r").obs
    per = cells["perturbation_id"].astype(str).value_counts()
    assert set(cells.index) <= set(export.index) and sub["n_cells"] == len(cells)
    assert (per <= sub["max_cells_per_perturbation"]).all() and sub["n_cells_exported"] == len(export)


def test_report_train_section_draws_the_stored_evals(finished_run):
    import json

    from pairedscreen.report.inputs import Inputs
    from pairedscreen.report.sections.train import collect_train

    wd, _ = finished_run
    html = (wd / "results" / "report.html").read_text()
    assert 'id="train"' in html and "tbl-train-cross-modal" in html
    ev = json.loads((wd / "results" / "quality" / "evals.json").read_text())
    rows = collect_train(Inputs(wd / "results"))["cross_modal"]
    overall = rows[rows["test perturbations"] == "all"].set_index("direction")
    assert overall.loc["RNA -> morphology", "n"] == ev["rna_to_paint"]["overall"]["n"]
    fwd = ev["rna_to_paint"]["overall"]
    assert overall.loc["RNA -> morphology", "r ridge"] == fwd["correlation"]["model"]
def _change_one_image(wd: Path, plate: str) -> tuple[Path, bytes, int]:
    """Flip the last byte of the plate's first image (same size, other bytes: a re-exported image), in the
    plate's image_dir as the plate sheet now says (P2 landed in landing/{batch}/P2)."""
    sheet = pd.read_csv(wd / "config" / "plates.tsv", sep="\t", dtype=str).set_index("plate_id")
    image = sorted((wd / sheet.loc[plate, "image_dir"]).glob("*.tif"))[0]
    old, mtime = image.read_bytes(), image.stat().st_mtime_ns
    image.write_bytes(old[:-1] + bytes([old[-1] ^ 0xFF]))
    return image, old, mtime


def _restore(wd: Path, image: Path, old: bytes, mtime: int) -> None:
    """Put the image back as it was and mark the run up to date again (the planner rewrote the manifest
    when the image changed and rewrites it once more now, so without --touch its plate index would rerun)."""
    image.write_bytes(old)
    os.utime(image, ns=(mtime, mtime))
    assert snakemake(wd, "-n").returncode == 0                       # the planner rewrites the manifest
    res = snakemake(wd, "--touch", "--cores", "1")
    assert res.returncode == 0, (res.stdout + res.stderr)[-3000:]
    dry = snakemake(wd, "-n")
    assert dry.returncode == 0 and not planned_jobs(dry.stdout), dry.stdout[-3000:]


def test_changed_image_reruns_only_its_plate_index(finished_run):
    """Images are tracked through the per-plate manifest: one image's new bytes replan exactly its plate,
    plus the aggregates. The one cross-plate dependency is the fitted crop size (`train_crop_size`, from
    the first plate's cells): a changed image on that plate also replans every plate's crops, and nothing
    else of theirs."""
    wd, plates = finished_run
    others = [p for p in plates.plate_id if p != "P1"]
    assert others == ["P2"]                          # the landing test has added P2 to the run

    image, old, mtime = _change_one_image(wd, "P2")
    dry = snakemake(wd, "-n")
    assert dry.returncode == 0, (dry.stdout + dry.stderr)[-4000:]
    jobs = planned_jobs(dry.stdout)
    assert [w["plate"] for r, w in jobs if r == "paint_index"] == ["P2"], jobs
    assert {w["plate"] for _, w in jobs if "plate" in w} == {"P2"}, jobs
    assert not any("library" in w for _, w in jobs)
    assert "train_crop_size" not in {r for r, _ in jobs}
    manifest = (wd / "results" / "paint" / "P2" / "image_manifest.tsv").read_text()
    assert f"{image.name}\t{len(old)}\t{image.stat().st_mtime_ns}\n" in manifest
    _restore(wd, image, old, mtime)

    image, old, mtime = _change_one_image(wd, "P1")
    dry = snakemake(wd, "-n")
    assert dry.returncode == 0, (dry.stdout + dry.stderr)[-4000:]
    jobs = planned_jobs(dry.stdout)
    assert [w["plate"] for r, w in jobs if r == "paint_index"] == ["P1"], jobs
    assert "train_crop_size" in {r for r, _ in jobs}
    assert sorted((r, w["plate"]) for r, w in jobs if w.get("plate", "P1") != "P1") == \
        [("train_crops", p) for p in others], jobs
    assert not any("library" in w for _, w in jobs)
    _restore(wd, image, old, mtime)
