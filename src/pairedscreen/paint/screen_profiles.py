"""The screen's well profiles streamed plate by plate: memory bounded by one plate or one column block.

:func:`write_profiles` (the ``profiles`` rule) and :func:`pairedscreen.paint.profiles.build_profiles` run
:class:`ScreenProfiles`:

1. each plate (its rows of the input tables, read one table at a time) has its empty wells dropped, is
   position-corrected and normalised to its controls (:func:`~pairedscreen.paint.profiles.correct_position`,
   :func:`~pairedscreen.paint.profiles.normalize_plates`, both per plate already) and written to a scratch
   folder: its float32 features as one raw file, column after column (a block of columns is one read),
   its metadata pickled;
2. feature selection reads the scratch a block of feature columns of every well at a time (every
   pycytominer operation but the correlation filter decides each column on its own); the correlation
   filter's feature x feature matrix is accumulated plate by plate (finite profiles) or computed per pair
   of column blocks (pandas' pairwise-complete correlation, when some values are NaN);
3. ``profiles.parquet`` is written a few plates at a time (row groups of ~16 MB), ``consensus.parquet``
   from column blocks.

Values are those of the whole-screen computation (the same per-plate and per-column calls on the same
rows); the one exception is the correlation matrix of finite profiles, whose cross-products are summed
plate by plate instead of by one BLAS call over all wells (last-bit differences, ~1e-17; the kept features
are the same, ``tests/test_screen_profiles.py``).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from pycytominer import feature_select as _pcm_feature_select

from pairedscreen.columns import IS_CONTROL, N_CELLS, PERT, PLATE, feature_columns
from pairedscreen.io import atomic_output, scratch_dir
from pairedscreen.paint.correct import RECORD_KEY, STEPS_DIR, run_chain
from pairedscreen.paint.profiles import (
    FEATURE_SELECT_ORDER,
    consensus,
    correct_position,
    correlated_features,
    harmonize_metadata,
    normalize_plates,
)

# bytes of one column block of every well as float64: sized so that a block (and the few copies the
# per-column operations make of it) stays well under the memory the imports already take, whatever the
# number of wells
BLOCK_BYTES = 16 << 20
# rows of ``profiles.parquet`` gathered into one row group (plates appended until it holds this much): the
# writer keeps every row group's column metadata until it closes, so a row group per plate would grow
# with the screen (~0.5 MB per plate at 600 features)
ROW_GROUP_BYTES = 16 << 20
Source = str | os.PathLike | pd.DataFrame


def _load(source: Source, registry: pd.DataFrame | None) -> pd.DataFrame:
    """One input table (a ``wells.parquet`` path or a frame) with canonical metadata."""
    df = source if isinstance(source, pd.DataFrame) else pd.read_parquet(source)
    return harmonize_metadata(df, registry)


def _representative(df: pd.DataFrame) -> pd.DataFrame:
    """One row with ``df``'s dtypes whose value in a column is NA only where the whole column is NA: what
    ``pd.concat`` looks at to choose a column's dtype, so concatenated representatives have the dtypes the
    concatenated tables would have."""
    cols = {}
    for c in df.columns:
        s = df[c]
        ok = np.flatnonzero(s.notna().to_numpy())
        cols[c] = s.iloc[[int(ok[0]) if len(ok) else 0]].reset_index(drop=True)
    return pd.DataFrame(cols, columns=df.columns)


def _kept_columns(frame: pd.DataFrame, feats: list[str], op: str, **kw: Any) -> set[str]:
    """The columns of ``frame`` that ``pycytominer.feature_select`` (``operation=op`` on ``feats``) keeps."""
    try:
        sel = _pcm_feature_select(frame, features=feats, samples="all", operation=op, output_file=None, **kw)
    except ValueError as e:   # sklearn's VarianceThreshold refuses to keep nothing: every one goes
        if "No feature in X meets the variance threshold" not in str(e):
            raise
        return set(frame.columns) - set(feats)
    return set(sel.columns)


class _Irregular(Exception):
    """The input tables are not one plate each, alike: take the general path."""


class ScreenProfiles:
    """The screen's normalised well profiles in a scratch folder (pass 1, at construction), then feature
    selection (:meth:`select`) and the outputs (:meth:`write`, or :meth:`frames` in memory).

    ``sources``: the input tables in order (paths of per-plate ``wells.parquet`` files or frames); rows are
    grouped by ``Metadata_Plate`` across them, plates in order of their first non-empty well, rows in
    input order, as on the concatenated table. ``scratch``: an empty folder for the scratch files, owned
    (and removed) by the caller (:func:`write_profiles` uses :func:`pairedscreen.io.scratch_dir`).
    """

    def __init__(self, sources: Sequence[Source], scratch: Path, *, registry: pd.DataFrame | None = None,
                 normalize: str, position_correction: bool | str,
                 min_reference_wells: int = 3) -> None:
        self.scratch = Path(scratch)
        self._sources = list(sources)
        if not self._sources:
            raise ValueError("no table to profile")
        self._registry = registry
        args = (normalize, position_correction, min_reference_wells)
        try:
            self._normalise(self._one_plate_tables(), *args)
        except _Irregular:        # tables holding several plates, or unlike ones: lay the screen out first
            self._scan()
            self._normalise(self._scanned_plates(), *args)
        vals = pd.Series(np.concatenate(self._plate_values))
        self.n_plates = int(vals.nunique())
        self.plate_ids = sorted(set(vals.astype(str)))
        self.kept: list[str] = list(self.features)
        self.meta_kept: list[str] = list(self.meta)

    # ------------------------------------------------------------------------------------ pass 0: layout
    def _raw(self) -> Iterator[tuple[int, pd.DataFrame]]:
        for i, s in enumerate(self._sources):
            yield i, _load(s, self._registry)

    def _conform(self, df: pd.DataFrame) -> pd.DataFrame:
        """A table with the screen's columns and dtypes (what concatenating every table gives)."""
        if self._uniform:
            return df
        df = df.reindex(columns=self.columns)
        for c in self.columns:
            if df[c].dtype != self.dtypes[c]:
                df[c] = df[c].astype(self.dtypes[c])
        return df

    def _empty(self, df: pd.DataFrame, feats: Sequence[str]) -> np.ndarray:
        """Wells without a measured feature or without cells (dropped before correction)."""
        empty = np.array(df[list(feats)].isna().all(axis=1).to_numpy(), dtype=bool)
        if N_CELLS in df.columns:
            empty |= df[N_CELLS].fillna(0).to_numpy() == 0
        return empty

    def _order(self, i: int, df: pd.DataFrame, feats: Sequence[str]) -> None:
        """Record table ``i``'s rows, empty wells and plates (in order of their first non-empty well)."""
        empty = self._empty(df, feats)
        self.n_wells += len(df)
        self.n_wells_empty += int(empty.sum())
        self._plate_values.append(np.asarray(pd.unique(df[PLATE]), dtype=object))
        for key in df.loc[~empty].groupby(PLATE, sort=False, observed=True).indices:
            self._units.setdefault(key, []).append(i)

    def _reset(self) -> None:
        self.n_wells = self.n_wells_empty = 0
        self._plate_values: list[np.ndarray] = []
        self._units: dict[Any, list[int]] = {}

    def _scan(self) -> None:
        """Column layout, feature columns, wells and plates of the concatenated tables, one table at a
        time. Tables whose columns or dtypes differ (e.g. plate maps with their own extra columns) are
        made alike as ``pd.concat`` would (columns in order of appearance, missing values NA, common
        dtypes), which takes two more reads of each."""
        layouts, proto = [], None
        self._reset()
        for i, df in self._raw():
            layouts.append((list(df.columns), [str(t) for t in df.dtypes]))
            if proto is None:
                proto = df.iloc[:0]
            self._order(i, df, feature_columns(df))
        self._uniform = all(lay == layouts[0] for lay in layouts)
        if not self._uniform:
            proto = pd.concat([_representative(df) for _, df in self._raw()], ignore_index=True, sort=False)
        self.columns = list(proto.columns)
        self.dtypes = proto.dtypes.to_dict()
        self.features = feature_columns(proto)
        if not self._uniform:
            self._reset()
            for i, df in self._raw():
                self._order(i, self._conform(df), self.features)

    def _layout(self, df: pd.DataFrame) -> None:
        self.columns = list(df.columns)
        self.dtypes = df.dtypes.to_dict()
        self.features = feature_columns(df)

    def _one_plate_tables(self) -> Iterator[tuple[Any, pd.DataFrame]]:
        """The plates' non-empty wells when every table holds one plate of its own and all have the same
        columns and dtypes (the paint arm's ``wells.parquet`` files): one read of each table. Raises
        :class:`_Irregular` (before anything is kept) otherwise."""
        self._reset()
        self._uniform = True
        layout, seen = None, set()
        for _, df in self._raw():
            lay = (list(df.columns), [str(t) for t in df.dtypes])
            if layout is None:
                layout = lay
                self._layout(df)
            plates = np.asarray(pd.unique(df[PLATE]), dtype=object)
            if lay != layout or len(plates) != 1 or pd.isna(plates[0]) or plates[0] in seen:
                raise _Irregular
            seen.add(plates[0])
            self._plate_values.append(plates)
            empty = self._empty(df, self.features)
            self.n_wells += len(df)
            self.n_wells_empty += int(empty.sum())
            if not empty.all():
                yield plates[0], df.loc[~empty].reset_index(drop=True)

    def _scanned_plates(self) -> Iterator[tuple[Any, pd.DataFrame]]:
        """The plates' non-empty wells in the order :meth:`_scan` found, a plate's rows gathered from the
        tables holding it (a table holding several plates is read once)."""
        cache: dict[int, pd.DataFrame] = {}
        for key, tables in self._units.items():
            parts = []
            for i in tables:
                df = cache.pop(i) if i in cache else \
                    self._conform(_load(self._sources[i], self._registry))
                sel = ~self._empty(df, self.features) & (df[PLATE] == key).to_numpy(bool)
                parts.append(df.loc[sel])
                if len(self._units_of(i)) > 1:
                    cache[i] = df
            yield key, (pd.concat(parts, ignore_index=True, sort=False) if len(parts) > 1
                        else parts[0].reset_index(drop=True))
            del parts
            cache = {i: df for i, df in cache.items() if self._pending(i, key)}

    # --------------------------------------------------------------------------- pass 1: normalisation
    def _normalise(self, plates: Iterator[tuple[Any, pd.DataFrame]], method: str, position: bool | str,
                   min_reference_wells: int) -> None:
        """Correct and normalise each plate's non-empty wells (``plates``), written to the scratch."""
        self.position = ("controls" if position == "controls" else "all") if position else None
        self.used: dict[str, str] = {}
        self.rows: list[int] = []
        self.meta: list[str] = []
        for key, prof in plates:
            feats = self.features
            self._index = {f: j for j, f in enumerate(feats)}
            if self.position is not None:
                prof = correct_position(prof, reference=self.position)
            part, used = normalize_plates(prof, method=method, min_reference_wells=min_reference_wells)
            del prof
            part = part.replace([np.inf, -np.inf], np.nan)
            self.used.update(used)
            meta = [c for c in part.columns if c not in set(feats)]
            if feature_columns(part) != feats or (self.meta and meta != self.meta):
                raise ValueError(f"plate {key}: columns differ from the screen's")
            self.meta = meta
            np.ascontiguousarray(part[feats].to_numpy(np.float32).T).tofile(self._file(len(self.rows)))
            part[meta].to_pickle(self.scratch / f"meta_{len(self.rows)}.pkl")
            self.rows.append(len(part))
        if not self.rows:     # no well with cells and features: the concatenated table's metadata columns
            self.meta = [c for c in self.columns if c not in set(self.features)]
            self._index = {f: j for j, f in enumerate(self.features)}
        self.n_rows = int(sum(self.rows))

    def _units_of(self, i: int) -> list[Any]:
        return [k for k, tables in self._units.items() if i in tables]

    def _pending(self, i: int, done: Any) -> bool:
        keys = list(self._units)
        return any(i in self._units[k] for k in keys[keys.index(done) + 1:])

    # ------------------------------------------------------------------------------------ scratch reads
    def _blocks(self, names: Sequence[str]) -> list[list[str]]:
        width = max(1, BLOCK_BYTES // (8 * max(1, self.n_rows)))
        names = list(names)
        return [names[i:i + width] for i in range(0, len(names), width)]

    def _file(self, k: int) -> Path:
        return self.scratch / f"features_{k}.f32"

    def _columns(self, k: int, cols: Sequence[str]) -> np.ndarray:
        """Plate ``k``'s feature columns ``cols`` as a (columns x wells) float32 array (the scratch file
        holds a plate's features column after column, so each run of adjacent columns is one read)."""
        n = self.rows[k]
        idx = np.array([self._index[c] for c in cols], np.int64)
        out = np.empty((len(idx), n), np.float32)
        starts = np.flatnonzero(np.r_[True, np.diff(idx) != 1]) if len(idx) else np.zeros(0, np.int64)
        with open(self._file(k), "rb") as fh:
            for a, b in zip(starts, [*starts[1:], len(idx)], strict=True):
                fh.seek(int(idx[a]) * n * 4)
                view = memoryview(out[a:b]).cast("B")
                if fh.readinto(view) != view.nbytes:
                    raise OSError(f"{self._file(k)}: short read")
        return out

    def _read(self, cols: Sequence[str]) -> pd.DataFrame:
        """Feature columns ``cols`` of every kept well (float32), in profile row order."""
        out = np.empty((len(cols), self.n_rows), np.float32)
        at = 0
        for k, n in enumerate(self.rows):
            out[:, at:at + n] = self._columns(k, cols)
            at += n
        return pd.DataFrame(out.T, columns=list(cols), copy=False)

    def _meta(self, k: int, cols: Sequence[str] | None = None) -> pd.DataFrame:
        m = pd.read_pickle(self.scratch / f"meta_{k}.pkl")
        return m if cols is None else m[list(cols)]

    def _plate_frames(self) -> Iterator[pd.DataFrame]:
        """The selected profiles, one plate at a time (kept metadata, then kept features)."""
        for k in range(len(self.rows)):
            x = pd.DataFrame(self._columns(k, self.kept).T, columns=self.kept, copy=False)
            yield pd.concat([self._meta(k, self.meta_kept), x], axis=1)

    # ------------------------------------------------------------------------------- feature selection
    def select(self, operations: Sequence[str], *, na_cutoff: float = 0.05, corr_threshold: float = 0.9,
               outlier_cutoff: float, blocklist: list[str] | None,
               drop_nonfinite: bool = True) -> dict[str, Any]:
        """:func:`pairedscreen.paint.profiles.select_features` (``samples="all"``) on the scratch file, a
        column block at a time; sets :attr:`kept` / :attr:`meta_kept` and returns the record."""
        ops = [o for o in FEATURE_SELECT_ORDER if o in operations]
        unknown = set(operations) - set(FEATURE_SELECT_ORDER)
        if unknown:
            raise ValueError(f"unknown feature selection operation(s) {sorted(unknown)}")
        cur, meta = list(self.features), list(self.meta)
        record: dict[str, Any] = {"n_features_in": len(cur), "removed": {}}
        for op in ops:
            if not cur:
                break
            if op == "correlation_threshold":
                drop = set(self._correlated(cur, corr_threshold))
            else:
                kw: dict[str, Any] = {"na_cutoff": na_cutoff, "corr_threshold": corr_threshold}
                if op == "blocklist" and blocklist is not None:
                    kw["blocklist"] = blocklist
                if op == "drop_outliers":
                    kw["outlier_cutoff"] = outlier_cutoff

                if op == "blocklist":         # by name: every current column, no value
                    kept = _kept_columns(pd.DataFrame(columns=[*meta, *cur]), cur, op, **kw)
                    meta = [m for m in meta if m in kept]
                    drop = {f for f in cur if f not in kept}
                else:
                    drop = set()
                    for block in self._blocks(cur):
                        kept = _kept_columns(self._read(block), block, op, **kw)
                        drop.update(f for f in block if f not in kept)
            record["removed"][op] = len(drop)
            cur = [f for f in cur if f not in drop]
        if drop_nonfinite:
            bad = set()
            for block in self._blocks(cur):
                ok = np.isfinite(self._read(block).to_numpy(np.float64)).all(axis=0)
                bad.update(f for f, good in zip(block, ok, strict=True) if not good)
            record["removed"]["nonfinite"] = len(bad)
            cur = [f for f in cur if f not in bad]
        record["n_features_out"] = len(cur)
        self.kept, self.meta_kept = cur, meta
        return record

    def _correlated(self, feats: list[str], threshold: float) -> list[str]:
        """:func:`pairedscreen.paint.profiles.correlation_threshold` over every kept well."""
        if len(feats) < 2:
            return []
        blocks = self._blocks(feats)
        finite, means = True, []
        for block in blocks:
            x = self._read(block).to_numpy(np.float64)
            finite = finite and bool(np.isfinite(x).all())
            means.append(x.T.mean(axis=1))          # np.corrcoef's mean (per feature, contiguous)
            del x
        with np.errstate(invalid="ignore", divide="ignore"):
            c = self._corrcoef(feats, np.concatenate(means)) if finite else self._pairwise_corr(feats, blocks)
        return correlated_features(c, feats, threshold)

    def _corrcoef(self, feats: list[str], mean: np.ndarray) -> np.ndarray:
        """``np.corrcoef(x, rowvar=False)`` with the centred cross-products summed plate by plate."""
        c = np.zeros((len(feats), len(feats)))
        for k in range(len(self.rows)):
            x = self._columns(k, feats).T.astype(np.float64)
            x = x - mean
            c += x.T @ x
            del x
        c *= np.true_divide(1, self.n_rows - 1)
        stddev = np.sqrt(np.diag(c).copy())
        c /= stddev[:, None]
        c /= stddev[None, :]
        np.clip(c, -1, 1, out=c)
        return c

    def _pairwise_corr(self, feats: list[str], blocks: list[list[str]]) -> np.ndarray:
        """pandas' pairwise-complete ``DataFrame.corr`` (each pair computed from its two columns alone)
        over pairs of column blocks."""
        pos = {f: j for j, f in enumerate(feats)}
        c = np.empty((len(feats), len(feats)))
        for a in range(len(blocks)):
            for b in range(a, len(blocks)):
                cols = blocks[a] + (blocks[b] if b != a else [])
                idx = [pos[f] for f in cols]
                c[np.ix_(idx, idx)] = self._read(cols).corr().to_numpy()
        return c

    # ------------------------------------------------------------------ correction chain (paint/correct.py)
    def plate_x(self, k: int) -> np.ndarray:
        """Plate ``k``'s kept features (wells x features, float64); with :meth:`plate_meta`, :meth:`replace`
        and :meth:`rename` the :class:`pairedscreen.paint.correct.Store` the chain runs on."""
        return self._columns(k, self.kept).T.astype(np.float64)

    def plate_meta(self, k: int, cols: Sequence[str]) -> pd.DataFrame:
        m = self._meta(k)
        return m[[c for c in cols if c in m.columns]].reset_index(drop=True)

    def replace(self, k: int, x: np.ndarray) -> None:
        """Plate ``k``'s corrected features, written beside its scratch file until :meth:`rename`."""
        if len(x) != self.rows[k]:
            raise ValueError(f"plate {k}: {len(x)} corrected rows for {self.rows[k]} wells")
        np.ascontiguousarray(np.asarray(x, np.float32).T).tofile(f"{self._file(k)}.new")

    def rename(self, names: list[str]) -> None:
        """Every plate replaced: the scratch now holds features ``names`` (every one kept)."""
        for k in range(len(self.rows)):
            os.replace(f"{self._file(k)}.new", self._file(k))
        self.features = self.kept = list(names)
        self._index = {f: j for j, f in enumerate(self.features)}

    def correct(self, steps: Sequence[str], params: Mapping[str, Any],
                tables: str | os.PathLike | None = None) -> list[dict[str, Any]]:
        """:func:`pairedscreen.paint.correct.run_chain` on the selected profiles; with ``tables`` (a folder),
        the profiles before the chain (``0_input.parquet``) and after each step but the last
        (``{i}_{step}.parquet``) are written there, a plate at a time."""
        if not steps or not self.rows:      # (no well with features: nothing to correct)
            return []
        if tables is not None:
            self.write_table(Path(tables) / "0_input.parquet")

        def after(i: int, step: str) -> None:
            if tables is not None and i < len(steps):
                self.write_table(Path(tables) / f"{i}_{step}.parquet")

        return run_chain(self, list(steps), params, after_step=after)

    # ----------------------------------------------------------------------------------------- outputs
    def consensus(self) -> pd.DataFrame:
        """:func:`pairedscreen.paint.profiles.consensus` of the selected profiles, a column block at a time
        (each feature's per-perturbation median is its own)."""
        keys = [c for c in (PERT, N_CELLS, IS_CONTROL, PLATE) if c in self.meta_kept]
        meta = pd.concat([self._meta(k, keys) for k in range(len(self.rows))], ignore_index=True) \
            if self.rows else pd.DataFrame(columns=keys)
        if not self.kept:
            return consensus(meta)
        parts = []
        for block in self._blocks(self.kept):
            cons = consensus(pd.concat([meta, self._read(block)], axis=1))
            parts.append(cons if not parts else cons[block])
        return pd.concat(parts, axis=1)

    def frames(self) -> tuple[pd.DataFrame, pd.DataFrame]:
        """(profiles, consensus) in memory: the screen's table, for callers that asked for it."""
        parts = list(self._plate_frames())
        prof = pd.concat(parts, ignore_index=True, sort=False) if parts else \
            pd.DataFrame({c: pd.Series(dtype=self.dtypes.get(c, np.float32))
                          for c in [*self.meta_kept, *self.kept]})
        return prof, self.consensus()

    def write(self, profiles_out: str | os.PathLike, consensus_out: str | os.PathLike,
              metadata: Mapping[bytes, bytes] | None = None) -> None:
        """``profiles.parquet`` (the table ``DataFrame.to_parquet`` writes for the concatenated profiles, in
        row groups of ~``ROW_GROUP_BYTES``; ``metadata`` added to its schema's) and ``consensus.parquet``."""
        with atomic_output(profiles_out) as tmp:
            self.write_table(tmp, metadata)
        with atomic_output(consensus_out) as tmp:
            self.consensus().to_parquet(tmp, index=False)

    def write_table(self, out: str | os.PathLike, metadata: Mapping[bytes, bytes] | None = None) -> None:
        """The current profiles to the Parquet file ``out``, a few plates per row group."""
        if not self.rows and not metadata:
            self.frames()[0].to_parquet(out, index=False)
            return
        if not self.rows:
            table = pa.Table.from_pandas(self.frames()[0], preserve_index=False)
            pq.write_table(table.replace_schema_metadata({**(table.schema.metadata or {}), **metadata}), out)
            return
        schema = self._schema()
        meta_schema = pa.schema(list(schema)[:len(self.meta_kept)])
        schema = schema.with_metadata({**(schema.metadata or {}), **(metadata or {})})
        buffer: list[pa.Table] = []
        with pq.ParquetWriter(out, schema) as writer:
            for k in range(len(self.rows)):
                meta = pa.Table.from_pandas(self._meta(k, self.meta_kept), schema=meta_schema,
                                            preserve_index=False)
                x = self._columns(k, self.kept)
                arrays = [*meta.columns, *(pa.array(v, pa.float32(), from_pandas=True) for v in x)]
                buffer.append(pa.Table.from_arrays(arrays, schema=schema))
                if sum(t.nbytes for t in buffer) >= ROW_GROUP_BYTES or k == len(self.rows) - 1:
                    writer.write_table(pa.concat_tables(buffer))     # (chunks, not copied)
                    buffer = []

    def _schema(self) -> pa.Schema:
        """The Arrow schema of the whole table: the plates' inferred types unified (a column that is all
        null on one plate takes the other plates' type), pandas metadata as ``from_pandas`` makes it."""
        first, fields = None, None
        for k in range(len(self.rows)):
            meta = self._meta(k, self.meta_kept)
            s = pa.Schema.from_pandas(meta, preserve_index=False)
            if first is None:
                first = meta.iloc[:0]
                fields = list(s)
            else:
                fields = [f if not pa.types.is_null(f.type) else g for f, g in zip(fields, s, strict=True)]
        types = pa.schema([*fields, *(pa.field(f, pa.float32()) for f in self.kept)])
        head = pd.concat([first, pd.DataFrame({f: np.empty(0, np.float32) for f in self.kept})], axis=1)
        return pa.Table.from_pandas(head, schema=types, preserve_index=False).schema

    @property
    def info(self) -> dict[str, Any]:
        """The counts ``build_profiles`` reports (before feature selection's record)."""
        out: dict[str, Any] = {"n_wells": self.n_wells, "n_wells_empty": self.n_wells_empty,
                               "n_plates": self.n_plates, "n_features_measured": len(self.features)}
        if self.position is not None:
            out["position_correction"] = self.position
        out["normalization_reference"] = self.used
        return out


def write_profiles(sources: Sequence[Source], profiles_out: str | os.PathLike,
                   consensus_out: str | os.PathLike, *, registry: pd.DataFrame | None,
                   normalize: str, feature_select: Sequence[str], outlier_cutoff: float,
                   position_correction: bool | str, blocklist: list[str] | None,
                   min_reference_wells: int = 3,
                   check: Callable[[dict[str, Any], list[str]], None] | None = None,
                   correct: Sequence[str],
                   correct_params: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The ``profiles:`` config block from per-plate tables to ``profiles.parquet`` and
    ``consensus.parquet``, one plate (or one column block) in memory at a time; scratch files in a folder
    beside ``profiles_out``, removed afterwards. ``check(info, plate_ids)`` runs after feature selection,
    before anything is written (it may raise). ``correct``: the correction chain's steps
    (:mod:`pairedscreen.paint.correct`, ``correct_params`` = the resolved ``profiles:`` block) after
    feature selection; their records go into ``profiles.parquet``'s metadata and the returned info
    (``correction``), the profiles before the chain and after each step but the last into
    ``profiles_steps/`` beside it (empty without a chain). Returns the info ``build_profiles``
    reports."""
    steps_dir = Path(profiles_out).parent / STEPS_DIR
    with scratch_dir(Path(profiles_out).parent, ".profiles_scratch.") as tmp:
        sp = ScreenProfiles(sources, tmp, registry=registry, normalize=normalize,
                            position_correction=position_correction, min_reference_wells=min_reference_wells)
        info = sp.info
        info["feature_selection"] = sp.select(list(feature_select), outlier_cutoff=outlier_cutoff,
                                              blocklist=blocklist)
        if check is not None:
            check(info, sp.plate_ids)
        metadata = None
        if correct and correct_params is None:
            raise ValueError("correct_params (the profiles: block) is needed with correct")
        # always written (empty without a chain): a declared output of the profiles rule, read by quality
        with atomic_output(steps_dir, is_dir=True) as steps_tmp:
            if correct:
                info["correction"] = sp.correct(list(correct), correct_params, steps_tmp)
        if correct and info["correction"]:
            metadata = {RECORD_KEY: json.dumps(info["correction"]).encode()}
        sp.write(profiles_out, consensus_out, metadata)
    return info
