# Configuration and sample sheets: validated once, before any job is planned.
import sys
from pathlib import Path

from snakemake_interface_executor_plugins.settings import ExecMode

sys.path.insert(0, str(Path(workflow.basedir) / "src"))  # the library, also when not pip-installed
from pairedscreen.provenance import use_workflow_library

# jobs (script: subprocesses, cluster jobs re-reading this file) import this workflow's library first,
# never another installed copy; each script checks it (pairedscreen.provenance.check_workflow_library)
use_workflow_library(workflow.basedir)

from pairedscreen.config import estimated_cells, load_config, resolve_model
from pairedscreen.paint.manifest import update_manifest
from pairedscreen.paths import chunk_wells, path
from pairedscreen.rna.kb_memory import kb_mem_mb
from pairedscreen.sheets import (SheetError, cellprofiler_plate, is_cellprofiler, is_cellranger, library_fastqs,
                                 library_pattern, load_screen)
from pairedscreen.stage_config import stage_config

REPO = Path(workflow.basedir)
CONDA_ENV = "../../envs/pairedscreen.yaml"  # relative to the rule files
WORKDIR = Path.cwd()

# the one config loader: unknown keys refused ("did you mean"), schema checked, schema defaults filled
config.update(load_config(config, source="config/config.yaml"))
# the one sheet reader: every sheet and plate map read, schema-checked and cross-checked, all problems at once
SCREEN = load_screen(config, WORKDIR)
SHEETS = config["sheets"]
plate_maps = SCREEN.plate_maps

LIBRARIES = SCREEN.library_ids
# a library enters as FASTQs (kb counts them) or as a Cell Ranger folder (cellranger_outs): the rule that
# loads it is chosen by these wildcard constraints, so the kb rules never run for a Cell Ranger library
CELLRANGER_LIBRARIES = [r["library_id"] for r in SCREEN.libraries.to_dict("records") if is_cellranger(r)]
FASTQ_LIBRARIES = [lib for lib in LIBRARIES if lib not in CELLRANGER_LIBRARIES]
PLATES = SCREEN.plate_ids
# a plate enters as images (segmented and measured here) or as CellProfiler output (cellprofiler): the rule
# writing its cells/wells is chosen by wildcard constraints, so no image rule runs for a CellProfiler plate
CELLPROFILER_PLATES = [r["plate_id"] for r in SCREEN.plates.to_dict("records") if is_cellprofiler(r)]
IMAGE_PLATES = [p for p in PLATES if p not in CELLPROFILER_PLATES]
# Arms land weeks apart: an arm whose sheet has no rows yet is missing; the target set, and the inputs of
# the aggregate rules, are what the present arms make (pair/quality/datasheet/report say which is missing).
HAS_RNA = bool(LIBRARIES)
HAS_PAINT = bool(PLATES)
if not (HAS_RNA or HAS_PAINT):
    raise SheetError(SHEETS["rna_libraries"], None, f"neither this sheet nor {SHEETS['plates']} has rows: "
                     "nothing to run", "add the sequencing libraries and/or the plates of the screen")
WELLS_PER_JOB = config["paint"]["wells_per_job"]
CHUNKS = {p: chunk_wells(list(plate_maps[p]["well"]), WELLS_PER_JOB) for p in IMAGE_PLATES}
SEG = config["paint"]["segmentation"]
# paint.features.preset jump: the paint stage also writes JUMP's per-site Image_* table (per chunk, per plate)
JUMP_IMAGES = config["paint"]["features"]["preset"] == "jump"
MODELS = {c: resolve_model(SEG[c]["model"], WORKDIR, REPO) for c in ("nuclei", "cells")}
TRUTH_DIR = config["truth_dir"]
_cells_h5mu = config["pair"]["cells_h5mu"]
WRITE_CELLS_H5MU = HAS_RNA and HAS_PAINT and (
    _cells_h5mu is True
    or (_cells_h5mu == "auto"
        and estimated_cells(SCREEN.libraries["expected_cells"].sum(),
                            sum(len(pm) for pm in plate_maps.values())) < 200_000)
)


wildcard_constraints:
    library="[A-Za-z0-9][A-Za-z0-9_.-]*",
    plate="[A-Za-z0-9][A-Za-z0-9_.-]*",
    chunk="c[0-9]{3}",


def library_row(wc):
    return SCREEN.libraries.set_index("library_id").loc[wc.library]


def fastqs(kind, mate):
    """Input function: the ';'-separated lanes of one FASTQ column, as a list."""
    return lambda wc: library_fastqs(library_row(wc), kind, mate)


def plate_row(wc):
    return SCREEN.plates.set_index("plate_id").loc[wc.plate]


def model_inputs():
    return [m for m in MODELS.values() if Path(m).exists()]


def log(rule, name="{library}"):
    return path("log", rule=rule, name=name)


def bench(rule, name):
    return path("benchmark", rule=rule, name=name)


def all_outputs():
    """The run's targets: each present arm's finished outputs, the pair built from what exists, the
    datasheet and the report."""
    out = [path("paired_h5mu"), path("cell_index"), path("datasheet"), path("report")]
    if HAS_RNA:
        out += [path("rna_cells"), path("rna_pseudobulk"), path("rna_knockdown"), path("rna_de"),
                path("paired_rna")]
    if HAS_PAINT:
        out += [path("profiles"), path("consensus"), path("paired_paint")]
    if WRITE_CELLS_H5MU:
        out.append(path("paired_cells"))
    if JUMP_IMAGES:  # JUMP's per-site Image_* tables
        out += per_image_plate("paint_images")
    return out + (train_outputs() if HAS_RNA and HAS_PAINT else [])   # the export pairs both arms


def train_outputs():
    """results/train/ (see workflow/rules/train.smk)."""
    return [path("train_splits"), path("train_rna", cell_type=config["train"]["cell_type"]),
            path("train_cell_load"), *per_image_plate("train_crops"), path("quality_evals"), path("train_croissant")]


def if_rna(*keys):
    """Inputs and outputs of the aggregate rules from the RNA arm (nothing while the arm is missing)."""
    return [path(k) for k in keys] if HAS_RNA else []


def if_paint(*keys):
    return [path(k) for k in keys] if HAS_PAINT else []


def if_both(*keys):
    return [path(k) for k in keys] if HAS_RNA and HAS_PAINT else []


REF = config["reference"]
PREBUILT_INDEX = bool(REF["index"]) and bool(REF["t2g"])
KB_INDEX = REF["index"] if PREBUILT_INDEX else path("kb_index")
KB_T2G = REF["t2g"] if PREBUILT_INDEX else path("kb_t2g")
WHITELIST = config["rna"]["whitelist"]
KB_MEM_MB = kb_mem_mb(config["rna"]["sort_memory"])  # a resource: raising it reruns nothing


def reads(rule):
    """A rule's params: the config values its stage reads (pairedscreen.stage_config.STAGE_READS), so a
    changed key reruns exactly the rules that read it."""
    return stage_config(config, rule)


def plate_manifest(wc):
    """The plate's image manifest (pairedscreen.paint.manifest), standing for its image files: a new or changed
    image rewrites it at planning time and reruns that plate only."""
    return path("image_manifest", plate=wc.plate)


if workflow.exec_mode == ExecMode.DEFAULT:  # the planning process, not the jobs it starts
    for _row in SCREEN.plates.to_dict("records"):
        if not is_cellprofiler(_row):
            update_manifest(_row["image_dir"], path("image_manifest", plate=_row["plate_id"]))


def chunk_paths(key, plate):
    return [path(key, plate=plate, chunk=c) for c in CHUNKS[plate]]


def chunk_masks(wc):
    return chunk_paths("masks", wc.plate)


def chunk_features(wc):
    return chunk_paths("features", wc.plate)


def chunk_images(wc):
    return chunk_paths("image_features", wc.plate)


def jump_images(key):
    """``{key: path(key)}`` when the preset is jump (the Image_* table's outputs), else nothing."""
    return {key: path(key)} if JUMP_IMAGES else {}


def digested_outputs():
    """The final outputs whose content digests the datasheet records (pairedscreen.digest)."""
    keys = ["paired_h5mu", "cell_index", "quality_metrics", "quality_table"]
    out = ([path(k) for k in keys] + if_rna("paired_rna", "rna_cells", "rna_pseudobulk", "rna_knockdown", "rna_de")
           + if_paint("paired_paint", "profiles", "consensus")
           + per_library("rna_cells_lib") + per_plate("paint_cells") + per_plate("paint_wells"))
    if WRITE_CELLS_H5MU:
        out.append(path("paired_cells"))
    return out


def per_library(key):
    return expand(path(key), library=LIBRARIES)


def per_plate(key):
    return expand(path(key), plate=PLATES)


def per_image_plate(key):
    """Per-plate outputs only image plates have (image index, illumination, masks, crops)."""
    return expand(path(key), plate=IMAGE_PLATES)


def per_cellprofiler_plate(key):
    return expand(path(key), plate=CELLPROFILER_PLATES)

