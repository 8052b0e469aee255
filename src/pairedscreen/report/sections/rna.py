"""RNA section, per library: barcode ranks, the QC thresholds the RNA stage used, doublets, guides, MOI,
cells per perturbation; and the knockdown table. Everything is read from the stored per-library outputs
(``rna_inputs``, ``rna_barcode_ranks``, ``rna_cells_lib``) and ``rna_knockdown``; nothing is recomputed.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from pairedscreen.paths import path
from pairedscreen.report.inputs import Inputs, dig, flag, read_h5_elem

MAX_KNEE_POINTS = 600
# obs metric -> (uns['qc_thresholds'] nmads key, qc_fail_* flag, log axis)
QC_METRICS = {"total_counts": ("nmads_counts", "qc_fail_counts", True),
              "n_genes_by_counts": ("nmads_genes", "qc_fail_genes", True),
              "pct_counts_mt": ("nmads_mt", "qc_fail_mt", False),
              "pct_counts_ribo": (None, None, False)}
# uns['cell_calling'] key -> label of the threshold line
CALL_LINES = {"knee": "knee", "inflection": "inflection", "threshold": "min_umis (tested)"}
NOT_ASSIGNED = ("multiple", "unassigned")


def downsample_curve(n: int, k: int = MAX_KNEE_POINTS) -> np.ndarray:
    """Indices of at most ``k`` points of a rank curve, log-spaced (the plot's resolution)."""
    if n <= k:
        return np.arange(n)
    return np.unique(np.round(np.geomspace(1, n, k)).astype(int) - 1)


def qc_bounds(uns: Mapping[str, Any], library: str) -> dict[str, dict[str, float | None]]:
    """The bounds ``rna.qc.compute_qc`` flagged with (``uns['qc_thresholds']``): per metric lower/upper."""
    qt = uns.get("qc_thresholds")
    if not isinstance(qt, Mapping):
        return {}
    out: dict[str, dict[str, float | None]] = {}
    for metric in ("total_counts", "n_genes_by_counts", "pct_counts_mt"):
        b = qt.get(metric)
        if isinstance(b, Mapping):
            out[metric] = {"lower": _num(b.get("lower")), "upper": _num(b.get("upper"))}
    if not out and isinstance(qt.get("by_group"), Mapping) and library in qt["by_group"]:
        g = qt["by_group"][library]  # several groups in one library file: this library's own
        out = {"total_counts": {"lower": _num(g["total_counts_min"]), "upper": _num(g["total_counts_max"])},
               "n_genes_by_counts": {"lower": _num(g["n_genes_min"]), "upper": _num(g["n_genes_max"])},
               "pct_counts_mt": {"lower": None, "upper": _num(g["pct_counts_mt_max"])}}
    return out


def _num(v: Any) -> float | None:
    return None if v is None else float(np.asarray(v).ravel()[0])


def _knee(inputs: Inputs, lib: str, uns: Mapping[str, Any], notes: list[str]) -> dict[str, Any] | None:
    p = inputs.get("rna_barcode_ranks", notes, library=lib)
    if p is None:
        return None
    rk = pd.read_parquet(p, columns=["total", "is_cell"])
    umis, called = rk["total"].to_numpy(float), rk["is_cell"].to_numpy(bool)
    order = np.argsort(-umis, kind="stable")
    umis, called = umis[order], called[order]
    idx = downsample_curve(len(umis))
    cc = uns.get("cell_calling") if isinstance(uns.get("cell_calling"), Mapping) else {}
    lines = {label: float(cc[k]) for k, label in CALL_LINES.items() if cc.get(k) is not None}
    return {"rank": idx + 1, "umis": umis[idx], "called": called[idx], "n_barcodes": int(len(umis)),
            "n_called": int(called.sum()), "thresholds": lines, "fdr": cc.get("fdr")}


def _guides(cells_path: Any, obs: pd.DataFrame, uns: Mapping[str, Any]) -> dict[str, Any] | None:
    gc = read_h5_elem(cells_path, "obsm/guide_counts")
    if gc is None:
        return None
    if hasattr(gc, "tocsr"):
        mat = gc.tocsr()
        vals = np.asarray(mat.data, float)
        top = np.asarray(mat.max(axis=1).todense()).ravel()
    else:
        mat = np.asarray(gc, float)
        vals, top = mat[mat > 0], mat.max(axis=1)
    thr = uns.get("guide_thresholds")
    thr = np.asarray(thr.to_numpy(float) if isinstance(thr, pd.DataFrame) else [], float).ravel()
    ga = uns.get("guide_assignment") if isinstance(uns.get("guide_assignment"), Mapping) else {}
    return {"umis": vals, "top_umis": np.asarray(top, float).ravel(), "thresholds": thr,
            "method": ga.get("method"), "min_umis": ga.get("min_umis")}


def collect_library(inputs: Inputs, lib: str) -> dict[str, Any]:
    notes: list[str] = []
    d: dict[str, Any] = {"notes": notes, "counts": {}}
    info = inputs.json("rna_inputs", notes, library=lib)
    kb = (info or {}).get("kb_gex") or {}
    if "n_processed" in kb:
        d["counts"]["reads"] = int(kb["n_processed"])
    if "n_pseudoaligned" in kb:
        d["counts"]["reads_pseudoaligned"] = int(kb["n_pseudoaligned"])
    cells_path = inputs.get("rna_cells_lib", notes, library=lib)
    obs = read_h5_elem(cells_path, "obs") if cells_path is not None else None
    uns = (read_h5_elem(cells_path, "uns") or {}) if cells_path is not None else {}
    d["knee"] = _knee(inputs, lib, uns, notes)
    if d["knee"] is not None:
        d["counts"]["barcodes"] = d["knee"]["n_barcodes"]
    if obs is None:
        return d
    d["counts"]["cells_called"] = int(len(obs))
    pass_qc = flag(obs["pass_qc"])
    d["counts"]["cells_pass_qc"] = int(pass_qc.sum())
    pert = obs["perturbation"].astype(str)
    d["counts"]["cells_assigned"] = int((pass_qc & ~pert.isin(NOT_ASSIGNED)).sum())
    ga = uns.get("guide_assignment") if isinstance(uns.get("guide_assignment"), Mapping) else {}
    for key in ("assignment_rate", "unassigned_many_share"):   # the guide stage's own figures
        if _num(ga.get(key)) is not None:
            d["counts"][f"guide_{key}"] = round(float(ga[key]), 4)

    bounds = qc_bounds(uns, lib)
    if not bounds:
        notes.append(f"not available: uns['qc_thresholds'] missing from {inputs.rel(cells_path)}")
    qt = uns.get("qc_thresholds") if isinstance(uns.get("qc_thresholds"), Mapping) else {}
    d["qc"] = {}
    for metric, (nmads_key, fail_col, log) in QC_METRICS.items():
        if metric not in obs:
            continue
        b = bounds.get(metric, {})
        d["qc"][metric] = {"values": obs[metric].to_numpy(float), "lower": b.get("lower"),
                           "upper": b.get("upper"), "log": log,
                           "nmads": _num(qt.get(nmads_key)) if nmads_key else None,
                           "n_fail": int(flag(obs[fail_col]).sum()) if fail_col and fail_col in obs else None}

    dbl = uns.get("doublets") if isinstance(uns.get("doublets"), Mapping) else {}
    thr = dbl.get("threshold", dig(dbl, "by_group", lib))
    thr = _num(thr)
    d["doublets"] = {"scores": obs["doublet_score"].to_numpy(float),
                     "threshold": thr if thr is not None and np.isfinite(thr) else None,
                     "n_predicted": int(flag(obs["predicted_doublet"]).sum()),
                     "expected_rate": dbl.get("expected_rate")}
    d["guides"] = _guides(cells_path, obs, uns)
    if d["guides"] is None:
        notes.append(f"not available: obsm['guide_counts'] missing from {inputs.rel(cells_path)}")
    moi = obs.loc[pass_qc, "n_guides"].astype(int).value_counts().sort_index()
    d["moi"] = pd.DataFrame({"n_guides": moi.index.astype(int), "n_cells": moi.to_numpy(int)})
    per = pert[pass_qc].value_counts()
    d["cells_per_perturbation"] = pd.DataFrame({"perturbation": per.index, "n_cells": per.to_numpy(int)})
    return d


def collect_rna(inputs: Inputs, libraries: list[str], config: Mapping[str, Any]) -> dict[str, Any]:
    notes: list[str] = []
    if not libraries:
        notes.append(f"not available: no RNA library in {path('datasheet')} (counts.pair.libraries)")
    libs = {lib: collect_library(inputs, lib) for lib in libraries}
    kd = None
    p = inputs.get("rna_knockdown", notes)
    if p is not None:
        kd = pd.read_csv(p, sep="\t").sort_values("remaining_fraction", kind="stable").reset_index(drop=True)
        kd["significant"] = kd["significant"].astype("boolean")   # NA: not measurable (see ``reason``)
        if "reason" in kd:
            kd["reason"] = kd["reason"].fillna("").astype(str)
            unmeasured = kd.loc[~kd["measurable"].astype(bool), "reason"].value_counts().sort_index()
            notes += [f"knockdown not measurable for {n} perturbation(s): {why} (knockdown table)"
                      for why, n in unmeasured.items()]
    return {"libraries": libs, "knockdown": kd, "notes": notes,
            "alpha": dig(config, "rna", "knockdown", "alpha")}
