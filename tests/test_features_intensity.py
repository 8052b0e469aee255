"""Intensity features on hand-checkable images (independent of cp_measure)."""

from __future__ import annotations

import numpy as np
import pytest

from pairedscreen.paint.features.intensity import measure_intensity


def test_square_statistics_and_cellprofiler_quantiles():
    lab = np.zeros((6, 6), np.int32)
    lab[1:4, 1:4] = 3
    img = np.zeros((6, 6))
    img[1:4, 1:4] = np.arange(1, 10).reshape(3, 3) / 10.0  # 0.1 .. 0.9, raster order
    f = {k: float(v[0]) for k, v in measure_intensity(img, lab, "DNA").items()}
    vals = np.arange(1, 10) / 10.0
    assert f["Intensity_IntegratedIntensity_DNA"] == pytest.approx(vals.sum())
    assert f["Intensity_MeanIntensity_DNA"] == pytest.approx(0.5)
    assert f["Intensity_StdIntensity_DNA"] == pytest.approx(vals.std())
    assert (f["Intensity_MinIntensity_DNA"], f["Intensity_MaxIntensity_DNA"]) == (0.1, 0.9)
    # CellProfiler: position n*q, linear interpolation: n=9 -> 2.25, 4.5, 6.75
    assert f["Intensity_LowerQuartileIntensity_DNA"] == pytest.approx(0.3 * 0.75 + 0.4 * 0.25)
    assert f["Intensity_MedianIntensity_DNA"] == pytest.approx(0.55)
    assert f["Intensity_UpperQuartileIntensity_DNA"] == pytest.approx(0.7 * 0.25 + 0.8 * 0.75)
    # |x - 0.55| sorted: .05 .05 .15 .15 .25 .25 .35 .35 .45 -> position 4.5
    assert f["Intensity_MADIntensity_DNA"] == pytest.approx(0.25)
    # edge = the 8 pixels around the centre
    edge = np.delete(vals, 4)
    assert f["Intensity_IntegratedIntensityEdge_DNA"] == pytest.approx(edge.sum())
    assert f["Intensity_StdIntensityEdge_DNA"] == pytest.approx(edge.std())
    assert (f["Intensity_MinIntensityEdge_DNA"], f["Intensity_MaxIntensityEdge_DNA"]) == (0.1, 0.9)
    assert (f["Location_MaxIntensity_X_DNA"], f["Location_MaxIntensity_Y_DNA"]) == (3.0, 3.0)
    ys, xs = np.mgrid[1:4, 1:4]
    w = vals.reshape(3, 3)
    cx, cy = (xs * w).sum() / w.sum(), (ys * w).sum() / w.sum()
    assert f["Location_CenterMassIntensity_X_DNA"] == pytest.approx(cx)
    assert f["Location_CenterMassIntensity_Y_DNA"] == pytest.approx(cy)
    assert f["Intensity_MassDisplacement_DNA"] == pytest.approx(np.hypot(cx - 2, cy - 2))
    numpy_conv = measure_intensity(img, lab, "DNA", cellprofiler_quantiles=False)
    assert numpy_conv["Intensity_LowerQuartileIntensity_DNA"][0] == pytest.approx(np.percentile(vals, 25))


def test_edges_between_touching_objects_ties_and_nan():
    lab = np.zeros((5, 8), np.int32)
    lab[:, :4] = 1
    lab[:, 4:] = 2  # touching objects filling the image: edges only along the shared border
    img = np.full((5, 8), 0.25)
    img[0, 6] = np.nan
    f = measure_intensity(img, lab, "c")
    # object 1: the column x=3 touches object 2; image borders are not edges
    assert f["Intensity_IntegratedIntensityEdge_c"][0] == pytest.approx(5 * 0.25)
    assert f["Intensity_StdIntensity_c"][0] == 0.0
    assert f["Intensity_MADIntensity_c"][0] == 0.0
    # all-equal values: the maximum is the first pixel in raster order
    assert (f["Location_MaxIntensity_X_c"][0], f["Location_MaxIntensity_Y_c"][0]) == (0.0, 0.0)
    # the NaN pixel is ignored
    assert f["Intensity_IntegratedIntensity_c"][1] == pytest.approx(19 * 0.25)


def test_integer_and_shape_errors():
    lab = np.ones((3, 3), np.int32)
    with pytest.raises(ValueError, match="differ in shape"):
        measure_intensity(np.zeros((3, 4)), lab, "c")
    f = measure_intensity(np.full((3, 3), 2, np.uint16), lab, "c")
    assert f["Intensity_MeanIntensity_c"][0] == 2.0


def _cellprofiler_quantiles(vals: np.ndarray) -> tuple[float, float, float, float]:
    """Q1, median, Q3, MAD by CellProfiler's rule on a full sort: position n*q, linear interpolation
    toward the next order statistic (none past the last)."""
    def q(s, frac):
        n = s.size
        pos = n * frac
        lo = min(int(pos), n - 1)
        f = pos - lo if lo + 1 <= n - 1 else 0.0
        return s[lo] if f == 0.0 else s[lo] * (1.0 - f) + s[lo + 1] * f

    s = np.sort(vals)
    med = q(s, 0.5)
    return q(s, 0.25), med, q(s, 0.75), q(np.sort(np.abs(s - med)), 0.5)


def _off_grid_image(dtype) -> tuple[np.ndarray, np.ndarray]:
    """Objects of 1 to 40, 333 and 900 pixels; values off the k/65535 grid with negatives, ties,
    -0.0 next to 0.0 and a NaN."""
    rng = np.random.default_rng(7)
    lab = np.zeros((64, 64), np.int32)
    flat = lab.reshape(-1)
    pos = 0
    for k, n in enumerate([*range(1, 41), 333, 900], start=1):
        flat[pos:pos + n] = k
        pos += n + 1
    img = rng.normal(0.3, 0.4, lab.shape).astype(dtype)
    img[lab % 3 == 0] = np.round(img[lab % 3 == 0] * 4) / 4  # ties
    img[lab == 42] = np.round(img[lab == 42] * 8) / 8
    img[lab == 40] = -0.0
    img.reshape(-1)[np.flatnonzero(flat == 40)[::2]] = 0.0
    img[5, 7] = np.nan
    return img, lab


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_off_grid_quantiles_match_a_full_sort(dtype):
    """Images off the k/65535 grid take the radix sort of their bit patterns (4 bytes for float32,
    8 for float64): CellProfiler's rule on a full numpy sort, exactly; float32 values measured as
    float64 (the 8-byte keys) give the same numbers."""
    img, lab = _off_grid_image(dtype)
    ours = measure_intensity(img, lab, "c")
    names = ("LowerQuartile", "Median", "UpperQuartile", "MAD")
    for k in range(1, int(lab.max()) + 1):
        vals = img[lab == k].astype(np.float64)
        ref = _cellprofiler_quantiles(vals[np.isfinite(vals)])
        got = tuple(float(ours[f"Intensity_{name}Intensity_c"][k - 1]) for name in names)
        assert got == ref, k
    if dtype == np.float32:
        wide = measure_intensity(img.astype(np.float64), lab, "c")
        for name in names:
            key = f"Intensity_{name}Intensity_c"
            np.testing.assert_array_equal(ours[key], wide[key])
