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
   sqrt(2); each pixel takes the seed label popped first from centrosome's heap, whose keys are
   (distance without its last mantissa bit, label, row, column) -- reproduced here exactly;
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

from collections.abc import Mapping, Sequence
from typing import Any

import numba
import numpy as np

from .objects import ObjectIndex, build_index
from .propagate import propagate_into as _propagate
from .radial import FEATURES, N_FEATURES, _radial_kernel, cached_sq_edt

__all__ = ["measure_radial_centers", "seed_centres"]


@numba.njit(cache=True, nogil=True)
def _label_sums(lab, n):
    """Pixel count and row / column sums of labels 0..n over a label image (one raster pass; the
    sums are of integers, exact in float64, so any order gives the same values)."""
    cnt = np.zeros(n + 1)
    sy = np.zeros(n + 1)
    sx = np.zeros(n + 1)
    h, w = lab.shape
    for y in range(h):
        for x in range(w):
            v = lab[y, x]
            cnt[v] += 1.0
            sy[v] += y
            sx[v] += x
    return cnt, sy, sx


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
    """Per object pixel (CSR order of ``index``): distance to its centre, the centre's row and column,
    and whether it has one (steps 1-3 of the module docstring)."""
    i, j, good = seed_centres(centres)
    lg = np.flatnonzero(good) + 1
    ig, jg = i[good], j[good]
    mask = labels != 0
    ys, xs = index.ys, index.xs
    if mask[ig, jg].any():
        seeds = np.zeros(labels.shape, np.int64)
        seeds[ig, jg] = lg
        cl = np.zeros(labels.shape, np.int64)
        dist = np.full(labels.shape, -1.0)
        _propagate(mask, seeds, cl, dist)
        pcl = cl[ys, xs]
        pd = dist[ys, xs]
    else:  # no centre inside the objects (e.g. cytoplasm rings): nothing propagates
        pcl = np.zeros(ys.shape[0], np.int64)
        pd = np.full(ys.shape[0], -1.0)
    missing = pcl == 0
    if missing.any() and lg.size:
        owner = np.repeat(np.arange(index.n_objects), np.diff(index.offsets))
        miss_obj = np.flatnonzero(np.bincount(owner[missing], minlength=index.n_objects))
        areas = np.diff(index.offsets).astype(np.float64)
        my = np.bincount(owner, weights=ys.astype(np.float64), minlength=index.n_objects) / areas
        mx = np.bincount(owner, weights=xs.astype(np.float64), minlength=index.n_objects) / areas
        d2 = (my[miss_obj, None] - ig[None, :]) ** 2 + (mx[miss_obj, None] - jg[None, :]) ** 2
        best = np.zeros(index.n_objects, np.int64)
        best[miss_obj] = lg[_first_of_argsort(d2)]
        pcl[missing] = best[owner[missing]]
        dy = ys[missing] - i[pcl[missing] - 1]
        dx = xs[missing] - j[pcl[missing] - 1]
        pd[missing] = np.sqrt(dy * dy + dx * dx)
    ok = pcl > 0
    ic = np.where(ok, i[np.maximum(pcl, 1) - 1], 0)
    jc = np.where(ok, j[np.maximum(pcl, 1) - 1], 0)
    return pd, ic, jc, ok


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
    d, ic, jc, ok = _assign_centres(lab, index, np.ascontiguousarray(centres, dtype=np.int64))
    dte = None
    di = index.ys - ic
    dj = index.xs - jc
    wedge = ((di > 0).astype(np.int8) + 2 * (dj > 0) + 4 * (np.abs(di) > np.abs(dj))).astype(np.int8)
    img = np.ascontiguousarray(image)
    for setting in bin_settings:
        bins = int(setting["bins"])
        scaled = bool(setting["scaled"])
        if scaled:
            if dte is None:
                dte = np.sqrt(cached_sq_edt(index))  # shared with the index's own radial distribution
            norm = d / (d + dte + 0.001)
        else:
            norm = d / float(setting["max_radius"])
        pbin = np.minimum((norm * bins).astype(np.int64), bins).astype(np.int16)
        pbin[~ok] = -1
        width = bins if scaled else bins + 1  # the unscaled Overflow bin is reported
        values = np.zeros((n, N_FEATURES, width))
        if n:
            _radial_kernel(img, index.offsets, index.ys, index.xs, pbin, wedge, width, values)
        for f, name in enumerate(FEATURES):
            for b in range(bins):
                out[f"RadialDistribution_{name}_{image_name}_{b + 1}of{bins}"] = values[:, f, b].copy()
            if not scaled:
                out[f"RadialDistribution_{name}_{image_name}_Overflow"] = values[:, f, bins].copy()
    return out
