"""``mito_tubeness`` against CellProfiler's own code: centrosome's ``filter.hessian`` (the function
CellProfiler 4.2's EnhanceOrSuppressFeatures calls, installed with cp_measure) on scipy's Gaussian
smoothing, CellProfiler's ridge step and skimage's ``rescale_intensity`` (its "Rescale result image")."""

from __future__ import annotations

import numpy as np
import pytest

from pairedscreen.paint.features.tubeness import tubeness

centrosome_filter = pytest.importorskip("centrosome.filter")


def cp_tubeness(image: np.ndarray, sigma: float, rescale: bool) -> np.ndarray:
    """CellProfiler 4.2.8 ``EnhanceOrSuppressFeatures.enhance_neurites`` (Tubeness, 2-D, no mask),
    then ``run``'s ``skimage.exposure.rescale_intensity`` when rescaling."""
    import scipy.ndimage
    import skimage.exposure

    smoothed = scipy.ndimage.gaussian_filter(image, np.divide(sigma, (1.0, 1.0)))
    hessian = centrosome_filter.hessian(smoothed, return_hessian=False, return_eigenvectors=False)
    result = -hessian[:, :, 0] * (hessian[:, :, 0] < 0) * (sigma ** 2)
    return skimage.exposure.rescale_intensity(result) if rescale else result


def _images():
    from scipy import ndimage as ndi

    rng = np.random.default_rng(7)
    yield "smooth noise", ndi.gaussian_filter(rng.random((120, 97)), 1.5)
    lines = np.zeros((80, 80))
    lines[20, 5:75] = 1.0                                   # a horizontal ridge
    lines[np.arange(10, 70), np.arange(10, 70)] = 0.6       # a diagonal ridge
    lines[5:60, 50] = 0.8                                   # a vertical one reaching the border
    yield "lines", lines + 0.01 * rng.random((80, 80))
    yield "uint16 grid", np.round(rng.random((64, 64)) * 65535) / 65535
    yield "tiny", rng.random((3, 4))


@pytest.mark.parametrize("sigma", [1.0, 2.0, 0.7])
@pytest.mark.parametrize("rescale", [True, False])
def test_tubeness_matches_cellprofiler(sigma, rescale):
    for name, img in _images():
        ref = cp_tubeness(img, sigma, rescale)
        ours = tubeness(img, smoothing=sigma, rescale=rescale)
        assert ours.shape == ref.shape
        np.testing.assert_array_equal(ours, ref, err_msg=name)


def test_tubeness_constant_image():
    img = np.full((20, 20), 0.3)
    np.testing.assert_array_equal(tubeness(img, smoothing=1.0, rescale=True), cp_tubeness(img, 1.0, True))


def test_tubeness_cache_follows_content_and_is_read_only():
    """The content-keyed cache: the same buffer with new content is computed again (never the stale
    image), a float32 copy of the same values hits the float64 entry, and the shared result cannot be
    written into by a caller."""
    rng = np.random.default_rng(3)
    img = rng.random((50, 60))
    first = tubeness(img, smoothing=1.0, rescale=True)
    with pytest.raises(ValueError):
        first[0, 0] = 1.0
    img[10:20, :] = 0.0  # same array, new content
    np.testing.assert_array_equal(tubeness(img, smoothing=1.0, rescale=True), cp_tubeness(img, 1.0, True))
    as32 = img.astype(np.float32)
    np.testing.assert_array_equal(tubeness(as32, smoothing=1.0, rescale=True),
                                  cp_tubeness(as32.astype(np.float64), 1.0, True))
    np.testing.assert_array_equal(tubeness(img, smoothing=2.0, rescale=True), cp_tubeness(img, 2.0, True))
