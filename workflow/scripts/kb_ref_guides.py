"""kb ref (kite): the guide sheet -> feature-barcode index."""
from pairedscreen.logs import snakemake_log
from pairedscreen.rna.stages import build_guide_reference

with snakemake_log(snakemake):
    build_guide_reference(guides=snakemake.input.guides, index=snakemake.output.index,
                          t2g=snakemake.output.t2g, features=snakemake.output.features)
