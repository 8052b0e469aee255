"""CellProfiler 4's global thresholds: the Threshold module (and Identify's threshold step) and
MeasureImageQuality's Otsu thresholds.

Threshold module (CellProfiler 4.2.8 ``threshold.Threshold``, global strategy), on a 2-D float image:

1. *Minimum Cross-Entropy*: ``skimage.filters.threshold_li`` with tolerance
   ``max(min(diff(unique(values))) / 2, 0.5 / 65536)``; *Otsu*: ``threshold_otsu`` (two classes) or
   ``threshold_multiotsu(nbins=128)``, the lower threshold when the middle class is foreground,
   the upper one otherwise. An empty or constant image gives 0 or its value.
   With "log transform" (Otsu/MCE only) the method runs on centrosome's ``log_transform``
   (values below ``min + (max - min) / 256 + eps`` raised to it, ``log``, stretched to [0, 1]) and
   the threshold is mapped back. That is ``OrigThreshold``.
2. ``FinalThreshold = clip(OrigThreshold * correction factor, lower, upper)``.
3. The binary image: ``image >= FinalThreshold``, or, with a smoothing scale ``s > 0``, the image
   Gaussian-smoothed with ``sigma = s / 0.6744 / 2`` (zero outside the image, renormalised by the
   smoothed mask) ``>= FinalThreshold``.
4. ``WeightedVariance``: variance of ``log2(max(v, max / 256))`` within foreground and background,
   weighted by their pixel counts; ``SumOfEntropies``: the image clamped below at ``max / 256``,
   perturbed by centrosome's ``smooth_with_noise(., 8)`` (normal noise from ``RandomState(0)``:
   deterministic), ``log2`` histogrammed in 256 bins over its range for foreground and background,
   ``sum h log2 h`` of each normalised non-empty histogram, added (centrosome's names and signs).

MeasureImageQuality's thresholds (``ThresholdOtsu_{image}_{2W|3FW|3BW}``) are centrosome's own Otsu
(not skimage's): on the non-negative pixels, log-transformed as above, ``otsu`` (256 bins of the
sorted data, mean of the thresholds either side of the best) or ``otsu3`` (128 bins), mapped back.
Only the weighted-variance variants are implemented (the JUMP pipeline uses no entropy variant).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numba
import numpy as np
from scipy import ndimage

__all__ = [
    "ThresholdSettings",
    "apply_threshold",
    "log_transform",
    "original_threshold",
    "otsu_quality_threshold",
    "sum_of_entropies",
    "threshold_measurements",
    "weighted_variance",
]

MCE = "minimum_cross_entropy"
OTSU = "otsu"


@dataclass(frozen=True)
class ThresholdSettings:
    """A CellProfiler Threshold module's global settings (names as in its settings panel).

    ``method``: ``"minimum_cross_entropy"`` or ``"otsu"``; ``three_class`` and
    ``middle_to_foreground``: Otsu's class settings; ``log_transform``: "Log transform before
    thresholding"; ``smoothing_scale``: "Threshold smoothing scale" (0 = none); ``correction_factor``,
    ``lower``, ``upper``: "Threshold correction factor" and the bounds.
    """

    method: str
    smoothing_scale: float
    correction_factor: float
    lower: float
    upper: float
    three_class: bool
    middle_to_foreground: bool
    log_transform: bool

    def __post_init__(self) -> None:
        if self.method not in (MCE, OTSU):
            raise ValueError(f"threshold method must be {MCE!r} or {OTSU!r}, got {self.method!r}")


def log_transform(values: np.ndarray) -> tuple[np.ndarray, tuple[float, float]]:
    """centrosome ``log_transform``: (stretched log image, (log_min, log_max)) for the inverse."""
    vals = np.asarray(values)
    lo, hi = float(vals.min()), float(vals.max())
    noise_min = lo + (hi - lo) / 256.0 + np.finfo(vals.dtype).eps
    limage = np.log(np.maximum(vals, noise_min))
    log_min, log_max = float(limage.min()), float(limage.max())
    if log_min == log_max:
        stretched = np.asarray(limage, float)
        if log_min < 0:
            stretched = np.zeros_like(stretched)
        elif log_min > 1:
            stretched = np.ones_like(stretched)
    else:
        stretched = (np.asarray(limage, float) - log_min) / (log_max - log_min)
    return stretched, (log_min, log_max)


def _inverse_log(value: float, d: tuple[float, float]) -> float:
    return float(np.exp(value * (d[1] - d[0]) + d[0]))


def original_threshold(values: np.ndarray, settings: ThresholdSettings) -> float:
    """Step 1 on the (masked, possibly log-transformed) pixel values, clipped to the bounds
    (step 2 with correction 1 is ``min(max(., lower), upper)`` of this times the factor)."""
    return min(max(_global_threshold(values, settings) * settings.correction_factor, settings.lower),
               settings.upper)


def _global_threshold(values: np.ndarray, settings: ThresholdSettings) -> float:
    """Step 1 on the (masked, possibly log-transformed) pixel values."""
    from skimage import filters

    if values.size == 0:
        return 0.0
    if np.all(values == values[0]):
        return float(values[0])
    if settings.method == MCE:
        data = np.asarray(values, dtype=np.float64)
        if np.isfinite(data).all():
            return float(_li_iterations(data, _li_tolerance(data)))
        return float(filters.threshold_li(data, tolerance=_li_tolerance(data)))
    if not settings.three_class:
        return float(filters.threshold_otsu(values))
    t = filters.threshold_multiotsu(values, nbins=128)
    return float(t[0] if settings.middle_to_foreground else t[1])


@numba.njit(cache=True, nogil=True)
def _pairwise(a, lo, n):
    """numpy's pairwise float64 sum of ``a[lo:lo + n]`` (8 accumulators up to 128 values, halves above)."""
    if n < 8:
        res = 0.0
        for i in range(n):
            res += a[lo + i]
        return res
    if n <= 128:
        r0, r1, r2, r3 = a[lo], a[lo + 1], a[lo + 2], a[lo + 3]
        r4, r5, r6, r7 = a[lo + 4], a[lo + 5], a[lo + 6], a[lo + 7]
        i = 8
        while i < n - (n % 8):
            j = lo + i
            r0 += a[j]
            r1 += a[j + 1]
            r2 += a[j + 2]
            r3 += a[j + 3]
            r4 += a[j + 4]
            r5 += a[j + 5]
            r6 += a[j + 6]
            r7 += a[j + 7]
            i += 8
        res = ((r0 + r1) + (r2 + r3)) + ((r4 + r5) + (r6 + r7))
        while i < n:
            res += a[lo + i]
            i += 1
        return res
    n2 = n // 2
    n2 -= n2 % 8
    return _pairwise(a, lo, n2) + _pairwise(a, lo + n2, n - n2)


@numba.njit(cache=True, nogil=True, error_model="numpy")
def _np_mean(a, n):
    """``np.mean(a[:n])`` to the bit: pairwise sums of 8192-value blocks (numpy's buffer) added in order."""
    acc = 0.0
    lo = 0
    while lo < n:
        m = min(8192, n - lo)
        acc += _pairwise(a, lo, m)
        lo += m
    return acc / n


@numba.njit(cache=True, nogil=True, error_model="numpy")
def _li_iterations(data, tolerance):
    """``skimage.filters.threshold_li(data, tolerance=tolerance)`` for finite, non-constant float64 data:
    the same iteration with numpy's means (order and summation kept), without its temporary arrays."""
    image_min = data.min()
    image = data - image_min
    fore = np.empty_like(image)
    back = np.empty_like(image)
    t_next = _np_mean(image, image.size)
    t_curr = -2 * tolerance
    while abs(t_next - t_curr) > tolerance:
        t_curr = t_next
        nf = 0
        nb = 0
        for v in image:
            if v > t_curr:
                fore[nf] = v
                nf += 1
            else:
                back[nb] = v
                nb += 1
        mean_fore = _np_mean(fore, nf)
        mean_back = _np_mean(back, nb)
        if mean_back == 0.0:
            break
        t_next = (mean_back - mean_fore) / (np.log(mean_back) - np.log(mean_fore))
    return t_next + image_min


@numba.njit(cache=True, nogil=True)
def _close_pair(data, lo, width):
    """True when two distinct values of ``data`` fall in one bucket ``[lo + k width, lo + (k + 1) width)``,
    i.e. when two distinct values lie less than ``width`` (plus rounding) apart."""
    n_buckets = int((data.max() - lo) / width) + 2
    first = np.full(n_buckets, np.nan)
    for v in data:
        b = int((v - lo) / width)
        f = first[b]
        if f != f:
            first[b] = v
        elif f != v:
            return True
    return False


def _li_tolerance(data: np.ndarray) -> float:
    """CellProfiler's ``max(min(diff(unique(data))) / 2, 0.5 / 65536)`` without sorting when it can: two
    distinct values closer than 1/131072 make the first term smaller than the second, so the answer is
    0.5/65536 (the usual case for a float image; checked with at most 64 * 131072 buckets); otherwise the
    exact formula."""
    floor = 0.5 / 65536
    lo = float(data.min())
    hi = float(data.max())
    if np.isfinite(lo) and np.isfinite(hi) and hi - lo <= 64.0 and _close_pair(data, lo, 1.0 / 131072):
        return floor
    return max(float(np.min(np.diff(np.unique(data)))) / 2, floor)


def _smooth_masked(image: np.ndarray, sigma: float, mask: np.ndarray) -> np.ndarray:
    """centrosome ``smooth_with_function_and_mask`` with a zero-padded Gaussian of ``sigma``."""
    if mask.all():
        return ndimage.gaussian_filter(image, sigma, mode="constant", cval=0) / _bleed(image.shape, sigma)
    bleed = ndimage.gaussian_filter(mask.astype(float), sigma, mode="constant", cval=0)
    masked = np.zeros(image.shape, image.dtype)
    masked[mask] = image[mask]
    smoothed = ndimage.gaussian_filter(masked, sigma, mode="constant", cval=0)
    return smoothed / (bleed + np.finfo(float).eps)


@lru_cache(maxsize=4)
def _bleed(shape: tuple[int, int], sigma: float) -> np.ndarray:
    """``gaussian(ones) + eps``: the share of each smoothed pixel that comes from inside the image
    (centrosome's ``smooth_with_function_and_mask`` with an all-true mask), one per image shape."""
    out = ndimage.gaussian_filter(np.ones(shape), sigma, mode="constant", cval=0) + np.finfo(float).eps
    out.flags.writeable = False
    return out


def apply_threshold(image: np.ndarray, final: float, settings: ThresholdSettings,
                    mask: np.ndarray | None = None) -> np.ndarray:
    """Step 3: the Threshold module's binary image (True = foreground)."""
    m = np.ones(image.shape, bool) if mask is None else mask
    if settings.smoothing_scale == 0:
        return (image >= final) & m
    sigma = settings.smoothing_scale / 0.6744 / 2.0
    return (_smooth_masked(image, sigma, m) >= final) & m


def weighted_variance(image: np.ndarray, mask: np.ndarray, binary: np.ndarray) -> float:
    """centrosome ``weighted_variance``: pixel-count-weighted variance of log2 fg / bg intensities."""
    if not mask.any():
        return 0.0
    minval = float(np.max(image[mask])) / 256
    if minval == 0:
        return 0.0
    fg = np.log2(np.maximum(image[binary & mask], minval))
    bg = np.log2(np.maximum(image[~binary & mask], minval))
    if fg.size == 0:
        return float(np.var(bg))
    if bg.size == 0:
        return float(np.var(fg))
    return float((np.var(fg) * fg.size + np.var(bg) * bg.size) / (fg.size + bg.size))


def _entropy_term(values: np.ndarray, lower: float, upper: float) -> float:
    h = np.histogram(values, 256, range=(lower, upper))[0]
    h = h[h > 0]
    if h.size == 0:
        h = np.ones(1, int)
    p = h.astype(float) / float(h.sum())
    return float(np.sum(p * np.log2(p)))


@lru_cache(maxsize=2)
def _seeded_noise(shape: tuple[int, ...]) -> np.ndarray:
    """centrosome's ``smooth_with_noise`` draws: ``RandomState(0).normal(size=shape)``, the same every
    call, so kept per shape (read-only)."""
    r = np.random.RandomState(0).normal(size=shape)
    r.setflags(write=False)
    return r


def sum_of_entropies(image: np.ndarray, mask: np.ndarray, binary: np.ndarray) -> float:
    """centrosome ``sum_of_entropies`` (with its seeded ``smooth_with_noise(., 8)``)."""
    mask = mask & ~np.isnan(image)
    if not mask.any():
        return 0.0
    minval = float(np.max(image[mask])) / 256
    if minval == 0:
        return 0.0
    clamped = image.copy()
    clamped[clamped < minval] = minval
    r = _seeded_noise(clamped.shape)
    delta = 2.0 ** -8
    c = np.clip(clamped, delta, 1)
    noisy = np.exp2(np.log2(c + delta) * r + (1 - r) * np.log2(c))
    noisy[noisy > 1] = 1
    noisy[noisy < 0] = 0
    upper = np.log2(np.max(noisy))
    lower = np.log2(np.min(noisy))
    if upper == lower:
        return float(np.log2(np.sum(mask)))
    fg = noisy[binary & mask]
    bg = noisy[~binary & mask]
    if fg.size == 0 or bg.size == 0:
        return 0.0
    return _entropy_term(np.log2(fg), lower, upper) + _entropy_term(np.log2(bg), lower, upper)


def threshold_measurements(image: np.ndarray, settings: ThresholdSettings,
                           mask: np.ndarray | None = None) -> tuple[float, float, float, float]:
    """(FinalThreshold, OrigThreshold, SumOfEntropies, WeightedVariance) of one 2-D image, as
    CellProfiler's Threshold module (or an Identify module's threshold step) with ``settings``
    records them (``Threshold_*_{objects}`` image columns)."""
    img = np.asarray(image)
    if img.ndim != 2 or img.dtype.kind != "f":
        raise ValueError(f"image must be a 2-D float array, got {img.dtype} {img.shape}")
    m = np.ones(img.shape, bool) if mask is None else np.asarray(mask, bool)
    if settings.log_transform:
        data, d = log_transform(img)
        orig = _inverse_log(_global_threshold(data[m], settings), d)
    else:
        orig = _global_threshold(img[m], settings)
    final = min(max(orig * settings.correction_factor, settings.lower), settings.upper)
    binary = apply_threshold(img, final, settings, m)
    return final, orig, sum_of_entropies(img, m, binary), weighted_variance(img, m, binary)


def _running_variance(x: np.ndarray) -> np.ndarray:
    """centrosome ``otsu.running_variance``: variance of x[0:i+1] (0 for i = 0)."""
    n = len(x)
    m = x.cumsum() / np.arange(1, n + 1)
    x_minus_mprev = x[1:] - m[:-1]
    x_minus_m = x[1:] - m[1:]
    s = (x_minus_mprev * x_minus_m).cumsum()
    var = s / np.arange(1, n)
    return np.hstack(([0], var))


def _otsu2(data: np.ndarray, bins: int = 256) -> float:
    n = len(data)
    if n == 1:
        return float(data[0])
    bins = min(bins, n)
    step = n // bins
    var = _running_variance(data)
    rvar = np.flipud(_running_variance(np.flipud(data)))
    thresholds = data[1:n:step]
    score_low = var[0:n - 1:step] * np.arange(0, n - 1, step)
    score_high = rvar[1:n:step] * (n - np.arange(1, n, step))
    scores = score_low + score_high
    if len(scores) == 0:
        return float(thresholds[0])
    index = int(np.argwhere(scores == scores.min()).flatten()[0])
    lo = 0 if index == 0 else index - 1
    hi = len(thresholds) - 1 if index == len(thresholds) - 1 else index + 1
    return float((thresholds[lo] + thresholds[hi]) / 2)


def _otsu3(data: np.ndarray, bins: int = 128) -> tuple[float, float]:
    n = len(data)
    var = _running_variance(data)
    rvar = np.flipud(_running_variance(np.flipud(data)))
    bins = min(bins, n)
    bin_len = int(n // bins)
    thresholds = data[0:n:bin_len]
    score_low = var[0:n:bin_len] * np.arange(0, n, bin_len)
    score_high = rvar[0:n:bin_len] * (n - np.arange(0, n, bin_len))
    cs = data.cumsum()
    cs2 = (data**2).cumsum()
    i, j = np.mgrid[0:score_low.shape[0], 0:score_high.shape[0]] * bin_len
    diff = (j - i).astype(float)
    with np.errstate(divide="ignore", invalid="ignore"):
        mean = (cs[j] - cs[i]) / diff
        mean2 = (cs2[j] - cs2[i]) / diff
        score_middle = diff * (mean2 - mean**2)
    score_middle[i >= j] = np.inf
    score = score_low[i * bins // n] + score_middle + score_high[j * bins // n]
    best = np.argwhere(score == np.min(score))
    return float(thresholds[best[0, 0]]), float(thresholds[best[0, 1]])


def otsu_quality_threshold(image: np.ndarray, three_class: bool, middle_to_foreground: bool) -> float:
    """MeasureImageQuality's ``ThresholdOtsu`` (weighted variance): centrosome's Otsu on the
    log-transformed non-negative pixels (``image`` as float32, like the module)."""
    vals = np.asarray(image, np.float32).ravel()
    vals = vals[vals >= 0]
    if vals.size == 0:
        return 1.0
    data, d = log_transform(vals)
    data = data[~np.isnan(data)]
    data.sort()
    if data.size == 0:
        return _inverse_log(0.0, d)
    if not three_class:
        t = _otsu2(data)
    else:
        t1, t2 = _otsu3(data)
        t = t1 if middle_to_foreground else t2
    return _inverse_log(t, d)
