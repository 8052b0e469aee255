"""The paint arm's inputs of quality, read a plate (a Parquet row group) at a time, never the screen.

Quality's paint metrics need the well profiles in three shapes, none of them the whole screen's table:

- replicate mAP, plate consistency and E-distance: the replicate profiles (wells, or sub-wells when most
  perturbations have one well), at most ``quality.max_replicates`` per perturbation (controls: each control
  id on its own). The choice is :func:`pairedscreen.quality.subsample.select` on the rows' perturbation
  labels (a seeded permutation per perturbation, cut at the cap), so a screen under the cap keeps every row
  in its order and gets the numbers it always got; copairs' pairs grow with the square of the replicates;
- position effects: one plate's wells at a time (:class:`PlateRows`);
- batch predictability: the control wells, at most ``quality.max_replicates`` per plate (the nearest-centroid
  classifier's work grows with the wells times the plates).

:class:`PlateRows` reads ``profiles.parquet`` by row group (the profiles stage writes a plate per row
group): a metadata pass keeps the plate, well, perturbation and control flag of every row, then rows are read
by position or by plate from the row groups that hold them.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from pairedscreen import columns as C
from pairedscreen.paint.profiles import aggregate_plate_file, harmonize_metadata, normalize_plates
from pairedscreen.quality.subsample import select

PathLike = str | os.PathLike
META = (C.PLATE, C.WELL, C.PERT, C.IS_CONTROL, C.BATCH)


class PlateRows:
    """Row-group access to a well-profile Parquet file (canonical metadata via
    :func:`pairedscreen.paint.profiles.harmonize_metadata`). ``meta``: the metadata columns of every row
    (plus ``_group``, the row group holding it); ``features``: the feature columns."""

    def __init__(self, path: PathLike, registry: pd.DataFrame | None = None) -> None:
        self.path, self.registry = path, registry
        self._file = pq.ParquetFile(path)
        empty = harmonize_metadata(self._file.schema_arrow.empty_table().to_pandas(), registry)
        self.features = C.feature_columns(empty)
        not_features = [n for n in self._file.schema_arrow.names if n not in set(self.features)]
        parts = []
        for g in range(self._file.num_row_groups):   # the metadata pass reads no feature column
            df = self.group(g, not_features)
            part = df[[c for c in META if c in df.columns]].copy()
            part["_group"] = g
            parts.append(part)
        self.meta = pd.concat(parts, ignore_index=True) if parts else empty[[c for c in META if c in empty]]
        if "_group" not in self.meta:
            self.meta["_group"] = np.zeros(0, np.int64)

    def group(self, g: int, columns: Sequence[str] | None = None) -> pd.DataFrame:
        """Row group ``g`` (``columns`` of it, default all) with canonical metadata."""
        table = self._file.read_row_group(g, columns=list(columns) if columns is not None else None)
        return harmonize_metadata(table.to_pandas(), self.registry)

    def rows(self, positions: np.ndarray) -> pd.DataFrame:
        """The rows at ``positions`` (sorted, positions in the file), read group by group."""
        positions = np.asarray(positions, dtype=np.int64)
        sizes = np.bincount(self.meta["_group"].to_numpy(np.int64), minlength=self._file.num_row_groups)
        starts = np.r_[0, np.cumsum(sizes)]
        parts = []
        for g in np.unique(self.meta["_group"].to_numpy()[positions]) if len(positions) else []:
            sel = positions[(positions >= starts[g]) & (positions < starts[g + 1])] - starts[g]
            parts.append(self.group(int(g)).iloc[sel])
        if not parts:
            return harmonize_metadata(self._file.schema_arrow.empty_table().to_pandas(), self.registry)
        return pd.concat(parts, ignore_index=True) if len(parts) > 1 else parts[0].reset_index(drop=True)

    def plates(self) -> list[Any]:
        """The plates, sorted (the order of ``groupby(PLATE, sort=True)``)."""
        return sorted(pd.unique(self.meta[C.PLATE])) if len(self.meta) else []

    def plate(self, plate: Any) -> pd.DataFrame:
        """One plate's rows, in file order."""
        return self.rows(np.flatnonzero((self.meta[C.PLATE] == plate).to_numpy()))

    def controls(self, columns: Sequence[str], max_per_plate: int | None = None,
                 *, seed: int) -> pd.DataFrame:
        """``columns`` of the control rows, in file order; with ``max_per_plate``, at most that many per
        plate (:func:`per_plate`, chosen on the metadata, then only those rows read)."""
        ctrl = self.meta.loc[self.meta[C.IS_CONTROL].to_numpy(bool), [C.PLATE]]
        ctrl["_pos"] = np.flatnonzero(self.meta[C.IS_CONTROL].to_numpy(bool))
        rows = self.rows(per_plate(ctrl, max_per_plate, seed)["_pos"].to_numpy())
        return rows[[c for c in columns if c in rows.columns]]


def per_plate(rows: pd.DataFrame, max_rows: int | None, seed: int) -> pd.DataFrame:
    """At most ``max_rows`` rows of each plate, in their order: each plate on its own, a permutation of its
    rows from ``default_rng(seed)`` cut at ``max_rows`` (:func:`pairedscreen.quality.subsample.select`), so
    the choice does not depend on which other plates are read with it. All rows when ``max_rows`` is None."""
    if max_rows is None or not len(rows):
        return rows
    plates = rows[C.PLATE].astype(str).to_numpy()
    keep = np.zeros(len(rows), bool)
    for plate in pd.unique(plates):
        idx = np.flatnonzero(plates == plate)
        one = np.zeros(len(idx), np.int8)   # one group: a permutation of the plate's rows, cut
        keep[idx[select(one, np.ones(len(idx), bool), int(max_rows), int(seed))]] = True
    return rows if keep.all() else rows[keep].reset_index(drop=True)


def replicate_rows(meta: pd.DataFrame, max_replicates: int, seed: int) -> tuple[np.ndarray, dict[str, Any]]:
    """Positions (sorted) of at most ``max_replicates`` rows per perturbation of ``meta`` (a seeded
    permutation per perturbation: :func:`pairedscreen.quality.subsample.select`) and the record of the
    choice (``metrics.paint_subsample``)."""
    pert = meta[C.PERT].astype(str).to_numpy()
    keep = select(pert, np.ones(len(pert), bool), int(max_replicates), int(seed))
    per = pd.Series(pert).value_counts()
    return keep, {"max_replicates_per_perturbation": int(max_replicates), "replicates": int(len(keep)),
                  "replicates_total": int(len(pert)),
                  "perturbations_capped": int((per > max_replicates).sum())}


def subwell_rows(paint_cells: Sequence[PathLike], features: Sequence[str], registry: pd.DataFrame, *,
                 n_splits: int, seed: int, workdir: PathLike, aggregate: str,
                 normalize: str) -> Iterator[PlateRows]:
    """Sub-well replicates, one plate at a time: each plate's cells split at random within wells
    (:func:`pairedscreen.paint.profiles.aggregate_plate_file`), aggregated and normalised to the plate's
    control sub-wells (:func:`pairedscreen.paint.profiles.normalize_plates`, per plate), written to a
    Parquet file of its own in ``workdir``; yields a :class:`PlateRows` per plate."""
    for k, p in enumerate(paint_cells):
        part = aggregate_plate_file(p, operation=aggregate, registry=registry, features=list(features),
                                    n_splits=n_splits, seed=seed)
        part, _ = normalize_plates(part, method=normalize, features=list(features))
        out = os.path.join(workdir, f"subwells_{k:05d}.parquet")
        pq.write_table(pa.Table.from_pandas(part, preserve_index=False), out)
        del part
        yield PlateRows(out, registry)


def paint_replicates(profiles: PlateRows, paint_cells: Sequence[PathLike] | None, registry: pd.DataFrame, *,
                     max_replicates: int, seed: int, aggregate: str, normalize: str, n_splits: int = 3,
                     log: Any = None) -> tuple[pd.DataFrame, str, dict[str, Any]]:
    """The replicate profiles quality scores, their unit, and the record of the cap.

    Wells are the replicates; sub-wells (``n_splits`` random cell splits per well, aggregated and normalised
    like the wells: ``aggregate`` / ``normalize`` = ``profiles.aggregate`` / ``profiles.normalize``) when
    most perturbations have a single well and cells are given. Caveat, reported in the
    metrics (``replicate_unit``): sub-wells of one well share its well effect, so with one well per
    perturbation a well artefact cannot be told from a perturbation effect; activity calls are then
    within-well reproducibility, not replicate agreement. At most ``max_replicates`` rows per perturbation
    (:func:`replicate_rows`); memory: one plate + the chosen rows."""
    meta = profiles.meta
    trt = meta[~meta[C.IS_CONTROL].to_numpy(bool)]
    wells_per = trt.groupby(C.PERT, observed=True).size()
    if (len(wells_per) and wells_per.median() >= 2) or not paint_cells:
        keep, record = replicate_rows(meta, max_replicates, seed)
        return profiles.rows(keep), "wells", {**record, "unit": "wells"}
    with tempfile.TemporaryDirectory(prefix="subwells_", dir=os.path.dirname(os.fspath(profiles.path))
                                     or ".") as tmp:
        plates = list(subwell_rows(paint_cells, profiles.features, registry, n_splits=n_splits, seed=seed,
                                   workdir=tmp, aggregate=aggregate, normalize=normalize))
        all_meta = pd.concat([p.meta.assign(_file=k) for k, p in enumerate(plates)], ignore_index=True)
        keep, record = replicate_rows(all_meta, max_replicates, seed)
        offsets = np.r_[0, np.cumsum([len(p.meta) for p in plates])]
        parts = [p.rows(keep[(keep >= offsets[k]) & (keep < offsets[k + 1])] - offsets[k])
                 for k, p in enumerate(plates)]
        sub = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()
    feats = list(profiles.features)
    # a feature without spread among the few control splits is undefined after normalisation: drop the
    # feature (not the replicates, which a row-wise dropna would remove wholesale)
    undefined = [f for f in feats if f in sub and sub[f].isna().any()]
    sub = sub.drop(columns=undefined)
    if undefined and log is not None:
        log.info("sub-well replicates: %d of %d features undefined after normalisation, not used",
                 len(undefined), len(feats))
    unit = f"sub-wells ({n_splits} random cell splits per well)"
    return sub, unit, {**record, "unit": unit}
