"""Per-object colocalisation of two channels (CellProfiler 4 MeasureColocalization, ``Correlation_*``).

Semantics are CellProfiler 4.2's object mode (``run_image_pair_objects``, 4.2.8); keys (first
channel ``c1``, second ``c2``):

- ``Correlation_Correlation_{c1}_{c2}``: Pearson r of the object's pixels (clipped to [-1, 1]; NaN
  for a 1-pixel object). Symmetric: the value does not depend on which channel is first.
- ``Correlation_Slope_{c1}_{c2}``: least-squares slope of c2 on c1, ``cov / var(c1)`` (ddof 1).
  CellProfiler records the slope only for whole images; cp_measure (and we) add it per object.
  Directional.
- ``Correlation_Manders_{c1}_{c2}`` (M1: the fraction of c1's above-threshold intensity that overlaps
  c2) and ``_{c2}_{c1}`` (M2), ``Correlation_RWC_*`` (both orders, same roles),
  ``Correlation_Overlap_{c1}_{c2}`` (symmetric), ``Correlation_K_{c1}_{c2}`` (K1 = sum(c1 c2) /
  sum(c1^2)) and ``_{c2}_{c1}`` (K2): with the per-object thresholds ``thr / 100 * max`` (thr = 15 %)
  of each channel, pixels ``>=`` both thresholds form the overlap set; M1 = sum(c1 over overlap) /
  sum(c1 >= its threshold). An object whose overlap set is empty gets 0 for all of these.
- RWC weights each overlap pixel by ``(R - |rank1 - rank2|) / R``: dense ranks of the values (ties
  share a rank) over *every labelled pixel of the image together*, R = 1 + the largest rank of either
  channel (CellProfiler 4: ``lexsort((labels, pixels))`` over the image's labelled pixels), so an
  object's RWC depends on the other objects of the image, as in CellProfiler.
- ``Correlation_Costes_{c1}_{c2}`` / ``_{c2}_{c1}`` only with ``costes=True``: CellProfiler 4's
  "Faster" bisection (``bisection_costes``) finds one pair of Costes thresholds over the *whole
  image's* pixels (NaN pixels left out) on the grid of the image's scale (``scale``: 255 for 8-bit,
  65535 for 16-bit originals; CellProfiler's ``get_scale``), then each object gets the Manders-like
  fractions of its pixels strictly above both thresholds over its pixels ``>=`` each threshold
  (0 when no pixel of the image is above both; 0/0 = NaN for an object with no pixel above). The
  thresholds depend only on the two images, so :func:`costes_thresholds` runs once per channel pair
  and site and is shared by the compartments. Directional: swapping the channels changes the search.

Directional features (Slope, Manders, RWC, K, Costes) name the channel whose intensity is summed
first; both directions are produced for Manders, RWC, K and Costes. :func:`channel_pairs` orders the
pairs as the JUMP Cell Painting pipeline names them (channel names sorted: AGP, DNA, ER, Mito, RNA).

Parity exceptions (cp_measure 0.3, which ranks and thresholds per object on a fixed 65535 grid, is no
longer the reference for RWC and Costes):

- an object whose values in one channel are all equal: r (and the slope when the first channel is the
  constant one) is undefined; numpy computes it from the rounding residue of the mean subtraction;
  here r is NaN, the slope NaN (constant c1) or 0 (constant c2).
- an object whose overlap pixels are all 0 in one channel makes Overlap and K 0/0 = NaN (numpy
  semantics, as CellProfiler's array code).

Implementation: one pass per object over the CSR pixel lists for r/slope and one for the
thresholded sums; image-wide dense ranks by an LSD radix sort (2 byte-passes for uint16-derived
values ``j / 65535``, 8 for other floats), cached per (``ObjectIndex``, channel content hash) so each
channel is ranked once for the 4 pairs it appears in. The Costes bisection makes one pass over the
image per step (about 60 steps on the 65535 grid).
"""

from __future__ import annotations

import itertools
import math
import threading
import weakref
from collections import OrderedDict
from collections.abc import Sequence

import numba
import numpy as np

from ._common import MASK32, MASK64, SIGN32, SIGN64, order_keys, radix_sort
from .granularity import fingerprint
from .objects import ObjectIndex, build_index

_THR = 15.0  # CellProfiler default threshold, % of the object's maximum
# image-wide dense ranks of one channel's labelled pixels, keyed by (id(index), size, content hash): the
# 4 pairs a channel takes part in (and its 4 * 2 RWC terms) rank it once
_RANK_CACHE: OrderedDict[tuple[int, int, int], tuple[np.ndarray, int]] = OrderedDict()
_RANK_CACHE_SIZE = 10
_LOCK = threading.Lock()

# columns of the per-object kernel output
CORR, SLOPE, M1, M2, RWC1, RWC2, OVERLAP, K1, K2 = range(9)
N_OUT = 9


def channel_pairs(channels: Sequence[str]) -> list[tuple[str, str]]:
    """The channel pairs measured, first channel first: every pair of the sorted channel names.

    CellProfiler pairs the images in the order its module lists them; the JUMP Cell Painting pipeline
    lists AGP, DNA, ER, Mito, RNA (sorted), so its columns read ``Correlation_Correlation_AGP_DNA``, ...
    """
    return list(itertools.combinations(sorted(str(c) for c in channels), 2))


@numba.njit(cache=True, nogil=True, error_model="numpy")
def _float32_exact(vals, n):
    """Whether every value of vals[:n] is a float32 (the pipeline's illumination-corrected images)."""
    for t in range(n):
        if np.float64(np.float32(vals[t])) != vals[t]:
            return False
    return True


@numba.njit(cache=True, nogil=True, error_model="numpy")
def _dense_rank_float32(vals, n, out):
    """Dense ranks of the float32 values vals[:n] into out[:n]; returns the largest rank.

    A stable LSD radix sort of their order-preserving 32-bit patterns (:func:`._common.order_keys`:
    equal values have equal keys) in two 16-bit passes carrying the positions, then one pass
    numbering the distinct keys in sorted order.
    """
    keys = np.empty(n, np.uint32)
    tmpk = np.empty(n, np.uint32)
    pos_a = np.arange(n).astype(np.int32)
    pos_b = np.empty(n, np.int32)
    order_keys(vals[:n].astype(np.float32).view(np.uint32), n, SIGN32, MASK32, keys)
    hist = np.empty(65536, np.int64)
    for shift in (0, 16):
        hist[:] = 0
        for t in range(n):
            hist[(keys[t] >> np.uint32(shift)) & np.uint32(0xFFFF)] += 1
        acc = 0
        for d in range(65536):
            c = hist[d]
            hist[d] = acc
            acc += c
        for t in range(n):
            k = keys[t]
            d = (k >> np.uint32(shift)) & np.uint32(0xFFFF)
            at = hist[d]
            hist[d] = at + 1
            tmpk[at] = k
            pos_b[at] = pos_a[t]
        keys, tmpk = tmpk, keys
        pos_a, pos_b = pos_b, pos_a
    r = 0
    out[pos_a[0]] = 0
    for t in range(1, n):
        if keys[t] != keys[t - 1]:
            r += 1
        out[pos_a[t]] = r
    return r


@numba.njit(cache=True, nogil=True, error_model="numpy")
def _dense_rank(vals, n, keys, tmpk, idx, tmpi, hist, out):
    """Dense ranks of vals[:n] (0 = smallest, equal values share a rank); returns the largest rank.

    When every value is ``j / 65535`` (uint16 data scaled to [0, 1]) no sort is needed: a table of
    the 65,536 levels marks those present and numbers them in increasing order (O(n + 65536)).
    Otherwise a stable LSD radix sort of the positions by the values' order-preserving bit
    patterns: two 16-bit passes when every value is a float32 (:func:`_dense_rank_float32`), else
    :func:`._common.radix_sort`'s byte passes over the float64's. Ranks compare values, so
    -0.0 == 0.0.
    """
    quant = True
    for t in range(n):
        v = vals[t]
        j = np.rint(v * 65535.0)
        if not (0.0 <= j <= 65535.0) or j / 65535.0 != v:
            quant = False
            break
        keys[t] = np.uint64(j)
    if quant:
        level_rank = np.zeros(65536, np.int64)
        for t in range(n):
            level_rank[keys[t]] = 1
        r = -1
        for j in range(65536):
            if level_rank[j]:
                r += 1
                level_rank[j] = r
        for t in range(n):
            out[t] = level_rank[keys[t]]
        return r
    if _float32_exact(vals, n):
        return _dense_rank_float32(vals, n, out)
    order_keys(vals.view(np.uint64), n, SIGN64, MASK64, keys)
    for t in range(n):
        idx[t] = t
    radix_sort(keys, idx, n, 8, tmpk, tmpi, hist, True)
    r = 0
    out[idx[0]] = 0
    for t in range(1, n):
        if vals[idx[t]] != vals[idx[t - 1]]:
            r += 1
        out[idx[t]] = r
    return r


@numba.njit(cache=True, nogil=True, error_model="numpy")
def _gather(image, ys, xs):
    """float64 image[ys, xs] of a C-contiguous image (unsigned flat index: no negative checks)."""
    w = np.uint64(image.shape[1])
    flat = image.ravel()
    out = np.empty(ys.shape[0])
    for i in range(ys.shape[0]):
        out[i] = flat[np.uint64(ys[i]) * w + np.uint64(xs[i])]
    return out


@numba.njit(cache=True, nogil=True, error_model="numpy")
def _image_ranks(vals):
    """(dense rank of every labelled pixel among all of them, largest rank): CellProfiler 4's
    ``lexsort((labels, pixels))`` ranks, which ignore object boundaries."""
    n = vals.shape[0]
    out = np.zeros(n, np.int32)
    if n == 0:
        return out, 0
    keys = np.empty(n, np.uint64)
    tmpk = np.empty(n, np.uint64)
    idx = np.empty(n, np.int64)
    tmpi = np.empty(n, np.int64)
    hist = np.empty(256, np.int64)
    rk = np.empty(n, np.int64)
    top = _dense_rank(vals, n, keys, tmpk, idx, tmpi, hist, rk)
    for t in range(n):
        out[t] = rk[t]
    return out, top


@numba.njit(cache=True, nogil=True, error_model="numpy")
def _pearson_slope(fi, si, m1, m2, fmin, fmax, smin, smax):
    """(r, slope of si on fi) from centred sums (ddof 1), with the constant-channel conventions."""
    n = fi.shape[0]
    sxx = 0.0
    syy = 0.0
    sxy = 0.0
    for t in range(n):
        dx = fi[t] - m1
        dy = si[t] - m2
        sxx += dx * dx
        syy += dy * dy
        sxy += dx * dy
    dof = n - 1.0
    cxx = sxx / dof if dof > 0 else np.nan
    cyy = syy / dof if dof > 0 else np.nan
    cxy = sxy / dof if dof > 0 else np.nan
    corr = cxy / math.sqrt(cxx) / math.sqrt(cyy)
    corr = max(-1.0, min(1.0, corr)) if corr == corr else corr
    slope = cxy / cxx
    if fmax == fmin:  # constant first channel: r and slope undefined
        return np.nan, np.nan
    if smax == smin:  # constant second channel: r undefined, flat fit
        return np.nan, (0.0 if dof > 0 else np.nan)
    return corr, slope


@numba.njit(cache=True, nogil=True, error_model="numpy")
def _overlap_terms(fi, si, r1, r2, tff, tss, big_r, row):
    """Manders, RWC, Overlap and K of one object into ``row`` (0 when no pixel is above both)."""
    tot1 = 0.0
    tot2 = 0.0
    c1 = 0.0
    c2 = 0.0
    f2 = 0.0
    s2 = 0.0
    fs = 0.0
    w1 = 0.0
    w2 = 0.0
    ncomb = 0
    for t in range(fi.shape[0]):
        a = fi[t]
        b = si[t]
        above1 = a >= tff
        above2 = b >= tss
        if above1:
            tot1 += a
        if above2:
            tot2 += b
        if above1 and above2:
            ncomb += 1
            c1 += a
            c2 += b
            f2 += a * a
            s2 += b * b
            fs += a * b
            wgt = (big_r - abs(r1[t] - r2[t])) * 1.0 / big_r
            w1 += a * wgt
            w2 += b * wgt
    if ncomb == 0:
        for f in (M1, M2, RWC1, RWC2, OVERLAP, K1, K2):
            row[f] = 0.0
        return
    row[M1] = c1 / tot1
    row[M2] = c2 / tot2
    row[RWC1] = w1 / tot1
    row[RWC2] = w2 / tot2
    row[OVERLAP] = fs / math.sqrt(f2 * s2)
    row[K1] = fs / f2
    row[K2] = fs / s2


@numba.njit(cache=True, nogil=True, error_model="numpy")
def _coloc_kernel(v1, v2, rank1, rank2, offsets, thr, big_r, out):
    """out[k, CORR..K2] of every object (values and image-wide ranks in CSR order)."""
    n_obj = offsets.shape[0] - 1
    frac = thr / 100.0
    for k in range(n_obj):
        s = offsets[k]
        e = offsets[k + 1]
        fi = v1[s:e]
        si = v2[s:e]
        n = e - s
        m1 = 0.0
        m2 = 0.0
        fmax = -np.inf
        smax = -np.inf
        fmin = np.inf
        smin = np.inf
        for t in range(n):
            a = fi[t]
            b = si[t]
            m1 += a
            m2 += b
            fmax = max(fmax, a)
            smax = max(smax, b)
            fmin = min(fmin, a)
            smin = min(smin, b)
        out[k, CORR], out[k, SLOPE] = _pearson_slope(fi, si, m1 / n, m2 / n, fmin, fmax, smin, smax)
        _overlap_terms(fi, si, rank1[s:e], rank2[s:e], frac * fmax, frac * smax, big_r, out[k])


# ------------------------------------------------------------------------------------------- Costes


@numba.njit(cache=True, nogil=True, error_model="numpy")
def _costes_regression(fi, si):
    """(a, b) of the orthogonal regression si = a fi + b over pixels nonzero in either channel
    (``bisection_costes``' variances with ddof 1; NaN pixels are left out)."""
    nz = 0
    xm = 0.0
    ym = 0.0
    for t in range(fi.shape[0]):
        a = fi[t]
        b = si[t]
        if a != a or b != b:
            continue
        if a > 0 or b > 0:
            nz += 1
            xm += a
            ym += b
    xm /= nz
    ym /= nz
    zm = xm + ym
    xv = 0.0
    yv = 0.0
    zv = 0.0
    for t in range(fi.shape[0]):
        a = fi[t]
        b = si[t]
        if a != a or b != b:
            continue
        if a > 0 or b > 0:
            xv += (a - xm) ** 2
            yv += (b - ym) ** 2
            zv += (a + b - zm) ** 2
    xv /= nz - 1
    yv /= nz - 1
    zv /= nz - 1
    covar = 0.5 * (zv - (xv + yv))
    num = (yv - xv) + math.sqrt((yv - xv) * (yv - xv) + 4 * (covar * covar))
    slope = num / (2 * covar)
    return slope, ym - slope * xm


# running sums of a pixel set, values shifted by the image means: columns of the ``agg`` rows
N_, SX, SY, SXX, SYY, SXY, MINX, MAXX, MINY, MAXY = range(10)
N_AGG = 10


@numba.njit(cache=True, nogil=True, inline="always")
def _agg_add(agg, a, b, dx, dy):
    """Add one pixel (values a, b; shifted dx, dy) to the running sums ``agg``."""
    agg[N_] += 1.0
    agg[SX] += dx
    agg[SY] += dy
    agg[SXX] += dx * dx
    agg[SYY] += dy * dy
    agg[SXY] += dx * dy
    agg[MINX] = min(agg[MINX], a)
    agg[MAXX] = max(agg[MAXX], a)
    agg[MINY] = min(agg[MINY], b)
    agg[MAXY] = max(agg[MAXY], b)


@numba.njit(cache=True, nogil=True)
def _agg_reset(agg):
    for f in range(N_AGG):
        agg[f] = 0.0
    agg[MINX] = np.inf
    agg[MAXX] = -np.inf
    agg[MINY] = np.inf
    agg[MAXY] = -np.inf


@numba.njit(cache=True, nogil=True, error_model="numpy")
def _agg_pearson(agg):
    """(count, r) of ``scipy.stats.pearsonr`` from running sums; r is NaN for a constant channel
    (scipy's ConstantInputWarning)."""
    cnt = agg[N_]
    if cnt < 2 or agg[MAXX] == agg[MINX] or agg[MAXY] == agg[MINY]:
        return cnt, np.nan
    cov = agg[SXY] - agg[SX] * agg[SY] / cnt
    vx = agg[SXX] - agg[SX] * agg[SX] / cnt
    vy = agg[SYY] - agg[SY] * agg[SY] / cnt
    if vx <= 0.0 or vy <= 0.0:
        return cnt, np.nan
    return cnt, max(-1.0, min(1.0, cov / math.sqrt(vx * vy)))


@numba.njit(cache=True, nogil=True, error_model="numpy")
def _grid_buckets(fi, si, scale, cx, cy):
    """The non-NaN pixels counting-sorted by their first-channel grid cell ``floor(fi * scale)``
    (clipped to [0, scale + 1]): (sorted fi, sorted si, bucket starts, prefix sums ``pre[k]`` of the
    pixels in buckets below k)."""
    nb = int(math.floor(scale)) + 2
    start = np.zeros(nb + 1, np.int64)
    cell = np.empty(fi.shape[0], np.int64)
    for t in range(fi.shape[0]):
        a = fi[t]
        b = si[t]
        if a != a or b != b:
            cell[t] = -1
            continue
        c = int(math.floor(min(max(a * scale, 0.0), scale + 1.0)))
        cell[t] = c
        start[c + 1] += 1
    for k in range(nb):
        start[k + 1] += start[k]
    fill = start[:-1].copy()
    fs = np.empty(start[nb])
    ss = np.empty(start[nb])
    for t in range(fi.shape[0]):
        c = cell[t]
        if c >= 0:
            fs[fill[c]] = fi[t]
            ss[fill[c]] = si[t]
            fill[c] += 1
    pre = np.empty((nb + 1, N_AGG))
    _agg_reset(pre[0])
    for k in range(nb):
        pre[k + 1] = pre[k]
        for t in range(start[k], start[k + 1]):
            _agg_add(pre[k + 1], fs[t], ss[t], fs[t] - cx, ss[t] - cy)
    return fs, ss, start, pre


@numba.njit(cache=True, nogil=True, error_model="numpy")
def _below_pearson(fs, ss, start, pre, mid, scale, thr_si, cx, cy, agg):
    """(count, r) over the pixels with fi < mid / scale or si < thr_si: the buckets at least two grid
    cells below ``mid`` from the prefix sums, the others pixel by pixel."""
    lo = min(max(int(mid) - 1, 0), start.shape[0] - 1)
    thr_fi = mid / scale
    for f in range(N_AGG):
        agg[f] = pre[lo, f]
    for t in range(start[lo], fs.shape[0]):
        a = fs[t]
        b = ss[t]
        if a < thr_fi or b < thr_si:
            _agg_add(agg, a, b, a - cx, b - cy)
    return _agg_pearson(agg)


@numba.njit(cache=True, nogil=True, error_model="numpy")
def _bisection_costes(fi, si, scale):
    """CellProfiler 4's ``bisection_costes``: (threshold of fi, threshold of si) on the 1/scale grid.

    Candidates sit 1/6 of the window below its top; a candidate with r >= 0 below both thresholds
    is valid and moves the window down, r < 0 (or <= 2 pixels below) moves it up, an undefined r
    (a constant channel) leaves the window as it is, which ends the search (as in CellProfiler).
    Each step sums only the pixels within a grid cell of the first threshold or above it; those
    further below come from per-cell prefix sums (:func:`_grid_buckets`)."""
    a, b = _costes_regression(fi, si)
    cx = 0.0
    cy = 0.0
    n = 0
    for t in range(fi.shape[0]):
        if fi[t] == fi[t] and si[t] == si[t]:
            cx += fi[t]
            cy += si[t]
            n += 1
    cx /= max(n, 1)
    cy /= max(n, 1)
    fs, ss, start, pre = _grid_buckets(fi, si, scale, cx, cy)
    agg = np.empty(N_AGG)
    left = 1.0
    right = float(scale)
    mid = ((right - left) // (6 / 5)) + left
    lastmid = 0.0
    valid = 1.0
    while lastmid != mid:
        thr_si = (a * (mid / scale)) + b
        cnt, r = _below_pearson(fs, ss, start, pre, mid, scale, thr_si, cx, cy, agg)
        if cnt <= 2:
            left = mid - 1
        elif r < 0:
            left = mid - 1
        elif r >= 0:
            right = mid + 1
            valid = mid
        lastmid = mid
        if right - left > 6:
            mid = ((right - left) // (6 / 5)) + left
        else:
            mid = ((right - left) // 2) + left
    thr_fi = (valid - 1) / scale
    return thr_fi, (a * thr_fi) + b


@numba.njit(cache=True, nogil=True, error_model="numpy")
def _costes_objects(v1, v2, offsets, thr1, thr2, out):
    """out[k] = (C1, C2): per object, the intensity strictly above both image thresholds over the
    intensity >= each channel's threshold; all 0 when no labelled pixel is above both."""
    n_obj = offsets.shape[0] - 1
    any_both = False
    for k in range(n_obj):
        tot1 = 0.0
        tot2 = 0.0
        c1 = 0.0
        c2 = 0.0
        for t in range(offsets[k], offsets[k + 1]):
            a = v1[t]
            b = v2[t]
            if a >= thr1:
                tot1 += a
            if b >= thr2:
                tot2 += b
            if a > thr1 and b > thr2:
                any_both = True
                c1 += a
                c2 += b
        out[k, 0] = c1 / tot1
        out[k, 1] = c2 / tot2
    if not any_both:
        for k in range(n_obj):
            out[k, 0] = 0.0
            out[k, 1] = 0.0


def costes_thresholds(image1: np.ndarray, image2: np.ndarray, scale: float) -> tuple[float, float]:
    """CellProfiler 4's Costes thresholds of a channel pair over the whole image (``bisection_costes``
    on every non-NaN pixel; ``scale`` = the originals' dtype maximum, e.g. 65535 for uint16)."""
    if image1.shape != image2.shape:
        raise ValueError(f"images {image1.shape} and {image2.shape} must match")
    if not scale or scale < 1:
        raise ValueError(f"Costes scale must be >= 1 (the original images' dtype maximum), got {scale}")
    a = np.ascontiguousarray(image1).ravel()
    b = np.ascontiguousarray(image2).ravel()
    t1, t2 = _bisection_costes(a.astype(np.float64, copy=False), b.astype(np.float64, copy=False),
                               float(scale))
    return float(t1), float(t2)


def object_pixels(image: np.ndarray, index: ObjectIndex) -> np.ndarray:
    """float64 values of a float image at the objects' pixels (``image[index.ys, index.xs]``, CSR
    order): what :func:`measure_colocalization` reads; a caller measuring several channel pairs on
    the same objects gathers each channel once and passes them as ``values``."""
    if image.dtype.kind != "f":
        raise TypeError(f"image must be floating point in [0, 1], got {image.dtype}")
    return _gather(np.ascontiguousarray(image), index.ys, index.xs)


def _ranks(values: np.ndarray, index: ObjectIndex) -> tuple[np.ndarray, int]:
    """Image-wide dense ranks of a channel's gathered labelled pixels (and the top rank), cached."""
    key = (id(index), values.shape[0], int(fingerprint(values)))
    with _LOCK:
        hit = _RANK_CACHE.get(key)
        if hit is not None:
            _RANK_CACHE.move_to_end(key)
            return hit
    ranks, top = _image_ranks(values)
    hit = (ranks, int(top))
    with _LOCK:
        if key not in _RANK_CACHE:
            weakref.finalize(index, _RANK_CACHE.pop, key, None)
        _RANK_CACHE[key] = hit
        while len(_RANK_CACHE) > _RANK_CACHE_SIZE:
            _RANK_CACHE.popitem(last=False)
    return hit


def measure_colocalization(
    image1: np.ndarray,
    image2: np.ndarray,
    labels: np.ndarray,
    channel1: str,
    channel2: str,
    index: ObjectIndex | None = None,
    costes: bool = False,
    scale: float | None = None,
    thresholds: tuple[float, float] | None = None,
    values: tuple[np.ndarray, np.ndarray] | None = None,
) -> dict[str, np.ndarray]:
    """CellProfiler 4 MeasureColocalization per object, channel1 first (see the module docstring).

    With ``costes``: ``thresholds`` (from :func:`costes_thresholds`, shared by the compartments of a
    site) or ``scale`` (the originals' dtype maximum) to compute them here. ``values``: the two
    images' :func:`object_pixels` on ``index``, when the caller has them already (else gathered here).
    """
    if image1.shape != labels.shape or image2.shape != labels.shape or labels.ndim != 2:
        raise ValueError(f"images {image1.shape}, {image2.shape} and labels {labels.shape} must match (2-D)")
    if index is None:
        index = build_index(labels)
    n = index.n_objects
    # float32 / float64 images are read as they are (no whole-image float64 copy per pair)
    a = np.ascontiguousarray(image1)
    b = np.ascontiguousarray(image2)
    if a.dtype.kind != "f" or b.dtype.kind != "f":
        raise TypeError(f"images must be floating point in [0, 1], got {a.dtype} and {b.dtype}")
    if costes and thresholds is None and scale is None:
        raise ValueError("Costes needs the images' scale (their original dtype maximum) or thresholds")
    res = np.zeros((n, N_OUT))
    v1 = v2 = None
    if n:
        if values is None:
            v1 = _gather(a, index.ys, index.xs)
            v2 = _gather(b, index.ys, index.xs)
        else:
            v1, v2 = values
            if v1.shape != index.ys.shape or v2.shape != index.ys.shape:
                raise ValueError("values must be the images' object_pixels on index")
        rank1, top1 = _ranks(v1, index)
        rank2, top2 = _ranks(v2, index)
        _coloc_kernel(v1, v2, rank1, rank2, index.offsets, _THR, max(top1, top2) + 1.0, res)
    c1, c2 = channel1, channel2
    out = {
        f"Correlation_Correlation_{c1}_{c2}": res[:, CORR],
        f"Correlation_Slope_{c1}_{c2}": res[:, SLOPE],
        f"Correlation_Manders_{c1}_{c2}": res[:, M1],
        f"Correlation_Manders_{c2}_{c1}": res[:, M2],
        f"Correlation_RWC_{c1}_{c2}": res[:, RWC1],
        f"Correlation_RWC_{c2}_{c1}": res[:, RWC2],
        f"Correlation_Overlap_{c1}_{c2}": res[:, OVERLAP],
        f"Correlation_K_{c1}_{c2}": res[:, K1],
        f"Correlation_K_{c2}_{c1}": res[:, K2],
    }
    out = {k: v.copy() for k, v in out.items()}
    if costes:
        t1, t2 = thresholds if thresholds is not None else costes_thresholds(a, b, float(scale))
        cst = np.zeros((n, 2))
        if n:
            _costes_objects(v1, v2, index.offsets, t1, t2, cst)
        out[f"Correlation_Costes_{c1}_{c2}"] = cst[:, 0].copy()
        out[f"Correlation_Costes_{c2}_{c1}"] = cst[:, 1].copy()
    return out
