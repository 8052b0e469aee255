"""What each step of the profiles' correction chain bought: batch predictability and replicate mAP after
each step (``metrics.correction``).

The profiles stage keeps the profiles before the chain and after each step
(:func:`pairedscreen.paint.correct.step_tables`; the last step's are ``profiles.parquet``). Each table is
read like ``profiles.parquet`` (:class:`pairedscreen.quality.paint_units.PlateRows`, a row group at a
time): the replicate wells (at most ``max_replicates`` per perturbation, the choice quality's replicate mAP
makes) and the control wells (at most ``max_replicates`` per plate). The statistics are quality's own:
:func:`pairedscreen.quality.replicate.phenotypic_activity` on :func:`~pairedscreen.quality.replicate.
paint_features` and :func:`pairedscreen.quality.batch.batch_predictability`, on

- ``plate_controls`` / ``batch_controls``: the control wells labelled by plate / by batch (what
  ``metrics.batch.paint_plate_normalized`` measures). Normalisation to each plate's controls already
  centres them, so these show what a step does to the controls' spread;
- ``batch_wells``: the replicate wells (every perturbation) labelled by batch: what Harmony aligns (a batch
  effect on perturbed wells that the controls do not carry survives plate normalisation).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from pairedscreen import columns as C
from pairedscreen.paint.correct import read_records, step_tables
from pairedscreen.quality import batch, replicate
from pairedscreen.quality.paint_units import PlateRows, replicate_rows
from pairedscreen.quality.summary import summarize_hits

PathLike = str | os.PathLike


def step_metrics(path: PathLike, reg: pd.DataFrame, *, nperm: int, seed: int, alpha: float,
                 pca: float | None, max_replicates: int) -> dict[str, Any]:
    """Replicate mAP and batch predictability of one step's profiles (see the module docstring)."""
    pr = PlateRows(path, reg)
    feats = pr.features
    keep, _ = replicate_rows(pr.meta, max_replicates, seed)
    rep = pr.rows(keep)
    meta = pd.DataFrame({"perturbation": rep[C.PERT].astype(str).to_numpy(),
                         "is_control": rep[C.IS_CONTROL].to_numpy(bool)})
    x = replicate.paint_features(rep, feats, pca_variance=pca)
    act = replicate.phenotypic_activity(x, meta, null_size=nperm, seed=seed)
    hits = summarize_hits(act, alpha=alpha)
    trt = act.loc[~act["is_control"].to_numpy(bool), "mean_average_precision"].dropna()
    out: dict[str, Any] = {
        "n_features": len(feats),
        "replicate": {k: hits[k] for k in ("n_scored", "n_hits", "n_controls_called", "fraction_active")}
        | {"mean_map": float(trt.mean()) if len(trt) else None},
        "batch": {}}
    ctrl = pr.controls([C.PLATE, C.BATCH, *feats], max_per_plate=max_replicates, seed=seed)
    out["batch"]["plate_controls"] = batch.batch_predictability(
        ctrl[feats].to_numpy(), ctrl[C.PLATE].to_numpy(), n_permutations=nperm, seed=seed)
    if C.BATCH in ctrl and ctrl[C.BATCH].nunique() > 1:
        out["batch"]["batch_controls"] = batch.batch_predictability(
            ctrl[feats].to_numpy(), ctrl[C.BATCH].astype(str).to_numpy(), n_permutations=nperm, seed=seed)
    if C.BATCH in rep and rep[C.BATCH].nunique() > 1:
        out["batch"]["batch_wells"] = batch.batch_predictability(
            rep[feats].to_numpy(), rep[C.BATCH].astype(str).to_numpy(), n_permutations=nperm, seed=seed)
    return out


def correction_metrics(profiles: PathLike, reg: pd.DataFrame, *, nperm: int, seed: int, alpha: float,
                       pca: float | None, max_replicates: int) -> dict[str, Any] | None:
    """``metrics.correction``: the chain's steps (``input`` = before it) with the profiles stage's record
    and the metrics after each; None when the profiles ran no correction step."""
    tables = step_tables(profiles)
    if not tables:
        return None
    records = [{"step": "input"}, *read_records(profiles)]
    steps = []
    for (step, path), rec in zip(tables, records, strict=True):
        if not Path(path).exists():
            raise FileNotFoundError(f"{path}: the profiles after correction step {step!r} are missing; "
                                    "rerun the profiles rule (snakemake -R profiles)")
        steps.append({"step": step, "record": {k: v for k, v in rec.items() if k != "step"},
                      **step_metrics(path, reg, nperm=nperm, seed=seed, alpha=alpha, pca=pca,
                                     max_replicates=max_replicates)})
    return {"steps": steps, "replicate_unit": "wells"}


def input_features(profiles: PathLike, default: Sequence[str]) -> list[str]:
    """The features the correction chain started from (those of the wells before it), or ``default``
    when the profiles ran no correction step."""
    tables = step_tables(profiles)
    if not tables:
        return list(default)
    return PlateRows(tables[0][1]).features

