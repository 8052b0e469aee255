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
- ``Zernike_n_m``: |sum over pixels of V_nm| / (pi r^2) inside the minimum enclosing circle of the
  pixel centres (centrosome's polynomial table and ``z = y + i x`` convention).

Nothing is compiled on import; kernels compile (or load from numba's cache) on first call.
"""

from __future__ import annotations

import math
from functools import lru_cache

import numba
import numpy as np

from .objects import ObjectIndex, build_index

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
_NS = len(SCALAR_FEATURES)


@lru_cache(maxsize=8)
def zernike_indexes(degree: int) -> np.ndarray:
    """(n, m) pairs for n = 0..degree, m = n%2..n step 2 (CellProfiler's order), int64 (K, 2)."""
    out = [(n, m) for n in range(degree + 1) for m in range(n % 2, n + 1, 2)]
    return np.array(out, dtype=np.int64).reshape(-1, 2)


@lru_cache(maxsize=8)
def zernike_lut(degree: int) -> np.ndarray:
    """Radial-polynomial coefficients (centrosome ``construct_zernike_lookuptable``), Horner order."""
    idx = zernike_indexes(degree)
    f = [math.factorial(i) for i in range(degree + 1)]
    lut = np.zeros((idx.shape[0], degree // 2 + 1), dtype=np.float64)
    for row, (n, m) in enumerate(idx):
        alt = 1.0
        for k in range((n - m) // 2 + 1):
            lut[row, k] = alt * f[n - k] / (f[k] * f[(n + m) // 2 - k] * f[(n - m) // 2 - k])
            alt = -alt
    return lut


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
def _sort_points(pu, pv, n):
    """Insertion-free lexicographic sort of (u, v) int64 point arrays in place (via argsort)."""
    key = pu[:n] * 4194304 + pv[:n]
    order = np.argsort(key, kind="mergesort")
    su = pu[:n][order]
    sv = pv[:n][order]
    pu[:n] = su
    pv[:n] = sv


@numba.njit(cache=True, nogil=True)
def _floor_div(a, b):
    q = a // b  # numba follows Python floor semantics for integers
    return q


@numba.njit(cache=True, nogil=True)
def _convex_area(hu, hv, nh, y0, y1):
    """Count lattice points (u=2x, v=2y) inside or on the CCW hull given in doubled coordinates."""
    total = 0
    for y in range(y0, y1):
        vq = 2 * y
        lo = -(1 << 40)
        hi = 1 << 40
        ok = True
        for i in range(nh):
            j = i + 1 if i + 1 < nh else 0
            du = hu[j] - hu[i]
            dv = hv[j] - hv[i]
            # cross(edge, q - p_i) >= 0  <=>  A*uq + B >= 0
            a = -dv
            b = du * (vq - hv[i]) + dv * hu[i]
            if a > 0:
                # 2x >= -b / a  ->  x >= ceil(-b / (2a))
                c = -_floor_div(b, 2 * a)
                if c > lo:
                    lo = c
            elif a < 0:
                # 2x <= b / (-a)  ->  x <= floor(b / (-2a))
                c = _floor_div(b, -2 * a)
                if c < hi:
                    hi = c
            elif b < 0:
                ok = False
                break
        if ok and hi >= lo:
            total += hi - lo + 1
    return total


@numba.njit(cache=True, nogil=True)
def _circle2(ay, ax, by, bx):
    return 0.5 * (ay + by), 0.5 * (ax + bx)


@numba.njit(cache=True, nogil=True)
def _circle3(ay, ax, by, bx, cy, cx):
    d = 2.0 * (ax * (by - cy) + bx * (cy - ay) + cx * (ay - by))
    if d == 0.0:
        # collinear: circle on the farthest pair
        dab = (ay - by) ** 2 + (ax - bx) ** 2
        dac = (ay - cy) ** 2 + (ax - cx) ** 2
        dbc = (by - cy) ** 2 + (bx - cx) ** 2
        if dab >= dac and dab >= dbc:
            return _circle2(ay, ax, by, bx)
        if dac >= dbc:
            return _circle2(ay, ax, cy, cx)
        return _circle2(by, bx, cy, cx)
    a2 = ay * ay + ax * ax
    b2 = by * by + bx * bx
    c2 = cy * cy + cx * cx
    x = (a2 * (by - cy) + b2 * (cy - ay) + c2 * (ay - by)) / d
    y = (a2 * (cx - bx) + b2 * (ax - cx) + c2 * (bx - ax)) / d
    return y, x


@numba.njit(cache=True, nogil=True, inline="always")
def _outside(py, px, cy, cx, r2):
    d2 = (py - cy) ** 2 + (px - cx) ** 2
    return d2 > r2 * (1.0 + 1e-12) + 1e-9


@numba.njit(cache=True, nogil=True)
def _min_enclosing_circle(py, px, n):
    """Minimum enclosing circle of n points (incremental Welzl, deterministic order)."""
    cy = py[0]
    cx = px[0]
    r2 = 0.0
    for i in range(1, n):
        if _outside(py[i], px[i], cy, cx, r2):
            cy = py[i]
            cx = px[i]
            r2 = 0.0
            for j in range(i):
                if _outside(py[j], px[j], cy, cx, r2):
                    cy, cx = _circle2(py[i], px[i], py[j], px[j])
                    r2 = (py[i] - cy) ** 2 + (px[i] - cx) ** 2
                    for k in range(j):
                        if _outside(py[k], px[k], cy, cx, r2):
                            cy, cx = _circle3(py[i], px[i], py[j], px[j], py[k], px[k])
                            r2 = (py[i] - cy) ** 2 + (px[i] - cx) ** 2
    # radius = farthest point from the centre, so every point is inside by construction
    r2 = 0.0
    for i in range(n):
        d2 = (py[i] - cy) ** 2 + (px[i] - cx) ** 2
        if d2 > r2:
            r2 = d2
    return cy, cx, math.sqrt(r2)


@numba.njit(cache=True, nogil=True)
def _edt_1d(f, n, d, v, z):
    """Felzenszwalb-Huttenlocher 1-D squared distance transform of f[:n] into d[:n]."""
    k = 0
    v[0] = 0
    z[0] = -np.inf
    z[1] = np.inf
    for q in range(1, n):
        s = ((f[q] + q * q) - (f[v[k]] + v[k] * v[k])) / (2.0 * q - 2.0 * v[k])
        while s <= z[k]:
            k -= 1
            s = ((f[q] + q * q) - (f[v[k]] + v[k] * v[k])) / (2.0 * q - 2.0 * v[k])
        k += 1
        v[k] = q
        z[k] = s
        z[k + 1] = np.inf
    k = 0
    for q in range(n):
        while z[k + 1] < q:
            k += 1
        d[q] = (q - v[k]) * (q - v[k]) + f[v[k]]


_PERIM_W = np.zeros(50, np.float64)
_PERIM_W[[5, 7, 15, 17, 25, 27]] = 1.0
_PERIM_W[[21, 33]] = math.sqrt(2.0)
_PERIM_W[[13, 23]] = (1.0 + math.sqrt(2.0)) / 2.0


@numba.njit(cache=True, nogil=True)
def _shape_kernel(ys, xs, offsets, bbox, zidx, zlut, pw, want_zernike):
    n_obj = offsets.shape[0] - 1
    out = np.full((n_obj, 25), np.nan)
    nz = zidx.shape[0]
    zout = np.full((n_obj, nz), np.nan)
    # scratch sized for the largest object
    max_hw = 0
    max_h = 0
    max_n = 0
    for k in range(n_obj):
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
    pu = np.empty(6 * max_h, np.int64)
    pv = np.empty(6 * max_h, np.int64)
    hu = np.empty(12 * max_h + 2, np.int64)
    hv = np.empty(12 * max_h + 2, np.int64)
    fy = np.empty(2 * max_h + 2, np.float64)
    fx = np.empty(2 * max_h + 2, np.float64)
    mmax = 0
    for t in range(nz):
        if zidx[t, 1] > mmax:
            mmax = zidx[t, 1]
    zre = np.empty(mmax + 1, np.float64)
    zim = np.empty(mmax + 1, np.float64)
    sre = np.zeros(nz, np.float64)
    sim = np.zeros(nz, np.float64)

    for k in range(n_obj):
        s = offsets[k]
        e = offsets[k + 1]
        n = e - s
        y0 = bbox[k, 0]
        x0 = bbox[k, 1]
        y1 = bbox[k, 2]
        x1 = bbox[k, 3]
        bh = y1 - y0
        bw = x1 - x0
        H = bh + 2
        W = bw + 2
        for i in range(H * W):
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
        cyl = sy / n
        cxl = sx / n
        # second central moments (local frame)
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

        # perimeter (4-connected inner border, Benkrid-Crookes weights)
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

        # Euler number, 8-connected foreground: (n1 - n3 - 2 nD) / 4 over 2x2 quads
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
        euler = (q1 - q3 - 2 * qd) // 4

        # exact EDT on the padded box: columns then rows
        big = 1e12
        for i in range(H * W):
            dist[i] = big if mask[i] else 0.0
        for cc in range(W):
            for r in range(H):
                f1[r] = dist[r * W + cc]
            _edt_1d(f1, H, d1, v1, z1)
            for r in range(H):
                dist[r * W + cc] = d1[r]
        for r in range(H):
            for cc in range(W):
                f1[cc] = dist[r * W + cc]
            _edt_1d(f1, W, d1, v1, z1)
            for cc in range(W):
                dist[r * W + cc] = d1[cc]
        rmax = 0.0
        rsum = 0.0
        for i in range(s, e):
            p = (ys[i] - y0 + 1) * W + (xs[i] - x0 + 1)
            dd = math.sqrt(dist[p])
            radii[i - s] = dd
            rsum += dd
            if dd > rmax:
                rmax = dd
        rr = np.sort(radii[:n])
        if n % 2 == 1:
            rmed = rr[n // 2]
        else:
            rmed = 0.5 * (rr[n // 2 - 1] + rr[n // 2])

        # convex area: hull of pixel-edge midpoints, doubled coordinates (u = 2x, v = 2y)
        npnt = 0
        for r in range(bh):
            if rowmax[r] < 0:
                continue
            yy = 2 * (r + y0)
            for side in range(2):
                xx = 2 * ((rowmin[r] if side == 0 else rowmax[r]) + x0)
                pu[npnt] = xx
                pv[npnt] = yy - 1
                pu[npnt + 1] = xx
                pv[npnt + 1] = yy + 1
                pu[npnt + 2] = xx - 1 if side == 0 else xx + 1
                pv[npnt + 2] = yy
                npnt += 3
        _sort_points(pu, pv, npnt)
        nh = _hull(pu, pv, npnt, hu, hv)
        conv = _convex_area(hu, hv, nh, y0, y1)

        # Feret diameters: hull of pixel centres (row extremes)
        npnt = 0
        for r in range(bh):
            if rowmax[r] < 0:
                continue
            pu[npnt] = rowmin[r]
            pv[npnt] = r
            npnt += 1
            if rowmax[r] != rowmin[r]:
                pu[npnt] = rowmax[r]
                pv[npnt] = r
                npnt += 1
        _sort_points(pu, pv, npnt)
        nh = _hull(pu, pv, npnt, hu, hv)
        if nh <= 1:
            fmin = 0.0
            fmax = 0.0
        else:
            best = 0
            for i in range(nh):
                for j in range(i + 1, nh):
                    d2 = (hu[i] - hu[j]) ** 2 + (hv[i] - hv[j]) ** 2
                    if d2 > best:
                        best = d2
            fmax = math.sqrt(best)
            if nh == 2:
                fmin = 0.0
            else:
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

        # Zernike moments within the minimum enclosing circle of the pixel centres
        if want_zernike and nz > 0:
            for i in range(nh):
                fy[i] = hv[i]
                fx[i] = hu[i]
            ccy, ccx, rad = _min_enclosing_circle(fy, fx, nh)
            if rad > 0.0:
                for t in range(nz):
                    sre[t] = 0.0
                    sim[t] = 0.0
                inv = 1.0 / rad
                for i in range(s, e):
                    ym = ((ys[i] - y0) - ccy) * inv
                    xm = ((xs[i] - x0) - ccx) * inv
                    r2 = ym * ym + xm * xm
                    zre[0] = 1.0
                    zim[0] = 0.0
                    for m in range(1, mmax + 1):
                        zre[m] = zre[m - 1] * ym - zim[m - 1] * xm
                        zim[m] = zre[m - 1] * xm + zim[m - 1] * ym
                    for t in range(nz):
                        zn = zidx[t, 0]
                        zm = zidx[t, 1]
                        acc = 0.0
                        for q in range((zn - zm) // 2 + 1):
                            acc = acc * r2 + zlut[t, q]
                        sre[t] += acc * zre[zm]
                        sim[t] += acc * zim[zm]
                area_c = math.pi * rad * rad
                for t in range(nz):
                    zout[k, t] = math.sqrt(sre[t] * sre[t] + sim[t] * sim[t]) / area_c

        area = float(n)
        out[k, 0] = area
        out[k, 1] = perim
        out[k, 2] = 4.0 * math.pi * area / (perim * perim) if perim > 0 else np.inf
        out[k, 3] = perim * perim / max(4.0 * math.pi * area, 1.0)
        out[k, 4] = conv
        out[k, 5] = area / conv
        out[k, 6] = area / (bh * bw)
        out[k, 7] = euler
        out[k, 8] = ecc
        out[k, 9] = major
        out[k, 10] = minor
        out[k, 11] = orient * (180.0 / math.pi)
        out[k, 12] = math.sqrt(4.0 * area / math.pi)
        out[k, 13] = fmin
        out[k, 14] = fmax
        out[k, 15] = rmax
        out[k, 16] = rsum / n
        out[k, 17] = rmed
        out[k, 18] = bh * bw
        out[k, 19] = x0
        out[k, 20] = y0
        out[k, 21] = x1
        out[k, 22] = y1
        out[k, 23] = cxl + x0
        out[k, 24] = cyl + y0
    return out, zout


def measure_areashape(
    labels: np.ndarray, index: ObjectIndex | None = None, zernike_degree: int = 9
) -> dict[str, np.ndarray]:
    """CellProfiler AreaShape features of every object of a 2-D label image.

    Returns ``{"AreaShape_<Feature>": float64 array}`` aligned with ``index.labels_present``
    (ascending object ids). ``zernike_degree`` < 0 skips the Zernike features.
    """
    if index is None:
        index = build_index(labels)
    degree = int(zernike_degree)
    zidx = zernike_indexes(degree) if degree >= 0 else np.zeros((0, 2), np.int64)
    zlut = zernike_lut(degree) if degree >= 0 else np.zeros((0, 1), np.float64)
    if index.n_objects == 0:
        out = np.zeros((0, _NS))
        zout = np.zeros((0, zidx.shape[0]))
    else:
        out, zout = _shape_kernel(
            index.ys, index.xs, index.offsets, index.bbox, zidx, zlut, _PERIM_W, degree >= 0
        )
    res = {f"AreaShape_{name}": out[:, i] for i, name in enumerate(SCALAR_FEATURES)}
    for t, (n, m) in enumerate(zidx):
        res[f"AreaShape_Zernike_{n}_{m}"] = zout[:, t]
    return res
