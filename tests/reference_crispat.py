"""Run crispat (a reference guide caller) on guide-count h5ad files; run in the eval environment.

    .venv-eval/bin/python tests/reference_crispat.py OUT_DIR COUNTS.h5ad [COUNTS.h5ad ...]

For each input (cells x guides counts, obs['batch']) it runs crispat's Gaussian mixture over all cells
(``ga_gauss``, ``inference="em"``: scikit-learn's EM, ``nonzero=False``, crispat's defaults otherwise)
and writes ``OUT_DIR/<stem>/assignments.csv`` (cell, gRNA, UMI_counts) plus ``OUT_DIR/<stem>/seconds.txt``.
It imports nothing of pairedscreen (the eval environment has its own numpy/pandas).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path


def main(out: str, inputs: list[str]) -> None:
    import crispat

    for p in inputs:
        d = Path(out) / Path(p).stem
        d.mkdir(parents=True, exist_ok=True)
        t0 = time.perf_counter()
        crispat.ga_gauss(str(p), f"{d}/", inference="em", make_plots=False)
        (d / "seconds.txt").write_text(f"{time.perf_counter() - t0:.3f}\n")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2:])
