"""Memory of the evals' split-half pass over the RNA arm (``pairedscreen.train.halves.rna_parts``, what
``train_evals`` streams for the ceilings and the leakage audit) at two screen sizes: peak RSS must stay
that of one library, not grow with the libraries (a benchmark, not a test).

Reads the per-library ``results/rna/Lxx/cells.h5ad`` of an ``atlas_scale.py`` work folder, which
``PYTHONPATH=src python benchmarks/atlas_scale.py --workdir /tmp/atlas --sizes 250000,600000
--steps rna_merge`` builds; each size runs in a fresh process::

    PYTHONPATH=src python benchmarks/evals_halves.py --workdir /tmp/atlas --libraries 2,6
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path


def one(workdir: Path, n: int) -> dict:
    import anndata as ad
    import pandas as pd

    from pairedscreen.train import halves

    files = sorted((workdir / "results" / "rna").glob("L*/cells.h5ad"))[:n]
    if len(files) < n:
        raise SystemExit(f"{workdir}: {len(files)} libraries, {n} asked (run atlas_scale.py first)")
    reg = pd.read_csv(workdir / "config" / "perturbations.tsv", sep="\t", dtype=str)
    ctrl = reg.loc[reg["is_control"].str.lower() == "true", "perturbation_id"].tolist()
    genes = list(ad.read_h5ad(files[0], backed="r").var_names)
    t = time.perf_counter()
    rp = halves.rna_parts(files, reg["perturbation_id"].tolist(), ctrl, genes[:500], genes, n_parts=4, seed=0)
    return {"libraries": n, "cells": int(rp.n_cells.sum()), "wall_s": round(time.perf_counter() - t, 1),
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workdir", type=Path, required=True, help="an atlas_scale.py work folder")
    ap.add_argument("--libraries", default="2,6", help="two screen sizes, in libraries")
    ap.add_argument("--one", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.one:
        print(json.dumps(one(args.workdir, args.one)))
        return 0
    rows = []
    for n in (int(x) for x in args.libraries.split(",")):
        out = subprocess.run([sys.executable, __file__, "--workdir", str(args.workdir), "--one", str(n)],
                             capture_output=True, text=True, check=True)
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
        print(rows[-1])
    print(f"rss_growth={rows[-1]['peak_rss_mb'] / rows[0]['peak_rss_mb']:.2f} for "
          f"{rows[-1]['cells'] / rows[0]['cells']:.1f}x the cells")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
