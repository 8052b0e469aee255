"""The quality stage (workflow/scripts/quality.py): read both arms' outputs, call the quality functions,
write ``results/quality/metrics.json`` and ``results/quality/perturbations.tsv`` through ``atomic_output``.

Reads files only; imports the arms' libraries (profile normalisation, the one log1p CP10k) and the
low-level modules, never :mod:`pairedscreen.pair`, :mod:`pairedscreen.report` or
:mod:`pairedscreen.simulate` (import-linter contract in pyproject.toml).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import anndata as ad
import numpy as np
import pandas as pd

from pairedscreen import columns as C
from pairedscreen import quarantine
from pairedscreen.expression import log1p_cp10k, usable_cells
from pairedscreen.io import jsonable, write_json, write_parquet, write_tsv
from pairedscreen.modalities import paint_modality, rna_modality
from pairedscreen.paint.profiles import normalize_plates, read_wells
from pairedscreen.quality import batch, concordance, correction, effect, position, replicate, truth
from pairedscreen.quality.paint_units import PlateRows, paint_replicates, per_plate
from pairedscreen.quality.subsample import bounded_cells
from pairedscreen.quality.summary import summarize_hits
from pairedscreen.quality.units import replicate_pseudobulks
from pairedscreen.rna.knockdown import knockdown_summary, read_knockdown
from pairedscreen.sheets import read_registry

log = logging.getLogger("pairedscreen.quality")
PathLike = str | os.PathLike


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
    x = log1p_cp10k(cells.X[keep])
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
        # not scored (fewer than 2 replicates: no mAP) is NA with a reason, never "not active"
        q = out[f"{arm}_q_value"]
        out[f"{arm}_active"] = (q < 0.05).astype("boolean").mask(q.isna())
        few = out[f"{arm}_n_replicates"] < 2 if f"{arm}_n_replicates" in out else q.isna()
        out[f"{arm}_active_reason"] = np.where(q.notna(), "", np.where(few, "fewer than 2 replicates",
                                                                         "not scored"))
    return out


def _paint_quality(profiles: PathLike, wells: Sequence[PathLike], paint_cells: Sequence[PathLike] | None,
                   reg: pd.DataFrame, metrics: dict, tables: list, *, nperm: int, seed: int, alpha: float,
                   pca: Any, position_out: PathLike | None, max_cells: int,
                   max_replicates: int, aggregate: str, normalize: str) -> pd.DataFrame:
    """The paint metrics, reading a plate at a time (:mod:`pairedscreen.quality.paint_units`): the
    replicate profiles (at most ``max_replicates`` per perturbation), each plate's wells for the position
    effects, the control wells (at most ``max_replicates`` per plate) for batch predictability."""
    pr = PlateRows(profiles, reg)
    feats = pr.features
    pca_share = None if pca in (None, 0, 1) else float(pca)
    chain = correction.correction_metrics(profiles, reg, nperm=nperm, seed=seed, alpha=alpha, pca=pca_share,
                                          max_replicates=max_replicates)
    if chain is not None:   # corrected profiles: wells are the replicates (sub-wells are not corrected)
        metrics["correction"] = chain
        paint_cells = None
    rep, unit, record = paint_replicates(pr, paint_cells, reg, max_replicates=max_replicates, seed=seed,
                                         aggregate=aggregate, normalize=normalize, log=log)
    metrics["paint_subsample"] = record
    meta = pd.DataFrame({"perturbation": rep[C.PERT].astype(str).to_numpy(),
                         "is_control": rep[C.IS_CONTROL].to_numpy(bool),
                         "plate": rep[C.PLATE].astype(str).to_numpy()})
    rep_feats = [f for f in feats if f in rep.columns]   # sub-well replicates may drop undefined features
    x = replicate.paint_features(rep, rep_feats, pca_variance=None if pca in (None, 0, 1) else float(pca))
    act_paint = replicate.phenotypic_activity(x, meta, null_size=nperm, seed=seed)
    metrics["replicate"]["paint"] = {**summarize_hits(act_paint, alpha=alpha), "replicate_unit": unit}
    tables.append(_table(act_paint, "paint", "map"))
    if meta["plate"].nunique() > 1:
        cons_paint = replicate.consistency(x, meta, diff_col="plate", null_size=nperm, seed=seed)
        metrics["consistency"]["paint_across_plates"] = summarize_hits(cons_paint, alpha=alpha)
        tables.append(_table(cons_paint, "paint", "plate_consistency")[["paint_plate_consistency_q"]])
    eff_paint = effect.edistance_table(rep[rep_feats].to_numpy(), meta["perturbation"].to_numpy(),
                                       meta["is_control"].to_numpy(), n_permutations=nperm, seed=seed,
                                       min_cells=2, max_cells=max_cells)
    metrics["effect"]["paint"] = {**summarize_hits(eff_paint, alpha=alpha), "unit": unit}
    tables.append(_table(eff_paint, "paint", "effect"))
    del rep, x

    # raw wells (before correction and selection), normalised as the profiles stage does, one plate file
    # at a time: the features defined on every plate, then each plate's position effects (sorted plates)
    # (a correction chain may have replaced the features by components: the raw wells have its input's)
    raw = _RawWells(wells, reg, correction.input_features(profiles, feats), max_per_plate=max_replicates,
                    seed=seed, normalize=normalize)
    keep_feats = raw.defined
    before = position.PositionEffects(keep_feats, n_permutations=nperm, seed=seed)
    after = position.PositionEffects(feats, n_permutations=nperm, seed=seed)
    r2: dict[str, list] = {"before": [], "after": []}
    profiled = set(pr.plates())
    for plate in sorted(set(raw.plates()) | profiled):
        for stage, acc, df, f in (("before", before, raw.normalised(plate), keep_feats),
                                  ("after", after, pr.plate(plate) if plate in profiled else None, feats)):
            if df is None or not len(df):
                continue
            acc.add(plate, df)
            if position_out is not None:
                r2[stage].append(position.plate_feature_r2(plate, df, f))
    metrics["position"] = {"before": position.summarize(before.table(), alpha=alpha),
                           "after": position.summarize(after.table(), alpha=alpha)}
    if position_out is not None:
        parts = [p.assign(profiles=stage) for stage in ("before", "after") for p in r2[stage]
                 if p is not None]
        table = pd.concat(parts, ignore_index=True) if parts else \
            pd.DataFrame(columns=[*position.FEATURE_R2_COLUMNS, "profiles"])
        write_parquet(table[["profiles", *[c for c in table.columns if c != "profiles"]]], position_out)
    ctrl_raw = raw.controls
    cf = [f for f in keep_feats if ctrl_raw[f].notna().all()]
    metrics["batch"]["paint_plate_raw"] = batch.batch_predictability(
        ctrl_raw[cf].to_numpy(), ctrl_raw[C.PLATE].to_numpy(), n_permutations=nperm, seed=seed)
    ctrl = pr.controls([C.PLATE, C.BATCH, *feats], max_per_plate=max_replicates, seed=seed)
    metrics["batch"]["paint_plate_normalized"] = batch.batch_predictability(
        ctrl[feats].to_numpy(), ctrl[C.PLATE].to_numpy(), n_permutations=nperm, seed=seed)
    if C.BATCH in ctrl and ctrl[C.BATCH].nunique() > 1:
        metrics["batch"]["paint_batch_normalized"] = batch.batch_predictability(
            ctrl[feats].to_numpy(), ctrl[C.BATCH].to_numpy(), n_permutations=nperm, seed=seed)
    return act_paint


class _RawWells:
    """The per-plate ``wells.parquet`` files (before position correction and feature selection): wells with
    cells, normalised per plate as :func:`pairedscreen.paint.profiles.normalize_plates` does. One scan at
    construction finds each plate's file, the features defined on every plate (``defined``) and the control
    wells (``controls``: raw values, file order, at most ``max_per_plate`` per plate,
    :func:`pairedscreen.quality.paint_units.per_plate`); then :meth:`normalised` reads a plate's file again
    (the last one kept)."""

    def __init__(self, paths: Sequence[PathLike], reg: pd.DataFrame, feats: list[str], *,
                 max_per_plate: int | None, seed: int, normalize: str) -> None:
        self.paths, self.reg, self.feats, self.normalize = list(paths), reg, feats, normalize
        self._cached: tuple[int, pd.DataFrame, pd.DataFrame] | None = None
        self._plates: dict[Any, int] = {}
        ok = np.ones(len(feats), bool)
        parts = []
        for k in range(len(self.paths)):
            raw, norm = self._read(k)
            for plate in pd.unique(raw[C.PLATE]):
                self._plates.setdefault(plate, k)
            ok &= norm[feats].notna().all(axis=0).to_numpy()
            parts.append(per_plate(raw.loc[raw[C.IS_CONTROL].to_numpy(bool), [C.PLATE, *feats]],
                                   max_per_plate, seed))
        self.defined = [f for f, good in zip(feats, ok, strict=True) if good]
        self.controls = pd.concat(parts, ignore_index=True) if parts else \
            pd.DataFrame(columns=[C.PLATE, *feats])

    def _read(self, k: int) -> tuple[pd.DataFrame, pd.DataFrame]:
        if self._cached is None or self._cached[0] != k:
            raw = read_wells([self.paths[k]], self.reg)
            has_cells = raw[self.feats].notna().any(axis=1) & (raw.get(C.N_CELLS, 1) > 0)
            raw = raw[has_cells].reset_index(drop=True)
            norm, _ = normalize_plates(raw, method=self.normalize, features=self.feats)
            self._cached = (k, raw, norm)
        return self._cached[1], self._cached[2]

    def plates(self) -> list[Any]:
        return list(self._plates)

    def normalised(self, plate: Any) -> pd.DataFrame | None:
        if plate not in self._plates:
            return None
        norm = self._read(self._plates[plate])[1]
        return norm[(norm[C.PLATE] == plate).to_numpy()]


def _rna_quality(rna_cells: PathLike | Sequence[PathLike], reg: pd.DataFrame, ids: list[str], metrics: dict,
                 tables: list, params: Mapping[str, Any], *, nperm: int, seed: int, alpha: float,
                 max_cells: int) -> pd.DataFrame:
    paths = [rna_cells] if isinstance(rna_cells, str | os.PathLike) else list(rna_cells)
    cells, record = bounded_cells(paths, ids, max_cells=max_cells, seed=seed)
    metrics["rna_subsample"] = record
    log.info("RNA cells read for quality: %d of %d usable (at most %d per perturbation; %d capped)",
             record["cells"], record["usable_cells"], max_cells, record["perturbations_capped"])
    if "is_control" not in cells.obs:
        ctrl_ids = set(reg.loc[reg["is_control"], "perturbation_id"])
        cells.obs["is_control"] = cells.obs["perturbation"].astype(str).isin(ctrl_ids).to_numpy()
    rrep = replicate_pseudobulks(cells, categories=ids, seed=seed,
                                 max_replicates=int(params["max_replicates"]))
    rx = replicate.rna_features(rrep.X, rrep.obs["is_control"].to_numpy(bool),
                                n_top=int(params["n_top_genes"]))
    rmeta = rrep.obs[["perturbation", "guide", "library", "is_control"]].reset_index(drop=True)
    act_rna = replicate.phenotypic_activity(rx, rmeta, null_size=nperm, seed=seed)
    metrics["replicate"]["rna"] = {**summarize_hits(act_rna, alpha=alpha),
                                   "replicate_unit": rrep.uns["replicate_unit"]}
    tables.append(_table(act_rna, "rna", "map"))
    if rmeta.groupby("perturbation")["guide"].nunique().max() > 1:
        cons_rna = replicate.consistency(rx, rmeta, diff_col="guide", null_size=nperm, seed=seed)
        metrics["consistency"]["rna_across_guides"] = summarize_hits(cons_rna, alpha=alpha)
        tables.append(_table(cons_rna, "rna", "guide_consistency")[["rna_guide_consistency_q"]])
    emb, eobs = _rna_embedding(cells, ids, max_cells=max_cells, n_top=int(params["n_top_genes"]),
                               n_comps=int(params["n_pcs"]), seed=seed)
    eff_rna = effect.edistance_table(emb, eobs["perturbation"].astype(str).to_numpy(),
                                     eobs["is_control"].to_numpy(bool), n_permutations=nperm, seed=seed,
                                     max_cells=max_cells)
    metrics["effect"]["rna"] = {**summarize_hits(eff_rna, alpha=alpha), "unit": "cells"}
    tables.append(_table(eff_rna, "rna", "effect"))
    cmask = eobs["is_control"].to_numpy(bool)
    for key in ("library", "batch"):
        if key in eobs and eobs.loc[cmask, key].nunique() > 1:
            metrics["batch"][f"rna_{key}"] = batch.batch_predictability(
                emb[cmask], eobs.loc[cmask, key].astype(str).to_numpy(), n_permutations=nperm, seed=seed)
    return act_rna


def run_quality(profiles: PathLike | None, consensus: PathLike | None,
                rna_cells: PathLike | Sequence[PathLike] | None,
                pseudobulk: PathLike | None, knockdown: PathLike | None, wells: Sequence[PathLike],
                registry: PathLike, params: Mapping[str, Any], truth_dir: PathLike | None,
                metrics_out: PathLike, table_out: PathLike, paint_cells: Sequence[PathLike] | None = None,
                similarity_out: PathLike | None = None, position_out: PathLike | None = None,
                paint_quarantine: PathLike | None = None, *, profiles_config: Mapping[str, Any]) -> dict:
    """All quality metrics -> ``results/quality/metrics.json`` (datasheet ``metrics`` block, plus
    ``truth_recovery`` when ``truth_dir``) and ``results/quality/perturbations.tsv`` (one row per registry
    perturbation: ``{arm}_map``, ``{arm}_q_value``, ``{arm}_active``, ``{arm}_edistance``, ``{arm}_effect_q``,
    consistency q-values, knockdown columns). ``params`` = the resolved ``quality:`` block
    (permutations, seed, alpha, max_cells, max_replicates, n_top_genes, n_pcs, paint_pca_variance; from
    :func:`pairedscreen.config.load_config`); ``profiles_config`` = the resolved ``profiles:`` block, whose
    ``aggregate`` and ``normalize`` the paint arm's sub-well replicates and uncorrected wells follow (as the
    profiles stage made the wells). ``rna_cells``: the libraries' ``cells.h5ad`` (or one merged
    file), of which at most ``max_cells`` usable cells per perturbation are read
    (:mod:`pairedscreen.quality.subsample`; recorded as ``metrics['rna_subsample']``).
    ``paint_cells`` (per-plate cells.parquet) enables
    sub-well replicates when the screen has one well per perturbation. For the report, when given:
    ``similarity_out`` (``results/quality/similarity.parquet``, the two similarity matrices behind
    ``metrics.concordance``) and ``position_out`` (``results/quality/position.parquet``, per plate and
    feature the R^2 behind ``metrics.position``, ``profiles`` = before|after).

    An arm whose inputs are None (no plates / no libraries in the sheets yet) is recorded as missing
    (``metrics['arms']``); its metrics, the concordance and ``similarity_out`` (both arms) and
    ``position_out`` (paint) are not made. Plates quarantined in ``paint_quarantine``
    (``results/paint/quarantine.tsv``) are left out of the per-plate inputs.
    """
    nperm = int(params["permutations"])
    seed = int(params["seed"])
    alpha = float(params["alpha"])
    max_cells = int(params["max_cells"])
    reg = read_registry(registry)
    ids = reg["perturbation_id"].astype(str).tolist()
    has = {"rna": rna_cells is not None and pseudobulk is not None,
           "paint": profiles is not None and consensus is not None}
    metrics: dict[str, Any] = {"arms": {a: "present" if v else "missing" for a, v in has.items()},
                               "replicate": {}, "consistency": {}, "effect": {}, "batch": {}}
    tables: list[pd.DataFrame] = []
    held = quarantine.read_table(paint_quarantine)
    calls: dict[str, pd.DataFrame] = {}
    if has["paint"]:
        calls["paint"] = _paint_quality(profiles, quarantine.usable_files(wells, held),
                                        quarantine.usable_files(paint_cells, held), reg, metrics, tables,
                                        nperm=nperm, seed=seed, alpha=alpha,
                                        pca=params["paint_pca_variance"], position_out=position_out,
                                        max_cells=max_cells, max_replicates=int(params["max_replicates"]),
                                        aggregate=str(profiles_config["aggregate"]),
                                        normalize=str(profiles_config["normalize"]))
    if has["rna"]:
        calls["rna"] = _rna_quality(rna_cells, reg, ids, metrics, tables, params, nperm=nperm, seed=seed,
                                    alpha=alpha, max_cells=max_cells)
    is_ctrl = reg["is_control"].to_numpy(bool)
    if has["rna"] and has["paint"]:
        rna_mod = rna_modality(ad.read_h5ad(pseudobulk), reg)
        paint_mod = paint_modality(pd.read_parquet(consensus), reg)
        metrics["concordance"] = {
            **concordance.concordance(rna_mod.X, paint_mod.X, is_ctrl, n_permutations=nperm, seed=seed),
            "subset": "non-control perturbations in both arms",
        }
        if similarity_out is not None:
            write_parquet(concordance.similarity_pairs(rna_mod.X, paint_mod.X, is_ctrl, ids), similarity_out)
        # the same statistic over the perturbations this run calls active (q < alpha) in both arms
        active = {arm: set(t.loc[t["q_value"] < alpha, "perturbation"].astype(str))
                  for arm, t in calls.items()}
        both_active = np.array([i in active["rna"] and i in active["paint"] for i in ids])
        metrics["concordance"]["active_in_both"] = concordance.concordance(
            rna_mod.X, paint_mod.X, is_ctrl, n_permutations=nperm, seed=seed, subset=both_active, labels=ids)
    table = pd.DataFrame(index=pd.Index(ids, name="perturbation_id"))
    for t in tables:
        table = table.join(t, how="left")
    kd_path = Path(knockdown) if knockdown else None
    if kd_path is not None and kd_path.exists() and kd_path.stat().st_size:
        kd = read_knockdown(kd_path)
        metrics["knockdown"] = knockdown_summary(kd)
        kd = kd.set_index("perturbation_id")
        for c in ("log2fc", "padj", "remaining_fraction", "significant", "measurable", "reason"):
            if c in kd:
                table[f"rna_knockdown_{c}"] = kd[c].reindex(table.index).to_numpy()
    if truth_dir:
        edge = metrics["position"]["before"]["edge_detected"] if has["paint"] else None
        metrics["truth_recovery"] = truth.truth_recovery(truth_dir, calls, edge_detected=edge, alpha=alpha)
        if has["rna"] and has["paint"]:
            metrics["truth_recovery"]["concordance"] = truth.concordance_recovery(
                truth_dir, ids, rna_mod.X, paint_mod.X, is_ctrl, alpha=alpha, n_permutations=nperm, seed=seed)
    write_tsv(table.reset_index(), table_out)
    write_json(jsonable(metrics), metrics_out)
    return metrics
