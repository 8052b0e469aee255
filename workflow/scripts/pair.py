"""Both arms joined by perturbation id: perturbations.h5mu, rna.h5ad, paint.h5ad (+ cells.h5mu)."""
from pairedscreen.logs import snakemake_log
from pairedscreen.pair.stages import run_pair

with snakemake_log(snakemake):
    run_pair(pseudobulk=snakemake.input.pseudobulk, consensus=snakemake.input.consensus,
             quality_table=snakemake.input.quality_table, registry=snakemake.input.registry,
             rna_cells=snakemake.input.rna_cells, paint_cells=list(snakemake.input.paint_cells),
             h5mu_out=snakemake.output.h5mu, rna_out=snakemake.output.rna, paint_out=snakemake.output.paint,
             cell_index_out=snakemake.output.cell_index, splits=snakemake.input.splits,
             holdout=snakemake.input.holdout,
             cells_out=snakemake.output.cells[0] if snakemake.output.cells else None)
