"""The shared propagation (:mod:`pairedscreen.paint.features.propagate`) against
``centrosome.propagate.propagate(zeros, seeds, mask, 1)`` itself and against centrosome's heap written
out literally: labels and distances equal everywhere, ties included (which seed takes a pixel at equal
distance is decided by the order in which centrosome's unheapified seed array pops, then by its key).
"""

from __future__ import annotations

import numpy as np
import pytest
import scipy.ndimage

from pairedscreen.paint.features.propagate import propagate, propagate_into

centrosome_propagate = pytest.importorskip("centrosome.propagate")


def _centrosome(seeds, mask):
    return centrosome_propagate.propagate(np.zeros(mask.shape), seeds, mask, 1)


def _literal_heap_propagate(mask, seeds):
    """centrosome's propagate written out: records (msb, lsb, label, row, column) of the seeds inside
    the mask in raster order, used as the heap's storage as they are (not heapified); ``heap.pxd``'s
    pop (root out, last record to the root, sift down: left child, then right against the smaller)
    and push (append, sift up); a popped unlabelled pixel takes the label and offers d0 + step to its
    unlabelled mask neighbours, pushed where strictly below their distance so far."""
    h, w = mask.shape
    label = np.zeros(mask.shape, np.int64)
    dist = np.full(mask.shape, -1.0)
    dist[seeds > 0] = 0.0
    heap = [(0, 0, int(seeds[y, x]), int(y), int(x)) for y, x in np.argwhere((seeds != 0) & mask)]

    def pop():
        top = heap[0]
        last = heap.pop()
        if heap:
            heap[0] = last
            i = 0
            while True:
                lt, rt, small = 2 * i + 1, 2 * i + 2, i
                if lt >= len(heap):
                    break
                if heap[lt] < heap[i]:
                    small = lt
                if rt < len(heap) and heap[rt] < heap[small]:
                    small = rt
                if small == i:
                    break
                heap[i], heap[small] = heap[small], heap[i]
                i = small
        return top

    def push(item):
        heap.append(item)
        c = len(heap) - 1
        while c > 0 and heap[c] < heap[(c + 1) // 2 - 1]:
            p = (c + 1) // 2 - 1
            heap[c], heap[p] = heap[p], heap[c]
            c = p

    while heap:
        _, _, lab, y, x = pop()
        if label[y, x]:
            continue
        label[y, x] = lab
        for dy, dx in ((-1, -1), (-1, 0), (-1, 1), (0, -1), (0, 1), (1, -1), (1, 0), (1, 1)):
            y2, x2 = y + dy, x + dx
            if 0 <= y2 < h and 0 <= x2 < w and mask[y2, x2] and not label[y2, x2] > 0:
                d = np.sqrt(float(abs(dy) + abs(dx))) + dist[y, x]
                if dist[y2, x2] == -1 or dist[y2, x2] > d:
                    dist[y2, x2] = d
                    u = int(np.array(d).view(np.uint64))
                    push((u >> 32, (u & 0xFFFFFFFF) >> 1, lab, y2, x2))
    label[seeds > 0] = seeds[seeds > 0]
    return label, dist


def _random_case(rng, shape, kind):
    """A mask and seeds: a lattice (exact ties everywhere), dense clusters of touching seeds, or a few
    scattered ones; repeated labels, labels out of raster order, seeds outside the mask."""
    h, w = shape
    mask = rng.random(shape) < rng.uniform(0.5, 1.0)
    if kind % 2 and h > 2 and w > 2:
        mask = scipy.ndimage.binary_opening(mask)
    if kind == 0:
        st = int(rng.integers(2, 9))
        oy, ox = rng.integers(0, st, 2)
        yy, xx = np.mgrid[oy:h:st, ox:w:st]
        pts = np.stack([yy.ravel(), xx.ravel()], 1)
    elif kind == 1:
        pts = rng.integers(0, [h, w], size=(int(rng.integers(1, max(2, h * w // 3))), 2))
    else:
        pts = rng.integers(0, [h, w], size=(int(rng.integers(1, 60)), 2))
    seeds = np.zeros(shape, np.int64)
    if len(pts):
        if rng.random() < 0.3:   # repeated labels
            labs = rng.integers(1, int(rng.integers(1, len(pts) + 1)) + 1, len(pts))
        else:                    # distinct labels in random (not raster) order
            labs = rng.permutation(len(pts)) + 1
        seeds[pts[:, 0], pts[:, 1]] = labs
    if rng.random() < 0.3:
        mask[pts[:, 0], pts[:, 1]] = True
    return mask, seeds


def _assert_equal(mask, seeds, ref):
    labels, dist = propagate(seeds, mask)
    np.testing.assert_array_equal(labels, ref[0])
    np.testing.assert_array_equal(dist, ref[1])


def test_first_popped_seed_wins_not_the_smallest_label():
    """Two seeds one pixel apart: centrosome pops the raster-first seed (label 15) first, so the pixel
    between them is 15's, although 12 is the smaller label."""
    mask = np.ones((3, 1), bool)
    seeds = np.zeros((3, 1), np.int64)
    seeds[0, 0], seeds[2, 0] = 15, 12
    ref = _centrosome(seeds, mask)
    np.testing.assert_array_equal(ref[0].ravel(), [15, 15, 12])
    _assert_equal(mask, seeds, ref)


@pytest.mark.parametrize("chunk", range(4))
def test_small_random_masks_equal_centrosome(chunk):
    """2,000 small masks (1-40 px a side) of every kind of :func:`_random_case`."""
    n_tied = 0
    for case in range(500):
        rng = np.random.default_rng(1000 * chunk + case)
        mask, seeds = _random_case(rng, tuple(rng.integers(1, 41, 2)), case % 4)
        ref = _centrosome(seeds, mask)
        _assert_equal(mask, seeds, ref)
        n_tied += int((ref[0] != _smallest_label_at_distance_one(seeds, mask, ref)).any())
    assert n_tied > 50  # the cases exercise the seeds' pop order


def _smallest_label_at_distance_one(seeds, mask, ref):
    """``ref``'s labels with each pixel at distance 1 or sqrt(2) given the smallest label among its
    seeds at that step (the rule of a heap popped in key order): differs from ``ref`` where the
    seeds' pop order decides."""
    out = ref[0].copy()
    h, w = mask.shape
    for y, x in np.argwhere(mask & ((ref[1] == 1.0) | (ref[1] == np.sqrt(2.0)))):
        labs = [seeds[y + dy, x + dx] for dy in (-1, 0, 1) for dx in (-1, 0, 1)
                if 0 <= y + dy < h and 0 <= x + dx < w and mask[y + dy, x + dx] and seeds[y + dy, x + dx]
                and np.sqrt(float(abs(dy) + abs(dx))) == ref[1][y, x]]
        out[y, x] = min(labs)
    return out


@pytest.mark.parametrize("case", range(8))
def test_large_masks_equal_centrosome(case):
    """300x400 masks: long paths (last-bit ties of the distance) and, for the cluster kind, tens of
    thousands of seeds."""
    rng = np.random.default_rng(50 + case)
    mask, seeds = _random_case(rng, (300, 400), case % 4)
    _assert_equal(mask, seeds, _centrosome(seeds, mask))


@pytest.mark.parametrize("seed", range(6))
def test_equals_the_literal_heap(seed):
    """Against centrosome's heap written out (:func:`_literal_heap_propagate`), on masks where seeds
    on a lattice make exact ties everywhere (and long paths make last-bit ties); the written-out heap
    itself equals centrosome's. ``propagate_into`` labels only the mask (seeds outside it keep 0)."""
    rng = np.random.default_rng(seed)
    mask = rng.random((45, 60)) < 0.9
    if seed % 2:
        mask = scipy.ndimage.binary_opening(mask)
    seeds = np.zeros(mask.shape, np.int64)
    step = 2 + seed  # step 2: pixels between two seeds (the pop order decides)
    yy, xx = np.mgrid[1:45:step, 2:60:step]
    seeds[yy.ravel(), xx.ravel()] = rng.permutation(np.arange(1, yy.size + 1))
    ref_l, ref_d = _literal_heap_propagate(mask, seeds)
    cp_l, cp_d = _centrosome(seeds, mask)
    np.testing.assert_array_equal(ref_l, cp_l)
    np.testing.assert_array_equal(ref_d, cp_d)
    assert (ref_l > 0).sum() > 0.5 * mask.sum()
    cl = np.zeros(mask.shape, np.int64)
    dist = np.full(mask.shape, -1.0)
    propagate_into(mask, seeds, cl, dist)
    np.testing.assert_array_equal(cl, np.where(mask, ref_l, 0))
    np.testing.assert_array_equal(dist, ref_d)
