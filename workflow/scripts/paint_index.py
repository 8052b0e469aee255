"""One plate: image index (every file, shape, dtype, checksum, quarantine) + per-site image QC."""
from pairedscreen.logs import snakemake_log
from pairedscreen.paint.stages import run_paint_index

paint = snakemake.params.config["paint"]

with snakemake_log(snakemake):
    run_paint_index(plate=snakemake.params.plate, image_dir=snakemake.params.image_dir,
                    plate_map=snakemake.input.plate_map, pattern=paint["image_pattern"],
                    channels=dict(paint["channels"]), on_bad_image=paint["on_bad_image"],
                    qc=dict(paint["qc"]), out=snakemake.output[0])
