"""One plate: per-cell table with plate-map metadata + per-well aggregates (and, with paint.features.preset
jump, the plate's per-site JUMP Image_* table)."""
from pairedscreen.logs import snakemake_log
from pairedscreen.paint.stages import run_paint_images, run_paint_plate

with snakemake_log(snakemake):
    run_paint_plate(features=list(snakemake.input.features), masks=list(snakemake.input.masks),
                    index=snakemake.input.index, plate_map=snakemake.input.plate_map, plate=snakemake.params.plate,
                    batch=snakemake.params.batch, aggregate=snakemake.params.config["profiles"]["aggregate"],
                    cells_out=snakemake.output.cells, wells_out=snakemake.output.wells)
    if hasattr(snakemake.output, "paint_images"):  # paint.features.preset jump
        run_paint_images(chunks=list(snakemake.input.images), out=snakemake.output.paint_images)
