"""Peak memory of profile aggregation + join with 1x and 4x the plates (aim: flat within 25%).

Writes synthetic per-plate ``cells.parquet`` files (384 wells x --cells-per-well cells x --features float32
features, Cell Painting names and metadata), then, in a fresh subprocess per scale, runs what the pair stage
does: ``profiles.build_profiles`` over the plate files (aggregation reads one plate at a time),
``join.build_perturbations`` with a synthetic RNA pseudobulk, and writes ``perturbations.h5mu``. Each child
reports its own peak RSS (``ru_maxrss``) and its RSS after imports; the ratio 4x / 1x is printed.

    .venv/bin/python benchmarks/pair_memory.py            # 2 vs 8 plates, ~73 MB of features per plate
    .venv/bin/python benchmarks/pair_memory.py --plates 1 --cells-per-well 200 --features 1000
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from pairedscreen.config import schema_defaults

SCHEMA = schema_defaults()   # the pipeline's values: library functions take them as required keywords

WELLS = [f"{chr(65 + r)}{c + 1:02d}" for r in range(16) for c in range(24)]
N_PERTS, N_CTRL = 300, 4


def perturbation_layout() -> list[str]:
    ids = [f"TGT{i:04d}" for i in range(N_PERTS)] + [f"NTC_{i + 1}" for i in range(N_CTRL)]
    layout = ids[:N_PERTS] + [ids[N_PERTS + i % N_CTRL] for i in range(len(WELLS) - N_PERTS)]
    return layout[: len(WELLS)]


def registry() -> pd.DataFrame:
    ids = [f"TGT{i:04d}" for i in range(N_PERTS)] + [f"NTC_{i + 1}" for i in range(N_CTRL)]
    ctrl = [i >= N_PERTS for i in range(len(ids))]
    return pd.DataFrame({"perturbation_id": ids,
                         "perturbation_type": ["control" if c else "CRISPRi" for c in ctrl],
                         "target_gene": ["" if c else p for p, c in zip(ids, ctrl, strict=True)],
                         "is_control": ctrl, "control_type": ["non-targeting" if c else "" for c in ctrl]})


def feature_names(n: int) -> list[str]:
    comps = ("Cells", "Nuclei", "Cytoplasm")
    fams = ("Intensity_MeanIntensity", "AreaShape_F", "Texture_Contrast", "Granularity", "RadialDistribution")
    chans = ("DNA", "ER", "RNA", "AGP", "Mito")
    return [f"{comps[i % 3]}_{fams[i // 3 % 5]}{i}_{chans[i % 5]}" for i in range(n)]


def write_plate(path: Path, plate: str, cells_per_well: int, feats: list[str], seed: int) -> None:
    """Write one plate, 48 wells per row group, so the generator itself stays small."""
    rng = np.random.default_rng(seed)
    layout = perturbation_layout()
    writer = None
    for start in range(0, len(WELLS), 48):
        wells = WELLS[start:start + 48]
        n = len(wells) * cells_per_well
        cols: dict[str, object] = {
            "Metadata_Plate": np.full(n, plate), "Metadata_Batch": np.full(n, "b1"),
            "Metadata_Well": np.repeat(wells, cells_per_well),
            "Metadata_Site": np.tile(np.arange(cells_per_well) % 9 + 1, len(wells)).astype(np.int32),
            "Metadata_ObjectNumber": np.tile(np.arange(cells_per_well) + 1, len(wells)).astype(np.int32),
            "Metadata_Perturbation": np.repeat(layout[start:start + 48], cells_per_well),
        }
        x = rng.normal(size=(n, len(feats))).astype(np.float32)
        table = pa.table({**cols, **{f: x[:, j] for j, f in enumerate(feats)}})
        if writer is None:
            writer = pq.ParquetWriter(path, table.schema)
        writer.write_table(table)
        del x, table
    assert writer is not None
    writer.close()


def child(paths: list[str], out: str) -> None:
    """Run aggregation + normalisation + selection + join on the given plates; print JSON stats."""
    import anndata as ad

    from pairedscreen.paint import profiles
    from pairedscreen.pair import join

    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t0 = time.perf_counter()
    reg = registry()
    res = profiles.build_profiles(paths, registry=reg,
                                  feature_select=["drop_na_columns", "variance_threshold", "blocklist"],
                                  position_correction=False,
                                  aggregate=SCHEMA["profiles.aggregate"],
                                  normalize=SCHEMA["profiles.normalize"],
                                  outlier_cutoff=SCHEMA["profiles.outlier_cutoff"],
                                  blocklist=SCHEMA["profiles.blocklist"])
    rng = np.random.default_rng(0)
    n_genes = 2000
    pb = ad.AnnData(X=rng.random((len(reg), n_genes)).astype(np.float32),
                    obs=pd.DataFrame({"n_cells": rng.integers(20, 200, len(reg))},
                                     index=reg.perturbation_id.to_numpy()),
                    var=pd.DataFrame(index=[f"GENE{i:05d}" for i in range(n_genes)]))
    pb.layers["counts"] = rng.poisson(5.0, (len(reg), n_genes)).astype(np.float64)
    mdata = join.build_perturbations(reg, rna=pb, paint=res.consensus)
    out_dir = Path(out)
    join.write_paired(mdata, out_dir / "perturbations.h5mu", out_dir / "rna.h5ad", out_dir / "paint.h5ad")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"plates": len(paths), "wells": int(res.info["n_wells"]), "peak_mb": peak / 1024,
                      "after_imports_mb": base / 1024, "seconds": time.perf_counter() - t0}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--plates", type=int, default=2, help="plates at 1x (4x uses four times as many)")
    ap.add_argument("--cells-per-well", type=int, default=100)
    ap.add_argument("--features", type=int, default=500)
    ap.add_argument("--workdir", default=None, help="where to write the plates (default: a temp dir)")
    ap.add_argument("--child", nargs="*", help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child is not None:
        child(args.child, args.out)
        return
    feats = feature_names(args.features)
    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        d = Path(tmp)
        paths = []
        for i in range(4 * args.plates):
            p = d / f"P{i + 1:03d}_cells.parquet"
            write_plate(p, f"P{i + 1:03d}", args.cells_per_well, feats, seed=i)
            paths.append(str(p))
        size = Path(paths[0]).stat().st_size / 2**20
        print(f"{len(paths)} plates written: 384 wells x {args.cells_per_well} cells x {args.features} "
              "features "
              f"({384 * args.cells_per_well} cells, {size:.0f} MB parquet, "
              f"{384 * args.cells_per_well * args.features * 4 / 2**20:.0f} MB float32 per plate)")
        stats = []
        for n in (args.plates, 4 * args.plates):
            out = d / f"out{n}"
            out.mkdir()
            run = subprocess.run([sys.executable, __file__, "--out", str(out), "--child", *paths[:n]],
                                 check=True, capture_output=True, text=True)
            stats.append(json.loads(run.stdout.strip().splitlines()[-1]))
            s = stats[-1]
            print(f"{s['plates']:3d} plates: peak RSS {s['peak_mb']:7.0f} MB "
                  f"(after imports {s['after_imports_mb']:.0f} MB), {s['seconds']:.1f} s")
        one, four = stats
        ratio = four["peak_mb"] / one["peak_mb"]
        work = (four["peak_mb"] - four["after_imports_mb"]) / max(one["peak_mb"] - one["after_imports_mb"], 1)
        print(f"peak ratio 4x/1x: {ratio:.2f} (above the imports: {work:.2f}); "
              f"{'flat within 25%' if ratio <= 1.25 else 'NOT flat within 25%'}")


if __name__ == "__main__":
    main()
