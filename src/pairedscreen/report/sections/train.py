"""Report section "Training export and held-out evals": drawn from the stored ``results/quality/evals.json``
(written by the ``train_evals`` rule; nothing is recomputed here)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import pandas as pd

from pairedscreen.report.inputs import Inputs

DIRECTIONS = {"rna_to_paint": "RNA -> morphology", "paint_to_rna": "morphology -> RNA"}


def _ci(v: Any) -> str:
    return f"[{v[0]:.3f}, {v[1]:.3f}]" if isinstance(v, list) and len(v) == 2 and None not in v else ""


def _row(direction: str, subset: str, s: Mapping[str, Any]) -> dict[str, Any]:
    c, d = s.get("correlation") or {}, s.get("discrimination") or {}
    return {"direction": DIRECTIONS.get(direction, direction), "test perturbations": subset, "n": s.get("n"),
            "r ridge": c.get("model"), "r mean-of-train": c.get("baseline"),
            "r difference": c.get("difference"), "difference 95% CI": _ci(c.get("difference_ci")),
            "beats baseline (r)": s.get("beats_baseline"),
            "r ceiling (split-half)": c.get("ceiling", None) if c.get("ceiling") is not None
            else c.get("ceiling_reason", ""),
            "r normalised": c.get("normalised") if c.get("normalised") is not None
            else c.get("normalised_reason", ""),
            "r normalised 95% CI": _ci(c.get("normalised_ci")),
            "discrimination ridge": d.get("model"), "discrimination mean-of-train": d.get("baseline"),
            "discrimination ceiling": d.get("ceiling"), "discrimination normalised": d.get("normalised"),
            "beats baseline (discrimination)": d.get("beats_baseline")}


def _leakage(ev: Mapping[str, Any], notes: list[str]) -> pd.DataFrame | None:
    lk = ev.get("leakage") or {}
    if lk.get("status") != "ok":
        notes.append(f"leakage audit not run: {lk.get('reason', 'no result')}")
        return None
    if lk.get("warning"):
        notes.insert(0, f"LEAKAGE WARNING: {lk['warning']}")
    return pd.DataFrame([{"held-out answer": t, "n": v.get("n"), "cross-validated R2": v.get("r2"),
                          "null 95%": v.get("null_q95"), "p": v.get("p_value"),
                          "most predictive field": v.get("top_field"),
                          "flagged": v.get("flagged") if v.get("flagged") is not None else v.get("note", "")}
                         for t, v in (lk.get("targets") or {}).items()])


def _learning(ev: Mapping[str, Any]) -> pd.DataFrame | None:
    lc = ev.get("learning_curve") or {}
    rows = []
    for d in DIRECTIONS:
        for axis in ("perturbations", "cells"):
            cur = (lc.get(d) or {}).get(axis)
            if not cur:
                continue
            t = cur["trend"]["correlation"]
            rows.append({"direction": DIRECTIONS[d], "more of": axis,
                         **{f"r at {p['fraction']:.0%}": p["correlation"] for p in cur["points"]},
                         "gain of the next doubling (r)": t.get("next_doubling_gain")
                         if t.get("next_doubling_gain") is not None else cur.get("note", "")})
    return pd.DataFrame(rows) if rows else None


def collect_train(inputs: Inputs) -> dict[str, Any]:
    """The section's data: cross-modal rows (overall + per planted class), the splits, the cell-eval floor."""
    notes: list[str] = []
    ev = inputs.json("quality_evals", notes)
    if ev is None:
        return {"notes": notes, "cross_modal": None, "splits": [], "celleval": None}
    leak = _leakage(ev, notes)
    rows = []
    for key in DIRECTIONS:
        res = ev.get(key)
        if not isinstance(res, Mapping):
            continue
        rows.append(_row(key, "all", res.get("overall") or {}))
        for cls, s in (res.get("by_class") or {}).items():
            rows.append(_row(key, f"planted class: {cls}", s))
    if ev.get("note"):
        notes.append(str(ev["note"]))
    sp = ev.get("splits") or {}
    splits = [("seed", sp.get("seed")), ("val / test fraction", f"{sp.get('val_fraction')} / "
                                                              f"{sp.get('test_fraction')}")]
    for s, ids in (sp.get("perturbations") or {}).items():
        splits.append((f"{s} perturbations ({len(ids)})", ", ".join(ids)))
    bh = sp.get("batch_holdout") or {}
    splits.append(("held-out batches", ", ".join(bh.get("held_out_batches") or []) or "none"))
    ce = ev.get("celleval") or {}
    celleval = None
    if ce.get("status") == "ok":
        ceiling = (ce.get("ceiling") or {}).get("metrics") or {}
        celleval = pd.DataFrame([
            {"predictor": name, "metric": metric, "mean": stats.get("mean"), "n": stats.get("count"),
             "cell-eval ceiling": ceiling.get(metric)}
            for name, metrics in (ce.get("predictors") or {}).items() for metric, stats in metrics.items()])
        if ce.get("status") == "ok" and "ceiling" not in ce:
            notes.append("cell-eval's ceiling not in celleval.json (made by an older pairedscreen): rerun "
                         "train_celleval")
    else:
        notes.append(f"cell-eval baselines not run: {ce.get('reason', 'no result')}")
    n_test = (sp.get("n") or {}).get("test")
    if n_test is not None and n_test < 8:
        notes.append(f"only {n_test} test perturbations: the intervals are wide and per-class figures have "
                     "little or no power (beats_baseline needs n >= 5 and an interval above 0)")
    from pairedscreen.report.plots_paired import learning_curve_plot

    return {"notes": notes, "cross_modal": pd.DataFrame(rows) if rows else None, "splits": splits,
            "celleval": celleval, "leakage": leak, "learning": _learning(ev),
            "learning_plot": learning_curve_plot(ev.get("learning_curve") or {})}


def train_context(data: Mapping[str, Any] | None, table: Callable[..., Any],
                  kv_table: Callable[..., Any]) -> dict[str, Any]:
    """Template variables of the section (``table``/``kv_table``: the renderer's table builders)."""
    data = data or {"notes": ["not available: evals not collected"], "cross_modal": None, "splits": [],
                    "celleval": None}
    return {"train_notes": list(data["notes"]),
            "train_cross_modal": table(data["cross_modal"], "train-cross-modal",
                                       "Cross-modal prediction on the test perturbations (ridge vs "
                                       "mean-of-train)", filterable=False),
            "train_splits": kv_table(data["splits"], "train-splits") if data["splits"] else None,
            "train_celleval": table(data["celleval"], "train-celleval",
                                    "cell-eval on the test perturbations: the RNA floor", filterable=False),
            "train_learning": table(data.get("learning"), "train-learning",
                                    "Learning curves: held-out r with more train perturbations / cells",
                                    filterable=False),
            "train_learning_plot": data.get("learning_plot"),
            "train_leakage": table(data.get("leakage"), "train-leakage",
                                   "Leakage audit: released per-perturbation metadata vs held-out answers",
                                   filterable=False)}
