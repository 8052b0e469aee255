"""Training-export benchmark (a benchmark, not a test): two ratios measured in the same run.

1. Crops: ``pairedscreen.train.crops.export_crops`` time per site as a ratio of the features stage's time
   per site (``pairedscreen.paint.stages.run_paint_features``, numba kernels compiled in a warm-up call
   first) on the same simulated plate: images from the simulator, masks = the simulator's true label
   images (so no Cellpose run is needed), the same image index and illumination functions. Aim <= 0.2.
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
CROPS = {"mask": True, "chunk_cells": 256, "val_fraction": 0.2, "test_fraction": 0.2}


def plate_fixture(root: Path, sites: int, image_size: int, cells_per_site: int, seed: int) -> dict:
    """A simulated plate with true masks written where the segmentation stage writes its masks."""
    from pairedscreen.paint import segment
    from pairedscreen.paint.stages import run_paint_illum, run_paint_index
    from pairedscreen.simulate import build_spec
    from pairedscreen.simulate.paint import plate_layout, simulate_paint
    from pairedscreen.simulate.registry import make_registry

    spec = build_spec("tiny", seed, {"paint.sites_per_well": 1, "paint.image_size": image_size,
                                     "paint.cells_per_site": cells_per_site})
    registry = make_registry(spec)
    simulate_paint(registry, spec, root)
    layout = plate_layout(registry, spec, 0)
    wells = list(layout["well"])[:sites]
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
    for w in wells:
        nuc = tifffile.imread(root / "truth" / "paint" / "P1" / f"{w}_s1_nuclei.tif").astype(np.uint32)
        cel = tifffile.imread(root / "truth" / "paint" / "P1" / f"{w}_s1_cells.tif").astype(np.uint32)
        nuc = np.where(cel > 0, nuc, 0).astype(np.uint32)
        segment.write_site_masks(masks, w, 1, segment.SiteMasks(nuc, cel, np.where(nuc > 0, 0, cel)))
        rows.append({"well": w, "site": 1, "n_cells": int(cel.max()), "status": "ok"})
    pd.DataFrame(rows).to_csv(masks / "summary.tsv", sep="\t", index=False)
    reg = registry.perturbations
    return {"res": res, "masks": masks, "wells": wells, "layout": layout, "registry": reg}


def crop_ratio(args) -> dict:
    from pairedscreen.paint.features import DEFAULT_PARAMS
    from pairedscreen.paint.stages import run_paint_features
    from pairedscreen.train.crops import export_crops, fit_crop_size
    from pairedscreen.train.splits import assign_splits

    with tempfile.TemporaryDirectory() as tmp:
        fx = plate_fixture(Path(tmp), args.sites, args.image_size, args.cells_per_site, args.seed)
        res = fx["res"]
        # warm: numba compiles the feature kernels on first use (a workflow job pays it once per chunk)
        run_paint_features(res / "index.parquet", res / "illum", fx["masks"], "P1", DEFAULT_PARAMS,
                       res / "warm.parquet")
        t = time.perf_counter()
        feats = run_paint_features(res / "index.parquet", res / "illum", fx["masks"], "P1", DEFAULT_PARAMS,
                               res / "features.parquet")
        t_feat = time.perf_counter() - t
        lay = fx["layout"].set_index("well")
        reg = fx["registry"].set_index("perturbation_id")
        feats["Metadata_Perturbation"] = lay.loc[feats["Metadata_Well"], "perturbation_id"].to_numpy()
        feats["Metadata_IsControl"] = reg.loc[feats["Metadata_Perturbation"], "is_control"].to_numpy(bool)
        feats["Metadata_Batch"] = "B1"
        feats.to_parquet(res / "cells.parquet", index=False)
        size = fit_crop_size(feats)
        splits = assign_splits(fx["registry"], seed=0, val_fraction=0.2, test_fraction=0.2)
        hold = pd.DataFrame({"arm": ["paint"], "unit": ["P1"], "batch": ["B1"], "batch_split": ["train"]})
        t = time.perf_counter()
        obs = export_crops(res / "cells.parquet", res / "index.parquet", res / "illum", [fx["masks"]], splits,
                           hold, "P1", size, CROPS, res / "crops.zarr", res / "obs.parquet")
        t_crop = time.perf_counter() - t
    n = len(fx["wells"])
    return {"sites": n, "image_size": args.image_size, "cells": int(len(obs)), "crop_size": size,
            "features_s_per_site": round(t_feat / n, 4), "crops_s_per_site": round(t_crop / n, 4),
            "crop_over_features": round(t_crop / t_feat, 3)}


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
