"""Radial intensity distribution per object (CellProfiler MeasureObjectIntensityDistribution).

Features ``RadialDistribution_{FracAtD|MeanFrac|RadialCV}_{channel}_{i}of{bins}``, scaled bins, no
centre objects (CellProfiler's default, cp_measure 0.3 ``get_radial_distribution``):

- centre: the object pixel farthest from the edge -- ``d_to_edge`` is the exact Euclidean distance
  to the nearest pixel outside the object (``centrosome.cpmorphology.distance_to_edge``, i.e.
  ``scipy.ndimage.distance_transform_edt`` per colour); ties go to the first pixel in C order.
- ``d_from_center``: ``centrosome.propagate`` from the centre over the object's 8-connected
  pixels with a zero image, i.e. the geodesic path length with steps 1 and sqrt(2) (Dijkstra).
  Object pixels not connected to the centre get no bin and are ignored, as in CellProfiler.
- bin = ``int(d_from_center / (d_from_center + d_to_edge + 0.001) * bins)``.
- FracAtD = bin intensity / object intensity; MeanFrac = FracAtD / (bin pixel fraction + eps);
  RadialCV = std / mean (population std, over the non-empty wedges) of the 8 wedge means of the
  bin, wedges from ``(y > yc) + 2 (x > xc) + 4 (|y - yc| > |x - xc|)``; 0 when the bin is empty;
  where the mean is 0 numpy.ma's masked division leaves the numerator (the std), kept here.

Per object everything happens in its bounding box grown by one pixel (clipped to the image): the
nearest non-object pixel of any object pixel is 8-adjacent to the object, so it lies in that box,
and objects touching an object are always another colour in CellProfiler's colouring, so the
per-object result equals the coloured whole-image computation. The geometry (bins, wedges) does
not depend on the intensities; it is computed once per ``ObjectIndex`` and reused for every
channel measured with the same index.
"""

from __future__ import annotations

import math
import threading
import weakref

import numba
import numpy as np

from ._common import _edt_1d
from .objects import ObjectIndex, build_index

_SQRT2 = math.sqrt(2.0)
N_WEDGES = 8
# feature families along the kernel output's middle axis, in column order (compile-time constants
# in numba); ``measure_radial_distribution`` names the columns from FEATURES itself
FEATURES: tuple[str, ...] = ("FracAtD", "MeanFrac", "RadialCV")
N_FEATURES = len(FEATURES)
FRAC_AT_D = FEATURES.index("FracAtD")
MEAN_FRAC = FEATURES.index("MeanFrac")
RADIAL_CV = FEATURES.index("RadialCV")


@numba.njit(cache=True, nogil=True)
def _edt_scratch(offsets, bbox):
    """Scratch of :func:`_box_edt` sized for the largest object's one-pixel-padded box: ``maxh``,
    ``maxw``, the ``inside`` mask (all False), the squared-distance box ``g`` and the 1-D buffers."""
    maxh = 1
    maxw = 1
    for k in range(offsets.shape[0] - 1):
        maxh = max(maxh, bbox[k, 2] - bbox[k, 0] + 2)
        maxw = max(maxw, bbox[k, 3] - bbox[k, 1] + 2)
    m = max(maxh, maxw)
    return (maxh, maxw, np.zeros((maxh, maxw), np.bool_), np.empty((maxh, maxw)), np.empty(m), np.empty(m),
            np.empty(m, np.int64), np.empty(m + 1))


@numba.njit(cache=True, nogil=True, error_model="numpy")
def _box_edt(inside, h, w, g, f, d1, v, z):
    """Exact squared EDT of the box's ``inside`` pixels to its nearest non-object pixel, into ``g``
    (1-D transforms of the columns, then of the rows)."""
    for c in range(w):
        for r in range(h):
            f[r] = 1e301 if inside[r, c] else 0.0
        _edt_1d(f, h, d1, v, z)
        for r in range(h):
            g[r, c] = d1[r]
    for r in range(h):
        for c in range(w):
            f[c] = g[r, c]
        _edt_1d(f, w, d1, v, z)
        for c in range(w):
            g[r, c] = d1[c]


@numba.njit(cache=True, nogil=True, inline="always")
def _padded_box(bbox, k, shape_h, shape_w):
    """Object ``k``'s bounding box grown by one pixel, clipped to the image: (y0, x0, y1, x1)."""
    return (max(bbox[k, 0] - 1, 0), max(bbox[k, 1] - 1, 0), min(bbox[k, 2] + 1, shape_h),
            min(bbox[k, 3] + 1, shape_w))


@numba.njit(cache=True, nogil=True, error_model="numpy")
def _sq_edt(offsets, bbox, ys, xs, shape_h, shape_w):
    """Per pixel (CSR order): squared Euclidean distance to the nearest pixel outside its object
    (:func:`_box_edt` in each object's one-pixel-padded box)."""
    n_obj = offsets.shape[0] - 1
    out = np.zeros(ys.shape[0])
    _, _, inside, g, f, d1, v, z = _edt_scratch(offsets, bbox)
    for k in range(n_obj):
        s = offsets[k]
        e = offsets[k + 1]
        y0, x0, y1, x1 = _padded_box(bbox, k, shape_h, shape_w)
        for i in range(s, e):
            inside[ys[i] - y0, xs[i] - x0] = True
        _box_edt(inside, y1 - y0, x1 - x0, g, f, d1, v, z)
        for i in range(s, e):
            out[i] = g[ys[i] - y0, xs[i] - x0]
            inside[ys[i] - y0, xs[i] - x0] = False
    return out


@numba.njit(cache=True, nogil=True, error_model="numpy")
def _centre(g2, s, e):
    """CSR position of the object pixel farthest from the edge: the first C-order maximum of its
    squared distances ``g2[s:e]`` (CSR pixels are in raster order)."""
    best = -1.0
    at = s
    for i in range(s, e):
        if g2[i] > best:
            best = g2[i]
            at = i
    return at


@numba.njit(cache=True, nogil=True, error_model="numpy")
def _geodesic(inside, h, w, cy, cx, dist, done, enode, enext, head):
    """Geodesic distance from the centre over the 8-connected ``inside`` pixels into ``dist``
    (``done``: reached), i.e. centrosome.propagate with a zero image.

    Dijkstra with Dial's buckets of width 1: steps are 1 or sqrt(2) < 2, so 3 circular buckets
    suffice, and no step from bucket k lands in bucket k, hence a pixel's first pop is final.
    Bucket entries live in ``enode``/``enext``; returns them (grown if a pixel was improved often).
    """
    cap = enode.shape[0]
    for r in range(h):
        for c in range(w):
            dist[r, c] = -1.0
            done[r, c] = False
    dist[cy, cx] = 0.0
    head[0] = 0
    head[1] = -1
    head[2] = -1
    enode[0] = cy * w + cx
    enext[0] = -1
    ne = 1
    pending = 1
    kb = 0
    while pending > 0:
        slot = kb % 3
        ent = head[slot]
        head[slot] = -1
        kb += 1
        while ent >= 0:
            pending -= 1
            p = enode[ent]
            ent = enext[ent]
            r = p // w
            c = p - r * w
            if done[r, c]:
                continue
            done[r, c] = True
            d0 = dist[r, c]
            for dr in range(-1, 2):
                rr = r + dr
                if rr < 0 or rr >= h:
                    continue
                for dc in range(-1, 2):
                    if dr == 0 and dc == 0:
                        continue
                    cc = c + dc
                    if cc < 0 or cc >= w:
                        continue
                    if done[rr, cc] or not inside[rr, cc]:
                        continue
                    nd = d0 + (1.0 if (dr == 0 or dc == 0) else _SQRT2)
                    if dist[rr, cc] == -1.0 or dist[rr, cc] > nd:
                        dist[rr, cc] = nd
                        bslot = int(nd) % 3
                        if ne == cap:
                            cap *= 2
                            grown = np.empty(cap, np.int64)
                            grown[:ne] = enode[:ne]
                            enode = grown
                            grown = np.empty(cap, np.int64)
                            grown[:ne] = enext[:ne]
                            enext = grown
                        enode[ne] = rr * w + cc
                        enext[ne] = head[bslot]
                        head[bslot] = ne
                        ne += 1
                        pending += 1
    return enode, enext


@numba.njit(cache=True, nogil=True, error_model="numpy")
def _geometry(offsets, bbox, ys, xs, shape_h, shape_w, g2, bins):
    """Per pixel (CSR order): bin (-1 = not reached from the centre) and wedge 0..7, from the
    squared distances to the edge ``g2`` (:func:`_sq_edt`)."""
    n_obj = offsets.shape[0] - 1
    n_pix = ys.shape[0]
    pbin = np.full(n_pix, -1, np.int16)
    wedge = np.zeros(n_pix, np.int8)
    maxh, maxw, inside, _, _, _, _, _ = _edt_scratch(offsets, bbox)
    dist = np.empty((maxh, maxw))
    done = np.zeros((maxh, maxw), np.bool_)
    maxn = 1
    for k in range(n_obj):
        maxn = max(maxn, offsets[k + 1] - offsets[k])
    cap = 2 * maxn + 16  # bucket entries; _geodesic grows them if a pixel is improved often
    enode = np.empty(cap, np.int64)
    enext = np.empty(cap, np.int64)
    head = np.empty(3, np.int64)
    for k in range(n_obj):
        s = offsets[k]
        e = offsets[k + 1]
        y0, x0, y1, x1 = _padded_box(bbox, k, shape_h, shape_w)
        h = y1 - y0
        w = x1 - x0
        for i in range(s, e):
            inside[ys[i] - y0, xs[i] - x0] = True
        at = _centre(g2, s, e)
        cy = ys[at] - y0
        cx = xs[at] - x0
        enode, enext = _geodesic(inside, h, w, cy, cx, dist, done, enode, enext, head)
        for i in range(s, e):
            r = ys[i] - y0
            c = xs[i] - x0
            if done[r, c]:
                dfc = dist[r, c]
                dte = math.sqrt(g2[i])
                b = int(dfc / (dfc + dte + 0.001) * bins)
                if b > bins:
                    b = bins
                pbin[i] = b
                di = r - cy
                dj = c - cx
                wedge[i] = (1 if di > 0 else 0) + (2 if dj > 0 else 0) + (4 if abs(di) > abs(dj) else 0)
            inside[r, c] = False
    return pbin, wedge


@numba.njit(cache=True, nogil=True, error_model="numpy")
def bin_counts(offsets, pbin, wedge, nb):
    """Pixel count per object and bin (``cnt`` (n_obj, nb)) and per object, bin and wedge (``wcnt``
    (n_obj, nb, 8)), pixels without a bin skipped: they do not depend on the image, so they are
    counted once per geometry and shared by every channel's :func:`_radial_kernel`."""
    n_obj = offsets.shape[0] - 1
    cnt = np.zeros((n_obj, nb))
    wcnt = np.zeros((n_obj, nb, N_WEDGES))
    for k in range(n_obj):
        for i in range(offsets[k], offsets[k + 1]):
            b = pbin[i]
            if b < 0:
                continue
            cnt[k, b] += 1.0
            wcnt[k, b, wedge[i]] += 1.0
    return cnt, wcnt


@numba.njit(cache=True, nogil=True, error_model="numpy")
def _bin_sums(image, ys, xs, s, e, pbin, wedge, hist, wsum):
    """Intensity sum per bin (``hist``) and per bin and wedge (``wsum``) of the object's pixels
    ``s:e`` (pixels without a bin skipped), added in pixel order."""
    hist[:] = 0.0
    wsum[:] = 0.0
    for i in range(s, e):
        b = pbin[i]
        if b < 0:
            continue
        val = image[ys[i], xs[i]]
        hist[b] += val
        wsum[b, wedge[i]] += val


@numba.njit(cache=True, nogil=True, error_model="numpy")
def _wedge_cv(wsum, wcnt, b):
    """RadialCV of bin ``b``: population std / mean of its non-empty wedges' mean intensities
    (0 without one; numpy.ma's masked division leaves the std where the mean is 0)."""
    nw = 0
    mean = 0.0
    for u in range(N_WEDGES):
        if wcnt[b, u] > 0:
            nw += 1
            mean += wsum[b, u] / wcnt[b, u]
    if nw == 0:
        return 0.0
    mean /= nw
    var = 0.0
    for u in range(N_WEDGES):
        if wcnt[b, u] > 0:
            dv = wsum[b, u] / wcnt[b, u] - mean
            var += dv * dv
    std = math.sqrt(var / nw)
    # numpy.ma division masks |mean| <= tiny * |std| and leaves the numerator there
    if abs(mean) <= 2.2250738585072014e-308 * abs(std) or not np.isfinite(std / mean):
        return std
    return std / mean


@numba.njit(cache=True, nogil=True, error_model="numpy")
def _radial_kernel(image, offsets, ys, xs, pbin, wedge, counts, wcounts, bins, out):
    """out[k, f, b] (n_obj, N_FEATURES, bins): FracAtD, MeanFrac and RadialCV of every object;
    ``counts``, ``wcounts``: :func:`bin_counts` of (pbin, wedge) with ``bins + 1`` bins."""
    n_obj = offsets.shape[0] - 1
    nb = bins + 1
    hist = np.empty(nb)
    wsum = np.empty((nb, N_WEDGES))
    eps = np.finfo(np.float64).eps
    for k in range(n_obj):
        _bin_sums(image, ys, xs, offsets[k], offsets[k + 1], pbin, wedge, hist, wsum)
        cnt = counts[k]
        wcnt = wcounts[k]
        tot = 0.0
        ntot = 0.0
        for b in range(nb):
            tot += hist[b]
            ntot += cnt[b]
        for b in range(bins):
            fr = hist[b] / tot if tot != 0.0 else (np.nan if hist[b] == 0.0 else np.inf * hist[b])
            fb = cnt[b] / ntot if ntot != 0.0 else np.nan
            out[k, FRAC_AT_D, b] = fr
            out[k, MEAN_FRAC, b] = fr / (fb + eps)
            out[k, RADIAL_CV, b] = _wedge_cv(wsum, wcnt, b)


_GEOMETRY_CACHE: dict[tuple[int, int], tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = {}
_EDT_CACHE: dict[int, np.ndarray] = {}
_LOCK = threading.Lock()


def _keep(cache: dict, key, index: ObjectIndex, value):
    """``cache[key] = value`` while ``index`` is alive (the first value stored wins); returns it."""
    with _LOCK:
        if key not in cache:
            cache[key] = value
            weakref.finalize(index, cache.pop, key, None)
        return cache[key]


def cached_sq_edt(index: ObjectIndex) -> np.ndarray:
    """Squared distance to the edge of every pixel of ``index`` (CSR order), computed once per index:
    the centre and scaled bins here and the scaled bins of :mod:`.radial_centers` share it."""
    hit = _EDT_CACHE.get(id(index))
    if hit is None:
        h, w = index.shape
        hit = _keep(_EDT_CACHE, id(index), index,
                    _sq_edt(index.offsets, index.bbox, index.ys, index.xs, int(h), int(w)))
    return hit


def _cached_geometry(index: ObjectIndex, bins: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Bins and wedges per pixel for ``index`` and their :func:`bin_counts`; kept while the index
    object is alive."""
    key = (id(index), bins)
    hit = _GEOMETRY_CACHE.get(key)
    if hit is None:
        h, w = index.shape
        pbin, wedge = _geometry(index.offsets, index.bbox, index.ys, index.xs, int(h), int(w),
                                cached_sq_edt(index), int(bins))
        cnt, wcnt = bin_counts(index.offsets, pbin, wedge, int(bins) + 1)
        hit = _keep(_GEOMETRY_CACHE, key, index, (pbin, wedge, cnt, wcnt))
    return hit


def measure_radial_distribution(
    image: np.ndarray,
    labels: np.ndarray,
    channel: str,
    bins: int,
    index: ObjectIndex | None = None,
) -> dict[str, np.ndarray]:
    """FracAtD, MeanFrac and RadialCV per object and bin (CellProfiler scaled bins, no overflow)."""
    if image.ndim != 2 or image.shape != labels.shape:
        raise ValueError(f"image {image.shape} and labels {labels.shape} must be equal 2-D shapes")
    if bins < 1:
        raise ValueError(f"bins must be >= 1, got {bins}")
    if index is None:
        index = build_index(labels)
    n = index.n_objects
    values = np.zeros((n, N_FEATURES, bins))
    if n:
        pbin, wedge, cnt, wcnt = _cached_geometry(index, int(bins))
        img = np.ascontiguousarray(image)  # read in its own float type, summed in float64
        _radial_kernel(img, index.offsets, index.ys, index.xs, pbin, wedge, cnt, wcnt, int(bins), values)
    out: dict[str, np.ndarray] = {}
    for f, name in enumerate(FEATURES):
        for b in range(bins):
            out[f"RadialDistribution_{name}_{channel}_{b + 1}of{bins}"] = values[:, f, b].copy()
    return out
