"""Segmentation throughput on 1080x1080 5-channel sites: batched vs one site per Cellpose call.

Sites come from the simulator (``paint.image_size`` 1080, ~500 cells per site, illumination-corrected
with the plate's function); both compartments (nuclei + cells) with the shipped models and the project
config's segmentation settings. Model loading and a warm-up call are excluded from the timings. Runs on
CPU, and on the GPU too when torch sees one. Usage::

    .venv/bin/python benchmarks/segmentation.py [--quick] [--sites 8] [--batch-size 8] [--size 1080]

``--quick`` runs 2 sites of 540x540 instead (the printed header says so; multiply s/site by ~4 for a
1080x1080 site). On CPU, batching does not speed Cellpose up (it mostly matters on a GPU, where the
tiles of several sites fill one forward pass).

Last lines: ``sites_per_s_batched: <x>`` and ``sites_per_s_single: <y>`` (the fastest device).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np

from pairedscreen.config import load_config, schema_defaults
from pairedscreen.io import repo_root

SCHEMA = schema_defaults()   # the pipeline's values: library functions take them as required keywords


def _sites(n: int, size: int, seed: int) -> tuple[list[np.ndarray], list[str], np.ndarray]:
    from pairedscreen.paint.illumination import compute_plate_illumination
    from pairedscreen.paint.ingest import build_image_index, load_site, usable_sites
    from pairedscreen.simulate import simulate

    tmp = Path(tempfile.mkdtemp(prefix="bench_seg_"))
    cells = int(round(12 * (size / 160) ** 2 * 0.8))
    simulate(tmp, preset="tiny", seed=seed,
             overrides={"paint.image_size": size, "paint.cells_per_site": cells, "rna.cells_per_library": 50,
                        "rna.empty_droplets_per_library": 50})
    cfg = load_config(tmp / "config" / "config.yaml")
    channels = cfg["paint"]["channels"]
    idx = build_image_index("P1", tmp / "raw" / "images" / "P1", cfg["paint"]["image_pattern"], channels,
                            on_bad_image=SCHEMA["paint.on_bad_image"])
    illum = np.stack(list(compute_plate_illumination(idx,
                                                     smoothing_sigma=SCHEMA["paint.illumination.smoothing_sigma"]).values()))
    sites = [load_site(idx, w, s) for w, s in usable_sites(idx)[:n]]
    return sites, list(channels), illum


def run(sites: list[np.ndarray], names: list[str], illum: np.ndarray, cfg: dict, batch: int) -> float:
    from pairedscreen.paint.segment import segment_sites

    t = time.perf_counter()
    for start in range(0, len(sites), batch):  # how segment_chunk feeds the models
        segment_sites(sites[start:start + batch], names, {**cfg, "batch_size": batch}, illum=illum)
    return time.perf_counter() - t


def main() -> None:
    import torch

    from pairedscreen.paint.segment import segment_sites

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true",
                    help="2 sites of 540x540 (a quarter of a site's pixels; a couple of minutes on 2 cores)")
    ap.add_argument("--sites", type=int, default=8)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--size", type=int, default=1080)
    args = ap.parse_args()
    n = 2 if args.quick else args.sites
    if args.quick:
        args.size = 540
    batch = min(args.batch_size, n)
    os.chdir(repo_root())  # model paths in config/config.yaml are relative to the checkout
    seg_cfg = load_config(repo_root() / "config" / "config.yaml")["paint"]["segmentation"]
    sites, names, illum = _sites(n, args.size, seed=5)
    print(f"{len(sites)} sites of {sites[0].shape} ({sites[0].dtype}); "
          f"torch threads {torch.get_num_threads()}")
    devices = ["false"] + (["true"] if torch.cuda.is_available() else [])
    best: dict[str, float] = {}
    for dev in devices:
        cfg = {**seg_cfg, "gpu": dev}
        # load the models, compile numba kernels, warm up
        segment_sites(sites[:1], names, {**cfg, "batch_size": 1}, illum=illum)
        t_batched = run(sites, names, illum, cfg, batch)
        t_single = run(sites, names, illum, cfg, 1)
        label = "cuda" if dev == "true" else "cpu"
        for mode, t in (("batched", t_batched), ("single", t_single)):
            print(f"{label} {mode:8s} ({batch if mode == 'batched' else 1} sites/call): "
                  f"{len(sites) / t:.3f} sites/s, {t / len(sites):.2f} s/site")
        best["batched"] = max(best.get("batched", 0.0), len(sites) / t_batched)
        best["single"] = max(best.get("single", 0.0), len(sites) / t_single)
    print(f"sites_per_s_batched: {best['batched']:.4f}")
    print(f"sites_per_s_single: {best['single']:.4f}")


if __name__ == "__main__":
    main()
