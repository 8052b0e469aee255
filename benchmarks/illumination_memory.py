"""Peak memory of the streaming illumination function: N sites vs 4N sites must be flat (within 20%).

Each measurement runs in a fresh subprocess that streams the image paths through
``pairedscreen.paint.illumination.compute_illumination`` and reports the tracemalloc peak (numpy buffers
are traced) and the process's peak RSS growth. Usage::

    .venv/bin/python benchmarks/illumination_memory.py [--n 4] [--size 1080] [--method background]

Last line: ``peak_ratio_4n_over_n: <x>``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import tifffile

CHILD = r"""
import json, resource, sys, tracemalloc
from pathlib import Path
from pairedscreen.paint.illumination import compute_illumination
paths = sorted(Path(sys.argv[1]).glob("*.tif"))[: int(sys.argv[2])]
rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
tracemalloc.start()
illum = compute_illumination((str(p) for p in paths), 0.0, method=sys.argv[3])
cur, peak = tracemalloc.get_traced_memory()
rss1 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"n": len(paths), "tracemalloc_peak_mb": peak / 2**20,
                  "rss_growth_mb": (rss1 - rss0) / 1024, "mean": float(illum.mean())}))
"""


def measure(folder: Path, n: int, method: str) -> dict:
    out = subprocess.run([sys.executable, "-c", CHILD, str(folder), str(n), method],
                         check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=4, help="sites in the small run (the large run has 4n)")
    ap.add_argument("--size", type=int, default=1080)
    ap.add_argument("--method", default="background", choices=["background", "mean"])
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        yy, xx = np.mgrid[0:args.size, 0:args.size]
        r2 = ((yy - args.size / 2) ** 2 + (xx - args.size / 2) ** 2) / (args.size / 2) ** 2
        field = 1.0 - 0.15 * r2
        for i in range(4 * args.n):
            tifffile.imwrite(folder / f"s{i:04d}.tif", rng.poisson(800 * field).astype(np.uint16))
        small = measure(folder, args.n, args.method)
        large = measure(folder, 4 * args.n, args.method)
    image_mb = args.size * args.size * 2 / 2**20
    print(f"method: {args.method}; image: {args.size}x{args.size} uint16 ({image_mb:.1f} MB)")
    for r in (small, large):
        print(f"sites {r['n']:4d}: tracemalloc peak {r['tracemalloc_peak_mb']:.1f} MB, "
              f"peak RSS growth {r['rss_growth_mb']:.1f} MB")
    ratio = large["tracemalloc_peak_mb"] / small["tracemalloc_peak_mb"]
    print(f"flat_within_20pct: {abs(ratio - 1) <= 0.2}")
    print(f"peak_ratio_4n_over_n: {ratio:.3f}")


if __name__ == "__main__":
    main()
