"""The one reader of the sample sheets: read, schema-validate, coerce, cross-check.

Every consumer of a sheet (``workflow/rules/common.smk``, the stages, ``pairedscreen validate``) reads it
here, so the workflow's validation and the stages see the same values: :func:`load_screen` reads and
checks a whole screen (all sheets and plate maps, then the references between them);
:func:`read_registry`, :func:`read_guides`, :func:`read_libraries`, :func:`read_plates` and
:func:`read_plate_map` read one sheet with the same schema and coercion. Rows are checked against
``workflow/schemas/*.schema.yaml``; the checks a schema cannot express (unique ids, references between
sheets, files that must exist) follow. Every problem names the sheet, the line, the column, the value and
the fix, and all problems are reported at once (:class:`SheetError` lists them).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from pairedscreen.columns import FALSE, TRUE, bool_column, parse_bool  # noqa: F401  (the one coercion)
from pairedscreen.errors import PairedscreenError
from pairedscreen.plate import WELL_RE, normalise_well  # noqa: F401  (re-exported for the rules)

PathLike = str | os.PathLike

#: sheet kind -> (schema file, boolean columns, integer columns)
SHEETS: dict[str, tuple[str, tuple[str, ...], tuple[str, ...]]] = {
    "perturbations": ("perturbations.schema.yaml", ("is_control",), ()),
    "guides": ("guides.schema.yaml", (), ()),
    "rna_libraries": ("rna_libraries.schema.yaml", (), ("expected_cells",)),
    "plates": ("plates.schema.yaml", (), ()),
    "plate_map": ("plate_map.schema.yaml", (), ("replicate",)),
}

#: what a schema pattern means, for error messages
_PATTERN_HINTS = {
    "^[A-Za-z0-9][A-Za-z0-9_.:+-]*$": "letters, digits and _ . : + - (starting with a letter or digit)",
    "^[A-Za-z0-9][A-Za-z0-9_.-]*$": "letters, digits and _ . - (starting with a letter or digit)",
    "^[A-P](0[1-9]|1[0-9]|2[0-4])$": "a 384-well name A01..P24 (A1 and a01 are accepted too)",
    "^(10xv2|10xv3|[0-9,:-]+)$": "10xv2, 10xv3 or a kb technology string such as 0,0,16:0,16,28:1,0,0",
    "\\(BC\\)": "a 10x feature pattern containing (BC), e.g. ^NNNNNNNNNN(BC)",
    "^[ACGT]+$": "the exact protospacer in A, C, G, T only (no N or other ambiguity code: kallisto cannot "
                 "count it)",
}


class SheetError(PairedscreenError, ValueError):
    """Problems in the sample sheets; the message names the sheet, the line and the fix of each.

    ``problems`` lists every problem found (each a :class:`SheetError` with ``sheet``, ``line``,
    ``problem``, ``fix``); ``sheet``/``line``/``problem``/``fix`` are those of the first.
    """

    def __init__(self, sheet: PathLike, line: int | None, problem: str, fix: str):
        self.sheet, self.line, self.problem, self.fix = str(sheet), line, problem, fix
        self.problems: list[SheetError] = [self]
        super().__init__(self.one_line())

    def one_line(self) -> str:
        where = self.sheet + (f", line {self.line}" if self.line is not None else "")
        return f"{where}: {self.problem}. Fix: {self.fix}"

    @classmethod
    def collect(cls, problems: Iterable[SheetError]) -> SheetError:
        """One error listing all ``problems`` (the single problem itself when there is one)."""
        problems = [q for p in problems for q in p.problems]
        order = {sheet: i for i, sheet in reversed(list(enumerate(p.sheet for p in problems)))}
        problems.sort(key=lambda p: (order[p.sheet], p.line or 0))  # stable: per sheet, by line
        if len(problems) == 1:
            return problems[0]
        first = problems[0]
        err = cls(first.sheet, first.line, first.problem, first.fix)
        err.problems = problems
        lines = [f"{len(problems)} problems in the sample sheets:"] + [f"  {p.one_line()}" for p in problems]
        err.args = ("\n".join(lines),)
        return err


class _Problems:
    """Accumulates problems; ``raise_if_any`` raises them together."""

    def __init__(self) -> None:
        self.items: list[SheetError] = []

    def add(self, sheet: PathLike, line: int | None, problem: str, fix: str) -> None:
        self.items.append(SheetError(sheet, line, problem, fix))

    def extend(self, err: SheetError) -> None:
        self.items.extend(err.problems)

    def raise_if_any(self) -> None:
        if self.items:
            raise SheetError.collect(self.items)


def line_of(df: pd.DataFrame, pos: int) -> int:
    """1-based line in the TSV of the row at position ``pos`` (line 1 is the header)."""
    return pos + 2


# ---------------------------------------------------------------------------------------- coercion
def control_ids(registry: pd.DataFrame) -> set[str]:
    """Perturbation ids flagged ``is_control`` in a registry."""
    return set(registry.loc[bool_column(registry["is_control"]).to_numpy(), "perturbation_id"].astype(str))


def _read_table(path: Path) -> pd.DataFrame:
    df = pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False, comment=None)
    df.columns = [str(c).strip() for c in df.columns]
    df = df.apply(lambda s: s.str.strip())
    df.attrs["source"] = str(path)
    return df


def read_sheet(
    path: PathLike, *, bool_cols: tuple[str, ...] = (), int_cols: tuple[str, ...] = ()
) -> pd.DataFrame:
    """Read a TSV sheet as strings (no NA guessing), then coerce the named boolean/integer columns.

    Raises :class:`SheetError` listing every value that is not a boolean/integer."""
    path = Path(path)
    if not path.exists():
        raise SheetError(path, None, "sheet not found", "create it or point config `sheets:` at it")
    df = _read_table(path)
    problems = _Problems()
    _coerce(df, path, bool_cols, int_cols, problems)
    problems.raise_if_any()
    return df


def _coerce(df: pd.DataFrame, path: PathLike, bool_cols: tuple[str, ...], int_cols: tuple[str, ...],
            problems: _Problems) -> set[str]:
    """Coerce in place; a value that does not convert stays a string and is recorded as a problem.
    Returns the columns with such values."""
    failed: set[str] = set()
    for col in bool_cols:
        if col not in df:
            continue
        out = []
        for pos, v in enumerate(df[col]):
            b = parse_bool(v)
            if b is None:
                failed.add(col)
                problems.add(path, line_of(df, pos), f"column {col!r} has {v!r}, not a boolean",
                             f"write true or false in column {col!r} (also accepted: "
                             "t/f, yes/no, y/n, 1/0, any case)")
            out.append(v if b is None else b)
        df[col] = pd.Series(out, index=df.index, dtype=bool if len(out) and all(
            isinstance(v, bool) for v in out) else object)
    for col in int_cols:
        if col not in df:
            continue
        out = []
        for pos, v in enumerate(df[col]):
            try:
                out.append(int(v))
            except ValueError:
                failed.add(col)
                problems.add(path, line_of(df, pos), f"column {col!r} has {v!r}, not an integer",
                             f"write a whole number in column {col!r}")
                out.append(v)
        df[col] = pd.Series(out, index=df.index, dtype="int64" if len(out) and all(
            isinstance(v, int) for v in out) else object)
    return failed


# ------------------------------------------------------------------------------------------ schemas
def schema_dir() -> Path:
    """``workflow/schemas`` of the source checkout this package lives in."""
    from pairedscreen.io import repo_root

    try:
        return repo_root() / "workflow" / "schemas"
    except FileNotFoundError:
        return Path(__file__).resolve().parents[2] / "workflow" / "schemas"


@cache
def load_schema(name: str) -> dict:
    """A schema of ``workflow/schemas`` by file name (cached; callers get a copy)."""
    return yaml.safe_load((schema_dir() / name).read_text())


def _allowed(err: Any, with_pattern: bool = True) -> str:
    """What the schema allows, in words, for a jsonschema error."""
    kind, v = err.validator, err.validator_value
    if kind == "pattern":
        hint = _PATTERN_HINTS.get(v)
        if hint:
            return f"{hint} (pattern {v})" if with_pattern else hint
        return f"a value matching the pattern {v}"
    if kind == "enum":
        return "one of " + ", ".join(str(x) for x in v)
    if kind == "type":
        return f"a value of type {v if isinstance(v, str) else ' or '.join(v)}"
    if kind == "minLength":
        return "a non-empty value" if v == 1 else f"at least {v} characters"
    if kind == "minimum":
        return f"a number >= {v}"
    if kind == "maximum":
        return f"a number <= {v}"
    if kind == "exclusiveMinimum":
        return f"a number > {v}"
    if kind == "exclusiveMaximum":
        return f"a number < {v}"
    return err.message


def _validate_rows(df: pd.DataFrame, schema_name: str, path: PathLike, problems: _Problems,
                   skip_cols: set[str]) -> None:
    """Every row against the sheet's schema; one problem per offending cell, the column missing from
    the header once (not once per row)."""
    import jsonschema

    schema = load_schema(schema_name)
    required = list(schema.get("required", []))
    missing = [c for c in required if c not in df.columns]
    if missing:
        problems.add(path, 1, f"required column(s) {', '.join(missing)} missing from the header "
                              f"(columns found: {', '.join(df.columns) or 'none'})",
                     f"add the column(s) {', '.join(missing)} (see workflow/schemas/{schema_name})")
    validator = jsonschema.Draft202012Validator(schema)
    props = schema.get("properties", {})
    optional = set(props) - set(required)
    for pos, record in enumerate(df.to_dict("records")):
        # an empty cell of an optional column is absent (a Cell Ranger library leaves the FASTQ cells empty)
        rec = {k: v for k, v in record.items() if k in props and k not in skip_cols
               and not (k in optional and v == "")}
        for err in sorted(validator.iter_errors(rec), key=lambda e: list(e.path)):
            if err.validator == "required":
                continue  # reported once for the header above
            col = str(err.path[0]) if err.path else "?"
            problems.add(path, line_of(df, pos), f"column {col!r} has {err.instance!r}, not {_allowed(err)}",
                         f"write {_allowed(err, with_pattern=False)} in column {col!r}")


def _read_checked(kind: str, path: PathLike, problems: _Problems, label: PathLike | None = None
                  ) -> pd.DataFrame | None:
    """Read one sheet, coerce and schema-check it; problems (naming the sheet as ``label``, default the
    path) are added, the table returned (None when the file is missing)."""
    schema_name, bools, ints = SHEETS[kind]
    path = Path(path)
    label = str(label if label is not None else path)
    if not path.exists():
        what = "plate map" if kind == "plate_map" else "sheet"
        problems.add(label, None, f"{what} not found",
                     "create it or correct the path (relative paths are read from the working directory)")
        return None
    df = _read_table(path)
    df.attrs["source"] = label
    if kind == "plate_map" and "well" in df:
        df["well"] = df["well"].map(normalise_well)
    failed = _coerce(df, label, bools, ints, problems)
    _validate_rows(df, schema_name, label, problems, skip_cols=failed)
    if kind == "rna_libraries":
        _library_inputs(df, label, problems)
    if kind == "plates":
        _plate_inputs(df, label, problems)
    return df


#: the columns of a library that enters as FASTQs (kb counts it); ``cellranger_outs`` is the other way in
FASTQ_COLUMNS = ("gex_fastq_r1", "gex_fastq_r2", "guide_fastq_r1", "guide_fastq_r2", "chemistry")
CELLRANGER_COLUMN = "cellranger_outs"


def _cell(row: Mapping[str, Any], col: str) -> str:
    v = row.get(col, "")
    return "" if v is None or (isinstance(v, float) and v != v) else str(v).strip()


def is_cellranger(row: Mapping[str, Any]) -> bool:
    """Whether a library row (a mapping or a pandas row) enters as a Cell Ranger folder
    (``cellranger_outs``)."""
    return bool(_cell(row, CELLRANGER_COLUMN))


def library_fastqs(row: Mapping[str, Any], kind: str, mate: str) -> list[str]:
    """The lanes of a library row's ``{kind}_fastq_{mate}`` column; [] for a Cell Ranger library."""
    v = _cell(row, f"{kind}_fastq_{mate}")
    return fastq_lanes(v) if v else []


def library_pattern(ids: Iterable[str]) -> str:
    """A regular expression matching exactly ``ids`` (a rule's wildcard constraint: which libraries it makes);
    one that matches nothing when ``ids`` is empty."""
    import re

    ids = list(ids)
    return "|".join(re.escape(i) for i in ids) if ids else "(?!x)x"


def _library_inputs(df: pd.DataFrame, path: PathLike, problems: _Problems) -> None:
    """Each library row has either every FASTQ column (and chemistry) or ``cellranger_outs``, not both."""
    fq_fix = ("fill gex_fastq_r1, gex_fastq_r2, guide_fastq_r1, guide_fastq_r2 and chemistry (kb counts the "
              "FASTQs), or cellranger_outs with a Cell Ranger count run's outs/ or multi run's "
              "per_sample_outs/<sample>/count/ folder")
    for pos, row in enumerate(df.to_dict("records")):
        lib = row.get("library_id", "?")
        fq = [c for c in FASTQ_COLUMNS if _cell(row, c)]
        fq_files = [c for c in fq if c != "chemistry"]
        cr = _cell(row, CELLRANGER_COLUMN)
        if cr and fq_files:
            problems.add(path, line_of(df, pos),
                         f"library {lib} has both FASTQs ({', '.join(fq_files)}) and cellranger_outs {cr!r}",
                         "keep one way in: empty the FASTQ columns to read the Cell Ranger folder, or empty "
                         "cellranger_outs to count the FASTQs with kb")
        elif not cr and not fq_files:
            problems.add(path, line_of(df, pos), f"library {lib} has neither FASTQs nor cellranger_outs",
                         fq_fix)
        elif not cr and len(fq) < len(FASTQ_COLUMNS):
            missing = [c for c in FASTQ_COLUMNS if c not in fq]
            problems.add(path, line_of(df, pos), f"library {lib} enters as FASTQs but has no "
                         f"{', '.join(missing)}", f"fill {', '.join(missing)} (or, for a Cell Ranger "
                         "output, empty the FASTQ columns and fill cellranger_outs)")


#: the column of a plate that enters as CellProfiler output instead of images (``image_dir``)
CELLPROFILER_COLUMN = "cellprofiler"


def is_cellprofiler(row: Mapping[str, Any]) -> bool:
    """Whether a plate row (a mapping or a pandas row) enters as CellProfiler output (``cellprofiler``)."""
    return bool(_cell(row, CELLPROFILER_COLUMN))


def cellprofiler_plate(row: Mapping[str, Any]) -> str | None:
    """The source's plate value to read (``cellprofiler_plate``), None when the row leaves it empty."""
    return _cell(row, "cellprofiler_plate") or None


def _plate_inputs(df: pd.DataFrame, path: PathLike, problems: _Problems) -> None:
    """Each plate row has either ``image_dir`` or ``cellprofiler``, not both."""
    for pos, row in enumerate(df.to_dict("records")):
        plate = row.get("plate_id", "?")
        img, cp = _cell(row, "image_dir"), _cell(row, CELLPROFILER_COLUMN)
        if img and cp:
            problems.add(path, line_of(df, pos), f"plate {plate} has both image_dir {img!r} and "
                         f"cellprofiler {cp!r}", "keep one way in: empty image_dir to read the CellProfiler "
                         "output, or empty cellprofiler to segment and measure the images")
        elif not img and not cp:
            problems.add(path, line_of(df, pos), f"plate {plate} has neither image_dir nor cellprofiler",
                         "fill image_dir with the plate's image folder, or cellprofiler with its "
                         "CellProfiler output (an ExportToSpreadsheet CSV folder, a .sqlite or a .parquet)")
        elif _cell(row, "cellprofiler_plate") and not cp:
            problems.add(path, line_of(df, pos),
                         f"plate {plate} names cellprofiler_plate but no cellprofiler source",
                         "empty cellprofiler_plate, or fill cellprofiler")


def _read_one(kind: str, path: PathLike) -> pd.DataFrame:
    problems = _Problems()
    df = _read_checked(kind, path, problems)
    problems.raise_if_any()
    assert df is not None
    return df


def read_registry(path: PathLike) -> pd.DataFrame:
    """The perturbation registry (``is_control`` boolean), schema-checked, ids unique."""
    df = _read_one("perturbations", path)
    problems = _Problems()
    _unique(df, "perturbation_id", "perturbation", problems)
    problems.raise_if_any()
    return df


def read_guides(path: PathLike) -> pd.DataFrame:
    """The guide sheet (10x feature reference + perturbation_id), schema-checked."""
    return _read_one("guides", path)


def read_libraries(path: PathLike) -> pd.DataFrame:
    """The RNA library sheet (``expected_cells`` integer), schema-checked."""
    return _read_one("rna_libraries", path)


def read_plates(path: PathLike) -> pd.DataFrame:
    """The plate sheet, schema-checked."""
    return _read_one("plates", path)


def read_plate_map(path: PathLike) -> pd.DataFrame:
    """A plate map: wells normalised to ``A01``, ``replicate`` integer, schema-checked, wells unique."""
    df = _read_one("plate_map", path)
    problems = _Problems()
    _unique(df, "well", "well", problems)
    problems.raise_if_any()
    return df


# ------------------------------------------------------------------------------------- cross-checks
def _unique(df: pd.DataFrame, col: str, what: str, problems: _Problems) -> None:
    if col not in df:
        return
    first: dict[str, int] = {}
    for pos, value in enumerate(df[col]):
        if value in first:
            problems.add(df.attrs.get("source", what), line_of(df, pos),
                         f"duplicate {col} {value!r} (first on line {line_of(df, first[value])})",
                         f"give every {what} a unique {col}")
        else:
            first[value] = pos


def _known(df: pd.DataFrame, col: str, known: set[str], registry: str, problems: _Problems) -> None:
    if col not in df:
        return
    for pos, value in enumerate(df[col]):
        if value not in known:
            problems.add(df.attrs.get("source", "sheet"), line_of(df, pos),
                         f"unknown perturbation_id {value!r}",
                         f"add {value!r} to the perturbation registry ({registry}) or correct the id")


def fastq_lanes(cell: object) -> list[str]:
    """The lanes of one FASTQ cell of the library sheet: ``a.fastq.gz;b.fastq.gz`` -> [a, b] (stripped)."""
    return [p.strip() for p in str(cell).split(";")]


def _resolve(workdir: Path, value: str) -> Path:
    p = Path(value.strip())
    return p if p.is_absolute() else workdir / p


def _exists(df: pd.DataFrame, col: str, workdir: Path, what: str, problems: _Problems) -> None:
    if col not in df:
        return
    for pos, value in enumerate(df[col]):
        for part in fastq_lanes(value) if str(value).strip() else []:
            if not _resolve(workdir, part).exists():
                problems.add(df.attrs.get("source", "sheet"), line_of(df, pos),
                             f"{what} {part!r} (column {col}) does not exist",
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

    def summary(self) -> str:
        n_wells = sum(len(pm) for pm in self.plate_maps.values())
        n_ctrl = len(control_ids(self.perturbations))
        return (f"{len(self.perturbations)} perturbations ({n_ctrl} controls), {len(self.guides)} guides, "
                f"{len(self.libraries)} RNA libraries, {len(self.plates)} plates ({n_wells} wells)")


def _cross_check(perturbations: pd.DataFrame, guides: pd.DataFrame, libraries: pd.DataFrame,
                 plates: pd.DataFrame, plate_maps: Mapping[str, pd.DataFrame], workdir: Path,
                 problems: _Problems) -> None:
    reg = perturbations.attrs.get("source", "perturbations.tsv")
    _unique(perturbations, "perturbation_id", "perturbation", problems)
    known = set(perturbations["perturbation_id"]) if "perturbation_id" in perturbations else set()
    if "is_control" in perturbations and not bool_column(perturbations["is_control"]).any():
        problems.add(reg, None, "no control perturbation (is_control true)",
                     "register the non-targeting controls: profiles are normalised to them")
    _unique(guides, "id", "guide", problems)
    _unique(guides, "sequence", "guide", problems)
    _known(guides, "perturbation_id", known, reg, problems)
    _unique(libraries, "library_id", "library", problems)
    for col in ("gex_fastq_r1", "gex_fastq_r2", "guide_fastq_r1", "guide_fastq_r2"):
        _exists(libraries, col, workdir, "FASTQ", problems)
    _exists(libraries, CELLRANGER_COLUMN, workdir, "Cell Ranger folder", problems)
    for r1 in ("gex_fastq_r1", "guide_fastq_r1"):
        r2 = r1.replace("r1", "r2")
        if r1 not in libraries or r2 not in libraries:
            continue
        for pos, (a, b) in enumerate(zip(libraries[r1], libraries[r2], strict=True)):
            if str(a).count(";") != str(b).count(";"):
                problems.add(libraries.attrs.get("source", "rna_libraries.tsv"), line_of(libraries, pos),
                             f"{r1} lists {str(a).count(';') + 1} lane(s) but {r2} lists "
                             f"{str(b).count(';') + 1}",
                             "list R1 and R2 FASTQs of every lane in the same order, separated by ';'")
    _unique(plates, "plate_id", "plate", problems)
    _exists(plates, "image_dir", workdir, "image folder", problems)
    _exists(plates, CELLPROFILER_COLUMN, workdir, "CellProfiler output", problems)
    for pm in plate_maps.values():
        _unique(pm, "well", "well", problems)
        _known(pm, "perturbation_id", known, reg, problems)


def check_screen(perturbations: pd.DataFrame, guides: pd.DataFrame, libraries: pd.DataFrame,
                 plates: pd.DataFrame, plate_maps: dict[str, pd.DataFrame],
                 workdir: PathLike = ".") -> Screen:
    """Cross-sheet checks of sheets already read: unique ids, every perturbation_id registered, every path
    present. Raises one :class:`SheetError` listing every problem."""
    workdir = Path(workdir)
    problems = _Problems()
    _cross_check(perturbations, guides, libraries, plates, plate_maps, workdir, problems)
    _exists(plates, "plate_map", workdir, "plate map", problems)
    problems.raise_if_any()
    return Screen(perturbations, guides, libraries, plates, plate_maps)


def load_screen(config: Mapping[str, Any], workdir: PathLike = ".") -> Screen:
    """Read, schema-validate and cross-check every sheet of a screen (``config['sheets']`` paths, relative
    to ``workdir``): the registry, guides, RNA libraries, plates and each plate's map. All problems of all
    sheets are raised together as one :class:`SheetError`."""
    workdir = Path(workdir)
    sheets = config["sheets"]
    problems = _Problems()
    tables = {kind: _read_checked(kind, _resolve(workdir, str(sheets[key])), problems,
                                  label=sheets[key])
              for kind, key in (("perturbations", "perturbations"), ("guides", "guides"),
                                ("rna_libraries", "rna_libraries"), ("plates", "plates"))}
    plate_maps: dict[str, pd.DataFrame] = {}
    plates = tables["plates"]
    if plates is not None and {"plate_id", "plate_map"} <= set(plates.columns):
        for pos, (pid, pm_path) in enumerate(zip(plates["plate_id"], plates["plate_map"], strict=True)):
            full = _resolve(workdir, pm_path)
            if not pm_path or not full.exists():
                problems.add(plates.attrs["source"], line_of(plates, pos),
                             f"plate map {pm_path!r} (column plate_map) does not exist",
                             "correct the plate_map path (relative paths are read from the working "
                             "directory)")
                continue
            pm = _read_checked("plate_map", full, problems, label=pm_path)
            if pm is not None:
                plate_maps[pid] = pm
    if all(t is not None for t in tables.values()):
        _cross_check(tables["perturbations"], tables["guides"], tables["rna_libraries"], plates,
                     plate_maps, workdir, problems)
    problems.raise_if_any()
    return Screen(tables["perturbations"], tables["guides"], tables["rna_libraries"], plates,
                  plate_maps)
