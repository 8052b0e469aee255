"""results/train/croissant.json: Croissant JSON-LD of the training export."""
from pairedscreen.logs import snakemake_log
from pairedscreen.train.stages import run_croissant

with snakemake_log(snakemake):
    run_croissant(splits=snakemake.input.splits, rna_obs=snakemake.input.rna_obs,
                  crops_obs=list(snakemake.input.crops_obs), plates=list(snakemake.params.plates),
                  datasheet=snakemake.input.datasheet, params=dict(snakemake.params.config["train"]["croissant"]),
                  out=snakemake.output[0])
