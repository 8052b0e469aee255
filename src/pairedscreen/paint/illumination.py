"""Illumination correction functions, CellProfiler ``CorrectIlluminationCalculate`` style.

Per plate and channel, over all sites ("All" images), one of two robust estimators, then smoothed with a
Gaussian and rescaled to mean 1; applied by division (``CorrectIlluminationApply``, "Divide"):

- ``method="background"`` (default; CellProfiler's "Background" intensity choice): each image is cut into
  a grid of blocks (``block_size`` px, default image side / 10) and each block's ``background_percentile``
  (default 10th; CellProfiler uses the block minimum, a low percentile is as robust to cells and less to
  shot noise) is its background level; the block grids are averaged over sites and interpolated
  (bilinear between block centres) back to full size. Cells cannot bias it as long as they cover less than
  ~90% of a block, which makes it converge with few sites.
- ``method="mean"`` (CellProfiler "Regular"): the per-pixel mean over sites after clipping each image at
  its own ``clip_percentiles`` (default 1st/99th). Unbiased only when cells are spread uniformly over the
  field on average and needs many sites to average them out.

Both are streaming: memory is one image plus one accumulator (a float64 image or a small block grid),
whatever the number of sites (``benchmarks/illumination_memory.py``). Smoothing: Gaussian with
``sigma = smoothing_sigma`` px, or ``min(H, W) / 20`` when 0.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
from scipy import ndimage

from pairedscreen.io import atomic_output
from pairedscreen.paint.ingest import ImageIngestError, read_image, site_usable

ImageSource = str | os.PathLike | np.ndarray
Method = Literal["background", "mean"]


def auto_sigma(shape: tuple[int, ...]) -> float:
    """Automatic smoothing sigma: image side / 20."""
    return min(shape[-2:]) / 20.0


def _block_edges(n: int, block: int) -> np.ndarray:
    nb = max(1, int(round(n / block)))
    return np.linspace(0, n, nb + 1).round().astype(int)


class IlluminationAccumulator:
    """Streaming accumulator for one channel: ``add`` images one at a time, then ``result``."""

    def __init__(
        self,
        method: Method = "background",
        clip_percentiles: tuple[float, float] = (1.0, 99.0),
        block_size: int = 0,
        background_percentile: float = 10.0,
    ) -> None:
        if method not in ("background", "mean"):
            raise ValueError(f"illumination method must be 'background' or 'mean', got {method!r}")
        lo, hi = clip_percentiles
        if not 0.0 <= lo < hi <= 100.0:
            raise ValueError(f"clip_percentiles must satisfy 0 <= low < high <= 100, got {clip_percentiles}")
        if not 0.0 <= background_percentile <= 100.0:
            raise ValueError(f"background_percentile must be in [0, 100], got {background_percentile}")
        self.method = method
        self.clip_percentiles = (float(lo), float(hi))
        self.block_size = int(block_size)
        self.background_percentile = float(background_percentile)
        self.shape: tuple[int, int] | None = None
        self.total: np.ndarray | None = None
        self.edges: tuple[np.ndarray, np.ndarray] | None = None
        self.n = 0

    def add(self, image: np.ndarray) -> None:
        img = np.asarray(image)
        if img.ndim != 2:
            raise ValueError(f"illumination input must be a 2-D image, got shape {img.shape}")
        if self.shape is None:
            self.shape = (int(img.shape[0]), int(img.shape[1]))
            if self.method == "background":
                block = self.block_size if self.block_size > 0 else max(4, min(self.shape) // 10)
                self.edges = (_block_edges(self.shape[0], block), _block_edges(self.shape[1], block))
                self.total = np.zeros((len(self.edges[0]) - 1, len(self.edges[1]) - 1), np.float64)
            else:
                self.total = np.zeros(self.shape, np.float64)
        elif img.shape != self.shape:
            raise ValueError(f"image shape {img.shape} differs from earlier images {self.shape}")
        assert self.total is not None
        if self.method == "background":
            assert self.edges is not None
            ey, ex = self.edges
            for i in range(len(ey) - 1):
                for j in range(len(ex) - 1):
                    self.total[i, j] += np.percentile(img[ey[i]:ey[i + 1], ex[j]:ex[j + 1]],
                                                      self.background_percentile)
        else:
            lo, hi = np.percentile(img, self.clip_percentiles)
            self.total += np.clip(img.astype(np.float64, copy=False), lo, hi)
        self.n += 1

    def _full_size_mean(self) -> np.ndarray:
        assert self.total is not None and self.shape is not None
        mean = self.total / self.n
        if self.method == "mean":
            return mean
        assert self.edges is not None
        ey, ex = self.edges
        cy = (ey[:-1] + ey[1:] - 1) / 2.0
        cx = (ex[:-1] + ex[1:] - 1) / 2.0
        # fractional block coordinates of every pixel row/column (clamped: flat beyond the outer centres)
        fy = np.interp(np.arange(self.shape[0]), cy, np.arange(len(cy)))
        fx = np.interp(np.arange(self.shape[1]), cx, np.arange(len(cx)))
        yy, xx = np.meshgrid(fy, fx, indexing="ij")
        return ndimage.map_coordinates(mean, [yy, xx], order=1, mode="nearest")

    def result(self, smoothing_sigma: float) -> np.ndarray:
        if self.total is None or self.n == 0:
            raise ValueError("no images were given to the illumination function")
        full = self._full_size_mean()
        sigma = float(smoothing_sigma) if smoothing_sigma and smoothing_sigma > 0 else auto_sigma(full.shape)
        smooth = ndimage.gaussian_filter(full, sigma=sigma, mode="nearest")
        m = smooth.mean()
        if not np.isfinite(m) or m <= 0:
            raise ValueError("illumination function has a non-positive mean (all images empty?)")
        illum = smooth / m
        # guard the division in apply: never below a small fraction of the mean
        return np.maximum(illum, 1e-3).astype(np.float32)


def compute_illumination(
    images: Iterable[ImageSource],
    smoothing_sigma: float,
    method: Method = "background",
    clip_percentiles: tuple[float, float] = (1.0, 99.0),
    block_size: int = 0,
    background_percentile: float = 10.0,
) -> np.ndarray:
    """Illumination function (float32, mean 1) from an iterable of image paths or 2-D arrays.

    The iterable is consumed lazily: pass a generator of paths to keep memory at one image.
    """
    acc = IlluminationAccumulator(method, clip_percentiles, block_size, background_percentile)
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
    smoothing_sigma: float,
    channels: list[str] | None = None,
    method: Method = "background",
    **kwargs: float | int | tuple[float, float],
) -> dict[str, np.ndarray]:
    """One function per channel from the plate's usable sites (:func:`~pairedscreen.paint.ingest.site_usable`:
    not quarantined, not QC-flagged: a blank or black site would pull the function towards zero).

    A channel left without a usable image raises :class:`~pairedscreen.paint.ingest.ImageIngestError`
    naming the plate, the channel, why its sites are out and the fix."""
    usable = site_usable(index)
    keep = usable.reindex(pd.MultiIndex.from_arrays([index["well"], index["site"]])).to_numpy(dtype=bool)
    ok = index[keep]
    if channels is None:
        channels = list(dict.fromkeys(index.sort_values("channel_index")["channel"]))
    names = channels
    out: dict[str, np.ndarray] = {}
    for name in names:
        paths = ok.loc[ok["channel"] == name, "path"].tolist()
        if not paths:
            raise ImageIngestError(_no_usable_images(index, name))
        try:
            out[name] = compute_illumination(iter(paths), smoothing_sigma, method, **kwargs)  # type: ignore[arg-type]
        except ValueError as exc:  # e.g. every usable image black although image QC let it through
            plate = str(index["plate"].iloc[0]) if "plate" in index else "?"
            raise ImageIngestError(
                f"plate {plate}, channel {name}: {exc}, from {len(paths)} images. Fix: check the plate's "
                f"{name} images (all black? wrong channel map?); image QC (paint.qc) flags such sites when "
                "its thresholds are set") from exc
    return out


def _no_usable_images(index: pd.DataFrame, channel: str) -> str:
    plate = str(index["plate"].iloc[0]) if "plate" in index and len(index) else "?"
    rows = index[index["channel"] == channel]
    why: dict[str, int] = {}
    reasons, qcs = rows.get("reason", ""), rows.get("qc_reason", "")
    for status, reason, qc in zip(rows["status"], reasons, qcs, strict=False):
        text = str(reason) if status != "ok" else str(qc)
        for part in [p for p in text.split(";") if p.strip()] or ["flagged on another channel"]:
            key = "quarantined: " + part.strip() if status != "ok" else part.strip().split(":")[0]
            why[key] = why.get(key, 0) + 1
    summary = ", ".join(f"{k} x{n}" for k, n in sorted(why.items(), key=lambda kv: -kv[1]))
    n_sites = rows.groupby(["well", "site"]).ngroups
    return (f"plate {plate}: no usable image for channel {channel} to compute its illumination function: "
            f"all {n_sites} sites are quarantined or QC-flagged ({summary}). Fix: check the plate's "
            f"{channel} images (all black or empty? wrong image_dir, channel map or exposure?) and "
            "re-acquire or re-export them; if the flags are wrong for these images, adjust paint.qc; or "
            "remove the plate from config/plates.tsv")


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
