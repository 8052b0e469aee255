"""Guide assignment speed and calls: the default per-guide background model (``background``) against the
nonzero-only mixture (``mixture``) and a fixed 5-UMI threshold, timed in the same run.

    .venv/bin/python benchmarks/guide_assignment.py [--cells 200000]

Prints, per matrix, each method's seconds (numba compiled/loaded before timing), the ratio to
``mixture``, the assignment rate and, on the planted matrices (tests/_guide_data.py), the precision and
recall of single-guide calls; on the shared TAP-seq screen (if present) the agreement with crispat's
published Gaussian-mixture calls. Matrices: the TAP-seq screen (21,977 cells x 86 guides), a 10x-like
high-background screen of the issue's 10x size (3,281 cells x 93 guides), a Parse-like low-background one
(5,000 cells x 3 guides) and a large high-background one (``--cells`` x 93 guides).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from _guide_data import planted_regime, single_guide_pr  # noqa: E402

from pairedscreen.config import schema_defaults  # noqa: E402
from pairedscreen.rna.guides import call_guides  # noqa: E402

SCHEMA = schema_defaults()   # the pipeline's values: library functions take them as required keywords

METHODS = ("background", "mixture", "threshold")
TAPSEQ = REPO.parent / "shared" / "data" / "perturbseq_tapseq_schraivogel_crispat"


def _sets(mat) -> list[frozenset]:
    mat = mat.tocsr()
    return [frozenset(mat.indices[mat.indptr[i]:mat.indptr[i + 1]].tolist()) for i in range(mat.shape[0])]


def _run(name: str, x, truth=None, reference=None, names=None) -> None:
    print(f"\n{name}: {x.shape[0]:,} cells x {x.shape[1]} guides")
    secs = {}
    for method in METHODS:
        call_guides(x[:50], method=method, min_umis=SCHEMA["rna.guides.min_umis"],  # compile / load numba's
                    threshold=SCHEMA["rna.guides.threshold"],                     # cache first
                    max_fraction=SCHEMA["rna.guides.max_fraction"])
        t = time.perf_counter()
        calls, _ = call_guides(x, method=method, min_umis=3, threshold=5,
                               max_fraction=SCHEMA["rna.guides.max_fraction"])
        secs[method] = time.perf_counter() - t
        got = _sets(calls)
        ratio = secs[method] / secs["background"]
        line = (f"  {method:10s} {secs[method]:7.3f} s ({ratio:5.2f} x background)"
                f"  assigned {np.mean([bool(s) for s in got]):.3f}")
        if truth is not None:
            p, r = single_guide_pr(got, truth)
            line += f"  single-guide precision {p:.3f} recall {r:.3f}"
        if reference is not None:
            ours = {i: frozenset(names[list(s)]) for i, s in enumerate(got) if s}
            cells = set(ours) | set(reference)
            agree = np.mean([ours.get(c) == reference.get(c) for c in cells])
            line += f"  agreement with crispat gauss {agree:.3f}"
        print(line)
    print(f"  background / mixture time ratio {secs['background'] / secs['mixture']:.2f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--cells", type=int, default=200_000)
    args = ap.parse_args()
    if (TAPSEQ / "gRNA_counts.h5ad").exists():
        import anndata as ad

        a = ad.read_h5ad(TAPSEQ / "gRNA_counts.h5ad")
        r = pd.read_csv(TAPSEQ / "reference_guide_assignments" / "gauss" / "assignments.csv.gz")
        idx = pd.Index(a.obs_names).get_indexer(r["cell"])
        ref = {int(i): frozenset(g) for i, g in r.assign(i=idx).groupby("i")["gRNA"]}
        _run("TAP-seq (Schraivogel, crispat's data)", a.X, reference=ref, names=np.asarray(a.var_names))
    else:
        print(f"(TAP-seq data not found under {TAPSEQ}: skipped)")
    _run("10x-like high background", *planted_regime("high", n=3281, n_guides=93))
    _run("Parse-like low background", *planted_regime("low", n=5000, n_guides=3))
    _run("large high background", *planted_regime("high", n=args.cells, n_guides=93, seed=1))


if __name__ == "__main__":
    main()
