"""The libraries' DE tables -> the screen's DE table (libraries combined) and its per-perturbation summary."""
from pairedscreen.logs import snakemake_log
from pairedscreen.rna.stages import run_rna_de_merge

with snakemake_log(snakemake):
    de = snakemake.params.config["rna"]["de"]
    run_rna_de_merge(tables=list(snakemake.input.tables), registry=snakemake.input.registry,
                     de_out=snakemake.output.de, summary_out=snakemake.output.summary, alpha=de["alpha"],
                     min_abs_log2fc=de["min_abs_log2fc"])
