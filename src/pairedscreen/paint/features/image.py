"""The per-site ``Image_*`` table of JUMP cpg0016: CellProfiler's image measurements, names and meaning.

The JUMP pipeline (JUMP_analysis_v3.cppipe) records 1,089 per-site columns; this module makes each
of them from one site's images and its cell masks (:func:`measure_image`), in the order of the
recipe's list (:func:`image_columns`, ``resources/jump/cpg0016_mandatory_feature_columns.txt``):

- ``Image_ImageQuality_*_Orig{ch}``: MeasureImageQuality on the *uncorrected* images (raw / dtype
  maximum): ``Scaling`` (that maximum), ``FocusScore``, ``LocalFocusScore_{5,10,20,50}``,
  ``Correlation_{5,10,20,50}`` (centrosome Haralick H3, 8 levels), ``PowerLogLogSlope``,
  ``PercentMaximal``/``PercentMinimal``, the intensity statistics (``TotalArea``,
  ``TotalIntensity``, Mean, Median, Std, MAD, Min, Max), and ``ThresholdOtsu_OrigDNA_2W`` (two-class
  Otsu) / ``ThresholdOtsu_OrigRNA_3FW`` (three-class, middle class foreground) -- centrosome's Otsu
  on the log-transformed image (:func:`~pairedscreen.paint.features.threshold.otsu_quality_threshold`).
- ``Image_Intensity_*_{ch}``: MeasureImageIntensity of the illumination-corrected image, and
  ``Image_Intensity_*_{ch}_BackgroundOnly`` (``{ch}__BackgroundOnly`` for AGP and ER, JUMP's names):
  of the pixels outside every cell of the site (MaskImage, inverted ``CellsIncludingEdges``; our
  cell masks keep the cells touching the border, which is what CellsIncludingEdges is).
- ``Image_Texture_*``: MeasureTexture's whole-image Haralick features of the corrected image
  (:func:`~pairedscreen.paint.features.texture.measure_image_texture`).
- ``Image_Granularity_{1..16}_{ch}``: MeasureGranularity's image spectrum
  (:func:`~pairedscreen.paint.features.granularity.image_granularity`).
- ``Image_Threshold_{FinalThreshold,OrigThreshold,SumOfEntropies,WeightedVariance}_{objects}``: our
  segmentation is Cellpose, not CellProfiler's thresholding, so these are what CellProfiler's
  threshold step, with the JUMP pipeline's settings (:data:`JUMP_THRESHOLDS`), gives on the site's
  image: ``NucleiIncludingEdges`` on ``CorrBlue`` (the corrected DNA image minus its background:
  CorrectIlluminationCalculate "Background", block 30, Gaussian filter of size 50, applied by
  subtraction and clipped to [0, 1]), ``CellsIncludingEdges`` on the corrected RNA image,
  ``mito_bw`` on the ``mito_tubeness`` image (:func:`~pairedscreen.paint.features.tubeness.tubeness`).

The settings below are the JUMP pipeline's (module settings, not options of ours): the columns carry
its names, so they carry its definitions.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from functools import lru_cache
from typing import Any

import numpy as np
from scipy import ndimage

from pairedscreen.paint.image_qc import (
    focus_score,
    haralick_correlation,
    local_focus_score,
    percent_maximal,
    percent_minimal,
    power_log_log_slope,
)

from .granularity import image_granularity
from .skeleton import mito_threshold_settings
from .texture import measure_image_texture
from .threshold import ThresholdSettings, otsu_quality_threshold, threshold_measurements

log = logging.getLogger(__name__)

__all__ = ["BLUR_SCALES", "JUMP_THRESHOLDS", "LIST_FILE", "background_name", "corr_blue", "image_columns",
           "intensity_statistics", "made_columns", "measure_image"]

LIST_FILE = "cpg0016_mandatory_feature_columns.txt"
# MeasureImageQuality "Spatial scale for blur measurements" (JUMP_analysis_v3 module 3)
BLUR_SCALES = (5, 10, 20, 50)
# MeasureImageQuality module 4: (image channel, column suffix, three classes, middle to foreground)
QUALITY_THRESHOLDS = (("DNA", "2W", False, False), ("RNA", "3FW", True, True))
# CorrectIlluminationCalculate (module 6) for CorrBlue: "Background", block size 30, Gaussian filter 50
BACKGROUND_BLOCK = 30
BACKGROUND_FILTER_SIZE = 50.0
# the threshold steps of IdentifyPrimaryObjects (8) and IdentifySecondaryObjects (9); the Threshold module
# (22) that makes mito_bw is the skeleton family's (skeleton.mito_threshold_settings), read from the config
JUMP_THRESHOLDS: dict[str, ThresholdSettings] = {
    "NucleiIncludingEdges": ThresholdSettings("minimum_cross_entropy", smoothing_scale=1.0,
                                              correction_factor=1.0, lower=0.005, upper=1.0, three_class=True,
                                              middle_to_foreground=False, log_transform=False),
    "CellsIncludingEdges": ThresholdSettings("otsu", smoothing_scale=0.0, correction_factor=0.7, lower=0.005,
                                             upper=0.06, three_class=True, middle_to_foreground=True,
                                             log_transform=True),
}
_THRESHOLD_IMAGE = {"NucleiIncludingEdges": "DNA", "CellsIncludingEdges": "RNA", "mito_bw": "Mito"}
_INTENSITY = ("TotalIntensity", "MeanIntensity", "MedianIntensity", "StdIntensity", "MADIntensity",
              "MaxIntensity", "MinIntensity", "TotalArea", "PercentMaximal", "LowerQuartileIntensity",
              "UpperQuartileIntensity")
_QUALITY_INTENSITY = ("TotalArea", "TotalIntensity", "MeanIntensity", "MedianIntensity", "StdIntensity",
                      "MADIntensity", "MaxIntensity", "MinIntensity")


@lru_cache(maxsize=1)
def image_columns() -> tuple[str, ...]:
    """The 1,089 ``Image_*`` column names of JUMP cpg0016, in the recipe's order."""
    from pairedscreen.io import repo_root

    path = repo_root() / "resources" / "jump" / LIST_FILE
    names = (line.strip() for line in path.read_text().splitlines())
    return tuple(n for n in names if n.startswith("Image_"))


def background_name(channel: str) -> str:
    """JUMP's name of a channel's background-only image (``AGP__BackgroundOnly``, ``DNA_BackgroundOnly``)."""
    return f"{channel}__BackgroundOnly" if channel in ("AGP", "ER") else f"{channel}_BackgroundOnly"


def intensity_statistics(pixels: np.ndarray) -> dict[str, float]:
    """MeasureImageIntensity of a pixel set (non-finite values left out; all 0 when empty): total,
    mean, median, population std, MAD (median absolute deviation from the median, unscaled), max,
    min, pixel count, percent at the max, and the 25th/75th percentiles (linear interpolation).
    MeasureImageQuality's intensity metrics are the first eight of these."""
    v = np.asarray(pixels, dtype=np.float64).ravel()
    v = v[np.isfinite(v)]
    if v.size == 0:
        return dict.fromkeys(_INTENSITY, 0.0)
    total = float(np.sum(v))
    n = v.size
    # one selection for the median and the quartiles (numpy's "linear" percentile: index q (n - 1))
    pos = {q: q * (n - 1) for q in (0.25, 0.5, 0.75)}
    kth = sorted({k for x in pos.values() for k in (int(np.floor(x)), min(int(np.floor(x)) + 1, n - 1))})
    part = np.partition(v, kth)
    lq, median, uq = (_lerp(part, x, n) for x in (pos[0.25], pos[0.5], pos[0.75]))
    vmax = float(np.max(v))
    dev = np.abs(v - median)
    mad = _lerp(np.partition(dev, sorted({(n - 1) // 2, n // 2})), 0.5 * (n - 1), n)
    return {
        "TotalIntensity": total,
        "MeanIntensity": total / float(v.size),
        "MedianIntensity": median,
        "StdIntensity": float(np.std(v)),
        "MADIntensity": mad,
        "MaxIntensity": vmax,
        "MinIntensity": float(np.min(v)),
        "TotalArea": float(v.size),
        "PercentMaximal": percent_maximal(v),
        "LowerQuartileIntensity": float(lq),
        "UpperQuartileIntensity": float(uq),
    }


def _lerp(part: np.ndarray, x: float, n: int) -> float:
    """The value at fractional sorted position ``x`` of a partitioned array (linear interpolation,
    numpy's form: ``a + (b - a) t`` below t = 0.5, ``b - (b - a)(1 - t)`` from it)."""
    lo = int(np.floor(x))
    t = x - lo
    a = float(part[lo])
    if t == 0:
        return a
    b = float(part[min(lo + 1, n - 1)])
    return b - (b - a) * (1 - t) if t >= 0.5 else a + (b - a) * t


def corr_blue(dna: np.ndarray) -> np.ndarray:
    """JUMP's ``CorrBlue``: the corrected DNA image minus its background (CorrectIlluminationCalculate
    "Background" per image: the minimum of each block of ``BACKGROUND_BLOCK`` px -- ``int(H / 30)``
    blocks a side, pixel row i in block ``int(i * blocks / H)`` -- smoothed by a zero-padded,
    mask-renormalised Gaussian of sigma ``50 / 2.35``), clipped to [0, 1] (CorrectIlluminationApply
    "Subtract")."""
    img = np.asarray(dna, dtype=np.float64)
    h, w = img.shape
    by, bx = max(int(h / BACKGROUND_BLOCK), 1), max(int(w / BACKGROUND_BLOCK), 1)
    ri = (np.arange(h) * (by / h)).astype(int)
    rj = (np.arange(w) * (bx / w)).astype(int)
    labels = ri[:, None] * bx + rj[None, :]
    minima = np.asarray(ndimage.minimum(img, labels, np.arange(by * bx))).reshape(by, bx)
    # The blockwise-constant image is minima[ri, rj] = Ry @ minima @ Rx.T (Ry, Rx: block indicators), and
    # the separable zero-padded Gaussian is Gy @ . @ Gx.T: the smoothed image is (Gy Ry) minima (Gx Rx).T,
    # two thin matrix products instead of two 171-tap passes over the image (same sums, other order).
    sigma = BACKGROUND_FILTER_SIZE / 2.35
    wy = ndimage.gaussian_filter1d((ri[:, None] == np.arange(by)[None, :]).astype(float), sigma, axis=0,
                                   mode="constant", cval=0)
    wx = ndimage.gaussian_filter1d((rj[:, None] == np.arange(bx)[None, :]).astype(float), sigma, axis=0,
                                   mode="constant", cval=0)
    smooth = wy @ minima @ wx.T
    bleed = np.outer(ndimage.gaussian_filter1d(np.ones(h), sigma, mode="constant", cval=0),
                     ndimage.gaussian_filter1d(np.ones(w), sigma, mode="constant", cval=0))
    background = smooth / (bleed + np.finfo(float).eps)
    return np.clip(img - background, 0.0, 1.0)


def _quality(orig: np.ndarray, channel: str, scale: float, plls: float | None) -> dict[str, float]:
    name = f"Orig{channel}"
    out = {f"ImageQuality_Scaling_{name}": float(scale), f"ImageQuality_FocusScore_{name}": focus_score(orig)}
    for s in BLUR_SCALES:
        out[f"ImageQuality_LocalFocusScore_{name}_{s}"] = local_focus_score(orig, s)
    for s, h3 in zip(BLUR_SCALES, haralick_correlation(orig, BLUR_SCALES), strict=True):
        out[f"ImageQuality_Correlation_{name}_{s}"] = h3
    out[f"ImageQuality_PowerLogLogSlope_{name}"] = power_log_log_slope(orig) if plls is None else float(plls)
    out[f"ImageQuality_PercentMaximal_{name}"] = percent_maximal(orig)
    out[f"ImageQuality_PercentMinimal_{name}"] = percent_minimal(orig)
    stats = intensity_statistics(orig)
    for k in _QUALITY_INTENSITY:
        out[f"ImageQuality_{k}_{name}"] = stats[k]
    for ch, suffix, three, middle_fg in QUALITY_THRESHOLDS:
        if ch == channel:
            t = otsu_quality_threshold(orig, three, middle_fg)
            out[f"ImageQuality_ThresholdOtsu_{name}_{suffix}"] = t
    return out


def measure_image(
    orig: np.ndarray,
    corrected: np.ndarray,
    channel_names: Sequence[str],
    cells: np.ndarray,
    scale: float,
    params: Mapping[str, Any],
    plls: Mapping[str, float] | None = None,
) -> dict[str, float]:
    """The ``Image_*`` values of one site: all 1,089 with the JUMP preset's settings (keys in
    :func:`image_columns` order; :func:`made_columns` for other texture/granularity settings).

    ``orig``: (C, H, W) uncorrected images as floats in [0, 1] (raw / ``scale``); ``corrected``:
    the same site illumination-corrected (what the per-object features measure), clipped to [0, 1] here
    as the JUMP pipeline's CorrectIlluminationApply does; ``channel_names``:
    JUMP's DNA, RNA, ER, AGP, Mito (any order); ``cells``: the site's cell label image, cells
    touching the border included; ``scale``: the raw images' dtype maximum (65535 for uint16);
    ``params``: the resolved ``paint.features`` section (texture scales/levels, granularity and
    tubeness settings); ``plls``: PowerLogLogSlope per channel when already known (the image index's
    ``focus_plls``, computed by the same function on the raw image: the slope does not depend on the
    intensity scale), else computed here.
    """
    channels = [str(c) for c in channel_names]
    need = {"DNA", "RNA", "ER", "AGP", "Mito"}
    if not need <= set(channels):
        raise ValueError(f"the JUMP image table needs channels {sorted(need)}, got {channels}")
    orig = np.asarray(orig, dtype=np.float64)
    # CorrectIlluminationApply's "Set output image values less than 0 / greater than 1 equal to 0 / 1":
    # the JUMP pipeline measures the clipped image (a no-op, and the same granularity cache entries as the
    # per-object pass, where nothing lies outside [0, 1])
    corrected = np.clip(np.asarray(corrected, dtype=np.float64), 0.0, 1.0)
    if orig.shape != corrected.shape or orig.shape[0] != len(channels) or cells.shape != orig.shape[1:]:
        raise ValueError(f"orig {orig.shape}, corrected {corrected.shape}, cells {cells.shape} and "
                         f"{len(channels)} channels do not match")
    values: dict[str, float] = {}
    background = np.asarray(cells) == 0
    for c, ch in enumerate(channels):
        if ch not in need:
            continue
        values.update(_quality(orig[c], ch, scale, None if plls is None else plls[ch]))
        img = corrected[c]
        for k, v in intensity_statistics(img).items():
            values[f"Intensity_{k}_{ch}"] = v
        for k, v in intensity_statistics(img[background]).items():
            values[f"Intensity_{k}_{background_name(ch)}"] = v
        values.update(measure_image_texture(img, ch, params["texture_scales"], int(params["texture_levels"])))
        values.update(image_granularity(img, ch, int(params["granularity_spectrum_length"]),
                                        float(params["granularity_subsample_size"]),
                                        float(params["granularity_background_subsample_size"]),
                                        int(params["granularity_element_size"])))
    from .tubeness import tubeness

    sources = {
        "NucleiIncludingEdges": corr_blue(corrected[channels.index("DNA")]),
        "CellsIncludingEdges": corrected[channels.index("RNA")],
        "mito_bw": tubeness(corrected[channels.index(params["tubeness_channel"])],
                            smoothing=float(params["tubeness_smoothing"]),
                            rescale=bool(params["tubeness_rescale"])),
    }
    thresholds = {**JUMP_THRESHOLDS,
                  "mito_bw": mito_threshold_settings(float(params["skeleton_threshold_smoothing"]))}
    for objects, settings in thresholds.items():
        final, orig_t, soe, wv = threshold_measurements(sources[objects], settings)
        values[f"Threshold_FinalThreshold_{objects}"] = final
        values[f"Threshold_OrigThreshold_{objects}"] = orig_t
        values[f"Threshold_SumOfEntropies_{objects}"] = soe
        values[f"Threshold_WeightedVariance_{objects}"] = wv
    cols = made_columns(params)
    missing = [c for c in cols if c[len("Image_"):] not in values]
    if missing:  # a made column without a value is a bug here, never a setting
        raise RuntimeError(f"{len(missing)} JUMP image columns were not computed, e.g. {missing[:3]}")
    return {c: values[c[len("Image_"):]] for c in cols}


def made_columns(params: Mapping[str, Any]) -> list[str]:
    """The ``Image_*`` columns of the JUMP list that ``params`` make, in the list's order: all 1,089 with
    the preset's settings; a config that sets other texture scales/levels or a shorter granularity
    spectrum makes the matching subset (the others are logged once, like the per-object columns)."""
    scales = {int(s) for s in params["texture_scales"]}
    levels = int(params["texture_levels"])
    length = int(params["granularity_spectrum_length"])
    out, dropped = [], []
    for c in image_columns():
        parts = c.split("_")
        if parts[1] == "Texture":
            keep = int(parts[-3]) in scales and int(parts[-1]) == levels
        elif parts[1] == "Granularity":
            keep = int(parts[2]) <= length
        else:
            keep = True
        (out if keep else dropped).append(c)
    if dropped:
        _warn_dropped(len(dropped), dropped[0])
    return out


@lru_cache(maxsize=8)
def _warn_dropped(n: int, example: str) -> None:
    log.warning("paint.features.preset jump: %d Image_* columns not made with the configured texture/"
                "granularity settings (e.g. %s); remove those keys from paint.features to make all 1,089", n,
                example)
