"""One library: cell calling, QC flags, doublets, guide assignment -> cells.h5ad + barcode ranks."""
from pairedscreen.logs import snakemake_log
from pairedscreen.rna.stages import run_rna_cells

with snakemake_log(snakemake):
    run_rna_cells(raw=snakemake.input.raw, guides=snakemake.input.guides, guide_sheet=snakemake.input.guide_sheet,
                  registry=snakemake.input.registry, expected_cells=snakemake.params.expected_cells,
                  params=snakemake.params.config["rna"], cells_out=snakemake.output.cells, ranks_out=snakemake.output.ranks,
                  threads=snakemake.threads)
