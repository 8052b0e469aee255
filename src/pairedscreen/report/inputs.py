"""The report's inputs: the run's stored results, found through :func:`pairedscreen.paths.path`.

The report reads only files its rule declares as input (``workflow/rules/report.smk``); every file it
opens is recorded in :attr:`Inputs.read`, so a test can check the two lists agree. A missing optional
input becomes a note ``"not available: <file> missing"`` in its section; only the datasheet is required.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import h5py
import pandas as pd

from pairedscreen.errors import PairedscreenError
from pairedscreen.paths import path


class ReportInputError(PairedscreenError, FileNotFoundError):
    """A required input of the report (the datasheet) is missing or unreadable."""


class Inputs:
    """Stored results of the run whose ``results/`` folder is ``results_dir``."""

    def __init__(self, results_dir: Path, truth_dir: Path | None = None) -> None:
        self.results_dir = Path(results_dir)
        self.workdir = self.results_dir.parent
        self.truth_dir = Path(truth_dir) if truth_dir is not None else None
        self.read: list[Path] = []

    def path(self, key: str, **wildcards: str) -> Path:
        return self.workdir / path(key, **wildcards)

    def rel(self, p: Path) -> str:
        try:
            return str(Path(p).relative_to(self.workdir))
        except ValueError:
            return str(p)

    def missing(self, p: Path) -> str:
        return f"not available: {self.rel(p)} missing"

    def get(self, key: str, notes: list[str] | None = None, **wildcards: str) -> Path | None:
        """The file (or folder) of ``key``, recorded as read; ``None`` (and a note) when it is absent."""
        p = self.path(key, **wildcards)
        if not p.exists():
            if notes is not None:
                notes.append(self.missing(p))
            return None
        self.read.append(p)
        return p

    def json(self, key: str, notes: list[str] | None = None, **wildcards: str) -> dict[str, Any] | None:
        p = self.get(key, notes, **wildcards)
        if p is None:
            return None
        try:
            out = json.loads(p.read_text())
        except json.JSONDecodeError as e:
            if notes is not None:
                notes.append(f"not available: {self.rel(p)} is not valid JSON ({e})")
            return None
        return out if isinstance(out, dict) else None

    def truth(self, name: str, notes: list[str]) -> Path | None:
        """A file of the simulator's truth folder (declared input when the config names ``truth_dir``)."""
        if self.truth_dir is None:
            return None
        p = self.truth_dir / name
        if not p.exists():
            notes.append(self.missing(p))
            return None
        self.read.append(p)
        return p


def read_h5_elem(p: Path, key: str) -> Any:
    """One element (``obs``, ``uns``, ``obsm/guide_counts``) of an h5ad/h5mu file without loading the rest."""
    import anndata

    with h5py.File(p, "r") as f:
        if key not in f:
            return None
        return anndata.io.read_elem(f[key])


def dig(obj: Any, *keys: str) -> Any:
    for key in keys:
        if not isinstance(obj, Mapping) or key not in obj:
            return None
        obj = obj[key]
    return obj


def flatten(obj: Any, prefix: str = "") -> list[tuple[str, Any]]:
    """Nested dicts/lists of scalars -> ``[(dotted.key, value)]`` for key/value tables."""
    out: list[tuple[str, Any]] = []
    if isinstance(obj, Mapping):
        for k, v in obj.items():
            out += flatten(v, f"{prefix}.{k}" if prefix else str(k))
    elif isinstance(obj, list) and obj and all(isinstance(x, Mapping) for x in obj):
        for i, v in enumerate(obj):
            out += flatten(v, f"{prefix}[{i}]")
    else:
        if isinstance(obj, list):
            obj = ", ".join(str(x) for x in obj)
        out.append((prefix, obj))
    return out


def flag(s: pd.Series) -> pd.Series:
    """A stored boolean column (bool, or True/False/missing after a TSV round trip) as bool; missing is
    False."""
    return pd.Series(s, copy=False).astype("boolean").fillna(False).astype(bool)


def calls_with_reason(call: pd.Series, measurable: pd.Series | None, reason: pd.Series | None) -> pd.Series:
    """A per-perturbation call for display: the call (True/False, shown yes/no) where it was measured,
    ``not measurable: <reason>`` where it was not (never a bare "no" or blank for a statistic that could
    not be computed); rows with neither (e.g. controls, which have no target) stay missing."""
    out = pd.Series(call, copy=True).astype(object)
    if reason is None:
        return out
    why = pd.Series(reason, index=out.index).astype(object)
    why = why.where(why.notna() & (why.astype(str) != ""), None)
    if measurable is not None:
        unmeasured = pd.Series(measurable, index=out.index).astype("boolean").eq(False).fillna(False)
        unmeasured = unmeasured.astype(bool) & why.notna()
    else:
        unmeasured = why.notna()
    out[unmeasured] = "not measurable: " + why[unmeasured].astype(str)
    return out
