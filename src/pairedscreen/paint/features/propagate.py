"""``centrosome.propagate.propagate`` on a zero image with weight 1, the one port both users share:
the radial distribution around the nuclei centres (:mod:`.radial_centers`) and the mito skeleton's
MeasureObjectSkeleton (:mod:`.skeleton_steps`). Every pixel of a mask gets the label of the seed it is
nearest to along the mask (8-connected steps of 1 and sqrt(2)) and that geodesic distance, with
centrosome's own tie-breaking, so the labels and distances equal centrosome's exactly.

centrosome pops its heap in key order, key = (distance without its last mantissa bit, label, row,
column), and a pop labels its pixel and offers ``distance + step`` to the unlabelled mask neighbours
(an offer is pushed when it is strictly below the neighbour's distance so far). Why the result does
not need that pop order (which sorts every bucket and jumps across the image):

- the distances are the least fixed point ``d(p) = min_q fl(d(q) + step)`` over p's mask neighbours:
  a pixel whose distance has integer part b is reached by a neighbour of integer part < b, every
  later offer is >= b + 1, so the distances of bucket b are final before any of its pops, in any order;
- p's label is the label of its first-popped entry, the least key among the entries pushed for p.
  The offers to p come, in key order, from its neighbours of integer part < b (later neighbours offer
  >= b + 1 or find p labelled). The pushed ones are the successive strict minima; the least key is the
  first offer of exactly d(p) (A) unless an offer of d(p) + 1 ulp sharing d(p)'s key (d(p)'s bit
  pattern even) came first (B): then both were pushed and the smaller label of the two wins.

So a pixel's label is a local function of its earlier-bucket neighbours' (distance, label, row,
column), fixed when its bucket comes. The buckets (by the distance's integer part; steps < 2, so three
are live) are popped in push order, which follows the wavefront and keeps the memory accesses local.
"""

from __future__ import annotations

import math

import numba
import numpy as np

__all__ = ["propagate", "propagate_into"]

_SQRT2 = math.sqrt(2.0)  # == math.sqrt(0.0 + 2 * 1.0 * 1.0), centrosome's diagonal step


@numba.njit(cache=True, nogil=True)
def _bucket_push(buf, cnt, slot, p):
    """Append pixel ``p`` to bucket ``slot`` of ``buf`` (3, cap); returns the (maybe grown) buffer."""
    c = cnt[slot]
    if c == buf.shape[1]:
        grown = np.empty((3, 2 * c), np.int64)
        for r in range(3):
            grown[r, :cnt[r]] = buf[r, :cnt[r]]
        buf = grown
    buf[slot, c] = p
    cnt[slot] = c + 1
    return buf


@numba.njit(cache=True, nogil=True)
def _key_less(ka, la, ya, xa, kb, lb, yb, xb):
    """(ka, la, ya, xa) < (kb, lb, yb, xb): centrosome's heap order of two popped neighbours."""
    if ka != kb:
        return ka < kb
    if la != lb:
        return la < lb
    if ya != yb:
        return ya < yb
    return xa < xb


@numba.njit(cache=True, nogil=True)
def propagate_into(mask, seeds, out_label, out_dist):
    """centrosome.propagate(zeros, seeds, mask, 1) restricted to seeds inside ``mask``: nearest seed
    label (``out_label``, 0 = unreached) and geodesic distance (``out_dist``, -1 = unreached); both
    arrays come zeroed / filled with -1. Seeds' distance is 0, also outside the mask.

    Dijkstra with three circular buckets by the distance's integer part, popped in push order; each
    pixel's label is fixed at its first pop from its earlier-bucket neighbours.
    """
    h, w = mask.shape
    bits = np.zeros(1)
    ubits = bits.view(np.uint64)  # bits[0]'s bit pattern
    buf = np.empty((3, 1024), np.int64)
    cnt = np.zeros(3, np.int64)
    for y in range(h):
        for x in range(w):
            if seeds[y, x] != 0:
                out_dist[y, x] = 0.0
                if mask[y, x]:
                    buf = _bucket_push(buf, cnt, 0, y * w + x)
    b = 0
    while cnt[0] + cnt[1] + cnt[2] > 0:
        slot = b % 3
        m = cnt[slot]
        # pushes from bucket b go to buckets b + 1 and b + 2 (steps are 1 or sqrt(2)), never to ``slot``
        for u in range(m):
            p = buf[slot, u]
            y = p // w
            x = p - y * w
            if out_label[y, x] != 0:
                continue
            d0 = out_dist[y, x]
            # one pass over the 8 neighbours: the label's candidates A and B among the labelled ones
            # of integer part < b (module docstring), and the offers to the unlabelled ones
            bits[0] = d0
            kd = ubits[0]
            even = (kd & np.uint64(1)) == np.uint64(0)
            a_lab = 0
            b_lab = 0
            a_k = np.uint64(0)
            b_k = np.uint64(0)
            a_y = a_x = b_y = b_x = 0
            for dy in range(-1, 2):
                y2 = y + dy
                if y2 < 0 or y2 >= h:
                    continue
                for dx in range(-1, 2):
                    x2 = x + dx
                    if (dy == 0 and dx == 0) or x2 < 0 or x2 >= w:
                        continue
                    step = 1.0 if (dy == 0 or dx == 0) else _SQRT2
                    lab = out_label[y2, x2]
                    if lab > 0:
                        dq = out_dist[y2, x2]
                        if b == 0 or not dq < b:
                            continue
                        offer = step + dq
                        bits[0] = dq
                        kq = ubits[0] >> np.uint64(1)
                        if offer == d0:
                            if a_lab == 0 or _key_less(kq, lab, y2, x2, a_k, a_lab, a_y, a_x):
                                a_lab, a_k, a_y, a_x = lab, kq, y2, x2
                        elif even:
                            bits[0] = offer
                            if ubits[0] == kd + np.uint64(1) and (
                                    b_lab == 0 or _key_less(kq, lab, y2, x2, b_k, b_lab, b_y, b_x)):
                                b_lab, b_k, b_y, b_x = lab, kq, y2, x2
                        continue
                    if not mask[y2, x2]:
                        continue
                    d = step + d0
                    if out_dist[y2, x2] == -1 or out_dist[y2, x2] > d:
                        out_dist[y2, x2] = d
                        buf = _bucket_push(buf, cnt, int(d) % 3, y2 * w + x2)
            if b == 0:
                out_label[y, x] = seeds[y, x]  # only seeds are closer than 1
            elif b_lab != 0 and _key_less(b_k, b_lab, b_y, b_x, a_k, a_lab, a_y, a_x):
                out_label[y, x] = min(a_lab, b_lab)
            else:
                out_label[y, x] = a_lab
        cnt[slot] = 0
        b += 1


def propagate(seeds: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``centrosome.propagate.propagate(zeros, seeds, mask, 1)``: (labels, distances); seed pixels keep
    their label at distance 0 (also outside ``mask``), unreached mask pixels get label 0 and -1."""
    seeds = np.ascontiguousarray(seeds, np.int64)
    labels = np.zeros(seeds.shape, np.int64)
    dist = np.full(seeds.shape, -1.0)
    propagate_into(np.ascontiguousarray(mask, bool), seeds, labels, dist)
    labels[seeds > 0] = seeds[seeds > 0]
    return labels, dist
