# Training export (results/train/) and held-out evals (results/quality/evals.json): see pairedscreen.train.
from pairedscreen.train.splits import batch_holdout

TRAIN = config["train"]
CELL_TYPE = TRAIN["cell_type"]
# planned here with the library function the batch-holdout rule uses: a plate's crops depend on its own
# batch_split only (a param), so a plate landing never reruns another plate's crops unless its split flips
BATCH_SPLIT = batch_holdout(SCREEN.libraries, SCREEN.plates, TRAIN["batch_holdout"]).query(
    "arm == 'paint'").set_index("unit")["batch_split"].to_dict()


rule train_splits:
    input:
        registry=SHEETS["perturbations"],
    output:
        splits=path("train_splits"),
    params:
        config=reads("train_splits"),
    log:
        log("train_splits", "all"),
    benchmark:
        bench("train_splits", "all")
    threads: 1
    resources:
        mem_mb=1024,
    conda:
        CONDA_ENV
    script:
        "../scripts/train_splits.py"


rule train_batch_holdout:
    input:
        libraries=SHEETS["rna_libraries"],
        plates=SHEETS["plates"],
    output:
        path("train_batch_holdout"),
    params:
        config=reads("train_batch_holdout"),
    log:
        log("train_batch_holdout", "all"),
    benchmark:
        bench("train_batch_holdout", "all")
    threads: 1
    resources:
        mem_mb=1024,
    conda:
        CONDA_ENV
    script:
        "../scripts/train_batch_holdout.py"


# streamed from the per-library cells files (never the merged results/rna/cells.h5ad): memory ~ one library
rule train_rna:
    input:
        rna_cells=per_library("rna_cells_lib"),
        # after rna_merge's decision on libraries without usable cells: under on_empty: error the export
        # stops with it (a quarantined library has no usable cell, so nothing of it is exported)
        rna_quarantine=path("rna_quarantine"),
        registry=SHEETS["perturbations"],
        splits=path("train_splits"),
        holdout=path("train_batch_holdout"),
    output:
        h5ad=path("train_rna", cell_type=CELL_TYPE),
        obs=path("train_rna_obs", cell_type=CELL_TYPE),
        toml=path("train_cell_load"),
    params:
        config=reads("train_rna"),
    log:
        log("train_rna", "all"),
    benchmark:
        bench("train_rna", "all")
    threads: 1
    resources:
        mem_mb=8192,
    conda:
        CONDA_ENV
    script:
        "../scripts/train_rna.py"


rule train_crop_size:
    input:
        cells=path("paint_cells", plate=IMAGE_PLATES[0]) if IMAGE_PLATES else [],
    output:
        path("train_crop_size"),
    params:
        config=reads("train_crop_size"),
    log:
        log("train_crop_size", "all"),
    benchmark:
        bench("train_crop_size", "all")
    threads: 1
    resources:
        mem_mb=2048,
    conda:
        CONDA_ENV
    script:
        "../scripts/train_crop_size.py"


rule train_crops:
    input:
        cells=path("paint_cells"),
        index=path("image_index"),
        illum=path("illum"),
        masks=chunk_masks,
        splits=path("train_splits"),
        crop_size=path("train_crop_size"),
    output:
        zarr=directory(path("train_crops")),
        obs=path("train_crops_obs"),
    wildcard_constraints:
        plate=library_pattern(IMAGE_PLATES),
    params:
        config=reads("train_crops"),
        batch_split=lambda wc: BATCH_SPLIT[wc.plate],
    log:
        log("train_crops", "{plate}"),
    benchmark:
        bench("train_crops", "{plate}")
    threads: 1
    resources:
        mem_mb=4096,
    conda:
        CONDA_ENV
    script:
        "../scripts/train_crops.py"


# cell-eval runs in its own environment (its pdex needs numpy>=2.4.2; Cellpose caps numpy<2.1): the venv
# `.venv-eval` made by `make env`, or envs/celleval.yaml under --sdm conda. Without either, celleval.json
# records "not run" with the fix, and the datasheet and report say so.
from snakemake.settings.types import DeploymentMethod

_EVAL_CONDA = DeploymentMethod.CONDA in workflow.deployment_settings.deployment_method
_eval_py = Path(TRAIN["evals"]["eval_python"])
EVAL_PYTHON = "python" if _EVAL_CONDA else str(_eval_py if _eval_py.is_absolute() else REPO / _eval_py)


# the cells cell-eval scores: at most train.eval_max_cells_per_perturbation per perturbation of the export
rule train_eval_cells:
    input:
        h5ad=path("train_rna", cell_type=CELL_TYPE),
    output:
        path("quality_eval_cells"),
    params:
        config=reads("train_eval_cells"),
    log:
        log("train_eval_cells", "all"),
    benchmark:
        bench("train_eval_cells", "all")
    threads: 1
    resources:
        mem_mb=2048,
    conda:
        CONDA_ENV
    script:
        "../scripts/train_eval_cells.py"


rule train_celleval:
    input:
        h5ad=path("quality_eval_cells"),
        splits=path("train_splits"),
    output:
        path("quality_celleval"),
    params:
        python=EVAL_PYTHON,
        src=str(REPO / "src"),
        control=TRAIN["control_label"],
        profile=TRAIN["evals"]["celleval_profile"],
        seed=TRAIN["seed"],
    log:
        log("train_celleval", "all"),
    benchmark:
        bench("train_celleval", "all")
    threads: 1
    resources:
        mem_mb=8192,
    conda:
        "../../envs/celleval.yaml"
    shell:
        "if command -v {params.python:q} >/dev/null 2>&1; then"
        " PYTHONPATH={params.src:q} {params.python:q} -m pairedscreen.train.celleval_run"
        " --h5ad {input.h5ad:q} --splits {input.splits:q} --control {params.control:q}"
        " --profile {params.profile} --seed {params.seed} --out {output:q};"
        " else PYTHONPATH={params.src:q} python -m pairedscreen.train.celleval_run --out {output:q}"
        " --unavailable {params.python:q}; fi > {log:q} 2>&1"


rule train_evals:
    input:
        pseudobulk=path("rna_pseudobulk"),
        consensus=path("consensus"),
        splits=path("train_splits"),
        holdout=path("train_batch_holdout"),
        registry=SHEETS["perturbations"],
        celleval=[path("quality_celleval")] if TRAIN["evals"]["celleval"] else [],
        eval_cells=path("quality_eval_cells"),
        # split-half ceilings and the leakage audit: per-perturbation cell parts, one library/plate at a time
        rna_cells=per_library("rna_cells_lib"),
        paint_cells=per_plate("paint_cells"),
        # quarantined libraries / plates (on_empty: quarantine) stay out of the ceilings and the audit
        rna_quarantine=path("rna_quarantine"),
        paint_quarantine=path("paint_quarantine"),
        guides=SHEETS["guides"],
        de_summary=path("rna_de_summary"),   # the audit's DE counts (rna_de_merge)
    output:
        path("quality_evals"),
    params:
        config=reads("train_evals"),
    log:
        log("train_evals", "all"),
    benchmark:
        bench("train_evals", "all")
    threads: 1
    resources:
        mem_mb=4096,
    conda:
        CONDA_ENV
    script:
        "../scripts/train_evals.py"


rule train_croissant:
    input:
        splits=path("train_splits"),
        holdout=path("train_batch_holdout"),
        rna=path("train_rna", cell_type=CELL_TYPE),
        rna_obs=path("train_rna_obs", cell_type=CELL_TYPE),
        toml=path("train_cell_load"),
        crop_size=path("train_crop_size") if IMAGE_PLATES else [],
        crops=per_image_plate("train_crops"),  # a CellProfiler plate has no images: no crops
        crops_obs=per_image_plate("train_crops_obs"),
        datasheet=path("datasheet"),
    output:
        path("train_croissant"),
    params:
        config=reads("train_croissant"),
        plates=IMAGE_PLATES,
    log:
        log("train_croissant", "all"),
    benchmark:
        bench("train_croissant", "all")
    threads: 1
    resources:
        mem_mb=2048,
    conda:
        CONDA_ENV
    script:
        "../scripts/train_croissant.py"
