"""Both arms' per-perturbation matrices in registry order, the one definition used by quality
(concordance) and pair (the h5mu modalities): every registry perturbation is a row, in registry order; a
perturbation an arm did not measure is a NaN row.

A low-level module (imports only :mod:`pairedscreen.columns`), so quality need not import pair.
"""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd

from pairedscreen.columns import N_CELLS, N_WELLS, PERT, bool_column, feature_columns

REGISTRY_COLUMNS = ["perturbation_type", "target_gene", "is_control", "control_type"]


def registry_obs(registry: pd.DataFrame) -> pd.DataFrame:
    """The registry's columns indexed by perturbation id (registry order), ``is_control`` boolean."""
    ids = registry["perturbation_id"].astype(str)
    if ids.duplicated().any():
        raise ValueError(f"duplicate perturbation ids in the registry: {sorted(set(ids[ids.duplicated()]))}")
    obs = registry.set_index(ids)[[c for c in REGISTRY_COLUMNS if c in registry.columns]].copy()
    obs.index.name = None
    if "is_control" in obs:
        obs["is_control"] = bool_column(obs["is_control"])
    for c in ("perturbation_type", "target_gene", "control_type"):
        if c in obs:
            obs[c] = obs[c].fillna("").astype(str)
    return obs


def rna_modality(pseudobulk: ad.AnnData, registry: pd.DataFrame) -> ad.AnnData:
    """Reindex a per-perturbation pseudobulk (X, layers['counts'], obs['n_cells']) to registry order."""
    ids = registry_obs(registry).index
    present = ids.isin(pseudobulk.obs_names)
    if "n_cells" in pseudobulk.obs:
        present &= np.asarray(pd.Series(pseudobulk.obs["n_cells"]).reindex(ids).fillna(0) > 0)
    pos = pseudobulk.obs_names.get_indexer(ids)
    x = _take_rows(pseudobulk.X, pos, present)
    layers = {k: _take_rows(v, pos, present, dtype=np.float64) for k, v in pseudobulk.layers.items()}
    n = pd.Series(pseudobulk.obs["n_cells"]).reindex(ids).fillna(0).astype(np.int64).to_numpy() \
        if "n_cells" in pseudobulk.obs else np.zeros(len(ids), np.int64)
    obs = pd.DataFrame({"n_cells": np.where(present, n, 0)}, index=ids)
    return ad.AnnData(X=x, obs=obs, var=pseudobulk.var.copy(), layers=layers, uns=dict(pseudobulk.uns))


def paint_modality(consensus: pd.DataFrame, registry: pd.DataFrame) -> ad.AnnData:
    """Consensus profiles (one row per ``Metadata_Perturbation``) as AnnData in registry order;
    obs ``n_cells`` (cells behind the consensus) and ``n_wells``."""
    ids = registry_obs(registry).index
    feats = feature_columns(consensus)
    cons = consensus.set_index(consensus[PERT].astype(str))
    present = ids.isin(cons.index)
    x = np.array(cons.reindex(ids)[feats].to_numpy(np.float32), copy=True)
    obs = pd.DataFrame(index=ids)
    for col in (N_CELLS, N_WELLS, "n_plates"):
        vals = cons[col].reindex(ids) if col in cons else pd.Series(np.nan, index=ids)
        obs[col] = vals.fillna(0).astype(np.int64).to_numpy()
    var = pd.DataFrame(index=pd.Index(feats))
    parts = pd.Series(feats).str.split("_", n=2, expand=True).reindex(columns=[0, 1])
    var["compartment"], var["feature_group"] = parts[0].to_numpy(), parts[1].fillna("").to_numpy()
    x[~present] = np.nan
    return ad.AnnData(X=x, obs=obs, var=var)


def _take_rows(m, pos: np.ndarray, present: np.ndarray, dtype=np.float32) -> np.ndarray:
    dense = m.toarray() if hasattr(m, "toarray") else np.asarray(m)
    out = np.full((len(pos), dense.shape[1]), np.nan, dtype=dtype)
    out[present] = dense[pos[present]]
    return out
