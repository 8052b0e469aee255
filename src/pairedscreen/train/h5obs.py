"""An obs table written into an h5ad one column / one block at a time, in anndata's on-disk format
(anndata 0.12 ``dataframe`` / ``categorical`` / ``string-array`` encodings), for tables too long to hold as
pandas objects: the categories of a column come from sorted runs of distinct values (one run per source
file) merged a block at a time (:func:`merge_sorted_runs`), codes are small integer arrays.

Categorical columns are what ``pd.Categorical(values)`` makes and anndata writes: categories = the sorted
distinct strings (code point order = the order of their UTF-8 bytes), codes in the smallest integer type
pandas picks for that many categories (:func:`codes_dtype`)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import h5py
import numpy as np

STR_DTYPE = h5py.special_dtype(vlen=str)   # what anndata writes a string array as
BLOCK = 1 << 16                            # rows (or distinct values) per block


def encoding(obj: h5py.HLObject, kind: str) -> None:
    obj.attrs["encoding-type"] = kind
    obj.attrs["encoding-version"] = "0.1.0" if kind == "csr_matrix" else "0.2.0"


def codes_dtype(n_categories: int) -> np.dtype:
    """The integer type of ``pd.Categorical(...).codes`` for ``n_categories`` categories."""
    for t in (np.int8, np.int16, np.int32):
        if n_categories < np.iinfo(t).max:
            return np.dtype(t)
    return np.dtype(np.int64)


def utf8(values: Sequence[str] | np.ndarray) -> np.ndarray:
    """Strings as a fixed-width bytes array (UTF-8): sorts as the strings do, no Python object per value."""
    a = np.asarray(values, dtype=object)
    if not len(a):
        return np.zeros(0, "S1")
    return np.array([s.encode() for s in a.tolist()], dtype="S")


def decode(values: np.ndarray) -> np.ndarray:
    """A bytes array (:func:`utf8`) back to an object array of str (as anndata and pandas hold strings)."""
    return np.array([b.decode() for b in values.tolist()], dtype=object)


def new_string_array(group: h5py.Group, name: str, n: int) -> h5py.Dataset:
    """An empty ``string-array`` dataset of ``n`` strings (filled by slices)."""
    ds = group.create_dataset(name, shape=(n,), dtype=STR_DTYPE)
    encoding(ds, "string-array")
    return ds


def write_array(group: h5py.Group, name: str, values: np.ndarray) -> h5py.Dataset:
    """A numeric/bool ``array`` dataset (as anndata's ``write_basic``)."""
    ds = group.create_dataset(name, data=values, shape=values.shape, dtype=values.dtype)
    encoding(ds, "array")
    return ds


def write_categorical(group: h5py.Group, name: str, codes: np.ndarray, n_categories: int,
                      category_blocks: Iterable[np.ndarray], ordered: bool = False) -> None:
    """A ``categorical`` column: ``codes`` (already in :func:`codes_dtype`) and the categories, given as
    consecutive blocks of str (object arrays) adding up to ``n_categories``."""
    g = group.create_group(name)
    g.attrs["ordered"] = bool(ordered)
    write_array(g, "codes", codes)
    _write_categories(g, name, n_categories, category_blocks)


def new_categorical(group: h5py.Group, name: str, n: int, n_categories: int,
                    category_blocks: Iterable[np.ndarray], ordered: bool = False) -> h5py.Dataset:
    """A ``categorical`` column of ``n`` rows whose categories are written now and whose codes dataset
    (returned, :func:`codes_dtype`) the caller fills by slices."""
    g = group.create_group(name)
    g.attrs["ordered"] = bool(ordered)
    ds = g.create_dataset("codes", shape=(n,), dtype=codes_dtype(n_categories))
    encoding(ds, "array")
    _write_categories(g, name, n_categories, category_blocks)
    return ds


def _write_categories(g: h5py.Group, name: str, n_categories: int,
                      category_blocks: Iterable[np.ndarray]) -> None:
    ds = new_string_array(g, "categories", n_categories)
    at = 0
    for blk in category_blocks:
        ds[at:at + len(blk)] = blk
        at += len(blk)
    if at != n_categories:
        raise ValueError(f"{name}: {at} categories written, {n_categories} expected")
    encoding(g, "categorical")


def open_dataframe(parent: h5py.Group, name: str, columns: Sequence[str], n: int) -> tuple[h5py.Group,
                                                                                             h5py.Dataset]:
    """An obs ``dataframe`` group with its ``_index`` dataset of ``n`` strings (to be filled); the columns
    are added by the caller under the names ``columns`` (their order)."""
    g = parent.create_group(name)
    g.attrs["_index"] = "_index"
    g.attrs["column-order"] = list(columns)
    encoding(g, "dataframe")
    return g, new_string_array(g, "_index", n)


class Run:
    """One sorted run of distinct byte strings: in memory, or a raw file of fixed-width values (read a block
    at a time with ``np.fromfile``: no mapping that would stay resident)."""

    def __init__(self, values: np.ndarray, spill: Path | None = None) -> None:
        self.n, self.dtype = len(values), values.dtype
        self.path = spill
        if spill is not None:
            values.tofile(spill)
            self.values = None
        else:
            self.values = values

    @classmethod
    def on_file(cls, path: Path, n: int, dtype: np.dtype) -> Run:
        """A run already written to ``path`` (``n`` values of ``dtype``)."""
        run = cls(np.zeros(0, dtype))
        run.n, run.path, run.values = n, path, None
        return run

    def read(self, start: int, count: int) -> np.ndarray:
        count = max(0, min(count, self.n - start))
        if self.values is not None:
            return self.values[start:start + count]
        return np.fromfile(self.path, dtype=self.dtype, count=count, offset=start * self.dtype.itemsize)

    def all(self) -> np.ndarray:
        return self.read(0, self.n)


def merge_sorted_runs(runs: Sequence[Run], sink: Callable[[np.ndarray], None],
                      block: int | None = None) -> tuple[int, list[np.ndarray]]:
    """Merge sorted runs of distinct values into their sorted union, handed to ``sink`` a block at a time.
    Returns the union's size and, per run, each value's position in the union. Memory: about one block of
    values (shared by the runs) + the positions."""
    block = block or BLOCK
    pos_dtype = codes_dtype(sum(r.n for r in runs) + 1)   # fits any union size
    maps = [np.empty(r.n, pos_dtype) for r in runs]
    loaded = [0] * len(runs)          # values read from each run so far
    bufs = [r.read(0, 0) for r in runs]
    total = 0
    quota = max(256, block // max(1, len(runs)))   # values buffered per run: ~ one block in all
    while True:
        for i, r in enumerate(runs):  # top up each buffer
            if len(bufs[i]) < quota and loaded[i] < r.n:
                more = r.read(loaded[i], quota)
                loaded[i] += len(more)
                bufs[i] = np.concatenate([bufs[i], more]) if len(bufs[i]) else more
        live = [i for i in range(len(runs)) if len(bufs[i])]
        if not live:
            break
        # values up to the smallest last buffered value of a run with more on file are all buffered
        pending = [bufs[i][-1] for i in live if loaded[i] < runs[i].n]
        limit = min(pending) if pending else None
        takes = {i: (len(bufs[i]) if limit is None else int(np.searchsorted(bufs[i], limit, side="right")))
                 for i in live}
        union = np.unique(np.concatenate([bufs[i][:t] for i, t in takes.items() if t]))
        for i, t in takes.items():
            if t:
                start = loaded[i] - len(bufs[i])
                maps[i][start:start + t] = total + np.searchsorted(union, bufs[i][:t])
                bufs[i] = bufs[i][t:]
        sink(union)
        total += len(union)
    return total, maps
