"""pairedscreen: paired Perturb-seq + Cell Painting screens to matched, quality-controlled AnnData/MuData."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("pairedscreen")
except PackageNotFoundError:  # pragma: no cover - running from a source tree without install
    __version__ = "0.0.0+unknown"

__all__ = ["__version__"]
