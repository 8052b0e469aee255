"""All libraries -> merged cells, pseudobulk per perturbation, knockdown table."""
from pairedscreen.logs import snakemake_log
from pairedscreen.rna.stages import merge_libraries

with snakemake_log(snakemake):
    merge_libraries(cells=list(snakemake.input.cells), registry=snakemake.input.registry,
                    alpha=snakemake.params.alpha, cells_out=snakemake.output.cells,
                    pseudobulk_out=snakemake.output.pseudobulk, knockdown_out=snakemake.output.knockdown)
