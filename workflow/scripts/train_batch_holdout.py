"""results/train/batch_holdout.tsv: the libraries and plates of the held-out batch."""
from pairedscreen.logs import snakemake_log
from pairedscreen.train.stages import run_batch_holdout

with snakemake_log(snakemake):
    run_batch_holdout(libraries=snakemake.input.libraries, plates=snakemake.input.plates,
                      params=dict(snakemake.params.config["train"]), out=snakemake.output[0])
