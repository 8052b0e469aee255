"""Instance-segmentation accuracy against ground-truth label images.

Definitions follow the 2018 Data Science Bowl / Cellpose / StarDist convention: a predicted object is a
true positive when its IoU with a true object is >= the threshold under a one-to-one matching, and

    AP(t) = TP / (TP + FP + FN)

(the "average precision" of Cellpose's ``metrics.average_precision``). The one-to-one matching maximises
the number of matches (Hungarian assignment on IoU, restricted to pairs with IoU >= t); for t >= 0.5 this
equals the greedy matching because each object can overlap at most one partner by more than half.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.optimize import linear_sum_assignment
from scipy.sparse import coo_matrix


@dataclass(frozen=True)
class MatchStats:
    iou_threshold: float
    n_true: int
    n_pred: int
    tp: int
    fp: int
    fn: int
    ap: float
    precision: float
    recall: float
    f1: float
    mean_matched_iou: float


def _relabel(labels: np.ndarray) -> tuple[np.ndarray, int]:
    """Map label ids to 0..n (0 stays background), keeping order; returns (int64 image, n)."""
    labels = np.asarray(labels)
    if labels.ndim != 2:
        raise ValueError(f"label image must be 2-D, got shape {labels.shape}")
    ids, inv = np.unique(labels, return_inverse=True)
    inv = inv.reshape(labels.shape).astype(np.int64)
    if ids.size and ids[0] == 0:
        return inv, int(ids.size - 1)
    return inv + 1, int(ids.size)


def iou_matrix(true: np.ndarray, pred: np.ndarray) -> np.ndarray:
    """IoU between every true object (rows) and predicted object (columns), background excluded."""
    t, nt = _relabel(true)
    p, npred = _relabel(pred)
    if t.shape != p.shape:
        raise ValueError(f"true and predicted label images differ in shape: {t.shape} vs {p.shape}")
    overlap = coo_matrix(
        (np.ones(t.size, np.int64), (t.ravel(), p.ravel())), shape=(nt + 1, npred + 1)
    ).toarray()
    area_t = overlap.sum(axis=1, keepdims=True)
    area_p = overlap.sum(axis=0, keepdims=True)
    union = area_t + area_p - overlap
    with np.errstate(divide="ignore", invalid="ignore"):
        iou = np.where(union > 0, overlap / union, 0.0)
    return iou[1:, 1:]


def match_stats(true: np.ndarray, pred: np.ndarray, iou: float = 0.5) -> MatchStats:
    """Match objects one-to-one at an IoU threshold and count TP / FP / FN."""
    if not 0.0 < iou <= 1.0:
        raise ValueError(f"iou threshold must be in (0, 1], got {iou}")
    m = iou_matrix(true, pred)
    n_true, n_pred = m.shape
    tp = 0
    matched_ious: list[float] = []
    if n_true and n_pred:
        eligible = m >= iou
        if eligible.any():
            # weight = big + IoU: the number of matches dominates, IoU breaks ties
            big = float(min(n_true, n_pred) + 1)
            rows, cols = linear_sum_assignment(-np.where(eligible, m + big, 0.0))
            good = eligible[rows, cols]
            tp = int(good.sum())
            matched_ious = m[rows[good], cols[good]].tolist()
    fp = n_pred - tp
    fn = n_true - tp
    denom = tp + fp + fn
    ap = tp / denom if denom else 1.0
    precision = tp / n_pred if n_pred else float(n_true == 0)
    recall = tp / n_true if n_true else 1.0
    f1 = 2 * tp / (2 * tp + fp + fn) if (2 * tp + fp + fn) else 1.0
    return MatchStats(
        iou_threshold=iou, n_true=n_true, n_pred=n_pred, tp=tp, fp=fp, fn=fn, ap=ap,
        precision=precision, recall=recall, f1=f1,
        mean_matched_iou=float(np.mean(matched_ious)) if matched_ious else float("nan"),
    )


def average_precision(true: np.ndarray, pred: np.ndarray, iou: float = 0.5) -> float:
    """AP = TP / (TP + FP + FN) at one IoU threshold (1.0 when both images are empty)."""
    return match_stats(true, pred, iou).ap


def average_precision_many(
    trues: list[np.ndarray], preds: list[np.ndarray], iou: float = 0.5
) -> float:
    """AP pooled over several images (counts summed before the ratio, as in Cellpose's benchmarks)."""
    if len(trues) != len(preds):
        raise ValueError(f"{len(trues)} true images but {len(preds)} predictions")
    tp = fp = fn = 0
    for t, p in zip(trues, preds, strict=True):
        s = match_stats(t, p, iou)
        tp, fp, fn = tp + s.tp, fp + s.fp, fn + s.fn
    denom = tp + fp + fn
    return tp / denom if denom else 1.0
