"""A real single-node SLURM (munge, MariaDB, slurmdbd, slurmctld, slurmd with a GPU GRES): the tiny screen
through `--profile profiles/slurm`; `sacct` shows every job COMPLETED with the CPUs and GPU its rule declares;
the outputs equal the local run's by content; a wrong account or partition is refused before any sbatch.

tests/slurm/install.sh installs the Debian packages when missing (root; CI runs as root), start.sh starts
the daemons on private ports and state, stop.sh stops exactly those when the session ends.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time

import pandas as pd
import pytest
import yaml
from workdir import REPO, planned_jobs, snakemake

pytestmark = [pytest.mark.e2e, pytest.mark.slurm]

SCRIPTS = REPO / "tests" / "slurm"
ACCOUNT = "screen"
ENV = {"PAIREDSCREEN_SLURM_ACCOUNT": ACCOUNT, "PAIREDSCREEN_SLURM_PARTITION": "cpu",
       "PAIREDSCREEN_SLURM_GPU_PARTITION": "gpu"}
FAST = ("--slurm-init-seconds-before-status-checks", "2")   # a test cluster answers at once


def _unavailable(msg: str) -> None:
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(msg)
    pytest.skip(msg)


@pytest.fixture(scope="session")
def slurm_cluster(tmp_path_factory):
    """A running test cluster for the session: {'SLURM_CONF': ...}; every daemon stopped afterwards."""
    if os.geteuid() != 0 and shutil.which("slurmctld") is None:
        _unavailable("SLURM is not installed and installing it needs root (tests/slurm/install.sh)")
    inst = subprocess.run([str(SCRIPTS / "install.sh")], capture_output=True, text=True, timeout=1200)
    if inst.returncode != 0:
        _unavailable(f"tests/slurm/install.sh failed: {(inst.stdout + inst.stderr)[-2000:]}")
    state = tmp_path_factory.mktemp("slurm")
    try:   # a start that fails half-way still has its daemons stopped (by the pids it wrote)
        start = subprocess.run([str(SCRIPTS / "start.sh"), str(state)], capture_output=True, text=True,
                               timeout=600)
        assert start.returncode == 0, (start.stdout + start.stderr)[-4000:]
        yield {"SLURM_CONF": str(state / "slurm.conf")}
    finally:
        pids = {p.name: int(p.read_text()) for p in (state / "pids").glob("*.pid")}
        subprocess.run([str(SCRIPTS / "stop.sh"), str(state)], capture_output=True, text=True, timeout=300)
        alive = [name for name, pid in pids.items() if _alive(pid)]
        assert not alive, f"daemons still running after stop.sh: {alive}"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _sacct(env: dict[str, str], since: str) -> pd.DataFrame:
    cols = ["JobID", "JobName", "Partition", "AllocCPUS", "AllocTRES", "State", "Comment"]
    out = subprocess.run(["sacct", "-X", "-n", "-P", "-a", "-S", since, "--format=" + ",".join(cols)],
                         capture_output=True, text=True, env={**os.environ, **env}, check=True).stdout
    rows = [line.split("|", len(cols) - 1) for line in out.splitlines() if line.strip()]
    return pd.DataFrame(rows, columns=cols)


def declared_threads() -> dict[str, int]:
    """Threads each rule declares (workflow/rules/*.smk), raised by the SLURM profile's set-threads."""
    threads: dict[str, int] = {}
    for smk in (REPO / "workflow" / "rules").glob("*.smk"):
        for m in re.finditer(r"^\s*rule (\w+):\n(.*?)(?=^\s*rule \w+:|\Z)", smk.read_text(), re.M | re.S):
            t = re.search(r"^\s*threads:\s*(\d+)", m.group(2), re.M)
            threads[m.group(1)] = int(t.group(1)) if t else 1
    profile = yaml.safe_load((REPO / "profiles" / "slurm" / "config.yaml").read_text())
    threads.update({rule: int(n) for rule, n in profile.get("set-threads", {}).items()})
    return threads


def check_jobs(acct: pd.DataFrame, planned: list[tuple[str, dict[str, str]]], gpu_rules: set[str]) -> None:
    """Every planned job went through sbatch with its rule's threads, GPU and partition."""
    profile = yaml.safe_load((REPO / "profiles" / "slurm" / "config.yaml").read_text())
    grouped = profile.get("groups", {})                        # rule -> group (one rule per group here)
    per_group = profile.get("group-components", {})
    acct["rule"] = acct.Comment.str.extract(r"^rule_(.+?)(?:_wildcards_.*)?$")[0]
    acct["group"] = None
    for rule, group in grouped.items():                        # group jobs: comment rule_{group}_{group}
        hit = acct.Comment.str.match(rf"^rule_{re.escape(group)}(_|$)")
        acct.loc[hit, ["rule", "group"]] = [rule, group]
    assert acct.rule.notna().all(), acct.Comment.tolist()
    planned_rules = [r for r, _ in planned]
    # one sbatch per planned job, except grouped rules: up to group-components jobs per sbatch
    assert sorted(acct.rule[acct.group.isna()]) == sorted(r for r in planned_rules if r not in grouped)
    threads = declared_threads()
    for rule, group in grouped.items():
        jobs = acct[acct.group == group]
        components = [int(c) // threads[rule] for c in jobs.AllocCPUS]   # threads add up within a group
        assert sum(components) == planned_rules.count(rule), (rule, components)
        assert all(1 <= c <= int(per_group.get(group, 1)) for c in components), components
    for job in acct.itertuples():
        if job.group is None:
            assert int(job.AllocCPUS) == threads[job.rule], (job.rule, job.AllocCPUS, threads[job.rule])
        gpus = re.search(r"gres/gpu=(\d+)", job.AllocTRES)
        n_gpus = int(gpus.group(1)) if gpus else 0
        assert n_gpus == (1 if job.rule in gpu_rules else 0), job
        assert job.Partition == ("gpu" if job.rule in gpu_rules else "cpu"), job


def _tiny_p1(root):
    from pairedscreen.simulate import simulate

    wd = simulate(root, preset="tiny", overrides={"paint.n_plates": 2})   # the same screen as tiny_run's
    plates = pd.read_csv(wd / "config" / "plates.tsv", sep="\t", dtype=str)
    plates.iloc[:1].to_csv(wd / "config" / "plates.tsv", sep="\t", index=False)
    return wd


def test_tiny_screen_through_slurm_matches_local_run(slurm_cluster, tiny_run, tmp_path):
    env = {**slurm_cluster, **ENV}
    wd = _tiny_p1(tmp_path / "screen")
    dry = snakemake(wd, "--profile", "profiles/slurm", "-n", env=env)
    assert dry.returncode == 0, (dry.stdout + dry.stderr)[-4000:]
    assert "workflow specific profile" not in dry.stderr        # no workstation defaults mixed in
    planned = [(r, w) for r, w in planned_jobs(dry.stdout) if r != "all"]
    gpu_rules = {m.group(1) for m in re.finditer(r"^rule (\w+):\n(?:    .*\n)*?    resources: .*\bgpu=1\b",
                                                   dry.stdout, re.M)}
    assert gpu_rules == {"paint_segment"}, gpu_rules

    since = time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(time.time() - 1))
    res = snakemake(wd, "--profile", "profiles/slurm", *FAST, env=env, timeout=3000)
    assert res.returncode == 0, (res.stdout + res.stderr)[-6000:]

    acct = _sacct(env, since)
    print("\nsacct listing:\n" + acct.drop(columns="JobName").to_string(index=False))
    assert (acct.State == "COMPLETED").all(), acct
    check_jobs(acct, planned, gpu_rules)

    # the same outputs as the local run, by content digest (pairedscreen.digest, recorded in the datasheets)
    from pairedscreen import digest

    local = json.loads(tiny_run.first_sheet.read_text())["outputs"]
    ours = json.loads((wd / "results" / "datasheet.json").read_text())["outputs"]
    assert len(local) >= 15 and {r["path"] for r in ours} == {r["path"] for r in local}
    assert digest.compare(local, ours) == {}


def test_wrong_account_or_partition_refused_before_submitting(slurm_cluster, tmp_path):
    from workdir import minimal_workdir

    wd = minimal_workdir(tmp_path / "screen")
    bad = {**slurm_cluster, **ENV, "PAIREDSCREEN_SLURM_ACCOUNT": "nosuchaccount",
           "PAIREDSCREEN_SLURM_GPU_PARTITION": "nosuchpartition"}
    since = time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(time.time() - 1))
    res = snakemake(wd, "--profile", "profiles/slurm", env=bad, timeout=600)
    assert res.returncode != 0
    err = res.stdout + res.stderr
    assert "account 'nosuchaccount'" in err and "PAIREDSCREEN_SLURM_ACCOUNT=<one of: " in err, err[-3000:]
    assert ACCOUNT in err
    assert "partition 'nosuchpartition'" in err
    assert "PAIREDSCREEN_SLURM_GPU_PARTITION=<one of: cpu, gpu>" in err
    assert _sacct(slurm_cluster, since).empty                  # nothing was submitted

    check_cmd = [sys.executable, "-m", "pairedscreen.cli", "slurm-check"]
    cli = subprocess.run(check_cmd, capture_output=True, text=True,
                         env={**os.environ, **slurm_cluster, **ENV, "PAIREDSCREEN_SLURM_PARTITION": ""})
    assert cli.returncode == 1 and "no partition for CPU jobs" in cli.stderr, cli.stderr
    ok = subprocess.run(check_cmd, capture_output=True, text=True, env={**os.environ, **slurm_cluster, **ENV})
    assert ok.returncode == 0 and f"account {ACCOUNT}" in ok.stdout, ok.stdout + ok.stderr
