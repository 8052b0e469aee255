"""kb ref (kite): the guide sheet -> feature-barcode index."""
from pairedscreen.rna.stages import build_guide_reference

from pairedscreen.logs import snakemake_log

with snakemake_log(snakemake):
    build_guide_reference(guides=snakemake.input.guides, index=snakemake.output.index,
                          t2g=snakemake.output.t2g, features=snakemake.output.features)
