"""The ``mito_tubeness`` image: CellProfiler 4's EnhanceOrSuppressFeatures (Enhance, Neurites, Tubeness).

CellProfiler 4.2's steps, as the JUMP pipeline runs them on the Mito image (smoothing scale 1,
"Rescale result image: Yes"):

1. ``smoothed = scipy.ndimage.gaussian_filter(image, sigma)`` (no mask; reflect borders);
2. ``centrosome.filter.hessian(smoothed)``'s eigenvalues: second differences ``d00`` (rows),
   ``d11`` (columns) and ``d01 = (f[+1,+1] + f[-1,-1] - f[+1,-1] - f[-1,+1]) / 4``, each left 0
   where its stencil leaves the image (``d00`` on the first/last row, ``d11`` on the first/last
   column, ``d01`` on all four borders); ``L = (-b +- sqrt(b^2 - 4c)) / 2`` with ``b = -(d00 + d11)``
   and ``c = d00 d11 - d01^2``; ``L0`` is the root of larger magnitude (``+`` on ties);
3. ``result = -L0 * (L0 < 0) * sigma^2`` (bright ridges on a dark background);
4. rescaled (``skimage.exposure.rescale_intensity``): ``(result - min) / (max - min)`` over the
   image (results are >= 0, so the output range is [0, 1]); a constant image is left clipped to [0, 1].

Steps 2-3 run in one numba pass over the pixels with the same floating-point operations in the same
order as centrosome's array expressions, so the image equals CellProfiler's to the last bit.

The result is cached by image content (64-bit hash, the last two images), read-only: with the jump
preset ``paint_features`` makes it for the per-object families and again for the site's Image table
(its ``mito_bw`` Threshold columns) from the same Mito image.
"""

from __future__ import annotations

import threading
from collections import OrderedDict

import numba
import numpy as np

from .granularity import fingerprint

__all__ = ["NAME", "tubeness"]

NAME = "mito_tubeness"  # CellProfiler's name of the enhanced Mito image in the JUMP pipeline

_CACHE: OrderedDict[tuple, np.ndarray] = OrderedDict()
_CACHE_SIZE = 2
_LOCK = threading.Lock()


@numba.njit(cache=True, nogil=True, error_model="numpy")
def _second_differences(f, y, x, h, w):
    """(d00, d01, d11) of centrosome's Hessian at pixel (y, x); a term is 0 where its stencil leaves
    the image."""
    d00 = 0.0
    d01 = 0.0
    d11 = 0.0
    if 0 < y < h - 1:
        d00 = f[y - 1, x] - 2 * f[y, x] + f[y + 1, x]
        if 0 < x < w - 1:
            d01 = (f[y + 1, x + 1] + f[y - 1, x - 1] - f[y + 1, x - 1] - f[y - 1, x + 1]) / 4
    if 0 < x < w - 1:
        d11 = f[y, x - 1] - 2 * f[y, x] + f[y, x + 1]
    return d00, d01, d11


@numba.njit(cache=True, nogil=True, error_model="numpy")
def _largest_eigenvalue(a, b01, c11):
    """The eigenvalue of [[a, b01], [b01, c11]] of largest magnitude, by centrosome's formula."""
    b = -(a + c11)
    c = a * c11 - b01 * b01
    root = np.sqrt(b * b - 4 * c)
    l0 = (-b + root) / 2
    l1 = (-b - root) / 2
    if np.abs(l1) > np.abs(l0):
        return l1
    return l0


@numba.njit(cache=True, nogil=True, error_model="numpy")
def _ridge_kernel(smoothed, sigma2, out):
    """``out = -L0 * (L0 < 0) * sigma^2`` per pixel (NaN where centrosome's root is NaN)."""
    h, w = smoothed.shape
    for y in range(h):
        for x in range(w):
            d00, d01, d11 = _second_differences(smoothed, y, x, h, w)
            l0 = _largest_eigenvalue(d00, d01, d11)
            neg = 1.0 if l0 < 0 else 0.0
            out[y, x] = -l0 * neg * sigma2


def tubeness(image: np.ndarray, *, smoothing: float, rescale: bool) -> np.ndarray:
    """CellProfiler 4's tubeness-enhanced image of a 2-D float ``image`` (``smoothing``: the Gaussian
    sigma, the module's "Smoothing scale"; ``rescale``: its "Rescale result image"); read-only,
    shared with later calls on the same image content."""
    from scipy import ndimage as ndi

    img = np.ascontiguousarray(image, dtype=np.float64)
    if img.ndim != 2:
        raise ValueError(f"tubeness needs a 2-D image, got shape {img.shape}")
    key = (int(fingerprint(img)), img.shape, float(smoothing), bool(rescale))
    with _LOCK:
        hit = _CACHE.get(key)
        if hit is not None:
            _CACHE.move_to_end(key)
            return hit
    smoothed = ndi.gaussian_filter(img, float(smoothing)) if smoothing > 0 else img.copy()
    out = np.empty_like(smoothed)
    _ridge_kernel(np.ascontiguousarray(smoothed), float(smoothing) ** 2, out)
    if rescale:
        lo, hi = float(np.min(out)), float(np.max(out))
        out = (out - lo) / (hi - lo) if hi > lo else np.clip(out, 0.0, 1.0)
    out.setflags(write=False)
    with _LOCK:
        _CACHE[key] = out
        while len(_CACHE) > _CACHE_SIZE:
            _CACHE.popitem(last=False)
    return out
