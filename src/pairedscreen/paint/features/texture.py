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

Implementation: per object the quantised pixels are scattered into a bbox crop; for each
direction the pairs are counted branch-free over the object's row spans into a table indexed by
the unordered grey-level pair (pairs with level 0 are dropped afterwards), whose touched cells are
listed and cleared afterwards. The symmetric GLCM has that count in both cells (twice on the
diagonal). Features are reduced from the touched cells and O(levels) integer marginals, never the
dense 256x256 matrix, and every ``p log2 p`` is ``c (log2 T - log2 c) / T`` with ``log2`` of
integer counts from a table.

Deliberate numerical difference (the only parity exception): InfoMeas2 uses HXY2 = 2 * HX, exact
for the symmetric GLCM (px == py), instead of mahotas' O(levels^2) outer-product sum. Where the
GLCM is exactly the product of its marginals (e.g. a two-level object with independent pairs),
``1 - exp(-2 * (HXY2 - H))`` is a rounding residual and ``sqrt`` turns a ~1e-16 difference into
an absolute ~1e-7 difference against mahotas' 0 (cp_measure's own numba backend has the same
residual); parity for InfoMeas2 is therefore checked with ``atol=1e-6`` in addition to ``rtol``.
"""

from __future__ import annotations

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
    """Grey levels of the listed pixels: img_as_ubyte, then the optional 0..levels-1 rescale.

    Returns (levels, ok); ok is False when a pixel lies outside [-1, 1], where img_as_ubyte raises.
    """
    n = ys.shape[0]
    out = np.empty(n, np.int32)
    ok = True
    for i in range(n):
        x = image[ys[i], xs[i]]
        if not (-1.0 <= x <= 1.0):
            ok = False
        v = x * scale255  # in the image's float type, like img_as_ubyte
        r = np.rint(v)
        if r < 0:
            r = 0
        elif r > 255:
            r = 255
        u = int(r)
        if levels != 256:
            u = int((u - 0.0) / 255.0 * (levels - 1.0) + 0.0)
        out[i] = u
    return out, ok


@numba.njit(cache=True, nogil=True, error_model="numpy")
def _entropy_counts(cnt, n, lt, lg):
    """-sum p log2 p for p = cnt / T, as sum cnt (log2 T - log2 cnt) / T (exactly 0 for one cell)."""
    s = 0.0
    for i in range(n):
        c = cnt[i]
        if c > 0:
            s += c * (lt - lg[c])
    return s


@numba.njit(cache=True, nogil=True, error_model="numpy", inline="always")
def _fill_crop(q, ys, xs, s, e, y0, x0, h, w, crop, rowlo, rowhi):
    """Scatter the object's grey levels into its bbox crop (row stride ``w``) and record each
    crop row's first/last object column (CSR pixels are raster-ordered); returns the GLCM size
    ``max level + 1``."""
    fm1 = 1
    for i in range(s, e):
        v = q[i]
        crop[(ys[i] - y0) * w + xs[i] - x0] = v
        if v + 1 > fm1:
            fm1 = v + 1
    for r in range(h):
        rowlo[r] = w
        rowhi[r] = -1
    for i in range(s, e):
        r = ys[i] - y0
        c = xs[i] - x0
        if c < rowlo[r]:
            rowlo[r] = c
        if c > rowhi[r]:
            rowhi[r] = c
    return fm1


@numba.njit(cache=True, nogil=True, error_model="numpy", inline="always")
def _count_pairs(crop, rowlo, rowhi, h, w, dy, dx, cnt, touched, ignore_zeros):
    """Co-occurrence counts of one offset ``(dy, dx)``: ``cnt[min * 256 + max]`` per unordered
    grey-level pair, the touched cells listed in ``touched``. Returns (cells, pairs).

    Branch-free counting over the row spans: pairs with a 0 (background, another object, or a
    pixel quantised to 0) land in row 0 of the canonical table and are dropped (and cleared)
    afterwards (mahotas' ``ignore_zeros``; kept when ``ignore_zeros`` is False, the whole-image
    mode).
    """
    nt = 0
    for r in range(0, h - dy):
        lo = max(rowlo[r], -dx)
        hi = min(rowhi[r] + 1, w - dx)
        base = r * w
        base2 = (r + dy) * w + dx
        for c in range(lo, hi):
            a = crop[base + c]
            b = crop[base2 + c]
            cell = min(a, b) * 256 + max(a, b)
            v = cnt[cell]
            touched[nt] = cell
            nt += v == 0
            cnt[cell] = v + 1
    npairs = 0
    keep = 0
    for t in range(nt):
        cell = touched[t]
        if ignore_zeros and cell < 256:  # involves grey level 0
            cnt[cell] = 0
        else:
            npairs += cnt[cell]
            touched[keep] = cell
            keep += 1
    return keep, npairs


@numba.njit(cache=True, nogil=True, error_model="numpy", inline="always")
def _cell_sums(cnt, touched, nt, fm1, lt, lg, inv, pxc, pxpyc, pxmyc):
    """Unnormalised sums over the symmetric GLCM's touched cells: (sum p^2, entropy, sum i j p,
    sum p / (1 + (i-j)^2)) times T or T^2, and the integer marginals P(i), P(i+j), P(|i-j|)."""
    for i in range(fm1):
        pxc[i] = 0
        pxmyc[i] = 0
    for i in range(2 * fm1):
        pxpyc[i] = 0
    asm = 0.0
    ent = 0.0
    ijp = 0.0
    idm = 0.0
    for t in range(nt):
        cell = touched[t]
        i = cell >> 8
        j = cell & 255
        c = cnt[cell]
        fc = float(c)
        if i == j:
            c2 = 2 * c
            f2 = 2.0 * fc
            asm += f2 * f2
            ent += f2 * (lt - lg[c2])
            ijp += i * i * f2
            idm += f2
            pxc[i] += c2
            pxpyc[2 * i] += c2
            pxmyc[0] += c2
        else:
            asm += 2.0 * fc * fc
            ent += 2.0 * fc * (lt - lg[c])
            ijp += 2.0 * i * j * fc
            idm += 2.0 * fc * inv[j - i]
            pxc[i] += c
            pxc[j] += c
            pxpyc[i + j] += 2 * c
            pxmyc[j - i] += 2 * c
    return asm, ent, ijp, idm


@numba.njit(cache=True, nogil=True, error_model="numpy", inline="always")
def _hxy1_and_clear(cnt, touched, nt, lt, lg, pxc):
    """T * HXY1 = -T sum p_ij log2(px_i px_j) over the non-zero cells (mahotas); clears ``cnt``."""
    hxy1 = 0.0
    for t in range(nt):
        cell = touched[t]
        i = cell >> 8
        j = cell & 255
        # diagonal: one cell of 2c; off-diagonal: two cells of c -- same sum
        hxy1 += 2.0 * cnt[cell] * ((lt - lg[pxc[i]]) + (lt - lg[pxc[j]]))
        cnt[cell] = 0
    return hxy1


@numba.njit(cache=True, nogil=True, error_model="numpy", inline="always")
def _weighted_moments(counts, n):
    """(sum i c_i, sum i^2 c_i) over counts[:n]."""
    m1 = 0.0
    m2 = 0.0
    for i in range(n):
        m1 += i * counts[i]
        m2 += i * i * counts[i]
    return m1, m2


@numba.njit(cache=True, nogil=True, error_model="numpy", inline="always")
def _difference_variance(pxmyc, fm1, T):
    """Population variance of the length-``fm1`` vector P(|i-j|) (mahotas' DifferenceVariance)."""
    m = 0.0
    for i in range(fm1):
        m += pxmyc[i] / T
    m /= fm1
    dv = 0.0
    for i in range(fm1):
        u = pxmyc[i] / T - m
        dv += u * u
    return dv / fm1


@numba.njit(cache=True, nogil=True, error_model="numpy", inline="always")
def _haralick(cnt, touched, nt, npairs, fm1, lg, inv, pxc, pxpyc, pxmyc, o):
    """The 13 Haralick features of one direction's GLCM into ``o`` (clears ``cnt``)."""
    total = 2 * npairs
    T = float(total)
    lt = lg[total]
    asm, ent, ijp, idm = _cell_sums(cnt, touched, nt, fm1, lt, lg, inv, pxc, pxpyc, pxmyc)
    hxy1 = _hxy1_and_clear(cnt, touched, nt, lt, lg, pxc)
    asm /= T * T
    ent /= T
    ijp /= T
    idm /= T
    hxy1 /= T
    ux, k2 = _weighted_moments(pxc, fm1)
    ux /= T
    k2 /= T
    vx = k2 - ux * ux
    sx = np.sqrt(vx)
    sa, s2 = _weighted_moments(pxpyc, 2 * fm1)
    sa /= T
    s2 /= T
    con = 0.0
    for i in range(fm1):
        con += i * i * pxmyc[i]
    con /= T
    hx = _entropy_counts(pxc, fm1, lt, lg) / T
    hxy2 = 2.0 * hx
    o[ANGULAR_SECOND_MOMENT] = asm
    o[CONTRAST] = con
    o[CORRELATION] = 1.0 if sx == 0.0 else (ijp - ux * ux) / sx / sx
    o[VARIANCE] = vx
    o[INVERSE_DIFFERENCE_MOMENT] = idm
    o[SUM_AVERAGE] = sa
    o[SUM_VARIANCE] = s2 - sa * sa
    o[SUM_ENTROPY] = _entropy_counts(pxpyc, 2 * fm1, lt, lg) / T
    o[ENTROPY] = ent
    o[DIFFERENCE_VARIANCE] = _difference_variance(pxmyc, fm1, T)
    o[DIFFERENCE_ENTROPY] = _entropy_counts(pxmyc, fm1, lt, lg) / T
    o[INFO_MEAS1] = (ent - hxy1) if hx == 0.0 else (ent - hxy1) / hx
    arg = 1.0 - np.exp(-2.0 * (hxy2 - ent))
    o[INFO_MEAS2] = np.sqrt(arg if arg > 0.0 else 0.0)


@numba.njit(cache=True, nogil=True, error_model="numpy")
def _texture_kernel(q, offsets, bbox, ys, xs, dist, out, ignore_zeros):
    """Fill out[k, d, f] (n_obj, N_DIRECTIONS, N_HARALICK) for one scale.

    Pairs are counted once per unordered grey-level pair in ``cnt[min * 256 + max]``; the
    symmetric GLCM has that count in both cells (twice on the diagonal), T = 2 * pairs.
    """
    n_obj = offsets.shape[0] - 1
    cnt = np.zeros(65536, np.int64)
    touched = np.empty(65537, np.int64)
    pxc = np.zeros(256, np.int64)
    pxpyc = np.zeros(512, np.int64)
    pxmyc = np.zeros(256, np.int64)
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
    rowhi = np.empty(maxa, np.int64)
    for k in range(n_obj):
        s = offsets[k]
        e = offsets[k + 1]
        y0 = bbox[k, 0]
        x0 = bbox[k, 1]
        h = bbox[k, 2] - y0
        w = bbox[k, 3] - x0
        fm1 = _fill_crop(q, ys, xs, s, e, y0, x0, h, w, crop, rowlo, rowhi)
        for d in range(N_DIRECTIONS):
            nt, npairs = _count_pairs(crop, rowlo, rowhi, h, w, _DELTAS[d, 0] * dist, _DELTAS[d, 1] * dist,
                                      cnt, touched, ignore_zeros)
            if npairs == 0:
                # the failed direction counted nothing; earlier ones were cleared already
                out[k] = np.nan
                break
            _haralick(cnt, touched, nt, npairs, fm1, lg, inv, pxc, pxpyc, pxmyc, out[k, d])
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
    result: dict[str, np.ndarray] = {}
    for scale in scales:
        scale = int(scale)
        if scale < 1:
            raise ValueError(f"scale must be at least 1 pixel, got {scale}")
        out = np.empty((index.n_objects, N_DIRECTIONS, N_HARALICK), np.float64)
        if index.n_objects:
            _texture_kernel(q, index.offsets, index.bbox, index.ys, index.xs, scale, out, True)
        for d in range(N_DIRECTIONS):
            for f, name in enumerate(F_HARALICK):
                result[f"Texture_{name}_{channel}_{scale}_{d:02d}_{levels}"] = out[:, d, f].copy()
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
    result: dict[str, float] = {}
    for scale in scales:
        scale = int(scale)
        if scale < 1:
            raise ValueError(f"scale must be at least 1 pixel, got {scale}")
        out = np.empty((1, N_DIRECTIONS, N_HARALICK), np.float64)
        _texture_kernel(q, index.offsets, index.bbox, index.ys, index.xs, scale, out, False)
        out[~np.isfinite(out)] = 0.0
        for d in range(N_DIRECTIONS):
            for f, name in enumerate(F_HARALICK):
                result[f"Texture_{name}_{channel}_{scale}_{d:02d}_{levels}"] = float(out[0, d, f])
    return result
