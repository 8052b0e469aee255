# Pair: well profiles normalised to controls, quality metrics, the matched AnnData/MuData and the datasheet.


rule profiles:
    input:
        wells=per_plate("paint_wells"),
        registry=SHEETS["perturbations"],
    output:
        profiles=path("profiles"),
        consensus=path("consensus"),
        quarantine=path("paint_quarantine"),
        steps=directory(path("profiles_steps")),
    params:
        config=reads("profiles"),
    log:
        log("profiles", "all"),
    benchmark:
        bench("profiles", "all")
    threads: 1
    resources:
        mem_mb=8192,
    conda:
        CONDA_ENV
    script:
        "../scripts/profiles.py"


rule quality:
    input:
        profiles=if_paint("profiles"),
        consensus=if_paint("consensus"),
        paint_quarantine=if_paint("paint_quarantine"),
        profiles_steps=if_paint("profiles_steps"),   # the correction chain's steps, read beside profiles
        rna_cells=per_library("rna_cells_lib"),
        pseudobulk=if_rna("rna_pseudobulk"),
        knockdown=if_rna("rna_knockdown"),
        wells=per_plate("paint_wells"),
        paint_cells=per_plate("paint_cells"),
        registry=SHEETS["perturbations"],
    output:
        metrics=path("quality_metrics"),
        table=report(path("quality_table"), caption="../report/quality.rst", category="Paired quality"),
        similarity=if_both("quality_similarity"),
        position=if_paint("quality_position"),
    params:
        config=reads("quality"),
    log:
        log("quality", "all"),
    benchmark:
        bench("quality", "all")
    threads: 2
    resources:
        mem_mb=8192,
    conda:
        CONDA_ENV
    script:
        "../scripts/quality.py"


rule pair:
    input:
        pseudobulk=if_rna("rna_pseudobulk"),
        consensus=if_paint("consensus"),
        quality_table=path("quality_table"),
        registry=SHEETS["perturbations"],
        rna_cells=if_rna("rna_cells"),
        paint_cells=per_plate("paint_cells"),
        splits=path("train_splits"),
        holdout=path("train_batch_holdout"),
        paint_quarantine=if_paint("paint_quarantine"),
        de=if_rna("rna_de"),
        de_summary=if_rna("rna_de_summary"),
    output:
        h5mu=report(path("paired_h5mu"), caption="../report/paired.rst", category="Paired dataset"),
        rna=if_rna("paired_rna"),
        paint=if_paint("paired_paint"),
        cell_index=path("cell_index"),
        cells=[path("paired_cells")] if WRITE_CELLS_H5MU else [],
    params:
        config=reads("pair"),
        write_cells=WRITE_CELLS_H5MU,
    log:
        log("pair", "all"),
    benchmark:
        bench("pair", "all")
    threads: 1
    resources:
        mem_mb=8192,
    conda:
        CONDA_ENV
    script:
        "../scripts/pair.py"


rule datasheet:
    input:
        h5mu=path("paired_h5mu"),
        metrics=path("quality_metrics"),
        rna_inputs=per_library("rna_inputs"),
        rna_cells=per_library("rna_cells_lib"),
        raw=per_library("rna_raw"),
        rna_quarantine=if_rna("rna_quarantine"),
        paint_quarantine=if_paint("paint_quarantine"),
        de_summary=if_rna("rna_de_summary"),
        image_index=per_image_plate("image_index"),
        cellprofiler=per_cellprofiler_plate("paint_cellprofiler"),
        paint_cells=per_plate("paint_cells"),
        sheets=[SHEETS[k] for k in ("perturbations", "guides", "rna_libraries", "plates")],
        plate_maps=[plate_maps[p].attrs["source"] for p in PLATES],
        # the ledger's counts, each stored by the stage that made it
        barcode_ranks=per_library("rna_barcode_ranks"),
        rna_merged=if_rna("rna_cells"),
        pseudobulk=if_rna("rna_pseudobulk"),
        masks=[m for p in IMAGE_PLATES for m in chunk_paths("masks", p)],
        features=[f for p in IMAGE_PLATES for f in chunk_paths("features", p)],
        paint_wells=per_plate("paint_wells"),
        profiles=if_paint("profiles"),
        consensus=if_paint("consensus"),
        outputs=digested_outputs(),  # content digests
        evals=if_both("quality_evals"),
    output:
        report(path("datasheet"), caption="../report/datasheet.rst", category="Paired dataset"),
    params:
        config=reads("datasheet"),
        libraries=LIBRARIES,
        plates=PLATES,
        chunks={p: list(CHUNKS[p]) for p in IMAGE_PLATES},
        cellprofiler_plates=CELLPROFILER_PLATES,
        gex_r1={r["library_id"]: library_fastqs(r, "gex", "r1") for r in SCREEN.libraries.to_dict("records")},
    log:
        log("datasheet", "all"),
    benchmark:
        bench("datasheet", "all")
    threads: 1
    resources:
        mem_mb=4096,
    conda:
        CONDA_ENV
    script:
        "../scripts/datasheet.py"
