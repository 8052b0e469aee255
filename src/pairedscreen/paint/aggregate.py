"""Per-plate assembly and the one well aggregator: per-cell feature tables + plate map -> one cell table and
per-well aggregates (:func:`plate_wells`), all reduced by :func:`aggregate_wells`.

Column conventions follow CellProfiler/pycytominer (:mod:`pairedscreen.columns`): ``Metadata_*`` columns
describe the object, features are numeric ``{Compartment}_{Family}_{Feature}[_{Channel}[_{Scale}]]`` columns.

Aggregation is our own code, not ``pycytominer.aggregate``: that needs the whole per-cell table in memory
and copies it twice (``astype(float)`` to float64, then a concat) before a pandas groupby, about 2x the
float32 table over the input at peak. Ours reduces each well's rows with numpy, a chunk of feature columns
at a time: same medians (pandas semantics, NaN skipped), memory independent of the number of features and
cells, and faster. Per-well metadata that is constant within a well (perturbation, control flag, batch) is
carried through, which pycytominer drops.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Sequence

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pairedscreen.columns import (
    BATCH,
    COUNT_CELLS,
    N_CELLS,
    OBJECT_NUMBER,
    PERT,
    PLATE,
    REPLICATE,
    SITE,
    WELL,
    feature_columns,
    metadata_columns,
)
from pairedscreen.io import atomic_output

KEY = [PLATE, WELL]
CORE_META = [PLATE, BATCH, WELL, SITE, OBJECT_NUMBER, PERT, REPLICATE]


def plate_map_metadata(plate_map: pd.DataFrame) -> pd.DataFrame:
    """Plate map -> ``Metadata_Well``, ``Metadata_Perturbation``, ``Metadata_Replicate`` + extra columns."""
    pm = plate_map.copy()
    rename = {"well": WELL, "perturbation_id": PERT, "replicate": REPLICATE}
    for col in pm.columns:
        if col not in rename:
            rename[col] = "Metadata_" + "".join(w.capitalize() for w in col.split("_"))
    return pm.rename(columns=rename)


def check_wells(wells: Iterable[str], meta: pd.DataFrame, plate: str) -> None:
    """Every well holding objects must be on the plate map (``meta``: :func:`plate_map_metadata`)."""
    unknown = sorted(set(wells) - set(meta[WELL]))
    if unknown:
        raise ValueError(f"plate {plate}: objects in wells {unknown} that the plate map does not list")


def assemble_cells(feature_tables: list[pd.DataFrame], plate_map: pd.DataFrame, plate: str,
                   batch: str) -> pd.DataFrame:
    """Concatenate a plate's per-chunk feature tables and attach the plate map's metadata per well."""
    non_empty = [t for t in feature_tables if len(t)]
    if non_empty:
        cells = pd.concat(non_empty, ignore_index=True)
    else:  # no object anywhere on the plate: an empty table; every well is still reported with 0 cells
        cells = pd.DataFrame({WELL: pd.Series(dtype=object), SITE: pd.Series(dtype="int64"),
                              OBJECT_NUMBER: pd.Series(dtype="int64")})
    cells = cells.drop(columns=[c for c in (PLATE, BATCH) if c in cells])
    meta = plate_map_metadata(plate_map)
    check_wells(cells[WELL], meta, plate)
    out = cells.merge(meta, on=WELL, how="left", validate="many_to_one")
    out.insert(0, PLATE, plate)
    out.insert(1, BATCH, batch)
    meta_cols = [c for c in CORE_META if c in out] + [c for c in metadata_columns(out) if c not in CORE_META]
    feats = feature_columns(out)
    other = [c for c in out.columns if c not in set(meta_cols) | set(feats)]   # kept, never dropped
    return out[meta_cols + feats + other].sort_values(
        [WELL, SITE, OBJECT_NUMBER], kind="stable", ignore_index=True)


def well_features(cells: pd.DataFrame, how: str) -> pd.DataFrame:
    """Per-well ``how`` (median|mean) of every feature of an assembled cell table (float64, by
    :func:`aggregate_wells`) and ``Metadata_Count_Cells``, indexed by well (sorted); only wells with cells.
    Wells are independent, so the rows of a table holding whole wells equal the rows of the plate's."""
    if how not in ("median", "mean"):
        raise ValueError(f"aggregate must be 'median' or 'mean', got {how!r}")
    feats = feature_columns(cells)
    agg = aggregate_wells(cells[[WELL, *feats]], operation=how, strata=(WELL,), features=feats,
                          dtype=np.float64)
    return agg.set_index(WELL).rename(columns={N_CELLS: COUNT_CELLS})[[COUNT_CELLS, *feats]]


def wells_table(agg: pd.DataFrame, plate_map: pd.DataFrame, plate: str, batch: str) -> pd.DataFrame:
    """One row per plate-map well (plate-map order): the plate-map metadata joined to the per-well
    aggregates ``agg`` (:func:`well_features`); wells without any cell are kept (count 0, features NaN)."""
    meta = plate_map_metadata(plate_map).set_index(WELL)
    wells = meta.join(agg, how="left")
    wells[COUNT_CELLS] = wells[COUNT_CELLS].fillna(0).astype(np.int64)
    wells = wells.reset_index()
    wells.insert(0, PLATE, plate)
    wells.insert(1, BATCH, batch)
    meta_cols = metadata_columns(wells)
    return wells[meta_cols + [c for c in wells.columns if c not in meta_cols]]


def plate_wells(cells: pd.DataFrame, plate_map: pd.DataFrame, plate: str, batch: str,
                how: str) -> pd.DataFrame:
    """One row per plate-map well (plate-map order): the ``how`` (median|mean) of every feature over its
    cells (float64, by :func:`aggregate_wells`), plus ``Metadata_Count_Cells``. Wells without any cell are
    kept (count 0, features NaN) — never dropped."""
    return wells_table(well_features(cells, how), plate_map, plate, batch)


# ---------------------------------------------------------------------------- streamed plate assembly
def _file_wells(path: str | os.PathLike) -> list[str]:
    """The distinct wells of a features file (only its well column is read)."""
    pf = pq.ParquetFile(path)
    if not pf.metadata.num_rows or WELL not in pf.schema_arrow.names:
        return []
    return pc.unique(pf.read(columns=[WELL]).column(0)).to_pylist()


def _first_row(path: str | os.PathLike) -> pd.DataFrame:
    """A features file's first row, with the dtypes ``pd.read_parquet`` gives the whole file."""
    pf = pq.ParquetFile(path)
    batch = next(pf.iter_batches(batch_size=1))
    return pa.Table.from_batches([batch]).replace_schema_metadata(pf.schema_arrow.metadata).to_pandas()


def plate_segments(file_wells: Sequence[Sequence[str]]) -> list[tuple[list[int], list[str]]]:
    """Split a plate's wells (sorted, the cell table's row order) into runs read together: consecutive
    wells held by the same features files. Returns (file indices, wells) per run. Chunks of a plate map in
    well order give one run per chunk; any other layout gives more, smaller runs (never a larger one)."""
    holders: dict[str, list[int]] = {}
    for i, wells in enumerate(file_wells):
        for w in wells:
            holders.setdefault(w, []).append(i)
    runs: list[tuple[list[int], list[str]]] = []
    for w in sorted(holders):
        if runs and runs[-1][0] == holders[w]:
            runs[-1][1].append(w)
        else:
            runs.append((holders[w], [w]))
    return runs


def stream_plate(features: Sequence[str | os.PathLike], plate_map: pd.DataFrame, plate: str, batch: str,
                 cells_out: str | os.PathLike, how: str) -> pd.DataFrame:
    """Write a plate's cell table (:func:`assemble_cells` of every features file) to ``cells_out`` run by
    run of wells (:func:`plate_segments`) with one ``ParquetWriter``, and return its wells table
    (:func:`plate_wells`), aggregated run by run: peak memory is one chunk's cells, not the plate's.

    Same columns, dtypes, schema and row order as writing the whole-plate table at once: the schema comes
    from :func:`assemble_cells` of one row per (file, well) (pandas' dtypes and Arrow's types follow the
    column dtypes and, for text, which values occur: every well's plate-map values occur in it); each run is
    assembled by the same function and cast to that schema. Only the row-group layout differs."""
    meta = plate_map_metadata(plate_map)
    file_wells = [_file_wells(f) for f in features]
    check_wells({w for ws in file_wells for w in ws}, meta, plate)
    samples = []
    for f, wells in zip(features, file_wells, strict=True):
        if wells:
            row = _first_row(f)
            samples.append(pd.concat([row] * len(wells), ignore_index=True).assign(**{WELL: wells}))
    skeleton = assemble_cells(samples, plate_map, plate, batch)
    schema = pa.Schema.from_pandas(skeleton, preserve_index=False)
    columns = list(skeleton.columns)
    aggs = []
    with atomic_output(cells_out) as tmp, pq.ParquetWriter(tmp, schema) as writer:
        for files, wells in plate_segments(file_wells):
            tables = [pd.read_parquet(features[i], filters=None if len(wells) == len(file_wells[i])
                                      else [(WELL, "in", wells)]) for i in files]
            part = assemble_cells(tables, plate_map, plate, batch)
            del tables
            part = part if list(part.columns) == columns else part.reindex(columns=columns)
            writer.write_table(pa.Table.from_pandas(part, schema=schema, preserve_index=False))
            aggs.append(well_features(part, how))
            del part
        if not aggs:   # no object on the plate: the empty table, every well kept with 0 cells
            writer.write_table(pa.Table.from_pandas(skeleton, schema=schema, preserve_index=False))
    agg = pd.concat(aggs) if aggs else well_features(skeleton.iloc[:0], how)
    return wells_table(agg, plate_map, plate, batch)


# ------------------------------------------------------------------------------------ the reducer
def _group_index(keys: pd.DataFrame) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    """Unique key rows (sorted), a stable order putting each group's rows together, group boundaries."""
    if not len(keys):   # no rows (e.g. a plate without any object): no group
        return keys.iloc[:0].reset_index(drop=True), np.zeros(0, np.int64), np.zeros(1, np.int64)
    codes, uniques = pd.MultiIndex.from_frame(keys).factorize(sort=True)
    order = np.argsort(codes, kind="stable")
    bounds = np.searchsorted(codes[order], np.arange(len(uniques) + 1))
    uniq = uniques.to_frame(index=False)
    uniq.columns = list(keys.columns)
    return uniq, order, bounds


def _reduce_groups(x: np.ndarray, order: np.ndarray, bounds: np.ndarray, operation: str,
                   dtype: type[np.floating] = np.float32) -> np.ndarray:
    """Median/mean of ``x`` rows per group (NaN skipped, like pandas), ``dtype`` out."""
    out = np.empty((len(bounds) - 1, x.shape[1]), dtype)
    for g in range(len(bounds) - 1):
        block = x[order[bounds[g]:bounds[g + 1]]]
        has_nan = np.isnan(block).any()
        if operation == "median":
            red = np.nanmedian(block, axis=0) if has_nan else np.median(block, axis=0)
        else:
            red = np.nanmean(block, axis=0) if has_nan else block.mean(axis=0, dtype=np.float64)
        out[g] = red
    return out


def _well_metadata(meta: pd.DataFrame, order: np.ndarray, bounds: np.ndarray) -> pd.DataFrame:
    """Columns constant within every group (first value per group); others are dropped."""
    keep = {}
    starts = order[bounds[:-1]]
    for c in meta.columns:
        vals = meta[c].to_numpy()[order]
        codes = pd.factorize(vals, use_na_sentinel=False)[0]
        seg_min = np.minimum.reduceat(codes, bounds[:-1]) if len(codes) else codes
        seg_max = np.maximum.reduceat(codes, bounds[:-1]) if len(codes) else codes
        if np.array_equal(seg_min, seg_max):
            keep[c] = meta[c].to_numpy()[starts]
    return pd.DataFrame(keep)


def aggregate_wells(cells: pd.DataFrame, *, operation: str,
                    strata: Sequence[str] = (PLATE, WELL),
                    features: Sequence[str] | None = None, chunk_bytes: int = 64 << 20,
                    dtype: type[np.floating] = np.float32) -> pd.DataFrame:
    """One row per well (per ``strata`` group): ``operation`` (median|mean) of each feature, ``n_cells``,
    constant metadata. The one well aggregator: the paint arm's ``wells.parquet`` (:func:`plate_wells`),
    profiles from per-cell tables and sub-well replicates all reduce through it.

    Metadata columns that take a single value within every well (perturbation, control flag, batch,
    replicate...) are carried; per-cell ones (site, object id) are dropped. Features are reduced in
    column chunks of about ``chunk_bytes`` so the extra memory is bounded whatever the table width;
    ``dtype`` is the precision they are reduced in (float32 halves the memory of wide screens).
    """
    feats = list(features) if features is not None else feature_columns(cells)
    meta = [c for c in cells.columns if c not in set(feats) and c not in strata and c != N_CELLS]
    return aggregate_table(cells[list(strata)], cells[meta], lambda cols: cells[cols].to_numpy(dtype), feats,
                           operation, chunk_bytes, dtype)


def aggregate_table(keys: pd.DataFrame, meta: pd.DataFrame, load: Callable[[list[str]], np.ndarray],
                    feats: list[str], operation: str, chunk_bytes: int,
                    dtype: type[np.floating] = np.float32) -> pd.DataFrame:
    """:func:`aggregate_wells` on a table given as group ``keys``, per-row ``meta`` and a ``load(columns)``
    returning feature columns as a (rows x columns) array (e.g. read from a parquet file in chunks)."""
    if operation not in ("median", "mean"):
        raise ValueError(f"operation must be median or mean, not {operation!r}")
    uniq, order, bounds = _group_index(keys)
    step = max(1, int(chunk_bytes // max(1, np.dtype(dtype).itemsize * len(keys))))
    blocks = [_reduce_groups(load(feats[i:i + step]), order, bounds, operation, dtype)
              for i in range(0, len(feats), step)]
    x = np.concatenate(blocks, axis=1) if blocks else np.empty((len(uniq), 0), dtype)
    parts = [uniq, _well_metadata(meta, order, bounds),
             pd.DataFrame({N_CELLS: np.diff(bounds).astype(np.int64)}),
             pd.DataFrame(x, columns=feats)]
    return pd.concat(parts, axis=1)
