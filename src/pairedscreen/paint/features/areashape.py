"""AreaShape features (CellProfiler MeasureObjectSizeShape, 2-D), one numba pass per object.

Definitions follow CellProfiler 4 / cp_measure exactly (see ``benchmarks/feature_parity.md``):

- ``Area`` pixel count; ``Center_X/Y`` pixel centroid; ``BoundingBoxMinimum/Maximum_X/Y`` the
  half-open bounding box (maximum exclusive), ``BoundingBoxArea`` its area, ``Extent`` = Area / box.
- ``Perimeter``: scikit-image ``perimeter(neighborhood=4)`` of the object alone (Benkrid-Crookes
  weights on the 4-connected inner border); ``FormFactor`` = 4*pi*A/P^2,
  ``Compactness`` = P^2 / max(4*pi*A, 1).
- ``ConvexArea``: pixels whose centres lie inside or on the convex hull of the pixel-edge midpoints
  (scikit-image ``convex_hull_image``); ``Solidity`` = Area / ConvexArea.
- ``EulerNumber``: objects minus holes, 8-connected foreground (bit-quad count).
- ``MajorAxisLength``/``MinorAxisLength``/``Eccentricity``/``Orientation`` from the second central
  moments (4*sqrt(eigenvalue); orientation in degrees, scikit-image convention).
- ``MaximumRadius``/``MeanRadius``/``MedianRadius``: exact Euclidean distance of each object pixel
  to the nearest non-object pixel of the object's one-pixel-padded bounding box.
- ``MinFeretDiameter``/``MaxFeretDiameter``: caliper width / diameter of the convex hull of pixel
  centres.
- ``Zernike_n_m``: |sum over pixels of V_nm| / (pi r^2) in the minimum enclosing circle, CellProfiler
  4's pixel set exactly: centrosome's convex hull (``_convex_hull.convex_hull_ijv``: per-column
  extremes, monotone chain) and enclosing circle (``minimum_enclosing_circle``: Chrystal's algorithm,
  its circumcentre formula and operation order), then the pixels whose normalised
  ``((y - cy) / r)^2 + ((x - cx) / r)^2`` is <= 1 -- round-off puts some pixels lying on the circle a
  few ulp above 1, and CellProfiler drops them, so we do too. The polynomials (centrosome's table,
  ``z = y + i x``) are evaluated through the raw moments sum x^a y^b of the normalised coordinates
  (accumulated per image row). A one-pixel object (radius 0) gets NaN, as in CellProfiler. Where
  several hull vertices make exactly the same smallest angle, centrosome takes the one scipy's
  (unstable) argsort puts first and we the first in hull order: the same circle, its centre possibly
  a few ulp apart.

Nothing is compiled on import; kernels compile (or load from numba's cache) on first call.
"""

from __future__ import annotations

import math

import numba
import numpy as np

from ._common import _edt_1d
from .intensity import _min_range, _select
from .objects import ObjectIndex, build_index
from .zernike import (  # noqa: F401 (zernike_indexes/_lut/_monomials: public here too)
    _column_extremes,
    _cp_enclosing_circle,
    _cp_hull,
    _outline_count,
    _zernike,
    zernike_indexes,
    zernike_lut,
    zernike_monomials,
)

# Scalar feature columns of the kernel output, in order.
SCALAR_FEATURES: tuple[str, ...] = (
    "Area",
    "Perimeter",
    "FormFactor",
    "Compactness",
    "ConvexArea",
    "Solidity",
    "Extent",
    "EulerNumber",
    "Eccentricity",
    "MajorAxisLength",
    "MinorAxisLength",
    "Orientation",
    "EquivalentDiameter",
    "MinFeretDiameter",
    "MaxFeretDiameter",
    "MaximumRadius",
    "MeanRadius",
    "MedianRadius",
    "BoundingBoxArea",
    "BoundingBoxMinimum_X",
    "BoundingBoxMinimum_Y",
    "BoundingBoxMaximum_X",
    "BoundingBoxMaximum_Y",
    "Center_X",
    "Center_Y",
)
N_SCALAR = len(SCALAR_FEATURES)
# column of each scalar feature in the kernel output, named after it (numba reads these globals as
# compile-time constants); ``measure_areashape`` names the columns from SCALAR_FEATURES itself
_col = SCALAR_FEATURES.index
AREA = _col("Area")
PERIMETER = _col("Perimeter")
FORM_FACTOR = _col("FormFactor")
COMPACTNESS = _col("Compactness")
CONVEX_AREA = _col("ConvexArea")
SOLIDITY = _col("Solidity")
EXTENT = _col("Extent")
EULER_NUMBER = _col("EulerNumber")
ECCENTRICITY = _col("Eccentricity")
MAJOR_AXIS_LENGTH = _col("MajorAxisLength")
MINOR_AXIS_LENGTH = _col("MinorAxisLength")
ORIENTATION = _col("Orientation")
EQUIVALENT_DIAMETER = _col("EquivalentDiameter")
MIN_FERET_DIAMETER = _col("MinFeretDiameter")
MAX_FERET_DIAMETER = _col("MaxFeretDiameter")
MAXIMUM_RADIUS = _col("MaximumRadius")
MEAN_RADIUS = _col("MeanRadius")
MEDIAN_RADIUS = _col("MedianRadius")
BOUNDING_BOX_AREA = _col("BoundingBoxArea")
BOUNDING_BOX_MINIMUM_X = _col("BoundingBoxMinimum_X")
BOUNDING_BOX_MINIMUM_Y = _col("BoundingBoxMinimum_Y")
BOUNDING_BOX_MAXIMUM_X = _col("BoundingBoxMaximum_X")
BOUNDING_BOX_MAXIMUM_Y = _col("BoundingBoxMaximum_Y")
CENTER_X = _col("Center_X")
CENTER_Y = _col("Center_Y")
del _col


# --------------------------------------------------------------------------------------------
# geometry helpers (all exact integer arithmetic where it decides pixel membership)


@numba.njit(cache=True, nogil=True, inline="always")
def _cross(ou, ov, au, av, bu, bv):
    return (au - ou) * (bv - ov) - (av - ov) * (bu - ou)


@numba.njit(cache=True, nogil=True)
def _hull(pu, pv, n, hu, hv):
    """Andrew's monotone chain on points sorted by (u, v); CCW hull without collinear points.

    ``pu, pv`` int64 of length n, already sorted lexicographically. Writes the hull into
    ``hu, hv`` (capacity >= 2n) and returns its vertex count.
    """
    if n == 1:
        hu[0] = pu[0]
        hv[0] = pv[0]
        return 1
    k = 0
    for i in range(n):
        while k >= 2 and _cross(hu[k - 2], hv[k - 2], hu[k - 1], hv[k - 1], pu[i], pv[i]) <= 0:
            k -= 1
        hu[k] = pu[i]
        hv[k] = pv[i]
        k += 1
    lower = k + 1
    for i in range(n - 2, -1, -1):
        while k >= lower and _cross(hu[k - 2], hv[k - 2], hu[k - 1], hv[k - 1], pu[i], pv[i]) <= 0:
            k -= 1
        hu[k] = pu[i]
        hv[k] = pv[i]
        k += 1
    return k - 1  # last point repeats the first


@numba.njit(cache=True, nogil=True)
def _floor_div(a, b):
    q = a // b  # numba follows Python floor semantics for integers
    return q


@numba.njit(cache=True, nogil=True)
def _convex_area(hu, hv, nh, bh, lo, hi):
    """Count lattice points (u = 2x, v = 2y, rows y = 0..bh-1) inside or on a convex polygon.

    The polygon (doubled coordinates, clockwise in (u, v)) is exact in integers; every edge only
    bounds the rows its v-span covers (the two edges crossing a row decide its interval).
    """
    for r in range(bh):
        lo[r] = -(1 << 40)
        hi[r] = 1 << 40
    for i in range(nh):
        j = i + 1 if i + 1 < nh else 0
        du = hu[j] - hu[i]
        dv = hv[j] - hv[i]
        if dv == 0:
            continue
        # inside (clockwise polygon): cross(edge, q - p_i) <= 0  <=>  a * uq + b >= 0
        a = dv
        vmin = min(hv[i], hv[j])
        vmax = max(hv[i], hv[j])
        r0 = -((-vmin) // 2)
        r1 = vmax // 2
        if r0 < 0:
            r0 = 0
        if r1 > bh - 1:
            r1 = bh - 1
        for r in range(r0, r1 + 1):
            b = -(du * (2 * r - hv[i]) + dv * hu[i])
            if a > 0:
                # 2x >= -b / a  ->  x >= ceil(-b / (2a))
                c = -_floor_div(b, 2 * a)
                if c > lo[r]:
                    lo[r] = c
            else:
                # 2x <= b / (-a)  ->  x <= floor(b / (-2a))
                c = _floor_div(b, -2 * a)
                if c < hi[r]:
                    hi[r] = c
    total = 0
    for r in range(bh):
        if hi[r] >= lo[r]:
            total += hi[r] - lo[r] + 1
    return total


_PERIM_W = np.zeros(50, np.float64)
_PERIM_W[[5, 7, 15, 17, 25, 27]] = 1.0
_PERIM_W[[21, 33]] = math.sqrt(2.0)
_PERIM_W[[13, 23]] = (1.0 + math.sqrt(2.0)) / 2.0


# --------------------------------------------------------------------------------------------
# per-object pieces of the kernel: each takes the object's CSR slice ``s:e`` (pixels in raster
# order), its bounding box origin ``y0, x0`` and scratch buffers sized for the largest object


@numba.njit(cache=True, nogil=True)
def _scratch_sizes(offsets, bbox):
    """(largest padded box area, largest padded box side, largest pixel count) over the objects."""
    max_hw = 0
    max_h = 0
    max_n = 0
    for k in range(offsets.shape[0] - 1):
        h = bbox[k, 2] - bbox[k, 0] + 2
        w = bbox[k, 3] - bbox[k, 1] + 2
        if h * w > max_hw:
            max_hw = h * w
        if h > max_h:
            max_h = h
        if w > max_h:
            max_h = w
        nn = offsets[k + 1] - offsets[k]
        if nn > max_n:
            max_n = nn
    return max_hw, max_h, max_n


@numba.njit(cache=True, nogil=True)
def _rasterise(ys, xs, s, e, y0, x0, bh, W, mask, border, rowmin, rowmax):
    """Object mask on its one-pixel-padded box (row stride ``W``; ``border`` cleared), the
    leftmost/rightmost pixel of each box row (rowmax -1: empty row); returns the local centroid."""
    for i in range((bh + 2) * W):
        mask[i] = 0
        border[i] = 0
    for r in range(bh):
        rowmin[r] = 1 << 40
        rowmax[r] = -1
    sy = 0.0
    sx = 0.0
    for i in range(s, e):
        ly = ys[i] - y0
        lx = xs[i] - x0
        mask[(ly + 1) * W + lx + 1] = 1
        sy += ly
        sx += lx
        if lx < rowmin[ly]:
            rowmin[ly] = lx
        if lx > rowmax[ly]:
            rowmax[ly] = lx
    n = e - s
    return sy / n, sx / n


@numba.njit(cache=True, nogil=True)
def _ellipse(ys, xs, s, e, y0, x0, cyl, cxl):
    """(Eccentricity, MajorAxisLength, MinorAxisLength, Orientation in radians) from the second
    central moments (scikit-image ``regionprops`` conventions)."""
    n = e - s
    m20 = 0.0
    m02 = 0.0
    m11 = 0.0
    for i in range(s, e):
        dy = (ys[i] - y0) - cyl
        dx = (xs[i] - x0) - cxl
        m20 += dy * dy
        m02 += dx * dx
        m11 += dy * dx
    a = m20 / n
    b = m11 / n
    c = m02 / n
    half_trace = (a + c) / 2.0
    disc = math.sqrt(((c - a) / 2.0) ** 2 + b * b)
    eig_major = max(half_trace + disc, 0.0)
    eig_minor = max(half_trace - disc, 0.0)
    major = 4.0 * math.sqrt(eig_major)
    minor = 4.0 * math.sqrt(eig_minor)
    ecc = 0.0 if eig_major == 0.0 else math.sqrt(1.0 - eig_minor / eig_major)
    it00 = c
    it11 = a
    it_off = -b
    if it00 - it11 == 0.0:
        orient = math.pi / 4.0 if it_off < 0 else -math.pi / 4.0
    else:
        orient = 0.5 * math.atan2(-2.0 * it_off, it11 - it00)
    return ecc, major, minor, orient


@numba.njit(cache=True, nogil=True)
def _perimeter(ys, xs, s, e, y0, x0, W, mask, border, pw):
    """scikit-image ``perimeter(neighborhood=4)``: the 4-connected inner border (marked in
    ``border``) weighted by its neighbourhood code (Benkrid-Crookes weights ``pw``)."""
    for i in range(s, e):
        p = (ys[i] - y0 + 1) * W + (xs[i] - x0 + 1)
        if mask[p - 1] == 0 or mask[p + 1] == 0 or mask[p - W] == 0 or mask[p + W] == 0:
            border[p] = 1
    perim = 0.0
    for i in range(s, e):
        p = (ys[i] - y0 + 1) * W + (xs[i] - x0 + 1)
        if border[p]:
            code = (
                1
                + 2 * (border[p - 1] + border[p + 1] + border[p - W] + border[p + W])
                + 10 * (border[p - W - 1] + border[p - W + 1] + border[p + W - 1] + border[p + W + 1])
            )
            perim += pw[code]
    return perim


@numba.njit(cache=True, nogil=True)
def _euler_number(mask, H, W):
    """Objects minus holes, 8-connected foreground: (n1 - n3 - 2 nD) / 4 over the 2x2 quads."""
    q1 = 0
    q3 = 0
    qd = 0
    for r in range(H - 1):
        for cc in range(W - 1):
            p = r * W + cc
            a0 = mask[p]
            a1 = mask[p + 1]
            a2 = mask[p + W]
            a3 = mask[p + W + 1]
            t = a0 + a1 + a2 + a3
            if t == 1:
                q1 += 1
            elif t == 3:
                q3 += 1
            elif t == 2 and a0 == a3:
                qd += 1
    return (q1 - q3 - 2 * qd) // 4


@numba.njit(cache=True, nogil=True)
def _radii(ys, xs, s, e, y0, x0, H, W, mask, dist, f1, d1, v1, z1, radii):
    """(MaximumRadius, sum of the radii, MedianRadius): exact EDT of the object on its padded box.

    Squared vertical distance to the background by two scans per column (the padding rows are
    background), then the 1-D parabola envelope per row.
    """
    for cc in range(W):
        g = 0.0
        for r in range(H):
            p = r * W + cc
            g = g + 1.0 if mask[p] else 0.0
            dist[p] = g
        g = 0.0
        for r in range(H - 1, -1, -1):
            p = r * W + cc
            g = g + 1.0 if mask[p] else 0.0
            if g < dist[p]:
                dist[p] = g
            dist[p] = dist[p] * dist[p]
    for r in range(H):
        for cc in range(W):
            f1[cc] = dist[r * W + cc]
        _edt_1d(f1, W, d1, v1, z1)
        for cc in range(W):
            dist[r * W + cc] = d1[cc]
    n = e - s
    rmax = 0.0
    rsum = 0.0
    for i in range(s, e):
        p = (ys[i] - y0 + 1) * W + (xs[i] - x0 + 1)
        dd = math.sqrt(dist[p])
        radii[i - s] = dd
        rsum += dd
        if dd > rmax:
            rmax = dd
    # numpy.median: middle order statistic, or the mean of the two middle ones
    if n % 2 == 1:
        _select(radii, 0, n, n // 2)
        rmed = radii[n // 2]
    else:
        _select(radii, 0, n, n // 2 - 1)
        rmed = 0.5 * (radii[n // 2 - 1] + _min_range(radii, n // 2, n))
    return rmax, rsum, rmed


@numba.njit(cache=True, nogil=True)
def _convex_area_of(rowmin, rowmax, bh, pu, pv, hu, hv, clo, chi):
    """ConvexArea: pixel centres inside or on the hull of the pixel-edge midpoints.

    Hull points in doubled local coordinates (u = 2x, v = 2y): per level v only the extreme u can
    be hull vertices, and levels come in increasing v, so the points are generated already sorted
    by (v, u). The hull is built with v as the primary coordinate: counter-clockwise in (v, u),
    i.e. clockwise in (u, v), the order :func:`_convex_area` takes.
    """
    npnt = 0
    for lv in range(-1, 2 * bh):
        umin = 1 << 40
        umax = -(1 << 40)
        if lv % 2 == 0:
            r = lv // 2
            if rowmax[r] >= 0:
                umin = 2 * rowmin[r] - 1
                umax = 2 * rowmax[r] + 1
        else:
            for r in ((lv - 1) // 2, (lv + 1) // 2):
                if 0 <= r < bh and rowmax[r] >= 0:
                    if 2 * rowmin[r] < umin:
                        umin = 2 * rowmin[r]
                    if 2 * rowmax[r] > umax:
                        umax = 2 * rowmax[r]
        if umax < umin:
            continue
        pv[npnt] = lv
        pu[npnt] = umin
        npnt += 1
        if umax != umin:
            pv[npnt] = lv
            pu[npnt] = umax
            npnt += 1
    nh = _hull(pv, pu, npnt, hv, hu)
    return _convex_area(hu, hv, nh, bh, clo, chi)


@numba.njit(cache=True, nogil=True)
def _centre_hull(rowmin, rowmax, bh, pu, pv, hu, hv):
    """Convex hull of the pixel centres (row extremes, generated sorted by (row, x)) into
    ``hu`` (x) / ``hv`` (row); returns its vertex count."""
    npnt = 0
    for r in range(bh):
        if rowmax[r] < 0:
            continue
        pv[npnt] = r
        pu[npnt] = rowmin[r]
        npnt += 1
        if rowmax[r] != rowmin[r]:
            pv[npnt] = r
            pu[npnt] = rowmax[r]
            npnt += 1
    return _hull(pv, pu, npnt, hv, hu)


@numba.njit(cache=True, nogil=True)
def _feret(hu, hv, nh):
    """(MinFeretDiameter, MaxFeretDiameter): caliper width and diameter of a convex hull."""
    if nh <= 1:
        return 0.0, 0.0
    best = 0
    for i in range(nh):
        for j in range(i + 1, nh):
            d2 = (hu[i] - hu[j]) ** 2 + (hv[i] - hv[j]) ** 2
            if d2 > best:
                best = d2
    fmax = math.sqrt(best)
    if nh == 2:
        return 0.0, fmax
    fmin = np.inf
    for i in range(nh):
        j = i + 1 if i + 1 < nh else 0
        du = hu[j] - hu[i]
        dv = hv[j] - hv[i]
        worst = 0
        for q in range(nh):
            cr = abs(du * (hv[q] - hv[i]) - dv * (hu[q] - hu[i]))
            if cr > worst:
                worst = cr
        wd = worst / math.sqrt(du * du + dv * dv)
        if wd < fmin:
            fmin = wd
    return fmin, fmax


@numba.njit(cache=True, nogil=True)
def _shape_kernel(ys, xs, offsets, bbox, img_h, img_w, zc_re, zc_im, pw, want_zernike):
    """(scalar features (n_obj, len(SCALAR_FEATURES)), Zernike magnitudes (n_obj, K)) of every
    object of an :class:`ObjectIndex` (CSR pixel lists ``ys, xs, offsets``, half-open ``bbox``)."""
    n_obj = offsets.shape[0] - 1
    out = np.full((n_obj, N_SCALAR), np.nan)
    nz = zc_re.shape[0]
    zout = np.full((n_obj, nz), np.nan)
    max_hw, max_h, max_n = _scratch_sizes(offsets, bbox)
    mask = np.zeros(max_hw, np.uint8)
    border = np.zeros(max_hw, np.uint8)
    dist = np.empty(max_hw, np.float64)
    f1 = np.empty(max_h, np.float64)
    d1 = np.empty(max_h, np.float64)
    v1 = np.empty(max_h, np.int64)
    z1 = np.empty(max_h + 1, np.float64)
    radii = np.empty(max_n, np.float64)
    rowmin = np.empty(max_h, np.int64)
    rowmax = np.empty(max_h, np.int64)
    pu = np.empty(4 * max_h + 4, np.int64)
    pv = np.empty(4 * max_h + 4, np.int64)
    hu = np.empty(8 * max_h + 8, np.int64)
    hv = np.empty(8 * max_h + 8, np.int64)
    clo = np.empty(max_h, np.int64)
    chi = np.empty(max_h, np.int64)
    colmin = np.empty(max_h, np.int64)
    colmax = np.empty(max_h, np.int64)
    chi_ = np.empty(2 * max_h + 2, np.int64)
    chj = np.empty(2 * max_h + 2, np.int64)
    within = np.empty(2 * max_h + 2, np.int64)
    # centrosome's spare hull output space, carried from object to object; it never shrinks (an
    # object's hull vertices are among its outline pixels), so once it exceeds any hull's size the
    # outline need not be counted any more
    room = 0
    room_enough = 2 * max_h + 3  # more than the largest hull (2 * max_h + 2 vertices)
    deg = zc_re.shape[1] - 1
    mom = np.zeros((deg + 1, deg + 1), np.float64)
    rows = np.zeros(deg + 1, np.float64)

    for k in range(n_obj):
        s = offsets[k]
        e = offsets[k + 1]
        y0 = bbox[k, 0]
        x0 = bbox[k, 1]
        y1 = bbox[k, 2]
        x1 = bbox[k, 3]
        bh = y1 - y0
        bw = x1 - x0
        H = bh + 2
        W = bw + 2
        cyl, cxl = _rasterise(ys, xs, s, e, y0, x0, bh, W, mask, border, rowmin, rowmax)
        if want_zernike and nz > 0:
            counting = room < room_enough
            if counting:
                room += _outline_count(ys, xs, s, e, y0, x0, W, mask, img_h, img_w)
            _column_extremes(ys, xs, s, e, x0, bw, colmin, colmax)
            nch = _cp_hull(colmin, colmax, bw, x0, room, chi_, chj)
            if counting:
                room -= nch
            ccy, ccx, rad = _cp_enclosing_circle(chi_, chj, nch, within)
            _zernike(ys, xs, s, e, ccy, ccx, rad, zc_re, zc_im, mom, rows, zout[k])
        ecc, major, minor, orient = _ellipse(ys, xs, s, e, y0, x0, cyl, cxl)
        perim = _perimeter(ys, xs, s, e, y0, x0, W, mask, border, pw)
        euler = _euler_number(mask, H, W)
        rmax, rsum, rmed = _radii(ys, xs, s, e, y0, x0, H, W, mask, dist, f1, d1, v1, z1, radii)
        conv = _convex_area_of(rowmin, rowmax, bh, pu, pv, hu, hv, clo, chi)
        nh = _centre_hull(rowmin, rowmax, bh, pu, pv, hu, hv)
        fmin, fmax = _feret(hu, hv, nh)

        area = float(e - s)
        row = out[k]
        row[AREA] = area
        row[PERIMETER] = perim
        row[FORM_FACTOR] = 4.0 * math.pi * area / (perim * perim) if perim > 0 else np.inf
        row[COMPACTNESS] = perim * perim / max(4.0 * math.pi * area, 1.0)
        row[CONVEX_AREA] = conv
        row[SOLIDITY] = area / conv
        row[EXTENT] = area / (bh * bw)
        row[EULER_NUMBER] = euler
        row[ECCENTRICITY] = ecc
        row[MAJOR_AXIS_LENGTH] = major
        row[MINOR_AXIS_LENGTH] = minor
        row[ORIENTATION] = orient * (180.0 / math.pi)
        row[EQUIVALENT_DIAMETER] = math.sqrt(4.0 * area / math.pi)
        row[MIN_FERET_DIAMETER] = fmin
        row[MAX_FERET_DIAMETER] = fmax
        row[MAXIMUM_RADIUS] = rmax
        row[MEAN_RADIUS] = rsum / (e - s)
        row[MEDIAN_RADIUS] = rmed
        row[BOUNDING_BOX_AREA] = bh * bw
        row[BOUNDING_BOX_MINIMUM_X] = x0
        row[BOUNDING_BOX_MINIMUM_Y] = y0
        row[BOUNDING_BOX_MAXIMUM_X] = x1
        row[BOUNDING_BOX_MAXIMUM_Y] = y1
        row[CENTER_X] = cxl + x0
        row[CENTER_Y] = cyl + y0
    return out, zout

def measure_areashape(
    labels: np.ndarray, index: ObjectIndex | None = None, *, zernike_degree: int
) -> dict[str, np.ndarray]:
    """CellProfiler AreaShape features of every object of a 2-D label image.

    Returns ``{"AreaShape_<Feature>": float64 array}`` aligned with ``index.labels_present``
    (ascending object ids). ``zernike_degree`` < 0 skips the Zernike features.
    """
    if index is None:
        index = build_index(labels)
    degree = int(zernike_degree)
    zidx = zernike_indexes(degree) if degree >= 0 else np.zeros((0, 2), np.int64)
    zc_re, zc_im = zernike_monomials(degree) if degree >= 0 else (np.zeros((0, 1, 1)), np.zeros((0, 1, 1)))
    if index.n_objects == 0:
        out = np.zeros((0, N_SCALAR))
        zout = np.zeros((0, zidx.shape[0]))
    else:
        out, zout = _shape_kernel(
            index.ys, index.xs, index.offsets, index.bbox, index.shape[0], index.shape[1], zc_re, zc_im,
            _PERIM_W, degree >= 0
        )
    res = {f"AreaShape_{name}": out[:, i] for i, name in enumerate(SCALAR_FEATURES)}
    for t, (n, m) in enumerate(zidx):
        res[f"AreaShape_Zernike_{n}_{m}"] = zout[:, t]
    return res
