"""The HTML run report: collected data, self-containment, graceful degradation and a headless-browser check.

By default a small synthetic working directory (``results/`` + ``truth/``) is built following
docs/ARCHITECTURE.md, with a planted edge effect on the plate and planted knockdowns. Point
``PAIREDSCREEN_REPORT_WORKDIR`` at a finished run's working directory (with ``truth/``, e.g. ``demo/``)
to run the same checks against it.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import warnings
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import yaml
from config_values import SCHEMA

import pairedscreen.report as report_pkg
from pairedscreen.plate import is_edge_well, parse_well
from pairedscreen.report import collect_report_data
from pairedscreen.report.collect import ReportInputError

REPO = Path(__file__).resolve().parents[1]
REPORT_SRC = REPO / "src" / "pairedscreen" / "report"
CHANNELS = ["DNA", "ER", "RNA", "AGP", "Mito"]
EDGE_FACTOR = 1.30
KD_REMAINING = 0.15


# --------------------------------------------------------------------------------------------- fixture


def _write_h5ad(adata: Any, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    adata.write_h5ad(path)


def _registry() -> pd.DataFrame:
    rows = []
    classes = ["both", "both", "rna", "rna", "paint", "paint", "neither", "neither"]
    for i, cls in enumerate(classes):
        g = f"TGT{i + 1:02d}"
        rows.append({"perturbation_id": g, "perturbation_type": "CRISPRi", "target_gene": g,
                     "is_control": False, "control_type": "", "effect_class": cls,
                     "rna_active": cls in ("both", "rna"), "paint_active": cls in ("both", "paint"),
                     "knockdown_remaining": KD_REMAINING if cls in ("both", "rna") else np.nan})
    for i in range(2):
        rows.append({"perturbation_id": f"NTC_{i + 1}", "perturbation_type": "control", "target_gene": "",
                     "is_control": True, "control_type": "non-targeting", "effect_class": "control",
                     "rna_active": False, "paint_active": False, "knockdown_remaining": np.nan})
    return pd.DataFrame(rows)


def _rna_library(results: Path, lib: str, batch: str, reg: pd.DataFrame, rng: np.random.Generator,
                 n_cells: int = 240, n_empty: int = 1500) -> None:
    import anndata as ad
    import scipy.sparse as sp

    n_genes = 60
    genes = [f"MT-{i}" for i in range(4)] + [f"RPL{i}" for i in range(4)] + \
        reg.loc[~reg.is_control, "target_gene"].tolist() + [f"GENE{i:03d}" for i in range(44)]
    cell_umis = rng.lognormal(np.log(1500), 0.35, n_cells)
    cell_umis[:8] = rng.uniform(50, 150, 8)                     # a few low-quality cells
    empty_umis = rng.lognormal(np.log(12), 0.6, n_empty)
    totals = np.concatenate([cell_umis, empty_umis])
    p = rng.dirichlet(np.ones(n_genes) * 2.0)
    x = rng.poisson(np.outer(totals, p)).astype(np.int32)
    barcodes = ["".join(rng.choice(list("ACGT"), 16)) for _ in range(len(totals))]
    obs_names = [f"{lib}_{b}" for b in barcodes]
    raw = ad.AnnData(sp.csr_matrix(x), obs=pd.DataFrame(index=obs_names),
                     var=pd.DataFrame({"gene_id": [f"G{i}" for i in range(n_genes)]}, index=genes))
    (results / "rna" / lib).mkdir(parents=True, exist_ok=True)
    (results / "rna" / lib / "inputs.json").write_text(json.dumps(
        {"library": lib, "fastqs": {}, "kb_guide": {},
         "kb_gex": {"n_processed": int(totals.sum() * 1.6), "n_pseudoaligned": int(totals.sum() * 1.2)}}))

    cx = x[:n_cells]
    total = cx.sum(1).astype(float)
    n_genes_by = (cx > 0).sum(1)
    pct_mt = 100 * cx[:, :4].sum(1) / np.maximum(total, 1)
    pct_ribo = 100 * cx[:, 4:8].sum(1) / np.maximum(total, 1)
    pids = reg.perturbation_id.tolist()
    guides = [f"{pid}-g{g}" for pid in pids for g in (1, 2)]
    pert = rng.choice(pids, n_cells)
    gcounts = rng.poisson(1.0, (n_cells, len(guides)))
    n_guides = np.ones(n_cells, int)
    for i, pid in enumerate(pert):
        gcounts[i, guides.index(f"{pid}-g{rng.integers(1, 3)}")] += rng.poisson(40)
    pert = pert.astype(object)
    pert[:5] = "unassigned"
    n_guides[:5] = 0
    pert[5:10] = "multiple"
    n_guides[5:10] = 2
    dbl = rng.beta(2, 12, n_cells)
    dbl[10:25] = rng.uniform(0.4, 0.8, 15)
    # stored bounds deliberately unlike a MAD recomputation: the report must print these, not its own
    bounds = {"total_counts": {"lower": 300.0, "upper": 6000.0},
              "n_genes_by_counts": {"lower": 20.5, "upper": 60.5}, "pct_counts_mt": {"upper": 12.0}}
    obs = pd.DataFrame({
        "library": lib, "batch": batch, "barcode": barcodes[:n_cells], "total_counts": total,
        "n_genes_by_counts": n_genes_by, "pct_counts_mt": pct_mt, "pct_counts_ribo": pct_ribo,
        "qc_fail_counts": (total < 300) | (total > 6000),
        "qc_fail_genes": (n_genes_by < 20.5) | (n_genes_by > 60.5), "qc_fail_mt": pct_mt > 12.0,
        "doublet_score": dbl, "predicted_doublet": dbl >= 0.4,
        "guide_ids": ["" for _ in range(n_cells)], "n_guides": n_guides, "perturbation": pert,
        "is_control": [str(p).startswith("NTC") for p in pert],
    }, index=obs_names[:n_cells])
    obs["pass_qc"] = ~obs.qc_fail_counts & ~obs.qc_fail_genes & ~obs.qc_fail_mt
    cells = ad.AnnData(sp.csr_matrix(cx), obs=obs, var=raw.var.copy())
    cells.obsm["guide_counts"] = gcounts
    cells.uns["cell_calling"] = {"knee": 1200.0, "inflection": 400.0, "threshold": 200.0, "fdr": 0.01}
    cells.uns["guide_thresholds"] = pd.DataFrame([[float(rng.integers(4, 9)) for _ in guides]],
                                                 index=pd.Index([lib], name="group"), columns=guides)
    # the guide stage's own statistics; L2 with a bar (0) its unassigned 40-UMI cells exceed (a warning)
    from pairedscreen.rna.guides import assignment_stats

    cells.obs["guide_umis"] = gcounts.sum(1)
    bar = 0.0 if lib == "L2" else 0.5
    stats = assignment_stats(cells.obs, many_umis=0, max_unassigned_many=bar)
    cells.uns["guide_assignment"] = {"method": "mixture", "min_umis": 3, "max_unassigned_many": bar,
                                     **{k: v for k, v in stats.items() if v is not None}}
    cells.uns["qc_thresholds"] = {**bounds, "nmads_counts": 5.0, "nmads_genes": 5.0, "nmads_mt": 3.0,
                                  "max_pct_mt": 12.0}
    cells.uns["doublets"] = {"method": "scrublet", "expected_rate": 0.06, "threshold": 0.4}
    _write_h5ad(cells, results / "rna" / lib / "cells.h5ad")
    # the cell-calling rank table
    nz = totals > 0
    rk = pd.DataFrame({"obs_name": np.array(obs_names)[nz], "barcode": np.array(barcodes)[nz],
                       "total": x.sum(1)[nz], "is_cell": (np.arange(len(totals)) < n_cells)[nz]})
    rk = rk.sort_values("total", ascending=False, kind="stable").reset_index(drop=True)
    rk.insert(3, "rank", np.arange(1, len(rk) + 1))
    rk.to_parquet(results / "rna" / lib / "barcode_ranks.parquet", index=False)


def _paint_plate(work: Path, plate: str, reg: pd.DataFrame, rng: np.random.Generator) -> pd.DataFrame:
    import tifffile

    results = work / "results"
    base = results / "paint" / plate
    wells = [f"{r}{c:02d}" for r in "ABCDEFGHIJKLMNOP" for c in range(1, 25)]
    pids = reg.perturbation_id.tolist()
    pmap = pd.DataFrame({"well": wells, "perturbation_id": [pids[i % len(pids)] for i in range(len(wells))]})
    edge = np.array([is_edge_well(w) for w in wells])
    mult = np.where(edge, EDGE_FACTOR, 1.0)
    feats: dict[str, np.ndarray] = {}
    paint_active = reg.set_index("perturbation_id").paint_active
    shift = pmap.perturbation_id.map(paint_active).to_numpy(float)
    for ch in CHANNELS:
        noise = 1 + 0.05 * rng.standard_normal((2, len(wells)))
        feats[f"Cells_Intensity_MeanIntensity_{ch}"] = 0.2 * mult * noise[0]
        feats[f"Nuclei_Intensity_IntegratedIntensity_{ch}"] = 50 * mult * noise[1]
    for k in range(6):
        feats[f"Cells_AreaShape_Shape{k}"] = rng.standard_normal(len(wells)) + 1.5 * shift
    wdf = pd.DataFrame({"Metadata_Plate": plate, "Metadata_Well": wells,
                        "Metadata_Perturbation": pmap.perturbation_id,
                        "Metadata_Count_Cells": rng.integers(20, 40, len(wells)), **feats})
    base.mkdir(parents=True, exist_ok=True)
    wdf.to_parquet(base / "wells.parquet", index=False)

    # image index: 1 site per well, 5 channels; a few blurry sites and one quarantined file
    rows = []
    for w in wells:
        for ci, ch in enumerate(CHANNELS, start=1):
            rows.append({"plate": plate, "well": w, "site": 1, "channel": ch, "channel_index": ci,
                         "path": f"raw/images/{plate}/{w}_s1_w{ci}.tif", "height": 64, "width": 64,
                         "dtype": "uint16", "sha256": "0" * 64, "status": "ok", "reason": "",
                         "focus_plls": -1.5 + 0.1 * rng.standard_normal(), "saturation_pct": 0.05,
                         "p01": 100.0, "p50": 400.0, "p99": 2000.0, "qc_flag": False, "qc_reason": ""})
    idx = pd.DataFrame(rows)
    blurry = (idx.well.isin(["C05", "K17"])) & (idx.channel == "DNA")
    idx.loc[blurry, ["qc_flag", "qc_reason", "focus_plls"]] = [True, "blurry (focus_plls < -3)", -3.5]
    q = (idx.well == "F09") & (idx.channel == "Mito")
    idx.loc[q, ["status", "reason"]] = ["quarantined", "truncated TIFF"]
    idx.to_parquet(base / "image_index.parquet", index=False)

    # illumination functions: radial vignetting, mean 1
    yy, xx = np.mgrid[0:64, 0:64]
    rr = np.hypot(yy - 31.5, xx - 31.5) / 45
    (base / "illum").mkdir(exist_ok=True)
    for ch in CHANNELS:
        f = (1 - 0.35 * rr ** 2).astype(np.float32)
        np.save(base / "illum" / f"{ch}.npy", f / f.mean())

    # one segmented site with its raw images
    nuclei = np.zeros((64, 64), np.uint16)
    cells = np.zeros((64, 64), np.uint16)
    centres = [(14, 14), (14, 46), (46, 16), (44, 46), (30, 30)]
    for k, (cy, cx) in enumerate(centres, start=1):
        cells[(yy - cy) ** 2 + (xx - cx) ** 2 < 11 ** 2] = k
    for k, (cy, cx) in enumerate(centres, start=1):
        nuclei[(yy - cy) ** 2 + (xx - cx) ** 2 < 5 ** 2] = k
    mdir = base / "masks" / "chunk000"
    mdir.mkdir(parents=True, exist_ok=True)
    for name, lab in (("nuclei", nuclei), ("cells", cells), ("cytoplasm", np.where(nuclei > 0, 0, cells))):
        tifffile.imwrite(mdir / f"B02_s1_{name}.tif", lab.astype(np.uint16), compression="zlib")
    pd.DataFrame({"well": "B02", "site": 1, "object_id": np.arange(1, 6), "has_nucleus": True,
                  "nucleus_area": 78, "cell_area": 380}).to_parquet(mdir / "objects.parquet", index=False)
    img_dir = work / "raw" / "images" / plate
    img_dir.mkdir(parents=True, exist_ok=True)
    for ci, ch in enumerate(CHANNELS, start=1):
        src = nuclei if ch == "DNA" else cells
        img = (300 + 2500 * (src > 0) + rng.normal(0, 80, (64, 64))).clip(0, 65535).astype(np.uint16)
        tifffile.imwrite(img_dir / f"B02_s1_w{ci}.tif", img)
    pd.DataFrame({"plate": plate, "well": ["B02"] * 5, "site": 1, "object_id": np.arange(1, 6),
                  "perturbation_id": "TGT01"}).to_parquet(base / "cells.parquet", index=False)
    return wdf


def make_synthetic_workdir(work: Path, seed: int = 0, plates: tuple[str, ...] = ("P1",), n_cells: int = 240,
                           n_empty: int = 1500) -> Path:
    """A small results/ + truth/ tree following docs/ARCHITECTURE.md; returns the working directory.

    Defaults keep the test fast; ``plates=("P1", "P2"), n_cells=600, n_empty=3000`` is demo-sized.
    """
    import anndata as ad
    import mudata as md

    rng = np.random.default_rng(seed)
    results = work / "results"
    reg = _registry()
    for lib, batch in (("L1", "b1"), ("L2", "b2")):
        _rna_library(results, lib, batch, reg, rng, n_cells=n_cells, n_empty=n_empty)

    kd_rows = []
    for r in reg.itertuples():
        if r.is_control:
            continue
        rem = r.knockdown_remaining if np.isfinite(r.knockdown_remaining) else rng.uniform(0.9, 1.1)
        kd_rows.append({"perturbation_id": r.perturbation_id, "target_gene": r.target_gene,
                        "log2fc": float(np.log2(rem)), "pvalue": 1e-8 if rem < 0.5 else 0.6,
                        "padj": 1e-7 if rem < 0.5 else 0.8, "remaining_fraction": float(rem), "n_cells": 40,
                        "significant": bool(rem < 0.5)})
    (results / "rna").mkdir(parents=True, exist_ok=True)
    pd.DataFrame(kd_rows).to_csv(results / "rna" / "knockdown.tsv", sep="\t", index=False)

    wells = {p: _paint_plate(work, p, reg, rng) for p in plates}
    wdf = pd.concat(wells.values(), ignore_index=True)
    feats = [c for c in wdf if not c.startswith("Metadata_")]
    profs = []
    for prof in wells.values():  # per-plate robust normalisation: keeps the edge effect (no correction)
        prof = prof.copy()
        med = prof[feats].median()
        prof[feats] = (prof[feats] - med) / ((prof[feats] - med).abs().median() * 1.4826)
        profs.append(prof)
    profiles = pd.concat(profs, ignore_index=True)

    # paired perturbation-level modalities; `both` perturbations share a direction in both arms
    ids = reg.perturbation_id.tolist()
    obs = reg.set_index("perturbation_id")[["perturbation_type", "target_gene", "is_control", "control_type"]]
    prog_r, prog_p = rng.standard_normal(40), rng.standard_normal(12)
    xr = rng.normal(0, 0.1, (len(ids), 40))
    xp = rng.normal(0, 0.1, (len(ids), 12))
    for i, r in enumerate(reg.itertuples()):
        if r.effect_class in ("both", "rna"):
            xr[i] += prog_r if r.effect_class == "both" else rng.standard_normal(40)
        if r.effect_class in ("both", "paint"):
            xp[i] += prog_p if r.effect_class == "both" else rng.standard_normal(12)
    rna_ad = ad.AnnData(xr, obs=obs.assign(n_cells=40),
                        var=pd.DataFrame(index=[f"GENE{i:03d}" for i in range(40)]))
    paint_ad = ad.AnnData(xp, obs=obs.assign(n_wells=4), var=pd.DataFrame(index=feats[:12]))
    with warnings.catch_warnings():  # mudata 0.3 announces a 0.4 behaviour change on every MuData()
        warnings.simplefilter("ignore", FutureWarning)
        mdata = md.MuData({"rna": rna_ad, "paint": paint_ad})
        (results / "paired").mkdir(parents=True, exist_ok=True)
        mdata.write(results / "paired" / "perturbations.h5mu")

    def _arm(active: str, kind: str) -> dict[str, Any]:
        rows = []
        for r in reg.itertuples():
            act = bool(getattr(r, active))
            row = {"perturbation": r.perturbation_id, "is_control": bool(r.is_control),
                   "p_value": 0.0005 if act else 0.6, "q_value": 0.001 if act else 0.7}
            if kind == "replicate":
                m = (0.8 if act else 0.1) + 0.05 * rng.standard_normal()
                row["mean_average_precision"] = float(np.clip(m, 0, 1))
            else:
                row["edistance"] = float((3.0 if act else 0.2) + 0.1 * rng.standard_normal())
            rows.append(row)
        n_hits = int(sum(bool(getattr(r, active)) for r in reg.itertuples()))
        return {"n_scored": len(rows), "n_hits": n_hits, "n_controls_called": 0,
                "fraction_active": n_hits / int((~reg.is_control).sum()), "alpha": 0.05,
                "per_perturbation": rows}

    config = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    config["truth_dir"] = "truth"
    # the quality stage's stored results, made by its own functions on the synthetic profiles
    from pairedscreen.quality import concordance, position

    is_ctrl = reg.is_control.to_numpy(bool)
    conc = concordance.concordance(xr, xp, is_ctrl, n_permutations=99, seed=0)
    conc["active_in_both"] = concordance.concordance(xr, xp, is_ctrl, n_permutations=99, seed=0,
                                                     subset=~reg.effect_class.isin(["neither"]).to_numpy(),
                                                     labels=ids)
    (results / "quality").mkdir(parents=True, exist_ok=True)
    concordance.similarity_pairs(xr, xp, is_ctrl, ids).to_parquet(results / "quality" / "similarity.parquet")
    pos = {}
    r2 = []
    for stage, frame in (("before", wdf), ("after", profiles)):
        pos[stage] = position.summarize(position.position_effects(frame, feats, n_permutations=99, seed=0),
                                        alpha=SCHEMA["quality.alpha"])
        r2.append(position.feature_r2(frame, feats).assign(profiles=stage))
    pd.concat(r2, ignore_index=True).to_parquet(results / "quality" / "position.parquet")
    datasheet = {
        "schema_version": "1.0",
        "software": {"python": "3.11.9", "pairedscreen": "0.1.0", "snakemake": "9.27.1",
                     "scanpy": "1.11.5"},
        "inputs": [{"role": "gex_fastq", "path": "raw/fastq/L1_gex_R1.fastq.gz", "bytes": 1234,
                    "sha256": "cd" * 32},
                   {"role": "images", "path": "raw/images/P1/A01_s1_w1.tif", "bytes": 8192,
                    "sha256": "ef" * 32}],
        "config": config,
        "config_sha256": "ab" * 32,
        "arms": {"rna": {"status": "present", "units": ["L1", "L2"], "used": ["L1", "L2"]},
                 "paint": {"status": "present", "units": list(plates), "used": list(plates)}},
        "quarantine": [],
        "counts": {
            "rna": {"reads": 700_000, "barcodes": 3480, "cells_called": 480, "cells_kept": 420,
                    "cells_removed": {"counts": 16, "genes": 0, "mt": 2, "doublet": 30,
                                      "unassigned_guide": 10, "multiple_guides": 10},
                    "cells_kept_by_library": {"L1": 210, "L2": 210}},
            "paint": {"images": 1920, "images_quarantined": 1, "sites": 384, "sites_flagged": 2,
                      "objects": 5, "cells_profiled": 5, "wells_profiled": 384},
            "pair": {"libraries": ["L1", "L2"], "plates": list(plates)},
        },
        "metrics": {
            "replicate": {"rna": _arm("rna_active", "replicate"), "paint": _arm("paint_active", "replicate")},
            "effect": {"rna": _arm("rna_active", "effect"), "paint": _arm("paint_active", "effect")},
            "position": pos,
            "batch": {"rna": {"n_samples": 480, "n_classes": 2, "accuracy": 0.55, "chance": 0.5,
                              "majority_rate": 0.5, "p_value": 0.2},
                      "paint": {"n_samples": 384, "n_classes": 1, "accuracy": None, "chance": None,
                                "majority_rate": None, "p_value": None}},
            "concordance": conc,
        },
        "truth_recovery": {
            "rna": {"precision": 1.0, "recall": 1.0, "n_scored": 10, "n_called": 4, "n_true_active": 4,
                    "controls_called": 0},
            "paint": {"precision": 1.0, "recall": 1.0, "n_scored": 10, "n_called": 4, "n_true_active": 4,
                      "controls_called": 0},
            "edge": {"planted": True, "detected": True, "correct": True, "edge_definition_agreement": 1.0},
        },
    }
    from pairedscreen.pair.datasheet import guide_assignment_stats

    guide = {lib: guide_assignment_stats(results / "rna" / lib / "cells.h5ad") for lib in ("L1", "L2")}
    datasheet["counts"]["rna"]["guide_assignment_by_library"] = {k: v[0] for k, v in guide.items()}
    datasheet["warnings"] = [f"library {k}: guide assignment: {v[1]}" for k, v in guide.items() if v[1]]
    try:
        from pairedscreen.pair.datasheet import validate_datasheet
    except ImportError:  # pragma: no cover - the pair stage is not there yet
        validate_datasheet = None
    if validate_datasheet is not None:
        validate_datasheet(datasheet)
    (results / "datasheet.json").write_text(json.dumps(datasheet, indent=2))
    (results / "quality" / "metrics.json").write_text(json.dumps(
        {**datasheet["metrics"], "truth_recovery": datasheet["truth_recovery"]}, indent=2))
    table = pd.DataFrame({"perturbation_id": ids})
    for kind, block in (("map", "replicate"), ("effect", "effect")):
        for arm in ("rna", "paint"):
            t = pd.DataFrame(datasheet["metrics"][block][arm]["per_perturbation"])
            if kind == "map":
                t = t.rename(columns={"mean_average_precision": f"{arm}_map", "q_value": f"{arm}_q_value"})
                t[f"{arm}_active"] = t[f"{arm}_q_value"] < 0.05
                t = t[["perturbation", f"{arm}_map", f"{arm}_q_value", f"{arm}_active"]]
            else:
                t = t.rename(columns={"edistance": f"{arm}_edistance", "q_value": f"{arm}_effect_q"})
                t = t[["perturbation", f"{arm}_edistance", f"{arm}_effect_q"]]
            table = table.merge(t.rename(columns={"perturbation": "perturbation_id"}), on="perturbation_id",
                                how="left")
    kd = pd.DataFrame(kd_rows)[["perturbation_id", "log2fc", "padj", "remaining_fraction"]]
    table = table.merge(kd.rename(columns={c: f"rna_knockdown_{c}" for c in kd.columns[1:]}),
                        on="perturbation_id", how="left")
    table.to_csv(results / "quality" / "perturbations.tsv", sep="\t", index=False)

    truth = work / "truth"
    truth.mkdir(parents=True, exist_ok=True)
    reg.to_csv(truth / "perturbations.tsv", sep="\t", index=False)
    pd.DataFrame({"plate": wdf.Metadata_Plate, "well": wdf.Metadata_Well,
                  "is_edge": [is_edge_well(w) for w in wdf.Metadata_Well],
                  "perturbation_id": wdf.Metadata_Perturbation,
                  "edge_multiplier": [EDGE_FACTOR if is_edge_well(w) else 1.0 for w in wdf.Metadata_Well]}
                 ).to_csv(truth / "paint_wells.tsv", sep="\t", index=False)
    return work


# --------------------------------------------------------------------------------------------- fixtures


def _config(work: Path) -> dict[str, Any]:
    cfg_path = work / "config" / "config.yaml"
    if not cfg_path.exists():
        cfg_path = REPO / "config" / "config.yaml"
    return yaml.safe_load(cfg_path.read_text())


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    env = os.environ.get("PAIREDSCREEN_REPORT_WORKDIR")
    if env:
        return Path(env).resolve()
    return make_synthetic_workdir(tmp_path_factory.mktemp("report_run"))


@pytest.fixture(scope="module")
def built(workdir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    out = tmp_path_factory.mktemp("report_out") / "report.html"
    info = report_pkg.build_report(workdir / "results", _config(workdir), out, truth_dir=workdir / "truth")
    print(f"report: {info['timing']['total_s']:.2f} s, {info['size_bytes'] / 1e6:.2f} MB -> {out}")
    return info


# --------------------------------------------------------------------------------------------- tests


def test_report_is_self_contained(built: dict[str, Any]) -> None:
    html = Path(built["out_html"]).read_text()
    for sid in ("overview", "rna", "paint", "paired", "tables"):
        assert f'id="{sid}"' in html
    assert not re.search(r"""(?:src|href|action|poster|data)\s*=\s*["']?\s*(?:https?:)?//""", html, re.I)
    assert not re.search(r"url\(\s*['\"]?\s*(?:https?:)?//", html, re.I)
    assert not re.search(r"@import|fetch\(|XMLHttpRequest|<link[^>]+rel=[\"']?stylesheet", html, re.I)
    assert built["size_bytes"] < 20e6


def test_plate_heatmap_shows_planted_edge_effect(built: dict[str, Any], workdir: Path) -> None:
    data = built["data"]
    truth = pd.read_csv(workdir / "truth" / "paint_wells.tsv", sep="\t")
    truth["is_edge"] = truth["is_edge"].astype(str).str.lower().isin(["true", "1"])
    mult_col = next((c for c in truth.columns if "mult" in c.lower()), None)
    assert data["paint"]["plates"]
    for plate, pdata in data["paint"]["plates"].items():
        t = truth[truth.plate.astype(str) == plate]
        if not (t.is_edge.any() and (~t.is_edge).any()):
            continue  # this plate map has no interior (or no edge) wells: nothing planted to see
        planted = float(t.loc[t.is_edge, mult_col].mean() / t.loc[~t.is_edge, mult_col].mean()) \
            if mult_col else 1.1
        assert planted > 1.05
        feat = pdata["feature"]
        assert feat is not None and "Intensity" in feat
        grid = pdata["heatmaps"][feat]
        assert grid.shape == (16, 24)
        # the planted multiplicative edge effect survives into the heatmap data, at the truth's edge wells
        rc = [parse_well(w) for w in t.well]
        vals = np.array([grid[r, c] for r, c in rc])
        edge, interior = vals[t.is_edge.to_numpy()], vals[~t.is_edge.to_numpy()]
        ratio = np.nanmean(edge) / np.nanmean(interior)
        assert ratio > 1 + 0.5 * (planted - 1), (plate, ratio, planted)
        assert {"cells per well"} <= set(pdata["heatmaps"])
        assert any(k.startswith("focus") for k in pdata["heatmaps"])


def test_knockdown_chart_shows_planted_knockdowns(built: dict[str, Any], workdir: Path) -> None:
    kd = built["data"]["rna"]["knockdown"]
    truth = pd.read_csv(workdir / "truth" / "perturbations.tsv", sep="\t")
    planted = set(truth.loc[truth.knockdown_remaining.notna(), "perturbation_id"].astype(str))
    inert = set(truth.loc[(truth.effect_class == "neither"), "perturbation_id"].astype(str))
    assert planted and kd is not None
    kd = kd.set_index(kd.perturbation_id.astype(str))
    assert kd.loc[sorted(planted), "significant"].all()
    assert (kd.loc[sorted(planted), "remaining_fraction"] < 0.5).all()
    assert not kd.loc[sorted(inert & set(kd.index)), "significant"].any()
    # the chart colours exactly the planted knockdowns as significant (unexpressed targets stay grey)
    assert set(kd.index[kd["significant"].astype(bool)]) == planted


def test_collected_sections(built: dict[str, Any]) -> None:
    data = built["data"]
    ov = data["overview"]
    assert ov["provenance"]["pairedscreen version"] and ov["provenance"]["config digest (sha256)"]
    assert not ov["rna_counts"].empty and not ov["paint_counts"].empty
    assert not ov["rna_funnel"].empty and not ov["paint_funnel"].empty
    assert ov["rna_funnel"]["count"].is_monotonic_decreasing
    assert any("quarantined" in w for w in ov["warnings"])
    # the guide stage's warning (L2: unassigned cells with many guide UMIs) reaches the report, L1's not
    guide_warnings = [w for w in ov["warnings"] if "guide assignment" in w]
    assert len(guide_warnings) == 1 and guide_warnings[0].startswith("library L2:")
    assert "have no guide call" in guide_warnings[0]
    rates = ov["rna_counts"].set_index("library")
    for lib, d in data["rna"]["libraries"].items():
        n = d["counts"]["cells_called"]   # the fixture leaves exactly 5 cells unassigned per library
        assert rates.loc[lib, "guide_assignment_rate"] == round((n - 5) / n, 4)
        assert 0 < rates.loc[lib, "guide_unassigned_many_share"] < 0.1
    for lib, d in data["rna"]["libraries"].items():
        assert d["knee"]["n_called"] > 0, lib
        assert "total_counts" in d["qc"] and np.isfinite(d["qc"]["total_counts"]["upper"])
        assert d["knee"] is not None, lib
        assert d["doublets"]["scores"].size == d["counts"]["cells_called"]
        assert d["moi"].n_cells.sum() == d["counts"]["cells_pass_qc"]
    for plate, p in data["paint"]["plates"].items():
        assert set(p["illum"]) >= {"DNA"}, plate
        assert p["overlay"] is not None and p["overlay"]["n_nuclei"] > 0
    paired = data["paired"]
    tab = paired["per_perturbation"]
    assert {"rna_map", "paint_map"} <= set(tab.columns)
    assert paired["concordance"]["n_perturbations"] > 2
    assert paired["position"] is not None
    assert paired["truth_recovery"] is not None and not paired["truth_recovery"].empty


class _Tables(HTMLParser):
    """Every ``<table id="tbl-...">`` of a page: id -> (header, rows of data-sort keys)."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: dict[str, tuple[list[str], list[list[str]]]] = {}
        self._id: str | None = None
        self._in_th = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "table" and str(a.get("id", "")).startswith("tbl-"):
            self._id = str(a["id"])[4:]
            self.tables[self._id] = ([], [])
        elif self._id is None:
            return
        elif tag == "th":
            self._in_th = True
            self.tables[self._id][0].append("")
        elif tag == "tr" and self.tables[self._id][0]:
            self.tables[self._id][1].append([])
        elif tag == "td":
            self.tables[self._id][1][-1].append(a.get("data-sort") or "")

    def handle_endtag(self, tag: str) -> None:
        if tag == "table":
            self._id = None
        elif tag == "th":
            self._in_th = False

    def handle_data(self, data: str) -> None:
        if self._id is not None and self._in_th:
            self.tables[self._id][0][-1] += data


def html_tables(html: str) -> dict[str, pd.DataFrame]:
    parser = _Tables()
    parser.feed(html)
    return {k: pd.DataFrame([r for r in rows if r], columns=head)
            for k, (head, rows) in parser.tables.items()}


def _printed(cell: str, value: Any) -> bool:
    """Whether a table cell's machine-readable value is the stored ``value`` (to the 7 digits printed)."""
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return cell == ""
    if isinstance(value, bool):
        return cell == ("1" if value else "0")
    if isinstance(value, str):
        return cell == value
    return bool(np.isclose(float(cell), float(value), rtol=1e-6, atol=0))


def _scalars(obj: Any, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in obj.items():
        if isinstance(v, dict):
            out.update(_scalars(v, f"{prefix}{k}."))
        elif not isinstance(v, list):
            out[f"{prefix}{k}"] = v
    return out


def check_report_matches_stored(html: str, data: dict[str, Any], workdir: Path) -> int:
    """Every concordance, QC-bound and plate-position figure the report prints equals the stored value
    (metrics.json, cells.h5ad uns['qc_thresholds']), and the stored tables behind its plots agree with
    metrics.json. Returns the number of figures compared."""
    import anndata as ad

    res = workdir / "results"
    metrics = json.loads((res / "quality" / "metrics.json").read_text())
    tables = html_tables(html)
    n = 0
    # concordance: the table prints metrics.json's block; the plotted matrices are the stored ones, whose
    # off-diagonal Pearson correlation is the Mantel r of metrics.json
    conc = tables["concordance"].set_index("item")["value"]
    for key, v in _scalars(metrics["concordance"]).items():
        if key not in conc:  # the key/value table leaves out what the quality stage could not compute
            assert v is None, (key, v)
            continue
        assert _printed(conc[key], v), (key, conc[key], v)
        n += 1
    sim = pd.read_parquet(res / "quality" / "similarity.parquet")
    off = sim[sim.perturbation_a != sim.perturbation_b]
    plotted = data["paired"]["concordance"]
    assert plotted["n_perturbations"] == metrics["concordance"]["n_perturbations"]
    assert np.array_equal(np.sort(plotted["pairs_rna"]), np.sort(off.rna_similarity.to_numpy()))
    assert plotted["mantel_r"] == metrics["concordance"]["mantel_r"]
    if metrics["concordance"]["mantel_r"] is not None:
        r = np.corrcoef(off.rna_similarity, off.paint_similarity)[0, 1]
        assert np.isclose(r, metrics["concordance"]["mantel_r"], rtol=1e-9), (r, metrics["concordance"])
    # QC bounds: printed per library = uns['qc_thresholds'] of the library's cells.h5ad (what rna.qc used)
    for lib, d in data["rna"]["libraries"].items():
        uns = ad.read_h5ad(res / "rna" / lib / "cells.h5ad", backed="r").uns["qc_thresholds"]
        qc = tables[f"qc-{lib}"].set_index("metric")
        for metric in ("total_counts", "n_genes_by_counts", "pct_counts_mt"):
            for side in ("lower", "upper"):
                stored = uns[metric].get(side) if metric in uns else None
                stored = None if stored is None else float(stored)
                assert d["qc"][metric][side] == stored, (lib, metric, side)
                assert _printed(qc.loc[metric, side], stored), (lib, metric, side, qc.loc[metric, side])
                n += 1
    # plate position: printed per plate and in the paired table = metrics.position; the stored per-feature
    # R^2 behind the plot have the metrics' per-plate medians
    pos_all = tables["position"]
    r2 = pd.read_parquet(res / "quality" / "position.parquet")
    for stage in ("before", "after"):
        block = metrics["position"][stage]
        assert data["paired"]["position"][f"median_{stage}"] == block["median_r2_edge"]
        for plate, vals in block["plates"].items():
            row = pos_all[(pos_all.profiles == stage) & (pos_all.plate == plate)]
            own = tables[f"position-{plate}"]
            own = own[own.profiles == stage]
            for key, v in vals.items():
                assert _printed(row[key].iloc[0], v), (stage, plate, key)
                assert _printed(own[key].iloc[0], v), (stage, plate, key)
                n += 2
            feat = r2[(r2.profiles == stage) & (r2.plate == plate)].r2_edge.to_numpy(float)
            assert np.nanmedian(feat) == vals["r2_edge"], (stage, plate, np.nanmedian(feat), vals)
    return n


def test_report_prints_the_stored_numbers(built: dict[str, Any], workdir: Path) -> None:
    n = check_report_matches_stored(Path(built["out_html"]).read_text(), built["data"], workdir)
    assert n > 20


def test_report_reads_only_stored_results(built: dict[str, Any], workdir: Path) -> None:
    """Every file the report opened is a stored result named by paths.PATHS, the truth folder, or a raw
    image its plate's image index names (the segmentation overlay)."""
    from pairedscreen.paths import PATHS

    patterns = [re.compile("^" + re.sub(r"\\{\w+\\}", "[^/]+", re.escape(v)) + "(/.*)?$")
                for v in PATHS.values()]
    read = built["data"]["inputs_read"]
    assert read
    indexed = {x for f in (workdir / "results" / "paint").glob("*/image_index.parquet")
               for x in pd.read_parquet(f, columns=["path"])["path"]}
    for p in read:
        rel = p.relative_to(workdir).as_posix()
        assert rel.startswith("truth/") or any(pt.match(rel) for pt in patterns) or rel in indexed, rel


def test_no_second_implementation_under_report() -> None:
    """The report draws stored results: no statistic, no MAD bound, no plate geometry of its own."""
    forbidden = {
        "1.4826": "MAD scale factor (rna.qc owns the QC bounds)",
        "np.median(np.abs": "a MAD",
        "mantel(": "a Mantel test (quality.concordance)",
        "spearmanr": "a rank correlation", "pearsonr": "a correlation", "corrcoef": "a correlation",
        "triu_indices": "pairwise similarities (quality.concordance stores them)",
        "np.linalg.norm": "cosine similarities (quality.concordance)",
        "ABCDEFGHIJKLMNOP": "a row-letter table (plate geometry lives in one module)",
        "16, 24": "a plate shape", "is_edge": "edge wells (plate geometry)",
        "_find_col": "column-name guessing", "read_csv(p, sep=\"\\t\", dtype=str)[": "reading a sheet",
        "raw.h5ad": "an undeclared input", "run_info.json": "an undeclared input",
        "profiles.parquet": "an undeclared input", '"results/': "a hand-built path (use paths.path)",
        " results/": "a hand-built path (use paths.path)", "(results/": "a hand-built path",
    }
    hits = []
    for f in sorted(REPORT_SRC.rglob("*.py")):
        text = f.read_text()
        hits += [f"{f.relative_to(REPO)}: {pat!r} ({why})" for pat, why in forbidden.items() if pat in text]
    assert not hits, "\n".join(hits)
    imports = set()
    for f in sorted(REPORT_SRC.rglob("*.py")):
        imports |= set(re.findall(r"^\s*(?:from|import) (pairedscreen\.[\w.]+)", f.read_text(), re.M))
    analysis = {i for i in imports if i.split(".")[1] in ("rna", "paint", "pair", "quality", "simulate")}
    assert not analysis, analysis
    sizes = {f.name: len(f.read_text().splitlines()) for f in REPORT_SRC.rglob("*.py")}
    assert max(sizes.values()) <= 460, sizes


def test_missing_optional_inputs_degrade(tmp_path: Path) -> None:
    work = make_synthetic_workdir(tmp_path / "w", seed=1)
    res = work / "results"
    (res / "rna" / "knockdown.tsv").unlink()
    shutil.rmtree(res / "paint" / "P1" / "illum")
    shutil.rmtree(res / "paint" / "P1" / "masks")
    (res / "paired" / "perturbations.h5mu").unlink()
    (res / "rna" / "L2" / "barcode_ranks.parquet").unlink()
    out = tmp_path / "report.html"
    info = report_pkg.build_report(res, _config(work), out)
    html = out.read_text()
    for f in ("results/rna/knockdown.tsv missing", "results/paint/P1/illum missing",
              "no segmented object in results/paint/P1/masks/*", "results/paired/perturbations.h5mu missing",
              "results/rna/L2/barcode_ranks.parquet missing"):
        assert f"not available: {f}" in html, f
    assert info["data"]["rna"]["knockdown"] is None


def test_missing_datasheet_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "results").mkdir()
    with pytest.raises(ReportInputError, match="datasheet.json"):
        collect_report_data(tmp_path / "results", {})
    with pytest.raises(ReportInputError, match="datasheet.json"):
        report_pkg.build_report(tmp_path / "results", {}, tmp_path / "r.html")


def test_report_in_headless_browser(built: dict[str, Any], tmp_path: Path) -> None:
    from browser import find_chromium, load_page

    chromium = find_chromium()
    html = Path(built["out_html"])
    res = load_page(chromium, html, tmp_path / "overview.png")
    for sid in ("overview", "rna", "paint", "paired", "tables"):
        assert f'id="{sid}"' in res.dom, sid
    assert 'data-report-ready="true"' in res.dom, "the report's script did not finish"
    assert 'data-external-resources="0"' in res.dom
    assert not res.console_errors, res.console_errors
    assert not res.proxy_requests, f"the page tried to reach the network: {res.proxy_requests}"
    assert res.screenshot.exists() and res.screenshot.stat().st_size > 10_000

    from pairedscreen.report.render import slug

    plate_id = "plate-" + slug(next(iter(built["data"]["paint"]["plates"])))
    plate = load_page(chromium, html, tmp_path / "plate.png", fragment=plate_id, dump_dom=False)
    assert plate.screenshot.exists() and plate.screenshot.stat().st_size > 10_000
    if os.environ.get("PAIREDSCREEN_REPORT_SCREENSHOTS"):
        dest = REPO / "docs" / "img"
        dest.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(res.screenshot, dest / "report_overview.png")
        shutil.copyfile(plate.screenshot, dest / "report_plate_heatmap.png")


def test_browser_harness_catches_network_and_console(tmp_path: Path) -> None:
    """Negative control: the offline harness must see a page's external request and console error."""
    from browser import find_chromium, load_page

    page = tmp_path / "bad.html"
    page.write_text('<!doctype html><html><body><p id="x">x</p><img src="http://example.invalid/a.png">'
                    '<script>console.error("boom")</script></body></html>')
    res = load_page(find_chromium(), page)
    assert 'id="x"' in res.dom
    assert any("boom" in m for m in res.console_errors)
    assert any("example.invalid" in r for r in res.proxy_requests)


SORT_FILTER_PROBE = """
<script>
document.addEventListener("DOMContentLoaded", function () {
  var t = document.getElementById("tbl-knockdown");
  var heads = Array.prototype.map.call(t.tHead.rows[0].cells, function (h) { return h.textContent; });
  var th = t.tHead.rows[0].cells[heads.indexOf("remaining_fraction")];
  th.click(); th.click();  /* ascending, then descending */
  document.documentElement.setAttribute("data-probe-first", t.tBodies[0].rows[0].cells[0].textContent);
  var input = document.querySelector('input.table-filter[data-table="knockdown"]');
  input.value = "remaining_fraction<0.5";
  input.dispatchEvent(new Event("input"));
  var shown = Array.prototype.filter.call(t.tBodies[0].rows, function (r) {
    return r.style.display !== "none";
  });
  document.documentElement.setAttribute("data-probe-shown", String(shown.length));
});
</script>
"""


def test_tables_sort_and_filter_in_browser(built: dict[str, Any], tmp_path: Path) -> None:
    """The bundled table script sorts numerically and filters on a column expression."""
    from browser import find_chromium, load_page

    kd = built["data"]["rna"]["knockdown"]
    page = tmp_path / "probe.html"
    page.write_text(Path(built["out_html"]).read_text().replace("</body>", SORT_FILTER_PROBE + "</body>"))
    res = load_page(find_chromium(), page)
    assert not res.console_errors, res.console_errors
    first = kd.sort_values("remaining_fraction", ascending=False, kind="stable").perturbation_id.iloc[0]
    assert f'data-probe-first="{first}"' in res.dom
    assert f'data-probe-shown="{int((kd.remaining_fraction < 0.5).sum())}"' in res.dom
