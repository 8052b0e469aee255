"""One plate: illumination function per channel (streaming robust mean, smoothed, mean 1)."""
from pairedscreen.logs import snakemake_log
from pairedscreen.paint.stages import run_paint_illum

with snakemake_log(snakemake):
    run_paint_illum(index=snakemake.input.index, out_dir=snakemake.output[0], params=dict(snakemake.params.config["paint"]["illumination"]))
