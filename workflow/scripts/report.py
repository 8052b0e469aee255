"""results/report.html: the self-contained QC report."""
from pathlib import Path

from pairedscreen.logs import snakemake_log
from pairedscreen.report import build_report

with snakemake_log(snakemake):
    build_report(results_dir=Path(snakemake.output[0]).parent, config=None,
                 out_html=Path(snakemake.output[0]),
                 truth_dir=Path(snakemake.params.config["truth_dir"]) if snakemake.params.config["truth_dir"] else None)
