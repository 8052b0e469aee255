"""Before a SLURM run submits anything: do its account and partitions exist for this user?

``profiles/slurm`` takes the account and the partitions from three environment variables (the one place a user
sets them, see docs/usage.md "Run on SLURM"). A missing or wrong value would otherwise surface job by job from
``sbatch`` (or as a run that waits on jobs that were never accepted); here every problem is reported at once,
with the fix, from ``sinfo`` (partitions) and ``sacctmgr`` (the user's associations) before the first job.
"""

from __future__ import annotations

import ast
import getpass
import os
import re
import shutil
import subprocess
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

from pairedscreen.errors import PairedscreenError

ENV_ACCOUNT = "PAIREDSCREEN_SLURM_ACCOUNT"
ENV_PARTITION = "PAIREDSCREEN_SLURM_PARTITION"
ENV_GPU_PARTITION = "PAIREDSCREEN_SLURM_GPU_PARTITION"
GPU_RULES = ("paint_segment",)  # profiles/slurm sends these to $PAIREDSCREEN_SLURM_GPU_PARTITION
TIMEOUT_S = 60

Runner = Callable[[list[str]], str]


class SlurmSetupError(PairedscreenError):
    """The run's SLURM account/partitions are missing or not usable; the message lists every problem."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        lines = "\n".join(f"  - {p}" for p in problems)
        super().__init__(f"SLURM submission settings are not usable:\n{lines}")


@dataclass
class Targets:
    """Where a run submits: account -> rules using it, partition -> rules using it ('*' = the default)."""

    accounts: dict[str, list[str]] = field(default_factory=dict)
    partitions: dict[str, list[str]] = field(default_factory=dict)


def resolve(raw: object) -> str:
    """A resource as Snakemake evaluates a profile value: ``$VARS`` expanded, a quoted literal unquoted."""
    text = os.path.expandvars(str(raw))
    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text.strip()
    return str(value).strip()


def _raw(resource: object) -> object:
    return getattr(resource, "raw", resource)


def targets_from_resources(default: Mapping[str, object] | None,
                           overrides: Mapping[str, Mapping[str, object]], rules: Iterable[str]) -> Targets:
    """Collect ``slurm_account``/``slurm_partition`` from ``--default-resources`` and ``--set-resources``."""
    default = default or {}
    out = Targets()
    for rule in rules:
        per_rule = overrides.get(rule, {})
        for key, bucket in (("slurm_account", out.accounts), ("slurm_partition", out.partitions)):
            raw = per_rule[key] if key in per_rule else (default[key] if key in default else None)
            value = resolve(_raw(raw)) if raw is not None and _raw(raw) is not None else ""
            bucket.setdefault(value, []).append(rule)
    return out


def _run(cmd: list[str]) -> str:
    if shutil.which(cmd[0]) is None:
        raise FileNotFoundError(cmd[0])
    return subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=TIMEOUT_S).stdout


def cluster_partitions(run: Runner = _run) -> list[str]:
    """Partition names as ``sinfo`` lists them (without the default's ``*``)."""
    return sorted({p.strip() for p in run(["sinfo", "-h", "-o", "%R"]).split() if p.strip()})


def user_associations(user: str, run: Runner = _run) -> dict[str, set[str]]:
    """account -> partitions the user's associations allow ('' = any partition), from ``sacctmgr``."""
    out = run(["sacctmgr", "-n", "-P", "show", "associations", f"user={user}", "format=account,partition"])
    assoc: dict[str, set[str]] = {}
    for line in out.splitlines():
        if not line.strip():
            continue
        account, _, partition = line.partition("|")
        assoc.setdefault(account.strip().lower(), set()).add(partition.strip())
    return assoc


def _rules(names: list[str], limit: int = 4) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


def _unset(value: str) -> str | None:
    m = re.search(r"\$\{?([A-Za-z_][A-Za-z0-9_]*)", value)
    return m.group(1) if m else None


def problems(targets: Targets, *, user: str | None = None, check_account: bool = True,
             run: Runner = _run) -> list[str]:
    """Every reason the run's account/partitions cannot be used (empty list: fine)."""
    user = user or getpass.getuser()
    found: list[str] = []
    try:
        partitions = cluster_partitions(run)
    except FileNotFoundError:
        return ["`sinfo` is not on PATH: submit from a SLURM login node (or use profiles/workstation)"]
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as e:
        return [f"`sinfo` failed ({_stderr(e)}): is slurmctld reachable from this node?"]
    assoc: dict[str, set[str]] = {}
    if check_account:
        try:
            assoc = user_associations(user, run)
        except FileNotFoundError:
            found.append("`sacctmgr` is not on PATH, so the account cannot be checked: submit from a login "
                         "node with the SLURM client tools")
            check_account = False
        except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as e:
            found.append(f"`sacctmgr` failed ({_stderr(e)}): is slurmdbd (accounting) reachable? The SLURM "
                         "executor needs accounting (sacct) to follow its jobs")
            check_account = False

    for value, rules in targets.partitions.items():
        var = _unset(value)
        env = ENV_GPU_PARTITION if var == ENV_GPU_PARTITION or set(rules) <= set(GPU_RULES) else ENV_PARTITION
        if var:
            found.append(f"{var} is not set (partition of {_rules(rules)}). Fix: export {var}=<partition>; "
                         f"partitions here: {', '.join(partitions) or 'none'}")
        elif not value:
            found.append(f"no partition for {_rules(rules)}. Fix: export {env}=<partition>; "
                         f"partitions here: {', '.join(partitions) or 'none'}")
        elif value not in partitions:
            found.append(f"partition {value!r} (used by {_rules(rules)}) does not exist. Fix: export "
                         f"{env}=<one of: {', '.join(partitions) or 'none'}>")
    if check_account:
        allowed = sorted(a for a in assoc if a)
        for value, rules in targets.accounts.items():
            var = _unset(value)
            if var or not value:
                found.append(f"{var or ENV_ACCOUNT} is not set (account of {_rules(rules)}). Fix: export "
                             f"{ENV_ACCOUNT}=<account>; accounts of user {user}: "
                             f"{', '.join(allowed) or 'none'} (on a cluster without accounts run with "
                             "--slurm-no-account)")
            elif value.lower() not in assoc:
                found.append(f"account {value!r} (used by {_rules(rules)}) is not an association of user "
                             f"{user}. Fix: export {ENV_ACCOUNT}=<one of: {', '.join(allowed) or 'none'}> "
                             f"or ask the cluster admins to add it (sacctmgr add user {user} "
                             f"account={value})")
            else:
                limited = assoc[value.lower()] - {""}
                if limited and "" not in assoc[value.lower()]:
                    for part, prules in targets.partitions.items():
                        used = set(rules) & set(prules)
                        if used and part in partitions and part not in limited:
                            found.append(f"account {value!r} may not use partition {part!r} (used by "
                                         f"{_rules(sorted(used))}); its partitions: "
                                         f"{', '.join(sorted(limited))}")
    return found


def _stderr(e: subprocess.CalledProcessError | subprocess.TimeoutExpired) -> str:
    if isinstance(e, subprocess.TimeoutExpired):
        return f"no answer in {TIMEOUT_S} s"
    return (e.stderr or "").strip().splitlines()[-1] if (e.stderr or "").strip() else f"exit {e.returncode}"


def check(targets: Targets, *, user: str | None = None, check_account: bool = True,
          run: Runner = _run) -> None:
    """Raise :class:`SlurmSetupError` listing every problem with the run's account and partitions."""
    found = problems(targets, user=user, check_account=check_account, run=run)
    if found:
        raise SlurmSetupError(found)


def check_workflow(workflow: object) -> None:
    """From the Snakefile's ``onstart``: check a run with the SLURM executor, before its first job."""
    plugin = getattr(workflow, "executor_plugin", None)
    if plugin is None or getattr(plugin, "name", None) != "slurm":
        return
    rs = workflow.resource_settings  # type: ignore[attr-defined]
    rules = [r.name for r in workflow.rules]  # type: ignore[attr-defined]
    targets = targets_from_resources(rs.default_resources, rs.overwrite_resources, rules)
    no_account = bool(getattr(getattr(workflow, "executor_settings", None), "no_account", False))
    check(targets, check_account=not no_account)


def env_targets(account: str | None = None, partition: str | None = None, gpu_partition: str | None = None,
                gpu_rules: Iterable[str] = GPU_RULES) -> Targets:
    """Where profiles/slurm submits, from arguments or the environment (``pairedscreen slurm-check``)."""
    account = account if account is not None else os.environ.get(ENV_ACCOUNT, f"${ENV_ACCOUNT}")
    partition = partition if partition is not None else os.environ.get(ENV_PARTITION, f"${ENV_PARTITION}")
    gpu = (gpu_partition if gpu_partition is not None
           else os.environ.get(ENV_GPU_PARTITION, f"${ENV_GPU_PARTITION}"))
    gpu_rules = list(gpu_rules)
    parts: dict[str, list[str]] = {partition: ["CPU jobs"]}
    parts.setdefault(gpu, []).extend(gpu_rules)
    return Targets(accounts={account: ["every job"]}, partitions=parts)
