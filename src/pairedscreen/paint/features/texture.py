"""Haralick texture per object (CellProfiler MeasureTexture, ``Texture_*`` features).

Definition (CellProfiler 4.2.8 / cp_measure 0.3 ``measuretexture.get_texture``, values from
``mahotas.features.haralick(crop, distance=scale, ignore_zeros=True)``):

1. Quantise the whole image once with ``skimage.util.img_as_ubyte`` (float in [0, 1]:
   ``rint(v * 255)`` computed in the image's float type, half to even); for ``levels != 256`` the
   uint8 value ``u`` is rescaled to ``int(u / 255 * (levels - 1))`` (truncation). Nothing is
   stretched per object or per image.
2. Per object, the crop of its bounding box holds its own quantised values and 0 elsewhere
   (background and other objects). For each of the 4 directions ``(dy, dx)`` = (0, 1), (1, 1),
   (1, 0), (1, -1) (``_00`` .. ``_03``) times ``scale``, every pixel pair (p, p + d) inside the
   crop is counted symmetrically into the grey-level co-occurrence matrix (GLCM); pairs touching
   grey level 0 are dropped (``ignore_zeros``).
3. The 13 features are mahotas' (``preserve_haralick_bug=False``, ``use_x_minus_y_variance=False``),
   with the GLCM sized ``max(object grey level) + 1`` -- which matters for DifferenceVariance
   (variance of the length-``fm1`` vector ``P(|i-j|)``).
4. If any direction has no valid pair (object too thin/small for the scale, or all pixels quantise
   to 0), all 52 values of the object at that scale are NaN, like mahotas raising and cp_measure
   catching it.

Implementation: per object the quantised pixels are scattered into a bbox crop once for all
scales; per scale one pass over the object's row spans counts the pairs of all 4 directions,
branch-free, each into its own table indexed by the unordered grey-level pair (pairs with level 0
land in the table's row 0: their number is that row's sum, and they are not listed), whose
touched cells are listed (per direction in that direction's scan order) and cleared afterwards.
The symmetric GLCM has that count in both cells (twice on the diagonal). Features are reduced
from the touched cells and O(levels) integer marginals (one loop of independent accumulators),
never the dense 256x256 matrix, and every ``p log2 p`` is
``c (log2 T - log2 c) / T`` with ``log2`` of integer counts from a table. The pass over the
touched cells is branch-free, and DifferenceVariance's run of identical terms past the largest
|i-j| is added binade by binade (:func:`_add_repeated`), with the bits of the plain loop.

Deliberate numerical difference (the only parity exception): InfoMeas2 uses HXY2 = 2 * HX, exact
for the symmetric GLCM (px == py), instead of mahotas' O(levels^2) outer-product sum. Where the
GLCM is exactly the product of its marginals (e.g. a two-level object with independent pairs),
``1 - exp(-2 * (HXY2 - H))`` is a rounding residual and ``sqrt`` turns a ~1e-16 difference into
an absolute ~1e-7 difference against mahotas' 0 (cp_measure's own numba backend has the same
residual); parity for InfoMeas2 is therefore checked with ``atol=1e-6`` in addition to ``rtol``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numba
import numpy as np

from .objects import ObjectIndex, build_index

F_HARALICK = (
    "AngularSecondMoment",
    "Contrast",
    "Correlation",
    "Variance",
    "InverseDifferenceMoment",
    "SumAverage",
    "SumVariance",
    "SumEntropy",
    "Entropy",
    "DifferenceVariance",
    "DifferenceEntropy",
    "InfoMeas1",
    "InfoMeas2",
)
N_HARALICK = len(F_HARALICK)
# position of each feature along the kernel output's last axis (compile-time constants in numba)
_col = F_HARALICK.index
ANGULAR_SECOND_MOMENT = _col("AngularSecondMoment")
CONTRAST = _col("Contrast")
CORRELATION = _col("Correlation")
VARIANCE = _col("Variance")
INVERSE_DIFFERENCE_MOMENT = _col("InverseDifferenceMoment")
SUM_AVERAGE = _col("SumAverage")
SUM_VARIANCE = _col("SumVariance")
SUM_ENTROPY = _col("SumEntropy")
ENTROPY = _col("Entropy")
DIFFERENCE_VARIANCE = _col("DifferenceVariance")
DIFFERENCE_ENTROPY = _col("DifferenceEntropy")
INFO_MEAS1 = _col("InfoMeas1")
INFO_MEAS2 = _col("InfoMeas2")
del _col
# (dy, dx) per direction, mahotas ``_2d_deltas`` order (CellProfiler _00.._03)
_DELTAS = np.array([[0, 1], [1, 1], [1, 0], [1, -1]], np.int64)
N_DIRECTIONS = _DELTAS.shape[0]


@numba.njit(cache=True, nogil=True, error_model="numpy")
def _quantize(image, ys, xs, levels, scale255):
    """Grey levels of the listed pixels of a C-contiguous image: img_as_ubyte, then the optional
    0..levels-1 rescale (branch-free clip to [0, 255]).

    Returns (levels, ok); ok is False when a pixel lies outside [-1, 1], where img_as_ubyte raises.
    """
    n = ys.shape[0]
    out = np.empty(n, np.int32)
    w = np.uint64(image.shape[1])
    flat = image.ravel()
    ok = True
    for i in range(n):
        x = flat[np.uint64(ys[i]) * w + np.uint64(xs[i])]  # unsigned flat index: no wrap-around test
        ok &= -1.0 <= x <= 1.0
        v = x * scale255  # in the image's float type, like img_as_ubyte
        r = min(max(np.rint(v), 0.0), 255.0)
        u = int(r)
        if levels != 256:
            u = int((u - 0.0) / 255.0 * (levels - 1.0) + 0.0)
        out[i] = u
    return out, ok


@numba.njit(cache=True, nogil=True, error_model="numpy", inline="always")
def _fill_crop(q, ys, xs, s, e, y0, x0, h, w, crop, rowlo, rowend, runs):
    """Scatter the object's grey levels into its bbox crop (row stride ``w``), record each crop
    row's first column and one past its last (``rowlo``/``rowend``, an empty row has ``w``/0) and
    the object's runs of consecutive pixels, ``runs[n] = (row, first column, one past the last)``
    in raster order (CSR pixels are raster-ordered); returns (GLCM size ``max level + 1``, number
    of runs)."""
    fm1 = 1
    for i in range(s, e):
        v = q[i]
        crop[(ys[i] - y0) * w + xs[i] - x0] = v
        if v + 1 > fm1:
            fm1 = v + 1
    for r in range(h):
        rowlo[r] = w
        rowend[r] = 0
    nr = -1
    for i in range(s, e):
        r = ys[i] - y0
        c = xs[i] - x0
        rowlo[r] = min(rowlo[r], c)
        rowend[r] = max(rowend[r], c + 1)
        if nr < 0 or runs[nr, 0] != r or runs[nr, 2] != c:
            nr += 1
            runs[nr, 0] = r
            runs[nr, 1] = c
        runs[nr, 2] = c + 1
    return fm1, nr + 1


@numba.njit(cache=True, nogil=True, error_model="numpy", inline="always")
def _bump(a, b, stride, cnt, touched, nt, lomin):
    """Count the pair (a, b) in ``cnt[min * stride + max]``, listing a newly touched cell with
    ``min >= lomin`` in ``touched`` as ``min * 256 + max``; returns the new number of listed cells
    (branch-free)."""
    lo = min(a, b)
    hi = max(a, b)
    at = lo * stride + hi
    v = cnt[at]
    touched[nt] = lo * 256 + hi
    cnt[at] = v + 1
    return nt + ((v == 0) & (lo >= lomin))


@numba.njit(cache=True, nogil=True, error_model="numpy", inline="always")
def _count_span(crop, base, base2, lo, hi, stride, cnt, touched, nt, lomin):
    """Pairs (crop[base + c], crop[base2 + c]) for c in [lo, hi) of one direction."""
    for c in range(lo, hi):
        nt = _bump(crop[base + c], crop[base2 + c], stride, cnt, touched, nt, lomin)
    return nt


@numba.njit(cache=True, nogil=True, error_model="numpy")
def _count_pairs(crop, rowlo, rowend, runs, nruns, h, w, dist, stride, cnt, touched, nts, nbumps, lomin):
    """Co-occurrence counts of the 4 offsets ``_DELTAS * dist`` at once: ``cnt[d, min * stride +
    max]`` per unordered grey-level pair (``stride`` = the object's GLCM size, so each table in
    use is ``stride**2`` counts), the touched cells of direction d listed in ``touched[d]`` as
    ``min * 256 + max`` and counted in ``nts[d]``.

    One pass over the object's runs (:func:`_fill_crop`; ``w`` is the crop's row stride). Per run and
    direction, the columns whose second pixel lies within the row span (first to last object
    column) of its row: a pair whose first pixel is outside the object (a hole between runs) or
    whose second pixel is outside the row span has a 0 and is not visited at all. Where all 4
    directions have pairs the 4 counts are made in the same step (4 independent chains), the
    columns only some directions have before and after it. Each direction still visits its pairs
    row by row, column by column, so its listed cells (hence every later sum) are in the same
    order as a scan of that direction alone. The pairs visited with a 0 (a pixel quantised to 0,
    another object or background inside a row span) are counted too, in row 0 of the table, but
    with ``lomin`` = 1 (``ignore_zeros``) not listed: their number is row 0's sum
    (:func:`_zero_pairs`), and the feature passes read only the listed cells. ``nbumps[d]`` gets
    the number of pairs direction d counted. Every pair left out has a 0, so ``nbumps`` less row
    0's sum is the number of pairs without 0 of a scan of the whole crop, and with ``lomin`` = 0
    (one object filling its crop) nothing is left out.
    """
    n0 = 0
    n1 = 0
    n2 = 0
    n3 = 0
    c0 = cnt[0]
    c1 = cnt[1]
    c2 = cnt[2]
    c3 = cnt[3]
    t0 = touched[0]
    t1 = touched[1]
    t2 = touched[2]
    t3 = touched[3]
    b0 = 0
    b1 = 0
    b2 = 0
    b3 = 0
    for k in range(nruns):
        r = runs[k, 0]
        a = runs[k, 1]
        b = runs[k, 2]
        base = r * w
        s0 = a  # (0, 1): the second pixel before the row span's end
        e0 = max(min(b, rowend[r] - dist), s0)
        b0 += e0 - s0
        if r + dist >= h:  # only (0, dist) has pairs in this row
            n0 = _count_span(crop, base, base + dist, s0, e0, stride, c0, t0, n0, lomin)
            continue
        lo2 = rowlo[r + dist]  # the second pixel's row span (empty: w, 0)
        end2 = rowend[r + dist]
        base2 = (r + dist) * w
        s1 = max(a, lo2 - dist)  # (1, 1)
        e1 = max(min(b, end2 - dist), s1)
        s2 = max(a, lo2)  # (1, 0)
        e2 = max(min(b, end2), s2)
        s3 = max(a, lo2 + dist)  # (1, -1)
        e3 = max(min(b, end2 + dist), s3)
        b1 += e1 - s1
        b2 += e2 - s2
        b3 += e3 - s3
        fs = max(max(s0, s1), max(s2, s3))
        fe = min(min(e0, e1), min(e2, e3))
        if fs >= fe:  # no column has all 4 pairs: each direction alone
            n0 = _count_span(crop, base, base + dist, s0, e0, stride, c0, t0, n0, lomin)
            n1 = _count_span(crop, base, base2 + dist, s1, e1, stride, c1, t1, n1, lomin)
            n2 = _count_span(crop, base, base2, s2, e2, stride, c2, t2, n2, lomin)
            n3 = _count_span(crop, base, base2 - dist, s3, e3, stride, c3, t3, n3, lomin)
            continue
        n0 = _count_span(crop, base, base + dist, s0, fs, stride, c0, t0, n0, lomin)
        n1 = _count_span(crop, base, base2 + dist, s1, fs, stride, c1, t1, n1, lomin)
        n2 = _count_span(crop, base, base2, s2, fs, stride, c2, t2, n2, lomin)
        n3 = _count_span(crop, base, base2 - dist, s3, fs, stride, c3, t3, n3, lomin)
        for c in range(fs, fe):
            v = crop[base + c]
            n0 = _bump(v, crop[base + c + dist], stride, c0, t0, n0, lomin)
            n1 = _bump(v, crop[base2 + c + dist], stride, c1, t1, n1, lomin)
            n2 = _bump(v, crop[base2 + c], stride, c2, t2, n2, lomin)
            n3 = _bump(v, crop[base2 + c - dist], stride, c3, t3, n3, lomin)
        n0 = _count_span(crop, base, base + dist, fe, e0, stride, c0, t0, n0, lomin)
        n1 = _count_span(crop, base, base2 + dist, fe, e1, stride, c1, t1, n1, lomin)
        n2 = _count_span(crop, base, base2, fe, e2, stride, c2, t2, n2, lomin)
        n3 = _count_span(crop, base, base2 - dist, fe, e3, stride, c3, t3, n3, lomin)
    nts[0] = n0
    nts[1] = n1
    nts[2] = n2
    nts[3] = n3
    nbumps[0] = b0
    nbumps[1] = b1
    nbumps[2] = b2
    nbumps[3] = b3


@numba.njit(cache=True, nogil=True, error_model="numpy", inline="always")
def _zero_pairs(cnt, stride):
    """Pairs counted with grey level 0 (background, another object, or a pixel quantised to 0):
    row 0 of the table, ``cnt[0:stride]``, O(levels) instead of a pass over the touched cells."""
    z = 0
    for j in range(stride):
        z += cnt[j]
    return z


@numba.njit(cache=True, nogil=True, error_model="numpy", inline="always")
def _clear_zero_row(cnt, stride):
    """Clear row 0 of the table (the pairs with grey level 0, not listed with ``ignore_zeros``)."""
    for j in range(stride):
        cnt[j] = 0


@numba.njit(cache=True, nogil=True, error_model="numpy", inline="always")
def _cell_sums(cnt, touched, nt, fm1, lt, lg, inv, cs, pxc, pxpyc, pxmyc):
    """Unnormalised sums over the symmetric GLCM's touched cells, in the touched order: (sum p^2,
    entropy, sum i j p, sum p / (1 + (i-j)^2)) times T or T^2, and the integer marginals P(i),
    P(i+j), P(|i-j|) (zero on entry). Copies each cell's count into ``cs`` (in the touched order,
    for :func:`_hxy1`) and clears it in ``cnt``. Also returns the lowest and highest grey level and
    the largest |i-j| of the cells: the marginals are 0 outside those ranges (:func:`_marginal_sums`).

    Branch-free: a diagonal cell (one GLCM cell of 2c) and an off-diagonal pair of cells (two of c)
    give the same terms but for sum p^2 (4c^2 against 2c^2, both exact integers) and the entropy's
    log2 argument (2c against c); ``inv[0]`` is 1, so ``2c inv[0]`` is the diagonal's ``2c``."""
    asm = 0.0
    ent = 0.0
    ijp = 0.0
    idm = 0.0
    imin = fm1
    jmax = 0
    dmax = 0
    for t in range(nt):
        cell = touched[t]
        i = cell >> 8
        j = cell & 255
        imin = min(imin, i)
        jmax = max(jmax, j)
        dmax = max(dmax, j - i)
        at = i * fm1 + j
        c = cnt[at]
        cnt[at] = 0
        cs[t] = c
        diag = i == j
        fc = float(c)
        f2 = 2.0 * fc
        asm += (f2 + f2 * diag) * fc
        ent += f2 * (lt - lg[c + c * diag])
        ijp += 2.0 * i * j * fc
        idm += f2 * inv[j - i]
        pxc[i] += c
        pxc[j] += c
        pxpyc[i + j] += 2 * c
        pxmyc[j - i] += 2 * c
    return asm, ent, ijp, idm, imin, jmax, dmax


@numba.njit(cache=True, nogil=True, error_model="numpy", inline="always")
def _hxy1(touched, cs, nt, lt, lg, pxc):
    """T * HXY1 = -T sum p_ij log2(px_i px_j) over the touched cells (mahotas), in the touched
    order; ``cs`` holds their counts (:func:`_cell_sums`)."""
    hxy1 = 0.0
    for t in range(nt):
        cell = touched[t]
        # diagonal: one cell of 2c; off-diagonal: two cells of c -- same sum
        hxy1 += 2.0 * cs[t] * ((lt - lg[pxc[cell >> 8]]) + (lt - lg[pxc[cell & 255]]))
    return hxy1


@numba.njit(cache=True, nogil=True, error_model="numpy", inline="always")
def _marginal_sums(pxc, pxmyc, imin, jmax, dmax, T, lt, lg):
    """The sums over P(i) and P(|i-j|) (integer counts), unnormalised: (sum i c_i, sum i^2 c_i,
    sum k^2 d_k, T * HX, T * DifferenceEntropy, sum d_k / T).

    Each accumulator is summed in ascending index order, as mahotas' sums over the whole
    length-``fm1`` vectors, but only over the indices where the counts can be non-zero (P(i) in
    ``[imin, jmax]``, P(|i-j|) in ``[0, dmax]``): a zero count adds exactly +0.0 to a sum of
    non-negative terms, so skipping it changes no bit. One loop per vector with independent
    accumulators. Entropies as ``sum c (log2 T - log2 c)`` over c > 0, branch-free: a zero count's
    term is ``0 * (log2 T - lg[0])``, +0.0, and adds nothing (a data-dependent ``if c > 0``
    mispredicts on the gaps of the marginals).
    """
    m1, m2, hx = _sum_marginal_sums(pxc, imin, jmax, lt, lg)
    con = 0.0
    dent = 0.0
    dsum = 0.0
    for i in range(dmax + 1):
        d = pxmyc[i]
        con += i * i * d
        dent += d * (lt - lg[d])
        dsum += d / T
    return m1, m2, con, hx, dent, dsum


@numba.njit(cache=True, nogil=True, error_model="numpy", inline="always")
def _sum_marginal_sums(pxpyc, lo, hi, lt, lg):
    """(sum k c_k, sum k^2 c_k, T * SumEntropy) over P(i+j) = ``pxpyc``, non-zero only in
    ``[lo, hi]`` (zero counts add exactly +0.0: :func:`_marginal_sums`), one loop, each
    accumulator in ascending order."""
    m1 = 0.0
    m2 = 0.0
    ent = 0.0
    for k in range(lo, hi + 1):
        c = pxpyc[k]
        m1 += k * c
        m2 += k * k * c
        ent += c * (lt - lg[c])
    return m1, m2, ent


@numba.njit(cache=True, nogil=True, error_model="numpy", inline="always")
def _add_repeated(x, y, n):
    """``x`` plus ``y`` ``n`` times, added one at a time in float64 (finite x, y >= 0), with the
    very same result as the ``n`` dependent additions but O(binades crossed) of them.

    Within one binade [2**(e-1), 2**e) every sum is rounded to a multiple of the ulp ``u``, so
    ``fl(x + y) - x`` is the same for every x there, except after a tie (``y`` an odd multiple of
    u/2), which leaves an even multiple of u: from the second addition made inside the binade on,
    the step ``d`` is constant. So: three real additions; if the first result already lies in the
    last one's binade, the last step is ``d`` and the next ``k`` additions are exactly
    ``x + k * d`` (all multiples of u below ``2**e - 4u``, hence exact), then go on from there.
    Subnormal values are added one at a time."""
    while n > 0:
        x1 = x + y
        if n < 3 or x1 < 1e-300:
            x = x1
            n -= 1
            continue
        x2 = x1 + y
        x = x2 + y
        n -= 3
        e = math.frexp(x)[1]  # x in [2**(e-1), 2**e)
        if x1 < math.ldexp(0.5, e):  # the binade changed: no steady step yet
            continue
        d = x - x2  # exact: both multiples of the ulp
        if d == 0.0:
            return x  # x + y rounds back to x, for good
        u = math.ldexp(1.0, e - 53)
        k = min(int((math.ldexp(1.0, e) - 4.0 * u - x) / d) - 1, n)
        if k > 0:
            x += k * d
            n -= k
    return x


@numba.njit(cache=True, nogil=True, error_model="numpy", inline="always")
def _difference_variance(pxmyc, fm1, dmax, T, dsum):
    """Population variance of the length-``fm1`` vector P(|i-j|) (mahotas' DifferenceVariance);
    ``dsum`` = sum of P(|i-j|) / T in ascending order. Past ``dmax`` every count is 0, whose
    term ``(0 / T - m)**2`` is exactly ``m * m``: the same sum, in the same order, is ``m * m``
    added ``fm1 - dmax - 1`` times (:func:`_add_repeated`)."""
    m = dsum / fm1
    dv = 0.0
    for i in range(dmax + 1):
        u = pxmyc[i] / T - m
        dv += u * u
    dv = _add_repeated(dv, m * m, fm1 - dmax - 1)
    return dv / fm1


@numba.njit(cache=True, nogil=True, error_model="numpy", inline="always")
def _clear_marginals(pxc, pxpyc, pxmyc, imin, jmax, dmax):
    """Zero the marginals where :func:`_cell_sums` may have counted (they are zero elsewhere)."""
    for i in range(imin, jmax + 1):
        pxc[i] = 0
    for k in range(2 * imin, 2 * jmax + 1):
        pxpyc[k] = 0
    for k in range(dmax + 1):
        pxmyc[k] = 0


@numba.njit(cache=True, nogil=True, error_model="numpy", inline="always")
def _haralick(cnt, touched, nt, npairs, fm1, lg, inv, cs, pxc, pxpyc, pxmyc, o):
    """The 13 Haralick features of one direction's GLCM, the ``nt`` cells listed in ``touched``,
    into ``o``; clears those cells of ``cnt`` (and leaves the zeroed marginals zero)."""
    total = 2 * npairs
    T = float(total)
    lt = lg[total]
    asm, ent, ijp, idm, imin, jmax, dmax = _cell_sums(cnt, touched, nt, fm1, lt, lg, inv, cs, pxc, pxpyc,
                                                      pxmyc)
    hxy1 = _hxy1(touched, cs, nt, lt, lg, pxc)
    asm /= T * T
    ent /= T
    ijp /= T
    idm /= T
    hxy1 /= T
    ux, k2, con, hx, dent, dsum = _marginal_sums(pxc, pxmyc, imin, jmax, dmax, T, lt, lg)
    ux /= T
    k2 /= T
    vx = k2 - ux * ux
    sx = np.sqrt(vx)
    sa, s2, sent = _sum_marginal_sums(pxpyc, 2 * imin, 2 * jmax, lt, lg)
    sa /= T
    s2 /= T
    con /= T
    hx /= T
    hxy2 = 2.0 * hx
    o[ANGULAR_SECOND_MOMENT] = asm
    o[CONTRAST] = con
    o[CORRELATION] = 1.0 if sx == 0.0 else (ijp - ux * ux) / sx / sx
    o[VARIANCE] = vx
    o[INVERSE_DIFFERENCE_MOMENT] = idm
    o[SUM_AVERAGE] = sa
    o[SUM_VARIANCE] = s2 - sa * sa
    o[SUM_ENTROPY] = sent / T
    o[ENTROPY] = ent
    o[DIFFERENCE_VARIANCE] = _difference_variance(pxmyc, fm1, dmax, T, dsum)
    o[DIFFERENCE_ENTROPY] = dent / T
    o[INFO_MEAS1] = (ent - hxy1) if hx == 0.0 else (ent - hxy1) / hx
    arg = 1.0 - np.exp(-2.0 * (hxy2 - ent))
    o[INFO_MEAS2] = np.sqrt(arg if arg > 0.0 else 0.0)
    _clear_marginals(pxc, pxpyc, pxmyc, imin, jmax, dmax)


@numba.njit(cache=True, nogil=True, error_model="numpy")
def _texture_kernel(q, offsets, bbox, ys, xs, dists, out, ignore_zeros):
    """Fill out[k, s, d, f] (n_obj, scales, N_DIRECTIONS, N_HARALICK) for the scales ``dists``.

    Each object's crop is filled once for all its scales.

    Pairs are counted once per unordered grey-level pair in ``cnt[d, min * fm1 + max]``, all 4
    directions in one pass (:func:`_count_pairs`); the symmetric GLCM has that count in both cells
    (twice on the diagonal), T = 2 * pairs. Only pairs within the objects' runs and row spans are
    visited, which leaves out pairs with a background pixel only: ``ignore_zeros=False`` (grey
    level 0 an ordinary level) is for an object that fills its bounding box (the whole image).
    """
    n_obj = offsets.shape[0] - 1
    cnt = np.zeros((N_DIRECTIONS, 65536), np.int32)  # counts <= 2 * object pixels
    touched = np.empty((N_DIRECTIONS, 65537), np.int64)
    nts = np.zeros(N_DIRECTIONS, np.int64)
    nbumps = np.zeros(N_DIRECTIONS, np.int64)
    pairs = np.zeros(N_DIRECTIONS, np.int64)
    pxc = np.zeros(256, np.int64)
    pxpyc = np.zeros(512, np.int64)
    pxmyc = np.zeros(256, np.int64)
    cs = np.empty(65537, np.int64)
    lomin = 1 if ignore_zeros else 0  # with ignore_zeros the cells of grey level 0 are not listed
    maxa = 1
    maxn = 1
    for k in range(n_obj):
        maxa = max(maxa, (bbox[k, 2] - bbox[k, 0]) * (bbox[k, 3] - bbox[k, 1]))
        maxn = max(maxn, offsets[k + 1] - offsets[k])
    # log2 of every possible GLCM count (never above 2 * pixels of the object)
    lg = np.zeros(2 * maxn + 2)
    for c in range(1, lg.shape[0]):
        lg[c] = np.log2(c)
    inv = np.empty(256)
    for dd in range(256):
        inv[dd] = 1.0 / (dd * dd + 1.0)
    crop = np.zeros(maxa, np.int32)
    rowlo = np.empty(maxa, np.int64)
    rowend = np.empty(maxa, np.int64)
    runs = np.empty((maxn, 3), np.int64)
    for k in range(n_obj):
        s = offsets[k]
        e = offsets[k + 1]
        y0 = bbox[k, 0]
        x0 = bbox[k, 1]
        h = bbox[k, 2] - y0
        w = bbox[k, 3] - x0
        fm1, nruns = _fill_crop(q, ys, xs, s, e, y0, x0, h, w, crop, rowlo, rowend, runs)
        for sc in range(dists.shape[0]):
            _count_pairs(crop, rowlo, rowend, runs, nruns, h, w, dists[sc], fm1, cnt, touched, nts,
                         nbumps, lomin)
            failed = False
            for d in range(N_DIRECTIONS):
                pairs[d] = nbumps[d]
                if ignore_zeros:  # row 0 (not listed in touched) is counted, then cleared
                    pairs[d] -= _zero_pairs(cnt[d], fm1)
                    _clear_zero_row(cnt[d], fm1)
                failed |= pairs[d] == 0
            for d in range(N_DIRECTIONS):
                if failed:  # a direction without pairs: the whole scale is NaN; clear the counts
                    for t in range(nts[d]):
                        cell = touched[d, t]
                        cnt[d, (cell >> 8) * fm1 + (cell & 255)] = 0
                    out[k, sc, d] = np.nan
                else:
                    _haralick(cnt[d], touched[d], nts[d], pairs[d], fm1, lg, inv, cs, pxc, pxpyc, pxmyc,
                              out[k, sc, d])
        for i in range(s, e):
            crop[(ys[i] - y0) * w + xs[i] - x0] = 0
    return out


def measure_texture(
    image: np.ndarray,
    labels: np.ndarray,
    channel: str,
    scales: Sequence[int],
    levels: int,
    index: ObjectIndex | None = None,
) -> dict[str, np.ndarray]:
    """Haralick features ``Texture_{Feature}_{channel}_{scale}_{dir:02d}_{levels}`` per object.

    ``image`` is float in [0, 1] (2-D), ``labels`` the matching label image; values come back in
    ``index.labels_present`` order.
    """
    if image.ndim != 2 or image.shape != labels.shape:
        raise ValueError(f"image {image.shape} and labels {labels.shape} must be equal 2-D shapes")
    if not 2 <= levels <= 256:
        raise ValueError(f"levels must be in 2..256, got {levels}")
    if image.dtype.kind != "f":
        raise TypeError(f"image must be floating point in [0, 1], got {image.dtype}")
    if index is None:
        index = build_index(labels)
    img = np.ascontiguousarray(image)
    q, ok = _quantize(img, index.ys, index.xs, int(levels), img.dtype.type(255))
    if not ok:
        raise ValueError("object pixel values must lie in [0, 1] (img_as_ubyte semantics)")
    dists = np.array([int(scale) for scale in scales], np.int64)
    if (dists < 1).any():
        raise ValueError(f"scale must be at least 1 pixel, got {int(dists[dists < 1][0])}")
    out = np.empty((index.n_objects, dists.shape[0], N_DIRECTIONS, N_HARALICK), np.float64)
    if index.n_objects and dists.shape[0]:
        _texture_kernel(q, index.offsets, index.bbox, index.ys, index.xs, dists, out, True)
    # one copy, feature-major: each column is a contiguous row of it (views of disjoint rows)
    cols = np.ascontiguousarray(out.transpose(1, 2, 3, 0))
    result: dict[str, np.ndarray] = {}
    for sc, scale in enumerate(dists.tolist()):
        for d in range(N_DIRECTIONS):
            for f, name in enumerate(F_HARALICK):
                result[f"Texture_{name}_{channel}_{scale}_{d:02d}_{levels}"] = cols[sc, d, f]
    return result


def measure_image_texture(
    image: np.ndarray, channel: str, scales: Sequence[int], levels: int
) -> dict[str, float]:
    """Whole-image Haralick features ``Texture_{Feature}_{channel}_{scale}_{dir:02d}_{levels}``
    (CellProfiler MeasureTexture's image mode: ``mahotas.features.haralick`` of the whole quantised
    image, ``ignore_zeros=False``: grey level 0 is an ordinary level; a non-finite value is
    recorded as 0, as CellProfiler's ``record_image_measurement`` does)."""
    if image.ndim != 2:
        raise ValueError(f"image must be 2-D, got shape {image.shape}")
    if not 2 <= levels <= 256:
        raise ValueError(f"levels must be in 2..256, got {levels}")
    if image.dtype.kind != "f":
        raise TypeError(f"image must be floating point in [0, 1], got {image.dtype}")
    index = build_index(np.ones(image.shape, np.int32))
    img = np.ascontiguousarray(image)
    q, ok = _quantize(img, index.ys, index.xs, int(levels), img.dtype.type(255))
    if not ok:
        raise ValueError("pixel values must lie in [-1, 1] (img_as_ubyte semantics)")
    dists = np.array([int(scale) for scale in scales], np.int64)
    if (dists < 1).any():
        raise ValueError(f"scale must be at least 1 pixel, got {int(dists[dists < 1][0])}")
    out = np.empty((1, dists.shape[0], N_DIRECTIONS, N_HARALICK), np.float64)
    if dists.shape[0]:
        _texture_kernel(q, index.offsets, index.bbox, index.ys, index.xs, dists, out, False)
    out[~np.isfinite(out)] = 0.0
    result: dict[str, float] = {}
    for sc, scale in enumerate(dists.tolist()):
        for d in range(N_DIRECTIONS):
            for f, name in enumerate(F_HARALICK):
                result[f"Texture_{name}_{channel}_{scale}_{d:02d}_{levels}"] = float(out[0, sc, d, f])
    return result
