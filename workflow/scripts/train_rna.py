"""results/train/rna/{cell_type}.h5ad + cell_load.toml: the RNA arm as cell-load reads it, streamed from the
per-library cells files."""
from pairedscreen.logs import snakemake_log
from pairedscreen.train.stages import run_rna_export

with snakemake_log(snakemake):
    run_rna_export(rna_cells=list(snakemake.input.rna_cells), registry=snakemake.input.registry,
                   splits=snakemake.input.splits, holdout=snakemake.input.holdout,
                   params=dict(snakemake.params.config["train"]), h5ad_out=snakemake.output.h5ad,
                   toml_out=snakemake.output.toml, obs_out=snakemake.output.obs)
