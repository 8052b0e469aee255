# RNA arm: FASTQs -> kb counts (or a Cell Ranger output folder) -> called, QC'd cells with guide calls -> merged cells, pseudobulk, knockdown.


if not PREBUILT_INDEX:

    rule kb_ref:
        input:
            fasta=REF["fasta"],
            gtf=REF["gtf"],
        output:
            index=path("kb_index"),
            t2g=path("kb_t2g"),
        log:
            log("kb_ref", "reference"),
        benchmark:
            bench("kb_ref", "reference")
        threads: 2
        resources:
            mem_mb=4096,
        conda:
            CONDA_ENV
        script:
            "../scripts/kb_ref.py"


rule kb_ref_guides:
    input:
        guides=SHEETS["guides"],
    output:
        index=path("guide_index"),
        t2g=path("guide_t2g"),
        features=path("guide_features"),
    log:
        log("kb_ref_guides", "guides"),
    benchmark:
        bench("kb_ref_guides", "guides")
    threads: 1
    resources:
        mem_mb=2048,
    conda:
        CONDA_ENV
    script:
        "../scripts/kb_ref_guides.py"


rule rna_fastq_check:
    input:
        gex_r1=fastqs("gex", "r1"),
        gex_r2=fastqs("gex", "r2"),
        guide_r1=fastqs("guide", "r1"),
        guide_r2=fastqs("guide", "r2"),
        guide_sheet=SHEETS["guides"],
    output:
        path("rna_fastq_check"),
    params:
        chemistry=lambda wc: library_row(wc)["chemistry"],
    log:
        log("rna_fastq_check"),
    benchmark:
        bench("rna_fastq_check", "{library}")
    priority: 10
    threads: 2
    resources:
        mem_mb=1024,
    conda:
        CONDA_ENV
    script:
        "../scripts/rna_fastq_check.py"


rule kb_count_gex:
    input:
        checked=path("rna_fastq_check"),
        r1=fastqs("gex", "r1"),
        r2=fastqs("gex", "r2"),
        index=KB_INDEX,
        t2g=KB_T2G,
        whitelist=[WHITELIST] if WHITELIST else [],
    output:
        directory(path("kb_gex")),
    params:
        technology=lambda wc: library_row(wc)["chemistry"],
    log:
        log("kb_count_gex"),
    benchmark:
        bench("kb_count_gex", "{library}")
    threads: 2
    resources:
        mem_mb=KB_MEM_MB,
    conda:
        CONDA_ENV
    script:
        "../scripts/kb_count.py"


rule kb_count_guide:
    input:
        checked=path("rna_fastq_check"),
        r1=fastqs("guide", "r1"),
        r2=fastqs("guide", "r2"),
        index=path("guide_index"),
        t2g=path("guide_t2g"),
        features=path("guide_features"),
        whitelist=[WHITELIST] if WHITELIST else [],
    output:
        directory(path("kb_guide")),
    params:
        technology=lambda wc: library_row(wc)["chemistry"],
    log:
        log("kb_count_guide"),
    benchmark:
        bench("kb_count_guide", "{library}")
    threads: 2
    resources:
        mem_mb=KB_MEM_MB,
    conda:
        CONDA_ENV
    script:
        "../scripts/kb_count.py"


rule rna_load:
    input:
        gex=path("kb_gex"),
        guide=path("kb_guide"),
        fastq_check=path("rna_fastq_check"),
    output:
        raw=path("rna_raw"),
        guides=path("rna_guides_raw"),
        inputs=path("rna_inputs"),
    wildcard_constraints:
        library=library_pattern(FASTQ_LIBRARIES),
    params:
        library=lambda wc: wc.library,
        batch=lambda wc: library_row(wc)["batch"],
    log:
        log("rna_load"),
    benchmark:
        bench("rna_load", "{library}")
    threads: 1
    resources:
        mem_mb=4096,
    conda:
        CONDA_ENV
    script:
        "../scripts/rna_load.py"


rule rna_load_cellranger:
    input:
        outs=lambda wc: library_row(wc)["cellranger_outs"],
        guide_sheet=SHEETS["guides"],
    output:
        raw=path("rna_raw"),
        guides=path("rna_guides_raw"),
        inputs=path("rna_inputs"),
    wildcard_constraints:
        library=library_pattern(CELLRANGER_LIBRARIES),
    params:
        library=lambda wc: wc.library,
        batch=lambda wc: library_row(wc)["batch"],
        config=reads("rna_load_cellranger"),
    log:
        log("rna_load_cellranger"),
    benchmark:
        bench("rna_load_cellranger", "{library}")
    threads: 1
    resources:
        mem_mb=4096,
    conda:
        CONDA_ENV
    script:
        "../scripts/rna_load_cellranger.py"


rule rna_cells:
    input:
        raw=path("rna_raw"),
        guides=path("rna_guides_raw"),
        guide_sheet=SHEETS["guides"],
        registry=SHEETS["perturbations"],
    output:
        cells=path("rna_cells_lib"),
        ranks=path("rna_barcode_ranks"),
    params:
        expected_cells=lambda wc: int(library_row(wc)["expected_cells"]),
        config=reads("rna_cells"),
    log:
        log("rna_cells"),
    benchmark:
        bench("rna_cells", "{library}")
    threads: 2
    resources:
        mem_mb=8192,
    conda:
        CONDA_ENV
    script:
        "../scripts/rna_cells.py"


rule rna_summary:
    input:
        cells=path("rna_cells_lib"),
        registry=SHEETS["perturbations"],
    output:
        path("rna_summary"),
    log:
        log("rna_summary"),
    benchmark:
        bench("rna_summary", "{library}")
    threads: 1
    resources:
        mem_mb=8192,
    conda:
        CONDA_ENV
    script:
        "../scripts/rna_summary.py"


rule rna_merge:
    input:
        cells=per_library("rna_cells_lib"),
        summaries=per_library("rna_summary"),
        registry=SHEETS["perturbations"],
    output:
        cells=path("rna_cells"),
        pseudobulk=path("rna_pseudobulk"),
        knockdown=report(path("rna_knockdown"), caption="../report/knockdown.rst", category="RNA arm"),
        quarantine=path("rna_quarantine"),
    params:
        config=reads("rna_merge"),
    log:
        log("rna_merge", "all"),
    benchmark:
        bench("rna_merge", "all")
    threads: 1
    resources:
        mem_mb=8192,
    conda:
        CONDA_ENV
    script:
        "../scripts/rna_merge.py"


rule rna_de:
    input:
        cells=path("rna_cells_lib"),
        registry=SHEETS["perturbations"],
    output:
        path("rna_de_lib"),
    params:
        config=reads("rna_de"),
    log:
        log("rna_de"),
    benchmark:
        bench("rna_de", "{library}")
    threads: 1
    resources:
        mem_mb=8192,
    conda:
        CONDA_ENV
    script:
        "../scripts/rna_de.py"


rule rna_de_merge:
    input:
        tables=per_library("rna_de_lib"),
        registry=SHEETS["perturbations"],
    output:
        de=path("rna_de"),
        summary=path("rna_de_summary"),
    params:
        config=reads("rna_de_merge"),
    log:
        log("rna_de_merge", "all"),
    benchmark:
        bench("rna_de_merge", "all")
    threads: 1
    resources:
        mem_mb=4096,
    conda:
        CONDA_ENV
    script:
        "../scripts/rna_de_merge.py"
