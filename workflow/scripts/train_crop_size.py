"""results/train/paint/crop_size.json: the crop side S (configured, or fitted on the reference plate)."""
from pairedscreen.logs import snakemake_log
from pairedscreen.train.stages import run_crop_size

with snakemake_log(snakemake):
    run_crop_size(reference_cells=snakemake.input.cells, params=dict(snakemake.params.config["train"]["crops"]),
                  out=snakemake.output[0])
