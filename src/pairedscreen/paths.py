"""The one path builder: every file the workflow writes, relative to the working directory.

Rules use the patterns with wildcards (``path("rna_raw")``); scripts, the report and tests fill them
(``path("rna_raw", library="L1")``). Per-library and per-plate outputs live under their own ids, so a
new plate or sequencing run never rewrites another's files.
"""

from __future__ import annotations

PATHS: dict[str, str] = {
    # reference
    "kb_index": "results/reference/kb/index.idx",
    "kb_t2g": "results/reference/kb/t2g.txt",
    "guide_index": "results/reference/guides/index.idx",
    "guide_t2g": "results/reference/guides/t2g.txt",
    "guide_features": "results/reference/guides/features.tsv",
    # RNA arm, per library
    "rna_fastq_check": "results/rna/{library}/fastq_check.json",
    "kb_gex": "results/rna/{library}/kb_gex",
    "kb_guide": "results/rna/{library}/kb_guide",
    "rna_inputs": "results/rna/{library}/inputs.json",
    "rna_raw": "results/rna/{library}/raw.h5ad",
    "rna_guides_raw": "results/rna/{library}/guides_raw.h5ad",
    "rna_cells_lib": "results/rna/{library}/cells.h5ad",
    "rna_barcode_ranks": "results/rna/{library}/barcode_ranks.parquet",
    "rna_summary": "results/rna/{library}/summary.h5ad",
    "rna_de_lib": "results/rna/{library}/de.parquet",
    # RNA arm, aggregate
    "rna_cells": "results/rna/cells.h5ad",
    "rna_pseudobulk": "results/rna/pseudobulk.h5ad",
    "rna_knockdown": "results/rna/knockdown.tsv",
    "rna_quarantine": "results/rna/quarantine.tsv",
    "rna_de": "results/rna/de.parquet",
    "rna_de_summary": "results/rna/de_summary.tsv",
    # Paint arm, per plate / chunk of wells
    "image_manifest": "results/paint/{plate}/image_manifest.tsv",
    "image_index": "results/paint/{plate}/image_index.parquet",
    "illum": "results/paint/{plate}/illum",
    "masks": "results/paint/{plate}/masks/{chunk}",
    "features": "results/paint/{plate}/features/{chunk}.parquet",
    "paint_cells": "results/paint/{plate}/cells.parquet",
    "paint_wells": "results/paint/{plate}/wells.parquet",
    # paint.features.preset jump only: JUMP's per-site Image_* table, per chunk and per plate
    "image_features": "results/paint/{plate}/images/{chunk}.parquet",
    "paint_images": "results/paint/{plate}/images.parquet",
    "paint_cellprofiler": "results/paint/{plate}/cellprofiler.json",   # a CellProfiler plate's source record
    # Pair and quality (aggregates)
    "quality_metrics": "results/quality/metrics.json",
    "quality_table": "results/quality/perturbations.tsv",
    "quality_similarity": "results/quality/similarity.parquet",
    "quality_position": "results/quality/position.parquet",
    "profiles": "results/paint/profiles.parquet",
    "consensus": "results/paint/consensus.parquet",
    "profiles_steps": "results/paint/profiles_steps",   # the correction chain's per-step profiles
    "paint_quarantine": "results/paint/quarantine.tsv",
    "paired_h5mu": "results/paired/perturbations.h5mu",
    "paired_rna": "results/paired/rna.h5ad",
    "paired_paint": "results/paired/paint.h5ad",
    "paired_cells": "results/paired/cells.h5mu",
    "cell_index": "results/paired/cell_index.tsv",
    "datasheet": "results/datasheet.json",
    # training export (results/train/) and held-out evals
    "train_splits": "results/train/splits.tsv",
    "train_batch_holdout": "results/train/batch_holdout.tsv",
    "train_rna": "results/train/rna/{cell_type}.h5ad",
    "train_rna_obs": "results/train/rna/{cell_type}.obs.parquet",
    "train_cell_load": "results/train/cell_load.toml",
    "train_crop_size": "results/train/paint/crop_size.json",
    "train_crops": "results/train/paint/{plate}/crops.zarr",
    "train_crops_obs": "results/train/paint/{plate}/obs.parquet",
    "train_croissant": "results/train/croissant.json",
    "quality_eval_cells": "results/quality/eval_cells.h5ad",
    "quality_celleval": "results/quality/celleval.json",
    "quality_evals": "results/quality/evals.json",
    "report": "results/report.html",
    # logs and benchmarks
    "log": "logs/{rule}/{name}.log",
    "benchmark": "logs/benchmarks/{rule}/{name}.tsv",
}


def path(key: str, **wildcards: str) -> str:
    """Pattern for ``key``; with wildcards given, the concrete path."""
    try:
        pattern = PATHS[key]
    except KeyError:
        raise KeyError(f"unknown output {key!r}; known: {sorted(PATHS)}") from None
    return pattern.format(**wildcards) if wildcards else pattern


def chunk_wells(wells: list[str], wells_per_job: int) -> dict[str, list[str]]:
    """Group a plate's wells (plate-map order) into jobs: ``{"c000": [...], "c001": [...]}``."""
    if wells_per_job < 1:
        raise ValueError("wells_per_job must be >= 1")
    return {
        f"c{i // wells_per_job:03d}": list(wells[i : i + wells_per_job])
        for i in range(0, len(wells), wells_per_job)
    }
