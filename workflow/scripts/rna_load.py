"""kb outputs of one library -> raw AnnData (all barcodes) + guide counts + input checksums."""
from pairedscreen.logs import snakemake_log
from pairedscreen.rna.stages import run_rna_load

with snakemake_log(snakemake):
    run_rna_load(gex_dir=snakemake.input.gex, guide_dir=snakemake.input.guide,
                 fastq_check=snakemake.input.fastq_check, library=snakemake.params.library,
                 batch=snakemake.params.batch, raw=snakemake.output.raw, guides=snakemake.output.guides,
                 inputs=snakemake.output.inputs)
