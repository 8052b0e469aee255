"""Simulate a complete, runnable paired screen working directory (sheets, config, raw data, truth).

``simulate(out_dir, preset="tiny")`` writes::

    config/config.yaml, perturbations.tsv, guides.tsv, rna_libraries.tsv, plates.tsv, plate_maps/{plate}.tsv
    raw/reference/..., raw/fastq/{lib}_{gex|guide}_R{1|2}.fastq.gz     (pairedscreen.simulate.rna)
    raw/images/{plate}/{well}_s{site}_w{channel}.tif                   (pairedscreen.simulate.paint)
    truth/perturbations.tsv, genes.tsv, spec.json, rna_barcodes.tsv, paint/..., paint_objects.parquet,
    illumination/..., paint_wells.tsv

Everything is deterministic for a seed (byte-identical files).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from pairedscreen.io import atomic_output, repo_root, write_json, write_tsv
from pairedscreen.simulate.registry import Registry, make_registry
from pairedscreen.simulate.spec import PRESETS, ScreenSpec, get_preset

__all__ = ["PRESETS", "ScreenSpec", "build_spec", "get_preset", "make_registry", "simulate",
           "write_config", "write_sheets"]


def build_spec(preset: str = "tiny", seed: int | None = None,
               overrides: dict[str, Any] | None = None) -> ScreenSpec:
    """The preset with ``seed`` and ``rna.x`` / ``paint.x`` / top-level overrides applied."""
    return get_preset(preset).with_overrides(seed=seed, **(overrides or {}))


def _bool_text(s: pd.Series) -> pd.Series:
    return s.map(lambda v: "true" if bool(v) else "false")


def write_sheets(registry: Registry, spec: ScreenSpec, out_dir: str | os.PathLike,
                 plate_maps: dict[str, pd.DataFrame]) -> None:
    """config/{perturbations,guides,rna_libraries,plates}.tsv and config/plate_maps/{plate}.tsv."""
    cfg = Path(out_dir) / "config"
    perts = registry.perturbation_sheet()
    perts["is_control"] = _bool_text(perts["is_control"])
    write_tsv(perts, cfg / "perturbations.tsv")
    write_tsv(registry.guide_sheet(), cfg / "guides.tsv")
    libs = []
    for i in range(spec.rna.n_libraries):
        lib = f"L{i + 1}"
        row: dict[str, Any] = {"library_id": lib, "batch": f"B{i + 1}", "chemistry": "10xv3"}
        for kind in ("gex", "guide"):
            for r in (1, 2):
                row[f"{kind}_fastq_r{r}"] = f"raw/fastq/{lib}_{kind}_R{r}.fastq.gz"
        row["expected_cells"] = int(spec.rna.cells_per_library)
        libs.append(row)
    write_tsv(pd.DataFrame(libs), cfg / "rna_libraries.tsv")
    plates = []
    for i, (plate, pm) in enumerate(plate_maps.items()):
        plates.append({"plate_id": plate, "batch": f"B{i + 1}", "image_dir": f"raw/images/{plate}",
                       "plate_map": f"config/plate_maps/{plate}.tsv"})
        write_tsv(pm[["well", "perturbation_id", "replicate"]], cfg / "plate_maps" / f"{plate}.tsv")
    write_tsv(pd.DataFrame(plates), cfg / "plates.tsv")


def write_config(out_dir: str | os.PathLike, base_config: str | os.PathLike | None = None) -> Path:
    """config/config.yaml: the base config (default: the repository's) with ``truth_dir: truth``."""
    base = Path(base_config) if base_config is not None else repo_root() / "config" / "config.yaml"
    cfg = yaml.safe_load(base.read_text()) or {}
    cfg["truth_dir"] = "truth"
    path = Path(out_dir) / "config" / "config.yaml"
    with atomic_output(path) as tmp:
        tmp.write_text("# written by `pairedscreen simulate` from " + base.name + "\n"
                       + yaml.safe_dump(cfg, sort_keys=False, default_flow_style=False))
    return path


def _truth_perturbations(registry: Registry, rna: pd.DataFrame, paint: pd.DataFrame) -> pd.DataFrame:
    df = registry.perturbations.copy()
    for extra in (rna, paint):
        dup = [c for c in extra.columns if c in df.columns and c != "perturbation_id"]
        df = df.merge(extra.drop(columns=dup), on="perturbation_id", how="left", validate="one_to_one")
    df["is_control"] = _bool_text(df["is_control"])
    for col in ("rna_active", "paint_active"):
        if col in df:
            df[col] = _bool_text(df[col].fillna(False))
    return df


def simulate(out_dir: str | os.PathLike, preset: str = "tiny", seed: int | None = None,
             overrides: dict[str, Any] | None = None,
             base_config: str | os.PathLike | None = None) -> Path:
    """Write a complete simulated screen working directory into ``out_dir`` and return it.

    ``overrides`` are ScreenSpec overrides such as ``{"paint.n_plates": 2, "rna.n_libraries": 1}``.
    Adding plates (or libraries) never changes the files of existing ones.
    """
    from pairedscreen.simulate.paint import plate_id, plate_layout, simulate_paint
    from pairedscreen.simulate.rna import simulate_rna

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    spec = build_spec(preset, seed, overrides)
    registry = make_registry(spec)

    rna_truth = simulate_rna(registry, spec, out)
    paint_truth = simulate_paint(registry, spec, out)

    plate_maps = {plate_id(i): plate_layout(registry, spec, i) for i in range(spec.paint.n_plates)}
    write_sheets(registry, spec, out, plate_maps)
    write_config(out, base_config)

    truth = out / "truth"
    write_tsv(_truth_perturbations(registry, rna_truth, paint_truth), truth / "perturbations.tsv")
    write_tsv(registry.genes, truth / "genes.tsv")
    write_json(spec.to_dict(), truth / "spec.json")
    return out
