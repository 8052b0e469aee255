"""results/quality/evals.json: cross-modal ridge on the held-out perturbations + the cell-eval baselines."""
from pairedscreen.logs import snakemake_log
from pairedscreen.train.stages import run_evals

with snakemake_log(snakemake):
    run_evals(pseudobulk=snakemake.input.pseudobulk, consensus=snakemake.input.consensus,
              splits=snakemake.input.splits, holdout=snakemake.input.holdout,
              registry=snakemake.input.registry, params=dict(snakemake.params.config["train"]),
              truth_dir=snakemake.params.config["truth_dir"] or None,
              celleval=snakemake.input.celleval[0] if snakemake.input.celleval else None,
              out=snakemake.output[0], eval_cells=snakemake.input.eval_cells,
              rna_cells=list(snakemake.input.rna_cells), paint_cells=list(snakemake.input.paint_cells),
              guides=snakemake.input.guides, profiles_config=snakemake.params.config["profiles"],
              de_summary=snakemake.input.de_summary, rna_quarantine=snakemake.input.rna_quarantine,
              paint_quarantine=snakemake.input.paint_quarantine)
