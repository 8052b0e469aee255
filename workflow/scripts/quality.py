"""Quality metrics of both arms: replicate mAP, effect sizes, plate position, batch, concordance, truth.
An arm missing from the sheets has no inputs here (empty lists -> None)."""
from pairedscreen.logs import snakemake_log
from pairedscreen.quality.stage import run_quality

inp = snakemake.input


def one(files):
    return files[0] if files else None


with snakemake_log(snakemake):
    run_quality(profiles=one(inp.profiles), consensus=one(inp.consensus),
                rna_cells=list(inp.rna_cells) or None, pseudobulk=one(inp.pseudobulk),
                knockdown=one(inp.knockdown), wells=list(inp.wells), registry=inp.registry,
                params=dict(snakemake.params.config["quality"]), truth_dir=snakemake.params.config["truth_dir"] or None,
                metrics_out=snakemake.output.metrics, table_out=snakemake.output.table,
                paint_cells=list(inp.paint_cells), paint_quarantine=one(inp.paint_quarantine),
                similarity_out=one(snakemake.output.similarity), position_out=one(snakemake.output.position),
                profiles_config=snakemake.params.config["profiles"])
