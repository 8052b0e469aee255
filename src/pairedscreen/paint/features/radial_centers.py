"""Radial distribution around the centres of other objects (CellProfiler 4's
MeasureObjectIntensityDistribution with "Object to use as center: Centers of other objects").

The JUMP pipeline measures the ``mito_tubeness`` image in Cells and Cytoplasm around the Nuclei
centres, in 16 scaled bins and in 20 unscaled bins of 200/20 px (plus an Overflow bin). CellProfiler
4.2's ``do_measurements``, step by step:

1. centre of nucleus ``n``: ``int(mean row + 0.5), int(mean column + 0.5)`` of its pixels
   (``centers_of_labels + 0.5``), one seed pixel per nucleus with pixels (a later nucleus overwrites
   an earlier one on the same pixel);
2. ``centrosome.propagate`` from the seeds that lie inside the measured objects over all their
   pixels (``labels != 0``, across touching objects) with a zero image: Dijkstra with steps 1 and
   sqrt(2); each pixel takes the label of its record popped first from centrosome's heap. The seeds
   pop first, in the order of the unheapified raster array the heap starts from (not by label), which
   decides the pixels next to two seeds; then records pop by (distance without its last mantissa bit,
   label, row, column). :mod:`.propagate` reproduces both phases exactly;
3. objects with pixels no seed reached (e.g. every cytoplasm ring, whose nucleus centre is in the
   hole): those pixels take the seed nearest to the object's centroid and the straight-line distance
   to it;
4. scaled: ``bin = int(d / (d + d_to_edge + 0.001) * bins)``; unscaled: ``int(d / max_radius *
   bins)`` capped at ``bins`` (the Overflow bin); ``d_to_edge`` as in :mod:`.radial` (the same cached
   array, :func:`.radial.cached_sq_edt`, computed once per object index);
5. FracAtD, MeanFrac and RadialCV as in :mod:`.radial`, the 8 wedges taken around each pixel's own
   centre.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numba
import numpy as np

from .objects import ObjectIndex, build_index
from .propagate import propagate_into as _propagate
from .radial import FEATURES, N_FEATURES, _radial_kernel, bin_counts, cached_sq_edt

__all__ = ["measure_radial_centers", "seed_centres"]


@numba.njit(cache=True, nogil=True)
def _label_sums(lab, n):
    """Pixel count and row / column sums of labels 0..n over a label image (one raster pass over
    runs of equal labels, added once per run rather than per pixel; the sums are of integers, exact
    in float64, so any order gives the same values)."""
    cnt = np.zeros(n + 1)
    sy = np.zeros(n + 1)
    sx = np.zeros(n + 1)
    h, w = lab.shape
    for y in range(h):
        x0 = 0
        while x0 < w:
            v = lab[y, x0]
            x1 = x0 + 1
            while x1 < w and lab[y, x1] == v:
                x1 += 1
            run = x1 - x0
            cnt[v] += run
            sy[v] += y * run
            sx[v] += (x0 + x1 - 1) * run // 2
            x0 = x1
    return cnt, sy, sx


@numba.njit(cache=True, nogil=True)
def _gather_centres(cl, dist, ys, xs):
    """Per object pixel (CSR order): the propagated centre label (int64) and distance."""
    n = ys.shape[0]
    pcl = np.empty(n, np.int64)
    pd = np.empty(n)
    for t in range(n):
        pcl[t] = cl[ys[t], xs[t]]
        pd[t] = dist[ys[t], xs[t]]
    return pcl, pd


@numba.njit(cache=True, nogil=True)
def _missing_objects(offsets, ys, xs, pcl):
    """Which objects have pixels without a centre, and every object's centroid (row and column sums
    in CSR order divided by the area, as ``np.bincount`` with weights)."""
    n_obj = offsets.shape[0] - 1
    miss = np.zeros(n_obj, np.bool_)
    my = np.empty(n_obj)
    mx = np.empty(n_obj)
    for k in range(n_obj):
        sy = 0.0
        sx = 0.0
        for t in range(offsets[k], offsets[k + 1]):
            sy += ys[t]
            sx += xs[t]
            if pcl[t] == 0:
                miss[k] = True
        area = float(offsets[k + 1] - offsets[k])
        my[k] = sy / area
        mx[k] = sx / area
    return miss, my, mx


@numba.njit(cache=True, nogil=True)
def _fill_missing(offsets, ys, xs, pcl, pd, best, i, j):
    """Pixels without a centre take their object's nearest centre ``best[k]`` (a label) and the
    straight-line distance to it."""
    for k in range(offsets.shape[0] - 1):
        for t in range(offsets[k], offsets[k + 1]):
            if pcl[t] == 0:
                lab = best[k]
                pcl[t] = lab
                dy = ys[t] - i[lab - 1]
                dx = xs[t] - j[lab - 1]
                pd[t] = math.sqrt(float(dy * dy + dx * dx))


@numba.njit(cache=True, nogil=True)
def _centre_wedges(ys, xs, pcl, i, j):
    """Per pixel: whether it has a centre, and its wedge 0..7 around that centre (around (0, 0)
    without one, as CellProfiler's zero-filled centre arrays)."""
    n = ys.shape[0]
    ok = np.empty(n, np.bool_)
    wedge = np.empty(n, np.int8)
    for t in range(n):
        lab = pcl[t]
        ok[t] = lab > 0
        ic = i[lab - 1] if lab > 0 else 0
        jc = j[lab - 1] if lab > 0 else 0
        di = ys[t] - ic
        dj = xs[t] - jc
        wedge[t] = (1 if di > 0 else 0) + (2 if dj > 0 else 0) + (4 if abs(di) > abs(dj) else 0)
    return ok, wedge


@numba.njit(cache=True, nogil=True, error_model="numpy")
def _centre_bins(d, dte, ok, scaled, max_radius, bins):
    """Per pixel bin: ``int(d / (d + d_to_edge + 0.001) * bins)`` (scaled) or ``int(d / max_radius *
    bins)``, capped at ``bins``; -1 without a centre."""
    n = d.shape[0]
    pbin = np.empty(n, np.int16)
    for t in range(n):
        if not ok[t]:
            pbin[t] = -1
            continue
        if scaled:
            norm = d[t] / (d[t] + dte[t] + 0.001)
        else:
            norm = d[t] / max_radius
        b = int(norm * bins)
        pbin[t] = min(b, bins)
    return pbin


def seed_centres(centres: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(row, column) seed of every centre label 1..max (``centers_of_labels + 0.5`` as int; -1 for a
    label without pixels) and which labels have pixels."""
    lab = np.ascontiguousarray(centres, dtype=np.int64)
    if lab.size and int(lab.min()) < 0:
        raise ValueError("centre labels must be non-negative")
    n = int(lab.max()) if lab.size else 0
    cnt, sy, sx = _label_sums(lab, n)
    cnt, sy, sx = cnt[1:], sy[1:], sx[1:]
    good = cnt > 0
    with np.errstate(invalid="ignore", divide="ignore"):
        ci = sy / cnt
        cj = sx / cnt
    i = np.where(good, ci + 0.5, -1).astype(np.int64)
    j = np.where(good, cj + 0.5, -1).astype(np.int64)
    return i, j, good


def _first_of_argsort(d2: np.ndarray) -> np.ndarray:
    """``np.argsort(d2, axis=1)[:, 0]`` (CellProfiler's choice of the nearest centre): the row's
    minimum where it is unique, argsort itself on the rows where it is tied (which of the tied
    columns argsort puts first is its own affair)."""
    first = d2.argmin(axis=1)
    rows = np.arange(d2.shape[0])
    tied = (d2 == d2[rows, first][:, None]).sum(axis=1) > 1
    if tied.any():
        first[tied] = np.argsort(d2[tied], axis=1)[:, 0]
    return first


def _assign_centres(labels: np.ndarray, index: ObjectIndex, centres: np.ndarray):
    """Per object pixel (CSR order of ``index``): distance to its centre, the centre's label (0 =
    none) and the centres' rows and columns by label - 1 (steps 1-3 of the module docstring)."""
    i, j, good = seed_centres(centres)
    lg = np.flatnonzero(good) + 1
    ig, jg = i[good], j[good]
    mask = labels != 0
    ys, xs = index.ys, index.xs
    if mask[ig, jg].any():
        small = lg.size == 0 or int(lg[-1]) < 2**31
        seeds = np.zeros(labels.shape, np.int32 if small else np.int64)
        seeds[ig, jg] = lg
        cl = np.zeros(labels.shape, seeds.dtype)
        dist = np.full(labels.shape, -1.0)
        _propagate(mask, seeds, cl, dist)
        pcl, pd = _gather_centres(cl, dist, ys, xs)
    else:  # no centre inside the objects (e.g. cytoplasm rings): nothing propagates
        pcl = np.zeros(ys.shape[0], np.int64)
        pd = np.full(ys.shape[0], -1.0)
    if lg.size:
        miss, my, mx = _missing_objects(index.offsets, ys, xs, pcl)
        if miss.any():
            miss_obj = np.flatnonzero(miss)
            d2 = (my[miss_obj, None] - ig[None, :]) ** 2 + (mx[miss_obj, None] - jg[None, :]) ** 2
            best = np.zeros(index.n_objects, np.int64)
            best[miss_obj] = lg[_first_of_argsort(d2)]
            _fill_missing(index.offsets, ys, xs, pcl, pd, best, i, j)
    return pd, pcl, i, j


def measure_radial_centers(
    image: np.ndarray,
    labels: np.ndarray,
    centres: np.ndarray,
    image_name: str,
    bin_settings: Sequence[Mapping[str, Any]],
    index: ObjectIndex | None = None,
) -> dict[str, np.ndarray]:
    """``RadialDistribution_{FracAtD|MeanFrac|RadialCV}_{image_name}_{b}of{bins}`` (and ``_Overflow``
    for unscaled settings) of ``labels``' objects around the centres of the ``centres`` objects;
    ``bin_settings``: ``{bins, scaled, max_radius}`` per setting (CellProfiler's bin groups)."""
    if image.shape != labels.shape or centres.shape != labels.shape or image.ndim != 2:
        raise ValueError("image, labels and centres must be 2-D images of one shape")
    if index is None:
        index = build_index(labels)
    out: dict[str, np.ndarray] = {}
    n = index.n_objects
    lab = np.ascontiguousarray(labels, dtype=np.int64)
    d, pcl, i, j = _assign_centres(lab, index, np.ascontiguousarray(centres, dtype=np.int64))
    ok, wedge = _centre_wedges(index.ys, index.xs, pcl, i, j)
    dte = None
    img = np.ascontiguousarray(image)
    for setting in bin_settings:
        bins = int(setting["bins"])
        scaled = bool(setting["scaled"])
        if scaled and dte is None:
            dte = np.sqrt(cached_sq_edt(index))  # shared with the index's own radial distribution
        pbin = _centre_bins(d, d if dte is None else dte, ok, scaled, float(setting["max_radius"]), bins)
        width = bins if scaled else bins + 1  # the unscaled Overflow bin is reported
        values = np.zeros((n, N_FEATURES, width))
        if n:
            cnt, wcnt = bin_counts(index.offsets, pbin, wedge, width + 1)
            _radial_kernel(img, index.offsets, index.ys, index.xs, pbin, wedge, cnt, wcnt, width, values)
        for f, name in enumerate(FEATURES):
            for b in range(bins):
                out[f"RadialDistribution_{name}_{image_name}_{b + 1}of{bins}"] = values[:, f, b].copy()
            if not scaled:
                out[f"RadialDistribution_{name}_{image_name}_Overflow"] = values[:, f, bins].copy()
    return out
