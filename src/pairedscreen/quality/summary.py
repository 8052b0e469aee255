"""Summaries of per-perturbation quality tables for ``metrics.json`` (and so the datasheet)."""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd


def summarize_hits(table: pd.DataFrame, *, alpha: float, q_col: str = "q_value",
                   keep: Sequence[str] = ("perturbation", "is_control", "mean_average_precision", "edistance",
                                          "p_value", "q_value")) -> dict:
    """Per-arm block for ``metrics.replicate`` / ``metrics.effect`` from a per-perturbation table
    (``replicate.phenotypic_activity`` or ``effect.edistance_table``)."""
    q = pd.to_numeric(table[q_col], errors="coerce")
    scored = q.notna()
    hit = q < alpha
    ctrl = table["is_control"].astype(bool) if "is_control" in table else pd.Series(False, index=table.index)
    n_trt = int((scored & ~ctrl).sum())
    return {"n_scored": int(scored.sum()), "n_hits": int(hit.sum()),
            "n_controls_called": int((hit & ctrl).sum()),
            "fraction_active": float((hit & ~ctrl).sum() / n_trt) if n_trt else None, "alpha": alpha,
            "per_perturbation": table[[c for c in keep if c in table.columns]].to_dict(orient="records")}
