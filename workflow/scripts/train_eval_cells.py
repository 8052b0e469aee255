"""results/quality/eval_cells.h5ad: the seeded per-perturbation subsample of the cell-load export that
cell-eval scores."""
from pairedscreen.logs import snakemake_log
from pairedscreen.train.stages import run_eval_cells

with snakemake_log(snakemake):
    run_eval_cells(h5ad=snakemake.input.h5ad, params=dict(snakemake.params.config["train"]), out=snakemake.output[0])
