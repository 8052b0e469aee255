"""Overview section: provenance, stage counts, warnings and quarantines, from ``results/datasheet.json``
(and the per-library / per-plate counts the arm sections read from their stored outputs)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import pandas as pd

from pairedscreen.report.inputs import Inputs, ReportInputError, dig, flatten

RNA_STAGES = [("reads", "reads", "reads"), ("barcodes", "barcodes (>= 1 UMI)", "barcodes"),
              ("cells_called", "cells called", "cells"), ("cells_pass_qc", "cells passing QC", "cells"),
              ("cells_kept", "cells kept (QC + one perturbation)", "cells")]
PAINT_STAGES = [("images", "images", "images"), ("sites", "sites", "sites"),
                ("sites_pass_qc", "sites passing image QC", "sites"),
                ("objects", "objects segmented", "cells"), ("cells_profiled", "cells profiled", "cells"),
                ("wells_profiled", "wells profiled", "wells")]
RNA_COLUMNS = ["library", "reads", "reads_pseudoaligned", "barcodes", "cells_called", "cells_pass_qc",
               "cells_assigned", "guide_assignment_rate", "guide_unassigned_many_share"]
PAINT_COLUMNS = ["plate", "images", "images_quarantined", "sites", "sites_pass_qc", "objects", "cells",
                 "wells_without_cells"]


def read_datasheet(inputs: Inputs) -> dict[str, Any]:
    p = inputs.path("datasheet")
    if not p.exists():
        raise ReportInputError(f"required report input {p} is missing: run the datasheet rule first")
    try:
        ds = json.loads(p.read_text())
    except json.JSONDecodeError as e:
        raise ReportInputError(f"required report input {p} is not valid JSON: {e}") from e
    inputs.read.append(p)
    return ds


def _inputs_table(raw: Any) -> pd.DataFrame:
    if isinstance(raw, list):
        return pd.DataFrame([x for x in raw if isinstance(x, Mapping)])
    return pd.DataFrame()


def funnel(counts: Mapping[str, Any], stages: list[tuple[str, str, str]]) -> pd.DataFrame:
    """Stage counts in order; ``% of previous stage`` only where the unit (reads, cells, sites...) stays."""
    rows: list[dict[str, Any]] = []
    prev: tuple[str, int] | None = None
    for key, label, unit in stages:
        v = counts.get(key)
        if v is None or isinstance(v, Mapping):
            continue
        v = int(v)
        pct = round(100 * v / prev[1], 1) if prev and prev[0] == unit and prev[1] else float("nan")
        rows.append({"stage": label, "count": v, "unit": unit, "% of previous stage": pct})
        prev = (unit, v)
    return pd.DataFrame(rows)


ARM_NAMES = {"rna": "RNA", "paint": "Cell Painting"}


def derive_warnings(ds: Mapping[str, Any], metrics: Mapping[str, Any], paint_counts: pd.DataFrame
                    ) -> list[str]:
    """Things a reader of the quality certificate must not miss, from the datasheet and the metrics."""
    out: list[str] = []
    for arm, entry in (ds.get("arms") or {}).items():
        if isinstance(entry, Mapping) and entry.get("status") == "missing":
            why = entry.get("reason", "no units in the sheets")
            out.append(f"{ARM_NAMES.get(arm, arm)} arm missing: {why}")
    for r in ds.get("quarantine") or []:
        if isinstance(r, Mapping) and r.get("what") in ("plate", "library"):
            out.append(f"{r['what']} {r['id']} quarantined ({ARM_NAMES.get(r['arm'], r['arm'])} arm): "
                       f"{r['reason']}; left out of the pair, see Quarantines")
    pc = dig(ds, "counts", "paint") or {}
    if pc.get("images_quarantined"):
        out.append(f"{pc['images_quarantined']} image(s) quarantined (unreadable or invalid); "
                   "see Quarantines")
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
    if dig(metrics, "position", "after", "edge_detected"):
        out.append("a plate-edge effect is still detected in the final (corrected) profiles")
    if not paint_counts.empty and "wells_without_cells" in paint_counts:
        for r in paint_counts.itertuples():
            if r.wells_without_cells:
                out.append(f"plate {r.plate}: {r.wells_without_cells} wells have no segmented cell")
    edge = dig(ds, "truth_recovery", "edge")
    if isinstance(edge, Mapping) and edge.get("correct") is False:
        out.append("truth recovery: the planted plate-edge effect was "
                   + ("missed" if edge.get("planted") else "reported but not planted"))
    return out


def _ordered(df: pd.DataFrame, order: list[str]) -> pd.DataFrame:
    return df[[c for c in order if c in df] + [c for c in df if c not in order]] if not df.empty else df


def collect_overview(inputs: Inputs, ds: Mapping[str, Any], metrics: Mapping[str, Any],
                     rna: Mapping[str, Any], paint: Mapping[str, Any]) -> dict[str, Any]:
    software = ds.get("software") if isinstance(ds.get("software"), Mapping) else {}
    cfg = ds.get("config") if isinstance(ds.get("config"), Mapping) else {}
    prov = {
        "pairedscreen version": software.get("pairedscreen"),
        "config digest (sha256)": ds.get("config_sha256"),
        "date": ds.get("generated_at"),
        "datasheet schema": ds.get("schema_version"),
        "python": software.get("python"),
        "snakemake": software.get("snakemake"),
        "truth_dir": cfg.get("truth_dir") or None,
        "seed (quality)": dig(cfg, "quality", "seed"),
    }
    inputs_tab = _inputs_table(ds.get("inputs"))
    inputs_summary = pd.DataFrame()
    if not inputs_tab.empty and "role" in inputs_tab:
        agg: dict[str, tuple[str, str]] = {"files": ("role", "size")}
        if "bytes" in inputs_tab:
            agg["bytes"] = ("bytes", "sum")
        inputs_summary = inputs_tab.groupby("role", sort=False).agg(**agg).reset_index()

    # per library / plate counts from their stored outputs; the datasheet's totals are the headline funnel
    rna_counts = _ordered(pd.DataFrame([{"library": lib, **d.get("counts", {})}
                                        for lib, d in rna.get("libraries", {}).items()]), RNA_COLUMNS)
    paint_counts = _ordered(pd.DataFrame([{"plate": plate, **d.get("counts", {})}
                                          for plate, d in paint.get("plates", {}).items()]), PAINT_COLUMNS)
    ds_rna = dict(dig(ds, "counts", "rna") or {})
    ds_paint = dict(dig(ds, "counts", "paint") or {})
    if "sites" in ds_paint and "sites_flagged" in ds_paint:
        ds_paint["sites_pass_qc"] = int(ds_paint["sites"]) - int(ds_paint["sites_flagged"])
    removed = ds_rna.get("cells_removed")
    removed_df = pd.DataFrame([{"reason": k, "cells": v} for k, v in removed.items()]) \
        if isinstance(removed, Mapping) and removed else pd.DataFrame()
    pair_counts = dig(ds, "counts", "pair")

    warnings = [w if isinstance(w, str) else json.dumps(w) for w in (ds.get("warnings") or [])]
    warnings += derive_warnings(ds, metrics, paint_counts)
    per_plate = [d["quarantined"] for d in paint.get("plates", {}).values()
                 if isinstance(d.get("quarantined"), pd.DataFrame) and not d["quarantined"].empty]
    # the datasheet's quarantine records (plates, libraries, perturbations), then the quarantined images
    records = [pd.DataFrame([r for r in (ds.get("quarantine") or []) if isinstance(r, Mapping)])]
    parts = [p for p in records + per_plate if not p.empty]
    quarantines = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()
    licences = _inputs_table(ds.get("licences"))   # the datasheet's licence ledger, as recorded
    return {"provenance": prov, "software": dict(software), "config": dict(cfg), "inputs": inputs_tab,
            "licences": licences,
            "inputs_summary": inputs_summary, "rna_counts": rna_counts, "paint_counts": paint_counts,
            "rna_funnel": funnel(ds_rna, RNA_STAGES), "paint_funnel": funnel(ds_paint, PAINT_STAGES),
            "rna_removed": removed_df, "pair_counts": flatten(pair_counts) if pair_counts else [],
            "warnings": warnings, "quarantines": quarantines, "notes": []}
