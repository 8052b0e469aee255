"""The cells the RNA evals score: a seeded, bounded subsample per perturbation of the cell-load export.

cell-eval's cost and memory grow with the cells it is given; the Virtual Cell Challenge scores ~400 cells
per perturbation. So ``results/quality/eval_cells.h5ad`` holds, for every registry perturbation id of the
export (controls included, each control id on its own), at most ``train.eval_max_cells_per_perturbation``
cells: those with the smallest :func:`pairedscreen.train.splits.seeded_uniform` value of
``"eval_cells:{obs_name}"`` under ``train.seed`` (ties: obs name). The choice depends only on the cells'
names (``{library}_{barcode}``), the perturbation and the seed, never on how the cells are split into
libraries or files, and its key prefix keeps it independent of the control cells' split assignment (the same
hash of the bare cell id).

The file is the export's rows in export order (X counts, obs, var; no ``obsm``), read with
:func:`pairedscreen.train.rna_export.read_rows` (one block of the export at a time, never the whole export);
its ``uns['eval_subsample']`` (:func:`subsample_summary`) is what ``results/quality/evals.json`` records.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from pairedscreen.io import atomic_output
from pairedscreen.train.rna_export import read_rows
from pairedscreen.train.splits import seeded_uniform

PathLike = str | os.PathLike
KEY_PREFIX = "eval_cells:"
UNIT = "perturbation_id"


def subsample_rows(names: Sequence[str], groups: Sequence[str], max_cells: int, seed: int) -> np.ndarray:
    """Positions (ascending) of the kept cells: per group, the ``max_cells`` cells with the smallest seeded
    hash of their name (ties: name)."""
    names = np.asarray(names, dtype=str)
    groups = np.asarray(groups, dtype=str)
    if max_cells < 1:
        raise ValueError(f"max_cells must be >= 1, got {max_cells}")
    key = seeded_uniform((KEY_PREFIX + n for n in names), seed)
    order = np.lexsort((names, key, groups))
    g = groups[order]
    start = np.r_[True, g[1:] != g[:-1]]
    first = np.maximum.accumulate(np.where(start, np.arange(len(g)), 0))
    rank = np.arange(len(g)) - first
    return np.sort(order[rank < max_cells])


def subsample_summary(groups: Sequence[str], rows: np.ndarray, max_cells: int, seed: int) -> dict[str, Any]:
    """What ``evals.json`` records about the subsample."""
    counts = pd.Series(np.asarray(groups, dtype=str)).value_counts()
    return {"max_cells_per_perturbation": int(max_cells), "seed": int(seed), "unit": UNIT,
            "selection": f"per {UNIT}, the cells with the smallest SHA-256 of '{{seed}}:{KEY_PREFIX}"
                         "{obs_name}' (pairedscreen.train.eval_cells)",
            "n_cells": int(len(rows)), "n_cells_exported": int(counts.sum()),
            "n_perturbations": int(len(counts)), "n_perturbations_capped": int((counts > max_cells).sum())}


def write_eval_cells(export: PathLike, max_cells: int, seed: int, out: PathLike) -> dict[str, Any]:
    """Write the subsample of the cell-load export ``export`` to ``out`` (see the module docstring); returns
    its summary. Memory: the export's obs + the subsample + one block of the export."""
    import anndata as ad
    import h5py
    from anndata.io import read_elem

    with h5py.File(export, "r") as f:
        obs, var = read_elem(f["obs"]), read_elem(f["var"])
    groups = obs[UNIT].astype(str).to_numpy()
    rows = subsample_rows(obs.index.astype(str), groups, max_cells, seed)
    summary = subsample_summary(groups, rows, max_cells, seed)
    x = read_rows(export, rows, len(var))
    sub = ad.AnnData(X=x, obs=obs.iloc[rows].copy(), var=var)
    sub.uns["eval_subsample"] = summary
    with atomic_output(out) as tmp:
        sub.write_h5ad(tmp)
    return summary


def read_summary(eval_cells: PathLike) -> dict[str, Any]:
    """The subsample's summary as :func:`write_eval_cells` stored it (``uns['eval_subsample']``)."""
    import h5py
    from anndata.io import read_elem

    with h5py.File(eval_cells, "r") as f:
        raw = read_elem(f["uns"]["eval_subsample"])
    return {k: (v.item() if hasattr(v, "item") else v) for k, v in raw.items()}
