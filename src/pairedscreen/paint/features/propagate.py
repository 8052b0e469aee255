"""``centrosome.propagate.propagate`` on a zero image with weight 1, the one port both users share:
the radial distribution around the nuclei centres (:mod:`.radial_centers`) and the mito skeleton's
MeasureObjectSkeleton (:mod:`.skeleton`). Every pixel of a mask gets the label of the seed it is
nearest to along the mask (8-connected steps of 1 and sqrt(2)) and that geodesic distance, with
centrosome's own tie-breaking, so the labels and distances equal centrosome's exactly.

What centrosome does (``propagate.py``, ``_propagate.pyx``, ``heap.pxd``): the seed pixels inside
the mask become records ``(msb, lsb, label, row, column)`` = ``(0, 0, label, y, x)`` in raster
(``np.argwhere``) order, and that array is COPIED as the binary heap's storage WITHOUT being heapified.
``heappop`` returns record 0, moves the last record to the root and sifts it down; ``heappush``
appends and sifts up; records compare lexicographically (``msb`` = the distance's high 32-bit word,
``lsb`` = its low word >> 1, so the distance without its last mantissa bit comes first). A popped
pixel that is still unlabelled takes the popped label and offers ``d0 + sqrt(manhattan)`` to each
unlabelled mask neighbour (order (-1,-1), (-1,0), (-1,1), (0,-1), (0,1), (1,-1), (1,0), (1,1)); the
offer is pushed when the neighbour has no distance yet or a strictly larger one.

Two phases follow from that:

- **phase 1, the seeds**: every seed's key starts (0, 0) and every pushed record has a distance >= 1,
  so a pushed record never sifts above a seed, a pushed record's children are pushed records, and the
  root is a seed while any is left: all seeds pop first. Their ORDER is not the key order: it comes
  from the unheapified raster array and from where the records pushed meanwhile sit (a pop moves the
  last record, maybe a pushed one, to the root). It decides the labels of the pixels at distance 1 and
  sqrt(2): such a pixel's least record is the first offer of its final distance (later equal offers
  are not pushed), so it takes the label of the first-POPPED seed at that step, not the smallest
  label. :func:`_pop_seeds` replays this phase literally (same record layout, comparison, pop, push).
- **phase 2, the rest**: the heap's only order violations were between seeds, so once they are gone
  the heap is valid and pops follow the full key; which records are in it matters, not where. Here:

  - the distances are the least fixed point ``d(p) = min_q fl(d(q) + step)`` over p's mask
    neighbours: a pixel whose distance has integer part b >= 2 is reached by a neighbour of integer
    part < b, every later offer is >= b + 1, so the distances of bucket b are final before any of its
    pops, in any order;
  - p's label is the label of its first-popped record, the least key among those pushed for p. The
    offers to p come, in key order, from its neighbours of integer part < b (later neighbours offer
    >= b + 1 or find p labelled). The pushed ones are the successive strict minima; the least key is
    the first offer of exactly d(p) (A) unless an offer of d(p) + 1 ulp sharing d(p)'s key (d(p)'s bit
    pattern even) came first (B): then both were pushed and the smaller label of the two wins.

  So a pixel's label is a local function of its earlier-bucket neighbours' (distance, label, row,
  column), fixed when its bucket comes. The buckets (by the distance's integer part; steps < 2, so
  three are live) are popped in push order, which follows the wavefront and keeps the memory accesses
  local. Bucket 1 (distances 1 and sqrt(2), only ever offered by seeds) holds the pixels phase 1
  pushed, with the label phase 1 decided for them (kept pending as ``-label`` until their pop).
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
def _smaller(hp, a, b):
    """Record ``a`` of the heap ``hp`` (n, 5) before record ``b``: centrosome's ``smaller``."""
    for k in range(5):
        if hp[a, k] != hp[b, k]:
            return hp[a, k] < hp[b, k]
    return False


@numba.njit(cache=True, nogil=True)
def _swap(hp, a, b):
    for k in range(5):
        hp[a, k], hp[b, k] = hp[b, k], hp[a, k]


@numba.njit(cache=True, nogil=True)
def _heappop(hp, items, dest):
    """centrosome's ``heappop``: record 0 into ``dest``, the last record to the root, sifted down
    (left child first, then the right one against the smaller); returns the new item count."""
    dest[:] = hp[0]
    items -= 1
    if items == 0:
        return items
    _swap(hp, 0, items)
    i = 0
    while True:
        smallest = i
        left = 2 * i + 1
        right = left + 1
        if left >= items:
            break
        if _smaller(hp, left, i):
            smallest = left
        if right < items and _smaller(hp, right, smallest):
            smallest = right
        if smallest == i:
            break
        _swap(hp, i, smallest)
        i = smallest
    return items


@numba.njit(cache=True, nogil=True)
def _heappush(hp, items, msb, lsb, label, y, x):
    """centrosome's ``heappush``: append, sift up while smaller than the parent; returns the (maybe
    grown) heap."""
    if items == hp.shape[0]:
        grown = np.empty((2 * items, 5), np.int64)
        grown[:items] = hp[:items]
        hp = grown
    hp[items, 0] = msb
    hp[items, 1] = lsb
    hp[items, 2] = label
    hp[items, 3] = y
    hp[items, 4] = x
    child = items
    while child > 0:
        parent = (child + 1) // 2 - 1
        if not _smaller(hp, child, parent):
            break
        _swap(hp, parent, child)
        child = parent
    return hp


@numba.njit(cache=True, nogil=True)
def _pop_seeds(mask, seeds, out_label, out_dist, buf, cnt):
    """Phase 1 (module docstring), replayed literally: centrosome's heap from the unheapified raster
    array of the seeds inside ``mask``, popped while its root is a seed (key prefix (0, 0)). A popped
    seed is labelled; its offers set ``out_dist`` and, for the pushed ones, ``out_label = -label``
    (pending: the label of the pixel's least record so far) and append the pixel to bucket 1 of
    ``buf``. Returns the (maybe grown) bucket buffer."""
    h, w = mask.shape
    n = 0
    for y in range(h):
        for x in range(w):
            if seeds[y, x] != 0 and mask[y, x]:
                n += 1
    hp = np.empty((max(2 * n, 64), 5), np.int64)
    items = 0
    for y in range(h):
        for x in range(w):
            if seeds[y, x] != 0 and mask[y, x]:
                hp[items, 0] = 0
                hp[items, 1] = 0
                hp[items, 2] = seeds[y, x]
                hp[items, 3] = y
                hp[items, 4] = x
                items += 1
    bits = np.zeros(1)
    ubits = bits.view(np.uint64)
    elem = np.empty(5, np.int64)
    while items > 0 and hp[0, 0] == 0 and hp[0, 1] == 0:
        items = _heappop(hp, items, elem)
        label, y, x = elem[2], elem[3], elem[4]
        if out_label[y, x] > 0:
            continue
        out_label[y, x] = label
        d0 = out_dist[y, x]
        for dy in range(-1, 2):
            y2 = y + dy
            if y2 < 0 or y2 >= h:
                continue
            for dx in range(-1, 2):
                x2 = x + dx
                if (dy == 0 and dx == 0) or x2 < 0 or x2 >= w:
                    continue
                if out_label[y2, x2] > 0 or not mask[y2, x2]:
                    continue
                d = (1.0 if (dy == 0 or dx == 0) else _SQRT2) + d0
                if out_dist[y2, x2] == -1 or out_dist[y2, x2] > d:
                    out_dist[y2, x2] = d
                    out_label[y2, x2] = -label
                    bits[0] = d
                    u = ubits[0]
                    hp = _heappush(hp, items, np.int64(u >> np.uint64(32)),
                                   np.int64((u & np.uint64(0xFFFFFFFF)) >> np.uint64(1)),
                                   label, y2, x2)
                    items += 1
                    buf = _bucket_push(buf, cnt, int(d) % 3, y2 * w + x2)
    return buf


@numba.njit(cache=True, nogil=True)
def propagate_into(mask, seeds, out_label, out_dist):
    """centrosome.propagate(zeros, seeds, mask, 1) restricted to seeds inside ``mask``: nearest seed
    label (``out_label``, 0 = unreached) and geodesic distance (``out_dist``, -1 = unreached); both
    arrays come zeroed / filled with -1; seeds are >= 0. Seeds' distance is 0, also outside the mask.

    Phase 1 (:func:`_pop_seeds`) replays centrosome's heap while it pops the seeds; phase 2 is
    Dijkstra with three circular buckets by the distance's integer part, popped in push order, each
    pixel's label fixed at its first pop from its earlier-bucket neighbours (bucket 1's from phase 1).
    """
    h, w = mask.shape
    for y in range(h):
        for x in range(w):
            if seeds[y, x] != 0:
                out_dist[y, x] = 0.0
    bits = np.zeros(1)
    ubits = bits.view(np.uint64)  # bits[0]'s bit pattern
    buf = np.empty((3, 1024), np.int64)
    cnt = np.zeros(3, np.int64)
    buf = _pop_seeds(mask, seeds, out_label, out_dist, buf, cnt)
    b = 1
    while cnt[0] + cnt[1] + cnt[2] > 0:
        slot = b % 3
        m = cnt[slot]
        # pushes from bucket b go to buckets b + 1 and b + 2 (steps are 1 or sqrt(2)), never to ``slot``
        for u in range(m):
            p = buf[slot, u]
            y = p // w
            x = p - y * w
            if out_label[y, x] > 0:
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
                        if b == 1 or not dq < b:
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
            if b == 1:
                out_label[y, x] = -out_label[y, x]  # phase 1's pending label
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
