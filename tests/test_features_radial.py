"""Radial distribution parity with cp_measure 0.3 (CellProfiler MeasureObjectIntensityDistribution)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from _features_b_data import SCALEFEX, crop_cases, full_site, synthetic
from config_values import SCHEMA

from pairedscreen.paint.features.objects import build_index
from pairedscreen.paint.features.radial import measure_radial_distribution

cp_rad = pytest.importorskip("cp_measure.core.measureobjectintensitydistribution")

RTOL = 1e-4
# RadialCV of a bin whose 8 wedge means are all equal is rounding noise (~1e-17) in both.
ATOL = 1e-12


def _compare(image, labels, bins: int = 4) -> None:
    ours = measure_radial_distribution(image, labels, "CH", bins=bins)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        ref = cp_rad.get_radial_distribution(labels, image, bin_count=bins)
    assert len(ours) == len(ref) == 3 * bins
    for key, values in ref.items():
        _, feature, scale = key.split("_")
        got = ours[f"RadialDistribution_{feature}_CH_{scale}"]
        want = np.asarray(values, dtype=float)
        np.testing.assert_array_equal(np.isnan(got), np.isnan(want), err_msg=key)
        ok = ~np.isnan(want)
        np.testing.assert_allclose(got[ok], want[ok], rtol=RTOL, atol=ATOL, err_msg=key)


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("bins", [4, 3, 7])
def test_synthetic_matches_cp_measure(seed: int, bins: int) -> None:
    image, labels = synthetic(seed)
    _compare(image, labels, bins)


def test_touching_objects_and_zero_intensity() -> None:
    image, labels = synthetic(3, (101, 77))
    image = image.copy()
    image[labels == 1] = 0.0  # FracAtD 0/0 -> NaN, as CellProfiler
    _compare(image, labels)
    # dense tiling: every object touches others (colouring in CellProfiler)
    yy, xx = np.mgrid[0:64, 0:64]
    tiles = ((yy // 16) * 4 + (xx // 16) + 1).astype(np.int32)
    _compare(np.random.default_rng(0).random((64, 64)), tiles)


def test_names_index_reuse_and_gaps() -> None:
    image, labels = synthetic(0)
    out = measure_radial_distribution(image, labels, "DNA", bins=4)
    assert sorted(out) == sorted(f"RadialDistribution_{f}_DNA_{i}of4"
                                 for f in ("FracAtD", "MeanFrac", "RadialCV") for i in range(1, 5))
    frac = np.stack([out[f"RadialDistribution_FracAtD_DNA_{i}of4"] for i in range(1, 5)])
    np.testing.assert_allclose(frac.sum(0), 1.0, rtol=1e-12)
    gapped = np.where(labels > 0, labels * 3 + 1, 0)
    idx = build_index(gapped)
    first = measure_radial_distribution(image, gapped, "DNA", index=idx,
                                        bins=SCHEMA["paint.features.radial_bins"])
    # cached geometry, intensities halved: every radial feature is scale-free
    second = measure_radial_distribution(image * 0.5, gapped, "DNA", index=idx,
                                         bins=SCHEMA["paint.features.radial_bins"])
    for key in out:
        np.testing.assert_array_equal(out[key], first[key])
        np.testing.assert_allclose(second[key], first[key], rtol=1e-12, atol=1e-15)


def test_real_site_crops_match_cp_measure(shared_data) -> None:
    for image, labels in crop_cases(shared_data(SCALEFEX)):
        _compare(image, labels)


def test_real_site_full_frame(shared_data) -> None:
    images, nuclei, cells = full_site(shared_data(SCALEFEX))
    for c in (3, 2):  # the geometry is channel-independent; DNA and Mito intensities
        _compare(images[c], cells)
        _compare(images[c], nuclei)


def test_float32_image() -> None:
    image, labels = synthetic(1)
    img32 = image.astype(np.float32)
    got = measure_radial_distribution(img32, labels, "CH", bins=SCHEMA["paint.features.radial_bins"])
    want = measure_radial_distribution(img32.astype(np.float64), labels, "CH",
                                       bins=SCHEMA["paint.features.radial_bins"])
    for key in want:
        np.testing.assert_array_equal(got[key], want[key], err_msg=key)
