"""A seeded, bounded subsample of the screen's RNA cells, read from the per-library ``cells.h5ad`` files.

Quality's cell-level statistics (replicate pseudobulks for mAP, the PCA embedding behind E-distance and
batch predictability) need cells, but never all of them: at most ``max_cells`` usable cells per
perturbation (as the Virtual Cell Challenge scores a fixed number of cells per perturbation). The selection
is the one quality always made on the merged cells: usable cells
(:func:`pairedscreen.expression.usable_cells`) in library order, per perturbation (first-appearance order)
a seeded permutation cut at ``max_cells``, so a screen whose perturbations all have ``max_cells`` or fewer
cells gives exactly the merged cells' statistics. Memory: a few bytes per screen cell for the selection,
then only the selected rows (read from each library file, a block of rows at a time).
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import anndata as ad
import h5py
import numpy as np
import pandas as pd
import scipy.sparse as sp
from anndata.io import read_elem

from pairedscreen.expression import usable_cells

PathLike = str | os.PathLike
OBS_COLUMNS = ("perturbation", "is_control", "pass_qc", "predicted_doublet", "guide_ids", "library", "batch")
BLOCK_ROWS = 1 << 14


def _obs(f: h5py.File, columns: Sequence[str]) -> pd.DataFrame:
    grp = f["obs"]
    index = read_elem(grp[grp.attrs["_index"]])
    data = {c: read_elem(grp[c]) for c in columns if c in grp}
    return pd.DataFrame(data, index=pd.Index(np.asarray(index, dtype=str)))


def _rows(f: h5py.File, rows: np.ndarray) -> sp.csr_matrix:
    """Rows ``rows`` (sorted) of the CSR ``X`` of an open h5ad, reading one block of rows at a time."""
    x = f["X"]
    n_vars = int(x.attrs["shape"][1])
    indptr = x["indptr"][()]
    parts = []
    for s in range(0, len(rows), BLOCK_ROWS):
        r = rows[s:s + BLOCK_ROWS]
        lo, hi = int(indptr[r[0]]), int(indptr[r[-1] + 1])
        block = sp.csr_matrix((x["data"][lo:hi], x["indices"][lo:hi], indptr[r[0]:r[-1] + 2] - lo),
                              shape=(int(r[-1] - r[0] + 1), n_vars))
        parts.append(block[r - r[0]])
    return sp.vstack(parts, format="csr") if parts else sp.csr_matrix((0, n_vars), dtype=x["data"].dtype)


def select(perturbation: np.ndarray, usable: np.ndarray, max_cells: int, seed: int) -> np.ndarray:
    """Sorted positions of the subsample: per perturbation of the usable cells (first-appearance order)
    a permutation from ``default_rng(seed)`` cut at ``max_cells``. ``perturbation``: labels or codes (any
    one-to-one coding gives the same subsample)."""
    rng = np.random.default_rng(seed)
    idx = np.flatnonzero(usable)
    pert = perturbation[idx]
    keep = np.concatenate([rng.permutation(idx[pert == p])[:max_cells] for p in pd.unique(pert)]) \
        if len(idx) else idx
    return np.sort(keep)


def bounded_cells(paths: Sequence[PathLike], categories: Sequence[str], *, max_cells: int,
                  seed: int) -> tuple[ad.AnnData, dict]:
    """The subsample (X = counts, obs :data:`OBS_COLUMNS` that exist, var) of the libraries ``paths`` and a
    record of it (``max_cells_per_perturbation``, ``cells``, ``usable_cells``, ``perturbations_capped``)."""
    pert_parts, usable_parts, sizes = [], [], []
    levels: dict[str, int] = {}     # perturbation -> code: 4 bytes per screen cell, not a string
    for p in paths:
        with h5py.File(p, "r") as f:
            obs = _obs(f, [c for c in OBS_COLUMNS if c != "guide_ids"])
        holder = ad.AnnData(obs=obs)
        usable_parts.append(usable_cells(holder, categories=categories))
        cat = pd.Categorical(obs["perturbation"].astype(str) if "perturbation" in obs else [""] * len(obs))
        code_of = np.asarray([levels.setdefault(str(c), len(levels)) for c in cat.categories], dtype=np.int32)
        pert_parts.append(code_of[cat.codes] if len(code_of) else np.zeros(len(obs), np.int32))
        sizes.append(len(obs))
        del obs, holder, cat
    pert = np.concatenate(pert_parts) if pert_parts else np.zeros(0, dtype=np.int32)
    usable = np.concatenate(usable_parts) if usable_parts else np.zeros(0, bool)
    del pert_parts, usable_parts
    keep = select(pert, usable, max_cells, seed)
    per = pd.Series(pert[usable]).value_counts()
    record = {"max_cells_per_perturbation": int(max_cells), "cells": int(len(keep)),
              "usable_cells": int(usable.sum()), "perturbations_capped": int((per > max_cells).sum())}
    del pert, usable
    offsets = np.concatenate([[0], np.cumsum(sizes)])
    xs, obss, var = [], [], None
    for k, p in enumerate(paths):
        rows = keep[(keep >= offsets[k]) & (keep < offsets[k + 1])] - offsets[k]
        with h5py.File(p, "r") as f:
            if var is None:
                var = read_elem(f["var"])
            if len(rows):
                xs.append(_rows(f, rows))
                obss.append(_obs(f, OBS_COLUMNS).iloc[rows])
    x = sp.vstack(xs, format="csr") if xs else sp.csr_matrix((0, 0 if var is None else len(var)))
    obs = pd.concat(obss) if obss else pd.DataFrame(columns=list(OBS_COLUMNS))
    for c in obs.columns:
        if isinstance(obs[c].dtype, pd.CategoricalDtype) or obs[c].dtype == object:
            obs[c] = obs[c].astype(str)
    return ad.AnnData(X=x, obs=obs, var=var), record
