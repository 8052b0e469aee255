"""Quality metrics of both arms: replicate mAP, effect sizes, plate position, batch, concordance, truth."""
from pairedscreen.logs import snakemake_log
from pairedscreen.quality.stage import run_quality

with snakemake_log(snakemake):
    run_quality(profiles=snakemake.input.profiles, consensus=snakemake.input.consensus,
                rna_cells=snakemake.input.rna_cells, pseudobulk=snakemake.input.pseudobulk,
                knockdown=snakemake.input.knockdown, wells=list(snakemake.input.wells),
                registry=snakemake.input.registry, params=dict(snakemake.params.quality),
                truth_dir=snakemake.params.truth_dir or None, metrics_out=snakemake.output.metrics,
                table_out=snakemake.output.table,
                paint_cells=list(snakemake.input.paint_cells),
                similarity_out=snakemake.output.similarity, position_out=snakemake.output.position)
