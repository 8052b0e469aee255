"""Every FASTQ of one library checked (sha256, gzip, records, R1/R2, read lengths) before kb count."""
from pairedscreen.logs import snakemake_log
from pairedscreen.rna.stages import run_fastq_check

with snakemake_log(snakemake):
    run_fastq_check(library=snakemake.wildcards.library, chemistry=snakemake.params.chemistry,
                 gex_r1=list(snakemake.input.gex_r1), gex_r2=list(snakemake.input.gex_r2),
                 guide_r1=list(snakemake.input.guide_r1), guide_r2=list(snakemake.input.guide_r2),
                 guide_sheet=snakemake.input.guide_sheet, out=snakemake.output[0], threads=snakemake.threads)
