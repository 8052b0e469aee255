"""Plate geometry, the one definition: well names <-> (row, column), plate formats and edge wells.

Wells are named ``A01``..``P24`` (a row letter and a 1-based column number; ``A1`` is accepted and
normalised to ``A01``). Rows and columns returned here are 0-based. A low-level module: it imports nothing
else of pairedscreen (import-linter contract in pyproject.toml), so every layer (sheets, the arms, pair,
quality, report, simulate) can use it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

import numpy as np
import pandas as pd

FORMATS: dict[int, tuple[int, int]] = {96: (8, 12), 384: (16, 24), 1536: (32, 48)}
PLATE_SHAPE = FORMATS[384]   # the screen contract: wells A01..P24 (plate_map.schema.yaml)
N_ROWS, N_COLS = PLATE_SHAPE
ROWS = "ABCDEFGHIJKLMNOP"    # row letters of a 384-well plate
# a 384-well name (A1..P24, one optional leading zero); the plate map schema's pattern
WELL_RE = re.compile(r"^([A-Pa-p])0?([1-9]|1[0-9]|2[0-4])$")
_ANY_WELL = re.compile(r"^([A-Za-z]{1,2})(\d{1,3})$")   # any format up to 1536 wells (AF48)


def well_name(row: int, col: int) -> str:
    """0-based row and column -> ``A01`` (384-well plates)."""
    return f"{ROWS[row]}{col + 1:02d}"


_PADDED_WELL = re.compile(r"^([A-Za-z]{1,2})0*(\d{1,3})$")


def normalise_well(well: str, *, strict: bool = False) -> str:
    """The one well-name normaliser: ``a1`` / ``A1`` / ``A001`` -> ``A01``, ``af48`` -> ``AF48`` (row letters
    upper-case, the column zero-padded to two digits; any plate format up to 1536 wells). A value that is not
    a well name is returned unchanged (stripped; the sheet checks then name it), or with ``strict`` raises
    ``ValueError``."""
    m = _PADDED_WELL.match(str(well).strip())
    if m:
        return f"{m.group(1).upper()}{int(m.group(2)):02d}"
    if strict:
        raise ValueError(f"{well!r} is not a well name like A01")
    return str(well).strip()


def parse_well(well: str) -> tuple[int, int]:
    """``"B03"`` -> ``(1, 2)``: 0-based row and column (any plate format; raises on a non-well name)."""
    m = _ANY_WELL.match(str(well).strip())
    if not m:
        raise ValueError(f"not a well name: {well!r}")
    letters, digits = m.group(1).upper(), m.group(2)
    row = 0
    for ch in letters:
        row = row * 26 + (ord(ch) - 64)
    return row - 1, int(digits) - 1


def well_rc(well: str) -> tuple[int, int] | None:
    """0-based (row, column) of a 384-well name, ``None`` when ``well`` is not one (e.g. ``Q01``, ``A25``)."""
    m = WELL_RE.match(str(well).strip())
    if not m:
        return None
    return ROWS.index(m.group(1).upper()), int(m.group(2)) - 1


def is_edge(row: int, col: int, plate_shape: tuple[int, int] = PLATE_SHAPE) -> bool:
    """Whether the 0-based position is on the outer ring (first/last row or column) of the plate."""
    return row in (0, plate_shape[0] - 1) or col in (0, plate_shape[1] - 1)


def is_edge_well(well: str) -> bool:
    """Whether a 384-well name is an edge well; ``False`` for a name that is not a 384-well one."""
    rc = well_rc(well)
    return rc is not None and is_edge(*rc)


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


def edge_grid(plate_shape: tuple[int, int] = PLATE_SHAPE) -> np.ndarray:
    """Boolean (rows x columns) grid, True on the outer ring."""
    edge = np.zeros(plate_shape, bool)
    edge[[0, -1], :] = True
    edge[:, [0, -1]] = True
    return edge
