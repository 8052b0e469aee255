"""``Nuclei_ObjectSkeleton_*_mito_skel``: the JUMP pipeline's mito skeleton, measured around the nuclei.

JUMP_analysis_v3.cppipe runs, on the ``mito_tubeness`` image (:mod:`.tubeness`), CellProfiler 4.2's

1. **Threshold** -> ``mito_bw`` (Global, Minimum Cross-Entropy, smoothing scale 1.3488, correction 1,
   bounds [0, 1], no log transform): :func:`threshold_value` is ``skimage.filters.threshold_li`` on the
   image's pixels with CellProfiler's tolerance (half the smallest step between distinct values, at
   least 0.5/65536), its iteration run in numba with numpy's pairwise means (same values to the bit,
   no temporary arrays); :func:`mito_bw` is ``gaussian(image) / gaussian(ones) >= threshold`` with
   ``sigma = scale / 0.6744 / 2`` and zero padding (``centrosome.smooth.smooth_with_function_and_mask``
   with an all-true mask);
2. **MorphologicalSkeleton** -> ``mito_skel``: ``skimage.morphology.skeletonize`` (the module's own call);
3. **MeasureObjectSkeleton** with seed objects Nuclei, "Fill small holes" yes, maximum hole size 10,
   no branchpoint image (:func:`measure_object_skeleton`): a ring is made around each nucleus (labels
   dilated and then eroded by a 3x3 square), the skeleton outside the nucleus is joined to the ring,
   small background holes are filled (centrosome ``fill_labeled_holes``), the result is skeletonised
   again (centrosome ``skeletonize``: distance-ordered removal of pixels that keep the 8-connectivity),
   every skeleton pixel is given the nucleus it is closest to along the skeleton (centrosome
   ``propagate`` seeded by the dilated labels: Dijkstra with steps 1 and sqrt(2), ties broken as
   centrosome's heap does -- the seed pixels, the skeleton's pixels in the dilated nuclei, pop first in
   the order of the unheapified raster array the heap starts from, which decides a pixel next to two
   nuclei's seeds, then records pop by (distance, label, row, column)), and per nucleus are counted the
   trunks (branchings within 1.5 px of the ring), the branch points and end points further out, and the
   skeleton length outside the dilated nucleus (centrosome ``skeleton_length``'s per-pixel table).

The centrosome steps live in :mod:`.skeleton_steps`. Each is ported with its own tie-breaking (the
seeded permutation that orders equally distant, equally cornered pixels in ``skeletonize``; the heap's
seed order and key in ``propagate``), so the counts equal CellProfiler's and the length is the same
float32 table summed in the same order. CellProfiler's quirks are kept: centrosome's thinning never
removes a pixel of the image's first row, and the four-way "odd case" tests ``combined_skel[1, 1]`` (one
pixel) instead of the shifted image, so the odd-case branch points are marked only where that pixel is on.
"""

from __future__ import annotations

import numba
import numpy as np

from .objects import ObjectIndex
from .propagate import propagate
from .skeleton_steps import fill_small_holes, index_image, skeleton_length, skeletonize, tables
from .threshold import MCE, ThresholdSettings, apply_threshold, original_threshold

__all__ = [
    "FEATURES",
    "NAME",
    "measure_object_skeleton",
    "measure_skeleton",
    "mito_bw",
    "mito_threshold_settings",
    "threshold_value",
]

NAME = "mito_skel"  # CellProfiler's name of the skeleton image in the JUMP pipeline
FEATURES = ("NumberTrunks", "NumberNonTrunkBranches", "NumberBranchEnds", "TotalObjectSkeletonLength")

# ---------------------------------------------------------------------------------------------------
# Threshold (mito_bw) and MorphologicalSkeleton (mito_skel)
# ---------------------------------------------------------------------------------------------------


def mito_threshold_settings(smoothing_scale: float) -> ThresholdSettings:
    """The JUMP pipeline's Threshold module for ``mito_bw``: global Minimum Cross-Entropy, correction 1,
    bounds [0, 1], no log transform, ``smoothing_scale`` (``paint.features.skeleton_threshold_smoothing``)."""
    return ThresholdSettings(MCE, smoothing_scale=float(smoothing_scale), correction_factor=1.0, lower=0.0,
                             upper=1.0, three_class=False, middle_to_foreground=True, log_transform=False)


def threshold_value(image: np.ndarray) -> float:
    """CellProfiler 4's global Minimum Cross-Entropy threshold of ``image`` (no mask, correction 1,
    bounds [0, 1]): :func:`.threshold.threshold_measurements`' FinalThreshold for these settings, without
    its entropy/variance measurements (the smoothing scale does not enter the threshold)."""
    return original_threshold(np.asarray(image, dtype=np.float64).ravel(), mito_threshold_settings(0.0))


def mito_bw(image: np.ndarray, threshold: float, *, smoothing_scale: float) -> np.ndarray:
    """The Threshold module's binary image: the smoothed ``image`` ``>= threshold`` (``smoothing_scale``:
    its "Threshold smoothing scale"; 0 = no smoothing; :func:`.threshold.apply_threshold`)."""
    settings = mito_threshold_settings(smoothing_scale)
    return apply_threshold(np.asarray(image, dtype=np.float64), threshold, settings)


# ---------------------------------------------------------------------------------------------------
# MeasureObjectSkeleton
# ---------------------------------------------------------------------------------------------------


@numba.njit(cache=True, nogil=True)
def _max3x3(labels):
    """``scipy.ndimage.grey_dilation(labels, footprint=ones((3, 3)))``: the 3x3 maximum (scipy's
    default 'reflect' border only repeats pixels already in the window: the maximum over the in-image
    neighbours), separable: rows, then columns."""
    h, w = labels.shape
    rows = np.empty((h, w), labels.dtype)
    for i in range(h):
        for j in range(w):
            m = labels[i, j]
            if j > 0:
                m = max(m, labels[i, j - 1])
            if j + 1 < w:
                m = max(m, labels[i, j + 1])
            rows[i, j] = m
    out = np.empty((h, w), labels.dtype)
    for i in range(h):
        lo = max(i - 1, 0)
        hi = min(i + 1, h - 1)
        for j in range(w):
            out[i, j] = max(max(rows[lo, j], rows[i, j]), rows[hi, j])
    return out


@numba.njit(cache=True, nogil=True)
def _inner3x3(dilated):
    """``scipy.ndimage.grey_erosion(dilated, footprint=ones((3, 3))) > 0`` for non-negative labels: every
    in-image 3x3 neighbour is > 0 ('reflect' border, as :func:`_max3x3`)."""
    h, w = dilated.shape
    rows = np.empty((h, w), np.bool_)
    for i in range(h):
        for j in range(w):
            ok = dilated[i, j] > 0
            if j > 0:
                ok = ok and dilated[i, j - 1] > 0
            if j + 1 < w:
                ok = ok and dilated[i, j + 1] > 0
            rows[i, j] = ok
    out = np.empty((h, w), np.bool_)
    for i in range(h):
        lo = max(i - 1, 0)
        hi = min(i + 1, h - 1)
        for j in range(w):
            out[i, j] = rows[lo, j] and rows[i, j] and rows[hi, j]
    return out


def _ring_skeleton(skeleton: np.ndarray, labels: np.ndarray, max_hole_size: int):
    """(combined skeleton, dilated labels): the skeleton joined to a one-pixel ring around each seed (the
    labels dilated, less the dilation eroded back, both by centrosome's strel_disk(1.5), a 3x3 square),
    small holes filled, skeletonised again."""
    dilated = _max3x3(labels)
    combined = skeleton | (dilated > 0)
    centre = _inner3x3(dilated)
    combined &= ~centre
    combined = fill_small_holes(combined, ~centre, max_hole_size)
    return skeletonize(combined), dilated


@numba.njit(cache=True, nogil=True)
def _object_counts(dlabels, distance, index, branch_points, outside_skel, trunk_table, end_table, n_labels):
    """Per label 0..n_labels (float64, as ``scipy.ndimage.sum``; integer counts, so exact in any order):
    trunks (``trunk_table[index]`` -- 0/1/2 branchings -- of the pixels within 1.5 of their nucleus along
    the skeleton, where the 3x3 neighbourhood touches ``outside_skel``), non-trunk branch points and
    branch ends (``branch_points``, ``end_table[index]``) of the pixels further out. One pass; the 3x3
    test only where a branching counts (``binary_dilation(outside_skel, ones((3, 3)))`` there)."""
    h, w = dlabels.shape
    trunks = np.zeros(n_labels + 1, np.int64)
    branches = np.zeros(n_labels + 1, np.int64)
    ends = np.zeros(n_labels + 1, np.int64)
    for i in range(h):
        for j in range(w):
            lab = dlabels[i, j]
            if lab <= 0:
                continue
            if not distance[i, j] > 1.5:   # nearby
                b = trunk_table[index[i, j]]
                if b == 0:
                    continue
                touches = False
                for ii in range(max(i - 1, 0), min(i + 2, h)):
                    for jj in range(max(j - 1, 0), min(j + 2, w)):
                        touches = touches or outside_skel[ii, jj]
                if touches:
                    trunks[lab] += b
            else:
                branches[lab] += branch_points[i, j]
                ends[lab] += end_table[index[i, j]]
    return trunks.astype(np.float64), branches.astype(np.float64), ends.astype(np.float64)


def _trunk_table() -> np.ndarray:
    """Trunks per 3x3 pattern: CellProfiler's ``[0, 0, 0, 1, 2][branchings]``."""
    return np.array([0, 0, 0, 1, 2], np.int64)[tables()["branchings"]]


def measure_object_skeleton(skeleton: np.ndarray, labels: np.ndarray, *, max_hole_size: int
                            ) -> dict[str, np.ndarray]:
    """CellProfiler 4's MeasureObjectSkeleton of a binary ``skeleton`` around seed ``labels`` ("Fill small
    holes": yes, ``max_hole_size``). Returns the four features (unprefixed names of :data:`FEATURES`), each
    with one value per label 1..max(labels)."""
    labels = np.ascontiguousarray(labels, np.int64)
    skeleton = np.asarray(skeleton, bool)
    n = int(labels.max()) if labels.size else 0
    if n == 0:
        return {f: np.zeros(0) for f in FEATURES}
    t = tables()
    combined, dilated = _ring_skeleton(skeleton, labels, max_hole_size)
    outside_skel = combined & (dilated == 0)
    dlabels, distance = propagate(dilated.astype(np.int32), combined)
    combined[dlabels == 0] = False
    index = index_image(combined.astype(np.int64))
    branch_points = t["branchpoints"][index].astype(bool)
    if combined[1, 1]:   # CellProfiler's odd case (tests the single pixel [1, 1], as its code does)
        odd = combined[:-1, :-1] & combined[1:, :-1] & combined[:-1, 1:]
        branch_points[:-1, :-1][odd] = True
        branch_points[1:, 1:][odd] = True
    trunks, branches, ends = _object_counts(
        dlabels, distance, index, branch_points, outside_skel, _trunk_table(),
        t["endpoints"].astype(np.int64), n)
    length = skeleton_length(np.ascontiguousarray(dlabels * outside_skel, np.int64), t["length"], n)
    return {
        "NumberTrunks": trunks[1: n + 1],
        "NumberNonTrunkBranches": branches[1: n + 1],
        "NumberBranchEnds": ends[1: n + 1],
        "TotalObjectSkeletonLength": length[1: n + 1],
    }


def measure_skeleton(tubeness_image: np.ndarray, nuclei: np.ndarray, *, smoothing_scale: float,
                     max_hole_size: int, index: ObjectIndex | None = None) -> dict[str, np.ndarray]:
    """The JUMP pipeline's ``ObjectSkeleton_{feature}_mito_skel`` columns of the Nuclei, one value per
    object of ``index`` (:class:`.objects.ObjectIndex` of ``nuclei``; built if None): Threshold (minimum
    cross-entropy, ``smoothing_scale``) of the tubeness image, MorphologicalSkeleton, MeasureObjectSkeleton
    (``max_hole_size``)."""
    from skimage.morphology import skeletonize as sk_skeletonize

    from .objects import build_index

    labels = np.ascontiguousarray(nuclei, np.int64)
    if index is None:
        index = build_index(labels)
    bw = mito_bw(tubeness_image, threshold_value(tubeness_image), smoothing_scale=smoothing_scale)
    skel = sk_skeletonize(bw)
    feats = measure_object_skeleton(skel, labels, max_hole_size=max_hole_size)
    present = np.asarray(index.labels_present, np.int64)
    return {f"ObjectSkeleton_{f}_{NAME}": v[present - 1] for f, v in feats.items()}
