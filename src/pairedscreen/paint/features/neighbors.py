"""Neighbour features (CellProfiler MeasureObjectNeighbors, objects vs themselves, 2-D).

Semantics of CellProfiler's "Within a specified distance" method (``method="within"``, feature
suffix ``_{distance}``) and "Adjacent" (``method="adjacent"``: distance 1, suffix ``_Adjacent``):

- ``NumberOfNeighbors``: other objects having a pixel within Euclidean distance ``d`` of one of
  the object's pixels (CellProfiler dilates the object with ``strel_disk(d)``: x^2 + y^2 <= d^2).
- ``PercentTouching``: 100 * (outline pixels with another object's pixel within ``d + 0.5``) /
  (outline pixels); the outline is CellProfiler's (``centrosome.outline``: a pixel with an
  8-neighbour of another value, or on the image border).
- ``FirstClosestObjectNumber``/``SecondClosestObjectNumber``: ids of the nearest and second nearest
  other objects by centroid distance; ``FirstClosestDistance``/``SecondClosestDistance`` those
  distances; ``AngleBetweenNeighbors`` the angle (degrees) at the object centroid between them.
  Zero when the image has too few objects, as in CellProfiler.
"""

from __future__ import annotations

import math

import numba
import numpy as np

from .objects import ObjectIndex, build_index

FEATURES: tuple[str, ...] = (
    "NumberOfNeighbors",
    "PercentTouching",
    "FirstClosestObjectNumber",
    "FirstClosestDistance",
    "SecondClosestObjectNumber",
    "SecondClosestDistance",
    "AngleBetweenNeighbors",
)


@numba.njit(cache=True, nogil=True)
def _scan_disk(labels, y, x, d, r2, lab, found, nfound, first_only):
    """Scan the in-image pixels (y + dy, x + dx), |dy|, |dx| <= d, dy^2 + dx^2 <= r2, for labels
    other than 0 and ``lab``. ``first_only``: return 1 at the first one, 0 if there is none (``found``
    untouched); otherwise append each label not yet in ``found[:nfound]`` and return the new count."""
    H, W = labels.shape
    for dy in range(-d, d + 1):
        yy = y + dy
        if yy < 0 or yy >= H:
            continue
        for dx in range(-d, d + 1):
            if dy * dy + dx * dx > r2:
                continue
            xx = x + dx
            if xx < 0 or xx >= W:
                continue
            o = labels[yy, xx]
            if o != 0 and o != lab:
                if first_only:
                    return 1
                seen = False
                for j in range(nfound):
                    if found[j] == o:
                        seen = True
                        break
                if not seen:
                    found[nfound] = o
                    nfound += 1
    return 0 if first_only else nfound


@numba.njit(cache=True, nogil=True)
def _neighbors_kernel(labels, ys, xs, offsets, present, distance):
    H, W = labels.shape
    n_obj = offsets.shape[0] - 1
    out = np.zeros((n_obj, 7))
    cy = np.empty(n_obj)
    cx = np.empty(n_obj)
    for k in range(n_obj):
        sy = 0.0
        sx = 0.0
        for i in range(offsets[k], offsets[k + 1]):
            sy += ys[i]
            sx += xs[i]
        cnt = offsets[k + 1] - offsets[k]
        cy[k] = sy / cnt
        cx[k] = sx / cnt
    d = distance
    d2 = d * d
    dt = d + 0.5
    dt2 = dt * dt
    found = np.empty(max(n_obj, 1), np.int64)
    for k in range(n_obj):
        lab = present[k]
        nfound = 0
        n_outline = 0
        n_touch = 0
        for i in range(offsets[k], offsets[k + 1]):
            y = ys[i]
            x = xs[i]
            # 4-boundary (an in-image 4-neighbour with another value): the only pixels that can be
            # nearest to an outside pixel, so the only ones to dilate from
            b4 = (
                (y > 0 and labels[y - 1, x] != lab)
                or (y < H - 1 and labels[y + 1, x] != lab)
                or (x > 0 and labels[y, x - 1] != lab)
                or (x < W - 1 and labels[y, x + 1] != lab)
            )
            # CellProfiler outline: 8-neighbour with another value, or on the image border
            if y == 0 or x == 0 or y == H - 1 or x == W - 1:
                outline = True
            else:
                outline = b4
                if not outline:
                    outline = (
                        labels[y - 1, x - 1] != lab
                        or labels[y - 1, x + 1] != lab
                        or labels[y + 1, x - 1] != lab
                        or labels[y + 1, x + 1] != lab
                    )
            if b4:
                nfound = _scan_disk(labels, y, x, d, d2, lab, found, nfound, False)
            if outline:
                n_outline += 1
                if _scan_disk(labels, y, x, d, dt2, lab, found, nfound, True):
                    n_touch += 1
        out[k, 0] = nfound
        out[k, 1] = 100.0 * n_touch / n_outline if n_outline > 0 else 0.0

    if n_obj > 1:
        for k in range(n_obj):
            b1 = -1
            b2 = -1
            d1 = np.inf
            dd2 = np.inf
            for j in range(n_obj):
                if j == k:
                    continue
                dist = math.sqrt((cy[k] - cy[j]) ** 2 + (cx[k] - cx[j]) ** 2)
                if dist < d1:
                    b2 = b1
                    dd2 = d1
                    b1 = j
                    d1 = dist
                elif dist < dd2:
                    b2 = j
                    dd2 = dist
            v1y = cy[b1] - cy[k]
            v1x = cx[b1] - cx[k]
            out[k, 2] = present[b1]
            out[k, 3] = math.sqrt(v1x * v1x + v1y * v1y)
            if b2 >= 0:
                v2y = cy[b2] - cy[k]
                v2x = cx[b2] - cx[k]
                out[k, 4] = present[b2]
                out[k, 5] = math.sqrt(v2x * v2x + v2y * v2y)
                dot = (v1x * v2x + v1y * v2y) / math.sqrt(
                    (v1x * v1x + v1y * v1y) * (v2x * v2x + v2y * v2y)
                )
                out[k, 6] = math.acos(min(1.0, max(-1.0, dot))) * 180.0 / math.pi
    return out


def measure_neighbors(
    labels: np.ndarray,
    distance: int,
    index: ObjectIndex | None = None,
    *,
    method: str = "within",
) -> dict[str, np.ndarray]:
    """CellProfiler neighbour features: ``{"Neighbors_<Feature>_<distance|Adjacent>": array}``.

    Arrays are aligned with ``index.labels_present``; object numbers are label ids (float64).
    """
    if method not in ("within", "adjacent"):
        raise ValueError(f"method must be 'within' or 'adjacent', got {method!r}")
    if method == "adjacent":
        d, suffix = 1, "Adjacent"
    else:
        if int(distance) != distance or distance < 0:
            raise ValueError(f"distance must be a non-negative integer, got {distance!r}")
        d, suffix = int(distance), str(int(distance))
    if index is None:
        index = build_index(labels)
    lab = np.ascontiguousarray(labels, dtype=np.int64)
    if index.n_objects == 0:
        out = np.zeros((0, len(FEATURES)))
    else:
        out = _neighbors_kernel(lab, index.ys, index.xs, index.offsets, index.labels_present, d)
    return {f"Neighbors_{name}_{suffix}": out[:, i] for i, name in enumerate(FEATURES)}
