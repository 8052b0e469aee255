# Paint arm: images + plate map -> image index/QC -> illumination -> Cellpose masks -> features -> wells.
# A plate given as CellProfiler output skips all of that: paint_load_cellprofiler writes its cells/wells.
# Which rule makes a plate's outputs is chosen by the wildcard constraints built from plates.tsv.


rule paint_index:
    input:
        plate_map=lambda wc: plate_row(wc)["plate_map"],
        manifest=plate_manifest,  # image names, sizes, mtimes (not every file: planning scales)
    output:
        path("image_index"),
    wildcard_constraints:
        plate=library_pattern(IMAGE_PLATES),
    params:
        plate=lambda wc: wc.plate,
        image_dir=lambda wc: plate_row(wc)["image_dir"],
        config=reads("paint_index"),
    log:
        log("paint_index", "{plate}"),
    benchmark:
        bench("paint_index", "{plate}")
    threads: 1
    resources:
        mem_mb=2048,
    conda:
        CONDA_ENV
    script:
        "../scripts/paint_index.py"


rule paint_illum:
    input:
        index=path("image_index"),
    output:
        directory(path("illum")),
    wildcard_constraints:
        plate=library_pattern(IMAGE_PLATES),
    params:
        config=reads("paint_illum"),
    log:
        log("paint_illum", "{plate}"),
    benchmark:
        bench("paint_illum", "{plate}")
    threads: 1
    resources:
        mem_mb=2048,
    conda:
        CONDA_ENV
    script:
        "../scripts/paint_illum.py"


rule paint_segment:
    input:
        index=path("image_index"),
        illum=path("illum"),
        models=model_inputs(),
    output:
        directory(path("masks")),
    wildcard_constraints:
        plate=library_pattern(IMAGE_PLATES),
    params:
        wells=lambda wc: CHUNKS[wc.plate][wc.chunk],
        config=reads("paint_segment"),
        models=MODELS,
    log:
        log("paint_segment", "{plate}_{chunk}"),
    benchmark:
        bench("paint_segment", "{plate}_{chunk}")
    threads: 2
    resources:
        mem_mb=8192,
        gpu=1 if str(SEG["gpu"]).lower() != "false" else 0,
    conda:
        CONDA_ENV
    script:
        "../scripts/paint_segment.py"


rule paint_features:
    input:
        index=path("image_index"),
        illum=path("illum"),
        masks=path("masks"),
    output:
        path("features"),
        **jump_images("image_features"),
    wildcard_constraints:
        plate=library_pattern(IMAGE_PLATES),
    params:
        plate=lambda wc: wc.plate,
        config=reads("paint_features"),
    log:
        log("paint_features", "{plate}_{chunk}"),
    benchmark:
        bench("paint_features", "{plate}_{chunk}")
    threads: 1
    resources:
        mem_mb=4096,
    conda:
        CONDA_ENV
    script:
        "../scripts/paint_features.py"


rule paint_plate:
    input:
        features=chunk_features,
        masks=chunk_masks,
        index=path("image_index"),
        plate_map=lambda wc: plate_row(wc)["plate_map"],
        images=chunk_images if JUMP_IMAGES else [],
    output:
        cells=path("paint_cells"),
        wells=path("paint_wells"),
        **jump_images("paint_images"),
    wildcard_constraints:
        plate=library_pattern(IMAGE_PLATES),
    params:
        plate=lambda wc: wc.plate,
        batch=lambda wc: plate_row(wc)["batch"],
        config=reads("paint_plate"),
    log:
        log("paint_plate", "{plate}"),
    benchmark:
        bench("paint_plate", "{plate}")
    threads: 1
    resources:
        mem_mb=4096,
    conda:
        CONDA_ENV
    script:
        "../scripts/paint_plate.py"


rule paint_load_cellprofiler:
    input:
        source=lambda wc: plate_row(wc)["cellprofiler"],
        plate_map=lambda wc: plate_row(wc)["plate_map"],
    output:
        cells=path("paint_cells"),
        wells=path("paint_wells"),
        record=path("paint_cellprofiler"),
    wildcard_constraints:
        plate=library_pattern(CELLPROFILER_PLATES),
    params:
        plate=lambda wc: wc.plate,
        batch=lambda wc: plate_row(wc)["batch"],
        source_plate=lambda wc: cellprofiler_plate(plate_row(wc)) or "",
        config=reads("paint_load_cellprofiler"),
    log:
        log("paint_load_cellprofiler", "{plate}"),
    benchmark:
        bench("paint_load_cellprofiler", "{plate}")
    threads: 1
    resources:
        mem_mb=4096,
    conda:
        CONDA_ENV
    script:
        "../scripts/paint_load_cellprofiler.py"
