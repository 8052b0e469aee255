"""Zernike moments of the AreaShape family (CellProfiler MeasureObjectSizeShape, 2-D): the polynomial
tables (centrosome's radial lookup table and ``z = y + i x`` convention, as real/imaginary monomial
coefficients) and the numba pieces of CellProfiler 4's pixel set: centrosome's convex hull (per-column
extremes, monotone chain), its minimum enclosing circle (Chrystal's algorithm) and the ``r^2 <= 1`` cut,
then the moments themselves. :mod:`pairedscreen.paint.features.areashape` calls them from its one pass
per object (see its docstring for the definitions)."""

from __future__ import annotations

import math
from functools import lru_cache

import numba
import numpy as np


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


@lru_cache(maxsize=8)
def zernike_monomials(degree: int) -> tuple[np.ndarray, np.ndarray]:
    """Zernike polynomials as real/imaginary monomial coefficients ``C[t, a, b]`` of x^a y^b.

    V_t = sum_k lut[t, k] (x^2 + y^2)^(K - k) (y + i x)^m with K = (n - m) / 2: centrosome's
    radial table and ``z = y + i x`` convention, expanded with binomials.
    """
    idx = zernike_indexes(degree)
    lut = zernike_lut(degree)
    cre = np.zeros((idx.shape[0], degree + 1, degree + 1))
    cim = np.zeros_like(cre)
    ipow = [(1, 0), (0, 1), (-1, 0), (0, -1)]  # i^q as (real, imag)
    for t, (n, m) in enumerate(idx):
        kk = (n - m) // 2
        for k in range(kk + 1):
            j = kk - k
            for p in range(j + 1):
                for q in range(m + 1):
                    c = lut[t, k] * math.comb(j, p) * math.comb(m, q)
                    a = 2 * p + q
                    b = 2 * (j - p) + m - q
                    re, im = ipow[q % 4]
                    cre[t, a, b] += c * re
                    cim[t, a, b] += c * im
    return cre, cim




# ---------------------------------------------------------------------------------------------
# CellProfiler's Zernike pixel set: centrosome's convex hull, enclosing circle and r^2 <= 1 cut


@numba.njit(cache=True, nogil=True)
def _column_extremes(ys, xs, s, e, x0, bw, colmin, colmax):
    """Topmost / bottommost pixel row of each box column (colmax -1: empty column)."""
    for c in range(bw):
        colmin[c] = 1 << 40
        colmax[c] = -1
    for i in range(s, e):
        c = xs[i] - x0
        if ys[i] < colmin[c]:
            colmin[c] = ys[i]
        if ys[i] > colmax[c]:
            colmax[c] = ys[i]


@numba.njit(cache=True, nogil=True)
def _outline_count(ys, xs, s, e, y0, x0, W, mask, img_h, img_w):
    """Pixels of centrosome's ``outline``: an 8-neighbour outside the object, or on the image edge."""
    n = 0
    for i in range(s, e):
        y = ys[i]
        x = xs[i]
        if y == 0 or x == 0 or y == img_h - 1 or x == img_w - 1:
            n += 1
            continue
        p = (y - y0 + 1) * W + (x - x0 + 1)
        if (mask[p - W - 1] == 0 or mask[p - W] == 0 or mask[p - W + 1] == 0 or mask[p - 1] == 0
                or mask[p + 1] == 0 or mask[p + W - 1] == 0 or mask[p + W] == 0 or mask[p + W + 1] == 0):
            n += 1
    return n


@numba.njit(cache=True, nogil=True, inline="always")
def _cp_convex(ai, aj, bi, bj, ci, cj):
    """centrosome ``_convex_hull.CONVEX``: does a -> b -> c turn left (with its end-of-chain U-turn rule)?"""
    cross = (bj - aj) * (ci - bi) - (cj - bj) * (bi - ai)
    if cross > 0:
        return True
    if cross < 0:
        return False
    return bj > aj and bj > cj


@numba.njit(cache=True, nogil=True)
def _cp_emit(hi, hj, n, pi, pj):
    """Pop the emitted points that ``(pi, pj)`` makes non-convex; returns the new count."""
    while n >= 2 and not _cp_convex(hi[n - 2], hj[n - 2], hi[n - 1], hj[n - 1], pi, pj):
        n -= 1
    return n


@numba.njit(cache=True, nogil=True)
def _cp_hull(colmin, colmax, bw, x0, room, hi, hj):
    """centrosome ``_convex_hull.convex_hull_ijv`` for one object: vertices (row ``hi``, column ``hj``)
    counter-clockwise from the lowest row of the first column; returns their count. ``room`` is the C
    code's free output space (outline pixels of this and earlier objects minus earlier hull points),
    which can drop a point of the upper chain."""
    n = 0
    for c in range(bw):
        if colmax[c] >= 0:
            n = _cp_emit(hi, hj, n, colmin[c], c + x0)
            hi[n] = colmin[c]
            hj[n] = c + x0
            n += 1
    for c in range(bw - 1, 0, -1):
        if colmax[c] >= 0:
            n = _cp_emit(hi, hj, n, colmax[c], c + x0)
            if room > n:
                hi[n] = colmax[c]
                hj[n] = c + x0
                n += 1
    n = _cp_emit(hi, hj, n, colmax[0], x0)
    if colmin[0] != colmax[0]:
        hi[n] = colmax[0]
        hj[n] = x0
        n += 1
    return n


@numba.njit(cache=True, nogil=True)
def _cp_circumcircle(i0, j0, i1, j1, iv, jv):
    """centrosome's circumcentre formula (its operation order) and radius to the first point."""
    sq0 = i0 * i0 + j0 * j0
    sq1 = i1 * i1 + j1 * j1
    sqv = iv * iv + jv * jv
    d = 2 * (j0 * (i1 - iv) + j1 * (iv - i0) + jv * (i0 - i1))
    cx = (sq0 * (i1 - iv) + sq1 * (iv - i0) + sqv * (i0 - i1)) / d
    cy = (sq0 * (jv - j1) + sq1 * (j0 - jv) + sqv * (j1 - j0)) / d
    return cy, cx, math.sqrt((i0 - cy) ** 2 + (j0 - cx) ** 2)


@numba.njit(cache=True, nogil=True)
def _cp_enclosing_circle(hi, hj, nh, within):
    """centrosome ``minimum_enclosing_circle`` of one hull, in its float arithmetic: (row, column,
    radius). Chrystal's algorithm: S = the first two vertices; the vertex V of smallest angle S0-V-S1
    (the first of equal ones) either closes the circle (diameter S, or circumcircle of S0, S1, V) or
    replaces the end of S at an obtuse angle."""
    if nh == 1:
        return float(hi[0]), float(hj[0]), 0.0
    if nh == 2:
        cy = (hi[0] + hi[1]) / 2
        cx = (hj[0] + hj[1]) / 2
        return cy, cx, math.sqrt((cy - hi[0]) ** 2 + (cx - hj[0]) ** 2)
    half_pi = math.pi / 2
    for k in range(nh):
        within[k] = k
    s0 = 0
    s1 = 1
    while True:
        s01i = float(hi[s0] - hi[s1])
        s01j = float(hj[s0] - hj[s1])
        n01 = s01i ** 2 + s01j ** 2
        best = -1
        best_ang = np.inf
        best_a1 = 0.0
        best_a0 = 0.0
        for v in range(nh):
            if within[v] < 2:
                continue
            vs0i = float(hi[v] - hi[s0])
            vs0j = float(hj[v] - hj[s0])
            vs1i = float(hi[v] - hi[s1])
            vs1j = float(hj[v] - hj[s1])
            a1 = abs(math.acos((s01i * vs1i + s01j * vs1j) / math.sqrt(n01 * (vs1i ** 2 + vs1j ** 2))))
            a0 = abs(math.acos((-s01i * vs0i + -s01j * vs0j) / math.sqrt(n01 * (vs0i ** 2 + vs0j ** 2))))
            ang = math.pi - a1 - a0
            if ang < best_ang:
                best_ang = ang
                best = v
                best_a1 = a1
                best_a0 = a0
        if best < 0 or best_ang >= half_pi:
            return ((float(hi[s0]) + float(hi[s1])) / 2, (float(hj[s0]) + float(hj[s1])) / 2,
                    math.sqrt(n01) / 2)
        if best_a1 <= half_pi and best_a0 <= half_pi and best_ang <= half_pi:
            return _cp_circumcircle(float(hi[s0]), float(hj[s0]), float(hi[s1]), float(hj[s1]),
                                    float(hi[best]), float(hj[best]))
        if best_a0 > half_pi:
            within[s0] = within[best]
            s0 = best
            within[best] = 0
        else:
            within[s1] = within[best]
            s1 = best
            within[best] = 1


@numba.njit(cache=True, nogil=True)
def _zernike(ys, xs, s, e, cy, cx, rad, zc_re, zc_im, mom, rows, zrow):
    """Zernike magnitudes of one object into ``zrow`` (left NaN for a zero radius) in the circle
    (row ``cy``, column ``cx``, radius ``rad``): centrosome's normalised coordinates (y - cy) / rad,
    (x - cx) / rad of the pixels with r^2 <= 1 (those on the circle whose r^2 rounds above 1 are left
    out, as in CellProfiler), through their raw moments accumulated per image row."""
    if not rad > 0.0:
        return
    deg = zc_re.shape[1] - 1
    for a in range(deg + 1):
        for b in range(deg + 1):
            mom[a, b] = 0.0
        rows[a] = 0.0
    cur = ys[s]
    ym = (cur - cy) / rad
    for i in range(s, e + 1):
        if i == e or ys[i] != cur:
            py = 1.0
            for b in range(deg + 1):
                for a in range(deg + 1 - b):
                    mom[a, b] += rows[a] * py
                py *= ym
            if i == e:
                break
            cur = ys[i]
            ym = (cur - cy) / rad
            for a in range(deg + 1):
                rows[a] = 0.0
        xm = (xs[i] - cx) / rad
        if xm * xm + ym * ym > 1.0:
            continue
        px = 1.0
        for a in range(deg + 1):
            rows[a] += px
            px *= xm
    area_c = rad * rad * math.pi
    for t in range(zc_re.shape[0]):
        re = 0.0
        im = 0.0
        for a in range(deg + 1):
            for b in range(deg + 1 - a):
                re += zc_re[t, a, b] * mom[a, b]
                im += zc_im[t, a, b] * mom[a, b]
        zrow[t] = math.sqrt(re * re + im * im) / area_c
