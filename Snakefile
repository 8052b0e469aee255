# pairedscreen: paired Perturb-seq + Cell Painting screen -> matched, QC'd AnnData/MuData.
from snakemake.utils import min_version

min_version("9.0")

configfile: "config/config.yaml"


include: "workflow/rules/common.smk"
include: "workflow/rules/rna.smk"
include: "workflow/rules/paint.smk"
include: "workflow/rules/pair.smk"
include: "workflow/rules/report.smk"


rule all:
    input:
        all_outputs(),
    default_target: True
