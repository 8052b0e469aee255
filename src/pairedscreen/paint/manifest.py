"""Per-plate image manifest: the one tracked input standing for a plate's image files.

Tracking every image as a Snakemake input costs the planner time and memory per file (a 100-plate screen
has 1.7 M images). Instead the planning process lists each plate's image folder (names, sizes, mtimes: a
``stat``, no reads) into ``results/paint/{plate}/image_manifest.tsv`` and rewrites that file only when the
listing changed.
A new, removed, resized or re-written image therefore gives that plate's manifest a new mtime and reruns its
image index (which then checksums every file), and nothing of the other plates.
"""

from __future__ import annotations

import os
from pathlib import Path

HEADER = "path\tsize\tmtime_ns\n"


def image_listing(image_dir: str | os.PathLike) -> str:
    """Manifest text: every file below ``image_dir`` (dot-files and dot-folders skipped), sorted by path."""
    root = Path(image_dir)
    rows: list[tuple[str, int, int]] = []
    stack = [("", os.fspath(root))]
    while stack:
        prefix, folder = stack.pop()
        with os.scandir(folder) as it:
            for e in it:
                if e.name.startswith("."):
                    continue
                rel = prefix + e.name
                if e.is_dir():
                    stack.append((rel + "/", e.path))
                elif e.is_file():
                    st = e.stat()
                    rows.append((rel, st.st_size, st.st_mtime_ns))
    rows.sort()
    return HEADER + "".join(f"{p}\t{s}\t{m}\n" for p, s, m in rows)


def update_manifest(image_dir: str | os.PathLike, manifest: str | os.PathLike) -> bool:
    """Write the plate's manifest if it is missing or its listing changed; True when (re)written.

    Written atomically (a temporary sibling renamed into place), so an interrupted planner leaves the old one.
    """
    text = image_listing(image_dir)
    out = Path(manifest)
    try:
        if out.read_text() == text:
            return False
    except FileNotFoundError:
        pass
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, out)
    return True
