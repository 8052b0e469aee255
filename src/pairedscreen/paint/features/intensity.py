"""Intensity features (CellProfiler MeasureObjectIntensity, 2-D), one numba pass per object.

Per object, over its finite pixels: integrated/mean/std (population)/min/max intensity, the
quartiles, median and MAD (CellProfiler's ``n * q`` interpolation convention by default; the
``numpy.percentile`` convention with ``cellprofiler_quantiles=False``), the same five statistics on
the *edge* pixels (object pixels with an in-image 4-neighbour carrying another label, background
included), the mass displacement (distance between the pixel centroid and the intensity-weighted
centroid), the intensity-weighted centroid and the position of the maximum (first pixel in raster
order among ties, as ``numpy.argmax``). Images are float, typically in [0, 1] (uint16 / 65535) as
CellProfiler loads them.

The order statistics come from a full LSD radix sort of each object's values (cheaper than
selecting median, quartiles and then the MAD's deviations): of their 16-bit levels for values on
the ``k / 65535`` grid, else of their IEEE bit patterns as order-preserving keys (4 bytes for
float32 images such as the pipeline's illumination-corrected ones, 8 for others; bytes shared by
all of an object's values are skipped). The MAD's deviations then come in order from a merge
outward from the median. Every path sees the same order statistics and interpolates them the same
way, so the features do not depend on the path.
"""

from __future__ import annotations

from functools import lru_cache

import numba
import numpy as np

from ._common import MASK32, MASK64, SIGN32, SIGN64, order_keys, order_values, radix_sort
from .objects import ObjectIndex, build_index

FEATURES: tuple[str, ...] = (
    "Intensity_IntegratedIntensity",
    "Intensity_MeanIntensity",
    "Intensity_StdIntensity",
    "Intensity_MinIntensity",
    "Intensity_MaxIntensity",
    "Intensity_IntegratedIntensityEdge",
    "Intensity_MeanIntensityEdge",
    "Intensity_StdIntensityEdge",
    "Intensity_MinIntensityEdge",
    "Intensity_MaxIntensityEdge",
    "Intensity_MassDisplacement",
    "Intensity_LowerQuartileIntensity",
    "Intensity_MedianIntensity",
    "Intensity_MADIntensity",
    "Intensity_UpperQuartileIntensity",
    "Location_CenterMassIntensity_X",
    "Location_CenterMassIntensity_Y",
    "Location_MaxIntensity_X",
    "Location_MaxIntensity_Y",
)
N_FEATURES = len(FEATURES)
# column of each feature in the kernel output, named after it (compile-time constants in numba)
_col = FEATURES.index
INTEGRATED = _col("Intensity_IntegratedIntensity")
MEAN = _col("Intensity_MeanIntensity")
STD = _col("Intensity_StdIntensity")
MIN = _col("Intensity_MinIntensity")
MAX = _col("Intensity_MaxIntensity")
INTEGRATED_EDGE = _col("Intensity_IntegratedIntensityEdge")
MEAN_EDGE = _col("Intensity_MeanIntensityEdge")
STD_EDGE = _col("Intensity_StdIntensityEdge")
MIN_EDGE = _col("Intensity_MinIntensityEdge")
MAX_EDGE = _col("Intensity_MaxIntensityEdge")
MASS_DISPLACEMENT = _col("Intensity_MassDisplacement")
LOWER_QUARTILE = _col("Intensity_LowerQuartileIntensity")
MEDIAN = _col("Intensity_MedianIntensity")
MAD = _col("Intensity_MADIntensity")
UPPER_QUARTILE = _col("Intensity_UpperQuartileIntensity")
CENTER_MASS_X = _col("Location_CenterMassIntensity_X")
CENTER_MASS_Y = _col("Location_CenterMassIntensity_Y")
MAX_X = _col("Location_MaxIntensity_X")
MAX_Y = _col("Location_MaxIntensity_Y")
del _col


@numba.njit(cache=True, nogil=True)
def _select(a, lo, hi, k):
    """Place the k-th smallest of a[lo:hi] at a[k] (lo <= k < hi), with a[lo:k] <= a[k] <= a[k+1:hi].

    Quickselect with a median-of-three pivot and a three-way (Dutch flag) partition, so runs of
    equal values (8-bit images, saturated objects) cost linear time.
    """
    hi -= 1
    while hi > lo:
        mid = (lo + hi) >> 1
        x, y, z = a[lo], a[mid], a[hi]
        if x > y:
            x, y = y, x
        if y > z:
            y = z
            if x > y:
                y = x
        pivot = y
        lt = lo
        i = lo
        gt = hi
        while i <= gt:
            v = a[i]
            if v < pivot:
                a[i] = a[lt]
                a[lt] = v
                lt += 1
                i += 1
            elif v > pivot:
                a[i] = a[gt]
                a[gt] = v
                gt -= 1
            else:
                i += 1
        if k < lt:
            hi = lt - 1
        elif k > gt:
            lo = gt + 1
        else:
            return


@numba.njit(cache=True, nogil=True)
def _min_range(a, lo, hi):
    """Smallest of a[lo:hi] (with :func:`_select`, the successor of a selected order statistic)."""
    m = a[lo]
    for i in range(lo + 1, hi):
        if a[i] < m:
            m = a[i]
    return m


@numba.njit(cache=True, nogil=True)
def _position(n, frac, cellprofiler):
    pos = n * frac if cellprofiler else (n - 1) * frac
    lo = int(pos)
    if lo > n - 1:
        lo = n - 1
    f = pos - lo
    if lo + 1 > n - 1:
        f = 0.0
    return lo, f


@numba.njit(cache=True, nogil=True, inline="always")
def _value(sv, lut, i):
    """The i-th sorted value: sv[i], or lut[sv[i]] for sorted keys (``lut is None`` is resolved at
    compile time, so each call site compiles to a plain load)."""
    if lut is None:
        return sv[i]
    return lut[sv[i]]


@numba.njit(cache=True, nogil=True, inline="always")
def _interp_sorted(sv, lut, k, f):
    """Order statistic k of the sorted values interpolated by f toward statistic k + 1."""
    v = _value(sv, lut, k)
    if f == 0.0:
        return v
    return v * (1.0 - f) + _value(sv, lut, k + 1) * f


@numba.njit(cache=True, nogil=True)
def _sorted_quantiles(sv, lut, n, cellprofiler):
    """Q1, median, Q3 and MAD of n ascending values (``sv[:n]`` itself, or ``lut[sv[:n]]`` for
    sorted 16-bit keys), as CellProfiler: the order statistics at positions n*q (or (n-1)*q
    with ``cellprofiler`` False), linearly interpolated toward the next one."""
    km, fm = _position(n, 0.5, cellprofiler)
    k1, f1 = _position(n, 0.25, cellprofiler)
    k3, f3 = _position(n, 0.75, cellprofiler)
    med = _interp_sorted(sv, lut, km, fm)
    q1 = _interp_sorted(sv, lut, k1, f1)
    q3 = _interp_sorted(sv, lut, k3, f3)
    # k-th and (k+1)-th smallest |v - med|: the deviations below and above the median are each
    # sorted outward from it, so a two-way merge yields them in order (no second selection)
    p = 0
    while p < n and _value(sv, lut, p) < med:
        p += 1
    i = p - 1
    j = p
    dk = 0.0
    dk1 = 0.0
    for step in range(km + 2):
        if step > n - 1:
            break
        if i >= 0 and (j >= n or abs(_value(sv, lut, i) - med) <= abs(_value(sv, lut, j) - med)):
            d = abs(_value(sv, lut, i) - med)
            i -= 1
        else:
            d = abs(_value(sv, lut, j) - med)
            j += 1
        if step == km:
            dk = d
        elif step == km + 1:
            dk1 = d
    mad = dk if fm == 0.0 else dk * (1.0 - fm) + dk1 * fm
    return q1, med, q3, mad


@numba.njit(cache=True, nogil=True)
def _object_sums(image, edge_flags, ys, xs, s, e, grid_ok, f32, buf, keys, edge):
    """One pass over the object's pixels ``s:e``, skipping non-finite values.

    Fills ``buf[:cnt]`` with the finite values, ``keys[:cnt]`` with their 16-bit levels while every
    value lies on the ``k / 65535`` grid (``on_grid``), ``edge[i - s]`` with the edge flag of each
    pixel (False where non-finite). Returns (cnt, total, min, max, x and y of the first maximum,
    sum x, sum y, sum x*v, sum y*v, on_grid, edge count, edge total, edge min, edge max).
    """
    cnt = 0
    tot = 0.0
    vmin = np.inf
    vmax = -np.inf
    mx = 0
    my = 0
    sx = 0.0
    sy = 0.0
    sxi = 0.0
    syi = 0.0
    on_grid = grid_ok
    ecnt = 0
    etot = 0.0
    emin = np.inf
    emax = -np.inf
    for i in range(s, e):
        y = ys[i]
        x = xs[i]
        is_edge = edge_flags[i]
        v = np.float64(image[y, x])
        if not np.isfinite(v):
            edge[i - s] = False
            continue
        edge[i - s] = is_edge
        buf[cnt] = v
        if on_grid:
            kq = np.rint(v * 65535.0)
            c = kq / 65535.0
            if f32:
                c = np.float64(np.float32(c))
            if 0.0 <= kq <= 65535.0 and c == v:
                keys[cnt] = np.uint64(kq)
            else:
                on_grid = False
        cnt += 1
        tot += v
        if v < vmin:
            vmin = v
        if v > vmax:
            vmax = v
            mx = x
            my = y
        sx += x
        sy += y
        sxi += x * v
        syi += y * v
        if is_edge:
            ecnt += 1
            etot += v
            if v < emin:
                emin = v
            if v > emax:
                emax = v
    return cnt, tot, vmin, vmax, mx, my, sx, sy, sxi, syi, on_grid, ecnt, etot, emin, emax


@numba.njit(cache=True, nogil=True)
def _sum_sq_dev(buf, cnt, mean):
    """Sum of (buf[i] - mean)^2 over buf[:cnt]."""
    ss = 0.0
    for i in range(cnt):
        d = buf[i] - mean
        ss += d * d
    return ss


@numba.njit(cache=True, nogil=True)
def _edge_sum_sq_dev(image, ys, xs, s, e, edge, emean):
    """Sum of (v - emean)^2 over the object's edge pixels (``edge[i - s]``)."""
    ess = 0.0
    for i in range(s, e):
        if edge[i - s]:
            d = np.float64(image[ys[i], xs[i]]) - emean
            ess += d * d
    return ess


@numba.njit(cache=True, nogil=True)
def _intensity_kernel(image, edge_flags, ys, xs, offsets, cellprofiler, lut, f32, grid_ok):
    """Features (n_obj, len(FEATURES)) of one channel over the CSR pixel lists ``ys, xs,
    offsets`` (rows of objects without a finite pixel stay NaN)."""
    n_obj = offsets.shape[0] - 1
    out = np.full((n_obj, N_FEATURES), np.nan)
    max_n = 0
    for k in range(n_obj):
        if offsets[k + 1] - offsets[k] > max_n:
            max_n = offsets[k + 1] - offsets[k]
    buf = np.empty(max_n, np.float64)
    keys = np.empty(max_n, np.uint64)
    ktmp = np.empty(max_n, np.uint64)
    hist = np.empty(256, np.int64)
    edge = np.empty(max_n, np.bool_)
    fbuf = np.empty(max_n if f32 else 0, np.float32)
    for k in range(n_obj):
        s = offsets[k]
        e = offsets[k + 1]
        if e == s:
            continue
        cnt, tot, vmin, vmax, mx, my, sx, sy, sxi, syi, on_grid, ecnt, etot, emin, emax = _object_sums(
            image, edge_flags, ys, xs, s, e, grid_ok, f32, buf, keys, edge
        )
        if cnt == 0:
            continue
        mean = tot / cnt
        ss = _sum_sq_dev(buf, cnt, mean)
        emean = etot / ecnt if ecnt > 0 else 0.0
        ess = 0.0
        if ecnt > 0:
            ess = _edge_sum_sq_dev(image, ys, xs, s, e, edge, emean)
        if on_grid:
            # 16-bit data (uint16 / 65535): exact order statistics from a radix sort
            radix_sort(keys, keys, cnt, 2, ktmp, ktmp, hist, False)
            q1, med, q3, mad = _sorted_quantiles(keys, lut, cnt, cellprofiler)
        elif f32:
            # float32 data off the grid: a radix sort of the 4-byte bit patterns
            for i in range(cnt):
                fbuf[i] = np.float32(buf[i])
            bits32 = fbuf.view(np.uint32)
            order_keys(bits32, cnt, SIGN32, MASK32, keys)
            radix_sort(keys, keys, cnt, 4, ktmp, ktmp, hist, False)
            order_values(keys, cnt, SIGN32, MASK32, bits32)
            for i in range(cnt):
                buf[i] = fbuf[i]
            q1, med, q3, mad = _sorted_quantiles(buf, None, cnt, cellprofiler)
        else:
            # any other float data (held as float64): a radix sort of the 8-byte bit patterns
            # (bytes shared by all values are skipped), faster than selection on real objects
            bits64 = buf.view(np.uint64)
            order_keys(bits64, cnt, SIGN64, MASK64, keys)
            radix_sort(keys, keys, cnt, 8, ktmp, ktmp, hist, False)
            order_values(keys, cnt, SIGN64, MASK64, bits64)
            q1, med, q3, mad = _sorted_quantiles(buf, None, cnt, cellprofiler)
        cmx = sx / cnt
        cmy = sy / cnt
        if tot != 0.0:
            cix = sxi / tot
            ciy = syi / tot
        else:
            cix = np.nan
            ciy = np.nan
        row = out[k]
        row[INTEGRATED] = tot
        row[MEAN] = mean
        row[STD] = np.sqrt(ss / cnt)
        row[MIN] = vmin
        row[MAX] = vmax
        if ecnt > 0:
            row[INTEGRATED_EDGE] = etot
            row[MEAN_EDGE] = emean
            row[STD_EDGE] = np.sqrt(ess / ecnt)
            row[MIN_EDGE] = emin
            row[MAX_EDGE] = emax
        else:
            row[INTEGRATED_EDGE] = 0.0
            row[MEAN_EDGE] = 0.0
            row[STD_EDGE] = 0.0
            row[MIN_EDGE] = 0.0
            row[MAX_EDGE] = 0.0
        row[MASS_DISPLACEMENT] = np.sqrt((cmx - cix) ** 2 + (cmy - ciy) ** 2)
        row[LOWER_QUARTILE] = q1
        row[MEDIAN] = med
        row[MAD] = mad
        row[UPPER_QUARTILE] = q3
        row[CENTER_MASS_X] = cix
        row[CENTER_MASS_Y] = ciy
        row[MAX_X] = mx
        row[MAX_Y] = my
    return out


@numba.njit(cache=True, nogil=True)
def _edge_kernel(labels, ys, xs):
    H, W = labels.shape
    out = np.empty(ys.shape[0], np.bool_)
    for i in range(ys.shape[0]):
        y = ys[i]
        x = xs[i]
        lab = labels[y, x]
        out[i] = (
            (y > 0 and labels[y - 1, x] != lab)
            or (y < H - 1 and labels[y + 1, x] != lab)
            or (x > 0 and labels[y, x - 1] != lab)
            or (x < W - 1 and labels[y, x + 1] != lab)
        )
    return out


@lru_cache(maxsize=4)
def _grid_lut(dtype: np.dtype) -> np.ndarray:
    """float64 value of each 16-bit level k / 65535 as stored in an image of ``dtype``.

    The kernel recognises such values with ``k / 65535`` (rounded to float32 for float32 images);
    the table must agree with that test, which holds for float64 and float32 (both correctly
    rounded); other float types never take the 16-bit path.
    """
    return (np.arange(65536, dtype=np.float64) / 65535.0).astype(dtype).astype(np.float64)


def edge_pixels(labels: np.ndarray, index: ObjectIndex) -> np.ndarray:
    """Edge flag of every indexed pixel (aligned with ``index.ys``): an in-image 4-neighbour carries
    another label (CellProfiler / scikit-image ``find_boundaries(mode="inner")``)."""
    lab = np.ascontiguousarray(labels, dtype=np.int64)
    return _edge_kernel(lab, index.ys, index.xs)


def measure_intensity(
    image: np.ndarray,
    labels: np.ndarray,
    channel: str,
    index: ObjectIndex | None = None,
    *,
    cellprofiler_quantiles: bool = True,
    edge: np.ndarray | None = None,
) -> dict[str, np.ndarray]:
    """CellProfiler intensity + intensity-location features of one channel.

    Returns ``{"Intensity_<Feature>_<channel>" | "Location_<Feature>_<channel>": float64 array}``
    aligned with ``index.labels_present``. Objects without a finite pixel get NaN. ``edge`` takes
    :func:`edge_pixels` of the same labels/index to share it across channels.
    """
    if image.shape != labels.shape:
        raise ValueError(f"image {image.shape} and labels {labels.shape} differ in shape")
    if index is None:
        index = build_index(labels)
    img = np.ascontiguousarray(image)
    if img.dtype.kind != "f":
        img = img.astype(np.float64)
    if index.n_objects == 0:
        out = np.zeros((0, N_FEATURES))
    else:
        if edge is None:
            edge = edge_pixels(labels, index)
        elif edge.shape != index.ys.shape:
            raise ValueError("edge flags do not match the object index")
        out = _intensity_kernel(
            img,
            edge,
            index.ys,
            index.xs,
            index.offsets,
            bool(cellprofiler_quantiles),
            _grid_lut(img.dtype),
            img.dtype == np.float32,
            img.dtype in (np.float32, np.float64),
        )
    return {f"{name}_{channel}": out[:, i] for i, name in enumerate(FEATURES)}
