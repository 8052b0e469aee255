"""Atlas-scale memory of the paint arm: ``paint_plate`` per plate at growing cells per plate, and the plate
aggregates (``profiles``, the paint halves of ``quality`` and ``pair``) at growing numbers of plates.

Synthetic per-plate outputs in the workflow's own schemas and paths (:mod:`pairedscreen.paths`): per-chunk
features files (``results/paint/{plate}/features/{chunk}.parquet``, wells grouped as
:func:`pairedscreen.paths.chunk_wells` groups them) whose feature columns are the names our features stage
produces (:func:`feature_names` measures one small synthetic site with
:func:`pairedscreen.paint.features.measure_site` and the schema's ``paint.features`` defaults), the image
index and the masks' ``summary.tsv`` of every chunk, the plate map and the perturbation registry.
``cells.parquet`` and ``wells.parquet`` are then made by ``run_paint_plate`` itself.

Each measured step runs in a fresh child process (``python atlas_paint.py --child STEP ...``) that calls the
stage function exactly as its ``workflow/scripts/*.py`` adapter does and reports its own peak RSS
(``VmHWM``); the parent prints one line per step::

    step=paint_plate plates=1 cells=19200 wall_s=... peak_rss_mb=...

``paint_plate_whole`` is the reference: ``run_paint_plate`` with the whole-plate table instead of the stream
(every chunk's features in one table, :func:`~pairedscreen.paint.aggregate.assemble_cells` +
:func:`~pairedscreen.paint.aggregate.plate_wells`), as it ran before it streamed.

    .venv/bin/python benchmarks/atlas_paint.py                       # default: a few minutes on 2 cores
    .venv/bin/python benchmarks/atlas_paint.py --plate-cells-per-well 100 400 1000 --features 1900
    .venv/bin/python benchmarks/atlas_paint.py --plates 10 40 --quality              # + quality, pair
    .venv/bin/python benchmarks/atlas_paint.py --plates 10 --quality --layout unique  # sub-well replicates

The lead's ``benchmarks/atlas_scale.py`` imports :func:`feature_names`, :func:`write_registry`,
:func:`write_plate_inputs`, :func:`write_screen`, :func:`measure` and :func:`bench_paint_plate` /
:func:`bench_aggregates`.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pairedscreen.paths import chunk_wells, path

WELLS_384 = [f"{chr(65 + r)}{c + 1:02d}" for r in range(16) for c in range(24)]
CHANNELS = ("DNA", "ER", "RNA", "AGP", "Mito")
N_CONTROL_IDS = 4
TREATED_PER_PLATE = 300          # the other 84 wells of a 384-well plate are negative controls


# ------------------------------------------------------------------------------------ feature names
@functools.lru_cache(maxsize=4)
def _measured_names(texture_scales: tuple[int, ...]) -> tuple[str, ...]:
    """Feature columns of our features stage (``paint.features`` schema defaults, ``texture_scales``):
    two disc cells with nuclei on a 64 x 64 five-channel site, measured by ``measure_site`` (the first call
    compiles the numba kernels: ~40 s)."""
    from pairedscreen.config import resolve_section
    from pairedscreen.paint.features import measure_site

    params = resolve_section("paint.features", {"texture_scales": list(texture_scales)})
    yy, xx = np.mgrid[:64, :64]
    cells = np.zeros((64, 64), np.int32)
    nuclei = np.zeros((64, 64), np.int32)
    for k, (cy, cx) in enumerate(((20, 20), (44, 42)), start=1):
        r2 = (yy - cy) ** 2 + (xx - cx) ** 2
        cells[r2 < 144] = k
        nuclei[r2 < 36] = k
    images = np.random.default_rng(0).random((len(CHANNELS), 64, 64)).astype(np.float32)
    df = measure_site(images, list(CHANNELS), nuclei, cells, np.where(nuclei > 0, 0, cells), params)
    return tuple(c for c in df.columns if c != "object_id")


def feature_names(n: int, texture_scales: Sequence[int] = (3,)) -> list[str]:
    """``n`` of the feature columns our features stage writes (spread evenly over all of them, table
    order kept); more than one site measures needs more ``texture_scales`` (JUMP: 3 5 10)."""
    names = _measured_names(tuple(int(s) for s in texture_scales))
    if n > len(names):
        raise ValueError(f"{n} features asked, the features stage measures {len(names)} with texture scales "
                         f"{list(texture_scales)}; add scales (e.g. --texture-scales 3 5 10)")
    keep = np.unique(np.linspace(0, len(names) - 1, n).round().astype(int))
    return [names[i] for i in keep]


# ------------------------------------------------------------------------------------- synthetic data
def registry_ids(n_plates: int, layout: str) -> tuple[list[str], list[str]]:
    """(treated ids, control ids). ``replicated``: the same 300 treatments on every plate (plate replicates);
    ``unique``: 300 new treatments per plate (one well each: quality uses sub-well replicates)."""
    n_treated = TREATED_PER_PLATE * (n_plates if layout == "unique" else 1)
    return [f"TGT{i:06d}" for i in range(n_treated)], [f"NTC_{i + 1}" for i in range(N_CONTROL_IDS)]


def write_registry(root: Path, n_plates: int, layout: str = "replicated") -> Path:
    """``config/perturbations.tsv`` (the sheet's columns) for :func:`registry_ids`."""
    treated, ctrl = registry_ids(n_plates, layout)
    reg = pd.DataFrame({"perturbation_id": treated + ctrl,
                        "perturbation_type": ["CRISPRi"] * len(treated) + ["control"] * len(ctrl),
                        "target_gene": [t.replace("TGT", "G") for t in treated] + [""] * len(ctrl),
                        "is_control": [False] * len(treated) + [True] * len(ctrl),
                        "control_type": [""] * len(treated) + ["non-targeting"] * len(ctrl)})
    out = root / "config" / "perturbations.tsv"
    out.parent.mkdir(parents=True, exist_ok=True)
    reg.to_csv(out, sep="\t", index=False)
    return out


def plate_layout(plate_no: int, layout: str, seed: int) -> pd.DataFrame:
    """A 384-well plate map (well, perturbation_id, replicate): treated and control wells scattered."""
    treated, ctrl = registry_ids(plate_no + 1, layout)
    own = treated[-TREATED_PER_PLATE:] if layout == "unique" else treated
    ids = list(own) + [ctrl[i % len(ctrl)] for i in range(len(WELLS_384) - len(own))]
    perm = np.random.default_rng(seed + plate_no).permutation(len(ids))
    return pd.DataFrame({"well": WELLS_384, "perturbation_id": [ids[i] for i in perm],
                         "replicate": plate_no + 1})


def write_plate_inputs(root: Path, plate: str, plate_map: pd.DataFrame, *, cells_per_well: int,
                       features: Sequence[str], sites: int = 9, wells_per_job: int = 16,
                       seed: int = 0) -> dict[str, Any]:
    """What ``paint_plate`` reads for one plate, at the workflow's paths under ``root``: the plate map
    (``config/plate_maps/{plate}.tsv``), ``image_index.parquet`` (every site and channel ok), per chunk
    ``masks/{chunk}/summary.tsv`` and ``features/{chunk}.parquet`` (float64 features; per well
    ``cells_per_well`` cells over ``sites`` sites; treated wells shifted on a few features). Written a chunk
    at a time. Returns the ``run_paint_plate`` arguments."""
    rng = np.random.default_rng(seed)
    pm_path = root / "config" / "plate_maps" / f"{plate}.tsv"
    pm_path.parent.mkdir(parents=True, exist_ok=True)
    plate_map.to_csv(pm_path, sep="\t", index=False)
    effect = {p: rng.normal(0, 1.5, 8) for p in plate_map["perturbation_id"].unique()
              if p.startswith("TGT") and int(p[3:]) % 5 == 0}   # every 5th treatment has a phenotype
    index = pd.DataFrame([{"plate": plate, "well": w, "site": s, "channel": ch, "channel_index": i + 1,
                           "path": f"raw/images/{plate}/{w}_s{s}_w{i + 1}.tif", "height": 1080, "width": 1080,
                           "dtype": "uint16", "sha256": "0" * 64, "status": "ok", "reason": "",
                           "focus_plls": -1.5, "saturation_pct": 0.0, "p01": 120.0, "p50": 800.0,
                           "p99": 9000.0, "noise_sd": 30.0, "signal_to_noise": 25.0, "qc_flag": False,
                           "qc_reason": ""}
                          for w in plate_map["well"] for s in range(1, sites + 1)
                          for i, ch in enumerate(CHANNELS)])
    idx_path = root / path("image_index", plate=plate)
    idx_path.parent.mkdir(parents=True, exist_ok=True)
    index.to_parquet(idx_path, index=False)
    pert = dict(zip(plate_map["well"], plate_map["perturbation_id"], strict=True))
    feats, masks = [], []
    for chunk, wells in chunk_wells(list(plate_map["well"]), wells_per_job).items():
        n_site = np.full((len(wells), sites), cells_per_well // sites)
        n_site[:, : cells_per_well % sites] += 1
        well_col = np.repeat(wells, n_site.sum(axis=1))
        site_col = np.concatenate([np.repeat(np.arange(1, sites + 1), n) for n in n_site])
        obj_col = np.concatenate([np.arange(1, k + 1) for n in n_site for k in n])
        x = rng.normal(size=(len(well_col), len(features)))
        for w in wells:
            if pert[w] in effect:
                x[well_col == w, : 8] += effect[pert[w]]
        table = pd.concat([pd.DataFrame({"Metadata_Plate": plate, "Metadata_Well": well_col,
                                         "Metadata_Site": site_col.astype(np.int64),
                                         "Metadata_ObjectNumber": obj_col.astype(np.int64)}),
                           pd.DataFrame(x, columns=list(features))], axis=1)
        f = root / path("features", plate=plate, chunk=chunk)
        f.parent.mkdir(parents=True, exist_ok=True)
        table.to_parquet(f, index=False)
        del table, x
        m = root / path("masks", plate=plate, chunk=chunk)
        m.mkdir(parents=True, exist_ok=True)
        pd.DataFrame({"well": np.repeat(wells, sites), "site": np.tile(np.arange(1, sites + 1), len(wells)),
                      "n_cells": n_site.ravel(), "n_nuclei_detected": n_site.ravel(), "n_nuclei_dropped": 0,
                      "n_cells_without_nucleus": 0, "status": "ok"}).to_csv(m / "summary.tsv", sep="\t",
                                                                             index=False)
        feats.append(str(f))
        masks.append(str(m))
    return {"features": feats, "masks": masks, "index": str(idx_path), "plate_map": str(pm_path),
            "plate": plate, "batch": "B1", "aggregate": "median",
            "cells_out": str(root / path("paint_cells", plate=plate)),
            "wells_out": str(root / path("paint_wells", plate=plate))}


def write_screen(root: Path, n_plates: int, *, cells_per_well: int, features: Sequence[str],
                 layout: str = "replicated", sites: int = 9, wells_per_job: int = 16, seed: int = 0,
                 keep_chunks: bool = False) -> dict[str, Any]:
    """``n_plates`` plates' ``cells.parquet`` + ``wells.parquet`` made by ``run_paint_plate`` from
    :func:`write_plate_inputs` (features chunks removed afterwards unless ``keep_chunks``), plus the
    registry. Returns the aggregate steps' inputs."""
    from pairedscreen.paint.stages import run_paint_plate

    registry = write_registry(root, n_plates, layout)
    wells, cells = [], []
    for i in range(n_plates):
        plate = f"P{i + 1:03d}"
        args = write_plate_inputs(root, plate, plate_layout(i, layout, seed), cells_per_well=cells_per_well,
                                  features=features, sites=sites, wells_per_job=wells_per_job, seed=seed + i)
        run_paint_plate(**args)
        if not keep_chunks:
            shutil.rmtree(root / "results" / "paint" / plate / "features")
        wells.append(args["wells_out"])
        cells.append(args["cells_out"])
    return {"root": str(root), "registry": str(registry), "wells": wells, "paint_cells": cells}


# ---------------------------------------------------------------------------------- measured children
def _vm(key: str) -> float:
    """``VmHWM`` (peak) or ``VmRSS`` of this process in MiB, from /proc: the peak belongs to the address
    space made at exec, so unlike ``ru_maxrss`` it does not start at the forking parent's size."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) / 1024
    raise KeyError(key)


def _step(step: str, spec: dict[str, Any]) -> Any:
    """The call of ``step`` as its workflow script makes it (imports done here, before the clock starts)."""
    if step == "paint_plate":                    # workflow/scripts/paint_plate.py
        from pairedscreen.paint.stages import run_paint_plate
        return lambda: run_paint_plate(**spec["args"])
    if step == "paint_plate_whole":   # the same stage with the whole-plate table (before streaming)
        from pairedscreen.io import write_parquet
        from pairedscreen.paint import stages
        from pairedscreen.paint.aggregate import assemble_cells, plate_wells

        def whole_plate(features: list[str], pm: pd.DataFrame, plate: str, batch: str, cells_out: str,
                        how: str) -> pd.DataFrame:
            cells = assemble_cells([pd.read_parquet(f) for f in features], pm, plate, batch)
            write_parquet(cells, cells_out)
            return plate_wells(cells, pm, plate, batch, how=how)
        stages.stream_plate = whole_plate
        return lambda: stages.run_paint_plate(**{**spec["args"], "cells_out": spec["out"] + ".cells.parquet",
                                                 "wells_out": spec["out"] + ".wells.parquet"})
    from pairedscreen.config import resolve_section
    root = Path(spec["root"])
    if step == "profiles":                       # workflow/scripts/profiles.py
        from pairedscreen.paint.stages import run_profiles
        return lambda: run_profiles(
            wells=spec["wells"], registry=spec["registry"], params=resolve_section("profiles"),
            profiles_out=root / path("profiles"), consensus_out=root / path("consensus"),
            quarantine_out=root / path("paint_quarantine"), on_empty="error")
    if step == "quality_paint":                  # workflow/scripts/quality.py, a screen without RNA
        from pairedscreen.quality.stage import run_quality
        return lambda: run_quality(
            profiles=root / path("profiles"), consensus=root / path("consensus"), rna_cells=None,
            pseudobulk=None, knockdown=None, wells=spec["wells"], registry=spec["registry"],
            params=resolve_section("quality", spec.get("quality") or {}), truth_dir=None,
            metrics_out=root / path("quality_metrics"), table_out=root / path("quality_table"),
            paint_cells=spec["paint_cells"], paint_quarantine=root / path("paint_quarantine"),
            similarity_out=None, position_out=root / path("quality_position"),
            profiles_config=resolve_section("profiles"))
    if step == "pair_paint":                     # workflow/scripts/pair.py, a screen without RNA
        from pairedscreen.pair.stages import run_pair
        return lambda: run_pair(
            pseudobulk=None, consensus=root / path("consensus"), quality_table=root / path("quality_table"),
            registry=spec["registry"], rna_cells=None, paint_cells=spec["paint_cells"],
            h5mu_out=root / path("paired_h5mu"), rna_out=None, paint_out=root / path("paired_paint"),
            cell_index_out=root / path("cell_index"), paint_quarantine=root / path("paint_quarantine"))
    raise ValueError(f"unknown step {step!r}")


def _child(step: str, spec: dict[str, Any]) -> dict[str, Any]:
    """Run one step; report its wall time, this process's peak RSS and its RSS before the step."""
    run = _step(step, spec)
    start = _vm("VmRSS")
    t0 = time.perf_counter()
    run()
    return {"wall_s": time.perf_counter() - t0, "peak_rss_mb": _vm("VmHWM"), "start_rss_mb": start}


def measure(step: str, spec: dict[str, Any], *, plates: int, cells: int) -> dict[str, Any]:
    """Run ``step`` in a fresh child process; print and return its ``step=... plates=... cells=...
    wall_s=... peak_rss_mb=...`` figures."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(Path(__file__).resolve().parents[1] / "src"), os.environ.get("PYTHONPATH", "")])}
    res = subprocess.run([sys.executable, __file__, "--child", step, json.dumps(spec)], env=env,
                         capture_output=True, text=True)
    if res.returncode:
        raise RuntimeError(f"{step} failed:\n{res.stderr[-4000:]}")
    out = json.loads(res.stdout.strip().splitlines()[-1])
    out.update(step=step, plates=plates, cells=cells)
    print(f"step={step} plates={plates} cells={cells} wall_s={out['wall_s']:.1f} "
          f"peak_rss_mb={out['peak_rss_mb']:.0f} start_rss_mb={out['start_rss_mb']:.0f}", flush=True)
    return out


def bench_paint_plate(work: Path, cells_per_well: Sequence[int], features: Sequence[str], *, sites: int = 9,
                      wells_per_job: int = 16, whole: bool = True) -> list[dict[str, Any]]:
    """``paint_plate`` on one 384-well plate at each ``cells_per_well`` (and the whole-plate reference)."""
    rows = []
    for cpw in cells_per_well:
        root = work / f"plate_{cpw}"
        args = write_plate_inputs(root, "P001", plate_layout(0, "replicated", 0), cells_per_well=cpw,
                                  features=features, sites=sites, wells_per_job=wells_per_job)
        n = cpw * len(WELLS_384)
        rows.append(measure("paint_plate", {"args": args}, plates=1, cells=n))
        if whole:
            rows.append(measure("paint_plate_whole", {"args": args, "out": str(root / "whole")},
                                plates=1, cells=n))
        shutil.rmtree(root)
    return rows


def bench_aggregates(work: Path, plates: Sequence[int], features: Sequence[str], *, cells_per_well: int,
                     layout: str = "replicated", quality: dict[str, Any] | None = None,
                     sites: int = 9, steps: Sequence[str] = ("profiles", "quality_paint", "pair_paint"),
                     wells_per_job: int = 384) -> list[dict[str, Any]]:
    """``profiles`` and (when in ``steps``) the paint halves of ``quality`` and ``pair`` over screens of each
    number of ``plates`` (their plates made with ``wells_per_job`` wells per features chunk: the aggregates
    read only cells.parquet / wells.parquet, so one chunk per plate just makes the screen faster to
    write)."""
    rows = []
    for n in plates:
        root = work / f"screen_{n}"
        spec = write_screen(root, n, cells_per_well=cells_per_well, features=features, layout=layout,
                            sites=sites, wells_per_job=wells_per_job)
        spec["quality"] = dict(quality or {})
        cells = n * cells_per_well * len(WELLS_384)
        rows.append(measure("profiles", spec, plates=n, cells=cells))   # quality reads its outputs
        if "quality_paint" in steps:
            rows.append(measure("quality_paint", spec, plates=n, cells=cells))
        if "pair_paint" in steps:    # reads quality's table
            rows.append(measure("pair_paint", spec, plates=n, cells=cells))
        shutil.rmtree(root)
    return rows


def ratios(rows: Sequence[dict[str, Any]], key: str = "plates") -> None:
    """Print, per step, peak RSS at the largest ``key`` over the smallest (both measured in this run), of the
    whole process and of what the step added to it (peak - RSS before the step)."""
    for step in dict.fromkeys(r["step"] for r in rows):
        rs = sorted((r for r in rows if r["step"] == step), key=lambda r: r[key])
        if len(rs) > 1:
            lo, hi = rs[0], rs[-1]
            added = (hi["peak_rss_mb"] - hi["start_rss_mb"]) / max(1e-9, lo["peak_rss_mb"]
                                                                     - lo["start_rss_mb"])
            print(f"ratio step={step} {key}={hi[key]}/{lo[key]} "
                  f"peak_rss={hi['peak_rss_mb'] / lo['peak_rss_mb']:.2f} step_added={added:.2f}", flush=True)


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--features", type=int, default=600, help="feature columns (real names; default 600)")
    ap.add_argument("--texture-scales", type=int, nargs="+", default=[3])
    ap.add_argument("--plate-cells-per-well", type=int, nargs="*", default=[50, 200],
                    help="paint_plate: cells per well of the one plate, one run each")
    ap.add_argument("--plates", type=int, nargs="*", default=[10, 40, 100], help="aggregates: plates")
    ap.add_argument("--cells-per-well", type=int, default=3, help="aggregates: cells per well per plate")
    ap.add_argument("--sites", type=int, default=3, help="aggregates: sites per well")
    ap.add_argument("--layout", choices=("replicated", "unique"), default="replicated")
    ap.add_argument("--permutations", type=int, default=100, help="quality.permutations (config key)")
    ap.add_argument("--no-whole", action="store_true", help="skip the whole-plate paint_plate reference")
    ap.add_argument("--quality", action="store_true",
                    help="aggregates: also the paint half of quality and pair")
    ap.add_argument("--workdir", type=Path, default=None)
    a = ap.parse_args(argv)
    feats = feature_names(a.features, a.texture_scales)
    work = a.workdir or Path(tempfile.mkdtemp(prefix="atlas_paint_"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        rows = bench_paint_plate(work, a.plate_cells_per_well, feats, whole=not a.no_whole)
        ratios([r for r in rows if r["step"] == "paint_plate"], key="cells")
        for cells in dict.fromkeys(r["cells"] for r in rows):
            pair = {r["step"]: r for r in rows if r["cells"] == cells}
            if len(pair) == 2:
                print(f"ratio cells={cells} peak_rss whole/streamed="
                      f"{pair['paint_plate_whole']['peak_rss_mb'] / pair['paint_plate']['peak_rss_mb']:.2f}")
        rows = bench_aggregates(work, a.plates, feats, cells_per_well=a.cells_per_well, layout=a.layout,
                                sites=a.sites, quality={"permutations": a.permutations},
                                steps=("profiles", "quality_paint", "pair_paint") if a.quality
                                else ("profiles",))
        ratios(rows)
    finally:
        if a.workdir is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        print(json.dumps(_child(sys.argv[2], json.loads(sys.argv[3]))))
    else:
        main()
