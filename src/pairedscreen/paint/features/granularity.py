"""Granularity spectrum per object (CellProfiler MeasureGranularity, ``Granularity_{k}_{channel}``).

Definition (CellProfiler 4 ``MeasureGranularity.run_on_image_setting`` / cp_measure 0.3
``get_granularity``), for a 2-D image in [0, 1]:

1. Subsample: ``new = int(shape * subsample_size)`` (only when ``subsample_size < 1``), the small
   image is the bilinear sample (``scipy.ndimage.map_coordinates(order=1)``) at ``i / s``.
2. Background: sample the small image again at ``background_subsample_size`` (grid of
   ``ceil(new * b)`` points at ``i / b``), grey opening (erosion then dilation, out-of-image
   pixels ignored) with ``disk(element_size)``, bilinear resample back to ``new`` at
   ``i * (new * b - 1) / (new - 1)``; subtract and clip at 0 (tophat).
3. Spectrum: ``ero`` is eroded ``spectrum_length`` times with the 3x3 cross; after each erosion
   ``rec`` = grey reconstruction by dilation of ``ero`` under the tophat image (cross
   connectivity). ``rec`` is restored to the original grid by bilinear sampling at
   ``i * (new - 1) / (orig - 1)`` (``mode='constant'``: a coordinate that rounds past the last
   row/column reads 0) and averaged per object over the original labels.
4. ``Granularity_k = (mean_{k-1} - mean_k) * 100 / max(mean_0, eps)`` where ``mean_0`` is the
   object's mean of the *original* (not background-subtracted) image -- CellProfiler's
   ``ObjectRecord`` start mean.

Implementation. The image-level part (steps 1-3 up to the per-object means) depends only on the
image: it is cached by a 64-bit content hash of the image (LRU of 6), so measuring one channel for
nuclei, cells and cytoplasm builds it once. The 16 reconstructions share the max-tree of the tophat
image (built once, union-find over pixels radix-sorted by value): rec(p) is the largest
min(level(A), max seed in subtree(A)) over the ancestors A of p -- the erosions are written first
(a row wavefront that holds a ring of rows, not 16 images; each pixel's 16 values stored at once),
the bottom-up max is taken while the tree is built (a node is complete when it is hung under its
parent), then one top-down pass for all 16 seeds together (each pixel's 16 values adjacent),
exact (values are selected, never computed), i.e. bit-identical to
``skimage.morphology.reconstruction``. The restore-and-average step is linear in ``rec``, so each
object gets a small weight window on the subsampled grid (cached per ``ObjectIndex``, its cells of
weight 0 left out) applied to all 16 reconstructions at once (cp_measure's sparse-operator idea).
The disk opening is done row-wise from running min/max of growing width.

Differences from CellProfiler itself (not from cp_measure): CellProfiler keeps ``new`` as a float
(``shape * s``) so when ``shape * s`` is not an integer its grid has ``ceil`` points and its
restore scale uses ``shape * s - 1``; cp_measure (and this module) truncate to ``int``. For the
usual sizes divisible by ``1 / s`` (1080 * 0.25 = 270) both agree. Images are processed in
float64 (cp_measure keeps a float32 input in float32).
"""

from __future__ import annotations

import math
import threading
import weakref
from collections import OrderedDict

import numba
import numpy as np

from .objects import ObjectIndex, build_index

_SPECTRUM_CACHE: OrderedDict[tuple, tuple[np.ndarray, np.ndarray, tuple[int, int], float]] = OrderedDict()
_SPECTRUM_CACHE_SIZE = 6  # one 1080x1080 channel at s = 0.25 keeps ~9 MB
# per-object restore weights depend on the labels and the grid only: kept per live ObjectIndex
_WINDOW_CACHE: dict[tuple, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
_LOCK = threading.Lock()


@numba.njit(cache=True, nogil=True, error_model="numpy")
def fingerprint(values):
    """64-bit content hash of a float64 array; keys the result caches.

    Sum (mod 2^64) of splitmix64-finalised words tagged with their position, then finalised: no
    serial dependency between elements, so it runs at memory speed.
    """
    bits = values.ravel().view(np.uint64)
    n = bits.shape[0]
    acc = np.uint64(n)
    gold = np.uint64(0x9E3779B97F4A7C15)
    for i in range(n):
        z = bits[i] ^ (gold * np.uint64(i + 1))
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        acc += z ^ (z >> np.uint64(31))
    acc = (acc ^ (acc >> np.uint64(33))) * np.uint64(0xFF51AFD7ED558CCD)
    return acc ^ (acc >> np.uint64(33))


@numba.njit(cache=True, nogil=True, error_model="numpy")
def _bilinear_grid(src, ry, rx, ny, nx, div):
    """out[i, j] = bilinear(src, i*ry (/div), j*rx (/div)), scipy map_coordinates order=1, cval 0.

    With ``div`` True the coordinate is ``i / ry``, else ``i * ry`` (both as numpy computes them).
    """
    h, w = src.shape
    out = np.empty((ny, nx))
    cy = np.empty(ny)
    cx = np.empty(nx)
    for i in range(ny):
        cy[i] = i / ry if div else i * ry
    for j in range(nx):
        cx[j] = j / rx if div else j * rx
    for i in range(ny):
        r = cy[i]
        for j in range(nx):
            c = cx[j]
            if r < 0.0 or r > h - 1 or c < 0.0 or c > w - 1:
                out[i, j] = 0.0
                continue
            r0 = int(math.floor(r))
            c0 = int(math.floor(c))
            fr = r - r0
            fc = c - c0
            r1 = min(r0 + 1, h - 1)
            c1 = min(c0 + 1, w - 1)
            out[i, j] = ((1.0 - fr) * ((1.0 - fc) * src[r0, c0] + fc * src[r0, c1])
                         + fr * ((1.0 - fc) * src[r1, c0] + fc * src[r1, c1]))
    return out


@numba.njit(cache=True, nogil=True, error_model="numpy")
def _morph_disk(src, radius, erode):
    """Grey erosion (min) / dilation (max) with skimage ``disk(radius)``; outside pixels ignored.

    For a symmetric convex footprint scipy's default 'reflect' border only re-reads pixels that
    are inside the footprint already, so ignoring outside pixels is the same. The disk is split
    into rows: row dy spans dx in [-a, a], a = floor(sqrt(r^2 - dy^2)); ``run[a]`` holds the
    min/max over horizontal windows of half-width a, grown one step at a time.
    """
    h, w = src.shape
    sgn = 1.0 if erode else -1.0
    run = np.empty((radius + 1, h, w))
    for i in range(h):
        for j in range(w):
            run[0, i, j] = sgn * src[i, j]
    for a in range(1, radius + 1):
        lo = min(a, w)  # columns [lo, hi) have both neighbours at distance a: no border test
        hi = max(w - a, lo)
        for i in range(h):
            prev = run[a - 1, i]
            row0 = run[0, i]
            cur = run[a, i]
            for j in range(lo, hi):
                v = prev[j]
                if row0[j - a] < v:
                    v = row0[j - a]
                if row0[j + a] < v:
                    v = row0[j + a]
                cur[j] = v
            for j in range(lo):
                v = prev[j]
                if j + a < w and row0[j + a] < v:
                    v = row0[j + a]
                cur[j] = v
            for j in range(hi, w):
                v = prev[j]
                if j - a >= 0 and row0[j - a] < v:
                    v = row0[j - a]
                cur[j] = v
    # half-width of the disk's row dy (the largest a with a^2 + dy^2 <= r^2), once per row
    half = np.empty(2 * radius + 1, np.int64)
    for dy in range(-radius, radius + 1):
        a = int(math.floor(math.sqrt(radius * radius - dy * dy)))
        while (a + 1) * (a + 1) + dy * dy <= radius * radius:
            a += 1
        while a * a + dy * dy > radius * radius:
            a -= 1
        half[dy + radius] = a
    # min over the disk's rows, one row offset at a time (contiguous rows; a min is exact in any order)
    acc = run[radius].copy()
    for dy in range(-radius, radius + 1):
        if dy == 0:
            continue
        ra = run[half[dy + radius]]
        for i in range(max(0, -dy), min(h, h - dy)):
            arow = acc[i]
            srow = ra[i + dy]
            for j in range(w):
                if srow[j] < arow[j]:
                    arow[j] = srow[j]
    out = np.empty_like(src)
    for i in range(h):
        for j in range(w):
            out[i, j] = sgn * acc[i, j]
    return out


@numba.njit(cache=True, nogil=True, error_model="numpy")
def _find(zpar, p):
    r = p
    while zpar[r] != r:
        r = zpar[r]
    while zpar[p] != r:  # path compression
        nxt = zpar[p]
        zpar[p] = r
        p = nxt
    return r


@numba.njit(cache=True, nogil=True, error_model="numpy")
def _descending_order(pixels):
    """The flat pixels from the highest to the lowest value, for values >= 0 (no NaN): a stable LSD
    radix sort of the complemented float64 bit patterns, which order non-negative floats
    (``+ 0.0`` folds -0.0 into 0.0). Ties may come in any order (the max-tree allows it); being
    stable, they come in pixel order.

    Six 11-bit digits (2048-bin histograms stay in L1) with all histograms counted in one read of
    the keys, instead of :func:`._common.radix_sort`'s eight byte passes with a count each; a
    digit on which every key agrees (the exponent's high bits, for values in [0, 1]) is skipped.
    """
    flat = pixels.ravel()
    n = flat.shape[0]
    n_digits = 6
    bits = np.uint64(11)
    mask = np.uint64(2047)
    keys = np.empty(n, np.uint64)
    hist = np.zeros((n_digits, 2048), np.int64)
    for t in range(n):
        k = ~np.float64(flat[t] + 0.0).view(np.uint64)
        keys[t] = k
        for d in range(n_digits):
            hist[d, (k >> (bits * np.uint64(d))) & mask] += 1
    order = np.arange(n).astype(np.int32)
    if n == 0:
        return order
    src_k, dst_k = keys, np.empty(n, np.uint64)
    src_o, dst_o = order, np.empty(n, np.int32)
    for d in range(n_digits):
        count = hist[d]
        if count[(keys[0] >> (bits * np.uint64(d))) & mask] == n:
            continue  # every key has this digit
        acc = 0
        for b in range(2048):
            c = count[b]
            count[b] = acc
            acc += c
        shift = bits * np.uint64(d)
        for t in range(n):
            kk = src_k[t]
            b = (kk >> shift) & mask
            pos = count[b]
            count[b] = pos + 1
            dst_k[pos] = kk
            dst_o[pos] = src_o[t]
        src_k, dst_k = dst_k, src_k
        src_o, dst_o = dst_o, src_o
    return src_o


@numba.njit(cache=True, nogil=True, error_model="numpy")
def _ranks(order):
    """pixel -> rank, the inverse of ``order``."""
    rank = np.empty(order.shape[0], np.int32)
    for t in range(order.shape[0]):
        rank[order[t]] = t
    return rank


@numba.njit(cache=True, nogil=True, error_model="numpy")
def _max_tree(mask, order, rank, m):
    """Max-tree of ``mask`` in rank space (4-connectivity, Berger et al. 2007 union-find), and the
    bottom-up pass of the reconstructions on it.

    ``order`` lists the flat pixels from the highest to the lowest value (ties in any order),
    ``rank`` is its inverse. Returns (par, level): for rank t (pixel ``order[t]``), ``par[t] > t``
    is its parent's rank (the root is its own parent) and ``level[t]`` its value. The subtree of a
    rank is a connected set of ``{mask >= level}``, and for every t the component of
    ``{mask >= t}`` around a pixel is the subtree of one of its ancestors.

    The union-find is by rank with path compression (its roots ``zpar`` are not tree nodes:
    ``top[root]`` is the component's newest, highest-rank node, the one its next merge hangs under
    the new pixel), which keeps the find chains short; the tree is the same as linking the roots
    themselves. The union-find runs on pixel indices (``zpar``, ``zrank``, ``top`` by pixel), so a
    find starts at a neighbour's entry, next to the new pixel's, not at a random rank.

    ``m[t]`` holds the seeds of rank t (row of ng values) and becomes the largest seed of t's
    subtree (``M`` of :func:`_top_down`): a node gets all its children while it is the new pixel
    (a child hung under it then is complete), so each child's row is merged into the current,
    cache-hot row right there instead of in a separate pass over the table. Exact (a max selects;
    equal values of different bits, +-0, leave the node's own value, as a pass in rank order does).
    """
    h, w = mask.shape
    flat = mask.ravel()
    n = flat.shape[0]
    ng = m.shape[1]
    par = np.empty(n, np.int32)
    zpar = np.empty(n, np.int32)  # by pixel
    top = np.empty(n, np.int32)  # by pixel (a union-find root): a rank
    zrank = np.zeros(n, np.int8)  # by pixel
    level = np.empty(n)
    for t in range(n):
        p = order[t]
        level[t] = flat[p]
        par[t] = t
        zpar[p] = p
        top[p] = t
        zp = p
        mt = m[t]
        i = p // w
        j = p - i * w
        for u in range(4):
            if u == 0:
                if i == 0:
                    continue
                q = p - w
            elif u == 1:
                if i == h - 1:
                    continue
                q = p + w
            elif u == 2:
                if j == 0:
                    continue
                q = p - 1
            else:
                if j == w - 1:
                    continue
                q = p + 1
            if rank[q] >= t:  # not yet in the tree
                continue
            r = _find(zpar, q)
            if r != zp:
                x = top[r]
                par[x] = t
                mx = m[x]
                for g in range(ng):
                    if mx[g] > mt[g]:
                        mt[g] = mx[g]
                if zrank[zp] < zrank[r]:
                    zp, r = r, zp
                zpar[r] = zp
                top[zp] = t
                if zrank[zp] == zrank[r]:
                    zrank[zp] += 1
    return par, level


@numba.njit(cache=True, nogil=True, error_model="numpy")
def _object_windows(offsets, bbox, ys, xs, ry, rx, ny, nx):
    """Per-object bilinear restore weights on the subsampled grid.

    Returns (win (n, 4) = r0, c0, h, w on the small grid; wstart (n+1,); weights flat).
    Pixels whose source coordinate falls outside the grid add nothing (they still count in the
    object's area, like map_coordinates' cval=0).
    """
    n = offsets.shape[0] - 1
    win = np.zeros((n, 4), np.int64)
    wstart = np.zeros(n + 1, np.int64)
    for k in range(n):
        r0 = int(math.floor(bbox[k, 0] * ry))
        c0 = int(math.floor(bbox[k, 1] * rx))
        r1 = min(int(math.floor((bbox[k, 2] - 1) * ry)) + 1, ny - 1)
        c1 = min(int(math.floor((bbox[k, 3] - 1) * rx)) + 1, nx - 1)
        r0 = min(r0, ny - 1)
        c0 = min(c0, nx - 1)
        win[k, 0] = r0
        win[k, 1] = c0
        win[k, 2] = max(r1 - r0 + 1, 1)
        win[k, 3] = max(c1 - c0 + 1, 1)
        wstart[k + 1] = wstart[k] + win[k, 2] * win[k, 3]
    weights = np.zeros(wstart[n])
    for k in range(n):
        base = wstart[k]
        r0w = win[k, 0]
        c0w = win[k, 1]
        ww = win[k, 3]
        for t in range(offsets[k], offsets[k + 1]):
            r = ys[t] * ry
            c = xs[t] * rx
            if r < 0.0 or r > ny - 1 or c < 0.0 or c > nx - 1:
                continue
            r0 = int(math.floor(r))
            c0 = int(math.floor(c))
            fr = r - r0
            fc = c - c0
            r1 = min(r0 + 1, ny - 1)
            c1 = min(c0 + 1, nx - 1)
            weights[base + (r0 - r0w) * ww + (c0 - c0w)] += (1.0 - fr) * (1.0 - fc)
            weights[base + (r0 - r0w) * ww + (c1 - c0w)] += (1.0 - fr) * fc
            weights[base + (r1 - r0w) * ww + (c0 - c0w)] += fr * (1.0 - fc)
            weights[base + (r1 - r0w) * ww + (c1 - c0w)] += fr * fc
    return win, wstart, weights


@numba.njit(cache=True, nogil=True, error_model="numpy")
def _window_cells(win, wstart, weights, nx, drop_zero):
    """The cells of the object windows as flat lists: (cstart (n+1,), cpix = flat index on the
    subsampled grid, cweight), in window (raster) order.

    With ``drop_zero`` the cells of weight 0 (bounding-box cells that no object pixel samples:
    ~40 % of a cell's window) are left out: they add ``0 * rec = +0.0`` to a sum that is never
    -0.0, so the per-object sums are bit-identical as long as every ``rec`` is finite.
    """
    n = win.shape[0]
    cstart = np.zeros(n + 1, np.int64)
    m = 0
    for t in range(wstart[n]):
        if not drop_zero or weights[t] != 0.0:
            m += 1
    cpix = np.empty(m, np.int32)
    cweight = np.empty(m)
    m = 0
    for k in range(n):
        base = wstart[k]
        ww = win[k, 3]
        for a in range(win[k, 2]):
            row = (win[k, 0] + a) * nx + win[k, 1]
            for b in range(ww):
                wt = weights[base + a * ww + b]
                if not drop_zero or wt != 0.0:
                    cpix[m] = row + b
                    cweight[m] = wt
                    m += 1
        cstart[k + 1] = m
    return cstart, cpix, cweight


@numba.njit(cache=True, nogil=True, error_model="numpy")
def _raw_means(image, offsets, ys, xs):
    """Each object's mean of ``image`` (its pixels summed in index order); the flat index is
    formed unsigned, which spares numba's negative-index wraparound of a 2-D lookup."""
    n = offsets.shape[0] - 1
    out = np.empty(n)
    w = np.uint64(image.shape[1])
    flat = image.ravel()
    for k in range(n):
        s = 0.0
        for t in range(offsets[k], offsets[k + 1]):
            s += flat[np.uint64(ys[t]) * w + np.uint64(xs[t])]
        out[k] = s / (offsets[k + 1] - offsets[k])
    return out


@numba.njit(cache=True, nogil=True, error_model="numpy")
def _erode_row(cur, up, dn, out):
    """One row of a 3x3-cross erosion: ``out[j]`` = min of cur[j-1..j+1], up[j], dn[j] (a missing
    row is passed as ``cur``, a missing column is skipped). The first smallest in that order is
    kept, as skimage's; the border columns are peeled so the inner loop has no branches."""
    w = cur.shape[0]
    acc = cur[0]
    if up[0] < acc:
        acc = up[0]
    if dn[0] < acc:
        acc = dn[0]
    if w > 1 and cur[1] < acc:
        acc = cur[1]
    out[0] = acc
    for j in range(1, w - 1):
        acc = cur[j]
        if up[j] < acc:
            acc = up[j]
        if dn[j] < acc:
            acc = dn[j]
        if cur[j - 1] < acc:
            acc = cur[j - 1]
        if cur[j + 1] < acc:
            acc = cur[j + 1]
        out[j] = acc
    if w > 1:
        acc = cur[w - 1]
        if up[w - 1] < acc:
            acc = up[w - 1]
        if dn[w - 1] < acc:
            acc = dn[w - 1]
        if cur[w - 2] < acc:
            acc = cur[w - 2]
        out[w - 1] = acc


@numba.njit(cache=True, nogil=True, error_model="numpy")
def _erosion_stack(pixels, ng, rank, m):
    """``m[rank[p], g]`` = ``pixels`` eroded ``g + 1`` times by the 3x3 cross (outside pixels
    ignored: skimage ``erosion(footprint=disk(1))``), at pixel p.

    A wavefront over rows: at step s level g computes its row s - g from level g - 1's rows
    s - g - 1 .. s - g + 1, so no eroded image is held, only a ring of ng + 2 rows of all ng
    levels (``stage[row, g]``, contiguous rows for the erosion itself). A row is complete ng steps
    after it started; its ng values per pixel are then written to ``m`` as one row each (one
    scattered 128-byte store per pixel instead of ng stores, ng steps apart, to the same row).
    """
    h, w = pixels.shape
    ring = ng + 2  # level g's row r is read by level g + 1's row r + 1, one step after row r is done
    stage = np.empty((ring, ng, w))
    for s in range(h + ng):
        for g in range(1, ng + 1):
            r = s - g
            if r < 0 or r >= h:
                continue
            if g == 1:  # level 0 is the image itself
                cur = pixels[r]
                up = pixels[r - 1] if r > 0 else cur
                dn = pixels[r + 1] if r + 1 < h else cur
            else:
                cur = stage[r % ring, g - 2]
                up = stage[(r - 1) % ring, g - 2] if r > 0 else cur
                dn = stage[(r + 1) % ring, g - 2] if r + 1 < h else cur
            _erode_row(cur, up, dn, stage[r % ring, g - 1])
        r = s - ng
        if r >= 0:
            done = stage[r % ring]
            base = r * w
            for j in range(w):
                row = m[rank[base + j]]
                for g in range(ng):
                    row[g] = done[g, j]


@numba.njit(cache=True, nogil=True, error_model="numpy")
def _top_down(m, par, level):
    """Grey reconstructions by dilation (3x3 cross) of ng seeds (each <= the mask) from the
    max-tree, in place: ``m[t, g]`` holds M (the largest seed g in t's subtree, from
    :func:`_max_tree`) and becomes the reconstruction of seed g at rank t.

    rec(p) = max over the ancestors A of p (p included) of min(level(A), M(A)): the component of
    {mask >= t} around p holds a seed value >= t exactly when some ancestor subtree does. Exact
    (values are selected, never computed), hence identical to skimage.morphology.reconstruction.
    One pass over the tree for all ng seeds (the ng values of a rank are adjacent), parents before
    children, so a parent (higher rank) is final before its children are visited, and a rank's
    own M is read before it is overwritten.
    """
    n, ng = m.shape
    for t in range(n - 1, -1, -1):  # parents before children
        lv = level[t]
        q = par[t]
        mt = m[t]
        if q != t:
            mq = m[q]
            for g in range(ng):
                v = lv if lv < mt[g] else mt[g]
                if mq[g] > v:
                    v = mq[g]
                mt[g] = v
        else:
            for g in range(ng):
                mt[g] = lv if lv < mt[g] else mt[g]


@numba.njit(cache=True, nogil=True, error_model="numpy")
def _spectrum_recs(pixels, order, recs):
    """Reconstructions after 1..ng cross erosions into ``recs[rank, g]`` (max-tree rank order, the
    ng values of one pixel adjacent for the per-object pass); returns pixel -> rank."""
    rank = _ranks(order)
    _erosion_stack(pixels, recs.shape[1], rank, recs)
    par, level = _max_tree(pixels, order, rank, recs)
    _top_down(recs, par, level)
    return rank


@numba.njit(cache=True, nogil=True, error_model="numpy")
def _spectrum_objects(recs, wstart, wrank, weights, area, start_mean, current, out):
    ng = recs.shape[1]
    acc = np.empty(ng)
    for k in range(area.shape[0]):
        acc[:] = 0.0
        for t in range(wstart[k], wstart[k + 1]):
            wt = weights[t]
            row = recs[wrank[t]]
            for g in range(ng):
                acc[g] += wt * row[g]
        cur = current[k]
        for g in range(ng):
            new_mean = acc[g] / area[k]
            out[g, k] = (cur - new_mean) * 100.0 / start_mean[k]
            cur = new_mean


def _image_spectrum(
    img: np.ndarray, spectrum_length: int, subsample_size: float, background_subsample_size: float,
    element_size: int,
) -> tuple[np.ndarray, np.ndarray, tuple[int, int], float]:
    """Image-level part (steps 1-3), cached by image content: the same channel measured for
    several label images (nuclei, cells, cytoplasm) and for the image spectrum reuses it. The last
    item is the mean of the tophat image (the image spectrum's start mean)."""
    key = (fingerprint(img), img.shape, spectrum_length, subsample_size, background_subsample_size,
           element_size)
    with _LOCK:
        hit = _SPECTRUM_CACHE.get(key)
        if hit is not None:
            _SPECTRUM_CACHE.move_to_end(key)
            return hit
    pixels, small = tophat_small_image(img, subsample_size, background_subsample_size, element_size)
    if pixels.min() >= 0.0:  # the tophat is clipped at 0: only a NaN fails this
        order = _descending_order(pixels)
    else:
        order = np.argsort(-pixels.ravel()).astype(np.int32)
    # allocated by numpy, which asks the kernel for huge pages for it (the table is ~37 MB for a
    # 1080x1080 image at subsample 0.5): thousands fewer page faults than numba's allocation
    recs = np.empty((order.shape[0], int(spectrum_length)))
    rank = _spectrum_recs(pixels, order, recs)
    tophat_mean = float(np.mean(pixels))
    with _LOCK:
        _SPECTRUM_CACHE[key] = (recs, rank, small, tophat_mean)
        while len(_SPECTRUM_CACHE) > _SPECTRUM_CACHE_SIZE:
            _SPECTRUM_CACHE.popitem(last=False)
    return recs, rank, small, tophat_mean


def tophat_small_image(
    image: np.ndarray, subsample_size: float, background_subsample_size: float, element_size: int
) -> tuple[np.ndarray, tuple[int, int]]:
    """Steps 1-2: the subsampled, background-subtracted image and its shape."""
    h, w = image.shape
    img = np.ascontiguousarray(image, dtype=np.float64)
    if subsample_size < 1:
        ny, nx = int(h * subsample_size), int(w * subsample_size)
        pixels = _bilinear_grid(img, float(subsample_size), float(subsample_size), ny, nx, True)
    else:
        ny, nx = h, w
        pixels = img.copy()
    if background_subsample_size < 1:
        by, bx = ny * background_subsample_size, nx * background_subsample_size
        back = _bilinear_grid(pixels, float(background_subsample_size), float(background_subsample_size),
                              math.ceil(by), math.ceil(bx), True)
    else:
        by, bx = float(ny), float(nx)
        back = pixels
    back = _morph_disk(_morph_disk(back, int(element_size), True), int(element_size), False)
    if background_subsample_size < 1:
        back = _bilinear_grid(back, (by - 1) / (ny - 1), (bx - 1) / (nx - 1), ny, nx, False)
    pixels = pixels - back
    pixels[pixels < 0] = 0
    return pixels, (ny, nx)


def measure_granularity(
    image: np.ndarray,
    labels: np.ndarray,
    channel: str,
    spectrum_length: int,
    subsample_size: float,
    background_subsample_size: float,
    element_size: int,
    index: ObjectIndex | None = None,
) -> dict[str, np.ndarray]:
    """``Granularity_{k}_{channel}`` (k = 1..spectrum_length) per object, CellProfiler's definition."""
    if image.ndim != 2 or image.shape != labels.shape:
        raise ValueError(f"image {image.shape} and labels {labels.shape} must be equal 2-D shapes")
    if index is None:
        index = build_index(labels)
    n = index.n_objects
    names = [f"Granularity_{k}_{channel}" for k in range(1, spectrum_length + 1)]
    h, w = image.shape
    eff = (int(h * subsample_size), int(w * subsample_size)) if subsample_size < 1 else (h, w)
    if min(eff) < 2 or n == 0:
        fill = np.nan if n else 0.0
        return {name: np.full(n, fill) for name in names}
    img = np.ascontiguousarray(image, dtype=np.float64)
    recs, rank, (ny, nx), tophat_mean = _image_spectrum(img, int(spectrum_length), float(subsample_size),
                                                     float(background_subsample_size), int(element_size))
    ry = float(ny - 1) / float(h - 1)
    rx = float(nx - 1) / float(w - 1)
    key = (id(index), ny, nx, ry, rx)
    hit = _WINDOW_CACHE.get(key)
    if hit is None:
        win, wstart, weights = _object_windows(index.offsets, index.bbox, index.ys, index.xs, ry, rx, ny, nx)
        hit = (win, wstart, weights, _window_cells(win, wstart, weights, nx, True))
        with _LOCK:
            if key not in _WINDOW_CACHE:
                _WINDOW_CACHE[key] = hit
                weakref.finalize(index, _WINDOW_CACHE.pop, key, None)
    win, wstart, weights, cells = hit
    if not math.isfinite(tophat_mean):  # a NaN/inf rec times weight 0 is NaN: keep every cell
        cells = _window_cells(win, wstart, weights, nx, False)
    cstart, cpix, cweight = cells
    wrank = rank[cpix]
    area = index.areas.astype(np.float64)
    current = _raw_means(img, index.offsets, index.ys, index.xs)
    start_mean = np.maximum(current, np.finfo(float).eps)
    out = np.empty((spectrum_length, n))
    _spectrum_objects(recs, cstart, wrank, cweight, area, start_mean, current, out)
    return {name: out[k].copy() for k, name in enumerate(names)}


def image_granularity(
    image: np.ndarray,
    channel: str,
    spectrum_length: int,
    subsample_size: float,
    background_subsample_size: float,
    element_size: int,
) -> dict[str, float]:
    """``Granularity_{k}_{channel}`` of the whole image (CellProfiler's image measurement of
    MeasureGranularity): with ``mean_0`` the mean of the subsampled tophat image and ``mean_k`` the
    mean of the k-th reconstruction on that grid, ``(mean_{k-1} - mean_k) * 100 / max(mean_0, eps)``.
    Shares the cached image-level part with :func:`measure_granularity`."""
    if image.ndim != 2:
        raise ValueError(f"image must be 2-D, got shape {image.shape}")
    h, w = image.shape
    eff = (int(h * subsample_size), int(w * subsample_size)) if subsample_size < 1 else (h, w)
    names = [f"Granularity_{k}_{channel}" for k in range(1, spectrum_length + 1)]
    if min(eff) < 2:
        return {name: float("nan") for name in names}
    img = np.ascontiguousarray(image, dtype=np.float64)
    recs, _, _, start = _image_spectrum(img, int(spectrum_length), float(subsample_size),
                                        float(background_subsample_size), int(element_size))
    means = recs.mean(axis=0)
    denom = max(start, float(np.finfo(float).eps))
    out: dict[str, float] = {}
    prev = start
    for k, name in enumerate(names):
        out[name] = (prev - float(means[k])) * 100.0 / denom
        prev = float(means[k])
    return out
