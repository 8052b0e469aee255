"""Per-image quality metrics (site x channel), following CellProfiler's MeasureImageQuality.

- ``focus_plls``: PowerLogLogSlope, the slope of the radial power spectrum in log-log space
  (CellProfiler ``ImageQuality_PowerLogLogSlope`` via centrosome's ``radial_power_spectrum.rps``):
  the image is divided by its mean absolute deviation from the mean (intensity invariant), the DC
  component is removed, the 2-D FFT power is summed over integer-radius rings r = 2 .. floor(min(H, W)/8) - 1
  (low frequencies only, "truncate early to avoid edge effects") and log(power sum) is regressed on
  log(r) by least squares. Blur removes high frequencies, so the slope gets more negative.
- ``saturation_pct``: CellProfiler ``PercentMaximal``: percent of pixels equal to the image's maximum.
  A clipped (saturated) image has many pixels at its maximum, which is then usually the top of the
  dtype range; an unclipped image has a handful (~0%). Flat images give 100%.
- ``p01``, ``p50``, ``p99``: intensity percentiles (raw units).
- ``noise_sd``: the pixel noise, robustly from neighbouring-pixel differences (1.4826 x MAD of the
  horizontal and vertical differences / sqrt 2): microscope images are smooth at the pixel scale, so the
  differences hold the noise and hardly any of the structure.
- ``signal_to_noise``: (p99 - p50) / noise_sd, the foreground (99th percentile) above the background
  (median) in units of pixel noise. A site without cells (blank well, no stain, shutter closed) or pure
  noise has ~2-4 whatever its brightness or vignetting; stained cells give tens to hundreds.

Flags (``qc_flag``, ``qc_reason``; thresholds in the config schema, ``paint.qc``): ``saturation``;
``defocused (blur)``: PowerLogLogSlope below ``min_focus_plls`` (blur removes high frequencies);
``noise-only``: PowerLogLogSlope above ``max_focus_plls`` (white noise has a flat power spectrum, slope ~ +1;
real sites are below ~ -0.4); ``blank``: signal_to_noise below ``min_signal_to_noise``, or a flat image.
Images are flagged, never dropped: a site with any flagged channel is recorded in the image index and kept
out of the plate's illumination function and of segmentation (:func:`pairedscreen.paint.ingest.usable_sites`),
hence of every cell, well and control statistic.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
from scipy import ndimage

from pairedscreen.paint.ingest import read_image
from pairedscreen.robust import median_mad

QC_COLUMNS = ["focus_plls", "saturation_pct", "p01", "p50", "p99", "noise_sd", "signal_to_noise", "qc_flag",
              "qc_reason"]


def radial_power_spectrum(image: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Radii, ring-summed FFT magnitude and ring-summed power (CellProfiler/centrosome ``rps``)."""
    img = np.asarray(image, dtype=np.float64)
    if img.ndim != 2:
        raise ValueError(f"expected a 2-D image, got shape {img.shape}")
    h, w = img.shape
    # squared distance to the nearest corner = frequency radius of the unshifted FFT
    r2 = (np.arange(h)[:, None] ** 2) + (np.arange(w)[None, :] ** 2)
    r2 = np.minimum(r2, np.flipud(r2))
    r2 = np.minimum(r2, np.fliplr(r2))
    maxwidth = min(h, w) / 8.0
    if np.ptp(img) > 0:
        mad = np.median(np.abs(img - img.mean()))
        if mad > 0:
            img = img / mad
    mag = np.abs(np.fft.fft2(img - img.mean()))
    power = mag**2
    radii = np.floor(np.sqrt(r2)).astype(np.int64) + 1
    labels = np.arange(2, int(np.floor(maxwidth)), dtype=np.int64)
    if labels.size == 0:
        return np.array([2]), np.array([0.0]), np.array([0.0])
    magsum = ndimage.sum_labels(mag, radii, labels)
    powersum = ndimage.sum_labels(power, radii, labels)
    return labels, np.asarray(magsum), np.asarray(powersum)


def power_log_log_slope(image: np.ndarray) -> float:
    """CellProfiler's PowerLogLogSlope (0.0 for constant or too-small images, as CellProfiler)."""
    img = np.asarray(image)
    radii, magnitude, power = radial_power_spectrum(img)
    if not (magnitude.sum() > 0 and np.unique(img).size > 1):
        return 0.0
    valid = magnitude > 0
    radii, power = radii[valid].astype(np.float64), power[valid]
    if radii.size < 2:
        return 0.0
    logp = np.log(power)
    ok = np.isfinite(logp)
    a = np.column_stack([np.log(radii)[ok], np.ones(int(ok.sum()))])
    slope = np.linalg.lstsq(a, logp[ok], rcond=None)[0][0]
    return float(slope)


def percent_maximal(image: np.ndarray) -> float:
    """Percent of pixels at the image maximum (CellProfiler PercentMaximal)."""
    img = np.asarray(image)
    if img.size == 0:
        return 0.0
    return float(100.0 * np.count_nonzero(img == img.max()) / img.size)


def percent_minimal(image: np.ndarray) -> float:
    """Percent of pixels at the image minimum (CellProfiler PercentMinimal)."""
    img = np.asarray(image)
    if img.size == 0:
        return 0.0
    return float(100.0 * np.count_nonzero(img == img.min()) / img.size)


def focus_score(image: np.ndarray) -> float:
    """CellProfiler's FocusScore, the normalised variance: sum((v - mean)^2) / (n * mean); 0 for
    an empty image or a mean <= 0."""
    v = np.asarray(image, dtype=np.float64).ravel()
    if v.size == 0:
        return 0.0
    mean = float(np.mean(v))
    if not mean > 0:
        return 0.0
    return float(np.sum((v - mean) ** 2) / (v.size * mean))


def local_focus_score(image: np.ndarray, scale: int) -> float:
    """CellProfiler's LocalFocusScore at ``scale``: the image is cut into ``ceil(H / scale) x
    ceil(W / scale)`` tiles (pixel row i in tile ``int(i * m / H)``), each tile's normalised variance
    ``sum((v - tile mean)^2) / (n * tile mean)`` over tiles of non-zero mean; the score is the
    variance of those values over their median (0 when the median is not a positive number)."""
    img = np.asarray(image, dtype=np.float64)
    h, w = img.shape
    m, n = (h + scale - 1) // scale, (w + scale - 1) // scale
    ti = (np.arange(h, dtype=float) * float(m) / float(h)).astype(int)
    tj = (np.arange(w, dtype=float) * float(n) / float(w)).astype(int)
    grid = (ti[:, None] * n + tj[None, :]).ravel()
    v = img.ravel()
    counts = np.bincount(grid, minlength=m * n).astype(float)
    with np.errstate(invalid="ignore", divide="ignore"):
        means = np.bincount(grid, weights=v, minlength=m * n) / counts
    sq = (v - means[grid]) ** 2
    keep = (means != 0) & ~np.isnan(means)
    if not keep.any():
        return 0.0
    sums = np.bincount(grid, weights=sq, minlength=m * n)[keep]
    norm_var = sums / (counts[keep] * means[keep])
    med = float(np.median(norm_var))
    if np.isfinite(med) and med > 0:
        return float(np.var(norm_var) / med)
    return 0.0


def haralick_correlation(image: np.ndarray, scales: Sequence[int], levels: int = 8) -> list[float]:
    """MeasureImageQuality's ``Correlation`` at each of ``scales``: centrosome's Haralick H3 of the whole
    image -- min-max stretched to [0, 1], quantised to ``floor(v / (1 / levels))`` clipped to
    ``levels - 1`` (once, for all scales), the (non-symmetric) co-occurrence of each pixel with the one
    ``scale`` columns to its right, sized ``max level + 1``;
    ``(sum (i+1)(j+1) P - mu_x mu_y) / (sigma_x sigma_y)``, 0 when not finite. ``levels`` is
    centrosome's fixed 8, not a setting."""
    img = np.asarray(image, dtype=np.float64)
    lo, hi = float(img.min()), float(img.max())
    norm = (img - lo) / (hi - lo if hi > lo else 1.0)
    q = np.clip(np.floor_divide(norm, 1.0 / levels).astype(np.int8), 0, levels - 1).astype(np.intp)
    nl = int(q.max()) + 1
    qa = q * nl
    k = np.arange(1, nl + 1, dtype=float)
    out = []
    for scale in scales:
        if q.shape[1] <= scale:
            out.append(0.0)
            continue
        codes = qa[:, :-scale] + q[:, scale:]
        npairs = codes.size
        p = np.bincount(codes.ravel(), minlength=nl * nl).reshape(nl, nl) / float(npairs)
        px = p.sum(1)
        py = p.sum(0)
        px = px / px.sum()
        py = py / py.sum()
        mux = float((k * px).sum())
        muy = float((k * py).sum())
        sx = np.sqrt(((k - mux) ** 2 * px).sum())
        sy = np.sqrt(((k - muy) ** 2 * py).sum())
        with np.errstate(invalid="ignore", divide="ignore"):
            h3 = (float((np.outer(k, k) * p).sum()) - mux * muy) / (sx * sy)
        out.append(float(h3) if np.isfinite(h3) else 0.0)
    return out


def noise_sd(image: np.ndarray) -> float:
    """Robust pixel-noise standard deviation from neighbouring-pixel differences (0 for flat images)."""
    img = np.asarray(image, dtype=np.float64)
    if img.ndim != 2 or min(img.shape) < 2:
        return 0.0
    d = np.concatenate([np.diff(img, axis=0).ravel(), np.diff(img, axis=1).ravel()])
    return float(median_mad(d)[1] / np.sqrt(2.0))


def image_metrics(image: np.ndarray) -> dict[str, float]:
    """focus_plls, saturation_pct, p01, p50, p99, noise_sd, signal_to_noise of one image."""
    img = np.asarray(image)
    p01, p50, p99 = np.percentile(img, [1, 50, 99])
    noise = noise_sd(img)
    # integer images cannot resolve noise below their quantisation step
    floor = 0.5 if img.dtype.kind in "ui" else 1e-12
    return {
        "focus_plls": power_log_log_slope(img),
        "saturation_pct": percent_maximal(img),
        "p01": float(p01),
        "p50": float(p50),
        "p99": float(p99),
        "noise_sd": noise,
        "signal_to_noise": float((p99 - p50) / max(noise, floor)),
    }


def flag(metrics: Mapping[str, float], max_saturation_pct: float, min_focus_plls: float,
         max_focus_plls: float | None = None, min_signal_to_noise: float | None = None) -> tuple[bool, str]:
    """(qc_flag, qc_reason) for one image's metrics; a threshold of None is not checked."""
    reasons = []
    plls, snr = metrics["focus_plls"], metrics.get("signal_to_noise", np.nan)
    if metrics["p99"] <= metrics["p01"]:  # one value nearly everywhere (all black, or clipped white)
        reasons.append(f"blank: flat image (p99 == p01 == {metrics['p50']:g})")
    else:
        if metrics["saturation_pct"] > max_saturation_pct:
            reasons.append(f"saturation {metrics['saturation_pct']:.2f}% > {max_saturation_pct}%")
        if plls < min_focus_plls:
            reasons.append(f"defocused (blur): PowerLogLogSlope {plls:.2f} < {min_focus_plls}")
        if max_focus_plls is not None and plls > max_focus_plls:
            reasons.append(f"noise-only: PowerLogLogSlope {plls:.2f} > {max_focus_plls} (no structure)")
        if min_signal_to_noise is not None and snr < min_signal_to_noise:
            reasons.append(f"blank: signal-to-noise {snr:.1f} < {min_signal_to_noise} (no stained objects)")
    return bool(reasons), "; ".join(reasons)


def add_image_qc(
    index: pd.DataFrame, *, max_saturation_pct: float, min_focus_plls: float,
    max_focus_plls: float | None, min_signal_to_noise: float | None,
) -> pd.DataFrame:
    """Return ``index`` (from :func:`~pairedscreen.paint.ingest.build_image_index`) plus the QC columns.

    Rows with ``status != "ok"`` get NaN metrics, ``qc_flag=True`` and ``qc_reason="quarantined"``.
    The site-level flag (any channel flagged) is left to the reader:
    ``index.groupby(["well", "site"]).qc_flag.any()``; :func:`~pairedscreen.paint.ingest.usable_sites` keeps
    the sites that are neither quarantined nor flagged. ``max_focus_plls`` / ``min_signal_to_noise`` None:
    that check is off (defaults: the config schema's).
    """
    out = index.copy()
    records: list[dict[str, Any]] = []
    for _, row in out.iterrows():
        if row["status"] != "ok":
            nan = {c: np.nan for c in QC_COLUMNS[:-2]}
            records.append({**nan, "qc_flag": True, "qc_reason": "quarantined"})
            continue
        m = image_metrics(read_image(row["path"]))
        is_flagged, reason = flag(m, max_saturation_pct, min_focus_plls, max_focus_plls, min_signal_to_noise)
        records.append({**m, "qc_flag": is_flagged, "qc_reason": reason})
    qc = pd.DataFrame(records, index=out.index, columns=QC_COLUMNS)
    for col in QC_COLUMNS:
        out[col] = qc[col]
    out["qc_flag"] = out["qc_flag"].astype(bool)
    out["qc_reason"] = out["qc_reason"].astype(str)
    return out
