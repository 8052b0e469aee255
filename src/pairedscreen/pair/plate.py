"""Plate geometry: well names <-> (row, column), plate formats and edge wells.

Wells are named ``A01``..``P24`` (a row letter and a 1-based column number; ``A1`` is accepted too).
Rows and columns returned here are 0-based.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

import numpy as np
import pandas as pd

_WELL = re.compile(r"^([A-Za-z]{1,2})(\d{1,3})$")
FORMATS: dict[int, tuple[int, int]] = {96: (8, 12), 384: (16, 24), 1536: (32, 48)}
PLATE_SHAPE = FORMATS[384]   # the screen contract: wells A01..P24 (plate_map.schema.yaml)


def parse_well(well: str) -> tuple[int, int]:
    """``"B03"`` -> ``(1, 2)``: 0-based row and column."""
    m = _WELL.match(str(well).strip())
    if not m:
        raise ValueError(f"not a well name: {well!r}")
    letters, digits = m.group(1).upper(), m.group(2)
    row = 0
    for ch in letters:
        row = row * 26 + (ord(ch) - 64)
    return row - 1, int(digits) - 1


def well_positions(wells: Iterable[str]) -> pd.DataFrame:
    """Row and column (0-based) of each well, as a DataFrame with columns ``row``, ``col``."""
    rc = [parse_well(w) for w in wells]
    return pd.DataFrame(rc, columns=["row", "col"], dtype=np.int64)


def infer_plate_shape(wells: Iterable[str]) -> tuple[int, int]:
    """The smallest standard format (96, 384, 1536) that holds every well (a lower bound: a sparse
    384-well plate map can look like a 96-well one)."""
    pos = well_positions(wells)
    if pos.empty:
        return FORMATS[384]
    need_r, need_c = int(pos.row.max()) + 1, int(pos.col.max()) + 1
    for shape in FORMATS.values():
        if need_r <= shape[0] and need_c <= shape[1]:
            return shape
    return need_r, need_c


def edge_mask(wells: Iterable[str], plate_shape: tuple[int, int] | None = None) -> np.ndarray:
    """True for wells on the outer ring of the plate (first/last row or column); a 384-well plate unless
    ``plate_shape`` says otherwise (a sparse plate map cannot tell its format)."""
    wells = list(wells)
    shape = plate_shape or PLATE_SHAPE
    pos = well_positions(wells)
    row, col = pos.row.to_numpy(), pos.col.to_numpy()
    return (row == 0) | (row == shape[0] - 1) | (col == 0) | (col == shape[1] - 1)
