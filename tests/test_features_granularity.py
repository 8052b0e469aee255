"""Granularity parity with cp_measure 0.3 (CellProfiler MeasureGranularity) and its building blocks."""

from __future__ import annotations

import numpy as np
import pytest
from _features_b_data import SCALEFEX, crop_cases, full_site, synthetic
from config_values import SCHEMA

from pairedscreen.paint.features import granularity as gr
from pairedscreen.paint.features.objects import build_index

# the pipeline's granularity settings (config schema `paint.features.granularity_*`)
GRANULARITY = {k: SCHEMA[f"paint.features.granularity_{k}"]
               for k in ("spectrum_length", "subsample_size", "background_subsample_size", "element_size")}

cp_gran = pytest.importorskip("cp_measure.core.measuregranularity")

RTOL = 1e-3
# Granularity_k is a difference of per-object means times 100 / start mean; where the reconstruction
# no longer changes it is exactly 0 in both, otherwise summation-order noise is ~1e-13 absolute.
ATOL = 1e-9


def _compare(image, labels, **kw) -> None:
    params = {**GRANULARITY, **kw}
    ours = gr.measure_granularity(image, labels, "CH", **params)
    ref = cp_gran.get_granularity(labels, image, subsample_size=params["subsample_size"],
                                  image_sample_size=params["background_subsample_size"],
                                  element_size=params["element_size"],
                                  granular_spectrum_length=params["spectrum_length"])
    assert len(ours) == len(ref) == params["spectrum_length"]
    for key, values in ref.items():
        got = ours[f"{key}_CH"]
        want = np.asarray(values, dtype=float)
        np.testing.assert_array_equal(np.isnan(got), np.isnan(want), err_msg=key)
        ok = ~np.isnan(want)
        np.testing.assert_allclose(got[ok], want[ok], rtol=RTOL, atol=ATOL, err_msg=key)


@pytest.mark.parametrize(
    ("seed", "shape", "kw"),
    [
        (0, (96, 128), {}),
        (0, (96, 128), {"subsample_size": 0.5, "background_subsample_size": 0.5, "element_size": 4}),
        (1, (96, 128), {"subsample_size": 1.0, "background_subsample_size": 1.0, "element_size": 3}),
        (2, (101, 77), {"subsample_size": 0.3, "background_subsample_size": 0.4, "element_size": 5,
                        "spectrum_length": 8}),
    ],
)
def test_synthetic_matches_cp_measure(seed, shape, kw) -> None:
    image, labels = synthetic(seed, shape)
    _compare(image, labels, **kw)


@pytest.mark.parametrize(
    ("shape", "steps"), [((60, 70), 4), ((3, 9), 6), ((2, 2), 3), ((1, 7), 3), ((7, 1), 3), ((1, 1), 2)]
)
def test_reconstruction_equals_skimage(shape, steps) -> None:
    """The spectrum's reconstructions after 1..steps cross erosions (erosions as a row wavefront,
    all seeds on one max-tree) equal skimage's erosion + reconstruction, whichever tie order."""
    from scipy import ndimage as ndi
    from skimage.morphology import disk, erosion, reconstruction

    rng = np.random.default_rng(5)
    mask = ndi.gaussian_filter(rng.random(shape), 2.0)
    mask[:shape[0] // 3, :shape[1] // 3] = mask.max()  # plateau: ties in the max-tree
    for order in (np.argsort(-mask.ravel()).astype(np.int32), gr._descending_order(mask)):
        assert np.all(np.diff(mask.ravel()[order]) <= 0)
        recs = np.empty((mask.size, steps))
        rank = gr._spectrum_recs(mask, order, recs)
        seed = mask.copy()
        for g in range(steps):
            seed = erosion(seed, footprint=disk(1))
            want = reconstruction(seed, mask, footprint=disk(1))
            np.testing.assert_array_equal(recs[rank, g].reshape(mask.shape), want, err_msg=f"step {g + 1}")


@pytest.mark.parametrize("shape", [(0, 3), (1, 1), (5, 7), (120, 131)])
def test_descending_order_equals_stable_argsort(shape) -> None:
    """The max-tree's pixel order (radix sort of the float bits) is numpy's stable descending
    argsort: distinct values, many ties, one value everywhere, signed zeros and subnormals."""
    rng = np.random.default_rng(7)
    base = rng.random(shape)
    cases = (base, np.round(base * 50) / 50, np.full(shape, 0.25),
             np.where(rng.random(shape) < 0.3, -0.0, base * 1e-300))
    for values in cases:
        want = np.argsort(-(values.ravel() + 0.0), kind="stable")
        np.testing.assert_array_equal(gr._descending_order(values), want)


def test_background_opening_equals_skimage() -> None:
    from skimage.morphology import dilation, disk, erosion

    rng = np.random.default_rng(6)
    for shape in ((40, 33), (9, 5), (5, 15)):  # narrower than the disk: every column is a border column
        img = rng.random(shape)
        for radius in (1, 4, 10):
            want = dilation(erosion(img, footprint=disk(radius)), footprint=disk(radius))
            got = gr._morph_disk(gr._morph_disk(img, radius, True), radius, False)
            np.testing.assert_array_equal(got, want)


def test_index_reuse_gaps_and_degenerate() -> None:
    image, labels = synthetic(0)
    a = gr.measure_granularity(image, labels, "CH", **GRANULARITY)
    b = gr.measure_granularity(image, np.where(labels > 0, labels * 5 + 2, 0), "CH",
                               index=build_index(np.where(labels > 0, labels * 5 + 2, 0)), **GRANULARITY)
    for key in a:
        np.testing.assert_array_equal(a[key], b[key])
    tiny = gr.measure_granularity(image[:6, :6], labels[:6, :6], "CH",
                                  **GRANULARITY)  # 6 * 0.25 < 2: undefined
    assert all(np.isnan(v).all() for v in tiny.values())
    empty = gr.measure_granularity(image, np.zeros_like(labels), "CH", **GRANULARITY)
    assert len(empty) == GRANULARITY["spectrum_length"] and all(v.shape == (0,) for v in empty.values())


def test_real_site_crops_match_cp_measure(shared_data) -> None:
    for image, labels in crop_cases(shared_data(SCALEFEX)):
        _compare(image, labels)


def test_real_site_full_frame(shared_data) -> None:
    images, nuclei, cells = full_site(shared_data(SCALEFEX))
    for c in (3, 0, 2):
        _compare(images[c], cells)
    _compare(images[3], nuclei)


def test_image_cache_follows_content() -> None:
    """The cached image spectrum is keyed by content: an in-place edit is measured afresh."""
    image, labels = synthetic(0)
    image = image.copy()
    gr.measure_granularity(image, labels, "CH", **GRANULARITY)
    image[::2] *= 0.5  # same buffer, new content
    _compare(image, labels)
    cells = np.where(labels > 0, 1, 0)  # another label image on the cached channel
    _compare(image, cells)
