"""Paired-quality section: per-perturbation table, replicate/effect summaries, cross-modal concordance,
batch predictability, plate-position effect and truth recovery. The numbers are the quality stage's:
``quality_metrics`` (metrics.json), ``quality_table`` (perturbations.tsv), ``quality_similarity`` (the two
similarity matrices behind ``metrics.concordance``) and ``quality_position`` (the per-feature R^2 behind
``metrics.position``); registry columns and cell/well counts come from ``paired_h5mu``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from pairedscreen.paths import path
from pairedscreen.report.inputs import Inputs, dig, flatten, read_h5_elem

REGISTRY_COLUMNS = ("perturbation_type", "target_gene", "is_control", "control_type")
TRUTH_COLUMNS = ("effect_class", "rna_active", "paint_active", "knockdown_remaining")
HIT_KEYS = ("n_scored", "n_hits", "n_controls_called", "fraction_active", "alpha")


def per_perturbation(inputs: Inputs, notes: list[str]) -> pd.DataFrame:
    """One row per registry perturbation: registry columns and cell/well counts (paired h5mu), the quality
    table's columns, and the planted truth when the run has a truth folder."""
    tab = pd.DataFrame(columns=["perturbation_id"])
    p = inputs.get("paired_h5mu", notes)
    if p is not None:
        obs = read_h5_elem(p, "obs")
        tab = pd.DataFrame({"perturbation_id": obs.index.astype(str)})
        for c in REGISTRY_COLUMNS:
            if c in obs:
                tab[c] = obs[c].to_numpy()
        for arm, cols in (("rna", ("n_cells",)), ("paint", ("n_cells", "n_wells"))):
            mod = read_h5_elem(p, f"mod/{arm}/obs")
            if mod is None:
                notes.append(f"not available: modality '{arm}' missing from {inputs.rel(p)}")
                continue
            for c in cols:
                if c in mod:
                    tab[f"{arm}_{c}"] = mod[c].reindex(obs.index).to_numpy()
    p = inputs.get("quality_table", notes)
    if p is not None:
        q = pd.read_csv(p, sep="\t", dtype={"perturbation_id": str})
        tab = q if tab.empty else tab.merge(q, on="perturbation_id", how="left")
    p = inputs.truth("perturbations.tsv", notes)
    if p is not None:
        t = pd.read_csv(p, sep="\t", dtype={"perturbation_id": str})
        t = t[["perturbation_id", *[c for c in TRUTH_COLUMNS if c in t]]]
        tab = tab.merge(t.rename(columns={c: f"truth_{c}" for c in TRUTH_COLUMNS}), on="perturbation_id",
                        how="left")
    return tab.reset_index(drop=True)


def similarity(inputs: Inputs, metrics: Mapping[str, Any], notes: list[str]) -> dict[str, Any] | None:
    """The stored similarity matrices (full, symmetric) and their off-diagonal pairs."""
    p = inputs.get("quality_similarity", notes)
    if p is None:
        return None
    s = pd.read_parquet(p)
    if s.empty:
        notes.append(f"not available: no perturbation compared in {inputs.rel(p)}")
        return None
    diag = s["perturbation_a"] == s["perturbation_b"]
    ids = s.loc[diag, "perturbation_a"].astype(str).tolist()
    pos = {k: i for i, k in enumerate(ids)}
    i = s["perturbation_a"].map(pos).to_numpy()
    j = s["perturbation_b"].map(pos).to_numpy()
    out: dict[str, Any] = {"ids": ids, "n_perturbations": len(ids),
                           "mantel_r": dig(metrics, "concordance", "mantel_r"),
                           "mantel_p": dig(metrics, "concordance", "mantel_p")}
    for arm in ("rna", "paint"):
        m = np.full((len(ids), len(ids)), np.nan)
        v = s[f"{arm}_similarity"].to_numpy(float)
        m[i, j], m[j, i] = v, v
        out[f"sim_{arm}"] = m
        out[f"pairs_{arm}"] = v[~diag.to_numpy()]
    return out


def position(inputs: Inputs, metrics: Mapping[str, Any], config: Mapping[str, Any], notes: list[str]
             ) -> dict[str, Any] | None:
    """Per-feature edge R^2 before/after correction (stored) and the metrics' medians."""
    p = inputs.get("quality_position", notes)
    if p is None:
        return None
    r2 = pd.read_parquet(p, columns=["profiles", "plate", "feature", "r2_edge"])
    if r2.empty:
        notes.append(f"not available: no plate with enough wells in {inputs.rel(p)}")
        return None
    frames = {st: r2.loc[r2["profiles"] == st, ["plate", "feature", "r2_edge"]]
              .rename(columns={"r2_edge": "r2"}) for st in ("before", "after")}
    return {**frames, "n_features": int(frames["after"].groupby("plate").size().max())
            if len(frames["after"]) else 0,
            "median_before": dig(metrics, "position", "before", "median_r2_edge"),
            "median_after": dig(metrics, "position", "after", "median_r2_edge"),
            "corrected": bool(dig(config, "profiles", "position_correction"))}


def arm_summary(metrics: Mapping[str, Any]) -> pd.DataFrame:
    rows = []
    for kind, test in (("replicate", "replicate mAP"), ("effect", "E-distance")):
        for arm, v in (metrics.get(kind) or {}).items():
            if isinstance(v, Mapping):
                rows.append({"test": test, "arm": arm, **{k: v.get(k) for k in HIT_KEYS}})
    return pd.DataFrame(rows)


def batch_table(metrics: Mapping[str, Any]) -> pd.DataFrame:
    return pd.DataFrame([{"what": k, **{kk: vv for kk, vv in v.items() if not isinstance(vv, Mapping | list)}}
                         for k, v in (metrics.get("batch") or {}).items() if isinstance(v, Mapping)])


def correction_table(metrics: Mapping[str, Any]) -> pd.DataFrame:
    """``metrics.correction``: one row per step of the profiles' correction chain (``input`` = before it),
    what it did (the profiles stage's record, in brief) and the replicate mAP and batch predictability
    (accuracy vs chance) quality measured after it."""
    rows = []
    for s in dig(metrics, "correction", "steps") or []:
        if not isinstance(s, Mapping):
            continue
        rec, rep, bt = s.get("record") or {}, s.get("replicate") or {}, s.get("batch") or {}
        row: dict[str, Any] = {"step": s.get("step"), "features": s.get("n_features"),
                               "detail": _correction_detail(s.get("step"), rec),
                               "mean mAP": rep.get("mean_map"), "fraction active": rep.get("fraction_active")}
        for key in ("plate_controls", "batch_controls", "batch_wells"):
            b = bt.get(key)
            if isinstance(b, Mapping):
                row[f"{key} accuracy"] = b.get("accuracy")
                row[f"{key} chance"] = b.get("chance")
        rows.append(row)
    return pd.DataFrame(rows)


def _correction_detail(step: Any, rec: Mapping[str, Any]) -> str:
    if step == "cell_count_regression":
        r2 = f"median R^2 {_num(rec.get('r2_median'))}, max {_num(rec.get('r2_max'))}"
        return f"on {rec.get('covariate')}: {r2}"
    if step == "sphering":
        cands = ", ".join(f"{c.get('epsilon'):g}: {_num(c.get('mean_map'))}"
                          for c in rec.get("candidates") or [])
        return f"{rec.get('method')} epsilon {rec.get('epsilon'):g} (mean mAP per epsilon {cands})"
    if step == "harmony":
        if not rec.get("corrected"):
            return f"not corrected: {rec.get('reason')}"
        return (f"{rec.get('n_pcs')} PCs, {rec.get('n_batches')} batches of {rec.get('batch_key')}, "
                f"{rec.get('nclust')} clusters, {rec.get('iterations')} iterations, "
                f"{'converged' if rec.get('converged') else 'not converged'}")
    if step == "pca":
        return f"{rec.get('n_components')} components, {_num(rec.get('variance_explained'))} of the variance"
    return "normalised, selected profiles"


def _num(v: Any) -> str:
    return f"{v:.3f}" if isinstance(v, int | float) else "NA"


def position_table(metrics: Mapping[str, Any]) -> pd.DataFrame:
    rows = []
    for stage in ("before", "after"):
        v = dig(metrics, "position", stage)
        if not isinstance(v, Mapping):
            continue
        for plate, pv in (v.get("plates") or {}).items():
            rows.append({"profiles": stage, "plate": plate, "edge_detected": v.get("edge_detected"), **pv})
    return pd.DataFrame(rows)


def truth_table(tr: Any) -> pd.DataFrame | None:
    if not isinstance(tr, Mapping):
        return None
    if all(isinstance(v, Mapping) for v in tr.values()):
        return pd.DataFrame([{"what": k, **{kk: vv for kk, vv in v.items() if not isinstance(vv, Mapping)}}
                             for k, v in tr.items()])
    return pd.DataFrame(flatten(tr), columns=["metric", "value"])


def collect_paired(inputs: Inputs, config: Mapping[str, Any], ds: Mapping[str, Any],
                   metrics: Mapping[str, Any], notes: list[str]) -> dict[str, Any]:
    d: dict[str, Any] = {"notes": notes, "per_perturbation": per_perturbation(inputs, notes)}
    d["concordance"] = similarity(inputs, metrics, notes)
    conc = metrics.get("concordance")
    d["concordance_metrics"] = flatten(conc) if isinstance(conc, Mapping) else []
    d["arm_summary"] = arm_summary(metrics)
    d["batch"] = batch_table(metrics)
    if d["batch"].empty:
        notes.append(f"not available: metrics.batch missing from {path('quality_metrics')}")
    d["correction"] = correction_table(metrics)
    d["position_metrics"] = position_table(metrics)
    d["position"] = position(inputs, metrics, config, notes)
    d["truth_recovery"] = truth_table(ds.get("truth_recovery"))
    return d
