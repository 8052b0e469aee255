"""File-level stages of the pair/quality/datasheet rules (called by workflow/scripts/{profiles,quality,pair,
datasheet}.py): read the arms' outputs, call the pure functions, write through ``atomic_output``.

Paths follow ARCHITECTURE.md / :mod:`pairedscreen.paths`.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import anndata as ad
import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import scipy.sparse as sp

from pairedscreen import columns as C
from pairedscreen.io import write_json, write_parquet, write_tsv
from pairedscreen.pair import datasheet as ds
from pairedscreen.pair import join
from pairedscreen.pair import profiles as prof
from pairedscreen.pair.pseudobulk import replicate_pseudobulks, usable_cells
from pairedscreen.quality import batch, concordance, effect, position, replicate, truth
from pairedscreen.sheets import read_sheet

log = logging.getLogger("pairedscreen.pair")
PathLike = str | os.PathLike


def read_registry(path: PathLike) -> pd.DataFrame:
    return read_sheet(path, bool_cols=("is_control",))


def _read_wells(paths: Sequence[PathLike], registry: pd.DataFrame) -> pd.DataFrame:
    return pd.concat([prof.harmonize_metadata(pd.read_parquet(p), registry) for p in paths],
                     ignore_index=True, sort=False)


# ------------------------------------------------------------------------------------------- profiles
def build_profiles(wells: Sequence[PathLike], registry: PathLike, params: Mapping[str, Any],
                   profiles_out: PathLike, consensus_out: PathLike) -> prof.ProfileResult:
    """Per-plate ``wells.parquet`` -> ``profiles.parquet`` (normalised, selected well profiles) and
    ``consensus.parquet`` (per perturbation), per the ``profiles:`` config block (``aggregate`` was
    applied by the paint arm when it wrote wells.parquet; from per-cell tables use
    :func:`pairedscreen.pair.profiles.build_profiles` with ``plate_files``)."""
    reg = read_registry(registry)
    res = prof.build_profiles(wells=_read_wells(wells, reg), registry=reg,
                              normalize=params.get("normalize", "mad_robustize"),
                              feature_select=params.get("feature_select", prof.DEFAULT_FEATURE_SELECT),
                              outlier_cutoff=float(params.get("outlier_cutoff", prof.OUTLIER_CUTOFF)),
                              position_correction=params.get("position_correction", False),
                              blocklist=params.get("blocklist"))
    log.info("profiles: %s", json.dumps(res.info, default=str))
    write_parquet(res.profiles, profiles_out)
    write_parquet(res.consensus, consensus_out)
    return res


# -------------------------------------------------------------------------------------------- quality
def _paint_replicates(profiles: pd.DataFrame, feats: list[str], paint_cells: Sequence[PathLike] | None,
                      reg: pd.DataFrame, seed: int, n_splits: int = 3) -> tuple[pd.DataFrame, str]:
    """Wells as replicates; sub-well replicates (cells split at random within wells, aggregated and
    normalised like the wells) when most perturbations have a single well and cells are given.

    Caveat, reported in the metrics (``replicate_unit``): sub-wells of one well share its well effect, so
    with one well per perturbation a well artefact cannot be told from a perturbation effect; activity
    calls are then within-well reproducibility, not replicate agreement."""
    trt = profiles[~profiles[C.IS_CONTROL]]
    wells_per = trt.groupby(C.PERT).size()
    if (len(wells_per) and wells_per.median() >= 2) or not paint_cells:
        return profiles, "wells"
    parts = []
    for p in paint_cells:
        cells = prof.harmonize_metadata(pd.read_parquet(p), reg)
        cells = prof.assign_splits(cells, n_splits, seed=seed)
        parts.append(prof.aggregate_wells(cells, strata=(C.PLATE, C.WELL, "Metadata_Split"),
                                          features=[f for f in feats if f in cells.columns]))
        del cells
    sub = pd.concat(parts, ignore_index=True)
    sub, _ = prof.normalize_plates(sub, features=feats)
    # a feature without spread among the few control splits is undefined after normalisation: drop the
    # feature (not the replicates, which a row-wise dropna would remove wholesale)
    undefined = [f for f in feats if sub[f].isna().any()]
    sub = sub.drop(columns=undefined)
    if undefined:
        log.info("sub-well replicates: %d of %d features undefined after normalisation, not used",
                 len(undefined), len(feats))
    return sub, f"sub-wells ({n_splits} random cell splits per well)"


def _rna_embedding(cells: ad.AnnData, reg_ids: list[str], *, max_cells: int, n_top: int, n_comps: int,
                   seed: int) -> tuple[np.ndarray, pd.DataFrame]:
    """PCA of log1p-CP10k (top ``n_top`` variable genes) of usable cells, at most ``max_cells`` per
    perturbation."""
    rng = np.random.default_rng(seed)
    mask = usable_cells(cells, categories=reg_ids)
    idx = np.flatnonzero(mask)
    pert = cells.obs["perturbation"].astype(str).to_numpy()[idx]
    keep = np.concatenate([rng.permutation(idx[pert == p])[:max_cells] for p in pd.unique(pert)]) \
        if len(idx) else idx
    keep.sort()
    x = sp.csr_matrix(cells.X[keep], dtype=np.float64)
    tot = np.asarray(x.sum(axis=1)).ravel()
    x = sp.csr_matrix(sp.diags(np.divide(1e4, tot, out=np.zeros_like(tot), where=tot > 0)) @ x)
    x.data = np.log1p(x.data)
    mean = np.asarray(x.mean(axis=0)).ravel()
    var = np.asarray(x.multiply(x).mean(axis=0)).ravel() - mean ** 2
    genes = np.argsort(var)[::-1][:n_top]
    dense = x[:, genes].toarray()
    obs = cells.obs.iloc[keep]
    emb = effect.pca_embedding(dense, obs["is_control"].to_numpy(bool) if "is_control" in obs else None,
                               n_comps=n_comps, seed=seed)
    return emb, obs


def _table(df: pd.DataFrame, arm: str, kind: str) -> pd.DataFrame:
    cols = {"mean_average_precision": f"{arm}_map", "p_value": f"{arm}_{kind}_p",
            "q_value": f"{arm}_{kind}_q", "edistance": f"{arm}_edistance",
            "n_replicates": f"{arm}_n_replicates"}
    if kind == "map":
        cols.update(p_value=f"{arm}_p_value", q_value=f"{arm}_q_value")
    out = df.set_index("perturbation")[[c for c in cols if c in df.columns]].rename(columns=cols)
    if kind == "map":
        out[f"{arm}_active"] = out[f"{arm}_q_value"] < 0.05
    return out


def compute_quality(profiles: PathLike, consensus: PathLike, rna_cells: PathLike, pseudobulk: PathLike,
                    knockdown: PathLike, wells: Sequence[PathLike], registry: PathLike,
                    params: Mapping[str, Any], truth_dir: PathLike | None, metrics_out: PathLike,
                    table_out: PathLike, paint_cells: Sequence[PathLike] | None = None) -> dict:
    """All quality metrics -> ``results/quality/metrics.json`` (datasheet ``metrics`` block, plus
    ``truth_recovery`` when ``truth_dir``) and ``results/quality/perturbations.tsv`` (one row per registry
    perturbation: ``{arm}_map``, ``{arm}_q_value``, ``{arm}_active``, ``{arm}_edistance``, ``{arm}_effect_q``,
    consistency q-values, knockdown columns). ``params`` = the ``quality:`` block (permutations, seed, and
    optionally alpha, max_cells, n_top_genes, n_pcs). ``paint_cells`` (per-plate cells.parquet) enables
    sub-well replicates when the screen has one well per perturbation.
    """
    nperm = int(params.get("permutations", 1000))
    seed = int(params.get("seed", 0))
    alpha = float(params.get("alpha", 0.05))
    max_cells = int(params.get("max_cells", 200))
    reg = read_registry(registry)
    ids = reg["perturbation_id"].astype(str).tolist()
    metrics: dict[str, Any] = {"replicate": {}, "consistency": {}, "effect": {}, "batch": {}}
    tables = []

    # paint ---------------------------------------------------------------------------------------
    pr = prof.harmonize_metadata(pd.read_parquet(profiles), reg)
    feats = C.feature_columns(pr)
    rep, unit = _paint_replicates(pr, feats, paint_cells, reg, seed)
    meta = pd.DataFrame({"perturbation": rep[C.PERT].astype(str).to_numpy(),
                         "is_control": rep[C.IS_CONTROL].to_numpy(bool),
                         "plate": rep[C.PLATE].astype(str).to_numpy()})
    pca = params.get("paint_pca_variance", 0.9)
    rep_feats = [f for f in feats if f in rep.columns]   # sub-well replicates may drop undefined features
    x = replicate.paint_features(rep, rep_feats, pca_variance=None if pca in (None, 0, 1) else float(pca))
    act_paint = replicate.phenotypic_activity(x, meta, null_size=nperm, seed=seed)
    metrics["replicate"]["paint"] = {**ds.summarize_hits(act_paint, alpha=alpha), "replicate_unit": unit}
    tables.append(_table(act_paint, "paint", "map"))
    if meta["plate"].nunique() > 1:
        cons_paint = replicate.consistency(x, meta, diff_col="plate", null_size=nperm, seed=seed)
        metrics["consistency"]["paint_across_plates"] = ds.summarize_hits(cons_paint, alpha=alpha)
        tables.append(_table(cons_paint, "paint", "plate_consistency")[["paint_plate_consistency_q"]])
    eff_paint = effect.edistance_table(rep[rep_feats].to_numpy(), meta["perturbation"].to_numpy(),
                                       meta["is_control"].to_numpy(), n_permutations=nperm, seed=seed,
                                       min_cells=2)
    metrics["effect"]["paint"] = {**ds.summarize_hits(eff_paint, alpha=alpha), "unit": unit}
    tables.append(_table(eff_paint, "paint", "effect"))

    raw = _read_wells(wells, reg)
    raw = raw[raw[feats].notna().any(axis=1) & (raw.get(C.N_CELLS, 1) > 0)].reset_index(drop=True)
    raw_norm, _ = prof.normalize_plates(raw, features=feats)
    keep_feats = [f for f in feats if raw_norm[f].notna().all()]
    before = position.position_effects(raw_norm, keep_feats, n_permutations=nperm, seed=seed)
    after = position.position_effects(pr, feats, n_permutations=nperm, seed=seed)
    metrics["position"] = {"before": position.summarize(before, alpha=alpha),
                           "after": position.summarize(after, alpha=alpha)}
    ctrl_raw = raw[raw[C.IS_CONTROL]]
    cf = [f for f in keep_feats if ctrl_raw[f].notna().all()]
    metrics["batch"]["paint_plate_raw"] = batch.batch_predictability(
        ctrl_raw[cf].to_numpy(), ctrl_raw[C.PLATE].to_numpy(), n_permutations=nperm, seed=seed)
    ctrl = pr[pr[C.IS_CONTROL]]
    metrics["batch"]["paint_plate_normalized"] = batch.batch_predictability(
        ctrl[feats].to_numpy(), ctrl[C.PLATE].to_numpy(), n_permutations=nperm, seed=seed)
    if C.BATCH in ctrl and ctrl[C.BATCH].nunique() > 1:
        metrics["batch"]["paint_batch_normalized"] = batch.batch_predictability(
            ctrl[feats].to_numpy(), ctrl[C.BATCH].to_numpy(), n_permutations=nperm, seed=seed)

    # rna -----------------------------------------------------------------------------------------
    cells = ad.read_h5ad(rna_cells)
    if "is_control" not in cells.obs:
        ctrl_ids = set(reg.loc[reg["is_control"], "perturbation_id"])
        cells.obs["is_control"] = cells.obs["perturbation"].astype(str).isin(ctrl_ids).to_numpy()
    rrep = replicate_pseudobulks(cells, categories=ids, seed=seed)
    rx = replicate.rna_features(rrep.X, rrep.obs["is_control"].to_numpy(bool),
                                n_top=int(params.get("n_top_genes", 2000)))
    rmeta = rrep.obs[["perturbation", "guide", "library", "is_control"]].reset_index(drop=True)
    act_rna = replicate.phenotypic_activity(rx, rmeta, null_size=nperm, seed=seed)
    metrics["replicate"]["rna"] = {**ds.summarize_hits(act_rna, alpha=alpha),
                                   "replicate_unit": rrep.uns["replicate_unit"]}
    tables.append(_table(act_rna, "rna", "map"))
    if rmeta.groupby("perturbation")["guide"].nunique().max() > 1:
        cons_rna = replicate.consistency(rx, rmeta, diff_col="guide", null_size=nperm, seed=seed)
        metrics["consistency"]["rna_across_guides"] = ds.summarize_hits(cons_rna, alpha=alpha)
        tables.append(_table(cons_rna, "rna", "guide_consistency")[["rna_guide_consistency_q"]])
    emb, eobs = _rna_embedding(cells, ids, max_cells=max_cells, n_top=int(params.get("n_top_genes", 2000)),
                               n_comps=int(params.get("n_pcs", 20)), seed=seed)
    eff_rna = effect.edistance_table(emb, eobs["perturbation"].astype(str).to_numpy(),
                                     eobs["is_control"].to_numpy(bool), n_permutations=nperm, seed=seed,
                                     max_cells=max_cells)
    metrics["effect"]["rna"] = {**ds.summarize_hits(eff_rna, alpha=alpha), "unit": "cells"}
    tables.append(_table(eff_rna, "rna", "effect"))
    cmask = eobs["is_control"].to_numpy(bool)
    for key in ("library", "batch"):
        if key in eobs and eobs.loc[cmask, key].nunique() > 1:
            metrics["batch"][f"rna_{key}"] = batch.batch_predictability(
                emb[cmask], eobs.loc[cmask, key].astype(str).to_numpy(), n_permutations=nperm, seed=seed)

    # both ----------------------------------------------------------------------------------------
    rna_mod = join.rna_modality(ad.read_h5ad(pseudobulk), reg)
    paint_mod = join.paint_modality(pd.read_parquet(consensus), reg)
    is_ctrl = reg["is_control"].to_numpy(bool)
    metrics["concordance"] = {
        **concordance.concordance(rna_mod.X, paint_mod.X, is_ctrl, n_permutations=nperm, seed=seed),
        "subset": "non-control perturbations in both arms",
    }
    # the same statistic over the perturbations this run calls active (q < alpha) in both arms
    active = {arm: set(t.loc[t["q_value"] < alpha, "perturbation"].astype(str))
              for arm, t in (("rna", act_rna), ("paint", act_paint))}
    both_active = np.array([i in active["rna"] and i in active["paint"] for i in ids])
    metrics["concordance"]["active_in_both"] = concordance.concordance(
        rna_mod.X, paint_mod.X, is_ctrl, n_permutations=nperm, seed=seed, subset=both_active, labels=ids)
    table = pd.DataFrame(index=pd.Index(ids, name="perturbation_id"))
    for t in tables:
        table = table.join(t, how="left")
    kd_path = Path(knockdown)
    if kd_path.exists() and kd_path.stat().st_size:
        kd = pd.read_csv(kd_path, sep="\t").set_index("perturbation_id")
        for c in ("log2fc", "padj", "remaining_fraction", "significant"):
            if c in kd:
                table[f"rna_knockdown_{c}"] = kd[c].reindex(table.index).to_numpy()
    if truth_dir:
        metrics["truth_recovery"] = truth.truth_recovery(
            truth_dir, {"rna": act_rna, "paint": act_paint},
            edge_detected=metrics["position"]["before"]["edge_detected"], alpha=alpha)
        metrics["truth_recovery"]["concordance"] = truth.concordance_recovery(
            truth_dir, ids, rna_mod.X, paint_mod.X, is_ctrl, alpha=alpha, n_permutations=nperm, seed=seed)
    write_tsv(table.reset_index(), table_out)
    write_json(ds._jsonable(metrics), metrics_out)
    return metrics


# ---------------------------------------------------------------------------------------------- pair
def _paint_cell_meta(path: PathLike) -> pd.DataFrame:
    names = [n for n in pq.read_schema(path).names if n.startswith("Metadata_")]
    return pq.read_table(path, columns=names).to_pandas()


def pair_arms(pseudobulk: PathLike, consensus: PathLike, quality_table: PathLike, registry: PathLike,
              rna_cells: PathLike, paint_cells: Sequence[PathLike], h5mu_out: PathLike, rna_out: PathLike,
              paint_out: PathLike, cell_index_out: PathLike, cells_out: PathLike | None = None) -> None:
    """``perturbations.h5mu`` + ``rna.h5ad`` + ``paint.h5ad`` (registry order; quality table columns in
    global obs), ``cell_index.tsv`` (every cell of both arms: modality, cell_id, perturbation, is_control,
    library/plate/well/site, used = behind the pseudobulk or a profiled well) and, when asked,
    ``cells.h5mu``."""
    reg = read_registry(registry)
    qc = pd.read_csv(quality_table, sep="\t").set_index("perturbation_id")
    mdata = join.build_perturbations(reg, rna=ad.read_h5ad(pseudobulk), paint=pd.read_parquet(consensus),
                                     qc=qc)
    join.write_paired(mdata, h5mu_out, rna_out, paint_out)

    cells = ad.read_h5ad(rna_cells, backed="r" if cells_out is None else None)
    used = usable_cells(cells, categories=reg["perturbation_id"].astype(str).tolist())
    obs = cells.obs
    rna_idx = pd.DataFrame({"modality": "rna", "cell_id": obs.index.astype(str),
                            "perturbation": obs["perturbation"].astype(str).to_numpy(),
                            "library": obs["library"].astype(str).to_numpy() if "library" in obs else "",
                            "batch": obs["batch"].astype(str).to_numpy() if "batch" in obs else "",
                            "used": used})
    paint_idx = []
    for p in paint_cells:
        m = _paint_cell_meta(p)
        paint_idx.append(pd.DataFrame({
            "modality": "paint",
            "cell_id": (m[C.PLATE].astype(str) + "_" + m[C.WELL].astype(str) + "_s"
                        + m[C.SITE].astype(str) + "_" + m["Metadata_ObjectNumber"].astype(str)).to_numpy(),
            "perturbation": m[C.PERT].astype(str).to_numpy(),
            "plate": m[C.PLATE].astype(str).to_numpy(),
            "well": m[C.WELL].astype(str).to_numpy(), "site": m[C.SITE].to_numpy(),
            "batch": m[C.BATCH].astype(str).to_numpy() if C.BATCH in m else "", "used": True}))
    index = pd.concat([rna_idx, *paint_idx], ignore_index=True, sort=False)
    ctrl = set(reg.loc[reg["is_control"], "perturbation_id"].astype(str))
    index.insert(3, "is_control", index["perturbation"].isin(ctrl))
    write_tsv(index, cell_index_out)
    if cells_out is not None:
        tables = [prof.harmonize_metadata(pd.read_parquet(p), reg) for p in paint_cells]
        painted = join.paint_cells_anndata(pd.concat(tables, ignore_index=True, sort=False).rename(columns={
            C.PLATE: "plate", C.WELL: "well", C.SITE: "site", "Metadata_ObjectNumber": "object_id"}))
        join.write_cells(join.build_cells(cells, painted), cells_out)


# ----------------------------------------------------------------------------------------- datasheet
def _get(inputs: Any, name: str) -> list[str]:
    v = getattr(inputs, name, None) if not isinstance(inputs, Mapping) else inputs.get(name)
    if v is None:
        return []
    return [str(v)] if isinstance(v, str | os.PathLike) else [str(x) for x in v]


def _h5_obs_sum(path: PathLike, column: str, mod: str | None = None) -> int:
    """Sum of an integer obs column of an h5ad (or of modality ``mod`` of an h5mu), read with h5py."""
    import h5py

    with h5py.File(path, "r") as f:
        grp = f[f"mod/{mod}/obs" if mod else "obs"]
        return int(np.nansum(np.asarray(grp[column][()], dtype=np.float64))) if column in grp else 0


def _ledger(inputs: Any, libraries: Sequence[str], plates: Sequence[str],
            chunks: Mapping[str, Sequence[str]] | None, gex_r1: Mapping[str, Sequence[str]] | None,
            rna_obs: Sequence[pd.DataFrame]) -> dict | None:
    from pairedscreen.pair import ledger
    from pairedscreen.paths import path

    rna_in, raws, ranks = _get(inputs, "rna_inputs"), _get(inputs, "raw"), _get(inputs, "barcode_ranks")
    if not ranks or not chunks:
        return None
    rna = {lib: ledger.rna_library_ledger(rna_in[i], raws[i], ranks[i], rna_obs[i],
                                          fastq_r1=(gex_r1 or {}).get(lib))
           for i, lib in enumerate(libraries)}
    profiled: dict[str, set[str]] = {}
    prof_path = _get(inputs, "profiles")
    if prof_path:
        pw = pq.read_table(prof_path[0], columns=[prof.PLATE, prof.WELL]).to_pandas()
        for plate, grp in pw.groupby(prof.PLATE):
            profiled[str(plate)] = set(grp[prof.WELL].astype(str))
    paint = {}
    for i, plate in enumerate(plates):
        cs = list(chunks[plate])
        paint[plate] = ledger.paint_plate_ledger(
            plate, _get(inputs, "image_index")[i], [path("masks", plate=plate, chunk=c) for c in cs],
            [path("features", plate=plate, chunk=c) for c in cs], _get(inputs, "paint_cells")[i],
            _get(inputs, "paint_wells")[i], profiled.get(plate, set()) if prof_path else None)
    h5mu = _get(inputs, "h5mu")
    cons = _get(inputs, "consensus")
    return ledger.build_ledger(
        rna, paint,
        pseudobulk_cells=_h5_obs_sum(_get(inputs, "pseudobulk")[0], "n_cells") if _get(inputs, "pseudobulk")
        else None,
        merged_cells=ledger._n_obs(_get(inputs, "rna_merged")[0]) if _get(inputs, "rna_merged") else None,
        paired_rna_cells=_h5_obs_sum(h5mu[0], "n_cells", "rna") if h5mu else None,
        paired_paint_cells=_h5_obs_sum(h5mu[0], "n_cells", "paint") if h5mu else None,
        consensus_cells=int(pd.read_parquet(cons[0], columns=[prof.N_CELLS])[prof.N_CELLS].fillna(0).sum())
        if cons and prof.N_CELLS in pq.read_schema(cons[0]).names else None)


def write_datasheet(inputs: Any, config: Mapping[str, Any], truth_dir: PathLike | None,
                    libraries: Sequence[str], plates: Sequence[str], out: PathLike,
                    chunks: Mapping[str, Sequence[str]] | None = None,
                    gex_r1: Mapping[str, Sequence[str]] | None = None,
                    workdir: PathLike | None = None) -> dict:
    """``results/datasheet.json`` from the workflow outputs named in ``inputs`` (h5mu, metrics, rna_inputs,
    rna_cells, raw, image_index, paint_cells, sheets, plate_maps; for the ledger also barcode_ranks,
    paint_wells, profiles, consensus, pseudobulk, rna_merged and the masks/features of ``chunks``
    {plate: [chunk]}; ``outputs``: the final outputs whose content digests it records). FASTQ and image
    checksums are the ones the arms recorded (inputs.json, image_index.parquet), not recomputed.
    ``gex_r1``: {library: GEX R1 paths as in the sheet}, to match FASTQ record counts to kb's reads in."""
    from pairedscreen import provenance

    wd = Path(workdir) if workdir is not None else Path.cwd()
    prehashed: list[dict] = []
    reads = 0
    for p in _get(inputs, "rna_inputs"):
        info = json.loads(Path(p).read_text())
        for f, h in (info.get("fastqs") or {}).items():
            prehashed.append({"role": f"fastq:{info.get('library', '')}", "path": f, "sha256": h})
        reads += int((info.get("kb_gex") or {}).get("n_processed", 0) or 0)
    obs = [ad.read_h5ad(p, backed="r").obs.copy() for p in _get(inputs, "rna_cells")]
    barcodes = sum(ad.read_h5ad(p, backed="r").n_obs for p in _get(inputs, "raw"))
    rna_counts = ds.rna_stage_counts(pd.concat(obs) if obs else pd.DataFrame({"perturbation": []}),
                                     reads=reads or None, barcodes=barcodes or None)
    idx = [pd.read_parquet(p) for p in _get(inputs, "image_index")]
    image_index = pd.concat(idx, ignore_index=True) if idx else pd.DataFrame()
    for r in image_index.itertuples() if "sha256" in image_index else []:
        if isinstance(r.sha256, str) and len(r.sha256) == 64:
            prehashed.append({"role": f"image:{r.plate}", "path": str(r.path), "sha256": r.sha256})
    n_cells, wells = 0, set()
    for p in _get(inputs, "paint_cells"):
        m = pq.read_table(p, columns=[C.PLATE, C.WELL]).to_pandas()
        n_cells += len(m)
        wells |= set(zip(m[C.PLATE], m[C.WELL], strict=True))
    paint_counts = ds.paint_stage_counts(image_index, objects=n_cells, cells_profiled=n_cells,
                                         wells_profiled=len(wells)) if len(image_index) else \
        {"images": 0, "sites": 0, "sites_flagged": 0}
    ledger = _ledger(inputs, libraries, plates, chunks, gex_r1, obs)
    metrics = json.loads(Path(_get(inputs, "metrics")[0]).read_text())
    truth_rec = metrics.pop("truth_recovery", None) if truth_dir else None
    metrics.pop("truth_recovery", None)
    sheet = ds.build_datasheet(
        config=config,
        inputs={"sheets": _get(inputs, "sheets"), "plate_maps": _get(inputs, "plate_maps")},
        prehashed=prehashed,
        counts={"rna": rna_counts, "paint": paint_counts,
                "pair": {"libraries": list(libraries), "plates": list(plates)}},
        metrics=metrics, truth_recovery=truth_rec,
        outputs={"output": _get(inputs, "outputs") or _get(inputs, "h5mu")}, root=wd)
    if ledger is not None:
        sheet["ledger"] = ds._jsonable(ledger)
    sheet["provenance"] = ds._jsonable({"library": provenance.library_provenance(),
                                        "outputs": provenance.output_table(wd)})
    ds.validate_datasheet(sheet)
    write_json(sheet, out)
    return sheet
