"""RNA scale benchmark: QC + doublets + guide assignment + pseudobulk + knockdown on a large count
matrix built directly in memory (no FASTQs), reporting wall time per step and peak memory as a
multiple of the count matrix size.

    .venv/bin/python benchmarks/rna_scale.py --cells 200000 --no-doublets   # QC + assignment + pseudobulk
    .venv/bin/python benchmarks/rna_scale.py --cells 50000                  # with scrublet

Scrublet is measured apart: the workflow runs it per library (10x libraries hold ~5-50k cells), and its
peak is scanpy's own dense z-scored matrix of observed + simulated doublets over the highly variable
genes (~14x the sparse counts at 50k cells), not ours; above 50k cells per library scanpy switches to
pynndescent, which had not finished after 70 minutes at 200k cells on 2 cores.

Peak memory is sampled by a background thread (RSS, /proc/self/statm) above the baseline taken after
the matrix is built; "matrix size" = bytes of the CSR count matrix (data + indices + indptr).
"""

from __future__ import annotations

import argparse
import json
import os
import threading
import time

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp

from pairedscreen.config import resolve_section
from pairedscreen.rna.guides import assign_guides
from pairedscreen.rna.knockdown import knockdown_table
from pairedscreen.rna.pseudobulk import pseudobulk
from pairedscreen.rna.qc import compute_qc, flag_doublets

RNA = resolve_section("rna", {})   # the schema's values: library functions take them as required keywords

PAGE = os.sysconf("SC_PAGE_SIZE")


def _rss(pid: int | str = "self") -> int:
    try:
        with open(f"/proc/{pid}/statm") as fh:
            return int(fh.read().split()[1]) * PAGE
    except (FileNotFoundError, ProcessLookupError, IndexError, ValueError):  # a child that just ended
        return 0


def _descendants(root: int) -> list[int]:
    parent: dict[int, list[int]] = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as fh:
                ppid = int(fh.read().rsplit(")", 1)[1].split()[1])
        except (FileNotFoundError, ProcessLookupError, IndexError, ValueError):
            continue
        parent.setdefault(ppid, []).append(int(d))
    out, todo = [], [root]
    while todo:
        kids = parent.get(todo.pop(), [])
        out += kids
        todo += kids
    return out


class PeakRSS:
    """Peak RSS (bytes) of this process while the block runs; with ``children``, also the peak summed
    RSS of its descendant processes (``children_peak``)."""

    def __init__(self, interval: float = 0.05, children: bool = False) -> None:
        self.peak, self.children_peak = _rss(), 0
        self.interval, self.children, self._stop = interval, children, threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)

    def _sample(self) -> None:
        self.peak = max(self.peak, _rss())
        if self.children:
            kids = sum(_rss(p) for p in _descendants(os.getpid()))
            self.children_peak = max(self.children_peak, kids)

    def _run(self) -> None:
        while not self._stop.is_set():
            self._sample()
            time.sleep(self.interval)

    def __enter__(self) -> PeakRSS:
        self._t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._t.join()
        self._sample()


def build(n_cells: int, n_genes: int, n_perts: int, guides_per: int, umis: int, seed: int):
    """Counts: NB-ish (gamma-Poisson) cells over a shared profile, each cell one guide; target genes
    of the first half of the perturbations knocked down to 20%."""
    rng = np.random.default_rng(seed)
    names = (
        [f"MT-{i}" for i in range(13)]
        + [f"RPL{i}" for i in range(40)]
        + [f"G{i}" for i in range(n_genes - 53)]
    )
    base = rng.gamma(0.3, 1.0, n_genes)
    base /= base.sum()
    n_guides = n_perts * guides_per
    guide = rng.integers(0, n_guides, n_cells)
    pert_of_guide = np.repeat(np.arange(n_perts), guides_per)
    pert = pert_of_guide[guide]
    size = rng.lognormal(np.log(umis), 0.4, n_cells)
    # sample counts gene-block-wise to keep memory down: nnz per cell ~ Poisson(size * base)
    rows, cols, vals = [], [], []
    block = 20000
    targets = 53 + np.arange(n_perts)  # perturbation k targets gene G{k}
    for s in range(0, n_cells, block):
        e = min(n_cells, s + block)
        lam = size[s:e, None] * base[None, :]
        kd = pert[s:e] < n_perts // 2
        lam[np.flatnonzero(kd), targets[pert[s:e][kd]]] *= 0.2
        x = rng.poisson(lam * rng.gamma(5.0, 0.2, lam.shape))
        r, c = np.nonzero(x)
        rows.append(r + s)
        cols.append(c)
        vals.append(x[r, c].astype(np.int32))
    counts = sp.csr_matrix(
        (np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=(n_cells, n_genes)
    )
    g = sp.csr_matrix(rng.poisson(0.3, (n_cells, n_guides)).astype(np.int32))
    g = g + sp.csr_matrix(
        (rng.negative_binomial(4, 4 / 44, n_cells) + 3, (np.arange(n_cells), guide)), shape=g.shape
    )
    pids = [f"P{k:04d}" for k in range(n_perts)]
    ctrl = set(pids[-max(2, n_perts // 10) :])
    sheet = pd.DataFrame(
        {
            "id": [f"{pids[p]}-g{j}" for p in range(n_perts) for j in range(guides_per)],
            "perturbation_id": [pids[p] for p in pert_of_guide],
        }
    )
    registry = pd.DataFrame(
        {
            "perturbation_id": pids,
            "is_control": [p in ctrl for p in pids],
            "target_gene": [None if p in ctrl else names[53 + k] for k, p in enumerate(pids)],
        }
    )
    obs = pd.DataFrame({"library": "L1", "batch": "B1"}, index=[f"L1_{i:08d}" for i in range(n_cells)])
    cells = ad.AnnData(X=counts, obs=obs, var=pd.DataFrame({"gene_id": names}, index=names))
    gc = ad.AnnData(X=sp.csr_matrix(g), obs=obs.copy(), var=pd.DataFrame(index=sheet["id"]))
    return cells, gc, sheet, registry


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cells", type=int, default=200000)
    ap.add_argument("--genes", type=int, default=2000)
    ap.add_argument("--perturbations", type=int, default=200)
    ap.add_argument("--umis", type=int, default=3000)
    ap.add_argument("--no-doublets", action="store_true", help="skip scrublet (the slowest step)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    t = time.perf_counter()
    cells, gc, sheet, registry = build(args.cells, args.genes, args.perturbations, 2, args.umis, args.seed)
    x = cells.X
    matrix_bytes = x.data.nbytes + x.indices.nbytes + x.indptr.nbytes
    report: dict = {
        "cells": args.cells,
        "genes": args.genes,
        "nnz": int(x.nnz),
        "matrix_mb": round(matrix_bytes / 2**20, 1),
        "build_s": round(time.perf_counter() - t, 1),
    }
    base = _rss()
    steps = [("qc", lambda a: compute_qc(a, **RNA["qc"]))]
    if not args.no_doublets:
        steps.append(("doublets", lambda a: flag_doublets(a, expected_rate=RNA["doublets"]["expected_rate"],
                                                          knn=RNA["doublets"]["knn"])))
    steps.append(("guides", lambda a: assign_guides(a, gc, sheet, registry=registry, **RNA["guides"])))
    a = cells
    with PeakRSS() as peak_all:
        for name, fn in steps:
            t = time.perf_counter()
            with PeakRSS() as pk:
                a = fn(a)
            report[f"{name}_s"] = round(time.perf_counter() - t, 2)
            report[f"{name}_peak_over_matrix"] = round((pk.peak - base) / matrix_bytes, 2)
        a.obs["pass_qc"] = True  # pseudobulk/knockdown over all (planted data has no failures)
        t = time.perf_counter()
        with PeakRSS() as pk:
            pb = pseudobulk(a)
        report["pseudobulk_s"] = round(time.perf_counter() - t, 2)
        report["pseudobulk_peak_over_matrix"] = round((pk.peak - base) / matrix_bytes, 2)
        t = time.perf_counter()
        with PeakRSS() as pk:
            kd = knockdown_table(a, registry)
        report["knockdown_s"] = round(time.perf_counter() - t, 2)
        report["knockdown_peak_over_matrix"] = round((pk.peak - base) / matrix_bytes, 2)
    report["peak_over_matrix"] = round((peak_all.peak - base) / matrix_bytes, 2)
    report["peak_rss_mb"] = round(peak_all.peak / 2**20, 1)
    half = kd["perturbation_id"].isin([f"P{k:04d}" for k in range(args.perturbations // 2)])
    report["knockdowns_found"] = f"{int((kd.loc[half, 'padj'] < 0.05).sum())}/{int(half.sum())}"
    report["false_knockdowns"] = f"{int((kd.loc[~half, 'padj'] < 0.05).sum())}/{int((~half).sum())}"
    report["pseudobulk_shape"] = list(pb.shape)
    print(json.dumps(report, indent=2))
    return report


if __name__ == "__main__":
    main()
