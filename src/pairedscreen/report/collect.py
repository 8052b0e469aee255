"""Gather the data behind every report section from a run's ``results/`` tree into plain dicts/DataFrames.

Nothing here draws: :mod:`pairedscreen.report.plots` turns these structures into figures and the tests
check them directly. Every optional input that is missing becomes a note ``"not available: <file>
missing"`` in its section's ``notes`` list; only the datasheet (``results/datasheet.json``) is required.

Files read (paths relative to ``results_dir``; see docs/ARCHITECTURE.md for the contracts):

- ``datasheet.json``: provenance, stage counts, warnings, quarantines, quality metrics, truth recovery
- ``rna/{lib}/raw.h5ad`` (X row sums only), ``rna/{lib}/cells.h5ad`` (obs, obsm['guide_counts'], uns),
  ``rna/{lib}/kb_gex/run_info.json`` (reads), ``rna/knockdown.tsv``
- ``paint/{plate}/image_index.parquet``, ``paint/{plate}/wells.parquet``, ``paint/{plate}/illum/*.npy``,
  ``paint/{plate}/masks/{chunk}/*.tif`` + ``objects.parquet``, ``paint/{plate}/cells.parquet`` (row count)
- ``paint/profiles.parquet``, ``paired/perturbations.h5mu``
"""

from __future__ import annotations

import json
import re
import warnings
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pandas as pd

from pairedscreen.plate import N_COLS, N_ROWS, edge_grid, is_edge_well, well_rc

DEFAULT_HEATMAP_FEATURE = "Cells_Intensity_MeanIntensity_AGP"
MAX_KNEE_POINTS = 600
MAX_ILLUM_SIDE = 96
MAX_CONCORDANCE = 1500

_QC_FLAG = {"total_counts": "counts", "n_genes_by_counts": "genes", "pct_counts_mt": "mt"}
_CALL_KEYS = ("knee", "threshold", "inflection", "min_umis", "cutoff")


class ReportInputError(FileNotFoundError):
    """A required input of the report (the datasheet) is missing or unreadable."""


# --------------------------------------------------------------------------------------------- helpers


def missing_note(results_dir: Path, path: Path) -> str:
    try:
        rel = path.relative_to(results_dir.parent)
    except ValueError:
        rel = path
    return f"not available: {rel} missing"


def _dig(obj: Any, *keys: str) -> Any:
    for key in keys:
        if not isinstance(obj, Mapping) or key not in obj:
            return None
        obj = obj[key]
    return obj


def _first(obj: Mapping[str, Any], *paths: str) -> Any:
    """The first present value among dotted ``paths`` (``"quality.concordance"``)."""
    for p in paths:
        v = _dig(obj, *p.split("."))
        if v is not None:
            return v
    return None


def flatten(obj: Any, prefix: str = "") -> list[tuple[str, Any]]:
    """Nested dicts/lists of scalars -> ``[(dotted.key, value)]`` for key/value tables."""
    out: list[tuple[str, Any]] = []
    if isinstance(obj, Mapping):
        for k, v in obj.items():
            out += flatten(v, f"{prefix}.{k}" if prefix else str(k))
    elif isinstance(obj, list) and obj and all(isinstance(x, Mapping) for x in obj):
        for i, v in enumerate(obj):
            out += flatten(v, f"{prefix}[{i}]")
    else:
        if isinstance(obj, list):
            obj = ", ".join(str(x) for x in obj)
        out.append((prefix, obj))
    return out


def plate_grid(wells: Iterable[str], values: Iterable[float]) -> np.ndarray:
    """A 16x24 float grid (NaN where no well) from well names and values."""
    grid = np.full((N_ROWS, N_COLS), np.nan)
    for w, v in zip(wells, values, strict=True):
        rc = well_rc(w)
        if rc is not None:
            grid[rc] = float(v) if v is not None and pd.notna(v) else np.nan
    return grid


def edge_summary(grid: np.ndarray) -> dict[str, float]:
    """Mean of edge vs interior wells of a 16x24 grid and their ratio."""
    edge = edge_grid(grid.shape)
    e, i = grid[edge & ~np.isnan(grid)], grid[~edge & ~np.isnan(grid)]
    em = float(e.mean()) if e.size else float("nan")
    im = float(i.mean()) if i.size else float("nan")
    ratio = em / im if e.size and i.size and em > 0 and im > 0 else float("nan")  # only for positive scales
    return {"edge_mean": em, "interior_mean": im, "edge_over_interior": ratio,
            "edge_minus_interior": float(np.round(em - im, 12)),
            "n_edge": int(e.size), "n_interior": int(i.size)}


def as_bool(s: pd.Series) -> pd.Series:
    """A boolean Series from bool/object/string columns; missing and unparseable values are False."""
    if pd.api.types.is_bool_dtype(s):
        return s.astype(bool)
    if pd.api.types.is_numeric_dtype(s):
        return s.fillna(0).astype(float) != 0
    txt = s.astype("string").str.strip().str.lower()
    return txt.isin(["true", "1", "yes", "y", "t"]).fillna(False).astype(bool)


def _find_col(df: pd.DataFrame, *names: str) -> str | None:
    lower = {c.lower(): c for c in df.columns}
    for n in names:
        if n.lower() in lower:
            return lower[n.lower()]
    return None


def _to_float_array(x: Any) -> np.ndarray:
    """Thresholds in any shape (scalar, dict, list, DataFrame, array) -> 1-D float array."""
    if x is None:
        return np.array([], float)
    if isinstance(x, pd.DataFrame):
        num = x.select_dtypes("number")
        col = _find_col(num, "threshold", "umi_threshold", "min_umis") if not num.empty else None
        return num[col].to_numpy(float) if col else num.to_numpy(float).ravel()
    if isinstance(x, Mapping):
        vals: list[float] = []
        for v in x.values():
            vals.extend(_to_float_array(v).tolist())
        return np.asarray(vals, float)
    arr = np.asarray(x)
    if arr.dtype.kind in "biuf":
        return arr.astype(float).ravel()
    return np.array([], float)


def _read_h5_elem(path: Path, key: str) -> Any:
    import anndata

    with h5py.File(path, "r") as f:
        if key not in f:
            return None
        return anndata.io.read_elem(f[key])


def _h5ad_row_sums(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """(obs_names, row sums of X) without loading the whole AnnData."""
    import anndata

    with h5py.File(path, "r") as f:
        obs = anndata.io.read_elem(f["obs"])
        x = f["X"]
        if isinstance(x, h5py.Group):  # csr/csc
            enc = x.attrs.get("encoding-type", "csr_matrix")
            data = x["data"][:]
            if enc == "csr_matrix":
                indptr = x["indptr"][:]
                csum = np.concatenate([[0.0], np.cumsum(data, dtype=np.float64)])
                sums = csum[indptr[1:]] - csum[indptr[:-1]]
            else:
                sums = np.bincount(x["indices"][:], weights=data, minlength=len(obs))
        else:
            sums = np.zeros(x.shape[0])
            for start in range(0, x.shape[0], 4096):
                sums[start:start + 4096] = x[start:start + 4096].sum(axis=1)
    return obs.index.to_numpy(), np.asarray(sums, float)


def mad_bounds(values: np.ndarray, nmads: float, log: bool) -> tuple[float, float]:
    """scanpy-style MAD outlier bounds (median +- nmads * MAD), optionally on log1p values."""
    v = np.log1p(values) if log else np.asarray(values, float)
    v = v[np.isfinite(v)]
    if v.size == 0:
        return float("nan"), float("nan")
    med = float(np.median(v))
    mad = float(np.median(np.abs(v - med)))
    lo, hi = med - nmads * mad, med + nmads * mad
    if log:
        return float(np.expm1(lo)), float(np.expm1(hi))
    return lo, hi


def _downsample_curve(n: int, k: int = MAX_KNEE_POINTS) -> np.ndarray:
    if n <= k:
        return np.arange(n)
    idx = np.unique(np.round(np.geomspace(1, n, k)).astype(int) - 1)
    return idx


def _discover(results_dir: Path, arm: str, marker_files: tuple[str, ...]) -> list[str]:
    base = results_dir / arm
    if not base.is_dir():
        return []
    return sorted(d.name for d in base.iterdir()
                  if d.is_dir() and any((d / m).exists() for m in marker_files))


def _sheet_ids(config: Mapping[str, Any], workdir: Path, key: str, col: str) -> list[str]:
    path = _dig(config, "sheets", key)
    if not path:
        return []
    p = Path(path)
    p = p if p.is_absolute() else workdir / p
    try:
        return [str(x) for x in pd.read_csv(p, sep="\t", dtype=str)[col].dropna()]
    except (OSError, KeyError, ValueError):
        return []


# --------------------------------------------------------------------------------------------- overview


def read_datasheet(results_dir: Path) -> dict[str, Any]:
    path = results_dir / "datasheet.json"
    if not path.exists():
        raise ReportInputError(f"required report input {path} is missing: run the pair stage first")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ReportInputError(f"required report input {path} is not valid JSON: {e}") from e


def read_metrics(results_dir: Path, ds: Mapping[str, Any], notes: list[str]) -> dict[str, Any]:
    """Quality metrics: the datasheet's ``metrics`` block, else ``results/quality/metrics.json``."""
    m = ds.get("metrics")
    if isinstance(m, Mapping) and m:
        return dict(m)
    path = results_dir / "quality" / "metrics.json"
    if path.exists():
        try:
            q = json.loads(path.read_text())
            return dict(q.get("metrics", q)) if isinstance(q, Mapping) else {}
        except json.JSONDecodeError:
            notes.append(f"not available: {path.relative_to(results_dir.parent)} is not valid JSON")
            return {}
    notes.append("not available: metrics missing from results/datasheet.json and "
                 f"{missing_note(results_dir, path).removeprefix('not available: ')}")
    return {}


def _inputs_table(inputs_raw: Any) -> pd.DataFrame:
    if isinstance(inputs_raw, Mapping):
        return pd.DataFrame([{"role": k, **(v if isinstance(v, Mapping) else {"path": v})}
                             for k, v in inputs_raw.items()])
    if isinstance(inputs_raw, list):
        return pd.DataFrame([x if isinstance(x, Mapping) else {"path": x} for x in inputs_raw])
    return pd.DataFrame()


def _funnel(counts: Mapping[str, Any], stages: list[tuple[str, str, str]]) -> pd.DataFrame:
    """Stage counts in order; ``% of previous stage`` only where the unit (reads, cells, sites...) stays."""
    rows: list[dict[str, Any]] = []
    prev: tuple[str, int] | None = None
    for key, label, unit in stages:
        v = counts.get(key)
        if v is None or isinstance(v, Mapping) or any(r["stage"] == label for r in rows):
            continue
        v = int(v)
        pct = round(100 * v / prev[1], 1) if prev and prev[0] == unit and prev[1] else float("nan")
        rows.append({"stage": label, "count": v, "unit": unit, "% of previous stage": pct})
        prev = (unit, v)
    return pd.DataFrame(rows)


def derive_warnings(ds: Mapping[str, Any], metrics: Mapping[str, Any], paint_counts: pd.DataFrame,
                    paint_plates: Mapping[str, Any] | None = None) -> list[str]:
    """Things a reader of the quality certificate must not miss, from the datasheet and the files."""
    out: list[str] = []
    pc = _dig(ds, "counts", "paint") or {}
    nq = pc.get("images_quarantined")
    if nq is None and not paint_counts.empty and "images_quarantined" in paint_counts:
        nq = int(paint_counts["images_quarantined"].sum())
    if nq:
        out.append(f"{nq} image(s) quarantined (unreadable or invalid); see Quarantines")
    if pc.get("sites_flagged"):
        out.append(f"{pc['sites_flagged']} of {pc.get('sites', '?')} imaging sites flagged by image QC "
                   "(focus/saturation); see the flagged-sites tables")
    for block in ("replicate", "effect"):
        for arm, v in (metrics.get(block) or {}).items():
            if isinstance(v, Mapping) and v.get("n_controls_called"):
                out.append(f"{arm}: {v['n_controls_called']} control(s) called active by the {block} test "
                           "(false positives among controls)")
    for key, v in (metrics.get("batch") or {}).items():
        if isinstance(v, Mapping) and v.get("p_value") is not None and float(v["p_value"]) < 0.05:
            out.append(f"batch is predictable from {key} (accuracy {float(v.get('accuracy') or 0):.2f} vs "
                       f"chance {float(v.get('chance') or 0):.2f}, p = {float(v['p_value']):.3g})")
    after = _dig(metrics, "position", "after")
    if isinstance(after, Mapping) and after.get("edge_detected"):
        out.append("a plate-edge effect is still detected in the final (corrected) profiles")
    for plate, d in (paint_plates or {}).items():
        grid = d.get("heatmaps", {}).get("cells per well")
        if grid is not None and np.isfinite(grid).any():
            n_wells = int(np.isfinite(grid).sum())
            empty = int((grid[np.isfinite(grid)] == 0).sum())
            if empty:
                out.append(f"plate {plate}: {empty} of {n_wells} wells have no segmented cell")
    edge = _dig(ds, "truth_recovery", "edge")
    if isinstance(edge, Mapping) and edge.get("correct") is False:
        out.append("truth recovery: the planted plate-edge effect was "
                   + ("missed" if edge.get("planted") else "reported but not planted"))
    return out


def collect_overview(results_dir: Path, ds: Mapping[str, Any], metrics: Mapping[str, Any],
                     rna: Mapping[str, Any], paint: Mapping[str, Any]) -> dict[str, Any]:
    software = ds.get("software") if isinstance(ds.get("software"), Mapping) else {}
    created = _first(ds, "generated_at", "created", "date", "created_at")
    created_note = None
    if created is None:
        mtime = (results_dir / "datasheet.json").stat().st_mtime
        created = pd.Timestamp(mtime, unit="s", tz="UTC").strftime("%Y-%m-%d %H:%M:%S UTC")
        created_note = "datasheet file time"
    cfg = ds.get("config") if isinstance(ds.get("config"), Mapping) else {}
    prov = {
        "pairedscreen version": software.get("pairedscreen") or _first(ds, "pairedscreen_version", "version"),
        "config digest (sha256)": _first(ds, "config_sha256", "config_digest"),
        "date": f"{created} ({created_note})" if created_note else created,
        "datasheet schema": ds.get("schema_version"),
        "python": software.get("python"),
        "snakemake": software.get("snakemake"),
        "truth_dir": cfg.get("truth_dir") or None,
        "seed (quality)": _dig(cfg, "quality", "seed"),
    }
    inputs = _inputs_table(_first(ds, "inputs", "provenance.inputs"))
    inputs_summary = pd.DataFrame()
    if not inputs.empty and "role" in inputs:
        agg = {"files": ("role", "size")}
        if "bytes" in inputs:
            agg["bytes"] = ("bytes", "sum")
        inputs_summary = inputs.groupby("role", sort=False).agg(**agg).reset_index()

    # per library / plate stage counts from the files; the datasheet's totals are the headline funnel
    rna_counts = pd.DataFrame([{"library": lib, **d.get("counts", {})}
                               for lib, d in rna.get("libraries", {}).items()])
    paint_counts = pd.DataFrame([{"plate": plate, **d.get("counts", {})}
                                 for plate, d in paint.get("plates", {}).items()])
    rna_order = ["library", "reads", "reads_pseudoaligned", "barcodes", "cells_called", "cells_pass_qc",
                 "cells_assigned"]
    paint_order = ["plate", "images", "images_quarantined", "sites", "sites_pass_qc", "objects", "cells"]
    if not rna_counts.empty:
        rna_counts = rna_counts[[c for c in rna_order if c in rna_counts] +
                                [c for c in rna_counts if c not in rna_order]]
    if not paint_counts.empty:
        paint_counts = paint_counts[[c for c in paint_order if c in paint_counts] +
                                    [c for c in paint_counts if c not in paint_order]]
    ds_rna = dict(_dig(ds, "counts", "rna") or {})
    ds_paint = dict(_dig(ds, "counts", "paint") or {})
    if not ds_rna and not rna_counts.empty:
        ds_rna = {k: int(rna_counts[k].sum()) for k in ("reads", "barcodes", "cells_called", "cells_pass_qc")
                  if k in rna_counts}
    if not ds_paint and not paint_counts.empty:
        ds_paint = {k: int(paint_counts[k].sum()) for k in ("images", "sites", "sites_pass_qc", "objects",
                                                           "cells") if k in paint_counts}
    if "sites" in ds_paint and "sites_flagged" in ds_paint and "sites_pass_qc" not in ds_paint:
        ds_paint["sites_pass_qc"] = int(ds_paint["sites"]) - int(ds_paint["sites_flagged"])
    rna_funnel = _funnel(ds_rna, [("reads", "reads", "reads"),
                                  ("barcodes", "barcodes (>= 1 UMI)", "barcodes"),
                                  ("cells_called", "cells called", "cells"),
                                  ("cells_pass_qc", "cells passing QC", "cells"),
                                  ("cells_kept", "cells kept (QC + one perturbation)", "cells")])
    paint_funnel = _funnel(ds_paint, [("images", "images", "images"), ("sites", "sites", "sites"),
                                      ("sites_pass_qc", "sites passing image QC", "sites"),
                                      ("objects", "objects segmented", "cells"),
                                      ("cells_profiled", "cells profiled", "cells"),
                                      ("cells", "cells profiled", "cells"),
                                      ("wells_profiled", "wells profiled", "wells")])
    removed = ds_rna.get("cells_removed")
    removed_df = pd.DataFrame([{"reason": k, "cells": v} for k, v in removed.items()]) \
        if isinstance(removed, Mapping) and removed else pd.DataFrame()
    pair_counts = _dig(ds, "counts", "pair")

    warnings = [w if isinstance(w, str) else json.dumps(w) for w in (ds.get("warnings") or [])]
    warnings += derive_warnings(ds, metrics, paint_counts, paint.get("plates"))
    q = _first(ds, "quarantined", "quarantines")
    quarantines = pd.DataFrame([x if isinstance(x, Mapping) else {"item": x} for x in q]) if q else \
        pd.DataFrame()
    extra = [d["quarantined"] for d in paint.get("plates", {}).values()
             if isinstance(d.get("quarantined"), pd.DataFrame) and not d["quarantined"].empty]
    if extra:
        quarantines = pd.concat([quarantines, *extra], ignore_index=True)
        key = [c for c in ("plate", "path") if c in quarantines]
        if key:
            quarantines = quarantines.drop_duplicates(subset=key)
    return {"provenance": prov, "software": dict(software), "config": dict(cfg), "inputs": inputs,
            "inputs_summary": inputs_summary, "rna_counts": rna_counts, "paint_counts": paint_counts,
            "rna_funnel": rna_funnel, "paint_funnel": paint_funnel, "rna_removed": removed_df,
            "pair_counts": flatten(pair_counts) if pair_counts else [],
            "warnings": warnings, "quarantines": quarantines, "notes": []}


# --------------------------------------------------------------------------------------------- RNA arm


def _qc_metric_bounds(obs: pd.DataFrame, qc_cfg: Mapping[str, Any], uns: Mapping[str, Any]
                      ) -> dict[str, dict[str, Any]]:
    specs = [
        ("total_counts", float(qc_cfg.get("nmads_counts", 5)), True, "both"),
        ("n_genes_by_counts", float(qc_cfg.get("nmads_genes", 5)), True, "both"),
        ("pct_counts_mt", float(qc_cfg.get("nmads_mt", 3)), False, "upper"),
        ("pct_counts_ribo", None, False, "none"),
    ]
    stored = uns.get("qc_thresholds") if isinstance(uns.get("qc_thresholds"), Mapping) else {}
    out: dict[str, dict[str, Any]] = {}
    for metric, nmads, log, side in specs:
        if metric not in obs:
            continue
        vals = obs[metric].to_numpy(float)
        lo = hi = float("nan")
        if nmads is not None:
            lo, hi = mad_bounds(vals, nmads, log)
        if side == "upper":
            lo = float("nan")
            if metric == "pct_counts_mt" and qc_cfg.get("max_pct_mt") is not None:
                hi = min(hi, float(qc_cfg["max_pct_mt"])) if np.isfinite(hi) else float(qc_cfg["max_pct_mt"])
        st = stored.get(metric) if isinstance(stored, Mapping) else None
        if isinstance(st, Mapping):
            lo = float(st.get("lower", lo) if st.get("lower") is not None else lo)
            hi = float(st.get("upper", hi) if st.get("upper") is not None else hi)
        fail_col = next((c for c in (f"qc_fail_{metric}", f"qc_fail_{_QC_FLAG.get(metric, metric)}")
                         if c in obs), None)
        out[metric] = {"values": vals, "lower": lo, "upper": hi, "log": log, "nmads": nmads,
                       "n_fail": int(obs[fail_col].sum()) if fail_col else None}
    return out


def collect_library(results_dir: Path, lib: str, config: Mapping[str, Any]) -> dict[str, Any]:
    base = results_dir / "rna" / lib
    notes: list[str] = []
    d: dict[str, Any] = {"notes": notes, "counts": {}}
    run_info = base / "kb_gex" / "run_info.json"
    if run_info.exists():
        try:
            ri = json.loads(run_info.read_text())
            d["counts"]["reads"] = int(ri.get("n_processed", 0))
            if "n_pseudoaligned" in ri:
                d["counts"]["reads_pseudoaligned"] = int(ri["n_pseudoaligned"])
        except (json.JSONDecodeError, ValueError):
            notes.append(f"not available: {run_info.relative_to(results_dir.parent)} unreadable")

    cells_path = base / "cells.h5ad"
    obs = _read_h5_elem(cells_path, "obs") if cells_path.exists() else None
    uns = (_read_h5_elem(cells_path, "uns") or {}) if cells_path.exists() else {}
    if obs is None:
        notes.append(missing_note(results_dir, cells_path))

    ranks_path, raw_path = base / "barcode_ranks.parquet", base / "raw.h5ad"
    umis: np.ndarray | None = None
    called = np.zeros(0, bool)
    if ranks_path.exists():
        rk = pd.read_parquet(ranks_path)
        tcol = _find_col(rk, "total", "total_counts", "umis", "n_umi")
        if tcol is not None:
            umis = rk[tcol].to_numpy(float)
            if "is_cell" in rk:
                called = as_bool(rk["is_cell"]).to_numpy()
            elif obs is not None and "obs_name" in rk:
                called = rk["obs_name"].astype(str).isin(obs.index.astype(str)).to_numpy()
            else:
                called = np.zeros(len(umis), bool)
    if umis is None and raw_path.exists():
        names, umis = _h5ad_row_sums(raw_path)
        called = np.isin(names, obs.index.to_numpy()) if obs is not None else np.zeros(len(names), bool)
    if umis is not None:
        keep = umis > 0
        umis, called = umis[keep], called[keep]
        order = np.argsort(-umis, kind="stable")
        umis_sorted, called_sorted = umis[order], called[order]
        idx = _downsample_curve(len(umis_sorted))
        cc = uns.get("cell_calling", {}) if isinstance(uns.get("cell_calling"), Mapping) else {}
        thresholds = {}
        for k, v in cc.items():
            a = np.asarray(v)
            if a.dtype.kind in "biuf" and a.size == 1 and any(s in k.lower() for s in _CALL_KEYS):
                thresholds["min_umis (tested)" if k == "threshold" else k] = float(a.ravel()[0])
        if not any("min_umis" in k for k in thresholds) and \
                _dig(config, "rna", "cell_calling", "min_umis") is not None:
            thresholds["min_umis (config)"] = float(config["rna"]["cell_calling"]["min_umis"])
        d["knee"] = {"rank": idx + 1, "umis": umis_sorted[idx], "called": called_sorted[idx],
                     "n_barcodes": int(len(umis)), "n_called": int(called.sum()),
                     "thresholds": thresholds,
                     "fdr": cc.get("fdr", _dig(config, "rna", "cell_calling", "fdr"))}
        d["counts"]["barcodes"] = int(len(umis))
    else:
        rel = ranks_path.relative_to(results_dir.parent)
        notes.append(f"{missing_note(results_dir, raw_path)} (and {rel})")

    if obs is None:
        return d
    d["counts"]["cells_called"] = int(len(obs))
    pass_qc = as_bool(obs["pass_qc"]) if "pass_qc" in obs else pd.Series(True, index=obs.index)
    d["counts"]["cells_pass_qc"] = int(pass_qc.sum())
    if "perturbation" in obs:
        assigned = pass_qc & ~obs["perturbation"].astype(str).isin(["multiple", "unassigned", "nan", ""])
        d["counts"]["cells_assigned"] = int(assigned.sum())

    d["qc"] = _qc_metric_bounds(obs, _dig(config, "rna", "qc") or {}, uns)
    if not d["qc"]:
        notes.append("not available: QC columns (total_counts, ...) missing from cells.h5ad obs")

    if "doublet_score" in obs:
        scores = obs["doublet_score"].to_numpy(float)
        pred = as_bool(obs["predicted_doublet"]).to_numpy() if "predicted_doublet" in obs else None
        thr = _first(uns, "doublets.threshold", "scrublet.threshold", "doublet_threshold")
        if thr is not None and not np.isfinite(float(thr)):
            thr = None
        if thr is None and pred is not None and pred.any():
            thr = float(scores[pred].min())
        d["doublets"] = {"scores": scores, "threshold": None if thr is None else float(thr),
                         "n_predicted": int(pred.sum()) if pred is not None else None,
                         "expected_rate": _dig(config, "rna", "doublets", "expected_rate")}
    else:
        notes.append("not available: doublet_score missing from cells.h5ad obs")

    gc = _read_h5_elem(cells_path, "obsm/guide_counts")
    if gc is not None:
        if isinstance(gc, pd.DataFrame):
            mat = gc.to_numpy(float)
        elif hasattr(gc, "toarray"):
            mat = gc
        else:
            mat = np.asarray(gc, float)
        if hasattr(mat, "data"):  # sparse: nonzero entries only
            vals = np.asarray(mat.data, float) if hasattr(mat, "tocsr") else mat[mat > 0]
            top = np.asarray(mat.max(axis=1).todense()).ravel() if hasattr(mat, "tocsr") else mat.max(axis=1)
        else:
            vals = mat[mat > 0]
            top = mat.max(axis=1)
        thr = _to_float_array(uns.get("guide_thresholds"))
        ga = uns.get("guide_assignment") if isinstance(uns.get("guide_assignment"), Mapping) else {}
        d["guides"] = {"umis": np.asarray(vals, float), "top_umis": np.asarray(top, float).ravel(),
                       "thresholds": thr, "method": ga.get("method", _dig(config, "rna", "guides", "method")),
                       "min_umis": ga.get("min_umis", _dig(config, "rna", "guides", "min_umis"))}
    else:
        notes.append("not available: obsm['guide_counts'] missing from cells.h5ad")

    if "n_guides" in obs:
        moi = obs.loc[pass_qc, "n_guides"].astype(int).value_counts().sort_index()
        d["moi"] = pd.DataFrame({"n_guides": moi.index.astype(int), "n_cells": moi.to_numpy(int)})
    if "perturbation" in obs:
        per = obs.loc[pass_qc, "perturbation"].astype(str).value_counts()
        d["cells_per_perturbation"] = pd.DataFrame({"perturbation": per.index, "n_cells": per.to_numpy(int)})
    return d


def collect_knockdown(results_dir: Path, config: Mapping[str, Any], notes: list[str]) -> pd.DataFrame | None:
    path = results_dir / "rna" / "knockdown.tsv"
    if not path.exists():
        notes.append(missing_note(results_dir, path))
        return None
    kd = pd.read_csv(path, sep="\t")
    alpha = float(_dig(config, "rna", "knockdown", "alpha") or 0.05)
    if "padj" in kd:
        kd["significant"] = (kd["padj"] < alpha) & (kd.get("log2fc", pd.Series(-1.0, index=kd.index)) < 0)
    if "remaining_fraction" not in kd and "log2fc" in kd:
        kd["remaining_fraction"] = np.exp2(kd["log2fc"])
    return kd.sort_values("remaining_fraction" if "remaining_fraction" in kd else kd.columns[0],
                          kind="stable").reset_index(drop=True)


def collect_rna(results_dir: Path, config: Mapping[str, Any]) -> dict[str, Any]:
    notes: list[str] = []
    libs = _discover(results_dir, "rna", ("cells.h5ad", "raw.h5ad"))
    expected = _sheet_ids(config, results_dir.parent, "rna_libraries", "library_id")
    for lib in expected:
        if lib not in libs:
            notes.append(missing_note(results_dir, results_dir / "rna" / lib / "cells.h5ad"))
    if not libs and not expected:
        notes.append(missing_note(results_dir, results_dir / "rna" / "{library}" / "cells.h5ad"))
    libraries = {lib: collect_library(results_dir, lib, config) for lib in libs}
    kd = collect_knockdown(results_dir, config, notes)
    return {"libraries": libraries, "knockdown": kd, "notes": notes,
            "alpha": float(_dig(config, "rna", "knockdown", "alpha") or 0.05)}


# --------------------------------------------------------------------------------------------- paint arm


def _well_col(df: pd.DataFrame) -> str | None:
    return _find_col(df, "Metadata_Well", "Metadata_well", "well")


def _pick_feature(cols: Iterable[str], wanted: str | None) -> str | None:
    cols = list(cols)
    if wanted and wanted in cols:
        return wanted
    for pat in (DEFAULT_HEATMAP_FEATURE, "Cells_Intensity_MeanIntensity_", "_Intensity_MeanIntensity_"):
        hits = [c for c in cols if pat in c]
        if hits:
            return sorted(hits)[0]
    return None


def _overlay(results_dir: Path, plate: str, index: pd.DataFrame | None, config: Mapping[str, Any]
             ) -> tuple[dict[str, Any] | None, str | None]:
    import tifffile

    masks_dir = results_dir / "paint" / plate / "masks"
    if not masks_dir.is_dir():
        return None, missing_note(results_dir, masks_dir)
    nuc_files = sorted(f for f in masks_dir.glob("*/*_nuclei.tif") if not f.parent.name.startswith("."))
    if not nuc_files:
        return None, missing_note(results_dir, masks_dir / "{chunk}" / "{well}_s{site}_nuclei.tif")
    if index is None:
        return None, missing_note(results_dir, results_dir / "paint" / plate / "image_index.parquet")
    ok = index
    if "status" in index:
        ok = index[index["status"].astype(str) == "ok"]
    seg = _dig(config, "paint", "segmentation") or {}
    nuc_ch = str(_dig(seg, "nuclei", "channel") or "DNA")
    cell_ch = str(_dig(seg, "cells", "channel") or "AGP")
    # the site with the most nuclei among the first few with masks: a representative, busy field
    best: tuple[int, Path] | None = None
    for f in nuc_files[:8]:
        try:
            n = len(np.unique(tifffile.imread(f))) - 1
        except (OSError, ValueError):
            continue
        if best is None or n > best[0]:
            best = (n, f)
    if best is None:
        return None, f"not available: no readable mask under {masks_dir.relative_to(results_dir.parent)}"
    nuc_path = best[1]
    m = re.match(r"^(.+)_s(\d+)_nuclei\.tif$", nuc_path.name)
    if not m:
        return None, f"not available: unexpected mask name {nuc_path.name}"
    well, site = m.group(1), int(m.group(2))
    cell_path = nuc_path.with_name(f"{well}_s{site}_cells.tif")
    nuclei = tifffile.imread(nuc_path)
    cells = tifffile.imread(cell_path) if cell_path.exists() else None
    chans: dict[str, np.ndarray] = {}
    for ch in (nuc_ch, cell_ch):
        sel = ok[(ok["well"].astype(str) == well) & (ok["site"].astype(int) == site) &
                 (ok["channel"].astype(str) == ch)]
        if sel.empty:
            continue
        p = Path(str(sel["path"].iloc[0]))
        p = p if p.is_absolute() else results_dir.parent / p
        if p.exists():
            chans[ch] = tifffile.imread(p).astype(np.float32)
    if not chans:
        return None, f"not available: raw images of {plate} {well} s{site} missing"
    return {"well": well, "site": site, "nuclei": nuclei, "cells": cells, "images": chans,
            "nuclei_channel": nuc_ch, "cells_channel": cell_ch,
            "n_nuclei": int(len(np.unique(nuclei)) - 1),
            "n_cells": int(len(np.unique(cells)) - 1) if cells is not None else None}, None


def collect_plate(results_dir: Path, plate: str, config: Mapping[str, Any]) -> dict[str, Any]:
    base = results_dir / "paint" / plate
    notes: list[str] = []
    d: dict[str, Any] = {"notes": notes, "counts": {}, "heatmaps": {}, "edge": {}}
    report_cfg = config.get("report", {}) if isinstance(config.get("report"), Mapping) else {}

    index = None
    idx_path = base / "image_index.parquet"
    if idx_path.exists():
        index = pd.read_parquet(idx_path)
        d["counts"]["images"] = int(len(index))
        status_ok = index["status"].astype(str) == "ok" if "status" in index else pd.Series(True, index.index)
        d["counts"]["images_quarantined"] = int((~status_ok).sum())
        site_key = ["well", "site"]
        d["counts"]["sites"] = int(index[site_key].drop_duplicates().shape[0])
        flag = as_bool(index["qc_flag"]) if "qc_flag" in index else pd.Series(False, index.index)
        bad = index[flag | ~status_ok]
        bad_sites = bad[site_key].drop_duplicates()
        d["counts"]["sites_pass_qc"] = d["counts"]["sites"] - int(len(bad_sites))
        if not bad.empty:
            def _reasons(g: pd.DataFrame) -> str:
                rs = []
                for _, r in g.iterrows():
                    why = r.get("qc_reason") if bool(r.get("qc_flag", False)) else None
                    if str(r.get("status", "ok")) != "ok":
                        why = f"quarantined: {r.get('reason', '')}"
                    if why is not None and str(why) not in ("", "nan", "None"):
                        rs.append(f"{r['channel']}: {why}")
                return "; ".join(rs)
            flagged = (bad.groupby(site_key, sort=True)[bad.columns.tolist()]
                       .apply(_reasons).rename("reasons").reset_index())
            flagged.insert(0, "plate", plate)
            d["flagged_sites"] = flagged
        else:
            d["flagged_sites"] = pd.DataFrame(columns=["plate", "well", "site", "reasons"])
        q = index[~status_ok]
        if not q.empty:
            d["quarantined"] = pd.DataFrame({"plate": plate, "path": q["path"].astype(str),
                                             "reason": q.get("reason", pd.Series("", q.index)).astype(str)})
        per_well = index[status_ok].groupby("well")
        if "focus_plls" in index:
            s = per_well["focus_plls"].mean()
            d["heatmaps"]["focus (PLLS, mean over sites and channels)"] = plate_grid(s.index, s.to_numpy())
        if "saturation_pct" in index:
            s = per_well["saturation_pct"].max()
            d["heatmaps"]["saturation % (max over sites and channels)"] = plate_grid(s.index, s.to_numpy())
    else:
        notes.append(missing_note(results_dir, idx_path))

    wells_path = base / "wells.parquet"
    feature = None
    if wells_path.exists():
        wells = pd.read_parquet(wells_path)
        wc = _well_col(wells)
        ncol = _find_col(wells, "n_cells", "Metadata_n_cells", "Metadata_Count_Cells")
        if wc and ncol:
            g = wells.groupby(wc)[ncol].sum()
            d["heatmaps"]["cells per well"] = plate_grid(g.index, g.to_numpy())
        feature = _pick_feature([c for c in wells if not c.startswith("Metadata_")],
                                report_cfg.get("heatmap_feature", DEFAULT_HEATMAP_FEATURE))
        if wc and feature:
            g = wells.groupby(wc)[feature].mean()
            d["heatmaps"][feature] = plate_grid(g.index, g.to_numpy())
        elif wc and feature is None:
            notes.append("not available: no intensity feature in "
                         f"{wells_path.relative_to(results_dir.parent)} (no cells measured?)")
        elif wc is None:
            notes.append(f"not available: no well column in {wells_path.relative_to(results_dir.parent)}")
    else:
        notes.append(missing_note(results_dir, wells_path))
    d["feature"] = feature
    # reorder: cells per well, focus, saturation, feature
    order = ["cells per well"] + [k for k in d["heatmaps"] if k.startswith("focus")] + \
        [k for k in d["heatmaps"] if k.startswith("saturation")] + ([feature] if feature else [])
    d["heatmaps"] = {k: d["heatmaps"][k] for k in order if k in d["heatmaps"]}
    d["edge"] = {k: edge_summary(v) for k, v in d["heatmaps"].items()}

    illum_dir = base / "illum"
    chan_order = list((_dig(config, "paint", "channels") or {}).keys())
    illum_files = sorted(illum_dir.glob("*.npy"), key=lambda p: (chan_order.index(p.stem)
                         if p.stem in chan_order else len(chan_order), p.stem))
    if illum_files:
        illum = {}
        for f in illum_files:
            a = np.load(f)
            step = max(1, int(np.ceil(max(a.shape) / MAX_ILLUM_SIDE)))
            illum[f.stem] = {"image": np.asarray(a[::step, ::step], float), "min": float(a.min()),
                             "max": float(a.max()), "mean": float(a.mean()), "shape": tuple(a.shape)}
        d["illum"] = illum
    else:
        notes.append(missing_note(results_dir, illum_dir / "{channel}.npy"))

    objects = sorted(f for f in (base / "masks").glob("*/objects.parquet")
                     if not f.parent.name.startswith("."))
    if objects:
        d["counts"]["objects"] = int(sum(pd.read_parquet(p, columns=["object_id"]).shape[0] for p in objects))
    cells_path = base / "cells.parquet"
    if cells_path.exists():
        import pyarrow.parquet as pq

        d["counts"]["cells"] = int(pq.ParquetFile(cells_path).metadata.num_rows)

    overlay, note = _overlay(results_dir, plate, index, config)
    d["overlay"] = overlay
    if note:
        notes.append(note)
    return d


def collect_paint(results_dir: Path, config: Mapping[str, Any]) -> dict[str, Any]:
    notes: list[str] = []
    plates = _discover(results_dir, "paint", ("image_index.parquet", "wells.parquet", "illum"))
    expected = _sheet_ids(config, results_dir.parent, "plates", "plate_id")
    for p in expected:
        if p not in plates:
            notes.append(missing_note(results_dir, results_dir / "paint" / p / "image_index.parquet"))
    if not plates and not expected:
        notes.append(missing_note(results_dir, results_dir / "paint" / "{plate}" / "image_index.parquet"))
    return {"plates": {p: collect_plate(results_dir, p, config) for p in plates}, "notes": notes}


# --------------------------------------------------------------------------------------------- paired


_MAP_NAMES = ("mean_average_precision", "map", "mAP", "mean_ap", "replicate_map")
_P_NAMES = ("q_value", "corrected_p_value", "p_value_corrected", "fdr", "padj", "p_value", "pvalue")
_ACTIVE_NAMES = ("below_corrected_p", "active", "is_active", "retrieved", "hit", "below_p")
_EDIST_NAMES = ("edistance", "e_distance", "energy_distance")


def _arm_table(rows: Any) -> pd.DataFrame:
    if isinstance(rows, pd.DataFrame):
        return rows
    if isinstance(rows, Mapping):
        if "per_perturbation" in rows:
            return _arm_table(rows["per_perturbation"])
        if rows and all(isinstance(v, Mapping) for v in rows.values()):
            return pd.DataFrame([{"perturbation_id": k, **v} for k, v in rows.items()])
        return pd.DataFrame()
    if isinstance(rows, list):
        return pd.DataFrame([r for r in rows if isinstance(r, Mapping)])
    return pd.DataFrame()


def _standardise_arm(df: pd.DataFrame, arm: str, *, kind: str = "replicate", alpha: float = 0.05
                     ) -> pd.DataFrame:
    """A per-perturbation table of one arm -> ``{arm}_map``/``{arm}_q``/``{arm}_active`` (replicate) or
    ``{arm}_edistance``/``{arm}_edistance_q`` (effect)."""
    pid = _find_col(df, "perturbation_id", "perturbation", "Metadata_perturbation_id", "id")
    if pid is None or df.empty:
        return pd.DataFrame()
    out = pd.DataFrame({"perturbation_id": df[pid].astype(str).to_numpy()})
    if kind == "replicate":
        names = ((_MAP_NAMES, "map"), (_P_NAMES, "q"), (_ACTIVE_NAMES, "active"))
    else:
        names = ((_EDIST_NAMES, "edistance"), (_P_NAMES, "edistance_q"))
    for cands, suffix in names:
        c = _find_col(df, *cands)
        if c is not None:
            out[f"{arm}_{suffix}"] = df[c].to_numpy()
    if kind == "replicate" and f"{arm}_active" not in out and f"{arm}_q" in out:
        q = pd.to_numeric(out[f"{arm}_q"], errors="coerce")
        out[f"{arm}_active"] = (q < alpha).where(q.notna())
    if len(out.columns) == 1:
        return pd.DataFrame()
    return out.drop_duplicates("perturbation_id")


def _merge(a: pd.DataFrame | None, b: pd.DataFrame) -> pd.DataFrame:
    if b is None or b.empty:
        return a if a is not None else pd.DataFrame(columns=["perturbation_id"])
    if a is None or a.empty:
        return b
    b = b[["perturbation_id"] + [c for c in b.columns if c not in a.columns]]
    return a.merge(b, on="perturbation_id", how="outer")


def quality_tables(metrics: Mapping[str, Any], quality_tsv: pd.DataFrame | None = None) -> pd.DataFrame:
    """Per-perturbation quality columns from ``metrics.replicate/effect.{arm}.per_perturbation`` and
    ``results/quality/perturbations.tsv`` (columns ``{arm}_...`` or per-arm names)."""
    merged: pd.DataFrame | None = None
    for kind in ("replicate", "effect"):
        block = metrics.get(kind)
        if not isinstance(block, Mapping):
            continue
        for arm in ("rna", "paint"):
            if arm in block:
                alpha = float(_dig(block, arm, "alpha") or 0.05) if isinstance(block[arm], Mapping) else 0.05
                merged = _merge(merged, _standardise_arm(_arm_table(block[arm]), arm, kind=kind, alpha=alpha))
    if quality_tsv is not None and not quality_tsv.empty:
        pid = _find_col(quality_tsv, "perturbation_id", "perturbation", "id")
        if pid is not None:
            q = quality_tsv.rename(columns={pid: "perturbation_id"})
            q["perturbation_id"] = q["perturbation_id"].astype(str)
            for arm in ("rna", "paint"):
                cols = [c for c in q.columns if c.startswith(f"{arm}_")]
                if cols:
                    sub = q[["perturbation_id", *cols]].rename(columns={c: c[len(arm) + 1:] for c in cols})
                    merged = _merge(merged, _standardise_arm(sub, arm))
                    merged = _merge(merged, _standardise_arm(sub, arm, kind="effect"))
            merged = _merge(merged, q)
    return merged if merged is not None else pd.DataFrame(columns=["perturbation_id"])


def arm_summary(metrics: Mapping[str, Any]) -> pd.DataFrame:
    rows = []
    for kind in ("replicate", "effect"):
        block = metrics.get(kind)
        if not isinstance(block, Mapping):
            continue
        for arm, v in block.items():
            if isinstance(v, Mapping):
                rows.append({"test": "replicate mAP" if kind == "replicate" else "E-distance", "arm": arm,
                             **{k: v.get(k) for k in ("n_scored", "n_hits", "n_controls_called",
                                                     "fraction_active", "alpha")}})
    return pd.DataFrame(rows)


def batch_table(metrics: Mapping[str, Any]) -> pd.DataFrame:
    b = metrics.get("batch")
    if not isinstance(b, Mapping):
        return pd.DataFrame()
    rows = [{"what": k, **{kk: vv for kk, vv in v.items() if not isinstance(vv, Mapping | list)}}
            for k, v in b.items() if isinstance(v, Mapping)]
    return pd.DataFrame(rows)


def position_table(metrics: Mapping[str, Any]) -> pd.DataFrame:
    p = metrics.get("position")
    if not isinstance(p, Mapping):
        return pd.DataFrame()
    rows = []
    for stage in ("before", "after"):
        v = p.get(stage)
        if not isinstance(v, Mapping):
            continue
        plates = v.get("plates") if isinstance(v.get("plates"), Mapping) else {}
        if plates:
            for plate, pv in plates.items():
                rows.append({"profiles": stage, "plate": plate, "edge_detected": v.get("edge_detected"),
                             **(pv if isinstance(pv, Mapping) else {})})
        else:
            rows.append({"profiles": stage, "plate": "all", "edge_detected": v.get("edge_detected"),
                         "r2_edge": v.get("median_r2_edge")})
    return pd.DataFrame(rows)


def truth_table(tr: Any) -> pd.DataFrame | None:
    if tr is None:
        return None
    if isinstance(tr, list) and tr and all(isinstance(r, Mapping) for r in tr):
        return pd.DataFrame(tr)
    if isinstance(tr, Mapping) and all(isinstance(v, Mapping) for v in tr.values()):
        return pd.DataFrame([{"what": k, **{kk: vv for kk, vv in v.items() if not isinstance(vv, Mapping)}}
                             for k, v in tr.items()])
    return pd.DataFrame(flatten(tr), columns=["metric", "value"])


def _centered(x: np.ndarray, ctrl: np.ndarray, present: np.ndarray) -> np.ndarray:
    """Profiles centred on the controls' mean and scaled per feature (rows absent in the arm: zeros)."""
    x = np.asarray(x, float)
    x = x[:, ~np.all(np.isnan(x[present]), axis=0)] if present.any() else x[:, :0]
    x = np.where(np.isnan(x), np.nanmean(x[present], axis=0) if present.any() else 0.0, x)
    ref_rows = ctrl & present if (ctrl & present).any() else present
    ref = x[ref_rows].mean(axis=0) if ref_rows.any() else np.zeros(x.shape[1])
    sd = x[present].std(axis=0) if present.any() else np.zeros(x.shape[1])
    keep = sd > 1e-12
    out = (x[:, keep] - ref[keep]) / sd[keep]
    out[~present] = 0.0
    return out


def _cosine(x: np.ndarray) -> np.ndarray:
    n = np.linalg.norm(x, axis=1, keepdims=True)
    n[n == 0] = 1.0
    xn = x / n
    return xn @ xn.T


def _activity(xc: np.ndarray, ctrl: np.ndarray, present: np.ndarray) -> np.ndarray:
    """Distance of each profile from the control mean, in units of the controls' median distance."""
    norms = np.linalg.norm(xc, axis=1)
    ref = norms[ctrl & present] if (ctrl & present).any() else norms[present]
    spread = float(np.median(ref)) if ref.size else 0.0
    out = norms / spread if spread > 0 else norms
    return np.where(present, out, np.nan)


def collect_paired(results_dir: Path, config: Mapping[str, Any], ds: Mapping[str, Any],
                   metrics: Mapping[str, Any], knockdown: pd.DataFrame | None, truth_dir: Path | None,
                   notes: list[str]) -> dict[str, Any]:
    d: dict[str, Any] = {"notes": notes}
    qpath = results_dir / "quality" / "perturbations.tsv"
    qtsv = pd.read_csv(qpath, sep="\t") if qpath.exists() else None
    if qtsv is None:
        notes.append(missing_note(results_dir, qpath))
    table = quality_tables(metrics, qtsv)

    h5mu = results_dir / "paired" / "perturbations.h5mu"
    if h5mu.exists():
        import mudata

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            md = mudata.read_h5mu(h5mu)
        ids = md.obs_names.astype(str)
        base = pd.DataFrame({"perturbation_id": ids})
        for col in ("perturbation_type", "target_gene", "is_control", "control_type"):
            for frame in [md.obs] + [md.mod[m].obs for m in md.mod]:
                if col in frame and col not in base:
                    base[col] = frame[col].reindex(ids).to_numpy()
        if "is_control" not in base:
            base["is_control"] = base["perturbation_id"].str.upper().str.startswith(("NTC", "NON-TARGET"))
        ctrl = as_bool(base["is_control"]).to_numpy()
        centred: dict[str, np.ndarray] = {}
        presence: dict[str, np.ndarray] = {}
        for arm in ("rna", "paint"):
            if arm not in md.mod:
                notes.append(f"not available: modality '{arm}' missing from paired/perturbations.h5mu")
                continue
            ad = md.mod[arm][ids]
            x = ad.X.toarray() if hasattr(ad.X, "toarray") else np.asarray(ad.X)
            ncol = _find_col(ad.obs, "n_cells", "n_wells", "n_replicates")
            for c in ("n_cells", "n_wells"):
                if c in ad.obs:
                    base[f"{arm}_{c}"] = ad.obs[c].to_numpy()
            if ncol and ncol not in ("n_cells", "n_wells"):
                base[f"{arm}_{ncol}"] = ad.obs[ncol].to_numpy()
            own = _standardise_arm(ad.obs.reset_index(names="perturbation_id"), arm)
            if not own.empty and len(own.columns) > 1:
                base = base.merge(own, on="perturbation_id", how="left")
            x = np.asarray(x, float)
            present = ~np.all(np.isnan(x), axis=1) if x.shape[1] else np.zeros(len(ids), bool)
            if not present.any():
                notes.append(f"not available: modality '{arm}' of results/paired/perturbations.h5mu is empty")
                continue
            presence[arm] = present
            centred[arm] = _centered(x, ctrl, present)
            base[f"{arm}_activity"] = _activity(centred[arm], ctrl, present)
        if len(centred) == 2:
            keep = np.flatnonzero(~ctrl & presence["rna"] & presence["paint"])
            if keep.size > MAX_CONCORDANCE:
                score = np.nan_to_num(base["rna_activity"].to_numpy() + base["paint_activity"].to_numpy())
                keep = keep[np.argsort(-score[keep])[:MAX_CONCORDANCE]]
            sr, sp = _cosine(centred["rna"][keep]), _cosine(centred["paint"][keep])
            iu = np.triu_indices(len(keep), k=1)
            a, b = sr[iu], sp[iu]
            from scipy.stats import pearsonr, spearmanr

            ok = len(a) >= 3 and np.std(a) > 0 and np.std(b) > 0
            d["concordance"] = {
                "ids": ids[keep].tolist(), "sim_rna": sr, "sim_paint": sp, "pairs_rna": a, "pairs_paint": b,
                "spearman": float(spearmanr(a, b).statistic) if ok else float("nan"),
                "pearson": float(pearsonr(a, b).statistic) if ok else float("nan"),
                "n_perturbations": int(len(keep)),
            }
        # quality columns the pair stage copied into the global obs (``{arm}_...``), then the datasheet's
        glob = md.obs.copy()
        glob.index = glob.index.astype(str)
        from_obs = quality_tables({}, glob.reset_index(names="perturbation_id"))
        base = _merge(base, from_obs[["perturbation_id"] + [c for c in from_obs.columns
                                                           if c.startswith(("rna_", "paint_"))]])
        table = _merge(base, table) if not table.empty else base
    else:
        notes.append(missing_note(results_dir, h5mu))

    if knockdown is not None and "perturbation_id" in knockdown:
        kcols = [c for c in ("log2fc", "remaining_fraction", "padj", "significant") if c in knockdown]
        kd = knockdown[["perturbation_id", *kcols]].rename(columns={c: f"kd_{c}" for c in kcols})
        kd["perturbation_id"] = kd["perturbation_id"].astype(str)
        table = table.merge(kd, on="perturbation_id", how="left") if not table.empty else kd

    if truth_dir is not None:
        tp = Path(truth_dir) / "perturbations.tsv"
        if tp.exists():
            truth = pd.read_csv(tp, sep="\t")
            tcols = [c for c in ("effect_class", "rna_active", "paint_active", "knockdown_remaining")
                     if c in truth]
            truth = truth[["perturbation_id", *tcols]].rename(columns={c: f"truth_{c}" for c in tcols})
            truth["perturbation_id"] = truth["perturbation_id"].astype(str)
            table = table.merge(truth, on="perturbation_id", how="left") if not table.empty else truth
        else:
            notes.append(f"not available: {tp} missing")
    d["per_perturbation"] = table.reset_index(drop=True)

    conc = metrics.get("concordance")
    d["concordance_metrics"] = flatten(conc) if isinstance(conc, Mapping) else []
    d["arm_summary"] = arm_summary(metrics)
    d["batch"] = batch_table(metrics)
    if d["batch"].empty:
        notes.append("not available: metrics.batch missing from results/datasheet.json")
    d["position_metrics"] = position_table(metrics)
    d["position"] = collect_position(results_dir, config, notes)
    d["truth_recovery"] = truth_table(_first(ds, "truth_recovery", "metrics.truth_recovery"))
    return d


def _edge_r2(df: pd.DataFrame, features: list[str]) -> pd.DataFrame:
    """Per plate and feature: R^2 of the edge/interior indicator (squared point-biserial correlation)."""
    wc = _well_col(df)
    pc = _find_col(df, "Metadata_Plate", "Metadata_plate", "plate")
    if wc is None or not features:
        return pd.DataFrame(columns=["plate", "feature", "r2"])
    rows = []
    for plate, g in (df.groupby(pc) if pc else [("all", df)]):
        edge = g[wc].astype(str).map(is_edge_well).to_numpy(float)
        if edge.min() == edge.max():
            continue
        x = g[features].to_numpy(float)
        e = (edge - edge.mean()) / edge.std()
        xm = np.nanmean(x, axis=0)
        xs = np.nanstd(x, axis=0)
        with np.errstate(invalid="ignore", divide="ignore"):
            r = np.nanmean(((x - xm) / xs) * e[:, None], axis=0)
        for f, rv in zip(features, r, strict=True):
            if np.isfinite(rv):
                rows.append({"plate": str(plate), "feature": f, "r2": float(rv ** 2)})
    return pd.DataFrame(rows, columns=["plate", "feature", "r2"])


def collect_position(results_dir: Path, config: Mapping[str, Any], notes: list[str]) -> dict[str, Any] | None:
    prof_path = results_dir / "paint" / "profiles.parquet"
    wells_paths = sorted((results_dir / "paint").glob("*/wells.parquet"))
    if not prof_path.exists():
        notes.append(missing_note(results_dir, prof_path))
        return None
    if not wells_paths:
        notes.append(missing_note(results_dir, results_dir / "paint" / "{plate}" / "wells.parquet"))
        return None
    after = pd.read_parquet(prof_path)
    before = pd.concat([pd.read_parquet(p).assign(Metadata_Plate=p.parent.name)
                        if _find_col(pd.read_parquet(p, columns=[]), "Metadata_Plate") is None
                        else pd.read_parquet(p) for p in wells_paths], ignore_index=True)
    feats = [c for c in after.columns if not c.startswith("Metadata_") and c in before.columns
             and pd.api.types.is_numeric_dtype(after[c])]
    if not feats:
        notes.append("not available: no feature shared by results/paint/{plate}/wells.parquet and "
                     "results/paint/profiles.parquet")
        return None
    rb, ra = _edge_r2(before, feats), _edge_r2(after, feats)
    if rb.empty or ra.empty:
        notes.append("not available: plate-position effect needs both edge and interior wells")
        return None
    return {"before": rb, "after": ra, "n_features": len(feats),
            "median_before": float(rb["r2"].median()), "median_after": float(ra["r2"].median()),
            "corrected": bool(_dig(config, "profiles", "position_correction"))}


# --------------------------------------------------------------------------------------------- entry


def collect_report_data(results_dir: Path, config: Mapping[str, Any], truth_dir: Path | None = None
                        ) -> dict[str, Any]:
    """Everything the report shows, as plain dicts/DataFrames/arrays (see the module docstring)."""
    results_dir = Path(results_dir)
    ds = read_datasheet(results_dir)
    if truth_dir is None and config.get("truth_dir"):
        t = Path(str(config["truth_dir"]))
        truth_dir = t if t.is_absolute() else results_dir.parent / t
    if truth_dir is not None and not Path(truth_dir).is_dir():
        truth_dir = None
    paired_notes: list[str] = []
    metrics = read_metrics(results_dir, ds, paired_notes)
    rna = collect_rna(results_dir, config)
    paint = collect_paint(results_dir, config)
    overview = collect_overview(results_dir, ds, metrics, rna, paint)
    paired = collect_paired(results_dir, config, ds, metrics, rna.get("knockdown"), truth_dir, paired_notes)
    return {"overview": overview, "rna": rna, "paint": paint, "paired": paired,
            "truth_dir": str(truth_dir) if truth_dir else None, "datasheet": ds, "metrics": metrics,
            "run_name": results_dir.resolve().parent.name}
