"""Illumination correction functions, CellProfiler ``CorrectIlluminationCalculate`` style.

Per plate and channel: the robust per-pixel mean over all sites ("Regular" intensity, "All" images),
smoothed with a Gaussian and rescaled to mean 1, then applied by division
(``CorrectIlluminationApply``, "Divide").

Robust mean: each image is first clipped at its own ``clip_percentiles`` (default 1st/99th), so a few
very bright cells or hot pixels cannot imprint on the function. The pass is streaming: memory is one
image plus one float64 accumulator, whatever the number of sites (``benchmarks/illumination_memory.py``).
Smoothing: Gaussian with ``sigma = smoothing_sigma`` pixels, or ``min(H, W) / 20`` when 0 (CellProfiler's
automatic filter size is of this order: a tenth of the image side as the filter width).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import ndimage

from pairedscreen.io import atomic_output
from pairedscreen.paint.ingest import read_image

ImageSource = str | os.PathLike | np.ndarray


def auto_sigma(shape: tuple[int, ...]) -> float:
    """Automatic smoothing sigma: image side / 20."""
    return min(shape[-2:]) / 20.0


class IlluminationAccumulator:
    """Streaming robust-mean accumulator for one channel (add images one at a time)."""

    def __init__(self, clip_percentiles: tuple[float, float] = (1.0, 99.0)) -> None:
        lo, hi = clip_percentiles
        if not 0.0 <= lo < hi <= 100.0:
            raise ValueError(f"clip_percentiles must satisfy 0 <= low < high <= 100, got {clip_percentiles}")
        self.clip_percentiles = (float(lo), float(hi))
        self.total: np.ndarray | None = None
        self.n = 0

    def add(self, image: np.ndarray) -> None:
        img = np.asarray(image)
        if img.ndim != 2:
            raise ValueError(f"illumination input must be a 2-D image, got shape {img.shape}")
        lo, hi = np.percentile(img, self.clip_percentiles)
        clipped = np.clip(img.astype(np.float64, copy=False), lo, hi)
        if self.total is None:
            self.total = np.zeros(img.shape, np.float64)
        elif self.total.shape != img.shape:
            raise ValueError(f"image shape {img.shape} differs from earlier images {self.total.shape}")
        self.total += clipped
        self.n += 1

    def result(self, smoothing_sigma: float = 0.0) -> np.ndarray:
        if self.total is None or self.n == 0:
            raise ValueError("no images were given to the illumination function")
        mean = self.total / self.n
        sigma = float(smoothing_sigma) if smoothing_sigma and smoothing_sigma > 0 else auto_sigma(mean.shape)
        smooth = ndimage.gaussian_filter(mean, sigma=sigma, mode="nearest")
        m = smooth.mean()
        if not np.isfinite(m) or m <= 0:
            raise ValueError("illumination function has a non-positive mean (all images empty?)")
        illum = smooth / m
        # guard the division in apply: never below a small fraction of the mean
        return np.maximum(illum, 1e-3).astype(np.float32)


def compute_illumination(
    images: Iterable[ImageSource],
    smoothing_sigma: float = 0.0,
    clip_percentiles: tuple[float, float] = (1.0, 99.0),
) -> np.ndarray:
    """Illumination function (float32, mean 1) from an iterable of image paths or 2-D arrays.

    The iterable is consumed lazily: pass a generator of paths to keep memory at one image.
    """
    acc = IlluminationAccumulator(clip_percentiles)
    for src in images:
        acc.add(src if isinstance(src, np.ndarray) else read_image(src))
    return acc.result(smoothing_sigma)


def apply_illumination(image: np.ndarray, illum: np.ndarray) -> np.ndarray:
    """Divide an image (2-D) or a stack ``[C, H, W]`` (with ``illum`` ``[C, H, W]``) by the function."""
    img = np.asarray(image, dtype=np.float32)
    ill = np.asarray(illum, dtype=np.float32)
    if img.shape != ill.shape:
        raise ValueError(f"image shape {img.shape} and illumination function shape {ill.shape} differ")
    return img / ill


def compute_plate_illumination(
    index: pd.DataFrame,
    smoothing_sigma: float = 0.0,
    channels: list[str] | None = None,
    clip_percentiles: tuple[float, float] = (1.0, 99.0),
) -> dict[str, np.ndarray]:
    """One function per channel from an image index's ``status == "ok"`` rows (all sites of the plate)."""
    ok = index[index["status"] == "ok"]
    names = channels if channels is not None else list(dict.fromkeys(index.sort_values("channel_index")["channel"]))
    out: dict[str, np.ndarray] = {}
    for name in names:
        paths = ok.loc[ok["channel"] == name, "path"].tolist()
        if not paths:
            raise ValueError(f"no usable images for channel {name}: cannot compute its illumination function")
        out[name] = compute_illumination(iter(paths), smoothing_sigma, clip_percentiles)
    return out


def save_illumination(
    functions: Mapping[str, np.ndarray], out_dir: str | os.PathLike, png: str | os.PathLike | None = None
) -> list[Path]:
    """Write ``{out_dir}/{channel}.npy`` (float32) and, when ``png`` is given, a montage PNG."""
    out_dir = Path(out_dir)
    written = []
    for name, arr in functions.items():
        path = out_dir / f"{name}.npy"
        with atomic_output(path) as tmp:
            with open(tmp, "wb") as fh:
                np.save(fh, np.asarray(arr, np.float32))
        written.append(path)
    if png is not None:
        write_montage(functions, png)
        written.append(Path(png))
    return written


def load_illumination(in_dir: str | os.PathLike, channels: list[str]) -> np.ndarray:
    """Stack ``{in_dir}/{channel}.npy`` as ``[C, H, W]`` float32."""
    return np.stack([np.load(Path(in_dir) / f"{c}.npy").astype(np.float32) for c in channels])


def write_montage(functions: Mapping[str, np.ndarray], png: str | os.PathLike) -> None:
    """One panel per channel with its own colour bar."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(functions)
    fig, axes = plt.subplots(1, n, figsize=(3.2 * n, 3.0), squeeze=False)
    for ax, (name, arr) in zip(axes[0], functions.items(), strict=True):
        im = ax.imshow(arr, cmap="viridis")
        ax.set_title(f"{name} [{float(arr.min()):.2f}, {float(arr.max()):.2f}]", fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
        fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    fig.tight_layout()
    with atomic_output(png) as tmp:
        fig.savefig(tmp, dpi=80, format="png")
    plt.close(fig)
