"""All libraries -> merged cells, pseudobulk per perturbation, knockdown table (+ quarantined libraries)."""
from pairedscreen.logs import snakemake_log
from pairedscreen.rna.stages import run_rna_merge

with snakemake_log(snakemake):
    run_rna_merge(cells=list(snakemake.input.cells), summaries=list(snakemake.input.summaries),
                  registry=snakemake.input.registry,
                  alpha=snakemake.params.config["rna"]["knockdown"]["alpha"], cells_out=snakemake.output.cells,
                  pseudobulk_out=snakemake.output.pseudobulk, knockdown_out=snakemake.output.knockdown,
                  quarantine_out=snakemake.output.quarantine, on_empty=snakemake.params.config["on_empty"])
