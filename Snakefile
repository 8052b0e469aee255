# pairedscreen: paired Perturb-seq + Cell Painting screen -> matched, QC'd AnnData/MuData.
from snakemake.utils import min_version

min_version("9.0")

configfile: "config/config.yaml"


try:
    include: "workflow/rules/common.smk"
except Exception as _exc:  # a known pairedscreen error (bad sheet, config...): its message, no traceback
    from pairedscreen.errors import exit_if_known  # importable: common.smk's first lines put src/ on sys.path

    exit_if_known(_exc)
    raise
include: "workflow/rules/rna.smk"
include: "workflow/rules/paint.smk"
include: "workflow/rules/pair.smk"
include: "workflow/rules/report.smk"
include: "workflow/rules/train.smk"


rule all:
    input:
        all_outputs(),
    default_target: True
