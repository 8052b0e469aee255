"""``centrosome.propagate.propagate`` on a zero image with weight 1, the one port both users share:
the radial distribution around the nuclei centres (:mod:`.radial_centers`) and the mito skeleton's
MeasureObjectSkeleton (:mod:`.skeleton_steps`). Every pixel of a mask gets the label of the seed it is
nearest to along the mask (8-connected steps of 1 and sqrt(2)) and that geodesic distance, with
centrosome's own tie-breaking, so the labels and distances equal centrosome's exactly.
"""

from __future__ import annotations

import math

import numba
import numpy as np

from ._common import radix_sort

__all__ = ["COORD_MAX", "propagate", "propagate_into"]

# the heap's tie-break (label, row, column) packed into one int64, compared as one number
_COORD_BITS = 21
COORD_MAX = 1 << _COORD_BITS


@numba.njit(cache=True, nogil=True)
def _pack(label, y, x):
    """(label, row, column) as one int64 ordered like the tuple (each < 2**21)."""
    return (label << 42) | (y << 21) | x


@numba.njit(cache=True, nogil=True)
def _sort_bucket(kb, tb, m, tmp_k, tmp_t, hist):
    """Sort the first ``m`` entries of (kb, tb) in place into increasing (k, t) order: a stable
    radix sort by k carrying t, then each run of equal k sorted by t."""
    radix_sort(kb, tb, m, 8, tmp_k, tmp_t, hist, True)
    s = 0
    while s < m:
        e = s + 1
        k = kb[s]
        while e < m and kb[e] == k:
            e += 1
        if e - s > 1:
            tb[s:e].sort()
        s = e


@numba.njit(cache=True, nogil=True)
def _bucket_push(kbuf, tbuf, cnt, slot, k, t):
    """Append (k, t) to bucket ``slot`` of (kbuf, tbuf); returns the (maybe grown) buffers."""
    c = cnt[slot]
    if c == kbuf.shape[1]:
        k2 = np.empty((3, 2 * c), np.uint64)
        t2 = np.empty((3, 2 * c), np.int64)
        for r in range(3):
            k2[r, :cnt[r]] = kbuf[r, :cnt[r]]
            t2[r, :cnt[r]] = tbuf[r, :cnt[r]]
        kbuf, tbuf = k2, t2
    kbuf[slot, c] = k
    tbuf[slot, c] = t
    cnt[slot] = c + 1
    return kbuf, tbuf


@numba.njit(cache=True, nogil=True)
def propagate_into(mask, seeds, out_label, out_dist):
    """centrosome.propagate(zeros, seeds, mask, 1) restricted to seeds inside ``mask``: nearest seed
    label (``out_label``, 0 = unreached) and geodesic distance (``out_dist``, -1 = unreached).

    centrosome pops its heap in (distance without its last mantissa bit, label, row, column) order.
    Here the entries are kept in buckets by the distance's integer part b. Every step is 1 or
    sqrt(2), so the entries pushed while bucket b is popped go to buckets b + 1 and b + 2 (float
    addition is monotone): bucket b is complete when its turn comes, and popping it sorted by the
    heap's key gives the heap's exact order (the key is monotone in the distance, and no key is
    shared across an integer, whose bit pattern is even). Three buckets are live at a time.
    """
    h, w = mask.shape
    scratch = np.zeros(1)
    bits = scratch.view(np.uint64)
    kbuf = np.empty((3, 1024), np.uint64)
    tbuf = np.empty((3, 1024), np.int64)
    cnt = np.zeros(3, np.int64)
    for y in range(h):
        for x in range(w):
            if seeds[y, x] != 0:
                out_dist[y, x] = 0.0
                if mask[y, x]:
                    kbuf, tbuf = _bucket_push(kbuf, tbuf, cnt, 0, np.uint64(0), _pack(seeds[y, x], y, x))
    di = (-1, -1, -1, 0, 0, 1, 1, 1)
    dj = (-1, 0, 1, -1, 1, -1, 0, 1)
    low = (1 << 21) - 1
    hist = np.zeros(256, np.int64)
    kb = np.empty(0, np.uint64)
    tb = np.empty(0, np.int64)
    tmp_k = np.empty(0, np.uint64)
    tmp_t = np.empty(0, np.int64)
    b = 0
    while cnt[0] + cnt[1] + cnt[2] > 0:
        slot = b % 3
        m = cnt[slot]
        if m > kb.shape[0]:
            kb = np.empty(2 * m, np.uint64)
            tb = np.empty(2 * m, np.int64)
            tmp_k = np.empty(2 * m, np.uint64)
            tmp_t = np.empty(2 * m, np.int64)
        kb[:m] = kbuf[slot, :m]
        tb[:m] = tbuf[slot, :m]
        cnt[slot] = 0
        _sort_bucket(kb, tb, m, tmp_k, tmp_t, hist)
        for u in range(m):
            t = tb[u]
            lab = t >> 42
            y = (t >> 21) & low
            x = t & low
            if out_label[y, x] != 0:
                continue
            out_label[y, x] = lab
            d0 = out_dist[y, x]
            for q in range(8):
                y2 = y + di[q]
                x2 = x + dj[q]
                if y2 < 0 or y2 >= h or x2 < 0 or x2 >= w:
                    continue
                if out_label[y2, x2] > 0 or not mask[y2, x2]:
                    continue
                manhattan = abs(di[q]) + abs(dj[q])
                d = math.sqrt(0.0 + manhattan * 1.0 * 1.0) + d0
                if out_dist[y2, x2] == -1 or out_dist[y2, x2] > d:
                    out_dist[y2, x2] = d
                    scratch[0] = d
                    kbuf, tbuf = _bucket_push(kbuf, tbuf, cnt, int(d) % 3, bits[0] >> np.uint64(1),
                                              _pack(lab, y2, x2))
        b += 1



def propagate(seeds: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``centrosome.propagate.propagate(zeros, seeds, mask, 1)``: (labels, distances); seed pixels keep
    their label at distance 0 (also outside ``mask``), unreached mask pixels get label 0 and -1."""
    seeds = np.ascontiguousarray(seeds, np.int64)
    if max(seeds.shape) >= COORD_MAX or (seeds.size and int(seeds.max()) >= COORD_MAX):
        raise ValueError(f"propagate: images and labels must be below {COORD_MAX} (got {seeds.shape})")
    labels = np.zeros(seeds.shape, np.int64)
    dist = np.full(seeds.shape, -1.0)
    propagate_into(np.ascontiguousarray(mask, bool), seeds, labels, dist)
    labels[seeds > 0] = seeds[seeds > 0]
    return labels, dist
