"""Per-object colocalisation of two channels (CellProfiler MeasureColocalization, ``Correlation_*``).

Keys (first channel ``c1``, second ``c2``), CellProfiler's names:

- ``Correlation_Correlation_{c1}_{c2}``: Pearson r of the object's pixels (``numpy.corrcoef``,
  clipped to [-1, 1]; NaN for a 1-pixel object).
- ``Correlation_Slope_{c1}_{c2}``: least-squares slope of c2 on c1, ``cov / var(c1)`` (ddof 1).
  CellProfiler itself records the slope only for whole images; cp_measure (and we) add it per object.

Parity exception: for an object whose values in one channel are all equal, r (and the slope when
the first channel is the constant one) is undefined; numpy computes it from the rounding residue of
the mean subtraction (values such as 0.98 or -1 that depend on summation order) and cp_measure
reports that residue. Here r is NaN, the slope NaN (constant c1) or 0 (constant c2).
- ``Correlation_Manders_{c1}_{c2}`` (M1) and ``_{c2}_{c1}`` (M2), ``Correlation_RWC_*`` (both orders),
  ``Correlation_Overlap_{c1}_{c2}``, ``Correlation_K_{c1}_{c2}`` (K1) and ``_{c2}_{c1}`` (K2): with the
  per-object thresholds ``thr / 100 * max`` (thr = 15 %) of each channel, pixels ``>=`` both
  thresholds form the overlap set; M1 = sum(c1 over overlap) / sum(c1 >= its threshold); RWC
  weights each overlap pixel by ``(R - |rank1 - rank2|) / R`` with dense ranks of the values
  (ties share a rank) and R = 1 + the largest rank; Overlap = sum(c1 c2) / sqrt(sum c1^2 sum c2^2)
  and K1 = sum(c1 c2) / sum(c1^2), K2 = sum(c1 c2) / sum(c2^2) over the overlap set. An object
  whose overlap set is empty gets 0 for all of these.
- ``Correlation_Costes_{c1}_{c2}`` / ``_{c2}_{c1}`` only with ``costes=True``: cp_measure's "Faster"
  bisection threshold search on the 65535 grid (``scale_max=65535``), then Manders-like fractions
  of the pixels above both Costes thresholds (strictly greater), NaN where undefined.

Implementation: one pass per object over the CSR pixel lists for r/slope and one for the
thresholded sums; dense ranks by an LSD radix sort per object (2 byte-passes for uint16-derived
values ``j / 65535``, 8 for other floats), cached per (``ObjectIndex``, channel content hash) so
each channel is ranked once for the 4 pairs it appears in.

Parity exception: an object whose overlap pixels are all 0 in one channel makes Overlap and K
0/0; this module returns NaN (numpy semantics, as CellProfiler's array code), cp_measure 0.3's
``_overlap_pair`` raises ZeroDivisionError (Python float division) for it.

Parity exception (documented for the parity table): RWC ranks are per object, as in cp_measure 0.3.
CellProfiler 4's object mode ranks the pixels of *all* objects of the image jointly
(``lexsort((labels, pixels))`` over every labelled pixel), so its RWC for an object depends on the
other objects in the image; cp_measure and this module use the per-object ranks.
"""

from __future__ import annotations

import math
import threading
import weakref
from collections import OrderedDict

import numba
import numpy as np

from ._common import radix_sort
from .granularity import fingerprint
from .objects import ObjectIndex, build_index

_THR = 15.0  # CellProfiler default threshold, % of the object's maximum
# per-object dense ranks of one channel's pixels, keyed by (id(index), content hash): the 4 pairs a
# channel takes part in (and its 4 * 2 RWC terms) rank it once
_RANK_CACHE: OrderedDict[tuple[int, int, int], np.ndarray] = OrderedDict()
_RANK_CACHE_SIZE = 10
_LOCK = threading.Lock()


@numba.njit(cache=True, nogil=True, error_model="numpy")
def _dense_rank(vals, n, keys, tmpk, idx, tmpi, hist, out):
    """Dense ranks of vals[:n] (0 = smallest, equal values share a rank); returns the largest rank.

    Stable LSD radix sort (:func:`._common.radix_sort`) of the positions by key: 2 byte passes
    when every value is ``j / 65535`` (uint16 data scaled to [0, 1]), else 8 over the
    order-preserving bit pattern of the float64. Ranks compare values, so -0.0 == 0.0.
    """
    quant = True
    for t in range(n):
        v = vals[t]
        j = np.rint(v * 65535.0)
        if not (0.0 <= j <= 65535.0) or j / 65535.0 != v:
            quant = False
            break
        keys[t] = np.uint64(j)
    npass = 2
    if not quant:
        npass = 8
        bits = vals.view(np.uint64)
        for t in range(n):
            u = bits[t]
            if u >> np.uint64(63):
                keys[t] = ~u
            else:
                keys[t] = u | np.uint64(1 << 63)
    for t in range(n):
        idx[t] = t
    radix_sort(keys, idx, n, npass, tmpk, tmpi, hist, True)
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
def _object_ranks(vals, offsets):
    """Dense rank of every pixel within its object (CSR order)."""
    n_obj = offsets.shape[0] - 1
    maxn = 1
    for k in range(n_obj):
        maxn = max(maxn, offsets[k + 1] - offsets[k])
    keys = np.empty(maxn, np.uint64)
    tmpk = np.empty(maxn, np.uint64)
    idx = np.empty(maxn, np.int64)
    tmpi = np.empty(maxn, np.int64)
    hist = np.empty(256, np.int64)
    buf = np.empty(maxn)
    rk = np.empty(maxn, np.int64)
    out = np.empty(vals.shape[0], np.int32)
    for k in range(n_obj):
        s = offsets[k]
        n = offsets[k + 1] - s
        for t in range(n):
            buf[t] = vals[s + t]
        _dense_rank(buf, n, keys, tmpk, idx, tmpi, hist, rk)
        for t in range(n):
            out[s + t] = rk[t]
    return out


@numba.njit(cache=True, nogil=True, error_model="numpy")
def _coloc_kernel(v1, v2, rank1, rank2, offsets, thr, out):
    """out[:, f] for f = corr, slope, M1, M2, RWC1, RWC2, overlap, K1, K2 (values/ranks in CSR order)."""
    n_obj = offsets.shape[0] - 1
    frac = thr / 100.0
    for k in range(n_obj):
        s = offsets[k]
        n = offsets[k + 1] - s
        fi = v1[s:s + n]
        si = v2[s:s + n]
        r1 = rank1[s:s + n]
        r2 = rank2[s:s + n]
        m1 = 0.0
        m2 = 0.0
        fmax = -np.inf
        smax = -np.inf
        fmin = np.inf
        smin = np.inf
        rmax1 = 0
        rmax2 = 0
        for t in range(n):
            a = fi[t]
            b = si[t]
            m1 += a
            m2 += b
            fmax = max(fmax, a)
            smax = max(smax, b)
            fmin = min(fmin, a)
            smin = min(smin, b)
            rmax1 = max(rmax1, r1[t])
            rmax2 = max(rmax2, r2[t])
        m1 /= n
        m2 /= n
        tff = frac * fmax
        tss = frac * smax
        big_r = max(rmax1, rmax2) + 1.0
        # one more pass: centred moments, thresholded sums, rank weights
        sxx = 0.0
        syy = 0.0
        sxy = 0.0
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
        for t in range(n):
            a = fi[t]
            b = si[t]
            dx = a - m1
            dy = b - m2
            sxx += dx * dx
            syy += dy * dy
            sxy += dx * dy
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
        dof = n - 1.0
        cxx = sxx / dof if dof > 0 else np.nan
        cyy = syy / dof if dof > 0 else np.nan
        cxy = sxy / dof if dof > 0 else np.nan
        corr = cxy / math.sqrt(cxx) / math.sqrt(cyy)
        if corr > 1.0:
            corr = 1.0
        elif corr < -1.0:
            corr = -1.0
        slope = cxy / cxx
        if fmax == fmin:  # constant first channel: r and slope undefined
            corr = np.nan
            slope = np.nan
        elif smax == smin:  # constant second channel: r undefined, flat fit
            corr = np.nan
            slope = 0.0 if dof > 0 else np.nan
        out[k, 0] = corr
        out[k, 1] = slope
        if ncomb == 0:
            for f in range(2, 9):
                out[k, f] = 0.0
            continue
        out[k, 2] = c1 / tot1
        out[k, 3] = c2 / tot2
        out[k, 4] = w1 / tot1
        out[k, 5] = w2 / tot2
        out[k, 6] = fs / math.sqrt(f2 * s2)
        out[k, 7] = fs / f2
        out[k, 8] = fs / s2


@numba.njit(cache=True, nogil=True, error_model="numpy")
def _pearson_subset(fi, si, n, t1, t2):
    """Pearson r over pixels with fi < t1 or si < t2; NaN if < 3 pixels or a constant channel."""
    cnt = 0
    m1 = 0.0
    m2 = 0.0
    mn1 = np.inf
    mx1 = -np.inf
    mn2 = np.inf
    mx2 = -np.inf
    for t in range(n):
        a = fi[t]
        b = si[t]
        if a < t1 or b < t2:
            cnt += 1
            m1 += a
            m2 += b
            mn1 = min(mn1, a)
            mx1 = max(mx1, a)
            mn2 = min(mn2, b)
            mx2 = max(mx2, b)
    if cnt < 3 or mx1 == mn1 or mx2 == mn2:
        return np.nan
    m1 /= cnt
    m2 /= cnt
    sxx = 0.0
    syy = 0.0
    sxy = 0.0
    for t in range(n):
        a = fi[t]
        b = si[t]
        if a < t1 or b < t2:
            dx = a - m1
            dy = b - m2
            sxx += dx * dx
            syy += dy * dy
            sxy += dx * dy
    r = sxy / math.sqrt(sxx * syy)
    return max(-1.0, min(1.0, r))


@numba.njit(cache=True, nogil=True, error_model="numpy")
def _costes_object(fi, si, n, scale):
    """cp_measure 0.3 ``_costes_pair`` with the "Faster" bisection search; (C1, C2), NaN if undefined."""
    if n < 3:
        return np.nan, np.nan
    nz = 0
    mn1 = np.inf
    mx1 = -np.inf
    mn2 = np.inf
    mx2 = -np.inf
    xm = 0.0
    ym = 0.0
    for t in range(n):
        if not (np.isfinite(fi[t]) and np.isfinite(si[t])):
            return np.nan, np.nan
        if fi[t] > 0 or si[t] > 0:
            nz += 1
            mn1 = min(mn1, fi[t])
            mx1 = max(mx1, fi[t])
            mn2 = min(mn2, si[t])
            mx2 = max(mx2, si[t])
            xm += fi[t]
            ym += si[t]
    if nz < 3 or mx1 == mn1 or mx2 == mn2:
        return np.nan, np.nan
    zm = 0.0
    for t in range(n):
        if fi[t] > 0 or si[t] > 0:
            zm += fi[t] + si[t]
    xm /= nz
    ym /= nz
    zm /= nz
    xv = 0.0
    yv = 0.0
    zv = 0.0
    for t in range(n):
        if fi[t] > 0 or si[t] > 0:
            xv += (fi[t] - xm) ** 2
            yv += (si[t] - ym) ** 2
            zv += (fi[t] + si[t] - zm) ** 2
    xv /= nz - 1
    yv /= nz - 1
    zv /= nz - 1
    covar = 0.5 * (zv - (xv + yv))
    denom = 2 * covar
    num = (yv - xv) + math.sqrt((yv - xv) * (yv - xv) + 4 * (covar * covar))
    if abs(covar) <= 8 * 2.220446049250313e-16 * max(xv, yv):
        return np.nan, np.nan
    a = num / denom
    b = ym - a * xm
    if not (np.isfinite(a) and np.isfinite(b)):
        return np.nan, np.nan
    left = 1.0
    right = float(scale)
    mid = ((right - left) // (6 / 5)) + left
    lastmid = 0.0
    valid = -1.0
    it = 0
    while lastmid != mid:
        it += 1
        if it > 256:
            return np.nan, np.nan
        thr_fi = mid / scale
        thr_si = (a * thr_fi) + b
        r = _pearson_subset(fi, si, n, thr_fi, thr_si)
        if not np.isfinite(r) or r < 0:
            left = mid - 1
        else:
            right = mid + 1
            valid = mid
        lastmid = mid
        divisor = 6 / 5 if right - left > 6 else 2.0
        mid = ((right - left) // divisor) + left
    if valid < 0:
        return np.nan, np.nan
    thr_fi = (valid - 1) / scale
    thr_si = (a * thr_fi) + b
    if not np.isfinite(_pearson_subset(fi, si, n, thr_fi, thr_si)):
        return np.nan, np.nan
    tot1 = 0.0
    tot2 = 0.0
    c1 = 0.0
    c2 = 0.0
    for t in range(n):
        if fi[t] >= thr_fi:
            tot1 += fi[t]
        if si[t] >= thr_si:
            tot2 += si[t]
        if fi[t] > thr_fi and si[t] > thr_si:
            c1 += fi[t]
            c2 += si[t]
    if tot1 <= 0 or tot2 <= 0:
        return np.nan, np.nan
    return c1 / tot1, c2 / tot2


@numba.njit(cache=True, nogil=True, error_model="numpy")
def _costes_kernel(im1, im2, offsets, ys, xs, scale, out):
    n_obj = offsets.shape[0] - 1
    maxn = 1
    for k in range(n_obj):
        maxn = max(maxn, offsets[k + 1] - offsets[k])
    fi = np.empty(maxn)
    si = np.empty(maxn)
    for k in range(n_obj):
        s = offsets[k]
        n = offsets[k + 1] - s
        for t in range(n):
            fi[t] = im1[ys[s + t], xs[s + t]]
            si[t] = im2[ys[s + t], xs[s + t]]
        out[k, 0], out[k, 1] = _costes_object(fi, si, n, scale)


def _ranks(values: np.ndarray, index: ObjectIndex) -> np.ndarray:
    """Per-object dense ranks of a channel's gathered pixel values, cached by content."""
    key = (id(index), values.shape[0], int(fingerprint(values)))
    with _LOCK:
        hit = _RANK_CACHE.get(key)
        if hit is not None:
            _RANK_CACHE.move_to_end(key)
            return hit
    hit = _object_ranks(values, index.offsets)
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
) -> dict[str, np.ndarray]:
    """CellProfiler MeasureColocalization per object for the channel pair (channel1, channel2)."""
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
    res = np.zeros((n, 9))
    if n:
        v1 = _gather(a, index.ys, index.xs)
        v2 = _gather(b, index.ys, index.xs)
        _coloc_kernel(v1, v2, _ranks(v1, index), _ranks(v2, index), index.offsets, _THR, res)
    c1, c2 = channel1, channel2
    out = {
        f"Correlation_Correlation_{c1}_{c2}": res[:, 0],
        f"Correlation_Slope_{c1}_{c2}": res[:, 1],
        f"Correlation_Manders_{c1}_{c2}": res[:, 2],
        f"Correlation_Manders_{c2}_{c1}": res[:, 3],
        f"Correlation_RWC_{c1}_{c2}": res[:, 4],
        f"Correlation_RWC_{c2}_{c1}": res[:, 5],
        f"Correlation_Overlap_{c1}_{c2}": res[:, 6],
        f"Correlation_K_{c1}_{c2}": res[:, 7],
        f"Correlation_K_{c2}_{c1}": res[:, 8],
    }
    out = {k: v.copy() for k, v in out.items()}
    if costes:
        if (a.size and (float(np.nanmin(a)) < 0 or float(np.nanmax(a)) > 1
                        or float(np.nanmin(b)) < 0 or float(np.nanmax(b)) > 1)):
            raise ValueError("Costes expects images normalised to [0, 1]")
        cst = np.full((n, 2), np.nan)
        if n:
            _costes_kernel(a, b, index.offsets, index.ys, index.xs, 65535.0, cst)
        out[f"Correlation_Costes_{c1}_{c2}"] = cst[:, 0].copy()
        out[f"Correlation_Costes_{c2}_{c1}"] = cst[:, 1].copy()
    return out
