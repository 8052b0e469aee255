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
   ``propagate``: Dijkstra with steps 1 and sqrt(2), ties broken by (distance, label, row, column) as
   centrosome's heap does), and per nucleus are counted the trunks (branchings within 1.5 px of the
   ring), the branch points and end points further out, and the skeleton length outside the dilated
   nucleus (centrosome ``skeleton_length``'s per-pixel table).

The centrosome steps live in :mod:`.skeleton_steps`. Each is ported with its own tie-breaking (the
seeded permutation that orders equally distant, equally cornered pixels in ``skeletonize``; the heap's
key in ``propagate``), so the counts equal CellProfiler's and the length is the same float32 table summed
in the same order. CellProfiler's quirks are kept: centrosome's thinning never removes a pixel of the
image's first row, and the four-way "odd case" tests ``combined_skel[1, 1]`` (one pixel) instead of the
shifted image, so the odd-case branch points are marked only where that pixel is on.
"""

from __future__ import annotations

import numpy as np

from .objects import ObjectIndex
from .skeleton_steps import fill_small_holes, index_image, propagate, skeleton_length, skeletonize, tables
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


def _ring_skeleton(skeleton: np.ndarray, labels: np.ndarray, max_hole_size: int):
    """(combined skeleton, dilated labels): the skeleton joined to a one-pixel ring around each seed (the
    labels dilated, less the dilation eroded back), small holes filled, skeletonised again."""
    from scipy.ndimage import grey_dilation, grey_erosion

    disk = np.ones((3, 3), int)   # centrosome strel_disk(1.5)
    dilated = grey_dilation(labels, footprint=disk)
    combined = skeleton | (dilated > 0)
    centre = grey_erosion(dilated, footprint=disk) > 0
    combined &= ~centre
    combined = fill_small_holes(combined, ~centre, max_hole_size)
    return skeletonize(combined), dilated


def _per_label_sum(values: np.ndarray, labels: np.ndarray, n_labels: int) -> np.ndarray:
    """``scipy.ndimage.sum(values, labels, 1..n_labels)`` for 0/1 or small-integer ``values``."""
    return np.bincount(labels.ravel(), weights=values.ravel().astype(np.float64), minlength=n_labels + 1)


def measure_object_skeleton(skeleton: np.ndarray, labels: np.ndarray, *, max_hole_size: int
                            ) -> dict[str, np.ndarray]:
    """CellProfiler 4's MeasureObjectSkeleton of a binary ``skeleton`` around seed ``labels`` ("Fill small
    holes": yes, ``max_hole_size``). Returns the four features (unprefixed names of :data:`FEATURES`), each
    with one value per label 1..max(labels)."""
    from scipy import ndimage as ndi

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
    branching = np.array([0, 0, 0, 1, 2])[t["branchings"][index]]
    branching[~ndi.binary_dilation(outside_skel, np.ones((3, 3), bool))] = 0
    end_points = t["endpoints"][index].astype(bool)
    nearby = np.where(distance > 1.5, 0, dlabels)
    outside = np.where(nearby > 0, 0, dlabels)
    length = skeleton_length(np.ascontiguousarray(dlabels * outside_skel, np.int64), t["length"], n)
    return {
        "NumberTrunks": _per_label_sum(branching, nearby, n)[1: n + 1],
        "NumberNonTrunkBranches": _per_label_sum(branch_points, outside, n)[1: n + 1],
        "NumberBranchEnds": _per_label_sum(end_points, outside, n)[1: n + 1],
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
