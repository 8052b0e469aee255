"""One library's cells -> its per-perturbation DE table vs the library's control cells."""
from pairedscreen.logs import snakemake_log
from pairedscreen.rna.stages import run_rna_de

with snakemake_log(snakemake):
    run_rna_de(cells=snakemake.input.cells, registry=snakemake.input.registry, out=snakemake.output[0],
               min_cells=snakemake.params.config["rna"]["de"]["min_cells_per_library"])
