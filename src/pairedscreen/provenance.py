"""Code provenance: which copy of the library made each output.

- :func:`library_provenance`: version, source digest (sha256 over every source file of the imported
  ``pairedscreen`` package: relative path + bytes, ``__pycache__`` excluded) and the git commit of the
  checkout it lives in (``git_dirty`` when the package's files differ from that commit).
- :func:`check_workflow_library`: a workflow job refuses to run with a ``pairedscreen`` imported from
  anywhere but its own workflow's ``src/`` (the Snakefile puts that first on ``PYTHONPATH``).
- :func:`record_job`: every workflow step writes ``results/provenance/{rule}/{name}.json`` (its outputs and
  the library that made them); :func:`read_records` / :func:`stale_outputs` list outputs made by another
  library version (``pairedscreen provenance --stale DIR``).
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import subprocess
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from pairedscreen.errors import PairedscreenError

PathLike = str | os.PathLike
RECORD_DIR = "results/provenance"


def package_dir() -> Path:
    """The folder of the imported ``pairedscreen`` package."""
    import pairedscreen

    return Path(pairedscreen.__file__).resolve().parent


def source_files(pkg: PathLike | None = None) -> list[Path]:
    """Every source file of the package (modules and package data), sorted; caches excluded."""
    root = Path(pkg) if pkg is not None else package_dir()
    return sorted(p for p in root.rglob("*") if p.is_file() and "__pycache__" not in p.parts
                  and p.suffix not in (".pyc", ".pyo"))


def source_digest(pkg: PathLike | None = None) -> str:
    """sha256 over (relative path, bytes) of every source file: independent of where the copy lives."""
    root = Path(pkg) if pkg is not None else package_dir()
    h = hashlib.sha256()
    for f in source_files(root):
        data = f.read_bytes()
        h.update(f"{f.relative_to(root).as_posix()}\0{len(data)}\0".encode())
        h.update(data)
    return h.hexdigest()


def _git(args: Sequence[str], cwd: Path) -> str | None:
    try:
        res = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return res.stdout.strip() if res.returncode == 0 else None


@functools.cache
def library_provenance() -> dict[str, Any]:
    """{version, source_sha256, n_source_files, git_commit, git_dirty} of the imported library
    (git fields None outside a git checkout)."""
    from pairedscreen import __version__

    pkg = package_dir()
    commit = _git(["rev-parse", "HEAD"], pkg)
    dirty = None
    if commit:
        status = _git(["status", "--porcelain", "--", "."], pkg)
        dirty = bool(status) if status is not None else None
    return {"version": __version__, "source_sha256": source_digest(pkg),
            "n_source_files": len(source_files(pkg)), "git_commit": commit, "git_dirty": dirty}


def use_workflow_library(basedir: PathLike) -> str:
    """Put ``{basedir}/src`` first on ``PYTHONPATH`` (called by the Snakefile), so the jobs it starts
    import the workflow's own library; returns the new value."""
    src = str(Path(basedir).resolve() / "src")
    rest = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p and p != src]
    os.environ["PYTHONPATH"] = os.pathsep.join([src, *rest])
    return os.environ["PYTHONPATH"]


class WrongLibraryError(PairedscreenError, RuntimeError):
    """A workflow job imported ``pairedscreen`` from outside its workflow's ``src/``."""


def check_workflow_library(scriptdir: PathLike) -> None:
    """Refuse to run a workflow script (in ``workflow/scripts/``) whose ``pairedscreen`` is not the
    workflow's own ``src/pairedscreen``: the results would come from other code than the checkout run."""
    expected = (Path(scriptdir).resolve().parents[1] / "src" / "pairedscreen")
    if not expected.is_dir():   # a workflow without its library beside it (e.g. a copied Snakefile)
        return
    got = package_dir()
    if got != expected.resolve():
        raise WrongLibraryError(
            f"this job imports pairedscreen from {got}, not from the workflow it runs ({expected}). "
            "Fix: run snakemake with the Snakefile of the checkout you mean (it puts "
            f"{expected.parent} first on PYTHONPATH for its jobs), or install that checkout")


# ------------------------------------------------------------------------------------------- records
def record_path(workdir: PathLike, rule: str, name: str) -> Path:
    return Path(workdir) / RECORD_DIR / rule / f"{name}.json"


def record_job(workdir: PathLike, rule: str, name: str, outputs: Iterable[PathLike],
               wildcards: Mapping[str, Any] | None = None) -> Path:
    """Write the provenance record of one finished job: its outputs (relative to ``workdir``) and the
    library that made them."""
    from pairedscreen.io import write_json

    wd = Path(workdir).resolve()
    rel = []
    for o in outputs:
        p = Path(o)
        p = p if p.is_absolute() else wd / p
        try:
            rel.append(p.resolve().relative_to(wd).as_posix())
        except ValueError:
            rel.append(str(p))
    rec = {"rule": rule, "job": name, "wildcards": {str(k): str(v) for k, v in (wildcards or {}).items()},
           "outputs": rel, "library": library_provenance()}
    out = record_path(wd, rule, name)
    write_json(rec, out)
    return out


def read_records(workdir: PathLike) -> list[dict[str, Any]]:
    """Every job record under ``results/provenance/`` whose outputs still exist (sorted by output)."""
    wd = Path(workdir)
    recs = []
    for f in sorted((wd / RECORD_DIR).glob("*/*.json")):
        try:
            rec = json.loads(f.read_text())
        except (OSError, json.JSONDecodeError):
            continue
        rec["outputs"] = [o for o in rec.get("outputs", []) if (wd / o).exists()]
        if rec["outputs"]:
            recs.append(rec)
    return recs


def output_table(workdir: PathLike) -> list[dict[str, Any]]:
    """One row per existing output: path, rule, library version, source digest, git commit."""
    rows = []
    for rec in read_records(workdir):
        lib = rec.get("library", {})
        for o in rec["outputs"]:
            rows.append({"path": o, "rule": rec.get("rule"), "version": lib.get("version"),
                         "source_sha256": lib.get("source_sha256"), "git_commit": lib.get("git_commit")})
    return sorted(rows, key=lambda r: r["path"])


def stale_outputs(workdir: PathLike, current: str | None = None) -> list[dict[str, Any]]:
    """Outputs made by a library whose source digest differs from ``current`` (default: this one)."""
    cur = current or library_provenance()["source_sha256"]
    return [r for r in output_table(workdir) if r["source_sha256"] != cur]
