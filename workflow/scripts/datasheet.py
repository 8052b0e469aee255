"""results/datasheet.json: inputs with checksums, versions, config, per-stage counts, quality metrics."""
from pairedscreen.logs import snakemake_log
from pairedscreen.pair.stages import run_datasheet

with snakemake_log(snakemake):
    run_datasheet(inputs=snakemake.input, config=dict(snakemake.params.config),
                  truth_dir=snakemake.params.config["truth_dir"] or None, libraries=list(snakemake.params.libraries),
                  plates=list(snakemake.params.plates), chunks=dict(snakemake.params.chunks),
                  gex_r1=dict(snakemake.params.gex_r1), out=snakemake.output[0],
                  cellprofiler_plates=list(snakemake.params.cellprofiler_plates))
