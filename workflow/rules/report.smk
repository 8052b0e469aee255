# The QC report: one self-contained HTML file.


rule report:
    input:
        datasheet=path("datasheet"),
        h5mu=path("paired_h5mu"),
        quality=path("quality_metrics"),
        quality_table=path("quality_table"),
        similarity=if_both("quality_similarity"),
        position=if_paint("quality_position"),
        rna_inputs=per_library("rna_inputs"),
        rna_cells=per_library("rna_cells_lib"),
        barcode_ranks=per_library("rna_barcode_ranks"),
        knockdown=if_rna("rna_knockdown"),
        image_index=per_image_plate("image_index"),
        illum=per_image_plate("illum"),
        paint_wells=per_plate("paint_wells"),
        paint_cells=per_plate("paint_cells"),
        masks=[m for p in IMAGE_PLATES for m in chunk_paths("masks", p)],
        truth=[f"{TRUTH_DIR}/perturbations.tsv"] if TRUTH_DIR else [],
        evals=if_both("quality_evals"),
    output:
        report(path("report"), caption="../report/report.rst", category="Report"),
    params:
        config=reads("report"),
    log:
        log("report", "all"),
    benchmark:
        bench("report", "all")
    threads: 1
    resources:
        mem_mb=4096,
    conda:
        CONDA_ENV
    script:
        "../scripts/report.py"
