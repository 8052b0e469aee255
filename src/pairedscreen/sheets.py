"""Reading and cross-checking the sample sheets.

Each sheet is first checked row by row against its JSON schema (``snakemake.utils.validate`` in
``workflow/rules/common.smk``); the checks here are the ones a schema cannot express: unique ids,
references between sheets, files that must exist. Every error names the sheet, the line and the fix.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from pairedscreen.plate import WELL_RE, normalise_well  # noqa: F401  (re-exported for the rules)

TRUE = {"true", "t", "yes", "y", "1"}
FALSE = {"false", "f", "no", "n", "0"}


class SheetError(ValueError):
    """A problem in a sample sheet; the message names the sheet, the line and the fix."""

    def __init__(self, sheet: str | Path, line: int | None, problem: str, fix: str):
        where = f"{sheet}" + (f", line {line}" if line is not None else "")
        super().__init__(f"{where}: {problem}. Fix: {fix}")
        self.sheet, self.line, self.problem, self.fix = str(sheet), line, problem, fix


def line_of(df: pd.DataFrame, pos: int) -> int:
    """1-based line in the TSV of the row at position ``pos`` (line 1 is the header)."""
    return pos + 2


def read_sheet(
    path: str | Path, *, bool_cols: tuple[str, ...] = (), int_cols: tuple[str, ...] = ()
) -> pd.DataFrame:
    """Read a TSV sheet as strings (no NA guessing), then coerce the named boolean/integer columns."""
    path = Path(path)
    if not path.exists():
        raise SheetError(path, None, "sheet not found", "create it or point config `sheets:` at it")
    df = pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False, comment=None)
    df.columns = [c.strip() for c in df.columns]
    df = df.apply(lambda s: s.str.strip())
    df.attrs["source"] = str(path)
    for col in bool_cols:
        if col in df:
            df[col] = [_to_bool(v, path, i, col) for i, v in enumerate(df[col])]
    for col in int_cols:
        if col in df:
            df[col] = [_to_int(v, path, i, col) for i, v in enumerate(df[col])]
    return df


def read_registry(path: str | Path) -> pd.DataFrame:
    """The perturbation registry with ``is_control`` as booleans."""
    return read_sheet(path, bool_cols=("is_control",))


def _to_bool(value: str, path: Path, pos: int, col: str) -> bool:
    v = str(value).lower()
    if v in TRUE:
        return True
    if v in FALSE:
        return False
    raise SheetError(path, pos + 2, f"column {col!r} has {value!r}, not a boolean", "write true or false")


def _to_int(value: str, path: Path, pos: int, col: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise SheetError(path, pos + 2, f"column {col!r} has {value!r}, not an integer",
                         "write a whole number") from None


def _unique(df: pd.DataFrame, col: str, what: str) -> None:
    dup = df[col].duplicated(keep="first")
    if dup.any():
        pos = int(dup.to_numpy().nonzero()[0][0])
        first = int((df[col] == df[col].iloc[pos]).to_numpy().nonzero()[0][0])
        raise SheetError(df.attrs.get("source", what), line_of(df, pos),
                         f"duplicate {col} {df[col].iloc[pos]!r} (first on line {line_of(df, first)})",
                         f"give every {what} a unique {col}")


def _known(df: pd.DataFrame, col: str, known: set[str], registry: str) -> None:
    for pos, value in enumerate(df[col]):
        if value not in known:
            raise SheetError(df.attrs.get("source", "sheet"), line_of(df, pos),
                             f"unknown perturbation_id {value!r}",
                             f"add {value!r} to the perturbation registry ({registry}) or correct the id")


def _exists(df: pd.DataFrame, col: str, workdir: Path, what: str) -> None:
    for pos, value in enumerate(df[col]):
        for part in str(value).split(";"):
            p = Path(part.strip())
            p = p if p.is_absolute() else workdir / p
            if not p.exists():
                raise SheetError(df.attrs.get("source", "sheet"), line_of(df, pos),
                                 f"{what} {part.strip()!r} (column {col}) does not exist",
                                 "correct the path (relative paths are read from the working directory)")


@dataclass
class Screen:
    """The validated sheets of one screen."""

    perturbations: pd.DataFrame
    guides: pd.DataFrame
    libraries: pd.DataFrame
    plates: pd.DataFrame
    plate_maps: dict[str, pd.DataFrame] = field(default_factory=dict)

    @property
    def library_ids(self) -> list[str]:
        return list(self.libraries["library_id"])

    @property
    def plate_ids(self) -> list[str]:
        return list(self.plates["plate_id"])


def check_screen(perturbations: pd.DataFrame, guides: pd.DataFrame, libraries: pd.DataFrame,
                 plates: pd.DataFrame, plate_maps: dict[str, pd.DataFrame],
                 workdir: str | Path = ".") -> Screen:
    """Cross-sheet checks: unique ids, every perturbation_id registered, every path present."""
    workdir = Path(workdir)
    reg = perturbations.attrs.get("source", "perturbations.tsv")
    _unique(perturbations, "perturbation_id", "perturbation")
    known = set(perturbations["perturbation_id"])
    if not perturbations["is_control"].any():
        raise SheetError(reg, None, "no control perturbation (is_control true)",
                         "register the non-targeting controls: profiles are normalised to them")
    _unique(guides, "id", "guide")
    _unique(guides, "sequence", "guide")
    _known(guides, "perturbation_id", known, reg)
    _unique(libraries, "library_id", "library")
    for col in ("gex_fastq_r1", "gex_fastq_r2", "guide_fastq_r1", "guide_fastq_r2"):
        _exists(libraries, col, workdir, "FASTQ")
        lanes = libraries[col].str.count(";")
        mate = libraries[col.replace("r1", "r2") if col.endswith("r1") else col.replace("r2", "r1")]
        bad = lanes != mate.str.count(";")
        if bad.any():
            pos = int(bad.to_numpy().nonzero()[0][0])
            raise SheetError(libraries.attrs.get("source", "rna_libraries.tsv"), line_of(libraries, pos),
                             f"{col} lists a different number of lanes than its mate",
                             "list R1 and R2 FASTQs of every lane in the same order, separated by ';'")
    _unique(plates, "plate_id", "plate")
    _exists(plates, "image_dir", workdir, "image folder")
    _exists(plates, "plate_map", workdir, "plate map")
    for pm in plate_maps.values():
        _unique(pm, "well", "well")
        _known(pm, "perturbation_id", known, reg)
    return Screen(perturbations, guides, libraries, plates, plate_maps)
