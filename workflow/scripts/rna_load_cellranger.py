"""A Cell Ranger count/multi folder of one library -> raw AnnData (all barcodes) + guide counts + input record."""
from pairedscreen.logs import snakemake_log
from pairedscreen.rna.stages import run_rna_load_cellranger

with snakemake_log(snakemake):
    run_rna_load_cellranger(outs=snakemake.input.outs, guide_sheet=snakemake.input.guide_sheet,
                            library=snakemake.params.library, batch=snakemake.params.batch,
                            cells=snakemake.params.config["rna"]["cellranger"]["cells"], raw=snakemake.output.raw,
                            guides=snakemake.output.guides, inputs=snakemake.output.inputs)
