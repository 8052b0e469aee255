"""One plate: illumination function per channel (streaming robust mean, smoothed, mean 1)."""
from pairedscreen.paint.stages import illumination

from pairedscreen.logs import snakemake_log

with snakemake_log(snakemake):
    illumination(index=snakemake.input.index, out_dir=snakemake.output[0], params=dict(snakemake.params.illumination))
