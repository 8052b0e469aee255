"""Atlas scale: peak memory and time of every aggregate step as the screen grows (issue 20).

Writes per-library outputs in the workflow's own schemas (``results/rna/{lib}/cells.h5ad`` as ``rna_cells``
writes them: counts CSR int32, the obs columns, obsm['guide_counts'], uns; then each library's
``summary.h5ad`` made by the real ``rna_summary`` stage) for 100k-cell libraries, and runs the aggregate
steps exactly as the workflow's scripts call them, each in a fresh Python process that reports its own peak
RSS (``VmHWM``), at 250k (two libraries of 100k and one of 50k), 500k, 1M and 2M cells:

- ``rna_summary``: the per-library map step (one 100k-cell library; the same at every size);
- ``rna_merge``: :func:`pairedscreen.rna.stages.run_rna_merge` (streamed merged cells, pseudobulk and
  knockdown combined from the summaries);
- ``quality``: :func:`pairedscreen.quality.stage.run_quality` on the RNA arm (the bounded per-perturbation
  subsample read from the library files);
- the Cell Painting aggregates (``profiles``, the paint halves of ``quality`` and ``pair``) at 10, 40 and 100
  plates (:mod:`atlas_paint`).

Prints ``step=... cells=... plates=... wall_s=... peak_rss_mb=...`` per step and size, then
``rss_growth_max=`` (largest over steps of the peak RSS at the largest size over the smallest) and
``complete_2M=yes|no``. ``--genes-per-cell`` sets the detected genes per cell (the default, 250, keeps the
2M-cell run within an hour on 2 cores; the per-library steps' memory scales with it, the aggregates' growth
with the number of cells does not).

    .venv/bin/python benchmarks/atlas_scale.py                       # 250k..2M cells, 10..100 plates
    .venv/bin/python benchmarks/atlas_scale.py --sizes 250000,500000 --skip paint
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

HERE = Path(__file__).resolve().parent
LIB_CELLS = 100_000


def write_registry(root: Path, n_perts: int, n_controls: int, genes: list[str]) -> Path:
    ids = [f"P{i:05d}" for i in range(n_perts - n_controls)] + [f"NTC_{i}" for i in range(n_controls)]
    reg = pd.DataFrame({"perturbation_id": ids,
                        "perturbation_type": ["CRISPRi"] * (n_perts - n_controls) + ["control"] * n_controls,
                        "target_gene": genes[: n_perts - n_controls] + [""] * n_controls,
                        "is_control": ["false"] * (n_perts - n_controls) + ["true"] * n_controls,
                        "control_type": [""] * (n_perts - n_controls) + ["non-targeting"] * n_controls})
    path = root / "config" / "perturbations.tsv"
    path.parent.mkdir(parents=True, exist_ok=True)
    reg.to_csv(path, sep="\t", index=False)
    return path


def write_library(path: Path, lib: str, n: int, genes: list[str], perts: list[str], controls: set[str],
                  genes_per_cell: int, seed: int) -> None:
    """One library's cells.h5ad as ``rna_cells`` writes it (counts with a planted knockdown of each
    perturbation's target, the obs/obsm/uns the aggregate stages read)."""
    import anndata as ad
    import scipy.sparse as sp

    rng = np.random.default_rng(seed)
    n_genes = len(genes)
    labels = rng.choice(np.asarray(perts + ["multiple", "unassigned"], dtype=object), n,
                        p=np.r_[np.full(len(perts), 0.94 / len(perts)), 0.03, 0.03])
    idx = np.sort(rng.zipf(1.3, (n, genes_per_cell)) % n_genes, axis=1).astype(np.int32)
    keep = np.ones(idx.shape, bool)
    keep[:, 1:] = np.diff(idx, axis=1) != 0
    counts = np.minimum(rng.geometric(0.4, idx.shape), 500).astype(np.int32)
    gene_of = {p: k for k, p in enumerate(perts) if not p.startswith("NTC")}
    for row_k in range(0, n, 20_000):       # knock the target down: its entries dropped in 80 % of cells
        sl = slice(row_k, row_k + 20_000)
        tcol = np.array([gene_of.get(p, -1) for p in labels[sl]])
        hit = (idx[sl] == tcol[:, None]) & (rng.random(idx[sl].shape) < 0.8)
        keep[sl] &= ~hit
    indptr = np.r_[0, np.cumsum(keep.sum(axis=1))].astype(np.int64)
    x = sp.csr_matrix((counts[keep], idx[keep], indptr), shape=(n, n_genes))
    del idx, counts, keep
    is_ctrl = np.isin(labels, list(controls))
    guides = np.where(np.isin(labels, ["multiple", "unassigned"]), "",
                      labels.astype(str) + "-g" + (1 + rng.integers(0, 2, n)).astype(str))
    obs = pd.DataFrame({
        "barcode": [f"{v:016x}" for v in rng.integers(0, 2**62, n)],
        "library": pd.Categorical([lib] * n), "batch": pd.Categorical([f"B{seed % 3}"] * n),
        "total_counts": np.asarray(x.sum(axis=1)).ravel().astype(np.int64),
        "n_genes_by_counts": np.diff(x.indptr).astype(np.int32),
        "pass_qc": rng.random(n) > 0.05, "doublet_score": rng.random(n).round(4),
        "predicted_doublet": rng.random(n) < 0.03, "guide_ids": pd.Categorical(guides),
        "n_guides": (guides != "").astype(np.int64), "perturbation": pd.Categorical(labels),
        "is_control": is_ctrl}, index=[f"{lib}_{b}" for b in obs_barcodes(n)])
    a = ad.AnnData(X=x, obs=obs, var=pd.DataFrame({"gene_id": [f"ENSG{i:011d}" for i in range(n_genes)]},
                                                  index=genes))
    names = sorted({g for g in guides if g})
    gi = pd.Index(names).get_indexer(guides)
    has = gi >= 0
    a.obsm["guide_counts"] = sp.csr_matrix((rng.integers(3, 40, int(has.sum())).astype(np.int64),
                                            (np.flatnonzero(has), gi[has])), shape=(n, len(names)))
    a.uns["guide_names"] = np.asarray(names)
    a.uns["cell_calling"] = {"knee": 1000.0, "threshold": 300.0, "fdr": 0.01}
    path.parent.mkdir(parents=True, exist_ok=True)
    a.write_h5ad(path, compression="gzip")


def obs_barcodes(n: int) -> list[str]:
    return [f"c{i:07d}" for i in range(n)]


# ------------------------------------------------------------------------------------------ steps
STEP_CODE = {
    "rna_summary": """
from pairedscreen.rna.stages import run_rna_summary
run_rna_summary(cells=a["cells"][0], registry=a["registry"], out=a["out"] + "/summary.h5ad")
""",
    "rna_merge": """
from pairedscreen.rna.stages import run_rna_merge
run_rna_merge(cells=a["cells"], summaries=a["summaries"], registry=a["registry"], alpha=0.05,
              cells_out=a["out"] + "/cells.h5ad", pseudobulk_out=a["out"] + "/pseudobulk.h5ad",
              knockdown_out=a["out"] + "/knockdown.tsv", quarantine_out=a["out"] + "/quarantine.tsv",
              on_empty="error")
""",
    "quality": """
from pairedscreen.config import resolve_section
from pairedscreen.quality.stage import run_quality
run_quality(profiles=None, consensus=None, rna_cells=a["cells"], pseudobulk=a["out"] + "/pseudobulk.h5ad",
            knockdown=a["out"] + "/knockdown.tsv", wells=[], registry=a["registry"],
            params=dict(resolve_section("quality", {"permutations": 100})), truth_dir=None,
            metrics_out=a["out"] + "/metrics.json", table_out=a["out"] + "/perturbations.tsv", paint_cells=[],
            profiles_config=resolve_section("profiles"))
""",
    "pair": """
from pairedscreen.pair.stages import run_pair
run_pair(pseudobulk=a["out"] + "/pseudobulk.h5ad", consensus=None,
         quality_table=a["out"] + "/perturbations.tsv", registry=a["registry"],
         rna_cells=a["out"] + "/cells.h5ad", paint_cells=[],
         h5mu_out=a["out"] + "/perturbations.h5mu", rna_out=a["out"] + "/rna.h5ad", paint_out=None,
         cell_index_out=a["out"] + "/cell_index.tsv", cells_out=None, paint_quarantine=None,
         splits=a["splits"], holdout=a["holdout"])
""",
    "train_rna": """
from pairedscreen.config import resolve_section
from pairedscreen.train.stages import run_rna_export
run_rna_export(rna_cells=a["cells"], registry=a["registry"], splits=a["splits"], holdout=a["holdout"],
               params=dict(resolve_section("train", {"n_hvg": a["n_hvg"]})),
               h5ad_out=a["out"] + "/export.h5ad", toml_out=a["out"] + "/cell_load.toml",
               obs_out=a["out"] + "/export.obs.parquet")
""",
    "train_eval_cells": """
from pairedscreen.config import resolve_section
from pairedscreen.train.stages import run_eval_cells
run_eval_cells(a["out"] + "/export.h5ad", dict(resolve_section("train", {})), a["out"] + "/eval_cells.h5ad")
""",
}


RNA_STEPS = ("rna_merge", "quality", "pair", "train_rna", "train_eval_cells")


def write_train_tables(root: Path, registry: Path, libraries: list[str]) -> tuple[Path, Path]:
    """splits.tsv and batch_holdout.tsv as the train_splits / train_batch_holdout rules write them."""
    from pairedscreen.config import resolve_section
    from pairedscreen.train.stages import run_batch_holdout, run_splits

    params = dict(resolve_section("train", {}))
    cfg = root / "config"
    # the sheets as the schemas require them (train reads them through pairedscreen.sheets); the FASTQ
    # columns name files the train steps never read
    pd.DataFrame({"library_id": libraries, "batch": [f"B{k % 3}" for k in range(len(libraries))],
                  "chemistry": "10xv3",
                  **{f"{kind}_fastq_{mate}": [f"raw/fastq/{lib}_{kind}_{mate.upper()}.fastq.gz"
                                              for lib in libraries]
                     for kind in ("gex", "guide") for mate in ("r1", "r2")},
                  "expected_cells": LIB_CELLS}).to_csv(cfg / "rna_libraries.tsv", sep="\t", index=False)
    plate_cols = ("plate_id", "batch", "image_dir", "plate_map")
    pd.DataFrame({c: pd.Series([], dtype=str) for c in plate_cols}).to_csv(cfg / "plates.tsv", sep="\t",
                                                                          index=False)
    splits, holdout = root / "train" / "splits.tsv", root / "train" / "batch_holdout.tsv"
    splits.parent.mkdir(parents=True, exist_ok=True)
    run_splits(registry, params, splits)
    run_batch_holdout(cfg / "rna_libraries.tsv", cfg / "plates.tsv", params, holdout)
    return splits, holdout


def run_step(step: str, args: dict) -> dict:
    """Run one step in a fresh interpreter; its own peak RSS (VmHWM: unlike ru_maxrss, not inherited from
    the parent, whose size the child's count would otherwise start at) and wall time."""
    code = ("import json, resource, sys, time\n"
            f"a = json.loads({json.dumps(json.dumps(args))})\n"
            "t0 = time.perf_counter()\n" + STEP_CODE[step] +
            "hwm = [ln for ln in open('/proc/self/status') if ln.startswith('VmHWM:')]\n"
            "peak = int(hwm[0].split()[1]) / 1024 if hwm else "
            "resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024\n"
            "print('RESULT', json.dumps({'wall_s': time.perf_counter() - t0, 'peak_rss_mb': peak}))\n")
    env = {**os.environ, "PYTHONPATH": str(HERE.parent / "src")}
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    if res.returncode != 0:
        raise RuntimeError(f"step {step} failed:\n{res.stderr[-4000:]}")
    line = [ln for ln in res.stdout.splitlines() if ln.startswith("RESULT ")][-1]
    return json.loads(line[len("RESULT "):])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="250000,500000,1000000,2000000")
    ap.add_argument("--plates", default="10,40,100")
    ap.add_argument("--cells-per-library", type=int, default=LIB_CELLS)
    ap.add_argument("--genes", type=int, default=25_000)
    ap.add_argument("--genes-per-cell", type=int, default=250)
    ap.add_argument("--perturbations", type=int, default=200)
    ap.add_argument("--n-hvg", type=int, default=200, help="train.n_hvg of the export (X_hvg is dense)")
    ap.add_argument("--controls", type=int, default=10)
    ap.add_argument("--features", type=int, default=600, help="paint feature columns (real names)")
    ap.add_argument("--steps", default=",".join(RNA_STEPS),
                    help="RNA aggregate steps to run (pair needs rna_merge and quality's outputs)")
    ap.add_argument("--skip", default="", help="comma list of: rna, paint")
    ap.add_argument("--permutations", type=int, default=100, help="quality.permutations of the paint quality")
    ap.add_argument("--paint-max-replicates", type=int, default=8,
                    help="quality.max_replicates of the paint quality: the replicated layout gives every "
                         "treatment one well per plate, so a cap of 8 binds from 8 plates on and the figures "
                         "show what adding plates beyond the cap costs (under the cap the replicates, and "
                         "mAP's pairs, grow with the plates up to it)")
    ap.add_argument("--workdir", default=None)
    opts = ap.parse_args(argv)
    skip = set(filter(None, opts.skip.split(",")))
    steps = set(filter(None, opts.steps.split(",")))
    sizes = [int(s) for s in opts.sizes.split(",")]
    per_lib = opts.cells_per_library
    root = Path(opts.workdir or tempfile.mkdtemp(prefix="atlas_scale_"))
    rows: list[dict] = []
    ok = {}
    if "rna" not in skip:
        genes = [f"T{i:05d}" for i in range(opts.perturbations)] + \
            [f"G{i:05d}" for i in range(opts.genes - opts.perturbations)]
        reg = write_registry(root, opts.perturbations, opts.controls, genes)
        perts = pd.read_csv(reg, sep="\t")["perturbation_id"].tolist()
        controls = {p for p in perts if p.startswith("NTC")}
        n_full = max(s // per_lib for s in sizes)
        libs = [(f"L{k + 1:02d}", per_lib) for k in range(n_full)]
        if any(s % per_lib for s in sizes):
            libs.append(("Lhalf", per_lib // 2))
        t0 = time.perf_counter()
        for k, (lib, n) in enumerate(libs):
            cells = root / "results" / "rna" / lib / "cells.h5ad"
            if not cells.exists():
                write_library(cells, lib, n, genes, perts, controls, opts.genes_per_cell, seed=100 + k)
            if k == 0 or not (cells.parent / "summary.h5ad").exists():
                r = run_step("rna_summary", {"cells": [str(cells)], "registry": str(reg),
                                             "out": str(cells.parent)})
                if k == 0:
                    rows.append({"step": "rna_summary", "cells": n, "plates": 0, **r})
                    print(f"step=rna_summary cells={n} plates=0 wall_s={r['wall_s']:.1f} "
                          f"peak_rss_mb={r['peak_rss_mb']:.0f}", flush=True)
        splits, holdout = write_train_tables(root, reg, [lib for lib, _ in libs])
        print(f"# wrote {len(libs)} libraries in {time.perf_counter() - t0:.0f} s "
              f"({opts.genes_per_cell} detected genes per cell, {opts.genes} genes)", flush=True)
        for size in sizes:
            use = [lib for lib, _ in libs if lib != "Lhalf"][: size // per_lib]
            if size % per_lib:
                use.append("Lhalf")
            cells = [str(root / "results" / "rna" / lib / "cells.h5ad") for lib in use]
            out = root / f"agg_{size}"
            out.mkdir(exist_ok=True)
            a = {"cells": cells, "summaries": [str(Path(c).parent / "summary.h5ad") for c in cells],
                 "registry": str(reg), "out": str(out), "splits": str(splits), "holdout": str(holdout),
                 "n_hvg": opts.n_hvg}
            done = True
            for step in [st for st in RNA_STEPS if st in steps]:
                try:
                    r = run_step(step, a)
                except RuntimeError as e:
                    print(f"step={step} cells={size} plates=0 failed: {str(e)[-500:]}", flush=True)
                    done = False
                    break
                rows.append({"step": step, "cells": size, "plates": 0, **r})
                print(f"step={step} cells={size} plates=0 wall_s={r['wall_s']:.1f} "
                      f"peak_rss_mb={r['peak_rss_mb']:.0f}", flush=True)
            ok[size] = done
            for big in ("cells.h5ad", "export.h5ad", "cell_index.tsv"):   # GBs at 2M cells
                (out / big).unlink(missing_ok=True)
    if "paint" not in skip:
        sys.path.insert(0, str(HERE))
        import atlas_paint  # noqa: PLC0415  (the sibling benchmark module of the paint arm)

        feats = atlas_paint.feature_names(opts.features)
        paint_rows = atlas_paint.bench_paint_plate(root / "paint_plate", [50, 200], feats, whole=False)
        plates = [int(p) for p in opts.plates.split(",")]
        paint_rows += atlas_paint.bench_aggregates(root / "paint_screens", plates, feats, cells_per_well=3,
                                                   quality={"permutations": opts.permutations,
                                                            "max_replicates": opts.paint_max_replicates},
                                                   steps=("profiles", "quality_paint", "pair_paint"))
        for r in paint_rows:
            rows.append(r)
            print(f"step={r['step']} cells={r['cells']} plates={r['plates']} wall_s={r['wall_s']:.1f} "
                  f"peak_rss_mb={r['peak_rss_mb']:.0f}", flush=True)
    table = pd.DataFrame(rows)
    growth = []
    for step, grp in table.groupby("step"):
        scale = grp["plates"] if grp["plates"].nunique() > 1 else grp["cells"]
        if scale.nunique() > 1:
            g = grp.loc[scale.idxmax(), "peak_rss_mb"] / grp.loc[scale.idxmin(), "peak_rss_mb"]
            growth.append(g)
            print(f"# {step}: peak RSS x{g:.2f} from the smallest to the largest size; wall "
                  f"x{grp.loc[scale.idxmax(), 'wall_s'] / grp.loc[scale.idxmin(), 'wall_s']:.2f} for "
                  f"x{scale.max() / scale.min():.0f} the size")
    print(f"rss_growth_max={max(growth):.2f}" if growth else "rss_growth_max=nan")
    print(f"complete_2M={'yes' if ok.get(2_000_000) else 'no'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
