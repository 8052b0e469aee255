"""File-level stages of the train rules (called by ``workflow/scripts/train_*.py``): read the arms' outputs,
call the pure functions, write through ``atomic_output``."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd

from pairedscreen.columns import parse_bool
from pairedscreen.io import write_tsv
from pairedscreen.quarantine import read_table, usable_files
from pairedscreen.sheets import read_libraries, read_plates, read_registry
from pairedscreen.train import splits as spl

log = logging.getLogger("pairedscreen.train")
PathLike = str | os.PathLike


def read_splits(path: PathLike) -> pd.DataFrame:
    df = pd.read_csv(path, sep="\t", dtype={"perturbation_id": str, "target_gene": str, "split": str},
                     keep_default_na=False)
    df["is_control"] = df["is_control"].map(parse_bool).fillna(False).astype(bool)
    return df


def read_holdout(path: PathLike) -> pd.DataFrame:
    return pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False)


def run_splits(registry: PathLike, params: Mapping[str, Any], out: PathLike) -> pd.DataFrame:
    """``splits.tsv`` from the registry (nothing else: a plate or library landing never changes it)."""
    table = spl.assign_splits(read_registry(registry), seed=int(params["seed"]),
                              val_fraction=float(params["val_fraction"]),
                              test_fraction=float(params["test_fraction"]))
    log.info("splits: %s", table["split"].value_counts().to_dict())
    write_tsv(table, out)
    return table


def run_batch_holdout(libraries: PathLike, plates: PathLike, params: Mapping[str, Any],
                      out: PathLike) -> pd.DataFrame:
    """``batch_holdout.tsv`` from the library and plate sheets."""
    hold = spl.batch_holdout(read_libraries(libraries), read_plates(plates), str(params["batch_holdout"]))
    log.info("batch held out: %s", sorted(set(hold.loc[hold["batch_split"] == "test", "batch"])) or "none")
    write_tsv(hold, out)
    return hold


def run_rna_export(rna_cells: PathLike | Sequence[PathLike], registry: PathLike, splits: PathLike,
                   holdout: PathLike, params: Mapping[str, Any], h5ad_out: PathLike, toml_out: PathLike,
                   obs_out: PathLike | None = None) -> None:
    """``results/train/rna/{cell_type}.h5ad`` and ``results/train/cell_load.toml`` from the per-library
    cells files (``results/rna/{lib}/cells.h5ad``, sheet order), streamed one library at a time."""
    from pathlib import Path

    from pairedscreen.train import rna_export

    reg, table = read_registry(registry), read_splits(splits)
    export = rna_export.export_rna(rna_cells, reg, table, read_holdout(holdout), params, h5ad_out,
                                   obs_out)
    log.info("cell-load export: %d cells x %d genes, X_hvg %d genes", export.n_obs, export.n_vars,
             int(export.var["highly_variable"].sum()))
    rna_export.write_cell_load_toml(Path(h5ad_out).parent, table, reg, params, toml_out)


def run_eval_cells(h5ad: PathLike, params: Mapping[str, Any], out: PathLike) -> dict:
    """``results/quality/eval_cells.h5ad``: at most ``params['eval_max_cells_per_perturbation']`` cells per
    perturbation of the cell-load export ``h5ad``, chosen by ``params['seed']``
    (:mod:`pairedscreen.train.eval_cells`); the cells cell-eval scores. ``params`` = the config's ``train``
    block. Returns the subsample's summary (recorded in ``evals.json``)."""
    from pairedscreen.train.eval_cells import write_eval_cells

    summary = write_eval_cells(h5ad, int(params["eval_max_cells_per_perturbation"]), int(params["seed"]),
                               out)
    log.info("eval cells: %d of %d cells, %d of %d perturbations capped at %d", summary["n_cells"],
             summary["n_cells_exported"], summary["n_perturbations_capped"], summary["n_perturbations"],
             summary["max_cells_per_perturbation"])
    return summary


def run_crop_size(reference_cells: PathLike, params: Mapping[str, Any], out: PathLike) -> int:
    from pairedscreen.train.crops import write_crop_size

    size = write_crop_size(reference_cells, params, out)
    log.info("crop size %d", size)
    return size


def run_crops(cells: PathLike, index: PathLike, illum: PathLike, masks: Sequence[PathLike], splits: PathLike,
              batch_split: str, crop_size: PathLike, plate: str, params: Mapping[str, Any],
              zarr_out: PathLike, obs_out: PathLike) -> None:
    """One plate's crops; ``batch_split`` = the plate's row of batch_holdout.tsv (planned by the workflow
    with :func:`pairedscreen.train.splits.batch_holdout`)."""
    import json
    from pathlib import Path

    from pairedscreen.train.crops import export_crops

    size = int(json.loads(Path(crop_size).read_text())["size"])
    crop_params = {**params["crops"], "val_fraction": params["val_fraction"],
                   "test_fraction": params["test_fraction"]}
    holdout = pd.DataFrame({"arm": ["paint"], "unit": [plate], "batch": [""], "batch_split": [batch_split]})
    obs = export_crops(cells, index, illum, list(masks), read_splits(splits), holdout, plate, size,
                       crop_params, zarr_out, obs_out)
    log.info("plate %s: %d crops of %d px, %d padded, %d touching the border", plate, len(obs), size,
             int(obs["crop_padded"].sum()), int(obs["touches_border"].sum()))


def run_evals(pseudobulk: PathLike, consensus: PathLike, splits: PathLike, holdout: PathLike,
              registry: PathLike, params: Mapping[str, Any], truth_dir: PathLike | None,
              celleval: PathLike | None, out: PathLike, eval_cells: PathLike | None = None,
              rna_cells: Sequence[PathLike] | None = None, paint_cells: Sequence[PathLike] | None = None,
              guides: PathLike | None = None, *, profiles_config: Mapping[str, Any],
              de_summary: PathLike | None = None, rna_quarantine: PathLike | None = None,
              paint_quarantine: PathLike | None = None) -> dict:
    """``results/quality/evals.json``: the splits' summary (seed, fractions, lists, batch holdout: the
    datasheet's ``train.splits``), cross-modal ridge on the test perturbations (by planted class when a
    truth folder is configured), the cell-eval baselines (``celleval.json``, written in the eval env) and
    ``eval_cells``: the per-perturbation subsample cell-eval scores (``eval_cells.h5ad``'s summary: its
    ``max_cells_per_perturbation``, seed and counts; only its uns is read). The pseudobulk is read without
    its counts layer (the ridge uses the mean log1p CP10k only). Learning curves always; given the
    per-library RNA cells files (``rna_cells``, ``results/rna/{lib}/cells.h5ad``) and the per-plate paint
    cells files (``paint_cells``, ``results/paint/{plate}/cells.parquet``), streamed one at a time, the
    split-half ceilings / normalised scores and the leakage audit (``guides``: the guide sheet, for the
    guides-per-perturbation field) (:mod:`pairedscreen.train.evals_run`)."""
    import json
    from pathlib import Path

    import anndata as ad
    import numpy as np

    from pairedscreen.columns import feature_columns
    from pairedscreen.io import write_json
    from pairedscreen.modalities import paint_modality, rna_modality
    from pairedscreen.sheets import read_guides
    from pairedscreen.train.evals_run import evaluate_with_cells

    reg = read_registry(registry)
    table = read_splits(splits).set_index("perturbation_id").reindex(reg["perturbation_id"].astype(str))
    pb = ad.read_h5ad(pseudobulk, backed="r")
    rna = rna_modality(ad.AnnData(X=pb.X[:], obs=pb.obs, var=pb.var), reg)
    pb.file.close()
    cons = pd.read_parquet(consensus)
    paint = paint_modality(cons, reg)
    classes = None
    if truth_dir:
        truth = pd.read_csv(Path(truth_dir) / "perturbations.tsv", sep="\t", dtype={"perturbation_id": str})
        classes = truth.set_index("perturbation_id")["effect_class"].reindex(table.index).fillna("unknown")
        classes = classes.astype(str).to_numpy()
    ev = params["evals"]
    # what QC quarantined (a library without usable cells, a plate without cells) stays out of the pooled
    # ceilings and the leakage audit, as out of the profiles and quality
    rna_cells = usable_files(rna_cells, read_table(rna_quarantine), "library")
    paint_cells = usable_files(paint_cells, read_table(paint_quarantine), "plate")
    res = evaluate_with_cells(
        np.asarray(rna.X, float), list(rna.var_names), np.asarray(paint.X, float), feature_columns(cons), reg,
        table["split"].to_numpy(), ev, seed=int(params["seed"]), labels=table.index.to_numpy(),
        classes=classes, rna_cells=list(rna_cells or []), paint_cells=list(paint_cells or []),
        guides=read_guides(guides) if guides else None, profiles_config=profiles_config,
        de_counts=(pd.read_csv(de_summary, sep="\t", dtype={"perturbation_id": str})
                   .set_index("perturbation_id")["n_de_genes"] if de_summary else None))
    res["splits"] = spl.summarize(read_splits(splits), read_holdout(holdout), params)
    if celleval:
        res["celleval"] = json.loads(Path(celleval).read_text())
    else:
        res["celleval"] = {"status": "not run", "reason": "train.evals.celleval is false"}
    if eval_cells:
        from pairedscreen.train.eval_cells import read_summary

        res["eval_cells"] = read_summary(eval_cells)
    for d in ("rna_to_paint", "paint_to_rna"):
        if d in res:
            o = res[d]["overall"]
            log.info("%s: n_test=%d beats_baseline=%s", d, o["n"], o["beats_baseline"])
    if res.get("leakage", {}).get("warning"):
        log.warning("leakage: %s", res["leakage"]["warning"])
    write_json(res, out)
    return res


def run_croissant(splits: PathLike, rna_obs: PathLike, crops_obs: Sequence[PathLike], plates: Sequence[str],
                  datasheet: PathLike, params: Mapping[str, Any], out: PathLike) -> dict:
    """``results/train/croissant.json`` over every file under ``results/train/``."""
    import json
    from pathlib import Path

    from pairedscreen.train.croissant import build_croissant

    doc = build_croissant(Path(out).parent, json.loads(Path(datasheet).read_text()), params, rna_obs,
                          dict(zip(plates, crops_obs, strict=True)), splits, out)
    log.info("croissant: %d files, %d record sets", len(doc.get("distribution", [])),
             len(doc.get("recordSet", [])))
    return doc
