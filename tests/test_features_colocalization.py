"""Colocalisation parity with cp_measure 0.3 (CellProfiler MeasureColocalization, objects mode)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from _features_b_data import SCALEFEX, load_site, site_crops, site_masks, synthetic

from pairedscreen.paint.features.colocalization import measure_colocalization
from pairedscreen.paint.features.objects import build_index

mc = pytest.importorskip("cp_measure.core.measurecolocalization")

RTOL = 1e-4
ATOL = 1e-12
# cp_measure key -> ours, first channel A, second B (CellProfiler naming)
NAMES = {
    "Correlation_Pearson": "Correlation_Correlation_A_B",
    "Correlation_Slope": "Correlation_Slope_A_B",
    "Correlation_Manders_1": "Correlation_Manders_A_B",
    "Correlation_Manders_2": "Correlation_Manders_B_A",
    "Correlation_RWC_1": "Correlation_RWC_A_B",
    "Correlation_RWC_2": "Correlation_RWC_B_A",
    "Correlation_Overlap": "Correlation_Overlap_A_B",
    "Correlation_K_1": "Correlation_K_A_B",
    "Correlation_K_2": "Correlation_K_B_A",
    "Correlation_Costes_1": "Correlation_Costes_A_B",
    "Correlation_Costes_2": "Correlation_Costes_B_A",
}


def _constant(image: np.ndarray, labels: np.ndarray) -> np.ndarray:
    idx = build_index(labels)
    return np.array([np.ptp(image[idx.pixels(k)]) == 0 for k in range(idx.n_objects)], bool)


def _compare(im1, im2, labels, costes: bool = True) -> None:
    ours = measure_colocalization(im1, im2, labels, "A", "B", costes=costes)
    ref = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        for fn in (mc.get_correlation_pearson, mc.get_correlation_manders_fold, mc.get_correlation_rwc,
                   mc.get_correlation_overlap):
            ref.update(fn(im1, im2, labels))
        if costes:
            ref.update(mc.get_correlation_costes(im1, im2, labels, scale_max=65535))
    assert sorted(ours) == sorted(NAMES[k] for k in ref)
    # a channel constant over an object leaves r (and the slope) undefined: NaN here, rounding
    # residue in cp_measure (documented exception in colocalization.py)
    undefined = _constant(im1, labels) | _constant(im2, labels)
    for key, values in ref.items():
        got = ours[NAMES[key]]
        want = np.asarray(values, dtype=float)
        if key in ("Correlation_Pearson", "Correlation_Slope"):
            assert np.isnan(got[undefined & _constant(im1, labels)]).all()
            assert np.isnan(ours["Correlation_Correlation_A_B"][undefined]).all()
            got, want = got[~undefined], want[~undefined]
        np.testing.assert_array_equal(np.isnan(got), np.isnan(want), err_msg=key)
        ok = ~np.isnan(want)
        np.testing.assert_allclose(got[ok], want[ok], rtol=RTOL, atol=ATOL, err_msg=key)


def _second_channel(image: np.ndarray, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.clip(0.5 * image + 0.2 * rng.random(image.shape) - 0.02, 0.0, 1.0)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_synthetic_matches_cp_measure(seed: int) -> None:
    image, labels = synthetic(seed)
    _compare(image, _second_channel(image, seed), labels)


def test_uint16_quantised_values_and_ties() -> None:
    """Values j/65535 take the 16-bit rank path; coarse values give many rank ties."""
    image, labels = synthetic(4)
    q16 = np.round(image * 65535) / 65535
    other = np.round(_second_channel(image, 4) * 65535) / 65535
    _compare(q16, other, labels)
    _compare(np.round(image * 20) / 20, np.round(other * 10) / 10, labels)


def test_names_and_orders() -> None:
    image, labels = synthetic(0)
    other = _second_channel(image, 0)
    ab = measure_colocalization(image, other, labels, "DNA", "Mito")
    ba = measure_colocalization(other, image, labels, "Mito", "DNA")
    assert "Correlation_Costes_DNA_Mito" not in ab
    for fam in ("Manders", "RWC", "K"):
        np.testing.assert_allclose(ab[f"Correlation_{fam}_DNA_Mito"], ba[f"Correlation_{fam}_DNA_Mito"],
                                   rtol=1e-12)
    np.testing.assert_allclose(ab["Correlation_Correlation_DNA_Mito"], ba["Correlation_Correlation_Mito_DNA"],
                               rtol=1e-12)
    same = measure_colocalization(image, image, labels, "DNA", "DNA")
    fine = ~_constant(image, labels)
    np.testing.assert_allclose(same["Correlation_Correlation_DNA_DNA"][fine], 1.0, rtol=1e-12)
    np.testing.assert_allclose(same["Correlation_RWC_DNA_DNA"], same["Correlation_Manders_DNA_DNA"],
                               rtol=1e-12)


def test_real_site_crops_match_cp_measure(shared_data) -> None:
    root = shared_data(SCALEFEX)
    for images, nuclei, cells in site_crops(root):
        for c1, c2 in ((0, 1), (3, 4), (2, 0), (1, 3)):
            _compare(images[c1], images[c2], cells)
            _compare(images[c1], images[c2], nuclei)


def test_real_site_full_frame(shared_data) -> None:
    root = shared_data(SCALEFEX)
    images = load_site(root)
    nuclei, cells = site_masks(root)
    _compare(images[0], images[2], cells)
    _compare(images[3], images[4], cells, costes=False)
    _compare(images[3], images[4], nuclei)


def test_rank_cache_follows_content() -> None:
    image, labels = synthetic(1)
    image = image.copy()
    other = _second_channel(image, 1)
    idx = build_index(labels)
    measure_colocalization(image, other, labels, "A", "B", index=idx)
    image[:, ::3] = 1.0 - image[:, ::3]  # same buffer, new content: ranks must be recomputed
    ours = measure_colocalization(image, other, labels, "A", "B", index=idx)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        ref = mc.get_correlation_rwc(image, other, labels)
    np.testing.assert_allclose(ours["Correlation_RWC_A_B"], ref["Correlation_RWC_1"], rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(ours["Correlation_RWC_B_A"], ref["Correlation_RWC_2"], rtol=RTOL, atol=ATOL)


def test_float32_images_read_in_place() -> None:
    image, labels = synthetic(2)
    other = _second_channel(image, 2)
    a32, b32 = image.astype(np.float32), other.astype(np.float32)
    got = measure_colocalization(a32, b32, labels, "A", "B", costes=True)
    a64, b64 = a32.astype(np.float64), b32.astype(np.float64)
    want = measure_colocalization(a64, b64, labels, "A", "B", costes=True)
    for key in want:
        np.testing.assert_array_equal(got[key], want[key], err_msg=key)


def test_zero_and_float32_constant_objects() -> None:
    """Exact-constant float32 values match cp_measure; an all-zero object gets the 0/0 = NaN of the
    definitions (cp_measure 0.3 raises ZeroDivisionError there, see the module docstring)."""
    image, labels = synthetic(0)
    image = image.astype(np.float32).astype(np.float64)
    other = _second_channel(image, 0)
    _compare(image, other, labels)
    image[labels == 1] = 0.0
    out = measure_colocalization(image, other, labels, "A", "B")
    k = 0  # label 1
    for key in ("Correlation", "Slope", "Manders_A_B", "RWC_A_B", "Overlap", "K_A_B"):
        name = key if key.endswith(("_A_B", "_B_A")) else f"{key}_A_B"
        assert np.isnan(out[f"Correlation_{name}"][k]), key
    assert out["Correlation_K_B_A"][k] == 0.0  # sum(0 * c2) / sum(c2^2)
    # the second channel's fractions are still defined: all of its above-threshold signal overlaps
    assert out["Correlation_Manders_B_A"][k] == 1.0
