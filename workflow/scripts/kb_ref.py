"""kb ref: transcriptome FASTA + GTF -> kallisto index + transcript-to-gene map."""
from pairedscreen.rna.stages import build_reference

from pairedscreen.logs import snakemake_log

with snakemake_log(snakemake):
    build_reference(fasta=snakemake.input.fasta, gtf=snakemake.input.gtf, index=snakemake.output.index,
                    t2g=snakemake.output.t2g, threads=snakemake.threads)
