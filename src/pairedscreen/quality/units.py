"""Replicate units for replicate mAP (:mod:`pairedscreen.quality.replicate`): RNA replicate pseudobulks.

Input: ``results/rna/cells.h5ad`` (X = counts; obs ``perturbation``, ``pass_qc``, ``guide_ids``, ``library``);
cells used: :func:`pairedscreen.expression.usable_cells`.
"""

from __future__ import annotations

from collections.abc import Sequence

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp

from pairedscreen.expression import log1p_cp10k, usable_cells


def _indicator(labels: np.ndarray, levels: Sequence[str]) -> sp.csr_matrix:
    """Sparse (n_levels x n_cells) 0/1 matrix; labels not in ``levels`` are left out."""
    pos = pd.Index(levels).get_indexer(labels)
    keep = pos >= 0
    cols = np.flatnonzero(keep)
    return sp.csr_matrix((np.ones(len(cols)), (pos[keep], cols)), shape=(len(levels), len(labels)))


def replicate_pseudobulks(cells: ad.AnnData, *, key: str = "perturbation", guide_key: str = "guide_ids",
                          library_key: str | None = "library", min_cells: int = 5, max_splits: int = 4,
                          seed: int, categories: Sequence[str] | None = None,
                          max_replicates: int | None = None) -> ad.AnnData:
    """Replicate pseudobulks for replicate mAP: each (perturbation, guide, library) unit's cells are split
    at random into ``min(max_splits, n // min_cells)`` disjoint subsets (at least one when the unit has
    ``min_cells``; smaller units are dropped). X = log1p(CP10k) of each subset's summed counts.

    obs: ``perturbation``, ``guide``, ``library``, ``replicate`` (unit + split), ``n_cells``,
    ``is_control`` (when the cells carry it). Guides are kept apart so that guide consistency can be
    scored (positives required to come from different guides).

    ``max_replicates`` caps the replicates of one perturbation (a seeded choice among its subsets, from a
    generator of its own, so screens under the cap get the same subsets): replicate mAP's pairs grow with
    the square of the replicates, which otherwise grow with the libraries of a screen.
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
    if max_replicates is not None:
        capper = np.random.default_rng([seed, 1])
        per: dict[str, list[str]] = {}
        for lv in sorted(set(labels[labels != ""])):
            per.setdefault(lv.split("|", 1)[0], []).append(lv)
        dropped = {lv for lvs in per.values() if len(lvs) > max_replicates
                   for lv in np.asarray(lvs)[capper.permutation(len(lvs))[max_replicates:]]}
        if dropped:
            labels[np.isin(labels, list(dropped))] = ""
    keep = labels != ""
    levels = sorted(set(labels[keep]))
    g = _indicator(labels.astype(str), levels)
    counts = g @ sp.csr_matrix(sub.X, dtype=np.float64)
    x = np.asarray(log1p_cp10k(counts).todense(), dtype=np.float32)
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
