"""results/train/paint/{plate}/crops.zarr + obs.parquet: per-cell crops of one plate."""
from pairedscreen.logs import snakemake_log
from pairedscreen.train.stages import run_crops

with snakemake_log(snakemake):
    run_crops(cells=snakemake.input.cells, index=snakemake.input.index, illum=snakemake.input.illum,
              masks=list(snakemake.input.masks), splits=snakemake.input.splits,
              batch_split=snakemake.params.batch_split, crop_size=snakemake.input.crop_size,
              plate=snakemake.wildcards.plate, params=dict(snakemake.params.config["train"]),
              zarr_out=snakemake.output.zarr, obs_out=snakemake.output.obs)
