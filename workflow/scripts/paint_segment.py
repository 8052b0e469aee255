"""One chunk of wells: Cellpose nuclei + cells (batched, GPU when present) -> nuclei/cells/cytoplasm masks."""
from pairedscreen.logs import snakemake_log
from pairedscreen.paint.stages import run_paint_segment

with snakemake_log(snakemake):
    run_paint_segment(index=snakemake.input.index, illum_dir=snakemake.input.illum, wells=list(snakemake.params.wells),
                      segmentation=dict(snakemake.params.config["paint"]["segmentation"]), models=dict(snakemake.params.models),
                      out_dir=snakemake.output[0], threads=snakemake.threads)
