"""On-target knockdown residuals of the cell-load export, as cell-load's ``filter_on_target_knockdown``
(``cell_load.utils.data_utils``) computes them from the file, stored so a user sees (and can threshold) what
the filter will do:

- ``var['gene_name']``: the gene symbols (the var names), the column the filter looks perturbations up in
  (its ``var_gene_name`` default);
- ``obs['residual_expression']``: the perturbation-level residual, mean ``X`` of the target gene over the
  perturbation's cells / its mean over the control cells (the filter keeps a perturbation when it is below
  its ``residual_expression`` threshold);
- ``obs['cell_residual_expression']``: the cell-level residual, the cell's ``X`` of its target gene / that
  control mean (the filter keeps a cell of a kept perturbation when below ``cell_residual_expression``).

Perturbations are the ``obs['perturbation']`` labels (target gene symbols; controls carry
``train.control_label``), matched to the first var of that gene name, as the filter matches them. Values
are NaN for control cells, labels that name no gene and targets with a control mean of 0 (cells the filter
drops). ``X`` holds the raw counts, so residuals are ratios of mean counts (the filter run on the file's X).

Memory: two passes over the written ``X`` one row block at a time (the target genes' columns of a block),
per-label sums, and the cell-level dataset filled in place.
"""

from __future__ import annotations

import h5py
import numpy as np
import pandas as pd
import scipy.sparse as sp
from anndata.io import read_elem, write_elem

from pairedscreen.expression import row_blocks
from pairedscreen.train import h5obs

PERTURBATION_RESIDUAL = "residual_expression"
CELL_RESIDUAL = "cell_residual_expression"
GENE_NAME = "gene_name"


def _own_gene(fh: h5py.File, control_label: str, block_nnz: int | None):
    """Per cell: its label's target column (-1: control or no gene) and the count of it; control sums."""
    x = fh["X"]
    n, n_vars = (int(v) for v in x.attrs["shape"])
    names = pd.Index(read_elem(fh["var"]).index.astype(str))
    cats = fh["obs"]["perturbation"]["categories"].asstr()[:]
    codes_ds = fh["obs"]["perturbation"]["codes"]
    col_of_cat = np.array([-1 if c == control_label else int(names.get_indexer([c])[0]) for c in cats],
                          dtype=np.int64)
    ctrl_code = np.flatnonzero(cats == control_label)
    targets = np.unique(col_of_cat[col_of_cat >= 0])
    slot_of_cat = np.where(col_of_cat >= 0, np.searchsorted(targets, col_of_cat), -1)
    indptr = x["indptr"][:]
    own = np.full(n, np.nan)
    ctrl_sum, n_ctrl = np.zeros(len(targets)), 0
    for a, b in row_blocks(indptr, block_nnz):
        lo, hi = int(indptr[a]), int(indptr[b])
        blk = sp.csr_matrix((x["data"][lo:hi], x["indices"][lo:hi], indptr[a:b + 1] - lo),
                            shape=(b - a, n_vars))
        sub = blk[:, targets].toarray().astype(np.float64) if len(targets) else np.zeros((b - a, 0))
        code = codes_ds[a:b].astype(np.int64)
        is_ctrl = np.isin(code, ctrl_code)
        ctrl_sum += sub[is_ctrl].sum(axis=0)
        n_ctrl += int(is_ctrl.sum())
        slot = np.where(code >= 0, slot_of_cat[np.maximum(code, 0)], -1)
        hit = slot >= 0
        own[a + np.flatnonzero(hit)] = sub[np.flatnonzero(hit), slot[hit]]
    codes = codes_ds[:].astype(np.int64)
    return own, codes, slot_of_cat, ctrl_sum / max(n_ctrl, 1), cats


def write_knockdown_residuals(fh: h5py.File, *, control_label: str,
                              block_nnz: int | None = None) -> pd.DataFrame:
    """Add ``var['gene_name']``, ``obs['residual_expression']`` and ``obs['cell_residual_expression']``
    (module docstring) to an export h5ad open for writing. Returns the per-label table (perturbation,
    n_cells, target mean, control mean, residual_expression)."""
    own, codes, slot_of_cat, ctrl_mean, cats = _own_gene(fh, control_label, block_nnz)
    var = read_elem(fh["var"])
    var[GENE_NAME] = var.index.astype(str)
    del fh["var"]
    write_elem(fh, "var", var)
    slot = np.where(codes >= 0, slot_of_cat[np.maximum(codes, 0)], -1)
    has = slot >= 0
    cm = np.full(len(own), np.nan)
    cm[has] = ctrl_mean[slot[has]]
    valid = has & ~np.isclose(np.nan_to_num(cm, nan=0.0), 0.0)
    cell = np.full(len(own), np.nan)
    cell[valid] = own[valid] / cm[valid]
    n_cats = len(cats)
    tot = np.bincount(codes[has], weights=own[has], minlength=n_cats)
    cnt = np.bincount(codes[has], minlength=n_cats)
    mean = np.divide(tot, cnt, out=np.full(n_cats, np.nan), where=cnt > 0)
    cat_ctrl = np.where(slot_of_cat >= 0, ctrl_mean[np.maximum(slot_of_cat, 0)] if len(ctrl_mean) else 0,
                        np.nan)
    ok = (slot_of_cat >= 0) & ~np.isclose(np.nan_to_num(cat_ctrl, nan=0.0), 0.0)
    per = np.divide(mean, cat_ctrl, out=np.full(n_cats, np.nan), where=ok)
    pert = np.where(valid, per[np.maximum(codes, 0)], np.nan)
    obs = fh["obs"]
    h5obs.write_array(obs, PERTURBATION_RESIDUAL, pert)
    h5obs.write_array(obs, CELL_RESIDUAL, cell)
    order = [c for c in obs.attrs["column-order"] if c not in (PERTURBATION_RESIDUAL, CELL_RESIDUAL)]
    obs.attrs["column-order"] = [*order, PERTURBATION_RESIDUAL, CELL_RESIDUAL]
    return pd.DataFrame({"perturbation": cats, "n_cells": cnt, "target_mean": mean,
                         "control_mean": cat_ctrl, PERTURBATION_RESIDUAL: per})
