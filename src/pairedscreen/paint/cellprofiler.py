"""Read CellProfiler per-object output into one per-cell table with pycytominer/CytoTable naming
(``{Compartment}_{Module}_{Feature}...`` features and ``Metadata_*``): the way a plate enters the paint arm
when a lab already ran CellProfiler (plates.tsv column ``cellprofiler``) instead of handing us images.

Four layouts are read (:func:`source_format`):

- ``csv``: an ExportToSpreadsheet folder (Image.csv + Cells.csv, Cytoplasm.csv, Nuclei.csv; unprefixed
  columns, keys ImageNumber + ObjectNumber);
- ``sqlite_per``: an ExportToDatabase SQLite (``Per_Image``, ``Per_Cells``, ...; prefixed columns, object
  keys ``{Compartment}_Number_Object_Number``);
- ``sqlite_cytominer``: a cytominer-database SQLite (``Image``, ``Cells``, ...; keys TableNumber +
  ImageNumber + ObjectNumber);
- ``parquet``: a joined single-cell Parquet (pycytominer SingleCells / CytoTable; ``Metadata_ImageNumber``,
  ``Metadata_ObjectNumber``, features already joined).

Compartments are joined on the Cytoplasm object's ``Parent_Cells`` / ``Parent_Nuclei`` within an image
(the CellProfiler/JUMP convention: one row per cytoplasm, i.e. per cell with a nucleus). Plate, well and
site come from the image table (the first present of the configured candidate columns) or, when the source
has no well column (e.g. ExampleHuman), from the image file name (``filename_regex`` with groups ``well``
and ``site``).

Only the rows of one plate are read (memory: one plate, whatever the source holds): the source's plates are
listed from its plate column alone; then the image table is read for the asked plate (a SQL ``WHERE``, a
pyarrow dataset filter, or CSV chunks of :data:`CSV_CHUNK_ROWS` rows keeping that plate's rows), and the
object tables for that plate's images (``ImageNumber IN (...)``; for a Parquet the dataset filter on the
plate column and the image numbers; CSV chunks keeping that plate's image numbers). ``source_rows_read``
in the record counts the object rows kept in memory.
"""

from __future__ import annotations

import os
import re
import sqlite3
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads
import pyarrow.parquet as pq

from pairedscreen import columns as C
from pairedscreen.errors import PairedscreenError
from pairedscreen.plate import normalise_well

COMPARTMENTS = ("Cytoplasm", "Cells", "Nuclei")
#: our feature families (paint.features.families) -> the CellProfiler module naming their columns, and the
#: compartments we measure them in (neighbours: nuclei and cells only, as paint.features measures them)
FAMILY_MODULES: dict[str, tuple[str, tuple[str, ...]]] = {
    "areashape": ("AreaShape", ("Cells", "Nuclei", "Cytoplasm")),
    "intensity": ("Intensity", ("Cells", "Nuclei", "Cytoplasm")),
    "neighbors": ("Neighbors", ("Cells", "Nuclei")),
    "texture": ("Texture", ("Cells", "Nuclei", "Cytoplasm")),
    "granularity": ("Granularity", ("Cells", "Nuclei", "Cytoplasm")),
    "radial": ("RadialDistribution", ("Cells", "Nuclei", "Cytoplasm")),
    "colocalization": ("Correlation", ("Cells", "Nuclei", "Cytoplasm")),
    # the jump preset's families: the object relations (RelateObjects / IdentifySecondaryObjects) and the
    # radial distribution of the mito_tubeness image (MeasureObjectIntensityDistribution), the mito_skel
    # skeleton around the nuclei (MeasureObjectSkeleton)
    "relations": ("Children", ("Cells",)),
    "tubeness_radial": ("RadialDistribution", ("Cells", "Cytoplasm")),
    "skeleton": ("ObjectSkeleton", ("Nuclei",)),
}
_LINKS = ("Parent_", "Children_", "Number_Object_Number", "ObjectNumber")
_IMAGE_KEY = {"csv": ["ImageNumber"], "sqlite_per": ["ImageNumber"],
              "sqlite_cytominer": ["TableNumber", "ImageNumber"]}
_IMAGE_TABLE = {"sqlite_per": "Per_Image", "sqlite_cytominer": "Image"}
#: each layout's name as the report and croissant.json show it (recorded as ``format_name``)
FORMAT_NAMES = {"csv": "CellProfiler ExportToSpreadsheet CSV folder",
                "sqlite_per": "CellProfiler ExportToDatabase SQLite (Per_* tables)",
                "sqlite_cytominer": "cytominer-database SQLite",
                "parquet": "joined single-cell Parquet (pycytominer / CytoTable)"}
#: rows per chunk when a CSV of the source is read (only the asked plate's rows of each chunk are kept)
CSV_CHUNK_ROWS = 100_000


class CellProfilerError(PairedscreenError, ValueError):
    """A CellProfiler source that cannot be read as a plate (layout, plate or well metadata)."""


def source_format(path: str | os.PathLike) -> str:
    """``csv`` | ``sqlite_per`` | ``sqlite_cytominer`` | ``parquet`` (see the module docstring)."""
    p = Path(path)
    if p.is_dir():
        missing = [f"{t}.csv" for t in ("Image", *COMPARTMENTS) if not (p / f"{t}.csv").exists()]
        if missing:
            raise CellProfilerError(f"{p}: an ExportToSpreadsheet folder needs {', '.join(missing)}")
        return "csv"
    with p.open("rb") as fh:
        head = fh.read(16)
    if head.startswith(b"SQLite format 3"):
        tables = set(_sqlite_tables(p))
        if {"Per_Image", *(f"Per_{c}" for c in COMPARTMENTS)} <= tables:
            return "sqlite_per"
        if {"Image", *COMPARTMENTS} <= tables:
            return "sqlite_cytominer"
        raise CellProfilerError(f"{p}: a SQLite without Per_Image/Per_Cells/Per_Cytoplasm/Per_Nuclei "
                                f"(ExportToDatabase) or Image/Cells/Cytoplasm/Nuclei (cytominer-database) "
                                f"tables; it has {sorted(tables)}")
    if head.startswith(b"PAR1"):
        return "parquet"
    raise CellProfilerError(f"{p}: neither a CSV folder, a SQLite nor a Parquet file")


def _sqlite_tables(path: Path) -> list[str]:
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as con:
        return [r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='table'")]


def _sql(path: Path, query: str, params: Sequence[Any] = ()) -> pd.DataFrame:
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as con:
        return pd.read_sql_query(query, con, params=list(params))


def _first(columns: Sequence[str], candidates: Sequence[str]) -> str | None:
    return next((c for c in candidates if c in columns), None)


# ------------------------------------------------------------------------------------ image metadata
def _parquet_meta(path: Path) -> list[str]:
    return [n for n in pq.read_schema(path).names if not n.startswith(tuple(f"{c}_" for c in COMPARTMENTS))]


def _image_columns(path: Path, fmt: str) -> list[str]:
    """The image table's column names as :func:`_image_table` returns them (``Image_`` prefix for a CSV)."""
    if fmt == "csv":
        head = pd.read_csv(path / "Image.csv", nrows=0).columns
        return [c if c == "ImageNumber" else f"Image_{c}" for c in head]
    if fmt == "parquet":
        return _parquet_meta(path)
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as con:
        return [r[1] for r in con.execute(f'PRAGMA table_info("{_IMAGE_TABLE[fmt]}")')]


def _csv_column(column: str) -> str:
    """An image column as Image.csv names it (without the ``Image_`` prefix :func:`_image_table` adds)."""
    return column.removeprefix("Image_") if column != "ImageNumber" else column


def _plate_filter(plate_col: str, source_plate: str) -> pc.Expression:
    return pc.field(plate_col).cast(pa.string()) == source_plate


def source_plates(path: Path, fmt: str, plate_col: str | None) -> list[str]:
    """The distinct values (as text) of the source's plate column, read from that column alone (streamed:
    memory one chunk, whatever the number of objects); [] without a plate column."""
    if plate_col is None:
        return []
    values: set[str] = set()
    if fmt == "csv":
        col = _csv_column(plate_col)
        for chunk in pd.read_csv(path / "Image.csv", usecols=[col], dtype={col: str},
                                 chunksize=CSV_CHUNK_ROWS):
            values |= set(chunk[col].astype(str))
    elif fmt == "parquet":
        for batch in pads.dataset(path, format="parquet").to_batches(columns=[plate_col]):
            values |= {str(v) for v in pc.unique(batch.column(0).cast(pa.string())).to_pylist()}
    else:
        values = {str(v) for v in _sql(path, f'SELECT DISTINCT CAST("{plate_col}" AS TEXT) AS p FROM '
                                             f'"{_IMAGE_TABLE[fmt]}"')["p"]}
    return sorted(values)


def _image_table(path: Path, fmt: str, plate_col: str | None = None,
                 source_plate: str | None = None) -> pd.DataFrame:
    """The image table with ``Image_``-prefixed columns (all layouts), keyed like the object tables; only the
    rows of ``source_plate`` (in ``plate_col``) when both are given."""
    one = plate_col is not None and bool(source_plate)
    if fmt == "csv":
        col = _csv_column(plate_col) if plate_col else None
        chunks = [c[c[col] == source_plate] if one else c
                  for c in pd.read_csv(path / "Image.csv", dtype={col: str} if col else None,
                                       chunksize=CSV_CHUNK_ROWS)]
        img = pd.concat(chunks, ignore_index=True)
        return img.rename(columns={c: f"Image_{c}" for c in img.columns if c != "ImageNumber"})
    if fmt in _IMAGE_TABLE:
        if one:
            return _sql(path, f'SELECT * FROM "{_IMAGE_TABLE[fmt]}" WHERE CAST("{plate_col}" AS TEXT) = ?',
                        [source_plate])
        return _sql(path, f'SELECT * FROM "{_IMAGE_TABLE[fmt]}"')
    meta = _parquet_meta(path)
    key_src = [k for k in ("Metadata_TableNumber", "Metadata_ImageNumber") if k in meta]
    if "Metadata_ImageNumber" not in key_src:
        raise CellProfilerError(f"{path}: no Metadata_ImageNumber column: cannot tell images apart")
    # one row per image, streamed batch by batch (a joined Parquet repeats the image columns per object)
    unique = [*key_src, *([plate_col] if plate_col else [])]
    frames = [b.to_pandas().drop_duplicates(unique) for b in pads.dataset(path, format="parquet").to_batches(
        columns=meta, filter=_plate_filter(plate_col, source_plate) if one else None)]
    img = pd.concat(frames, ignore_index=True).drop_duplicates(unique) if frames else \
        pd.DataFrame(columns=meta)
    return img.rename(columns={"Metadata_ImageNumber": "ImageNumber", "Metadata_TableNumber": "TableNumber"})


def pick_plate(plates: Sequence[str], *, plate_col: str | None, source_plate: str | None, source: str,
               plate_columns: Sequence[str]) -> str | None:
    """The source plate to read: ``source_plate`` (checked against the source's ``plates``), else the only
    plate (None without a plate column); several plates without ``source_plate`` are refused."""
    if source_plate:
        if plate_col is None:
            raise CellProfilerError(f"{source}: cellprofiler_plate {source_plate!r} given but the source has "
                                    f"none of the plate columns {list(plate_columns)}")
        if source_plate not in plates:
            raise CellProfilerError(f"{source}: plate {source_plate!r} not in its {plate_col} values "
                                    f"{list(plates)}")
        return source_plate
    if len(plates) > 1:
        raise CellProfilerError(f"{source}: holds plates {list(plates)} ({plate_col}); name the one of this "
                                "row in plates.tsv's cellprofiler_plate column")
    return plates[0] if plates else None


def image_metadata(image: pd.DataFrame, *, source: str, plate_columns: Sequence[str],
                   well_columns: Sequence[str], site_columns: Sequence[str], filename_regex: str,
                   source_plate: str | None) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Per image: the key columns, ``Metadata_Well`` (normalised, A01), ``Metadata_Site`` (int) of the images
    of one plate, and a record of where each came from. ``source_plate``: the source's plate value to keep
    (required when the source holds several plates)."""
    record: dict[str, Any] = {}
    key = [k for k in ("TableNumber", "ImageNumber") if k in image]
    out = image[key].copy()
    plate_col = _first(image.columns, plate_columns)
    plates = sorted(image[plate_col].astype(str).unique()) if plate_col else []
    record["plate_column"], record["source_plates"] = plate_col, plates
    record["source_plate"] = pick_plate(plates, plate_col=plate_col, source_plate=source_plate, source=source,
                                        plate_columns=plate_columns)
    keep = (image[plate_col].astype(str) == source_plate).to_numpy() if source_plate else \
        np.ones(len(image), bool)
    well_col = _first(image.columns, well_columns)
    site_col = _first(image.columns, site_columns)
    parsed = None
    names = sorted(c for c in image.columns if c.startswith(("Image_FileName_", "FileName_")))
    if well_col is None or (site_col is None and names):
        if not names:
            raise CellProfilerError(f"{source}: no well column ({list(well_columns)}) and no "
                                    "Image_FileName_* "
                                    "column to read the well from")
        parsed = image[names[0]].astype(str).str.extract(filename_regex)
        record["filename_column"] = names[0]
        if parsed.isna().any().any():
            bad = image.loc[parsed.isna().any(axis=1), names[0]].head(3).tolist()
            raise CellProfilerError(f"{source}: file names {bad} do not match paint.cellprofiler."
                                    f"filename_regex {filename_regex!r}")
    if well_col is not None:
        wells = image[well_col].astype(str)
    else:
        assert parsed is not None
        if "well" not in parsed:
            raise CellProfilerError(f"{source}: paint.cellprofiler.filename_regex has no (?P<well>...) group")
        wells = parsed["well"]
    if site_col is not None:
        sites = pd.to_numeric(image[site_col], errors="raise")
    elif parsed is not None and "site" in parsed:
        sites = pd.to_numeric(parsed["site"])
    else:
        sites = image["ImageNumber"]
        record["site_from"] = "ImageNumber"
    record["well_column"] = well_col or f"{record.get('filename_column')} (filename_regex)"
    record["site_column"] = site_col or record.get("site_from") or \
        f"{record.get('filename_column')} (filename_regex)"
    bad = sorted({w for w in wells if normalise_well(w) is None}) if hasattr(wells, "__iter__") else []
    if bad:
        raise CellProfilerError(f"{source}: well values {bad[:5]} are not well names (A01..P24)")
    out[C.WELL] = [normalise_well(w) for w in wells]
    out[C.SITE] = np.asarray(sites, dtype=np.int64)
    return out[keep].reset_index(drop=True), record


# ------------------------------------------------------------------------------------ object tables
def _prefix(df: pd.DataFrame, compartment: str) -> pd.DataFrame:
    """CSV columns -> ``{Compartment}_`` prefixed (keys kept as they are)."""
    return df.rename(columns={c: f"{compartment}_{c}" for c in df.columns
                              if c not in ("ImageNumber", "ObjectNumber")})


def _objects(path: Path, fmt: str, compartment: str, images: pd.DataFrame) -> tuple[pd.DataFrame, int]:
    """One compartment's objects of ``images`` with ``ImageNumber`` (+ ``TableNumber``), ``_obj`` (object
    number) and prefixed columns; the number of rows read from the source into memory."""
    if fmt == "csv":
        nums = set(images["ImageNumber"].astype(np.int64))
        chunks = [c[c["ImageNumber"].isin(nums)] for c in pd.read_csv(path / f"{compartment}.csv",
                                                                         chunksize=CSV_CHUNK_ROWS)]
        df = _prefix(pd.concat(chunks, ignore_index=True), compartment)
        df = df.rename(columns={"ObjectNumber": "_obj"})
    elif fmt == "sqlite_per":
        nums = images["ImageNumber"].astype(int).tolist()
        df = _sql(path, f'SELECT * FROM "Per_{compartment}" WHERE ImageNumber IN '
                        f'({",".join("?" * len(nums))})', nums)
        df = df.rename(columns={f"{compartment}_Number_Object_Number": "_obj"})
    else:
        # the image numbers restart per TableNumber (one per CSV set loaded): both keys bound the rows read
        nums = sorted({int(v) for v in images["ImageNumber"]})
        tabs = sorted({v.item() if hasattr(v, "item") else v for v in images["TableNumber"]}, key=str)
        df = _sql(path, f'SELECT * FROM "{compartment}" WHERE ImageNumber IN ({",".join("?" * len(nums))}) '
                        f'AND TableNumber IN ({",".join("?" * len(tabs))})',
                  [*nums, *tabs]).rename(columns={"ObjectNumber": "_obj"})
    key = _IMAGE_KEY[fmt]
    return df.merge(images[key], on=key, how="inner"), len(df)


def _joined(path: Path, fmt: str, images: pd.DataFrame) -> tuple[pd.DataFrame, dict[str, int], int]:
    """Cytoplasm joined to its parent Cells and Nuclei (one row per cytoplasm); counts of each compartment's
    objects and of the joined rows; the object rows read from the source into memory."""
    key = _IMAGE_KEY[fmt]
    (cyto, n_cyto), (cells, n_cells), (nuclei, n_nuclei) = (_objects(path, fmt, comp, images)
                                                            for comp in ("Cytoplasm", "Cells", "Nuclei"))
    for col in ("Cytoplasm_Parent_Cells", "Cytoplasm_Parent_Nuclei"):
        if col not in cyto:
            raise CellProfilerError(f"{path}: Cytoplasm has no {col.split('_', 1)[1]} column to join on")
    out = cyto.rename(columns={"_obj": C.OBJECT_NUMBER, "Cytoplasm_Parent_Cells": "_cells",
                               "Cytoplasm_Parent_Nuclei": "_nuclei"})
    out = out.merge(cells.rename(columns={"_obj": "_cells"}), on=[*key, "_cells"], how="inner")
    out = out.merge(nuclei.rename(columns={"_obj": "_nuclei"}), on=[*key, "_nuclei"], how="inner")
    counts = {"cytoplasm": len(cyto), "cells": len(cells), "nuclei": len(nuclei), "joined": len(out)}
    return out.drop(columns=["_cells", "_nuclei"]), counts, n_cyto + n_cells + n_nuclei


def _parquet_rows(path: Path, images: pd.DataFrame, plate_col: str | None,
                  source_plate: str | None) -> tuple[pd.DataFrame, int]:
    """The joined rows of ``images`` (a dataset filter on the plate column and the image numbers: only
    those rows are read into memory); the number of rows read."""
    names = pq.read_schema(path).names
    feats = [n for n in names if n.startswith(tuple(f"{c}_" for c in COMPARTMENTS))]
    key_src = [k for k in ("Metadata_TableNumber", "Metadata_ImageNumber") if k in names]
    obj = _first(names, ("Metadata_ObjectNumber", "Metadata_ObjectNumber_cytoplasm",
                         "Metadata_ObjectNumber_cells"))
    if obj is None:
        raise CellProfilerError(f"{path}: no Metadata_ObjectNumber column")
    dataset = pads.dataset(path, format="parquet")
    numbers = pa.array(images["ImageNumber"].astype(np.int64).unique()).cast(
        dataset.schema.field("Metadata_ImageNumber").type)
    rows = pc.field("Metadata_ImageNumber").isin(numbers)
    if plate_col is not None and source_plate:
        rows = rows & _plate_filter(plate_col, source_plate)
    df = dataset.to_table(columns=[*key_src, obj, *feats], filter=rows).to_pandas()
    df = df.rename(columns={"Metadata_ImageNumber": "ImageNumber", "Metadata_TableNumber": "TableNumber",
                            obj: C.OBJECT_NUMBER})
    key = [k for k in ("TableNumber", "ImageNumber") if k in df]
    return df.merge(images[key], on=key, how="inner"), len(df)


def _features_only(df: pd.DataFrame) -> tuple[pd.DataFrame, list[str]]:
    """Drop the object links (Parent_/Children_/object numbers) and the image keys; text columns that are
    features are made numeric (values that are not numbers become NaN; the columns are returned)."""
    keep, coerced = [], []
    for c in df.columns:
        comp, _, rest = c.partition("_")
        if comp in COMPARTMENTS and rest:
            if rest.startswith(_LINKS):
                continue
            if df[c].dtype == object:
                coerced.append(c)
            keep.append(c)
    out = df[keep].copy()
    for c in coerced:
        out[c] = pd.to_numeric(out[c], errors="coerce")
    return out, coerced


def read_cellprofiler(source: str | os.PathLike, *, plate_columns: Sequence[str], well_columns: Sequence[str],
                      site_columns: Sequence[str], filename_regex: str,
                      source_plate: str | None = None) -> tuple[pd.DataFrame, dict[str, Any]]:
    """One plate of a CellProfiler source -> (per-cell table: ``Metadata_Well``, ``Metadata_Site``,
    ``Metadata_ObjectNumber`` + numeric ``Cells_/Nuclei_/Cytoplasm_`` features, sorted by well, site,
    object; a record: format, metadata columns used, object counts, feature count, coerced columns)."""
    path = Path(source)
    fmt = source_format(path)
    plate_col = _first(_image_columns(path, fmt), plate_columns)
    plates = source_plates(path, fmt, plate_col)
    picked = pick_plate(plates, plate_col=plate_col, source_plate=source_plate, source=str(path),
                        plate_columns=plate_columns)
    image = _image_table(path, fmt, plate_col, picked if len(plates) > 1 else None)
    images, record = image_metadata(image, source=str(path), plate_columns=plate_columns,
                                    well_columns=well_columns, site_columns=site_columns,
                                    filename_regex=filename_regex, source_plate=source_plate)
    record["source_plates"] = plates
    if fmt == "parquet":
        rows, read = _parquet_rows(path, images, plate_col, picked if len(plates) > 1 else None)
        counts = {"joined": len(rows)}
    else:
        rows, counts, read = _joined(path, fmt, images)
    key = [k for k in ("TableNumber", "ImageNumber") if k in rows]
    rows = rows.merge(images, on=key, how="left", validate="many_to_one")
    feats, coerced = _features_only(rows)
    cells = pd.concat([rows[[C.WELL, C.SITE, C.OBJECT_NUMBER]].reset_index(drop=True),
                       feats.reset_index(drop=True)], axis=1)
    cells[C.OBJECT_NUMBER] = cells[C.OBJECT_NUMBER].astype(np.int64)
    cells = cells.sort_values([C.WELL, C.SITE, C.OBJECT_NUMBER], kind="stable", ignore_index=True)
    record.update(format=fmt, format_name=FORMAT_NAMES[fmt], images=len(images), objects=counts,
                  features=int(feats.shape[1]),
                  text_features_coerced=coerced, source_rows_read=int(read))
    return cells, record


def read_cellprofiler_csvs(folder: str | os.PathLike,
                           image_metadata: tuple[str, ...] = (C.PLATE, C.WELL, C.SITE)) -> pd.DataFrame:
    """ExportToSpreadsheet folder -> one row per Cytoplasm object with its Cells and Nuclei measurements and
    the Image.csv columns ``image_metadata`` (as CellProfiler named them), ``ImageNumber`` kept."""
    d = Path(folder)
    image = pd.read_csv(d / "Image.csv", usecols=lambda c: c == "ImageNumber" or c in image_metadata)
    rows, _, _ = _joined(d, "csv", image[["ImageNumber"]])
    feats, _ = _features_only(rows)
    out = pd.concat([rows[["ImageNumber", C.OBJECT_NUMBER]], feats], axis=1)
    return image.merge(out, on="ImageNumber", how="right").copy()


# ------------------------------------------------------------------------------------ feature check
def feature_check(features: Sequence[str], *, families: Sequence[str],
                  channels: Sequence[str]) -> dict[str, Any]:
    """The source's feature names against ours: the (compartment, module) families we measure
    (``paint.features.families``) that the source lacks, and our channels (``paint.channels``) that no
    source Intensity feature names (e.g. a DAPI/GFP/RFP screen against DNA/ER/RNA/AGP/Mito)."""
    present = {tuple(f.split("_", 2)[:2]) for f in features if f.count("_") >= 2}
    expected = [(comp, FAMILY_MODULES[fam][0]) for fam in families for comp in FAMILY_MODULES[fam][1]]
    missing = [f"{comp}_{mod}" for comp, mod in expected if (comp, mod) not in present]
    src_channels = sorted({f.rsplit("_", 1)[1] for f in features
                           if re.match(r"^(Cells|Nuclei|Cytoplasm)_Intensity_MeanIntensity_[^_]+$", f)})
    return {"families_expected": [f"{c}_{m}" for c, m in expected], "families_missing": missing,
            "channels_expected": list(channels), "channels_in_source": src_channels,
            "channels_missing": [c for c in channels if c not in src_channels],
            "source_modules": sorted({f"{c}_{m}" for c, m in present if c in COMPARTMENTS})}


def well_object_counts(record: Mapping[str, Any]) -> dict[str, int]:
    """Objects the compartment join left out (whole source plate): nuclei and cells without a cytoplasm."""
    obj = record.get("objects") or {}
    joined = int(obj.get("joined", 0))
    return {"nuclei_unjoined": int(obj.get("nuclei", joined)) - joined,
            "cells_unjoined": int(obj.get("cells", joined)) - joined}
