"""A screen with one library from FASTQs (L1) and one from a Cell Ranger-layout folder (L2) runs through
pairing, the datasheet and the training export: the kb rules never run for L2, its cells and guide calls
equal those the FASTQ route made of the same counts, and the ledger balances for both libraries."""

from __future__ import annotations

import json
import shutil

import anndata as ad
import pandas as pd
import pytest
from cellranger_layout import outs_from_kb
from workdir import planned_jobs, snakemake

from pairedscreen.io import sha256sum
from pairedscreen.pair import ledger
from pairedscreen.simulate import simulate

FASTQ_COLUMNS = ("gex_fastq_r1", "gex_fastq_r2", "guide_fastq_r1", "guide_fastq_r2", "chemistry")


@pytest.fixture(scope="module")
def mixed(tmp_path_factory):
    """The tiny screen's L1 through the FASTQ route; L2 = a Cell Ranger-layout folder made of L1's own kb
    matrices (the tiny screen's simulated second library is refused by scrublet on either route: too few
    highly variable genes for its principal components). The workflow then runs L1 from FASTQs and L2 from
    the folder, so L2's cells and calls must equal L1's."""
    wd = simulate(tmp_path_factory.mktemp("cr_mixed") / "screen", preset="tiny")
    lib1 = wd / "results" / "rna" / "L1"
    res = snakemake(wd, "--cores", "2", "results/rna/L1/cells.h5ad")   # the FASTQ route of L1
    assert res.returncode == 0, (res.stdout + res.stderr)[-6000:]
    fastq_cells = wd.parent / "L1_fastq_cells.h5ad"
    shutil.copy(lib1 / "cells.h5ad", fastq_cells)
    truth = pd.read_csv(wd / "truth" / "rna_barcodes.tsv", sep="\t", keep_default_na=False)
    calls = truth[truth["library_id"] == "L1"].set_index("barcode")["guide_ids"]   # plays Cell Ranger's calls
    outs_from_kb(lib1 / "kb_gex", lib1 / "kb_guide", wd / "cellranger" / "L2" / "outs", "L2", calls=calls)
    sheet = wd / "config" / "rna_libraries.tsv"
    df = pd.read_csv(sheet, sep="\t", dtype=str, keep_default_na=False)
    df["cellranger_outs"] = ""
    l2 = df.iloc[0].copy()
    l2["library_id"], l2["cellranger_outs"] = "L2", "cellranger/L2/outs"
    l2[list(FASTQ_COLUMNS)] = ""
    pd.concat([df, l2.to_frame().T], ignore_index=True).to_csv(sheet, sep="\t", index=False)
    dry = snakemake(wd, "-n", "--cores", "2")
    assert dry.returncode == 0, (dry.stdout + dry.stderr)[-6000:]
    planned = planned_jobs(dry.stdout)
    res = snakemake(wd, "--cores", "2")
    assert res.returncode == 0, (res.stdout + res.stderr)[-6000:]
    return wd, planned, fastq_cells


def test_the_dag_loads_l2_from_its_cellranger_folder_without_kb(mixed):
    _, planned, _ = mixed
    l2 = {rule for rule, wc in planned if wc.get("library") == "L2"}
    assert "rna_load_cellranger" in l2 and "rna_cells" in l2
    assert not l2 & {"rna_fastq_check", "kb_count_gex", "kb_count_guide", "rna_load"}, l2


def test_cellranger_library_equals_the_fastq_route(mixed):
    wd, _, fastq_cells = mixed
    a, b = ad.read_h5ad(fastq_cells), ad.read_h5ad(wd / "results" / "rna" / "L2" / "cells.h5ad")
    assert list(b.obs["barcode"].str.removesuffix("-1")) == list(a.obs["barcode"])
    assert (a.X != b.X).nnz == 0
    for col in ("pass_qc", "predicted_doublet", "guide_ids", "perturbation"):
        assert list(a.obs[col]) == list(b.obs[col]), col
    assert "cellranger_guide_ids" in b.obs


def test_ledger_balances_for_both_libraries_and_the_datasheet_records_cellranger(mixed):
    wd, _, fastq_cells = mixed
    sheet = json.loads((wd / "results" / "datasheet.json").read_text())
    led = sheet["ledger"]
    checks = ledger.check_ledger(led)     # re-evaluated from the terms
    assert all(checks.values()), [k for k, ok in checks.items() if not ok]
    assert led["balanced"] is True and set(led["rna"]) == {"L1", "L2"}
    assert "gex_reads_in" in led["rna"]["L1"]["counts"] and "gex_reads_in" not in led["rna"]["L2"]["counts"]
    n2 = ad.read_h5ad(wd / "results" / "rna" / "L2" / "raw.h5ad", backed="r").n_obs
    assert led["rna"]["L2"]["counts"]["barcodes"] == n2
    cr = sheet["cellranger"]
    assert set(cr) == {"L2"} and cr["L2"]["software_version"] == "cellranger-8.0.1"
    ag = cr["L2"]["guide_agreement"]
    cells = ad.read_h5ad(fastq_cells)
    assert ag["cells"] == cells.n_obs and ag["same_guides"] + ag["ours_only"] + ag["cellranger_only"] + \
        ag["different"] == ag["cells"]
    h5 = wd / "cellranger" / "L2" / "outs" / "raw_feature_bc_matrix.h5"
    recorded = {r["path"]: r["sha256"] for r in sheet["inputs"] if r["role"] == "cellranger:L2"}
    assert recorded[str(h5.relative_to(wd))] == sha256sum(h5)   # as the sheet names it
    assert any(r["role"] == "fastq:L1" for r in sheet["inputs"])
    # the training export holds cells of both libraries
    train = ad.read_h5ad(next((wd / "results" / "train" / "rna").glob("*.h5ad")), backed="r")
    assert set(train.obs["library"].astype(str)) == {"L1", "L2"}
    assert (wd / "results" / "train" / "splits.tsv").exists()
