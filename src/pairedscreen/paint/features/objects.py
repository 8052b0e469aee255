"""One pass over a label image: per-object pixel lists (CSR layout) that every feature family reuses.

``ObjectIndex`` holds, for objects with labels ``labels_present[k]`` (sorted ascending, 0 excluded),
the row/column coordinates of their pixels in ``ys[offsets[k]:offsets[k+1]]`` and
``xs[offsets[k]:offsets[k+1]]`` (raster order within each object), plus bounding boxes. Families take
``(images[C, H, W], labels[H, W])`` as their public signature and accept a prebuilt index to avoid
re-scanning the label image.
"""

from __future__ import annotations

from dataclasses import dataclass

import numba
import numpy as np


@numba.njit(cache=True, nogil=True)
def _count_and_bbox(labels, max_label):
    counts = np.zeros(max_label + 1, np.int64)
    bbox = np.empty((max_label + 1, 4), np.int64)  # min_y, min_x, max_y+1, max_x+1
    bbox[:, 0] = labels.shape[0]
    bbox[:, 1] = labels.shape[1]
    bbox[:, 2] = 0
    bbox[:, 3] = 0
    for y in range(labels.shape[0]):
        for x in range(labels.shape[1]):
            lab = labels[y, x]
            if lab > 0:
                counts[lab] += 1
                if y < bbox[lab, 0]:
                    bbox[lab, 0] = y
                if x < bbox[lab, 1]:
                    bbox[lab, 1] = x
                if y + 1 > bbox[lab, 2]:
                    bbox[lab, 2] = y + 1
                if x + 1 > bbox[lab, 3]:
                    bbox[lab, 3] = x + 1
    return counts, bbox


@numba.njit(cache=True, nogil=True)
def _scatter(labels, slot, offsets, n_pix):
    ys = np.empty(n_pix, np.int32)
    xs = np.empty(n_pix, np.int32)
    fill = offsets[:-1].copy()
    for y in range(labels.shape[0]):
        for x in range(labels.shape[1]):
            lab = labels[y, x]
            if lab > 0:
                k = slot[lab]
                i = fill[k]
                ys[i] = y
                xs[i] = x
                fill[k] = i + 1
    return ys, xs


@dataclass(frozen=True)
class ObjectIndex:
    labels_present: np.ndarray  # (n,) int64 object labels, ascending
    offsets: np.ndarray         # (n+1,) int64 CSR offsets into ys/xs
    ys: np.ndarray              # (n_pix,) int32
    xs: np.ndarray              # (n_pix,) int32
    bbox: np.ndarray            # (n, 4) int64: min_y, min_x, max_y (excl.), max_x (excl.)
    shape: tuple[int, int]

    @property
    def n_objects(self) -> int:
        return int(self.labels_present.shape[0])

    @property
    def areas(self) -> np.ndarray:
        return np.diff(self.offsets)

    def pixels(self, k: int) -> tuple[np.ndarray, np.ndarray]:
        s, e = self.offsets[k], self.offsets[k + 1]
        return self.ys[s:e], self.xs[s:e]


def build_index(labels: np.ndarray) -> ObjectIndex:
    """Index the objects of a 2-D non-negative integer label image in two raster passes."""
    if labels.ndim != 2:
        raise ValueError(f"labels must be 2-D, got shape {labels.shape}")
    lab = np.ascontiguousarray(labels)
    if lab.dtype.kind not in "iu":
        raise TypeError(f"labels must be an integer image, got {lab.dtype}")
    if lab.size and lab.min() < 0:
        raise ValueError("labels must be non-negative (0 = background)")
    lab = lab.astype(np.int64, copy=False)
    max_label = int(lab.max()) if lab.size else 0
    counts, bbox = _count_and_bbox(lab, max_label)
    present = np.flatnonzero(counts[1:]) + 1
    slot = np.full(max_label + 1, -1, np.int64)
    slot[present] = np.arange(present.size)
    offsets = np.zeros(present.size + 1, np.int64)
    np.cumsum(counts[present], out=offsets[1:])
    ys, xs = _scatter(lab, slot, offsets, int(offsets[-1]))
    return ObjectIndex(present.astype(np.int64), offsets, ys, xs, bbox[present].copy(), lab.shape)
