"""Scrublet's exact kNN: ours (``knn='exact'``, the default) against scanpy's own sklearn brute force.

    .venv/bin/python benchmarks/scrublet_knn.py --cells 20000    # one 10x library (the RNA branch's size)
    .venv/bin/python benchmarks/scrublet_knn.py --cells 50000    # the largest library scored exactly

Runs ``flag_doublets`` on the same simulated count matrix (``rna_scale.build``) both ways, in one
process, baseline first; prints wall time and peak RSS above the matrix baseline for each, the speed
ratio, and whether the two give the same scores, threshold and calls (they should: same neighbours).
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
from rna_scale import PeakRSS, _rss, build

from pairedscreen.rna.qc import flag_doublets


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cells", type=int, default=20000)
    ap.add_argument("--genes", type=int, default=2000)
    ap.add_argument("--umis", type=int, default=3000)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    cells, *_ = build(args.cells, args.genes, 50, 2, args.umis, args.seed)
    flag_doublets(cells[:2000].copy(), knn="exact")  # numba compilation / cache load outside the timing
    report: dict = {"cells": args.cells, "points_scored": 3 * args.cells}
    out = {}
    base = _rss()
    for knn in ("sklearn", "exact"):
        t = time.perf_counter()
        with PeakRSS() as pk:
            out[knn] = flag_doublets(cells, expected_rate=0.06, knn=knn)
        report[f"{knn}_s"] = round(time.perf_counter() - t, 2)
        report[f"{knn}_peak_mb"] = round((pk.peak - base) / 2**20, 1)
    s, e = out["sklearn"], out["exact"]
    report["same_scores"] = bool(np.array_equal(s.obs["doublet_score"], e.obs["doublet_score"]))
    report["same_threshold"] = s.uns["doublets"]["threshold"] == e.uns["doublets"]["threshold"]
    report["same_calls"] = bool(np.array_equal(s.obs["predicted_doublet"], e.obs["predicted_doublet"]))
    report["speedup_vs_sklearn"] = round(report["sklearn_s"] / report["exact_s"], 2)
    print(json.dumps(report, indent=2))
    return report


if __name__ == "__main__":
    main()
