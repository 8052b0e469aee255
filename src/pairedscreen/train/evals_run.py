"""The evals with their ceilings, learning curves and leakage audit, from per-perturbation tables plus the
per-library RNA cells files and per-plate paint cells files (streamed once, :mod:`pairedscreen.train.halves`).

Without the cells files the evals run as before, with the perturbation-axis learning curve, and
``ceilings`` / ``leakage`` say ``not run`` with the reason.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from pairedscreen.train import evals, halves, leakage

PathLike = str | os.PathLike
N_PARTS = 4   # cell parts per perturbation: halves = 2 + 2, learning curve at 1..4 quarters of the cells


def audit_tables(reg: pd.DataFrame, rp: halves.RnaParts, paint_meta: pd.DataFrame,
                 guides: pd.DataFrame | None, prep: evals.Prepared, paint_parts: Any,
                 de_counts: pd.Series | None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(metadata, targets) over the treated perturbations: what we release per perturbation, and the
    answers (split-half effect sizes of both arms, the DE genes per perturbation id ``de_counts``, NaN
    where not tested); see :mod:`pairedscreen.train.leakage`."""
    ids = reg["perturbation_id"].astype(str).tolist()
    n = rp.n_cells
    meta = pd.DataFrame(index=ids)
    meta["rna_log_cells"] = np.log1p(n)
    meta["rna_log_umis_per_cell"] = np.log1p(np.divide(rp.umis, n, out=np.zeros_like(n), where=n > 0))
    libs = rp.cells_by_library
    meta["rna_libraries"] = (libs > 0).sum(axis=1).to_numpy()
    if libs.shape[1] > 1:
        share = libs.div(np.maximum(n, 1), axis=0)
        for c in share.columns:
            meta[f"rna_library_share_{c}"] = share[c].to_numpy()
    if guides is not None:
        per = guides["perturbation_id"].astype(str).value_counts()
        meta["guides"] = per.reindex(ids).fillna(0).to_numpy()
    for c in paint_meta.columns:
        v = paint_meta[c].reindex(ids).to_numpy(float)
        meta[c] = np.log1p(v) if c in ("paint_cells", "paint_cells_per_well") else v
    meta = meta.fillna(0.0)
    parts = evals.arm_parts(prep, rp.parts, paint_parts)
    ra, rb = evals.parts_halves(*parts["rna"])
    pa, pb = evals.parts_halves(*parts["paint"])
    de = (de_counts.reindex(ids).to_numpy(float) if de_counts is not None
          else np.full(len(ids), np.nan))
    targets = pd.DataFrame({"rna_effect": leakage.effect_size(ra, rb),
                            "paint_effect": leakage.effect_size(pa, pb), "rna_de_genes": de}, index=ids)
    trt = ~reg["is_control"].to_numpy(bool)
    return meta[trt], targets[trt]


def evaluate_with_cells(rna: np.ndarray, rna_genes: Sequence[str], paint: np.ndarray,
                        paint_features: Sequence[str], reg: pd.DataFrame, split: np.ndarray,
                        params: Mapping[str, Any], *, seed: int, labels: np.ndarray,
                        classes: np.ndarray | None, rna_cells: Sequence[PathLike] | None,
                        paint_cells: Sequence[PathLike] | None,
                        guides: pd.DataFrame | None, profiles_config: Mapping[str, Any],
                        de_counts: pd.Series | None) -> dict[str, Any]:
    """:func:`pairedscreen.train.evals.evaluate` (with learning curves), plus, given both arms' cells
    files, the split-half ceilings / normalised scores and the leakage audit (``leakage``). ``params`` =
    the config's ``train.evals`` block."""
    ctrl = reg["is_control"].to_numpy(bool)
    kw = {"labels": labels, "classes": classes, "seed": seed, "learning": True}
    if not rna_cells or not paint_cells or not paint.shape[1] or not rna.shape[1]:
        res = evals.evaluate(rna, paint, split, ctrl, params, **kw)
        why = "the train_evals rule was not given both arms' cells files (rna_cells, paint_cells)"
        res["ceilings"] = {"status": "not run", "reason": why}
        res["leakage"] = {"status": "not run", "reason": why}
        return res
    prep = evals.prepare(rna, paint, split, ctrl, int(params["n_hvg"]))
    ids = reg["perturbation_id"].astype(str).tolist()
    rp = halves.rna_parts(rna_cells, ids, [i for i, c in zip(ids, ctrl, strict=True) if c],
                          [rna_genes[g] for g in prep.genes], list(rna_genes), n_parts=N_PARTS, seed=seed)
    pp, pmeta = halves.paint_parts(paint_cells, list(paint_features), reg, n_parts=N_PARTS, seed=seed,
                                   aggregate=str(profiles_config["aggregate"]),
                                   normalize=str(profiles_config["normalize"]))
    res = evals.evaluate(rna, paint, split, ctrl, params, rna_parts=rp.parts, paint_parts=pp, **kw)
    res["ceilings"] = {
        "status": "ok", "n_parts": N_PARTS, "seed": seed,
        "method": "split-half replicates: cells dealt at random into 4 parts within each perturbation and "
                  "library (RNA) or well (paint sub-wells, normalised to the plate's control sub-wells); "
                  "parts 1-2 vs 3-4 scored by the same metric, averaged over the test perturbations and "
                  "taken to full depth with Spearman-Brown 2c/(1+c) (cell-eval's rule); normalised = "
                  "(model - baseline) / (ceiling - baseline)",
        "rna_cells_per_perturbation_median": float(np.median(rp.n_cells[~ctrl])) if (~ctrl).any() else None,
        "paint_wells_per_perturbation_median": float(pmeta["paint_wells"].reindex(ids)[~ctrl].median())
        if "paint_wells" in pmeta else None}
    meta, targets = audit_tables(reg, rp, pmeta, guides, prep, pp, de_counts)
    res["leakage"] = {"status": "ok", **leakage.audit(
        meta, targets, n_folds=int(params["leakage_folds"]),
        n_permutations=int(params["leakage_permutations"]),
        threshold=float(params["leakage_r2_threshold"]), seed=seed)}
    res["leakage"]["de_counts"] = (
        "rna_de_genes: n_de_genes of results/rna/de_summary.tsv (Wilcoxon against the library's control "
        "cells, Stouffer across libraries, rna.de thresholds)" if de_counts is not None else
        "rna_de_genes: not measured (no DE summary given)")
    return res
