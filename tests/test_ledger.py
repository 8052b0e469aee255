"""Ledger equations, content digests, stale temp cleanup and code provenance (unit level; the workflow-level
checks are in test_workflow_e2e.py and test_workflow_recovery.py)."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import pytest

from pairedscreen import digest, provenance
from pairedscreen.io import atomic_output, clean_stale_temps, scratch_dir
from pairedscreen.pair import ledger as L


# ------------------------------------------------------------------------------------------- ledger
def test_equation_balances_and_detects_a_loss():
    ok = L.equation("a = b + c", a=10, b=7, c=3)
    assert ok["balanced"] is True
    lost = L.equation("a = b + c", a=10, b=7, c=2)
    assert lost["balanced"] is False
    assert L.equation("a = b", a=None, b=0)["balanced"] is False       # an unknown term never balances
    with pytest.raises(ValueError, match="no value"):
        L.check_equation({"equation": "a = b + z", "terms": {"a": 1, "b": 1}})
    tampered = dict(ok, terms={"a": 11, "b": 7, "c": 3})               # re-evaluated, not trusted
    assert L.check_ledger({"x": {"equations": [ok, tampered]}}) == {"x.equations[0]": True,
                                                                   "x.equations[1]": False}


def _library(tmp_path: Path, obs: pd.DataFrame, n_barcodes: int, ranked_not_cell: int) -> dict:
    info = {"library": "L1", "kb_gex": {"n_processed": 1000, "n_pseudoaligned": 900},
            "kb_gex_inspect": {"numReads": 900, "numReadsOnOnlist": 880},
            "kb_guide": {"n_processed": 100, "n_pseudoaligned": 99}, "kb_guide_inspect": {"numReads": 99},
            "reads": {"r1.fq.gz": 600, "r1b.fq.gz": 400}}
    (tmp_path / "inputs.json").write_text(json.dumps(info))
    ad.AnnData(obs=pd.DataFrame(index=[f"b{i}" for i in range(n_barcodes)])).write_h5ad(tmp_path / "raw.h5ad")
    ranks = pd.DataFrame({"is_cell": [True] * len(obs) + [False] * ranked_not_cell})
    ranks.to_parquet(tmp_path / "r.parquet")
    return L.rna_library_ledger(tmp_path / "inputs.json", tmp_path / "raw.h5ad", tmp_path / "r.parquet", obs,
                                fastq_r1=["r1.fq.gz", "r1b.fq.gz"])


def test_rna_library_ledger_counts_every_loss_with_its_reason(tmp_path):
    obs = pd.DataFrame({"perturbation": ["a", "b", "unassigned", "multiple", "a", "NTC", "a"],
                        "qc_fail_mt": [False, False, False, False, True, False, True],
                        "qc_fail_counts": [False, False, False, False, True, False, False],
                        "predicted_doublet": [False, False, False, False, False, True, False]})
    obs["pass_qc"] = ~(obs.qc_fail_mt | obs.qc_fail_counts)
    led = _library(tmp_path, obs, n_barcodes=20, ranked_not_cell=5)
    c = led["counts"]
    assert (c["barcodes"], c["barcodes_without_umis"], c["barcodes_not_called"]) == (20, 8, 5)
    assert c["cells_called"] == 7
    assert (c["cells_qc_pass"], c["cells_qc_fail"], c["cells_doublet"], c["cells_singlet"]) == (5, 2, 1, 4)
    assert (c["cells_assigned"], c["cells_no_guide"], c["cells_multiple_guides"]) == (2, 1, 1)
    assert led["qc_fail_by_flag"] == {"mt": 2, "counts": 1}                 # overlapping reasons
    assert led["assigned_by_perturbation"] == {"a": 1, "b": 1}
    assert c["fastq_records_r1"] == 1000
    assert all(e["balanced"] for e in led["equations"]), [e for e in led["equations"] if not e["balanced"]]
    # bustools saw fewer GEX reads than kallisto reported: that equation, and only it, is unbalanced
    info = json.loads((tmp_path / "inputs.json").read_text())
    info["kb_gex_inspect"]["numReads"] = 899
    (tmp_path / "inputs.json").write_text(json.dumps(info))
    led = L.rna_library_ledger(tmp_path / "inputs.json", tmp_path / "raw.h5ad", tmp_path / "r.parquet", obs)
    assert [e["equation"] for e in led["equations"] if not e["balanced"]] == [
        "gex_reads_pseudoaligned = gex_reads_in_bus"]


def test_build_ledger_cross_stage_equations():
    rna = {"L1": {"counts": {"cells_called": 10, "cells_assigned": 6}, "equations": []}}
    paint = {"P1": {"counts": {"cells_in_profiles": 40}, "equations": []}}
    good = L.build_ledger(rna, paint, pseudobulk_cells=6, merged_cells=10, paired_rna_cells=6,
                          paired_paint_cells=40, consensus_cells=40)
    assert good["balanced"] and good["unbalanced"] == [] and len(good["pair"]["equations"]) == 5
    bad = L.build_ledger(rna, paint, pseudobulk_cells=5, merged_cells=10, consensus_cells=40)
    assert not bad["balanced"] and bad["unbalanced"] == ["pair.equations[1]"]


# ------------------------------------------------------------------------------------------ digests
def _adata(seed: int = 0) -> ad.AnnData:
    rng = np.random.default_rng(seed)
    a = ad.AnnData(X=rng.poisson(2, (20, 5)).astype(np.float32),
                   obs=pd.DataFrame({"perturbation": pd.Categorical(list("ab") * 10)},
                                    index=[f"c{i}" for i in range(20)]))
    a.layers["counts"] = a.X.copy()
    return a


def test_h5ad_digest_is_content_only(tmp_path):
    a = _adata()
    a.uns["source"] = str(tmp_path / "one" / "x.tsv")
    (tmp_path / "one").mkdir()
    a.write_h5ad(tmp_path / "one" / "x.h5ad")
    b = _adata()
    b.uns["source"] = str(tmp_path / "two" / "x.tsv")     # the same file, made in another folder
    (tmp_path / "two").mkdir()
    b.write_h5ad(tmp_path / "two" / "x.h5ad", compression="gzip")   # and laid out differently
    d1 = digest.content_digest(tmp_path / "one" / "x.h5ad", root=tmp_path / "one")
    d2 = digest.content_digest(tmp_path / "two" / "x.h5ad", root=tmp_path / "two")
    assert d1 == d2
    c = _adata()
    c.X[3, 2] += 1                                           # one count differs
    c.uns["source"] = str(tmp_path / "one" / "x.tsv")
    c.write_h5ad(tmp_path / "c.h5ad")
    assert digest.content_digest(tmp_path / "c.h5ad", root=tmp_path / "one") != d1


def test_parquet_json_tsv_digests(tmp_path):
    df = pd.DataFrame({"Metadata_Well": ["A01", "A02", None], "x": [1.0, np.nan, 3.0], "n": [1, 2, 3]})
    df.to_parquet(tmp_path / "a.parquet", row_group_size=1)
    df.to_parquet(tmp_path / "b.parquet")
    assert digest.content_digest(tmp_path / "a.parquet") == digest.content_digest(tmp_path / "b.parquet")
    df2 = df.copy()
    df2.loc[1, "x"] = 0.0                                    # NaN -> 0 is a change
    df2.to_parquet(tmp_path / "c.parquet")
    assert digest.content_digest(tmp_path / "c.parquet") != digest.content_digest(tmp_path / "b.parquet")
    (tmp_path / "a.json").write_text(json.dumps({"b": 1, "a": [1, 2], "generated_at": "today"}))
    (tmp_path / "b.json").write_text(json.dumps({"a": [1, 2], "b": 1, "generated_at": "tomorrow"}, indent=2))
    (tmp_path / "c.json").write_text(json.dumps({"a": [2, 1], "b": 1}))
    assert digest.content_digest(tmp_path / "a.json") == digest.content_digest(tmp_path / "b.json")
    assert digest.content_digest(tmp_path / "a.json") != digest.content_digest(tmp_path / "c.json")
    (tmp_path / "a.tsv").write_text(f"path\n{tmp_path}/raw/x\n")
    assert digest.content_digest(tmp_path / "a.tsv", root=tmp_path) == digest.content_digest(
        tmp_path / "a.tsv", root=tmp_path) != digest.content_digest(tmp_path / "a.tsv")
    rows = digest.describe_outputs({"o": [tmp_path / "b.parquet", tmp_path / "a.json"]}, root=tmp_path)
    assert [r["path"] for r in rows] == ["a.json", "b.parquet"]
    other = [dict(rows[0]), dict(rows[1], digest="0" * 64)]
    assert digest.compare(rows, other) == {"b.parquet": (rows[1]["digest"], "0" * 64)}


# ------------------------------------------------------------------------------------- stale temps
def test_atomic_output_removes_leftovers_of_a_killed_attempt(tmp_path):
    target = tmp_path / "masks" / "c000"
    target.parent.mkdir()
    stale = Path(tempfile.mkdtemp(prefix=".c000.", dir=target.parent))     # what a SIGKILL leaves
    (stale / "partial").mkdir()
    (stale / "partial" / "A01_s1_cells.tif").write_bytes(b"half")
    other = Path(tempfile.mkdtemp(prefix=".c001.", dir=target.parent))     # another job's: kept
    lookalike = target.parent / ".c000.keep-me-please"                    # not a mkdtemp name: kept
    lookalike.mkdir()
    with atomic_output(target, is_dir=True) as tmp:
        (tmp / "summary.tsv").write_text("ok\n")
    assert not stale.exists() and other.exists() and lookalike.exists()
    assert sorted(p.name for p in target.parent.iterdir()) == sorted(["c000", other.name, lookalike.name])
    with scratch_dir(tmp_path, ".kb_ref.") as work:
        assert work.is_dir()
    assert not work.exists()
    assert clean_stale_temps(tmp_path / "absent", ".x.") == []


# -------------------------------------------------------------------------------------- provenance
def test_source_digest_follows_the_code_not_its_location(tmp_path):
    pkg = provenance.package_dir()
    import shutil

    a = shutil.copytree(pkg, tmp_path / "a" / "pairedscreen", ignore=shutil.ignore_patterns("__pycache__"))
    b = shutil.copytree(pkg, tmp_path / "b" / "pairedscreen", ignore=shutil.ignore_patterns("__pycache__"))
    assert provenance.source_digest(a) == provenance.source_digest(b) == provenance.source_digest()
    (b / "paint" / "image_qc.py").write_text((b / "paint" / "image_qc.py").read_text() + "\n# tweak\n")
    assert provenance.source_digest(a) != provenance.source_digest(b)
    lib = provenance.library_provenance()
    assert lib["source_sha256"] == provenance.source_digest() and lib["version"]


def test_jobs_refuse_a_library_from_elsewhere(tmp_path):
    here = provenance.package_dir()
    provenance.check_workflow_library(here.parents[1] / "workflow" / "scripts")     # its own: fine
    other = tmp_path / "checkout"
    (other / "src" / "pairedscreen").mkdir(parents=True)
    (other / "workflow" / "scripts").mkdir(parents=True)
    with pytest.raises(provenance.WrongLibraryError, match=r"imports pairedscreen from .*Fix"):
        provenance.check_workflow_library(other / "workflow" / "scripts")


def test_stale_outputs_lists_what_an_older_library_made(tmp_path):
    (tmp_path / "results").mkdir()
    for name in ("new.tsv", "old.tsv"):
        (tmp_path / "results" / name).write_text("x\n")
    provenance.record_job(tmp_path, "ruleA", "all", [tmp_path / "results" / "new.tsv"])
    rec = provenance.record_job(tmp_path, "ruleB", "all", ["results/old.tsv", "results/gone.tsv"])
    data = json.loads(rec.read_text())
    data["library"]["source_sha256"] = "0" * 64                      # made by another library version
    rec.write_text(json.dumps(data))
    assert [r["path"] for r in provenance.output_table(tmp_path)] == ["results/new.tsv", "results/old.tsv"]
    assert [r["path"] for r in provenance.stale_outputs(tmp_path)] == ["results/old.tsv"]
    from pairedscreen.cli import main

    assert main(["provenance", "--stale", "--paths", str(tmp_path)]) == 0


def test_cli_provenance_prints(tmp_path, capsys):
    from pairedscreen.cli import main

    (tmp_path / "results").mkdir()
    (tmp_path / "results" / "a.tsv").write_text("x\n")
    provenance.record_job(tmp_path, "r", "all", ["results/a.tsv"])
    assert main(["provenance", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "results/a.tsv\tr\t" in out and out.startswith("# library ")
    assert main(["provenance", "--stale", "--paths", str(tmp_path)]) == 0
    assert capsys.readouterr().out == ""
    assert os.path.isdir(tmp_path / "results" / "provenance")


def test_the_snakefile_points_jobs_at_its_own_library(tmp_path, monkeypatch, repo):
    """With another copy first on PYTHONPATH, a job started after the Snakefile's
    ``use_workflow_library`` still imports the workflow's src/pairedscreen."""
    import shutil
    import subprocess
    import sys

    other = tmp_path / "other" / "src"
    shutil.copytree(provenance.package_dir(), other / "pairedscreen",
                    ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.setenv("PYTHONPATH", str(other))
    value = provenance.use_workflow_library(repo)
    assert value.split(os.pathsep) == [str(repo.resolve() / "src"), str(other)]
    out = subprocess.run([sys.executable, "-c", "import pairedscreen; print(pairedscreen.__file__)"],
                         capture_output=True, text=True, check=True, env=dict(os.environ), cwd=tmp_path)
    assert Path(out.stdout.strip()).resolve().parent == (repo / "src" / "pairedscreen").resolve()


def test_paint_plate_ledger_partitions_images_and_sites(tmp_path):
    """Three sites: usable, QC-flagged (one channel blurred: the site is not segmented), quarantined (one
    file missing: its siblings quarantined too); two wells, one profiled."""
    ch = ["DNA", "ER", "RNA", "AGP", "Mito"]
    rows = []
    for well, site, kind in (("A01", 1, "ok"), ("A01", 2, "flag"), ("B01", 1, "quarantine")):
        for i, c in enumerate(ch):
            rows.append({"well": well, "site": site, "channel": c,
                         "status": "quarantined" if kind == "quarantine" else "ok",
                         "reason": ("missing file" if i == 0 else "site incomplete") if kind == "quarantine"
                         else "", "qc_flag": kind == "flag" and i == 1,
                         "qc_reason": "defocused" if kind == "flag" and i == 1 else ""})
    pd.DataFrame(rows).to_parquet(tmp_path / "index.parquet")
    m = tmp_path / "c000"
    m.mkdir()
    pd.DataFrame({"well": ["A01", "A01", "B01"], "site": [1, 2, 1], "n_cells": [3, 0, 0],
                  "n_nuclei_detected": [4, 0, 0], "n_nuclei_dropped": [1, 0, 0],
                  "n_cells_without_nucleus": [0, 0, 0], "status": ["ok", "qc_flagged", "quarantined"]}
                 ).to_csv(m / "summary.tsv", sep="\t", index=False)
    pd.DataFrame({"well": ["A01"] * 3, "has_nucleus": [True] * 3}).to_parquet(m / "objects.parquet")
    pd.DataFrame({"Metadata_Well": ["A01"] * 3}).to_parquet(tmp_path / "f.parquet")
    pd.DataFrame({"Metadata_Well": ["A01"] * 3}).to_parquet(tmp_path / "cells.parquet")
    pd.DataFrame({"Metadata_Well": ["A01", "B01"], "Metadata_Count_Cells": [3, 0]}).to_parquet(
        tmp_path / "wells.parquet")
    led = L.paint_plate_ledger("P1", tmp_path / "index.parquet", [m], [tmp_path / "f.parquet"],
                               tmp_path / "cells.parquet", tmp_path / "wells.parquet", {"A01"})
    c = led["counts"]
    assert c["images_in"] == 15
    assert (c["images_used"], c["images_qc_flagged"], c["images_quarantined"]) == (5, 5, 5)
    assert (c["sites"], c["sites_segmented"], c["sites_qc_flagged"], c["sites_quarantined"]) == (3, 1, 1, 1)
    assert (c["objects_segmented"], c["nuclei_segmented"], c["nuclei_unmatched"]) == (3, 4, 1)
    assert (c["wells_profiled"], c["wells_not_profiled_no_cells"], c["cells_in_profiles"]) == (1, 1, 3)
    assert led["quarantine_reasons"] == {"site incomplete": 4, "missing file": 1}
    assert led["qc_flag_reasons"] == {"defocused": 1}
    assert all(e["balanced"] for e in led["equations"]), [e for e in led["equations"] if not e["balanced"]]
    # the segmentation summary missing a quarantined site is caught
    pd.DataFrame({"well": ["A01", "A01"], "site": [1, 2], "n_cells": [3, 0], "n_nuclei_detected": [4, 0],
                  "n_nuclei_dropped": [1, 0], "n_cells_without_nucleus": [0, 0],
                  "status": ["ok", "qc_flagged"]}).to_csv(m / "summary.tsv", sep="\t", index=False)
    led = L.paint_plate_ledger("P1", tmp_path / "index.parquet", [m], [tmp_path / "f.parquet"],
                               tmp_path / "cells.parquet", tmp_path / "wells.parquet", {"A01"})
    assert sorted(e["equation"] for e in led["equations"] if not e["balanced"]) == [
        "sites = sites_segmented + sites_qc_flagged + sites_quarantined",
        "sites_quarantined = sites_quarantined_in_index"]
