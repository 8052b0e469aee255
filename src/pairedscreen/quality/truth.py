"""Truth recovery on simulated screens (only when config ``truth_dir`` is set).

- hits: a perturbation is called active in an arm when its q-value < ``alpha``; precision and recall
  against ``truth/perturbations.tsv`` ``rna_active`` / ``paint_active`` over every perturbation the arm
  scored (controls included: a control called active is a false positive);
- concordance: RNA-paint concordance (:func:`pairedscreen.quality.concordance.concordance`, the same
  statistic the datasheet reports for the whole screen) over the planted shared-program perturbations only
  (truth ``effect_class == "both"``: a knockdown with an RNA program and a morphology shift, programs shared
  by groups of perturbations); ``significant`` = Mantel p < ``alpha`` (Mantel is the primary statistic,
  CKA is reported beside it);
- edge: whether an edge effect was planted (``truth/paint_wells.tsv``: edge wells with a multiplier != 1)
  and whether ours was detected; plus agreement of our edge-well definition with ``is_edge``.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

from pairedscreen.columns import bool_column
from pairedscreen.plate import PLATE_SHAPE, edge_mask


def _bool(s: pd.Series) -> pd.Series:
    return bool_column(s)


def read_truth(truth_dir: str | os.PathLike) -> dict[str, pd.DataFrame]:
    """``{"perturbations": ..., "paint_wells": ...}`` (paint_wells absent when the file is)."""
    d = Path(truth_dir)
    out = {"perturbations": pd.read_csv(d / "perturbations.tsv", sep="\t")}
    if (d / "paint_wells.tsv").exists():
        out["paint_wells"] = pd.read_csv(d / "paint_wells.tsv", sep="\t")
    return out


def hit_recovery(calls: pd.DataFrame, truth: pd.DataFrame, truth_col: str, *, alpha: float,
                 q_col: str = "q_value", id_col: str = "perturbation") -> dict:
    """Precision/recall of hits (q < alpha) vs ``truth[truth_col]``; NaN q = not called.

    ``calls``: one row per scored perturbation (``id_col``, ``q_col``). Precision is None when nothing is
    called, recall None when the truth has no active perturbation among the scored ones.
    """
    t = truth.set_index(truth["perturbation_id"].astype(str))
    c = calls.set_index(calls[id_col].astype(str))
    ids = c.index.intersection(t.index)
    called = (pd.to_numeric(c.loc[ids, q_col], errors="coerce") < alpha).to_numpy()
    active = _bool(t.loc[ids, truth_col]).to_numpy()
    tp, fp, fn = int((called & active).sum()), int((called & ~active).sum()), int((~called & active).sum())
    is_ctrl = _bool(t.loc[ids, "is_control"]).to_numpy() if "is_control" in t else \
        (t.loc[ids, "effect_class"].astype(str) == "control").to_numpy() if "effect_class" in t else \
        np.zeros(len(ids), bool)
    return {"n_scored": int(len(ids)), "n_called": int(called.sum()), "n_true_active": int(active.sum()),
            "true_positives": tp, "false_positives": fp, "false_negatives": fn,
            "controls_called": int((called & is_ctrl).sum()),
            "precision": tp / (tp + fp) if tp + fp else None,
            "recall": tp / (tp + fn) if tp + fn else None,
            "alpha": alpha}


def edge_recovery(paint_wells: pd.DataFrame, detected: bool,
                  plate_shape: tuple[int, int] | None = None) -> dict:
    """Planted edge effect (any ``is_edge`` well with a multiplier != 1) vs ``detected``; plus the share of
    wells whose edge status by our plate geometry equals the truth's ``is_edge``."""
    pw = paint_wells.copy()
    is_edge = _bool(pw["is_edge"]).to_numpy()
    mult_col = next((c for c in pw.columns if "mult" in c.lower()), None)
    if mult_col is not None:
        mult = pd.to_numeric(pw[mult_col], errors="coerce").fillna(1.0).to_numpy()
        planted = bool((is_edge & (np.abs(mult - 1) > 1e-9)).any())
    else:
        planted = bool(is_edge.any())
    ours = np.zeros(len(pw), bool)
    for _, idx in pw.groupby("plate").groups.items():
        wells = pw.loc[idx, "well"].astype(str).tolist()
        ours[pw.index.get_indexer(idx)] = edge_mask(wells, plate_shape or PLATE_SHAPE)
    return {"planted": planted, "detected": bool(detected), "correct": planted == bool(detected),
            "edge_definition_agreement": float((ours == is_edge).mean()) if len(pw) else None}


SHARED_PROGRAM_CLASS = "both"


def concordance_recovery(truth_dir: str | os.PathLike, ids: list[str], rna: np.ndarray, paint: np.ndarray,
                         is_control: np.ndarray, *, alpha: float, n_permutations: int,
                         seed: int) -> dict:
    """Concordance over the planted shared-program perturbations of ``ids`` (rows of ``rna``/``paint``, in
    that order): ``{n_perturbations, n_programs, perturbations, mantel_r, mantel_p, cka, cka_p,
    significant, alpha}``; statistics are None when fewer than 4 such perturbations are in both arms."""
    from pairedscreen.quality.concordance import concordance

    t = read_truth(truth_dir)["perturbations"]
    t = t.set_index(t["perturbation_id"].astype(str)).reindex([str(i) for i in ids])
    shared = (t["effect_class"].astype(str) == SHARED_PROGRAM_CLASS).to_numpy()
    res = concordance(rna, paint, is_control, n_permutations=n_permutations, seed=seed, subset=shared,
                      labels=ids)
    programs = pd.to_numeric(t.loc[res["perturbations"], "program"], errors="coerce") if "program" in t \
        else pd.Series()
    p = res["mantel_p"]
    return {**res, "n_programs": int(programs.nunique()), "alpha": alpha,
            "significant": bool(p is not None and p < alpha)}


def truth_recovery(truth_dir: str | os.PathLike, arm_calls: dict[str, pd.DataFrame], *,
                   edge_detected: bool | None = None, alpha: float) -> dict:
    """Datasheet block: ``{arm: {precision, recall, ...}, "edge": {...}}``; ``arm_calls`` maps ``rna`` /
    ``paint`` to a calls table (perturbation, q_value), e.g. from ``replicate.phenotypic_activity``."""
    truth = read_truth(truth_dir)
    out: dict = {}
    for arm, calls in arm_calls.items():
        out[arm] = hit_recovery(calls, truth["perturbations"], f"{arm}_active", alpha=alpha)
    if edge_detected is not None and "paint_wells" in truth:
        out["edge"] = edge_recovery(truth["paint_wells"], edge_detected)
    return out
