"""kb count for one library: GEX (kb_count_gex) or guide capture (kb_count_guide, with the guide layout)."""
from pairedscreen.logs import snakemake_log
from pairedscreen.rna.stages import run_kb_count

with snakemake_log(snakemake):
    run_kb_count(r1=list(snakemake.input.r1), r2=list(snakemake.input.r2), index=snakemake.input.index,
                 t2g=snakemake.input.t2g, chemistry=snakemake.params.technology,
                 whitelist=snakemake.input.whitelist[0] if snakemake.input.whitelist else None,
                 guide_features=snakemake.input.get("features"), out_dir=snakemake.output[0],
                 threads=snakemake.threads, mem_mb=snakemake.resources.mem_mb)
