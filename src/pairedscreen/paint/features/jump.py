"""The JUMP cpg0016 feature set: its list of per-object columns and the preset that makes them.

``paint.features.preset: jump`` takes every ``paint.features`` key the config leaves out from the
schema's ``x-presets.jump`` (:func:`pairedscreen.config.fill_defaults`; the settings of the JUMP
CellProfiler pipeline, JUMP_analysis_v3.cppipe:
texture scales 3/5/10, Nuclei neighbours at 1 px, ...) and :func:`jump_columns` keeps exactly the
columns of the JUMP profiling recipe's mandatory list (``resources/jump/``), in its order. Columns of
the list that no family makes yet are reported by :func:`missing_by_family`; they are never filled in.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterable
from functools import lru_cache

log = logging.getLogger(__name__)

LIST_FILE = "cpg0016_mandatory_feature_columns_without_image_columns.txt"
PRESET = "jump"

__all__ = ["LIST_FILE", "PRESET", "family", "jump_columns", "missing_by_family", "warn_missing"]


@lru_cache(maxsize=1)
def jump_columns() -> tuple[str, ...]:
    """The 3,672 per-object column names of JUMP cpg0016, in the recipe's order."""
    from pairedscreen.io import repo_root

    path = repo_root() / "resources" / "jump" / LIST_FILE
    return tuple(line.strip() for line in path.read_text().splitlines() if line.strip())


def family(column: str) -> str:
    """The measurement family of a CellProfiler column (``Cells_Texture_..`` -> ``Texture``)."""
    return column.split("_")[1]


def missing_by_family(columns: Iterable[str]) -> dict[str, list[str]]:
    """JUMP columns absent from ``columns``, grouped by family (largest family first)."""
    have = set(columns)
    missing = [c for c in jump_columns() if c not in have]
    order = [f for f, _ in Counter(family(c) for c in missing).most_common()]
    return {f: [c for c in missing if family(c) == f] for f in order}


@lru_cache(maxsize=8)
def warn_missing(summary: str) -> None:
    """Log once per process which JUMP columns the preset does not make (``summary``: per family)."""
    log.warning("paint.features.preset jump: JUMP columns not made: %s", summary)
