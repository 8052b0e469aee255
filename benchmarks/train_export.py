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

    .venv/bin/python benchmarks/train_export.py                          # 200k cells, 24 sites of 540 px
    .venv/bin/python benchmarks/train_export.py --cells 50000 --sites 8 --image-size 360   # a loaded machine
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
    from pairedscreen.paint.features import DEFAULT_PARAMS
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
                res / "index.parquet", res / "illum", fx["masks"], "P1", DEFAULT_PARAMS,
                res / f"{name}.parquet"), record)

        # warm: numba compiles the feature kernels on first use (a workflow job pays it once per chunk)
        feats, _ = features("features_warm", record=False)
        lay = fx["layout"].set_index("well")
        reg = fx["registry"].set_index("perturbation_id")
        feats["Metadata_Perturbation"] = lay.loc[feats["Metadata_Well"], "perturbation_id"].to_numpy()
        feats["Metadata_IsControl"] = reg.loc[feats["Metadata_Perturbation"], "is_control"].to_numpy(bool)
        feats["Metadata_Batch"] = "B1"
        feats.to_parquet(res / "cells.parquet", index=False)
        size = fit_crop_size(feats)
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
    ap.add_argument("--skip", choices=["crops", "rna"], action="append", default=[])
    args = ap.parse_args(argv)
    report: dict = {}
    if "crops" not in args.skip:
        report["crops"] = crop_ratio(args)
        print(json.dumps({"crops": report["crops"]}), flush=True)
    if "rna" not in args.skip:
        report["rna_export"] = rna_memory(args)
        print(json.dumps({"rna_export": report["rna_export"]}), flush=True)
    return report


if __name__ == "__main__":
    main()
