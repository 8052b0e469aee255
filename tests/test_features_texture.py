"""Texture (Haralick) parity with cp_measure 0.3 / mahotas on synthetic objects and the real site."""

from __future__ import annotations

import numpy as np
import pytest
from _features_b_data import SCALEFEX, crop_cases, full_site, synthetic
from config_values import SCHEMA

from pairedscreen.paint.features.objects import build_index
from pairedscreen.paint.features.texture import F_HARALICK, measure_texture

cp_texture = pytest.importorskip("cp_measure.core.measuretexture")

RTOL = 1e-3
# InfoMeas2 = sqrt(1 - exp(-2 (HXY2 - H))) with HXY2 = 2 HX (exact for the symmetric GLCM); where
# the GLCM factorises, mahotas' outer-product sum and 2 HX differ by rounding, which the sqrt lifts
# to ~1e-7 absolute (see the module docstring).
ATOL = {"InfoMeas2": 1e-6}


def _compare(image: np.ndarray, labels: np.ndarray, scale: int = 3, levels: int = 256) -> None:
    ours = measure_texture(image, labels, "CH", scales=(scale,), levels=levels)
    ref = cp_texture.get_texture(labels, image, scale=scale, gray_levels=levels)
    assert len(ours) == len(ref) == 52
    for key, values in ref.items():
        feature, rest = key.split("_", 1)
        got = ours[f"Texture_{feature}_CH_{rest}"]
        want = np.asarray(values, dtype=float)
        assert got.shape == want.shape
        np.testing.assert_array_equal(np.isnan(got), np.isnan(want), err_msg=key)
        ok = ~np.isnan(want)
        np.testing.assert_allclose(got[ok], want[ok], rtol=RTOL, atol=ATOL.get(feature, 1e-12), err_msg=key)


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize(("scale", "levels"), [(3, 256), (1, 256), (2, 8), (3, 64)])
def test_synthetic_matches_cp_measure(seed: int, scale: int, levels: int) -> None:
    image, labels = synthetic(seed)
    _compare(image, labels, scale, levels)


def test_edge_objects_nan_and_uniform() -> None:
    image, labels = synthetic(0)
    out = measure_texture(image, labels, "CH",
                          scales=SCHEMA["paint.features.texture_scales"],
                          levels=SCHEMA["paint.features.texture_levels"])
    idx = build_index(labels)
    # the 3-px-high bar has no vertical pair at distance 3 -> all its values NaN (mahotas raises)
    bar = labels[46, 80]
    k = int(np.searchsorted(idx.labels_present, bar))
    assert all(np.isnan(out[f"Texture_{f}_CH_3_{d:02d}_256"][k]) for f in F_HARALICK for d in range(4))
    # a constant object: one grey level -> ASM 1, contrast 0, correlation 1 (mahotas' convention)
    const = labels[43, 5]
    k = int(np.searchsorted(idx.labels_present, const))
    assert out["Texture_AngularSecondMoment_CH_3_00_256"][k] == 1.0
    assert out["Texture_Contrast_CH_3_00_256"][k] == 0.0
    assert out["Texture_Correlation_CH_3_00_256"][k] == 1.0


def test_names_scales_and_index_reuse() -> None:
    image, labels = synthetic(0)
    out = measure_texture(image, labels, "DNA", scales=(3, 5), levels=256)
    assert len(out) == 2 * 4 * 13
    assert "Texture_Contrast_DNA_3_00_256" in out and "Texture_InfoMeas2_DNA_5_03_256" in out
    idx = build_index(labels)
    again = measure_texture(image, labels, "DNA", scales=(3, 5), index=idx,
                            levels=SCHEMA["paint.features.texture_levels"])
    for key in out:
        np.testing.assert_array_equal(out[key], again[key])


def test_gapped_labels_follow_labels_present() -> None:
    image, labels = synthetic(0)
    gapped = np.where(labels > 0, labels * 7 + 3, 0)
    a = measure_texture(image, labels, "CH",
                        scales=SCHEMA["paint.features.texture_scales"],
                        levels=SCHEMA["paint.features.texture_levels"])
    b = measure_texture(image, gapped, "CH",
                        scales=SCHEMA["paint.features.texture_scales"],
                        levels=SCHEMA["paint.features.texture_levels"])
    for key in a:
        np.testing.assert_array_equal(a[key], b[key])


def test_empty_labels() -> None:
    out = measure_texture(np.zeros((8, 8)), np.zeros((8, 8), np.int32), "CH",
                          scales=SCHEMA["paint.features.texture_scales"],
                          levels=SCHEMA["paint.features.texture_levels"])
    assert len(out) == 52 and all(v.shape == (0,) for v in out.values())


def test_real_site_crops_match_cp_measure(shared_data) -> None:
    for image, labels in crop_cases(shared_data(SCALEFEX)):
        _compare(image, labels)


def test_real_site_nuclei_full_frame(shared_data) -> None:
    images, nuclei, _ = full_site(shared_data(SCALEFEX))
    for c in (3, 2):  # DNA (few grey levels), Mito (many)
        _compare(images[c], nuclei)


def test_add_repeated_equals_one_addition_at_a_time() -> None:
    """DifferenceVariance's tail (``m * m`` added once per empty |i-j| bin) fast-forwarded per
    binade must give the bits of the plain loop, ties to even and binade crossings included."""
    from pairedscreen.paint.features.texture import _add_repeated

    rng = np.random.default_rng(0)
    xs = np.concatenate([rng.uniform(0, 1, 300), rng.uniform(0, 1e-3, 100), [0.0, 0.2499999, 0.5, 1e-310]])
    ys = np.concatenate([(1.0 / rng.integers(2, 257, 300)) ** 2, rng.uniform(0, 1e-2, 100),
                         [1e-5, 3e-9, 0.0, 1e-312]])
    # y an odd multiple of half an ulp of x's binade: every addition is a tie (the last one lands
    # on an odd multiple of the next binade's ulp first, so its first two steps differ)
    ties = [(0.3, 3 * 2.0 ** -55), (0.3, 3 * 2.0 ** -55 + 2.0 ** -40), (0.26, 2.0 ** -55),
            (0.49999, 3 * 2.0 ** -55 + 2.0 ** -20), (0.5 - 2.0 ** -54, 3 * 2.0 ** -54)]
    cases = [(x, y, n) for x, y in zip(xs, ys, strict=True) for n in (0, 1, 2, 3, 7, 255)]
    cases += [(x, y, n) for x, y in ties for n in (1, 4, 100, 10_000)]
    for x, y, n in cases:
        want = x
        for _ in range(n):
            want += y
        got = _add_repeated(x, y, n)
        assert got == want, (x, y, n, got, want)
