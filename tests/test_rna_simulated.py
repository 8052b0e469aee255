"""The whole RNA chain (stages: kb ref -> kb count -> load -> call/QC/doublets/guides -> merge) on the
simulated tiny screen, checked against the simulator's planted truth."""

from __future__ import annotations

from pathlib import Path

import anndata as ad
import pandas as pd
import pytest
from config_values import SCHEMA
from sklearn.metrics import roc_auc_score

from pairedscreen.config import load_config
from pairedscreen.rna import stages
from pairedscreen.simulate import simulate


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> dict:
    wd = simulate(tmp_path_factory.mktemp("tiny_rna"), preset="tiny")
    cfg = load_config(wd / "config" / "config.yaml")
    libs = pd.read_csv(wd / "config" / "rna_libraries.tsv", sep="\t")
    res = wd / "results"
    ref, gref = res / "reference" / "kb", res / "reference" / "guides"
    stages.run_kb_ref(wd / cfg["reference"]["fasta"], wd / cfg["reference"]["gtf"], ref / "index.idx",
                      ref / "t2g.txt", threads=2)
    stages.run_kb_ref_guides(wd / "config" / "guides.tsv", gref / "index.idx", gref / "t2g.txt",
                             gref / "features.tsv")
    cells = []
    for row in libs.itertuples():
        lib = res / "rna" / row.library_id
        for kind, idx, feats in (("gex", ref, None), ("guide", gref, gref / "features.tsv")):
            r1 = [wd / p for p in getattr(row, f"{kind}_fastq_r1").split(";")]
            r2 = [wd / p for p in getattr(row, f"{kind}_fastq_r2").split(";")]
            stages.run_kb_count(r1, r2, idx / "index.idx", idx / "t2g.txt", row.chemistry,
                                wd / cfg["rna"]["whitelist"], lib / f"kb_{kind}", threads=2, mem_mb=1536,
                                guide_features=feats)
        stages.run_rna_load(lib / "kb_gex", lib / "kb_guide", None, row.library_id, row.batch,
                            lib / "raw.h5ad", lib / "guides_raw.h5ad", lib / "inputs.json")
        stages.run_rna_cells(lib / "raw.h5ad", lib / "guides_raw.h5ad", wd / "config" / "guides.tsv",
                             wd / "config" / "perturbations.tsv", int(row.expected_cells), cfg["rna"],
                             lib / "cells.h5ad", lib / "barcode_ranks.parquet")
        cells.append(lib / "cells.h5ad")
    out = res / "rna"
    stages.run_rna_merge(cells, wd / "config" / "perturbations.tsv", cfg["rna"]["knockdown"]["alpha"],
                         out / "cells.h5ad", out / "pseudobulk.h5ad", out / "knockdown.tsv",
                         on_empty=SCHEMA["on_empty"])
    truth = pd.read_csv(wd / "truth" / "rna_barcodes.tsv", sep="\t", keep_default_na=False)
    truth.index = truth["library_id"] + "_" + truth["barcode"]
    return {"wd": Path(wd), "cfg": cfg, "truth": truth, "cells": ad.read_h5ad(res / "rna" / "cells.h5ad"),
            "raw": [ad.read_h5ad(p.parent / "raw.h5ad") for p in cells],
            "knockdown": pd.read_csv(res / "rna" / "knockdown.tsv", sep="\t"),
            "pseudobulk": ad.read_h5ad(res / "rna" / "pseudobulk.h5ad"),
            "perturbations": pd.read_csv(wd / "truth" / "perturbations.tsv", sep="\t")}


def test_cell_calling_vs_truth(run):
    truth, cells = run["truth"], run["cells"]
    is_cell = (truth["kind"] != "empty").to_numpy()
    called = truth.index.isin(cells.obs_names)
    recall = (called & is_cell).sum() / is_cell.sum()
    precision = (called & is_cell).sum() / called.sum()
    missed = truth.loc[is_cell & ~called, "kind"].value_counts().to_dict()
    print(f"\nsimulated cell calling: recall {recall:.3f}, precision {precision:.3f} "
          f"({called.sum()} called, {is_cell.sum()} true; missed by kind {missed})")
    assert recall >= 0.95 and precision >= 0.95
    assert set(cells.obs_names) <= set().union(*[set(r.obs_names) for r in run["raw"]])


def test_doublets_and_qc_vs_truth(run):
    truth, cells = run["truth"], run["cells"]
    kind = truth.reindex(cells.obs_names)["kind"].fillna("empty")
    auc = roc_auc_score(kind == "doublet", cells.obs["doublet_score"])
    lq = kind == "low_quality"
    lq_flag = (~cells.obs["pass_qc"][lq]).mean() if lq.any() else float("nan")
    ok_flag = (~cells.obs["pass_qc"][kind == "cell"]).mean()
    n_pred = int(cells.obs["predicted_doublet"].sum())
    print(f"\nsimulated doublets: scrublet AUROC {auc:.3f}, predicted {n_pred} "
          f"(true doublets called as cells {int((kind == 'doublet').sum())}); QC: low-quality flagged "
          f"{lq_flag:.3f}, true cells flagged {ok_flag:.3f}")
    assert auc > 0.5
    for col in ("total_counts", "n_genes_by_counts", "pct_counts_mt", "pct_counts_ribo", "qc_fail_counts",
                "qc_fail_genes", "qc_fail_mt", "pass_qc", "doublet_score", "predicted_doublet"):
        assert col in cells.obs


def test_guide_assignment_vs_truth(run):
    truth, cells = run["truth"], run["cells"]
    t = truth.reindex(cells.obs_names)
    single = (t["kind"] == "cell").to_numpy()
    acc = (cells.obs["guide_ids"].to_numpy()[single] == t["guide_ids"].to_numpy()[single]).mean()
    pert = cells.obs["perturbation"].to_numpy()
    pert_acc = (pert[single] == t["perturbation_id"].to_numpy()[single]).mean()
    dbl = (t["kind"] == "doublet").to_numpy()
    multi = (cells.obs["n_guides"].to_numpy()[dbl] > 1).mean() if dbl.any() else float("nan")
    print(f"\nsimulated guides: assignment accuracy on {single.sum()} true singlets {acc:.3f} "
          f"(perturbation {pert_acc:.3f}); doublets with >1 guide {multi:.2f}; "
          f"perturbation counts {cells.obs['perturbation'].value_counts().to_dict()}")
    assert acc >= 0.95
    assert cells.obs.loc[cells.obs["is_control"], "perturbation"].str.startswith("NTC").all()


def test_knockdowns_vs_truth(run):
    planted_cols = ["perturbation_id", "effect_class", "knockdown_remaining"]
    kd = run["knockdown"].merge(run["perturbations"][planted_cols])
    alpha = run["cfg"]["rna"]["knockdown"]["alpha"]
    print("\nsimulated knockdowns:\n" + kd[["perturbation_id", "effect_class", "knockdown_remaining",
                                           "remaining_fraction", "padj", "n_cells"]].to_string(index=False))
    planted = kd["knockdown_remaining"].notna()
    assert planted.any()
    assert (kd.loc[planted, "padj"] < alpha).all()
    neither = kd["effect_class"] == "neither"
    assert neither.any() and (kd.loc[neither, "padj"] >= alpha).all()
    pb = run["pseudobulk"]
    assert set(pb.obs_names) <= set(run["perturbations"]["perturbation_id"])
    assert "counts" in pb.layers and (pb.obs["n_cells"] > 0).all()
