"""Shared fixtures. Real-data tests use ``shared_data``: under CI=true missing data fails, never skips."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

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
