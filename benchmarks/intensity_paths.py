"""Intensity family speed per input kind, single thread (a benchmark, not a test).

MeasureObjectIntensity (3 compartments x 5 channels) on the simulated-like 1080 x 1080 site of
``benchmarks/features.py``, measured on three versions of the same images:

- ``grid``: float64 uint16 / 65535 (the values lie on the k / 65535 grid: 2-byte radix sort);
- ``corrected``: what ``paint_features`` measures, float32 raw / 65535 divided by an illumination
  function (``paint.stages._corrected``; off the grid: 4-byte radix sort of the float32 bits);
- ``float64_off_grid``: the corrected values as float64 (8-byte radix sort of the float64 bits).

Prints the CPU seconds of each (best of ``--repeat``) and each one's ratio to ``grid``: the
quantiles of the corrected images should cost about what the 16-bit path costs (aim <= 1.15).

    .venv/bin/python benchmarks/intensity_paths.py [--repeat 5]
"""

from __future__ import annotations

import os

for _v in ("NUMBA_NUM_THREADS", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_v] = "1"

import argparse  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from _features_a_data import synthetic_site  # noqa: E402

from pairedscreen.paint.features import build_index  # noqa: E402
from pairedscreen.paint.features.intensity import edge_pixels, measure_intensity  # noqa: E402
from pairedscreen.paint.stages import _corrected  # noqa: E402

CHANNELS = ("DNA", "ER", "RNA", "AGP", "Mito")


def family_seconds(images: np.ndarray, compartments: list[tuple], repeat: int) -> float:
    """Best-of-``repeat`` CPU seconds of the 15 ``measure_intensity`` calls of a site (after one
    warm-up call compiles the kernel for the images' dtype)."""
    def once() -> None:
        for lab, index, edge in compartments:
            for c, ch in enumerate(CHANNELS):
                measure_intensity(images[c], lab, ch, index=index, edge=edge)

    once()
    best = np.inf
    for _ in range(repeat):
        t = time.process_time()
        once()
        best = min(best, time.process_time() - t)
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    imgs, nuc, cells, cyto = synthetic_site(seed=3, shape=(1080, 1080), n_cells=520, n_channels=5)
    raw = np.rint(imgs * 65535.0).astype(np.uint16)
    yy, xx = np.mgrid[0:1080, 0:1080] / 1080.0
    illum = (1.0 + 0.15 * np.cos(3 * yy) * np.sin(2 * xx + 0.3)).astype(np.float32)
    corrected = _corrected(raw, illum[None])[0]
    compartments = []
    for lab in (nuc, cells, cyto):
        lab = np.ascontiguousarray(lab, dtype=np.int64)
        index = build_index(lab)
        compartments.append((lab, index, edge_pixels(lab, index)))
    kinds = {"grid": imgs, "corrected": corrected, "float64_off_grid": corrected.astype(np.float64)}
    seconds = {k: family_seconds(v, compartments, args.repeat) for k, v in kinds.items()}
    for k, s in seconds.items():
        print(f"intensity_{k}_cpu_s: {s:.4f}  ratio_to_grid: {s / seconds['grid']:.2f}")


if __name__ == "__main__":
    main()
