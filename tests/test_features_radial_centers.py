"""Radial distribution around other objects' centres against CellProfiler's own code.

The reference is CellProfiler 4.2.8's ``MeasureObjectIntensityDistribution.do_measurements`` for
"Centers of other objects" (cellprofiler/modules/measureobjectintensitydistribution.py, tag v4.2.8),
restated step by step on centrosome's functions it calls (``centers_of_labels``, ``propagate``,
``distance_to_edge``, installed with cp_measure) and scipy.sparse, as the module does.
"""

from __future__ import annotations

import numpy as np
import pytest
import scipy.ndimage
import scipy.sparse
from _features_a_data import synthetic_site

from pairedscreen.paint.features.objects import build_index
from pairedscreen.paint.features.radial_centers import measure_radial_centers
from pairedscreen.paint.features.tubeness import tubeness

cpmorphology = pytest.importorskip("centrosome.cpmorphology")
propagate = pytest.importorskip("centrosome.propagate")

SETTINGS = [{"bins": 16, "scaled": True, "max_radius": 100}, {"bins": 20, "scaled": False, "max_radius": 200}]


def cp_radial_centers(pixel_data, labels, center_labels, image_name, bin_count, wants_scaled, maximum_radius):
    """CellProfiler 4.2.8 do_measurements, center_choice = C_CENTERS_OF_OTHER, no heatmaps."""
    nobjects = np.max(labels)
    d_to_edge = cpmorphology.distance_to_edge(labels)
    pixel_counts = cpmorphology.fixup_scipy_ndimage_result(
        scipy.ndimage.sum(np.ones(center_labels.shape), center_labels,
                                                 np.arange(1, np.max(center_labels) + 1, dtype=np.int32)))
    good = pixel_counts > 0
    i, j = (cpmorphology.centers_of_labels(center_labels) + 0.5).astype(int)
    ig, jg = i[good], j[good]
    lg = np.arange(1, len(i) + 1)[good]
    center_labels = np.zeros(center_labels.shape, int)
    center_labels[ig, jg] = lg
    cl, d_from_center = propagate.propagate(np.zeros(center_labels.shape), center_labels, labels != 0, 1)
    cl[labels == 0] = 0
    missing_mask = (labels != 0) & (cl == 0)
    missing_labels = np.unique(labels[missing_mask])
    if len(missing_labels):
        all_centers = cpmorphology.centers_of_labels(labels)
        missing_i_centers, missing_j_centers = all_centers[:, missing_labels - 1]
        di = missing_i_centers[:, np.newaxis] - ig[np.newaxis, :]
        dj = missing_j_centers[:, np.newaxis] - jg[np.newaxis, :]
        missing_best = lg[np.argsort(di * di + dj * dj)[:, 0]]
        best = np.zeros(np.max(labels) + 1, int)
        best[missing_labels] = missing_best
        cl[missing_mask] = best[labels[missing_mask]]
        iii, jjj = np.mgrid[0:labels.shape[0], 0:labels.shape[1]]
        di = iii[missing_mask] - i[cl[missing_mask] - 1]
        dj = jjj[missing_mask] - j[cl[missing_mask] - 1]
        d_from_center[missing_mask] = np.sqrt(di * di + dj * dj)
    good_mask = cl > 0
    i_center = np.zeros(cl.shape)
    i_center[good_mask] = i[cl[good_mask] - 1]
    j_center = np.zeros(cl.shape)
    j_center[good_mask] = j[cl[good_mask] - 1]
    normalized_distance = np.zeros(labels.shape)
    if wants_scaled:
        total_distance = d_from_center + d_to_edge
        normalized_distance[good_mask] = d_from_center[good_mask] / (total_distance[good_mask] + 0.001)
    else:
        normalized_distance[good_mask] = d_from_center[good_mask] / maximum_radius
    ngood_pixels = np.sum(good_mask)
    good_labels = labels[good_mask]
    bin_indexes = (normalized_distance * bin_count).astype(int)
    bin_indexes[bin_indexes > bin_count] = bin_count
    labels_and_bins = (good_labels - 1, bin_indexes[good_mask])
    histogram = scipy.sparse.coo_matrix((pixel_data[good_mask], labels_and_bins),
                                        (nobjects, bin_count + 1)).toarray()
    sum_by_object = np.sum(histogram, 1)
    sum_by_object_per_bin = np.dstack([sum_by_object] * (bin_count + 1))[0]
    with np.errstate(invalid="ignore", divide="ignore"):
        fraction_at_distance = histogram / sum_by_object_per_bin
        number_at_distance = scipy.sparse.coo_matrix((np.ones(ngood_pixels), labels_and_bins),
                                                     (nobjects, bin_count + 1)).toarray()
        sum_by_object = np.sum(number_at_distance, 1)
        sum_by_object_per_bin = np.dstack([sum_by_object] * (bin_count + 1))[0]
        fraction_at_bin = number_at_distance / sum_by_object_per_bin
        mean_pixel_fraction = fraction_at_distance / (fraction_at_bin + np.finfo(float).eps)
    ii, jj = np.mgrid[0:labels.shape[0], 0:labels.shape[1]]
    imask = ii[good_mask] > i_center[good_mask]
    jmask = jj[good_mask] > j_center[good_mask]
    absmask = abs(ii[good_mask] - i_center[good_mask]) > abs(jj[good_mask] - j_center[good_mask])
    radial_index = imask.astype(int) + jmask.astype(int) * 2 + absmask.astype(int) * 4
    out = {}
    for b in range(bin_count + (0 if wants_scaled else 1)):
        bin_mask = good_mask & (bin_indexes == b)
        bin_pixels = np.sum(bin_mask)
        bin_labels = labels[bin_mask]
        bin_radial_index = radial_index[bin_indexes[good_mask] == b]
        labels_and_radii = (bin_labels - 1, bin_radial_index)
        radial_values = scipy.sparse.coo_matrix((pixel_data[bin_mask], labels_and_radii),
                                                (nobjects, 8)).toarray()
        pixel_count = scipy.sparse.coo_matrix((np.ones(bin_pixels), labels_and_radii),
                                              (nobjects, 8)).toarray()
        mask = pixel_count == 0
        with np.errstate(invalid="ignore", divide="ignore"):
            radial_means = np.ma.masked_array(radial_values / pixel_count, mask)
            radial_cv = np.std(radial_means, 1) / np.mean(radial_means, 1)
        radial_cv[np.sum(~mask, 1) == 0] = 0
        suffix = "Overflow" if b == bin_count else f"{b + 1}of{bin_count}"
        for name, m in (("FracAtD", fraction_at_distance[:, b]), ("MeanFrac", mean_pixel_fraction[:, b]),
                        ("RadialCV", np.ma.filled(np.array(radial_cv), np.nan))):
            out[f"RadialDistribution_{name}_{image_name}_{suffix}"] = np.asarray(m, float)
    return out


@pytest.fixture(scope="module")
def site():
    imgs, nuc, cells, cyto = synthetic_site(seed=11, shape=(200, 210), n_cells=22, n_channels=5)
    return tubeness(imgs[4], smoothing=1.0, rescale=True), nuc, cells, cyto


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
@pytest.mark.parametrize("compartment", ["Cells", "Cytoplasm"])
def test_matches_cellprofiler(site, compartment):
    tub, nuc, cells, cyto = site
    lab = {"Cells": cells, "Cytoplasm": cyto}[compartment].astype(np.int64)
    index = build_index(lab)
    ours = measure_radial_centers(tub, lab, nuc, "mito_tubeness", SETTINGS, index=index)
    rows = index.labels_present - 1
    ref = {}
    for s in SETTINGS:
        ref.update(cp_radial_centers(tub, lab, nuc.astype(np.int64), "mito_tubeness", s["bins"], s["scaled"],
                                     s["max_radius"]))
    assert set(ours) == set(ref) and len(ours) == 3 * (16 + 20) + 3
    for k in ref:
        np.testing.assert_allclose(ours[k], ref[k][rows], rtol=1e-9, atol=1e-12, equal_nan=True, err_msg=k)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_seed_propagation_is_centrosome_propagate(seed):
    """The bucketed seed propagation against ``centrosome.propagate`` itself on masks with many
    seeds close together (many equal distances, so centrosome's tie-break -- the seeds' pop order,
    then the (distance, label, row, column) key -- decides which seed takes a pixel): labels and
    distances equal wherever the mask is (more cases in tests/test_features_propagate.py)."""
    from pairedscreen.paint.features.radial_centers import _propagate

    rng = np.random.default_rng(seed)
    mask = scipy.ndimage.binary_opening(rng.random((120, 150)) < 0.8)
    seeds = np.zeros(mask.shape, np.int64)
    pts = rng.integers(0, [120, 150], size=(60, 2))
    seeds[pts[:, 0], pts[:, 1]] = rng.permutation(np.arange(1, 61))
    cl = np.zeros(mask.shape, np.int64)
    dist = np.full(mask.shape, -1.0)
    _propagate(mask, seeds, cl, dist)
    inside = seeds * mask  # centrosome's seeds outside the mask label nothing
    ref_l, ref_d = propagate.propagate(np.zeros(mask.shape), inside, mask, 1)
    reached = ref_l != 0
    assert reached.sum() > 0.5 * mask.sum()
    np.testing.assert_array_equal(cl[mask], np.where(reached, ref_l, 0)[mask])
    np.testing.assert_array_equal(dist[mask & reached], ref_d[mask & reached])


def test_nearest_centre_choice_is_argsort_first():
    """The nearest-centre pick for objects no seed reached equals CellProfiler's
    ``np.argsort(d2, axis=1)[:, 0]``, on rows with a unique minimum and rows with tied minima."""
    from pairedscreen.paint.features.radial_centers import _first_of_argsort

    rng = np.random.default_rng(5)
    d2 = rng.integers(0, 40, size=(300, 50)).astype(np.float64)  # many tied minima
    d2[::3] = rng.random((100, 50))                                # unique minima
    np.testing.assert_array_equal(_first_of_argsort(d2), np.argsort(d2, axis=1)[:, 0])

