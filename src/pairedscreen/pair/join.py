"""Join both arms on the perturbation registry: ``perturbations.h5mu`` (+ ``rna.h5ad``, ``paint.h5ad``) and
the optional ``cells.h5mu``.

Every perturbation of the registry is a row of both modalities, in registry order. A perturbation one
arm did not measure keeps a NaN row there, ``obs['in_rna']`` / ``obs['in_paint']`` say which arm has it
and ``uns['missing']`` lists them per arm. Global ``obs`` carries the registry columns and per-arm QC
figures (``n_cells_rna``, ``n_cells_paint``, ``n_wells``, knockdown, replicate mAP and q-values...).
"""

from __future__ import annotations

import os
from collections.abc import Mapping

import anndata as ad
import mudata as md
import numpy as np
import pandas as pd

from pairedscreen.columns import IS_CONTROL, PERT, feature_columns
from pairedscreen.io import atomic_output
from pairedscreen.modalities import paint_modality, registry_obs, rna_modality


def h5_safe(col: pd.Series) -> pd.Series:
    """A column h5ad can store: booleans with gaps (e.g. a knockdown call, undefined for controls) become
    pandas' nullable ``boolean``; other mixed object columns become strings (missing -> empty)."""
    if col.dtype != object:
        return col
    present = col.dropna()
    if len(present) and all(isinstance(v, bool | np.bool_) for v in present):
        return col.astype("boolean")
    if all(isinstance(v, str) for v in present):
        return col.fillna("")
    return col.map(lambda v: "" if v is None or (isinstance(v, float) and np.isnan(v)) else str(v))


def build_perturbations(registry: pd.DataFrame, *, rna: ad.AnnData | None, paint: pd.DataFrame | None,
                        knockdown: pd.DataFrame | None = None, qc: pd.DataFrame | None = None,
                        uns: Mapping | None = None, de: pd.DataFrame | None = None,
                        de_layers: Mapping[str, np.ndarray] | None = None) -> md.MuData:
    """The paired object: modalities ``rna`` (pseudobulk) and ``paint`` (consensus), identical obs_names =
    registry perturbation ids in registry order.

    ``knockdown`` = ``results/rna/knockdown.tsv`` (perturbation_id, log2fc, padj, remaining_fraction...,
    measurable, significant, reason), added as ``knockdown_*`` columns (significant NA and the reason
    where the knockdown is not measurable); ``qc`` = any per-perturbation table indexed by perturbation id
    (replicate mAP, q-values, effect sizes) whose columns are copied into global obs as they are.
    ``de`` = ``results/rna/de_summary.tsv`` (per perturbation: n_de_genes, n_up, n_down, top_de_genes),
    added as ``de_*`` columns of the RNA modality's and the global obs (0 / "" where not tested: NaN
    counts); ``de_layers`` = perturbations x genes arrays in the RNA modality's order (:func:`de_layers`:
    ``de_log2fc``, ``de_qvalue``), stored as its layers.
    An arm given as None is an all-NaN modality (e.g. paint not run yet).
    """
    base = registry_obs(registry)
    ids = base.index
    rna_mod = rna_modality(rna, registry) if rna is not None else \
        ad.AnnData(X=np.full((len(ids), 0), np.nan, np.float32), obs=pd.DataFrame({"n_cells": 0}, index=ids))
    paint_mod = paint_modality(paint, registry) if paint is not None else \
        ad.AnnData(X=np.full((len(ids), 0), np.nan, np.float32),
                   obs=pd.DataFrame({"n_cells": 0, "n_wells": 0}, index=ids))
    for mod in (rna_mod, paint_mod):
        for c in base.columns:
            mod.obs[c] = base[c].to_numpy()
    obs = base.copy()
    obs["in_rna"] = rna_mod.obs["n_cells"].to_numpy() > 0
    obs["in_paint"] = paint_mod.obs["n_wells"].to_numpy() > 0
    rna_mod.obs["in_rna"], paint_mod.obs["in_paint"] = obs["in_rna"].to_numpy(), obs["in_paint"].to_numpy()
    obs["n_cells_rna"] = rna_mod.obs["n_cells"].to_numpy()
    obs["n_cells_paint"] = paint_mod.obs["n_cells"].to_numpy()
    obs["n_wells"] = paint_mod.obs["n_wells"].to_numpy()
    if knockdown is not None and len(knockdown):
        kd = knockdown.set_index(knockdown["perturbation_id"].astype(str)).reindex(ids)
        for c in ("log2fc", "pvalue", "padj", "remaining_fraction"):
            if c in kd:
                obs[f"knockdown_{c}"] = pd.to_numeric(kd[c], errors="coerce").to_numpy()
        for c in ("measurable", "significant", "reason"):   # NA / "" for perturbations without a target
            if c in kd:
                obs[f"knockdown_{c}"] = h5_safe(kd[c].astype(object).where(kd[c].notna(), None)).array
    if de is not None and len(de):
        d = de.set_index(de["perturbation_id"].astype(str)).reindex(ids)
        for c in ("n_de_genes", "n_up", "n_down"):
            rna_mod.obs[f"de_{c}"] = obs[f"de_{c}"] = pd.to_numeric(d[c], errors="coerce").to_numpy()
        top = d["top_de_genes"].fillna("").astype(str).to_numpy()
        rna_mod.obs["de_top_genes"] = obs["de_top_genes"] = top
    for name, values in (de_layers or {}).items():
        rna_mod.layers[name] = values
    if qc is not None:
        q = qc.copy()
        q.index = q.index.astype(str)
        q = q.reindex(ids)
        for c in q.columns:
            obs[c] = h5_safe(q[c]).array
    with md.set_options(pull_on_update=False):     # global obs = ours, not pulled from the modalities
        mdata = md.MuData({"rna": rna_mod, "paint": paint_mod})
    mdata.obs = obs.loc[mdata.obs_names]
    missing = {arm: ids[~obs[f"in_{arm}"].to_numpy()].tolist() for arm in ("rna", "paint")}
    mdata.uns["missing"] = {k: np.asarray(v, dtype=str) for k, v in missing.items()}
    mdata.uns["registry_order"] = np.asarray(ids, dtype=str)
    for k, v in (uns or {}).items():
        mdata.uns[k] = v
    if list(mdata.obs_names) != list(ids):
        raise AssertionError("obs order differs from the registry")
    return mdata


def write_paired(mdata: md.MuData, h5mu: str | os.PathLike, rna_h5ad: str | os.PathLike | None = None,
                 paint_h5ad: str | os.PathLike | None = None) -> None:
    """Write ``perturbations.h5mu`` and, when paths are given, each modality (with global obs columns
    added to its obs) as ``rna.h5ad`` / ``paint.h5ad``, all atomically."""
    with atomic_output(h5mu) as tmp, md.set_options(pull_on_update=False):
        mdata.write_h5mu(tmp)
    for name, path in (("rna", rna_h5ad), ("paint", paint_h5ad)):
        if path is None:
            continue
        mod = mdata.mod[name].copy()
        for c in mdata.obs.columns:
            if c not in mod.obs.columns and ":" not in c:
                mod.obs[c] = mdata.obs[c].array
        mod.uns["missing"] = mdata.uns["missing"][name]
        if "arms" in mdata.uns:
            mod.uns["arms"] = dict(mdata.uns["arms"])
        with atomic_output(path) as tmp:
            mod.write_h5ad(tmp)


def paint_cells_anndata(cells: pd.DataFrame, *, features: list[str] | None = None) -> ad.AnnData:
    """A painted per-cell table (cells.parquet) as AnnData: X = features, obs = the other columns,
    obs_names ``{plate}_{well}_s{site}_{object_id}`` (or the row number when those are missing)."""
    feats = features if features is not None else feature_columns(cells)
    obs = cells.drop(columns=feats).reset_index(drop=True)
    for c in obs.columns:
        if obs[c].dtype == object:
            obs[c] = obs[c].astype(str)
    need = ["plate", "well", "site", "object_id"]
    if all(c in obs for c in need):
        names = (obs.plate.astype(str) + "_" + obs.well.astype(str) + "_s" + obs.site.astype(str) + "_"
                 + obs.object_id.astype(str))
    else:
        names = pd.Series(np.arange(len(obs)).astype(str))
    obs.index = pd.Index(names.to_numpy(), dtype=str)
    for src in (PERT, "perturbation_id"):
        if "perturbation" not in obs and src in obs:
            obs["perturbation"] = obs[src].astype(str)
    if "is_control" not in obs and IS_CONTROL in obs:
        obs["is_control"] = obs[IS_CONTROL].astype(bool)
    return ad.AnnData(X=cells[feats].to_numpy(np.float32), obs=obs, var=pd.DataFrame(index=pd.Index(feats)))


def build_cells(rna_cells: ad.AnnData, paint_cells: ad.AnnData) -> md.MuData:
    """``cells.h5mu``: RNA cells and painted cells as two modalities with disjoint obs (no shared cells;
    MuData keeps the union of obs, each modality filling only its own rows)."""
    rna_cells = rna_cells.copy()
    paint_cells = paint_cells.copy()
    rna_cells.obs_names = pd.Index(["rna:" + n if not str(n).startswith("rna:") else n
                                    for n in rna_cells.obs_names])
    paint_cells.obs_names = pd.Index(["paint:" + n if not str(n).startswith("paint:") else n
                                      for n in paint_cells.obs_names])
    with md.set_options(pull_on_update=False):
        return md.MuData({"rna": rna_cells, "paint": paint_cells}, axis=0)


def write_cells(mdata: md.MuData, path: str | os.PathLike) -> None:
    with atomic_output(path) as tmp, md.set_options(pull_on_update=False):
        mdata.write_h5mu(tmp)


def should_write_cells(setting: str | bool, n_cells: int, limit: int = 200_000) -> bool:
    """``pair.cells_h5mu``: auto = below ``limit`` cells in total; true/false force it."""
    if isinstance(setting, bool):
        return setting
    s = str(setting).strip().lower()
    if s == "auto":
        return n_cells < limit
    return s in ("true", "yes", "1")


def de_layers(de_path: str | os.PathLike, ids: pd.Index, genes: pd.Index) -> dict[str, np.ndarray]:
    """``results/rna/de.parquet`` as perturbations (``ids``) x genes (``genes``) float32 arrays
    ``de_log2fc`` and ``de_qvalue`` (NaN where not tested), read one row group (= one perturbation) at a
    time."""
    import pyarrow.parquet as pq

    out = {k: np.full((len(ids), len(genes)), np.nan, np.float32) for k in ("de_log2fc", "de_qvalue")}
    f = pq.ParquetFile(de_path)
    for i in range(f.num_row_groups):
        t = f.read_row_group(i, columns=["perturbation_id", "gene", "logfoldchange", "qvalue"]).to_pandas()
        for pid, part in t.groupby("perturbation_id", sort=False):
            r = ids.get_indexer([str(pid)])[0]
            c = genes.get_indexer(part["gene"].astype(str))
            ok = (c >= 0) & (r >= 0)
            out["de_log2fc"][r, c[ok]] = part["logfoldchange"].to_numpy()[ok]
            out["de_qvalue"][r, c[ok]] = part["qvalue"].to_numpy()[ok]
    return out
