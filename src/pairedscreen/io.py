"""Small I/O helpers shared by every arm: atomic writes, checksums, table I/O.

Every writer in pairedscreen goes through :func:`atomic_output` so that a failure never leaves a
half-written file behind (Snakemake also deletes outputs of failed jobs; this covers library use).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

_MKDTEMP_TAIL = r"[a-z0-9_]{8}"  # tempfile.mkdtemp's random part


def clean_stale_temps(parent: str | os.PathLike, prefix: str) -> list[Path]:
    """Remove ``parent/{prefix}XXXXXXXX`` folders (``tempfile.mkdtemp`` names) left by a killed job.

    A step writing an output owns its temp siblings (Snakemake never runs two jobs for one output and
    locks the working directory), so any that exist when it starts are leftovers of an interrupted run.
    Returns what was removed."""
    parent = Path(parent)
    pattern = re.compile(re.escape(prefix) + _MKDTEMP_TAIL)
    removed = []
    if parent.is_dir():
        for p in parent.iterdir():
            if p.is_dir() and not p.is_symlink() and pattern.fullmatch(p.name):
                shutil.rmtree(p, ignore_errors=True)
                removed.append(p)
    return removed


@contextlib.contextmanager
def scratch_dir(parent: str | os.PathLike, prefix: str) -> Iterator[Path]:
    """A temporary work folder ``parent/{prefix}XXXXXXXX``, removed afterwards; leftovers of a killed
    earlier attempt with the same prefix are removed first."""
    Path(parent).mkdir(parents=True, exist_ok=True)
    clean_stale_temps(parent, prefix)
    work = Path(tempfile.mkdtemp(prefix=prefix, dir=parent))
    try:
        yield work
    finally:
        shutil.rmtree(work, ignore_errors=True)


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike, *, is_dir: bool = False) -> Iterator[Path]:
    """Yield a temporary sibling path; move it onto ``path`` only if the block succeeds.

    The sibling is ``.{name}.XXXXXXXX/partial``; such siblings left by a killed earlier attempt are
    removed first (:func:`clean_stale_temps`), so an interrupted run leaves nothing behind once rerun."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    clean_stale_temps(path.parent, f".{path.name}.")
    suffix = "".join(path.suffixes) if not is_dir else ""
    tmp_root = tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent)
    tmp = Path(tmp_root) / f"partial{suffix}"
    if is_dir:
        tmp.mkdir()
    try:
        yield tmp
        if path.exists():
            shutil.rmtree(path) if path.is_dir() else path.unlink()
        os.replace(tmp, path)
    finally:
        shutil.rmtree(tmp_root, ignore_errors=True)


def sha256sum(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """Hex SHA-256 of a file, streamed."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def write_through(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to a new file, flush it to the disk (``fdatasync``) and drop it from the page cache
    (``POSIX_FADV_DONTNEED``, where the OS has it): for large outputs the job never reads again (a plate's
    crops are many gigabytes), which then neither evict what other jobs on the node have cached nor wait
    for the kernel to find new page-cache memory for each file, and are on disk before their folder is
    moved into place."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o666)
    try:
        view, done = memoryview(data), 0
        while done < len(view):
            done += os.write(fd, view[done:])
        os.fdatasync(fd) if hasattr(os, "fdatasync") else os.fsync(fd)
        if hasattr(os, "posix_fadvise"):
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def write_parquet(df: pd.DataFrame, path: str | os.PathLike) -> None:
    with atomic_output(path) as tmp:
        df.to_parquet(tmp, index=False)


def write_tsv(df: pd.DataFrame, path: str | os.PathLike) -> None:
    with atomic_output(path) as tmp:
        df.to_csv(tmp, sep="\t", index=False)


def _json_default(o: Any) -> Any:
    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, np.floating):
        return None if np.isnan(o) else float(o)
    if isinstance(o, np.bool_):
        return bool(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o)!r}")


def jsonable(obj: Any) -> Any:
    """Round-trip through JSON so the dict holds only JSON types (NaN -> None)."""
    def clean(o: Any) -> Any:
        if isinstance(o, float) and not np.isfinite(o):
            return None
        if isinstance(o, dict):
            return {str(k): clean(v) for k, v in o.items()}
        if isinstance(o, list | tuple):
            return [clean(v) for v in o]
        return o
    return clean(json.loads(json.dumps(obj, default=_json_default)))


def write_json(obj: Any, path: str | os.PathLike) -> None:
    with atomic_output(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=False, default=_json_default) + "\n")


def repo_root() -> Path:
    """The source checkout this package was installed from (editable install), for resources/ and config/."""
    here = Path(__file__).resolve()
    for parent in here.parents:
        if (parent / "Snakefile").exists() and (parent / "workflow").is_dir():
            return parent
    raise FileNotFoundError(
        "pairedscreen is not installed from a source checkout (no Snakefile above "
        f"{here}); install it with `pip install -e .` from the repository"
    )
