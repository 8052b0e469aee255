"""results/train/splits.tsv: one set of held-out perturbation splits for both arms."""
from pairedscreen.logs import snakemake_log
from pairedscreen.train.stages import run_splits

with snakemake_log(snakemake):
    run_splits(registry=snakemake.input.registry, params=dict(snakemake.params.config["train"]),
               out=snakemake.output.splits)
