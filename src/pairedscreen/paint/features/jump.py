"""The JUMP cpg0016 feature set: its list of per-object columns and the preset that makes them.

``paint.features.preset: jump`` takes every ``paint.features`` key the config leaves out from the
schema's ``x-presets.jump`` (the settings of the JUMP CellProfiler pipeline, JUMP_analysis_v3.cppipe:
texture scales 3/5/10, Nuclei neighbours at 1 px, ...) and :func:`jump_columns` keeps exactly the
columns of the JUMP profiling recipe's mandatory list (``resources/jump/``), in its order. Columns of
the list that no family makes yet are reported by :func:`missing_by_family`; they are never filled in.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from functools import lru_cache
from typing import Any

LIST_FILE = "cpg0016_mandatory_feature_columns_without_image_columns.txt"
PRESET = "jump"

__all__ = ["LIST_FILE", "PRESET", "jump_columns", "missing_by_family", "preset_values"]


@lru_cache(maxsize=1)
def jump_columns() -> tuple[str, ...]:
    """The 3,672 per-object column names of JUMP cpg0016, in the recipe's order."""
    from pairedscreen.io import repo_root

    path = repo_root() / "resources" / "jump" / LIST_FILE
    return tuple(line.strip() for line in path.read_text().splitlines() if line.strip())


def preset_values(preset: str) -> dict[str, Any]:
    """The ``paint.features`` values a preset sets (the schema's ``x-presets``; {} for ``default``)."""
    from pairedscreen.config import config_schema

    section: Mapping[str, Any] = config_schema()["properties"]["paint"]["properties"]["features"]
    presets = section.get("x-presets", {})
    if preset == "default":
        return {}
    if preset not in presets:
        raise ValueError(f"unknown paint.features preset {preset!r}; known: default, {sorted(presets)}")
    return dict(presets[preset])


def family(column: str) -> str:
    """The measurement family of a CellProfiler column (``Cells_Texture_..`` -> ``Texture``)."""
    return column.split("_")[1]


def missing_by_family(columns: Iterable[str]) -> dict[str, list[str]]:
    """JUMP columns absent from ``columns``, grouped by family (largest family first)."""
    have = set(columns)
    missing = [c for c in jump_columns() if c not in have]
    order = [f for f, _ in Counter(family(c) for c in missing).most_common()]
    return {f: [c for c in missing if family(c) == f] for f in order}
