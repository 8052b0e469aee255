"""centrosome's binary-morphology steps that CellProfiler 4's MeasureObjectSkeleton runs, ported to numba.

``centrosome.cpmorphology``'s 3x3 tables (branch points, branchings, end points, cornerness, the thinning
rule, the skeleton-length weights; index bit ``3 * (di + 1) + (dj + 1)``), ``skeletonize`` (thinning in
distance / cornerness / seeded-permutation order; pixels of the first row are never removed, as in its
``skeletonize_loop``), ``fill_labeled_holes`` for a binary image and ``skeleton_length``
(``propagate`` is :mod:`.propagate`'s, shared with the radial distribution around the nuclei centres). Each
keeps centrosome's order of work and tie-breaking, so results equal centrosome's exactly
(``tests/test_features_skeleton.py`` through CellProfiler's own module code).
"""

from __future__ import annotations

from functools import lru_cache

import numba
import numpy as np

__all__ = ["fill_small_holes", "index_image", "skeleton_length", "skeletonize", "tables"]

# ---------------------------------------------------------------------------------------------------
# 3x3 neighbourhood tables (centrosome.cpmorphology), index bit 3 * (di + 1) + (dj + 1)
# ---------------------------------------------------------------------------------------------------


def _pattern(index: int) -> np.ndarray:
    return np.array([(index >> b) & 1 for b in range(9)], bool).reshape(3, 3)


@lru_cache(maxsize=1)
def tables() -> dict[str, np.ndarray]:
    """centrosome's skeletonize / branchpoints / branchings / endpoints / cornerness / length tables."""
    from scipy import ndimage as ndi

    eight = np.ones((3, 3), bool)
    pats = [_pattern(i) for i in range(512)]
    n8 = np.array([ndi.label(p, eight)[1] for p in pats])
    n8_wo = np.array([ndi.label(p & ~_pattern(16), eight)[1] for p in pats])
    n4_wo = np.array([ndi.label(p & ~_pattern(16))[1] for p in pats])
    total = np.array([p.sum() for p in pats])
    centre = (np.arange(512) & 16) != 0
    # keep a pixel if it is off, if it has at most one neighbour, or if removing it changes the
    # number of 8-connected pieces of its neighbourhood
    skel = ~centre | (n8 != n8_wo) | (total < 3)
    length = np.zeros(512, np.float32)
    for ii in (-1, 0, 1):
        for jj in (-1, 0, 1):
            if ii == 0 and jj == 0:
                continue
            idx = 2 ** (ii + 1 + (jj + 1) * 3) | 16
            mask = (np.arange(512) & idx) == idx
            if ii != 0 and jj != 0:
                for ai, aj in ((ii - 1, jj), (ii, jj - 1), (ii + 1, jj), (ii, jj + 1)):
                    if any(v < -1 or v > 1 for v in (ai, aj)):
                        continue
                    aidx = 2 ** (ai + 1 + (aj + 1) * 3)
                    mask = mask & ((np.arange(512) & aidx) != aidx)
            length[mask] += np.sqrt(ii * ii + jj * jj) / 2
    return {
        "skeletonize": skel.astype(np.uint8),
        "branchpoints": (centre & (n4_wo > 2)).astype(np.uint8),
        "branchings": np.where(centre, n4_wo, 0).astype(np.int64),
        "endpoints": (centre & (total <= 2)).astype(np.uint8),
        "cornerness": (9 - total).astype(np.int64),
        "length": length,
    }


@numba.njit(cache=True, nogil=True)
def _neighbourhood_index(img, i, j):
    """The 0..511 index of pixel (i, j)'s 3x3 neighbourhood of a 0/1 image (outside: 0)."""
    h, w = img.shape
    acc = 0
    bit = 1
    for di in range(-1, 2):
        for dj in range(-1, 2):
            y = i + di
            x = j + dj
            if 0 <= y < h and 0 <= x < w and img[y, x]:
                acc += bit
            bit *= 2
    return acc


@numba.njit(cache=True, nogil=True)
def index_image(img):
    """The 0..511 neighbourhood index of every pixel of a 0/1 image (outside: 0), from which one
    ``table[index]`` is centrosome's ``table_lookup`` for one iteration with border 0."""
    h, w = img.shape
    out = np.empty((h, w), np.int64)
    for i in range(h):
        for j in range(w):
            if 0 < i < h - 1 and 0 < j < w - 1:
                out[i, j] = (img[i - 1, j - 1] + 2 * img[i - 1, j] + 4 * img[i - 1, j + 1]
                             + 8 * img[i, j - 1] + 16 * img[i, j] + 32 * img[i, j + 1]
                             + 64 * img[i + 1, j - 1] + 128 * img[i + 1, j] + 256 * img[i + 1, j + 1])
            else:
                out[i, j] = _neighbourhood_index(img, i, j)
    return out


# ---------------------------------------------------------------------------------------------------
# centrosome.cpmorphology.skeletonize
# ---------------------------------------------------------------------------------------------------


@lru_cache(maxsize=4)
def _tiebreaker(shape: tuple[int, int]) -> np.ndarray:
    """centrosome's per-pixel tie-breaker: ``np.random.seed(0); permutation(H * W)``."""
    return np.random.RandomState(0).permutation(np.arange(shape[0] * shape[1])).reshape(shape)


@numba.njit(cache=True, nogil=True)
def _thin(result, ii, jj, order, table):
    """centrosome's ``skeletonize_loop``: visit pixels in ``order``, keep each per ``table``. As in
    centrosome (its whole neighbourhood test sits under ``if ii > 0``), pixels of the first row are
    never removed."""
    for k in range(order.shape[0]):
        p = order[k]
        i = ii[p]
        j = jj[p]
        if i == 0:
            continue
        acc = _neighbourhood_index(result, i, j) | 16
        result[i, j] = table[acc]


@numba.njit(cache=True, nogil=True)
def _edt_at(img, ii, jj):
    """``scipy.ndimage.distance_transform_edt(img)`` at the foreground pixels (ii, jj): sqrt of the
    smallest squared distance to a background pixel of the image, searched ring by ring (Chebyshev
    radius r) until no farther ring can be closer; -1 where the image has no background."""
    h, w = img.shape
    out = np.empty(ii.shape[0], np.float64)
    for k in range(ii.shape[0]):
        i = ii[k]
        j = jj[k]
        best = -1
        r = 1
        while r <= h + w and (best < 0 or r * r < best):
            for y in range(max(i - r, 0), min(i + r, h - 1) + 1):
                dy = y - i
                edge_row = dy == -r or dy == r
                step = 1 if edge_row else 2 * r
                x = j - r
                while x <= j + r:
                    if 0 <= x < w and not img[y, x]:
                        d2 = dy * dy + (x - j) * (x - j)
                        if best < 0 or d2 < best:
                            best = d2
                    x += step
            r += 1
        out[k] = np.sqrt(np.float64(best)) if best >= 0 else -1.0
    return out


def skeletonize(image: np.ndarray) -> np.ndarray:
    """centrosome ``cpmorphology.skeletonize(image)`` (no mask, distance-transform ordering)."""
    from scipy import ndimage as ndi

    img = np.asarray(image, bool)
    t = tables()
    ii, jj = np.nonzero(img)
    distance = _edt_at(img, ii, jj)            # the distance transform where it is used
    if distance.size and distance.min() < 0:   # no background at all: scipy's own answer
        distance = ndi.distance_transform_edt(img)[img]
    corner = t["cornerness"][index_image(img.astype(np.int64))]
    order = np.lexsort((_tiebreaker(img.shape)[img], corner[img], distance))
    result = np.ascontiguousarray(img, np.uint8)
    _thin(result, ii.astype(np.int32), jj.astype(np.int32), order.astype(np.int32), t["skeletonize"])
    return result.astype(bool)


# ---------------------------------------------------------------------------------------------------
# centrosome.cpmorphology.fill_labeled_holes (binary image, a mask, CellProfiler's size function)
# ---------------------------------------------------------------------------------------------------


@numba.njit(cache=True, nogil=True)
def _walk_holes(jlist, start, count, is_not_hole, adjacent, to_do, to_do_count, lcount):
    """centrosome's ``fill_labeled_holes_loop``: mark what is reachable from the non-holes, then give each
    hole the object that encloses it."""
    n = is_not_hole.shape[0]
    while to_do_count > 0:
        ii = to_do[to_do_count - 1]
        to_do_count -= 1
        for k in range(count[ii]):
            jj = jlist[start[ii] + k]
            if is_not_hole[jj] == 0:
                if ii <= lcount:
                    if adjacent[jj] == 0:
                        adjacent[jj] = ii
                        continue
                    elif adjacent[jj] == ii:
                        continue
                elif jj > lcount:
                    continue
                is_not_hole[jj] = 1
                to_do[to_do_count] = jj
                to_do_count += 1
    to_do_count = 0
    for jj in range(n):
        if is_not_hole[jj] == 0 and adjacent[jj] != 0:
            to_do[to_do_count] = jj
            to_do_count += 1
    while to_do_count > 0:
        ii = to_do[to_do_count - 1]
        to_do_count -= 1
        for k in range(count[ii]):
            jj = jlist[start[ii] + k]
            if is_not_hole[jj] == 0 and adjacent[jj] == 0:
                adjacent[jj] = adjacent[ii]
                to_do[to_do_count] = jj
                to_do_count += 1


@numba.njit(cache=True, nogil=True)
def _adjacency(labels, n_labels, lcount):
    """(start, count, j-list) of the distinct labels 4-adjacent to each label 0..n_labels-1, each list in
    ascending order: centrosome's sorted, de-duplicated (i, j) pairs in both orders. Labels above
    ``lcount`` are 4-connected background pieces, so any adjacent pair has one side <= lcount (<= 1 for
    a binary image): a (lcount + 1, n_labels) table of flags holds them all."""
    h, w = labels.shape
    flags = np.zeros((lcount + 1, n_labels), np.bool_)
    for y in range(h):
        for x in range(w):
            a = labels[y, x]
            for k in range(2):
                yy = y + 1 - k
                xx = x + k
                if yy >= h or xx >= w:
                    continue
                b = labels[yy, xx]
                if a == b:
                    continue
                lo = min(a, b)
                hi = max(a, b)
                if lo > lcount:
                    raise ValueError("two background pieces touch")
                flags[lo, hi] = True
                if hi <= lcount:
                    flags[hi, lo] = True
    count = np.zeros(n_labels, np.int64)
    for a in range(lcount + 1):
        for b in range(n_labels):
            if flags[a, b]:
                count[a] += 1
                if b > lcount:
                    count[b] += 1
    start = np.zeros(n_labels, np.int64)
    for v in range(1, n_labels):
        start[v] = start[v - 1] + count[v - 1]
    jlist = np.empty(max(start[n_labels - 1] + count[n_labels - 1], 1), np.int64)
    fill = start.copy()
    for a in range(lcount + 1):
        for b in range(n_labels):
            if flags[a, b]:
                jlist[fill[a]] = b
                fill[a] += 1
    for b in range(lcount + 1, n_labels):    # a background piece's neighbours: objects, ascending
        for a in range(lcount + 1):
            if flags[a, b]:
                jlist[fill[b]] = a
                fill[b] += 1
    return start, count, jlist


@numba.njit(cache=True, nogil=True)
def _merge_labels(img, blabels, lcount, n_labels):
    """centrosome's ``labels = img.astype(int); labels[blabels != 0] = blabels + lcount + 1`` and the
    labels' areas (``np.bincount``, ``n_labels`` long), in one pass."""
    h, w = img.shape
    labels = np.empty((h, w), np.int64)
    areas = np.zeros(n_labels, np.int64)
    for i in range(h):
        for j in range(w):
            b = blabels[i, j]
            v = b + lcount + 1 if b != 0 else np.int64(img[i, j])
            labels[i, j] = v
            areas[v] += 1
    return labels, areas


@numba.njit(cache=True, nogil=True)
def _relabelled_mask(labels, mask, new):
    """``out = labels.copy(); out[mask] = new[labels[mask]]; out.astype(bool)`` in one pass."""
    h, w = labels.shape
    out = np.empty((h, w), np.bool_)
    for i in range(h):
        for j in range(w):
            v = labels[i, j]
            out[i, j] = (new[v] if mask[i, j] else v) != 0
    return out


def fill_small_holes(image: np.ndarray, mask: np.ndarray, max_hole_size: int) -> np.ndarray:
    """``centrosome.cpmorphology.fill_labeled_holes(image, mask, size_fn)`` as MeasureObjectSkeleton calls
    it on its binary ring-and-skeleton image: ``size_fn`` is ``(~is_object) and area <= max``, which is
    ``area <= max`` for either kind of region (``~`` of a Python bool is a non-zero int), so regions
    larger than ``max_hole_size`` are never holes."""
    from scipy import ndimage as ndi

    img = np.asarray(image, bool)
    background = ~img & mask
    blabels, count = ndi.label(background)
    lcount = int(img.any())
    lmax = lcount + count + 1
    labels, areas = _merge_labels(img, blabels, lcount, lmax + 1)
    is_not_hole = np.zeros(lmax + 1, np.uint8)
    edge = np.unique(np.concatenate([labels[0, :], labels[:, 0], labels[-1, :], labels[:, -1]]))
    to_do = [int(v) for v in edge[edge != 0]]
    is_not_hole[to_do] = 1
    adjacent = np.zeros(lmax + 1, np.int64)
    start, i_count, jlist = _adjacency(labels, lmax + 1, lcount)
    if i_count.sum() > 0:
        big = (np.arange(areas.size) > 0) & (areas > max_hole_size) & (is_not_hole[: areas.size] == 0)
        for ii in np.flatnonzero(big):
            is_not_hole[ii] = 1
            to_do.append(int(ii))
        todo = np.zeros(max(len(to_do), lmax + 1), np.int64)
        todo[: len(to_do)] = to_do
        _walk_holes(jlist, start, i_count, is_not_hole, adjacent, todo, len(to_do), lcount)
    new = np.arange(lmax + 1, dtype=np.int64)
    new[lcount + 1:] = 0
    holes = is_not_hole == 0
    new[holes] = adjacent[holes]
    return _relabelled_mask(labels, np.asarray(mask, bool), new)


# ---------------------------------------------------------------------------------------------------
# centrosome.cpmorphology.skeleton_length
# ---------------------------------------------------------------------------------------------------


@numba.njit(cache=True, nogil=True)
def skeleton_length(labels, table, n_labels):
    """Per label 0..n_labels: the sum over its pixels of ``table[same-label neighbourhood index]`` (float32
    scores added in float64 in raster order, as ``np.bincount`` does)."""
    h, w = labels.shape
    out = np.zeros(n_labels + 1, np.float64)
    for i in range(h):
        for j in range(w):
            c = labels[i, j]
            acc = 0
            bit = 1
            for di in range(-1, 2):
                for dj in range(-1, 2):
                    y = i + di
                    x = j + dj
                    if 0 <= y < h and 0 <= x < w and labels[y, x] == c:
                        acc += bit
                    bit *= 2
            if c <= n_labels:
                out[c] += np.float64(table[acc])
    return out
