"""Both arms joined by perturbation id: perturbations.h5mu, rna.h5ad, paint.h5ad (+ cells.h5mu).
An arm missing from the sheets has no inputs/outputs here (empty lists -> None)."""
from pairedscreen.logs import snakemake_log
from pairedscreen.pair.stages import run_pair

inp, out = snakemake.input, snakemake.output


def one(files):
    return files[0] if files else None


with snakemake_log(snakemake):
    run_pair(pseudobulk=one(inp.pseudobulk), consensus=one(inp.consensus),
             quality_table=inp.quality_table, registry=inp.registry, rna_cells=one(inp.rna_cells),
             paint_cells=list(inp.paint_cells), h5mu_out=out.h5mu, rna_out=one(out.rna),
             paint_out=one(out.paint), cell_index_out=out.cell_index,
             cells_out=one(out.cells) if snakemake.params.write_cells else None, paint_quarantine=one(inp.paint_quarantine),
             splits=inp.splits, holdout=inp.holdout, de=one(inp.de), de_summary=one(inp.de_summary))
