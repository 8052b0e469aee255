"""Shared fixtures. Real-data tests use ``shared_data``: under CI=true missing data fails, never skips."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    import pandas as pd

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("PAIREDSCREEN_SHARED_DATA", REPO.parent / "shared" / "data"))


def _need(folder: str) -> Path:
    path = SHARED_DATA / folder
    if not path.exists():
        msg = f"real test data {path} is missing (expected ../shared/data beside the checkout)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(msg)
        pytest.skip(msg)
    return path


@pytest.fixture(scope="session")
def shared_data():
    """Return a function: shared_data('folder') -> Path, failing under CI when missing."""
    return _need


@pytest.fixture(scope="session")
def repo() -> Path:
    return REPO


@dataclass
class TinyRun:
    """The session's one end-to-end run of the tiny screen (shared by the e2e and SLURM tests)."""

    workdir: Path
    plates: pd.DataFrame                      # both simulated plates; the run knew only P1
    first_sheet: Path | None = None           # its datasheet.json before any other plate landed


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory) -> TinyRun:
    """Tiny screen simulated with 2 plates; the run first knows only plate P1 (a later test lands P2)."""
    import shutil

    import pandas as pd
    from workdir import snakemake

    from pairedscreen.simulate import simulate

    wd = simulate(tmp_path_factory.mktemp("e2e") / "screen", preset="tiny", overrides={"paint.n_plates": 2})
    plates = pd.read_csv(wd / "config" / "plates.tsv", sep="\t", dtype=str)
    assert list(plates.plate_id) == ["P1", "P2"]
    plates.iloc[:1].to_csv(wd / "config" / "plates.tsv", sep="\t", index=False)
    res = snakemake(wd, "--cores", "2")
    assert res.returncode == 0, (res.stdout + res.stderr)[-6000:]
    first = wd.parent / "datasheet_first_run.json"
    shutil.copy(wd / "results" / "datasheet.json", first)      # before P2 lands
    return TinyRun(wd, plates, first)
