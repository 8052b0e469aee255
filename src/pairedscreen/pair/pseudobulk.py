"""RNA pseudobulks from called cells: one per perturbation (the ``rna`` modality) and replicate pseudobulks
(disjoint random cell subsets within each guide x library, for replicate mAP).

Input: ``results/rna/cells.h5ad`` (X = counts; obs ``perturbation``, ``pass_qc``, ``guide_ids``, ``library``).
Cells used: ``pass_qc`` and not ``predicted_doublet`` (when present), ``perturbation`` a registry id
(``multiple``/``unassigned`` never count).
"""

from __future__ import annotations

from collections.abc import Sequence

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp

from pairedscreen.rna import pseudobulk as rna_pb

TARGET_SUM = 1e4


def usable_cells(cells: ad.AnnData, *, key: str = "perturbation",
                 categories: Sequence[str] | None = None) -> np.ndarray:
    """The RNA arm's rule (:func:`pairedscreen.rna.pseudobulk.usable_cells`: pass QC, not a predicted
    doublet, one perturbation), optionally restricted to registry ``categories``."""
    view = cells if key == "perturbation" else ad.AnnData(obs=cells.obs.assign(perturbation=cells.obs[key]))
    mask = rna_pb.usable_cells(view)
    pert = cells.obs[key].astype(str).to_numpy()
    mask &= ~np.isin(pert, ["nan", "None", ""])
    if categories is not None:
        mask &= np.isin(pert, np.asarray(categories, dtype=str))
    return mask


def _indicator(labels: np.ndarray, levels: Sequence[str]) -> sp.csr_matrix:
    """Sparse (n_levels x n_cells) 0/1 matrix; labels not in ``levels`` are left out."""
    pos = pd.Index(levels).get_indexer(labels)
    keep = pos >= 0
    cols = np.flatnonzero(keep)
    return sp.csr_matrix((np.ones(len(cols)), (pos[keep], cols)), shape=(len(levels), len(labels)))


def _log_norm(counts: sp.spmatrix | np.ndarray, target_sum: float = TARGET_SUM) -> sp.csr_matrix:
    if target_sum == 1e4:
        return rna_pb.log1p_cp10k(counts)
    x = sp.csr_matrix(counts, dtype=np.float64)
    tot = np.asarray(x.sum(axis=1)).ravel()
    x = sp.csr_matrix(sp.diags(np.divide(target_sum, tot, out=np.zeros_like(tot), where=tot > 0)) @ x)
    x.data = np.log1p(x.data)
    return x


def pseudobulk(cells: ad.AnnData, categories: Sequence[str], *, key: str = "perturbation") -> ad.AnnData:
    """The RNA arm's pseudobulk (:func:`pairedscreen.rna.pseudobulk.pseudobulk`) with one row per
    ``categories`` entry in that order: categories without cells get NaN rows and ``n_cells`` 0."""
    keep = usable_cells(cells, key=key, categories=categories)
    sub = cells[keep]
    if key != "perturbation":
        sub = sub.copy()
        sub.obs["perturbation"] = sub.obs[key]
    pb = rna_pb.pseudobulk(sub, order=list(categories), controls=set())
    ids = pd.Index(list(categories))
    x = np.full((len(ids), cells.n_vars), np.nan, np.float32)
    counts = np.full((len(ids), cells.n_vars), np.nan)
    pos = ids.get_indexer(pb.obs_names)
    x[pos] = np.asarray(pb.X, np.float32)
    counts[pos] = np.asarray(pb.layers["counts"], np.float64)
    n = np.zeros(len(ids), np.int64)
    n[pos] = pb.obs["n_cells"].to_numpy()
    out = ad.AnnData(X=x, obs=pd.DataFrame({"n_cells": n}, index=ids), var=cells.var.copy(),
                     layers={"counts": counts})
    out.uns["normalization"] = "mean over cells of log1p(counts / total * 10000)"
    return out


def replicate_pseudobulks(cells: ad.AnnData, *, key: str = "perturbation", guide_key: str = "guide_ids",
                          library_key: str | None = "library", min_cells: int = 5, max_splits: int = 4,
                          seed: int = 0, categories: Sequence[str] | None = None,
                          target_sum: float = TARGET_SUM) -> ad.AnnData:
    """Replicate pseudobulks for replicate mAP: each (perturbation, guide, library) unit's cells are split
    at random into ``min(max_splits, n // min_cells)`` disjoint subsets (at least one when the unit has
    ``min_cells``; smaller units are dropped). X = log1p(CP10k) of each subset's summed counts.

    obs: ``perturbation``, ``guide``, ``library``, ``replicate`` (unit + split), ``n_cells``,
    ``is_control`` (when the cells carry it). Guides are kept apart so that guide consistency can be
    scored (positives required to come from different guides).
    """
    mask = usable_cells(cells, key=key, categories=categories)
    sub = cells[mask]
    obs = pd.DataFrame({"perturbation": sub.obs[key].astype(str).to_numpy(),
                        "guide": sub.obs[guide_key].astype(str).to_numpy() if guide_key in sub.obs
                        else sub.obs[key].astype(str).to_numpy()})
    obs["library"] = sub.obs[library_key].astype(str).to_numpy() if library_key and library_key in sub.obs \
        else "all"
    rng = np.random.default_rng(seed)
    labels = np.full(len(obs), "", dtype=object)
    units = obs.groupby(["perturbation", "guide", "library"], sort=True).indices
    for (pert, guide, lib), idx in units.items():
        k = min(max_splits, len(idx) // min_cells)
        if k < 1:
            continue
        split = rng.permutation(len(idx)) % k
        for j in range(k):
            labels[idx[split == j]] = f"{pert}|{guide}|{lib}|{j}"
    keep = labels != ""
    levels = sorted(set(labels[keep]))
    g = _indicator(labels.astype(str), levels)
    counts = g @ sp.csr_matrix(sub.X, dtype=np.float64)
    x = np.asarray(_log_norm(counts, target_sum).todense(), dtype=np.float32)
    parts = pd.DataFrame([lv.split("|") for lv in levels],
                         columns=["perturbation", "guide", "library", "split"])
    rep_obs = parts.drop(columns="split")
    rep_obs["replicate"] = levels
    rep_obs["n_cells"] = np.asarray(g.sum(axis=1)).ravel().astype(np.int64)
    if "is_control" in sub.obs:
        ctrl = dict(zip(sub.obs[key].astype(str), sub.obs["is_control"].astype(bool), strict=False))
        rep_obs["is_control"] = rep_obs["perturbation"].map(ctrl).astype(bool)
    rep_obs.index = pd.Index(levels)
    out = ad.AnnData(X=x, obs=rep_obs, var=cells.var.copy(), layers={"counts": np.asarray(counts.todense())})
    out.uns["replicate_unit"] = "random disjoint cell subsets within perturbation x guide x library"
    return out
