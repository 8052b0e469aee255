"""A plate given as CellProfiler output -> results/paint/{plate}/cells.parquet, wells.parquet, cellprofiler.json."""
from pairedscreen.logs import snakemake_log
from pairedscreen.paint.stages import run_paint_load_cellprofiler

with snakemake_log(snakemake):
    cfg = snakemake.params.config
    run_paint_load_cellprofiler(snakemake.input.source, snakemake.params.source_plate or None,
                                snakemake.input.plate_map, snakemake.params.plate, snakemake.params.batch,
                                metadata=cfg["paint"]["cellprofiler"],
                                families=list(cfg["paint"]["features"]["families"]),
                                channels=list(cfg["paint"]["channels"]),
                                aggregate=cfg["profiles"]["aggregate"], cells_out=snakemake.output.cells,
                                wells_out=snakemake.output.wells, record_out=snakemake.output.record)
