"""Landing folders: pick up new plates and sequencing runs and append them to the sheets.

``pairedscreen discover LANDING`` (run in the screen's working directory, or with ``--directory``) looks below
LANDING for

- **plates**: folders whose name matches ``landing.plate_folder`` (group ``plate``) and that hold at least one
  file named like ``paint.image_pattern``; the plate map is the first existing of ``landing.plate_map``
  ({plate}, {image_dir}, {landing} filled in), else the plate is reported as missing its map and not added;
- **sequencing runs**: FASTQs in bcl-convert / Cell Ranger naming
  ``{sample}_S{n}_L{lane}_R{1,2}_001.fastq.gz``; the sample's ``landing.gex_suffix`` /
  ``landing.guide_suffix`` tells gene expression from guide capture and the rest of the name is the library
  id. A library is added when both parts have R1 and R2 for every lane.

New rows are appended to ``plates.tsv`` / ``rna_libraries.tsv`` (existing lines are never rewritten: the new
text is the old bytes plus the new lines, written atomically), after the rows passed the sheets' schemas.
Plates and libraries already in the sheets (same id, or same folder / FASTQs) are skipped, so running it
again adds nothing. Everything that could not be added is reported, all at once, with the fix.
"""

from __future__ import annotations

import os
import re
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from pairedscreen.sheets import SheetError, fastq_lanes, load_screen, read_sheet

FASTQ_RE = re.compile(r"^(?P<sample>.+)_S(?P<n>\d+)_L(?P<lane>\d{3})_(?P<read>[RI][12])_001\.f(ast)?q\.gz$")
PLATE_COLUMNS = ["plate_id", "batch", "image_dir", "plate_map"]
LIBRARY_COLUMNS = ["library_id", "batch", "chemistry", "gex_fastq_r1", "gex_fastq_r2", "guide_fastq_r1",
                   "guide_fastq_r2", "expected_cells"]


@dataclass
class Discovery:
    """What one scan found: rows to append and the problems (each naming the file and the fix)."""

    plates: list[dict[str, str]] = field(default_factory=list)
    libraries: list[dict[str, str]] = field(default_factory=list)
    known: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


def load_config(workdir: Path) -> dict:
    """config/config.yaml with the schema's defaults (pairedscreen.config, as the workflow loads it)."""
    from pairedscreen.config import load_config as load

    return load(workdir / "config" / "config.yaml", source="config/config.yaml")


def _rel(p: Path, workdir: Path) -> str:
    """A path as the sheets write it: relative to the working directory when inside it, else absolute."""
    p = p.resolve()
    try:
        return p.relative_to(workdir.resolve()).as_posix()
    except ValueError:
        return p.as_posix()


def _same(a: str, b: Path, workdir: Path) -> bool:
    pa = Path(a) if os.path.isabs(a) else workdir / a
    return pa.resolve() == b.resolve()


def find_plates(landing: Path, workdir: Path, config: dict, batch: str, existing: pd.DataFrame,
                out: Discovery) -> None:
    from pairedscreen.paint.ingest import parse_pattern

    conv = config["landing"]
    folder_re = re.compile(conv["plate_folder"])
    image_re = parse_pattern(config["paint"]["image_pattern"])
    known_ids = set(existing["plate_id"]) if "plate_id" in existing else set()
    known_dirs = list(existing["image_dir"]) if "image_dir" in existing else []
    for d in sorted(p for p in landing.rglob("*") if p.is_dir() and not p.name.startswith(".")):
        m = folder_re.match(d.name)
        if not m or not any(image_re.match(f.name) for f in d.iterdir() if f.is_file()):
            continue
        plate = m.group("plate") if "plate" in m.groupdict() else d.name
        image_dir = _rel(d, workdir)
        if plate in known_ids or any(_same(k, d, workdir) for k in known_dirs):
            row = existing[(existing["plate_id"] == plate)]
            if len(row) and not _same(row["image_dir"].iloc[0], d, workdir):
                out.problems.append(
                    f"plate {plate} ({image_dir}): plates.tsv already has plate {plate} with image_dir "
                    f"{row['image_dir'].iloc[0]}; rename the new folder (a plate id names one plate) or "
                    "correct plates.tsv by hand")
            else:
                out.known.append(f"plate {plate}")
            continue
        fill = {"plate": plate, "image_dir": image_dir, "landing": _rel(landing, workdir)}
        candidates = [c.format(**fill) for c in conv["plate_map"]]
        found = next((c for c in candidates if (workdir / c).is_file()), None)
        if found is None:
            out.problems.append(
                f"plate {plate} ({image_dir}): no plate map; looked for {', '.join(candidates)}. Fix: put "
                "the plate map (well, perturbation_id, replicate) at one of these and run discover again")
            continue
        out.plates.append({"plate_id": plate, "batch": batch, "image_dir": image_dir, "plate_map": found})
        known_ids.add(plate)


def find_libraries(landing: Path, workdir: Path, config: dict, batch: str, existing: pd.DataFrame,
                   out: Discovery) -> None:
    conv = config["landing"]
    suffixes = {"gex": conv["gex_suffix"], "guide": conv["guide_suffix"]}
    # library -> kind -> lane -> read -> path
    found: dict[str, dict[str, dict[str, dict[str, str]]]] = defaultdict(lambda: defaultdict(dict))
    for f in sorted(landing.rglob("*.f*q.gz")):
        if f.name.startswith("."):
            continue
        m = FASTQ_RE.match(f.name)
        if not m:
            out.problems.append(
                f"{_rel(f, workdir)}: not in bcl-convert naming {{sample}}_S{{n}}_L{{lane}}_R{{1,2}}_001"
                ".fastq.gz; rename it or add the library by hand")
            continue
        if m.group("read").startswith("I"):
            continue  # index reads are not counted
        sample = m.group("sample")
        kind = next((k for k, s in suffixes.items() if s and sample.endswith(s)), None)
        if kind is None:
            out.problems.append(
                f"{_rel(f, workdir)}: sample {sample!r} ends in neither {suffixes['gex']!r} (gene "
                f"expression) nor {suffixes['guide']!r} (guide capture); rename it or set "
                "landing.gex_suffix / landing.guide_suffix in config.yaml")
            continue
        lib = sample[: len(sample) - len(suffixes[kind])]
        found[lib][kind].setdefault(m.group("lane"), {})[m.group("read")] = _rel(f, workdir)

    known_ids = set(existing["library_id"]) if "library_id" in existing else set()
    known_fastqs = {p for col in LIBRARY_COLUMNS if "fastq" in col and col in existing
                    for cell in existing[col] for p in fastq_lanes(cell)}
    for lib in sorted(found):
        parts = found[lib]
        paths = [p for kind in parts.values() for lane in kind.values() for p in lane.values()]
        if lib in known_ids or any(p in known_fastqs for p in paths):
            out.known.append(f"library {lib}")
            continue
        bad = []
        for kind in ("gex", "guide"):
            if kind not in parts:
                bad.append(f"no {kind} FASTQs ({lib}{suffixes[kind]}_S*_L*_R1/R2_001.fastq.gz)")
                continue
            for lane, reads in sorted(parts[kind].items()):
                for r in ("R1", "R2"):
                    if r not in reads:
                        bad.append(f"{kind} lane L{lane} has no {r}")
        if bad:
            out.problems.append(f"library {lib}: " + "; ".join(bad) + ". Fix: copy the missing FASTQs "
                                "into the landing folder and run discover again")
            continue
        row = {"library_id": lib, "batch": batch, "chemistry": conv["chemistry"]}
        for kind in ("gex", "guide"):
            for r in ("R1", "R2"):
                lanes = sorted(parts[kind])
                row[f"{kind}_fastq_{r.lower()}"] = ";".join(parts[kind][lane][r] for lane in lanes)
        row["expected_cells"] = str(conv["expected_cells"])
        out.libraries.append(row)


def _validate(rows: list[dict[str, str]], schema: str, sheet: Path, out: Discovery) -> list[dict[str, str]]:
    """Keep the rows that pass the sheet's schema; the others become problems naming the row."""
    from snakemake.exceptions import WorkflowError
    from snakemake.utils import validate

    repo = Path(__file__).resolve().parents[2]
    good = []
    for row in rows:
        df = pd.DataFrame([row])
        if "expected_cells" in df:
            df["expected_cells"] = df["expected_cells"].astype(int)
        try:
            validate(df, str(repo / "workflow" / "schemas" / schema))
        except WorkflowError as e:
            cause = e.args[1] if len(e.args) > 1 else e
            out.problems.append(f"{sheet}: new row {row} fails workflow/schemas/{schema}: "
                                f"{getattr(cause, 'message', str(cause).splitlines()[0])}")
            continue
        good.append(row)
    return good


def append_rows(sheet: Path, rows: list[dict[str, str]], columns: list[str]) -> None:
    """Append ``rows`` to a TSV sheet: the existing bytes unchanged, then one line per row (atomic rename)."""
    if not rows:
        return
    old = sheet.read_text() if sheet.exists() else ""
    header = old.splitlines()[0].split("\t") if old.strip() else columns
    header = [h.strip() for h in header]
    text = old if old.strip() else "\t".join(columns) + "\n"
    if text and not text.endswith("\n"):
        text += "\n"
    for row in rows:
        text += "\t".join(str(row.get(h, "")) for h in header) + "\n"
    tmp = sheet.with_name(f".{sheet.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, sheet)


def _existing(path: Path, columns: list[str]) -> pd.DataFrame:
    return read_sheet(path) if path.exists() else pd.DataFrame(columns=columns)


def discover(landing: str | os.PathLike, workdir: str | os.PathLike = ".", *, batch: str | None = None,
             dry_run: bool = False) -> Discovery:
    """Scan ``landing`` and append what is new to the working directory's sheets (unless ``dry_run``)."""
    workdir = Path(workdir)
    landing = Path(landing) if os.path.isabs(landing) else workdir / landing
    if not landing.is_dir():
        raise FileNotFoundError(f"landing folder {landing} does not exist")
    config = load_config(workdir)
    sheets = config["sheets"]
    plates_tsv, libs_tsv = workdir / sheets["plates"], workdir / sheets["rna_libraries"]
    batch = batch or landing.resolve().name
    out = Discovery()
    find_plates(landing, workdir, config, batch, _existing(plates_tsv, PLATE_COLUMNS), out)
    find_libraries(landing, workdir, config, batch, _existing(libs_tsv, LIBRARY_COLUMNS), out)
    out.plates = _validate(out.plates, "plates.schema.yaml", plates_tsv, out)
    out.libraries = _validate(out.libraries, "rna_libraries.schema.yaml", libs_tsv, out)
    if not dry_run and (out.plates or out.libraries):
        old = {p: p.read_bytes() if p.exists() else None for p in (plates_tsv, libs_tsv)}
        append_rows(plates_tsv, out.plates, PLATE_COLUMNS)
        append_rows(libs_tsv, out.libraries, LIBRARY_COLUMNS)
        try:
            load_screen(config, workdir)       # the workflow's own checks of the whole screen
        except SheetError as e:                # put the sheets back as they were: nothing half-added
            for p, data in old.items():
                if data is None:
                    p.unlink(missing_ok=True)
                else:
                    p.write_bytes(data)
            out.problems.append(f"the sheets with the new rows fail the workflow's checks: {e}")
            out.plates, out.libraries = [], []
    return out
