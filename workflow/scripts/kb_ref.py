"""kb ref: transcriptome FASTA + GTF -> kallisto index + transcript-to-gene map."""
from pairedscreen.logs import snakemake_log
from pairedscreen.rna.stages import run_kb_ref

with snakemake_log(snakemake):
    run_kb_ref(fasta=snakemake.input.fasta, gtf=snakemake.input.gtf, index=snakemake.output.index,
               t2g=snakemake.output.t2g, threads=snakemake.threads)
