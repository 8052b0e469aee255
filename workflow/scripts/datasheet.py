"""results/datasheet.json: inputs with checksums, versions, config, per-stage counts, quality metrics."""
from pairedscreen.logs import snakemake_log
from pairedscreen.pair.stages import write_datasheet

with snakemake_log(snakemake):
    write_datasheet(inputs=snakemake.input, config=dict(snakemake.params.config),
                    truth_dir=snakemake.params.truth_dir or None, libraries=list(snakemake.params.libraries),
                    plates=list(snakemake.params.plates), out=snakemake.output[0])
