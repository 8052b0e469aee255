"""No output of an earlier run survives that the current run would not write.

Snakemake deletes the outputs of a job that fails, but not those of the jobs downstream of it that never
ran: after a failed aggregate step the previous run's ``results/paired/`` stayed in place, stale. When a
run starts (Snakemake's ``onstart``, main process only, never in a dry run or ``--touch``) the workflow
calls :func:`clear_before_run`: the outputs of every job the run will execute are removed up front (they
are rewritten anyway), and, when the run builds the whole screen (rule ``all``, not a single target),
so are files under the aggregate folders that no job of the run declares (e.g. ``results/paired/paint.h5ad``
once the screen has no plates, or ``cells.h5mu`` after ``pair.cells_h5mu`` was switched off).
"""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Iterable
from pathlib import Path

log = logging.getLogger("pairedscreen.stale")
PathLike = str | os.PathLike

AGGREGATE_FOLDERS = ("results/paired", "results/quality")


def undeclared_files(folders: Iterable[PathLike], declared: Iterable[PathLike]) -> list[Path]:
    """Files under ``folders`` that no path in ``declared`` is or contains (a declared directory covers
    everything under it)."""
    keep = {Path(os.path.normpath(p)) for p in declared}
    out = []
    for folder in folders:
        folder = Path(folder)
        if not folder.is_dir():
            continue
        for f in sorted(folder.rglob("*")):
            if f.is_file() and not ({f, *f.parents} & keep):
                out.append(f)
    return out


def _remove(p: Path) -> bool:
    if p.is_dir() and not p.is_symlink():
        shutil.rmtree(p)
        return True
    if p.exists() or p.is_symlink():
        p.unlink()
        return True
    return False


def clear_before_run(rerun_outputs: Iterable[PathLike], declared: Iterable[PathLike],
                     folders: Iterable[PathLike] = AGGREGATE_FOLDERS, root: PathLike = ".") -> list[str]:
    """Remove ``rerun_outputs`` (outputs of the jobs about to run) and files under ``folders`` not in
    ``declared`` (every output of the run's DAG); paths relative to ``root``. Returns what was removed."""
    root = Path(root)
    removed = [str(p) for p in rerun_outputs if _remove(root / p)]
    declared = [root / p for p in declared]
    for f in undeclared_files([root / d for d in folders], declared):
        f.unlink()
        removed.append(str(f.relative_to(root)))
    if removed:
        log.info("removed %d output(s) of an earlier run before rewriting them: %s", len(removed),
                 ", ".join(sorted(removed)[:20]) + (" ..." if len(removed) > 20 else ""))
    return removed
