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

Sites are flagged (``qc_flag``, ``qc_reason``), never dropped.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd
from scipy import ndimage

from pairedscreen.paint.ingest import read_image

QC_COLUMNS = ["focus_plls", "saturation_pct", "p01", "p50", "p99", "qc_flag", "qc_reason"]


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


def image_metrics(image: np.ndarray) -> dict[str, float]:
    """focus_plls, saturation_pct, p01, p50, p99 of one image."""
    img = np.asarray(image)
    p01, p50, p99 = np.percentile(img, [1, 50, 99])
    return {
        "focus_plls": power_log_log_slope(img),
        "saturation_pct": percent_maximal(img),
        "p01": float(p01),
        "p50": float(p50),
        "p99": float(p99),
    }


def flag(metrics: Mapping[str, float], max_saturation_pct: float, min_focus_plls: float) -> tuple[bool, str]:
    """(qc_flag, qc_reason) for one image's metrics."""
    reasons = []
    if metrics["saturation_pct"] > max_saturation_pct:
        reasons.append(f"saturation {metrics['saturation_pct']:.2f}% > {max_saturation_pct}%")
    if metrics["focus_plls"] < min_focus_plls:
        reasons.append(f"blur: PowerLogLogSlope {metrics['focus_plls']:.2f} < {min_focus_plls}")
    if metrics["p99"] <= metrics["p01"]:
        reasons.append("empty: flat image (p99 == p01)")
    return bool(reasons), "; ".join(reasons)


def add_image_qc(
    index: pd.DataFrame, max_saturation_pct: float = 1.0, min_focus_plls: float = -3.0
) -> pd.DataFrame:
    """Return ``index`` (from :func:`~pairedscreen.paint.ingest.build_image_index`) plus the QC columns.

    Rows with ``status != "ok"`` get NaN metrics, ``qc_flag=True`` and ``qc_reason="quarantined"``.
    The site-level flag (any channel flagged) is left to the reader:
    ``index.groupby(["well", "site"]).qc_flag.any()``.
    """
    out = index.copy()
    records: list[dict[str, Any]] = []
    for _, row in out.iterrows():
        if row["status"] != "ok":
            records.append({"focus_plls": np.nan, "saturation_pct": np.nan, "p01": np.nan, "p50": np.nan,
                            "p99": np.nan, "qc_flag": True, "qc_reason": "quarantined"})
            continue
        m = image_metrics(read_image(row["path"]))
        is_flagged, reason = flag(m, max_saturation_pct, min_focus_plls)
        records.append({**m, "qc_flag": is_flagged, "qc_reason": reason})
    qc = pd.DataFrame(records, index=out.index, columns=QC_COLUMNS)
    for col in QC_COLUMNS:
        out[col] = qc[col]
    out["qc_flag"] = out["qc_flag"].astype(bool)
    out["qc_reason"] = out["qc_reason"].astype(str)
    return out
