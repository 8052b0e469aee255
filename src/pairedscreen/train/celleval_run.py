"""The RNA floor with cell-eval: the mean-of-train and control predictors scored on the test perturbations.

Runs in the separate cell-eval environment (``.venv-eval`` from ``make env``, or ``envs/celleval.yaml``
under ``--sdm conda``): cell-eval 0.8.2 needs pdex, which needs numpy >= 2.4.2, while Cellpose 3 caps
numpy < 2.1. So this module imports only numpy, pandas, polars, scanpy, anndata and cell_eval (never the rest
of pairedscreen, numba-based code or Cellpose)::

    PYTHONPATH=src .venv-eval/bin/python -m pairedscreen.train.celleval_run \\
        --h5ad results/quality/eval_cells.h5ad --splits results/train/splits.tsv \\
        --out results/quality/celleval.json

Cells: ``results/quality/eval_cells.h5ad``, at most ``train.eval_max_cells_per_perturbation`` cells per
perturbation of the cell-load export (:mod:`pairedscreen.train.eval_cells`; ``X`` counts), normalised once
as log1p CP10k (scanpy ``normalize_total`` (target 1e4) + ``log1p``, the same transform as the rest of the
workflow); real = the test perturbations'
cells + all control cells; predictions (same cells per perturbation, controls as they are):

- ``mean_of_train``: every test cell predicted as the mean of the train perturbations' cells
  (``cell_eval.build_base_mean_adata``);
- ``control``: every test cell predicted as the mean control cell (no effect).

and cell-eval's own data ceiling of the same real cells (``ceiling``: ``compute_ceiling``, disjoint halves,
Spearman-Brown corrected).

Each is scored with ``cell_eval.MetricsEvaluator(...).compute(profile)``; the aggregated metrics go to
``celleval.json`` (``status: ok``). ``--unavailable PY`` (no eval interpreter) writes ``status: not run``
with the fix instead, so the datasheet and report say so.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from importlib.metadata import version
from pathlib import Path
from typing import Any

FIX = ("create the eval environment with `make env` (python -m venv .venv-eval && .venv-eval/bin/pip install "
       "-c envs/celleval.lock cell-eval==0.8.2), run with --sdm conda (envs/celleval.yaml), or set "
       "train.evals.celleval: false")


def _write(obj: dict, out: str) -> None:
    out_p = Path(out)
    out_p.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_p.with_name(f".{out_p.name}.partial")
    tmp.write_text(json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n")
    os.replace(tmp, out_p)


def _agg_to_dict(agg: Any) -> dict[str, dict[str, float | None]]:
    """cell-eval's aggregated table (polars: a ``statistic`` column + one column per metric) -> dict."""
    df = agg.to_pandas()
    key = "statistic" if "statistic" in df.columns else df.columns[0]
    out: dict[str, dict[str, float | None]] = {}
    for _, row in df.iterrows():
        stat = str(row[key])
        for col in df.columns:
            if col == key:
                continue
            v = row[col]
            try:
                fv = float(v)
            except (TypeError, ValueError):
                continue
            out.setdefault(col, {})[stat] = fv if fv == fv else None
    return out


def run(h5ad: str, splits: str, control: str, out: str, profile: str, seed: int) -> dict:
    import anndata as ad
    import numpy as np
    import pandas as pd
    import polars as pl
    import scanpy as sc
    from cell_eval import MetricsEvaluator, build_base_mean_adata

    cells = ad.read_h5ad(h5ad)
    table = pd.read_csv(splits, sep="\t", dtype={"perturbation_id": str, "split": str}, keep_default_na=False)
    split_of = table.set_index("perturbation_id")["split"]
    pid = cells.obs["perturbation_id"].astype(str)
    cell_split = pid.map(split_of).to_numpy()
    is_ctrl = cells.obs["perturbation"].astype(str).to_numpy() == control
    test_perts = sorted(set(cells.obs.loc[(cell_split == "test") & ~is_ctrl, "perturbation"].astype(str)))
    res: dict[str, Any] = {"status": "ok", "cell_eval": version("cell-eval"), "profile": profile,
                           "control": control, "test_perturbations": test_perts,
                           "n_control_cells": int(is_ctrl.sum())}
    if not test_perts or not is_ctrl.any():
        res.update(status="not run", reason="no test perturbation or no control cells in the export")
        _write(res, out)
        return res
    norm = ad.AnnData(X=cells.X.astype(np.float32), obs=cells.obs[["perturbation"]].copy(), var=cells.var[[]])
    sc.pp.normalize_total(norm, target_sum=1e4)
    sc.pp.log1p(norm)
    norm.obs["perturbation"] = norm.obs["perturbation"].astype(str)
    test_mask = (cell_split == "test") & ~is_ctrl
    train_mask = (cell_split == "train") & ~is_ctrl
    real = norm[test_mask | is_ctrl].copy()
    res["n_test_cells"] = int(test_mask.sum())
    res["n_train_cells"] = int(train_mask.sum())
    counts = pl.DataFrame({"perturbation": test_perts,
                           "n_cells": [int((real.obs["perturbation"] == p).sum()) for p in test_perts]})
    mean_pred = build_base_mean_adata(norm[train_mask | is_ctrl].copy(), counts_df=counts,
                                      pert_col="perturbation", control_pert=control, counts_col="n_cells")
    ctrl_mean = np.asarray(norm[is_ctrl].X.mean(axis=0)).ravel()
    ctrl_pred = mean_pred.copy()
    ctrl_pred.X = np.asarray(ctrl_pred.X.toarray() if hasattr(ctrl_pred.X, "toarray") else ctrl_pred.X,
                             dtype=np.float32)
    ctrl_pred.X[(ctrl_pred.obs["perturbation"] != control).to_numpy()] = ctrl_mean
    res["predictors"] = {}
    for name, pred in (("mean_of_train", mean_pred), ("control", ctrl_pred)):
        with tempfile.TemporaryDirectory() as tmp:
            ev = MetricsEvaluator(adata_pred=pred, adata_real=real, control_pert=control,
                                  pert_col="perturbation", num_threads=1, outdir=tmp)
            _, agg = ev.compute(profile=profile, write_csv=False)
        res["predictors"][name] = _agg_to_dict(agg)
    # cell-eval's own data ceiling on the same real cells: disjoint halves of each perturbation's cells
    # scored against each other, Spearman-Brown corrected to full depth (NaN -> None: no defensible ceiling)
    with tempfile.TemporaryDirectory() as tmp:
        ev = MetricsEvaluator(adata_pred=None, adata_real=real, control_pert=control, pert_col="perturbation",
                              num_threads=1, outdir=tmp)
        _, agg = ev.compute_ceiling(profile=profile, write_csv=False, seed=seed)
    row = agg.to_pandas().iloc[0]
    res["ceiling"] = {
        "method": "cell_eval MetricsEvaluator.compute_ceiling: each test perturbation's (and the control's) "
                  "cells split into two disjoint halves scored against each other, Spearman-Brown corrected; "
                  "null where cell-eval defines no ceiling for the metric",
        "seed": seed,
        "metrics": {str(k): (float(v) if v == v else None) for k, v in row.items()}}
    _write(res, out)
    return res


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--h5ad")
    ap.add_argument("--splits")
    ap.add_argument("--control", help="the control label (train.control_label)")
    ap.add_argument("--profile", help="cell-eval's metric profile (train.evals.celleval_profile)")
    ap.add_argument("--seed", type=int, help="seed of cell-eval's ceiling halves (train.seed)")
    ap.add_argument("--out", required=True)
    ap.add_argument("--unavailable", metavar="PYTHON", help="record that the eval interpreter is missing")
    args = ap.parse_args(argv)
    if args.unavailable:
        msg = f"cell-eval environment not found ({args.unavailable}). Fix: {FIX}"
        print(msg, file=sys.stderr)
        _write({"status": "not run", "reason": msg}, args.out)
        return 0
    if not (args.h5ad and args.splits and args.control and args.profile and args.seed is not None):
        ap.error("--h5ad, --splits, --control, --profile and --seed are required")
    run(args.h5ad, args.splits, args.control, args.out, args.profile, args.seed)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
