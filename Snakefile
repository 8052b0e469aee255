# pairedscreen: paired Perturb-seq + Cell Painting screen -> matched, QC'd AnnData/MuData.
from snakemake.utils import min_version

min_version("9.0")

# a YAML syntax error in the config: the file, line and column (Snakemake's own parser says only "not valid
# JSON or YAML"); src/ on sys.path as common.smk puts it there
import sys as _sys
from pathlib import Path as _Path

_sys.path.insert(0, str(_Path(workflow.basedir) / "src"))
try:
    from pairedscreen.config import check_yaml_syntax

    check_yaml_syntax("config/config.yaml")
except Exception as _exc:
    from pairedscreen.errors import exit_if_known

    exit_if_known(_exc)
    raise


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


onstart:
    # SLURM runs: the account and partitions exist for this user, checked before the first sbatch
    # (one onstart per workflow: a second one in an included file is silently replaced by this one)
    from pairedscreen.errors import exit_if_known
    from pairedscreen.slurm import check_workflow

    try:
        check_workflow(workflow)
    except Exception as _exc:  # SlurmSetupError lists every problem and its fix: no traceback
        exit_if_known(_exc)
        raise
    # no output of an earlier run survives that this run would not write (see pairedscreen.stale)
    # (the sweep of undeclared aggregate files only when the run builds the whole screen, rule all)
    if workflow.is_main_process and not workflow.touch:
        from pairedscreen.stale import AGGREGATE_FOLDERS, clear_before_run

        _jobs = list(workflow.dag.jobs)
        _removed = clear_before_run(
            rerun_outputs=[str(f) for job in workflow.dag.needrun_jobs() for f in job.output],
            declared=[str(f) for job in _jobs for f in job.output],
            folders=AGGREGATE_FOLDERS if any(job.rule.name == "all" for job in _jobs) else ())
        if _removed:
            print(f"pairedscreen: removed {len(_removed)} output(s) of an earlier run that this run rewrites "
                  "or no longer writes", file=sys.stderr)


rule all:
    input:
        all_outputs(),
    default_target: True
