"""Training-export benchmark (a benchmark, not a test): two ratios measured in the same run.

1. Crops: ``pairedscreen.train.crops.export_crops`` time per site as a ratio of the features stage's time
   per site (``pairedscreen.paint.stages.run_paint_features``), both warm (a first call of each pays the
   imports and numba's compilation; ``crops_first_call_s`` reports the crops' first call), one thread
   each, the medians of ``--repeats`` alternating runs, with the config schema's crop defaults (dtype,
   chunking), on the same simulated plate: images from the simulator, masks = the simulator's true label
   images (so no Cellpose run is needed), the same image index and illumination functions. Aim <= 0.2.
   ``crop_over_features_cpu`` is the same ratio of process CPU time (all threads; ``_user``: user time
   only, without the kernel's work of taking new pages). The crops write
   ~1.5x a site's raw bytes, so their wall time also follows how fast the machine takes new writes:
   ``write_floor_over_features`` is the time to write files of the crops' sizes (random bytes) as the
   crops write them (``pairedscreen.io.write_through``: flushed and dropped from the page cache)
   in the same run, each after a features run as the crops are, over the features' time;
   ``buffered_floor_over_features`` the same with plain buffered writes. (On the VM this was measured on,
   memory freed for a few seconds goes back to the host and costs ~5-10 s/GB at the next touch, so
   buffered writes of 113 MB of new files took ~0.5-1 s there, against 0.05 s into just-freed pages;
   written through, each chunk's page-cache memory is freed and reused by the next.)
2. RNA export memory: ``pairedscreen.train.rna_export.export_rna`` on a ``--cells`` x ``--genes`` count matrix
   (``benchmarks/rna_scale.py``'s generator, written to an h5ad first): peak RSS above the baseline before
   the call, as a ratio of the CSR count matrix (data + indices + indptr). Aim <= 2.
3. Per-library RNA export (``libraries``): the export streamed from ``--libraries`` counts of per-library
   files of ``--lib-cells`` cells each, then the cell-eval subsample of it (``--eval-max-cells`` per
   perturbation), each in a fresh process; prints ``step=train_rna cells=... libraries=... wall_s=...
   peak_rss_mb=...`` (peak RSS with the imports; ``peak_over_base_mb`` above the RSS before the call) and
   the ratio of the peaks above base (aim ~1: the peak follows one library, not the screen).

    .venv/bin/python benchmarks/train_export.py                          # 200k cells, 24 sites of 540 px
    .venv/bin/python benchmarks/train_export.py --cells 50000 --sites 8 --image-size 360   # a loaded machine
    .venv/bin/python benchmarks/train_export.py --skip crops --skip rna   # per-library export only (~2 min)
"""

from __future__ import annotations

import os

for _v in ("NUMBA_NUM_THREADS", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_v] = "1"

import argparse  # noqa: E402
import json  # noqa: E402
import shutil  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))

from rna_scale import PeakRSS, _rss, build  # noqa: E402

from pairedscreen.config import schema_defaults  # noqa: E402

SCHEMA = schema_defaults()   # the pipeline's values: library functions take them as required keywords

CHANNELS = {"DNA": 1, "ER": 2, "RNA": 3, "AGP": 4, "Mito": 5}
PATTERN = "{well}_s{site}_w{channel}.tif"
TRAIN = {"seed": 0, "val_fraction": 0.2, "test_fraction": 0.2, "batch_holdout": "auto", "cell_type": "cell",
         "control_label": "non-targeting", "n_hvg": 2000}


def plate_fixture(root: Path, sites: int, image_size: int, cells_per_site: int, seed: int) -> dict:
    """A simulated plate with true masks written where the segmentation stage writes its masks."""
    from pairedscreen.paint import segment
    from pairedscreen.paint.stages import run_paint_illum, run_paint_index
    from pairedscreen.simulate import build_spec
    from pairedscreen.simulate.paint import plate_layout, simulate_paint
    from pairedscreen.simulate.registry import make_registry

    def spec_with(per_well: int):
        return build_spec("tiny", seed, {"paint.sites_per_well": per_well, "paint.image_size": image_size,
                                         "paint.cells_per_site": cells_per_site})

    one = spec_with(1)   # the tiny plate has few wells: more sites per well to reach `sites`
    per_well = -(-sites // len(plate_layout(make_registry(one), one, 0)))
    spec = spec_with(per_well)
    registry = make_registry(spec)
    simulate_paint(registry, spec, root)
    layout = plate_layout(registry, spec, 0)
    pairs = [(w, s) for w in layout["well"] for s in range(1, per_well + 1)][:sites]
    wells = sorted({w for w, _ in pairs})
    pm = root / "plate_map.tsv"
    layout[layout["well"].isin(wells)].to_csv(pm, sep="\t", index=False)
    res = root / "results"
    run_paint_index("P1", root / "raw" / "images" / "P1", pm, PATTERN, CHANNELS, "error", {},
                res / "index.parquet")
    run_paint_illum(res / "index.parquet", res / "illum", {"smoothing_sigma": 0})
    masks = res / "masks" / "c000"
    masks.mkdir(parents=True)
    import tifffile

    rows = []
    truth = root / "truth" / "paint" / "P1"
    for w, s in pairs:
        nuc = tifffile.imread(truth / f"{w}_s{s}_nuclei.tif").astype(np.uint32)
        cel = tifffile.imread(truth / f"{w}_s{s}_cells.tif").astype(np.uint32)
        nuc = np.where(cel > 0, nuc, 0).astype(np.uint32)
        segment.write_site_masks(masks, w, s, segment.SiteMasks(nuc, cel, np.where(nuc > 0, 0, cel)))
        rows.append({"well": w, "site": s, "n_cells": int(cel.max()), "status": "ok"})
    pd.DataFrame(rows).to_csv(masks / "summary.tsv", sep="\t", index=False)
    reg = registry.perturbations
    return {"res": res, "masks": masks, "wells": wells, "sites": len(pairs), "layout": layout,
            "registry": reg}


def write_floor(folder: Path, sizes: list[int], through: bool) -> float:
    """Seconds to write files of these sizes (random bytes, so nothing is shared) into a new folder, written
    through as the crops write them or (``through=False``) buffered: the machine's floor for writing the
    crops' bytes, measured next to them."""
    from pairedscreen.io import write_through

    data = np.random.default_rng(0).integers(0, 256, max(sizes), dtype=np.uint8).tobytes()
    folder.mkdir()
    t = time.perf_counter()
    for i, n in enumerate(sizes):
        if through:
            write_through(folder / str(i), data[:n])
        else:
            (folder / str(i)).write_bytes(data[:n])
    dt = time.perf_counter() - t
    shutil.rmtree(folder)
    return dt


def crop_ratio(args) -> dict:
    from pairedscreen.config import resolve_section
    from pairedscreen.paint.features import feature_params
    from pairedscreen.paint.stages import run_paint_features
    from pairedscreen.train.crops import export_crops, fit_crop_size
    from pairedscreen.train.splits import assign_splits

    with tempfile.TemporaryDirectory() as tmp:
        fx = plate_fixture(Path(tmp), args.sites, args.image_size, args.cells_per_site, args.seed)
        res = fx["res"]
        runs: dict[str, list[float]] = {k: [] for k in ("features", "crops", "features_cpu", "crops_cpu",
                                                        "features_user", "crops_user", "write_floor",
                                                        "buffered_floor")}

        def timed(stage: str, call, record: bool = True):
            """``call()``'s result and wall seconds; with ``record`` (not a warm-up) its wall, CPU (user +
            system, all threads) and user seconds are appended to ``runs`` under ``stage``."""
            t, c = time.perf_counter(), os.times()
            out = call()
            e = os.times()
            wall = time.perf_counter() - t
            if record:
                for kind, v in (("", wall), ("_cpu", e.user + e.system - c.user - c.system),
                                ("_user", e.user - c.user)):
                    runs[stage + kind].append(v)
            return out, wall

        def features(name: str, record: bool = True):
            return timed("features", lambda: run_paint_features(
                res / "index.parquet", res / "illum", fx["masks"], "P1", feature_params(),
                res / f"{name}.parquet"), record)

        # warm: numba compiles the feature kernels on first use (a workflow job pays it once per chunk)
        feats, _ = features("features_warm", record=False)
        lay = fx["layout"].set_index("well")
        reg = fx["registry"].set_index("perturbation_id")
        feats["Metadata_Perturbation"] = lay.loc[feats["Metadata_Well"], "perturbation_id"].to_numpy()
        feats["Metadata_IsControl"] = reg.loc[feats["Metadata_Perturbation"], "is_control"].to_numpy(bool)
        feats["Metadata_Batch"] = "B1"
        feats.to_parquet(res / "cells.parquet", index=False)
        size = fit_crop_size(feats, factor=SCHEMA["train.crops.size_factor"],
                             quantile=SCHEMA["train.crops.size_quantile"])
        splits = assign_splits(fx["registry"], seed=0, val_fraction=0.2, test_fraction=0.2)
        hold = pd.DataFrame({"arm": ["paint"], "unit": ["P1"], "batch": ["B1"], "batch_split": ["train"]})
        chosen = {k: v for k, v in (("dtype", args.crop_dtype), ("chunk_cells", args.chunk_cells)) if v}
        params = {**resolve_section("train.crops", chosen), "val_fraction": 0.2, "test_fraction": 0.2}

        def crops(name: str, record: bool = True):
            return timed("crops", lambda: export_crops(
                res / "cells.parquet", res / "index.parquet", res / "illum", [fx["masks"]], splits, hold,
                "P1", size, params, res / f"{name}.zarr", res / f"{name}.parquet"), record)

        # warm, as the features: the first call pays the imports (zarr, the paint stages), once per job;
        # then both timed `repeats` times, alternating, and the medians compared (the crops are bound by
        # writing their bytes, whose speed varies from second to second on a shared machine)
        _, t_cold = crops("crops_warm", record=False)
        for r in range(args.repeats):
            # features, crops, features, the write floor: the crops and the floor each come after a
            # features run, so both write into memory in the same state (see the module docstring)
            features(f"features_{r}")
            obs, _ = crops(f"crops_{r}")
            sizes = [f.stat().st_size for f in (res / f"crops_{r}.zarr").rglob("*") if f.is_file()]
            stored = sum(sizes)
            shutil.rmtree(res / f"crops_{r}.zarr")
            features(f"features_{r}b")
            runs["write_floor"].append(write_floor(res / f"floor_{r}", sizes, through=True))
            features(f"features_{r}c", record=False)
            runs["buffered_floor"].append(write_floor(res / f"floor_{r}", sizes, through=False))
        med = {k: float(np.median(v)) for k, v in runs.items()}
    n = fx["sites"]
    return {"sites": n, "image_size": args.image_size, "cells": int(len(obs)), "crop_size": size,
            "dtype": params["dtype"], "chunk_cells": params["chunk_cells"],
            "crops_stored_mb": round(stored / 2**20, 1),
            "features_s_per_site": round(med["features"] / n, 4),
            "crops_s_per_site": round(med["crops"] / n, 4),
            "crop_over_features": round(med["crops"] / med["features"], 3),
            "crop_over_features_cpu": round(med["crops_cpu"] / med["features_cpu"], 3),
            "crop_over_features_user": round(med["crops_user"] / med["features_user"], 3),
            "write_floor_over_features": round(med["write_floor"] / med["features"], 3),
            "buffered_floor_over_features": round(med["buffered_floor"] / med["features"], 3),
            "crops_first_call_s": round(t_cold, 3),
            **{f"{k}_s": [round(t, 3) for t in v] for k, v in runs.items()}}


def rna_memory(args) -> dict:
    from pairedscreen.train.rna_export import export_rna
    from pairedscreen.train.splits import assign_splits

    cells, _, sheet, registry = build(args.cells, args.genes, args.perturbations, 2, args.umis, args.seed)
    pert_of_guide = sheet["perturbation_id"].to_numpy()
    rng = np.random.default_rng(args.seed)
    cells.obs["perturbation"] = pert_of_guide[rng.integers(0, len(sheet), cells.n_obs)]
    cells.obs["guide_ids"] = cells.obs["perturbation"] + "-g0"
    cells.obs["pass_qc"] = True
    cells.obs["predicted_doublet"] = False
    cells.obs["barcode"] = cells.obs_names
    x = cells.X
    matrix_bytes = x.data.nbytes + x.indices.nbytes + x.indptr.nbytes
    registry["target_gene"] = registry["target_gene"].fillna("")
    splits = assign_splits(registry, seed=0, val_fraction=0.2, test_fraction=0.2)
    hold = pd.DataFrame({"arm": ["rna"], "unit": ["L1"], "batch": ["B1"], "batch_split": ["train"]})
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "cells.h5ad"
        cells.write_h5ad(src)
        del cells, x
        base = _rss()
        t = time.perf_counter()
        with PeakRSS() as pk:
            out = export_rna(src, registry, splits, hold, {**TRAIN, "n_hvg": args.n_hvg},
                             Path(tmp) / "cell.h5ad")
        dt = time.perf_counter() - t
        hvg_bytes = out.n_obs * int(out.var["highly_variable"].sum()) * 4
    return {"cells": args.cells, "genes": args.genes, "n_hvg": args.n_hvg,
            "matrix_mb": round(matrix_bytes / 2**20, 1),
            "x_hvg_mb": round(hvg_bytes / 2**20, 1), "export_s": round(dt, 1),
            "peak_over_matrix": round((pk.peak - base) / matrix_bytes, 2)}


def _vm_hwm() -> int:
    """This process's peak RSS (bytes): ``VmHWM`` of /proc/self/status. Not ``ru_maxrss``: that survives
    the fork + exec that starts a spawned child, so it would report the parent's size."""
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def _child_stage(conn, stage: str, kwargs: dict) -> None:
    """Run one stage in a fresh process (spawned: no memory of the parent's) and send back its wall time,
    the process's peak RSS (imports included) and its RSS before the call."""
    import anndata.io  # noqa: F401  (imports paid before the baseline)
    import h5py  # noqa: F401

    from pairedscreen.train import stages  # noqa: F401
    from pairedscreen.train.eval_cells import write_eval_cells
    from pairedscreen.train.rna_export import export_rna

    fn = {"train_rna": export_rna, "train_eval_cells": write_eval_cells}[stage]
    base = _rss()
    t = time.perf_counter()
    fn(**kwargs)
    wall = time.perf_counter() - t
    conn.send({"wall_s": wall, "peak": _vm_hwm(), "base": base})
    conn.close()


def _run_child(stage: str, kwargs: dict) -> dict:
    import multiprocessing as mp

    ctx = mp.get_context("spawn")
    parent, child = ctx.Pipe(duplex=False)
    p = ctx.Process(target=_child_stage, args=(child, stage, kwargs))
    p.start()
    out = parent.recv()
    p.join()
    if p.exitcode:
        raise RuntimeError(f"{stage} child failed with exit code {p.exitcode}")
    return out


def _library_file(folder: Path, i: int, args) -> tuple[Path, int, int, pd.DataFrame]:
    """Library ``L{i}`` as rna_cells writes it (gzip h5ad, counts CSR, guide/QC obs); returns its path, its
    usable cells' stored values and count, and the registry."""
    cells, _, sheet, registry = build(args.lib_cells, args.lib_genes, args.perturbations, 2, args.umis,
                                      args.seed + i)
    rng = np.random.default_rng(args.seed + 1000 + i)
    pert = sheet["perturbation_id"].to_numpy()[rng.integers(0, len(sheet), cells.n_obs)]
    lib = f"L{i}"
    cells.obs_names = [f"{lib}_BC{k:08d}" for k in range(cells.n_obs)]
    cells.obs = cells.obs.assign(library=lib, batch=f"B{i % 2}", barcode=[f"BC{k:08d}" for k in
                                                                          range(cells.n_obs)],
                                 perturbation=pert, guide_ids=[f"{p}-g0" for p in pert],
                                 pass_qc=rng.random(cells.n_obs) > 0.1,
                                 predicted_doublet=rng.random(cells.n_obs) < 0.05)
    usable = (cells.obs["pass_qc"] & ~cells.obs["predicted_doublet"]).to_numpy()
    x = cells.X[usable]
    path = folder / lib / "cells.h5ad"
    path.parent.mkdir(parents=True)
    cells.write_h5ad(path, compression="gzip")
    registry["target_gene"] = registry["target_gene"].fillna("")
    return path, x.data.nbytes + x.indices.nbytes + x.indptr.nbytes, int(usable.sum()), registry


def rna_libraries(args) -> list[dict]:
    """The cell-load export streamed from per-library files at ``--libraries`` counts of libraries of
    ``--lib-cells`` cells each (so the screen grows with the count): wall time and peak RSS of each export,
    and of the cell-eval subsample of it, each stage in a fresh process. The peak should follow one
    library's counts (``library_counts_mb``), not the screen's (``screen_counts_mb``, what an export holding
    the whole matrix would hold)."""
    from pairedscreen.train.splits import assign_splits, batch_holdout

    out = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        libs = [_library_file(tmp / "src", i, args) for i in range(max(args.libraries))]
        registry = libs[0][3]
        splits = assign_splits(registry, seed=0, val_fraction=0.2, test_fraction=0.2)
        for n_lib in args.libraries:
            files = [p for p, *_ in libs[:n_lib]]
            sheet = pd.DataFrame({"library_id": [f"L{i}" for i in range(n_lib)],
                                  "batch": [f"B{i % 2}" for i in range(n_lib)]})
            hold = batch_holdout(sheet, pd.DataFrame({"plate_id": [], "batch": []}), "auto")
            h5ad = tmp / f"export_{n_lib}" / "cell.h5ad"
            params = {**TRAIN, "n_hvg": args.n_hvg}
            cells = sum(n for _, _, n, _ in libs[:n_lib])
            screen_mb = sum(b for _, b, _, _ in libs[:n_lib]) / 2**20
            lib_mb = max(b for _, b, _, _ in libs[:n_lib]) / 2**20
            for stage, kwargs in (
                    ("train_rna", {"rna_cells": files, "registry": registry, "splits": splits,
                                   "holdout": hold, "params": params, "out": h5ad}),
                    ("train_eval_cells", {"export": h5ad, "max_cells": args.eval_max_cells, "seed": 0,
                                          "out": tmp / f"export_{n_lib}" / "eval_cells.h5ad"})):
                r = _run_child(stage, kwargs)
                row = {"step": stage, "cells": cells, "libraries": n_lib, "wall_s": round(r["wall_s"], 1),
                       "peak_rss_mb": round(r["peak"] / 2**20), "peak_over_base_mb":
                       round((r["peak"] - r["base"]) / 2**20), "screen_counts_mb": round(screen_mb),
                       "library_counts_mb": round(lib_mb)}
                print(" ".join(f"{k}={v}" for k, v in row.items()), flush=True)
                out.append(row)
    rna = [r for r in out if r["step"] == "train_rna"]
    print(f"train_rna peak_over_base ratio ({rna[-1]['libraries']} vs {rna[0]['libraries']} libraries, "
          f"{rna[-1]['cells'] / rna[0]['cells']:.1f}x the cells): "
          f"{rna[-1]['peak_over_base_mb'] / max(rna[0]['peak_over_base_mb'], 1):.2f}", flush=True)
    return out


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sites", type=int, default=24)
    ap.add_argument("--image-size", type=int, default=540)
    ap.add_argument("--cells-per-site", type=int, default=120)
    ap.add_argument("--cells", type=int, default=200000)
    ap.add_argument("--genes", type=int, default=2000)
    ap.add_argument("--n-hvg", type=int, default=500)
    ap.add_argument("--perturbations", type=int, default=200)
    ap.add_argument("--umis", type=int, default=3000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--crop-dtype", choices=["float16", "float32"], default=None,
                    help="the crops' dtype (default: the config schema's train.crops.dtype)")
    ap.add_argument("--repeats", type=int, default=3, help="timed runs of each stage (medians compared)")
    ap.add_argument("--chunk-cells", type=int, default=None,
                    help="cells per zarr chunk (default: the config schema's train.crops.chunk_cells)")
    ap.add_argument("--libraries", type=int, nargs="+", default=[2, 6],
                    help="libraries counts of the per-library RNA export measurement (libraries section)")
    ap.add_argument("--lib-cells", type=int, default=10000, help="cells per library (libraries section)")
    ap.add_argument("--lib-genes", type=int, default=6000, help="genes (libraries section)")
    ap.add_argument("--eval-max-cells", type=int, default=40,
                    help="cells per perturbation of the cell-eval subsample (libraries section; below the "
                         "cells per perturbation of the smaller screen, so the bound binds at both sizes)")
    ap.add_argument("--skip", choices=["crops", "rna", "libraries"], action="append", default=[])
    args = ap.parse_args(argv)
    report: dict = {}
    if "crops" not in args.skip:
        report["crops"] = crop_ratio(args)
        print(json.dumps({"crops": report["crops"]}), flush=True)
    if "rna" not in args.skip:
        report["rna_export"] = rna_memory(args)
        print(json.dumps({"rna_export": report["rna_export"]}), flush=True)
    if "libraries" not in args.skip:
        report["libraries"] = rna_libraries(args)
    return report


if __name__ == "__main__":
    main()
