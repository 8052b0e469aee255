"""One chunk of wells: per-object CellProfiler-named features for Nuclei, Cells, Cytoplasm (and, with
paint.features.preset jump, the chunk's per-site JUMP Image_* table)."""
from pairedscreen.logs import snakemake_log
from pairedscreen.paint.stages import run_paint_features

with snakemake_log(snakemake):
    run_paint_features(index=snakemake.input.index, illum_dir=snakemake.input.illum, masks_dir=snakemake.input.masks,
                       plate=snakemake.params.plate, params=dict(snakemake.params.config["paint"]["features"]), out=snakemake.output[0],
                       images_out=getattr(snakemake.output, "image_features", None))
