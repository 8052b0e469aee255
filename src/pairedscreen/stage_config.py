"""Which configuration values each rule's stage reads: the one declaration (:data:`STAGE_READS`) behind
every rule's ``params`` and the datasheet's record of the configuration.

A rule passes ``stage_config(config, "<rule>")`` as its params: the resolved config cut down to the keys
its stage reads, nested as in the config. Snakemake reruns a job when its params change, so a key reruns
exactly the rules that read it, and what depends on their outputs: editing ``train.croissant.description``
reruns the Croissant export (and the datasheet that records it), not the splits, crops or pair. A stage
that looks up a key it did not declare fails with ``KeyError`` on its first run, so the table cannot
silently fall behind the code. ``tests/test_workflow_rerun.py`` changes every leaf key of the schema on a
finished run and checks that ``snakemake -n`` plans exactly these rules' jobs and their downstream.

Keys read by no stage: ``rna.sort_memory`` (only the kb jobs' ``mem_mb`` resource: kb's sort memory is
taken from the job's resources, which never rerun a job) and ``landing`` (read by
``pairedscreen discover``, not by the workflow).
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping
from typing import Any

# rule -> config keys (dotted; a key stands for everything below it). Keys that only shape the plan are
# listed with the rules whose jobs they change: paint.wells_per_job (the chunk jobs), train.cell_type (the
# export's file name), train.evals.celleval (whether cell-eval runs), pair.cells_h5mu (cells.h5mu written).
STAGE_READS: dict[str, tuple[str, ...]] = {
    "kb_ref": ("reference.fasta", "reference.gtf"),
    "kb_ref_guides": ("sheets.guides",),
    "rna_fastq_check": ("sheets.guides",),
    "kb_count_gex": ("reference.index", "reference.t2g", "rna.whitelist"),
    "kb_count_guide": ("rna.whitelist",),
    "rna_load": (),
    "rna_load_cellranger": ("rna.cellranger", "sheets.guides"),
    "rna_cells": ("rna.cell_calling", "rna.qc", "rna.doublets", "rna.guides", "sheets.guides",
                  "sheets.perturbations"),
    "rna_summary": ("sheets.perturbations",),
    "rna_merge": ("rna.knockdown", "on_empty", "sheets.perturbations"),
    "rna_de": ("rna.de.min_cells_per_library", "sheets.perturbations"),
    "rna_de_merge": ("rna.de.alpha", "rna.de.min_abs_log2fc", "sheets.perturbations"),
    "paint_index": ("paint.image_pattern", "paint.channels", "paint.on_bad_image", "paint.qc"),
    "paint_illum": ("paint.illumination",),
    "paint_segment": ("paint.segmentation", "paint.wells_per_job"),
    "paint_features": ("paint.features", "paint.wells_per_job"),
    "paint_plate": ("profiles.aggregate",),
    "paint_load_cellprofiler": ("paint.cellprofiler", "paint.features.families", "paint.channels",
                                "profiles.aggregate"),
    "profiles": ("profiles", "on_empty", "sheets.perturbations"),
    "quality": ("quality", "profiles.aggregate", "profiles.normalize", "truth_dir", "sheets.perturbations"),
    "pair": ("pair", "sheets.perturbations"),
    "report": ("truth_dir",),   # the rest of its configuration it reads from the datasheet's record
    "train_splits": ("train.seed", "train.val_fraction", "train.test_fraction", "sheets.perturbations"),
    "train_batch_holdout": ("train.batch_holdout", "sheets.rna_libraries", "sheets.plates"),
    "train_rna": ("train.cell_type", "train.control_label", "train.n_hvg", "train.val_fraction",
                  "train.test_fraction", "sheets.perturbations"),
    "train_crop_size": ("train.crops.size", "train.crops.size_factor", "train.crops.size_quantile"),
    "train_crops": ("train.crops", "train.batch_holdout", "train.val_fraction", "train.test_fraction"),
    "train_eval_cells": ("train.seed", "train.eval_max_cells_per_perturbation"),
    "train_celleval": ("train.seed", "train.control_label", "train.evals.celleval_profile",
                       "train.evals.eval_python"),
    "train_evals": ("train.seed", "train.val_fraction", "train.test_fraction", "train.batch_holdout",
                    "train.evals", "profiles.aggregate", "profiles.normalize", "truth_dir",
                    "sheets.perturbations", "sheets.guides"),
    "train_croissant": ("train.croissant",),
}
# the datasheet records the configuration the outputs were made with: every key some stage reads
STAGE_READS["datasheet"] = tuple(sorted({k for keys in STAGE_READS.values() for k in keys}))


def covers(declared: str, key: str) -> bool:
    """A declared key covers ``key`` when it is that key or a section above it."""
    return key == declared or key.startswith(declared + ".")


def readers(key: str) -> list[str]:
    """The rules whose stage reads ``key`` (a dotted leaf key of the config schema)."""
    return [rule for rule, keys in STAGE_READS.items() if any(covers(d, key) for d in keys)]


def _dig(config: Mapping[str, Any], parts: list[str]) -> tuple[bool, Any]:
    node: Any = config
    for p in parts:
        if not isinstance(node, Mapping) or p not in node:
            return False, None
        node = node[p]
    return True, node


def select(config: Mapping[str, Any], keys: Iterable[str]) -> dict[str, Any]:
    """``config`` cut down to ``keys`` (dotted), nested as in the config; absent keys are left out."""
    out: dict[str, Any] = {}
    for key in keys:
        parts = key.split(".")
        found, value = _dig(config, parts)
        if not found:
            continue
        node = out
        for p in parts[:-1]:
            node = node.setdefault(p, {})
        node[parts[-1]] = copy.deepcopy(value)
    return out


def stage_config(config: Mapping[str, Any], rule: str) -> dict[str, Any]:
    """The configuration ``rule``'s stage reads (:data:`STAGE_READS`), for its ``params``."""
    if rule not in STAGE_READS:
        raise KeyError(f"rule {rule!r} has no entry in pairedscreen.stage_config.STAGE_READS: add the "
                       "config keys its stage reads")
    return select(config, STAGE_READS[rule])
