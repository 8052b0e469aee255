"""All plates: well profiles normalised to the plate's controls, feature selection, consensus."""
from pairedscreen.logs import snakemake_log
from pairedscreen.paint.stages import run_profiles

with snakemake_log(snakemake):
    run_profiles(wells=list(snakemake.input.wells), registry=snakemake.input.registry,
                 params=dict(snakemake.params.config["profiles"]), profiles_out=snakemake.output.profiles,
                 consensus_out=snakemake.output.consensus, quarantine_out=snakemake.output.quarantine,
                 on_empty=snakemake.params.config["on_empty"])
