"""Doublet scores of one superloaded library: wall time and peak memory of the RNA stage's doublet step.

    .venv/bin/python benchmarks/doublets.py --cells 20000    # + scanpy's own scrublet (exact kNN) to compare
    .venv/bin/python benchmarks/doublets.py --cells 100000   # a superloaded 10x channel

Builds a synthetic library (gamma-Poisson = negative-binomial counts over ``--genes`` genes, 12 cell
types, ``--detected`` genes detected per cell on average; ``--doublet-rate`` of the droplets are
planted doublets = the sum of two cells of different types), writes it as an h5ad (cached under
``--workdir``) and runs ``pairedscreen.rna.qc.flag_doublets`` on it in a fresh subprocess (read the
h5ad, flag doublets), which reports the step's wall time and its peak RSS (``VmHWM``, the whole
process, interpreter, imports and the loaded matrix included, from the peak reset after the read,
so the h5ad reader's own temporaries are reported apart). The count matrix's size is its CSR as
stored (data + indices + indptr). With ``--compare`` (the default up to 20k cells) scanpy's own
``sc.pp.scrublet`` with exact sklearn neighbours (``knn='sklearn'``) runs the same way in its own
subprocess; the script prints the fraction of cells given the same call, the correlation of the
scores, and the planted doublets' recall / precision for both.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp

N_TYPES = 12
DISPERSION = 0.5  # NB shape r = 1 / dispersion


def _profiles(rng: np.random.Generator, n_genes: int) -> np.ndarray:
    """Per-type gene probabilities: a shared gamma profile, each type up/down-weighting 5 % of the genes."""
    base = rng.gamma(0.3, 1.0, n_genes)
    prof = np.tile(base, (N_TYPES, 1))
    for t in range(N_TYPES):
        genes = rng.choice(n_genes, n_genes // 20, replace=False)
        prof[t, genes] *= rng.lognormal(0.0, 1.5, genes.size)
    return prof / prof.sum(axis=1, keepdims=True)


def _size_for(prof: np.ndarray, detected: float) -> float:
    """Library size giving ``detected`` expected detected genes per cell (NB zero probability)."""
    r = 1 / DISPERSION
    lo, hi = 1.0, 1e7
    for _ in range(60):
        mid = np.sqrt(lo * hi)
        got = float(np.mean([(1 - (1 + mid * p / r) ** -r).sum() for p in prof]))
        lo, hi = (mid, hi) if got < detected else (lo, mid)
    return mid


def build(n_cells: int, n_genes: int, detected: float, doublet_rate: float, seed: int
          ) -> tuple[sp.csr_matrix, np.ndarray]:
    """Counts (float32 CSR, int32 indices) and the planted-doublet mask."""
    rng = np.random.default_rng(seed)
    prof = _profiles(rng, n_genes)
    size = _size_for(prof, detected)
    kind = rng.integers(0, N_TYPES, n_cells)
    is_dbl = np.zeros(n_cells, bool)
    is_dbl[rng.choice(n_cells, round(doublet_rate * n_cells), replace=False)] = True
    partner = (kind + rng.integers(1, N_TYPES, n_cells)) % N_TYPES  # always another type
    r = 1 / DISPERSION
    chunks = []
    step = 1000
    for s in range(0, n_cells, step):
        e = min(n_cells, s + step)
        sizes = size * rng.lognormal(0.0, 0.3, e - s)
        lam = sizes[:, None] * prof[kind[s:e]]
        x = rng.poisson(lam * rng.standard_gamma(r, lam.shape) / r)
        d = np.flatnonzero(is_dbl[s:e])
        if d.size:
            lam2 = sizes[d, None] * prof[partner[s:e][d]]
            x[d] += rng.poisson(lam2 * rng.standard_gamma(r, lam2.shape) / r)
        chunks.append(sp.csr_matrix(x.astype(np.float32)))
        del x, lam
    m = sp.vstack(chunks, format="csr")
    del chunks
    m.indices = m.indices.astype(np.int32)
    m.indptr = m.indptr.astype(np.int64)
    return m, is_dbl


def _library(args: argparse.Namespace) -> Path:
    """The cached h5ad of this size and seed (built when missing)."""
    work = Path(args.workdir)
    work.mkdir(parents=True, exist_ok=True)
    path = work / f"lib_{args.cells}_{args.genes}_{args.detected}_{args.doublet_rate}_{args.seed}.h5ad"
    if not path.exists():
        t = time.perf_counter()
        m, is_dbl = build(args.cells, args.genes, args.detected, args.doublet_rate, args.seed)
        obs = pd.DataFrame({"library": "L1", "planted_doublet": is_dbl},
                           index=[f"L1_{i:07d}" for i in range(args.cells)])
        a = ad.AnnData(X=m, obs=obs, var=pd.DataFrame(index=[f"G{j:05d}" for j in range(args.genes)]))
        tmp = path.with_suffix(".tmp.h5ad")
        a.write_h5ad(tmp)
        tmp.rename(path)
        print(f"built {path.name}: {m.nnz / args.cells:.0f} detected genes per cell, "
              f"{time.perf_counter() - t:.0f} s", flush=True)
    return path


def _reset_peak() -> bool:
    """Reset this process's peak RSS (Linux ``clear_refs`` 5), so the step's own peak is measured, not
    the h5ad reader's; False where the kernel does not allow it (then the peak includes the load)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def _vm_hwm() -> int:
    """Peak RSS since the last reset, bytes (``VmHWM``)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def child(path: str, knn: str, out: str, threads: int) -> None:
    """One run in a fresh process: read the library, flag doublets, report time and peak RSS."""
    from pairedscreen.rna.qc import flag_doublets

    a = ad.read_h5ad(path)
    x = a.X
    matrix = x.data.nbytes + x.indices.nbytes + x.indptr.nbytes
    load_peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    reset = _reset_peak()
    t = time.perf_counter()
    res = flag_doublets(a, expected_rate=0.06, knn=knn, threads=threads)
    wall = time.perf_counter() - t
    peak = _vm_hwm() if reset else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    np.savez(out, score=res.obs["doublet_score"].to_numpy(), called=res.obs["predicted_doublet"].to_numpy(),
             planted=a.obs["planted_doublet"].to_numpy())
    print(json.dumps({"wall_s": wall, "peak": peak, "load_peak": load_peak, "matrix": matrix,
                      "threshold": res.uns["doublets"]["threshold"]}), flush=True)


def _run(path: Path, knn: str, work: Path, threads: int) -> tuple[dict, dict]:
    out = work / f"result_{knn}.npz"
    proc = subprocess.run(
        [sys.executable, __file__, "--child", str(path), knn, str(out), str(threads)],
        check=True, capture_output=True, text=True,
    )
    rep = json.loads(proc.stdout.strip().splitlines()[-1])
    arrays = dict(np.load(out))
    return rep, arrays


def _recall_precision(called: np.ndarray, planted: np.ndarray) -> tuple[float, float]:
    tp = int((called & planted).sum())
    return tp / max(1, int(planted.sum())), tp / max(1, int(called.sum()))


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "--child":
        child(argv[1], argv[2], argv[3], int(argv[4]))
        return
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cells", type=int, default=20000)
    ap.add_argument("--genes", type=int, default=25000)
    ap.add_argument("--detected", type=int, default=2500, help="mean detected genes per cell")
    ap.add_argument("--doublet-rate", type=float, default=0.06)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--workdir", default="/tmp/pairedscreen_doublets_bench")
    ap.add_argument("--compare", action=argparse.BooleanOptionalAction, default=None,
                    help="also run scanpy's scrublet with exact neighbours (default: up to 20k cells)")
    args = ap.parse_args(argv)
    path = _library(args)
    work = Path(args.workdir)
    rep, ours = _run(path, "exact", work, args.threads)
    mb = 2**20
    print(f"cells={args.cells} wall_s={rep['wall_s']:.1f} peak_rss_mb={rep['peak'] / mb:.0f} "
          f"matrix_mb={rep['matrix'] / mb:.0f} peak_over_matrix={rep['peak'] / rep['matrix']:.2f} "
          f"(peak while reading the h5ad: {rep['load_peak'] / mb:.0f} MB; threshold={rep['threshold']:.4f})",
          flush=True)
    planted = ours["planted"].astype(bool)
    rec, prec = _recall_precision(ours["called"].astype(bool), planted)
    print(f"ours: planted-doublet recall={rec:.3f} precision={prec:.3f} "
          f"called={int(ours['called'].sum())} planted={int(planted.sum())}")
    if args.compare if args.compare is not None else args.cells <= 20000:
        ref_rep, ref = _run(path, "sklearn", work, args.threads)
        print(f"scanpy_exact: wall_s={ref_rep['wall_s']:.1f} peak_rss_mb={ref_rep['peak'] / mb:.0f} "
              f"peak_over_matrix={ref_rep['peak'] / ref_rep['matrix']:.2f} "
              f"threshold={ref_rep['threshold']:.4f}")
        both = np.isfinite(ours["score"]) & np.isfinite(ref["score"])
        agree = float((ours["called"][both] == ref["called"][both]).mean())
        r = float(np.corrcoef(ours["score"][both], ref["score"][both])[0, 1])
        same = float((ours["score"][both] == ref["score"][both]).mean())
        print(f"agreement={agree:.5f} score_pearson={r:.6f} scores_identical={same:.5f} "
              f"max_abs_score_diff={float(np.abs(ours['score'][both] - ref['score'][both]).max()):.2e} "
              f"cells_compared={int(both.sum())}")
        rec, prec = _recall_precision(ref["called"].astype(bool), planted)
        print(f"scanpy_exact: planted-doublet recall={rec:.3f} precision={prec:.3f} "
              f"called={int(ref['called'].sum())}")
        print(f"speed_ratio_scanpy_over_ours={ref_rep['wall_s'] / rep['wall_s']:.2f} "
              f"memory_ratio_scanpy_over_ours={ref_rep['peak'] / rep['peak']:.2f}")


if __name__ == "__main__":
    main()
