"""One library's cells -> its summary.h5ad (the pseudobulk and knockdown sufficient statistics)."""
from pairedscreen.logs import snakemake_log
from pairedscreen.rna.stages import run_rna_summary

with snakemake_log(snakemake):
    run_rna_summary(cells=snakemake.input.cells, registry=snakemake.input.registry, out=snakemake.output[0])
