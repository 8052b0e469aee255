"""kb ref (kite): the guide sheet -> feature-barcode index."""
from pairedscreen.logs import snakemake_log
from pairedscreen.rna.stages import run_kb_ref_guides

with snakemake_log(snakemake):
    run_kb_ref_guides(guides=snakemake.input.guides, index=snakemake.output.index,
                      t2g=snakemake.output.t2g, features=snakemake.output.features)
