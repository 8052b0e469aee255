"""The merged ``results/rna/cells.h5ad``, written by streaming the libraries' ``cells.h5ad`` files.

The file is the one :func:`pairedscreen.rna.pseudobulk.merge_libraries` + ``write_h5ad(compression="gzip")``
makes (same groups, dtypes, attributes and values: equal :mod:`pairedscreen.digest` content digests,
``tests/test_rna_summary.py``), but no step holds the screen's matrix:

- ``X`` and ``obsm['guide_counts']`` are appended one row block of one library at a time (the guide
  columns re-indexed onto the union of the libraries' guides);
- ``obs`` is written one column at a time: the index, numeric columns of one dtype and string columns
  whose values are all distinct (``write_h5ad`` keeps those strings) are appended library by library;
  categorical columns are unified as :func:`anndata.concat` unifies them (their codes held, 1-2 bytes per
  cell), other string columns turned categorical as ``write_h5ad`` does;
- ``var`` keeps the columns equal in every library (``merge="same"``); ``uns`` holds ``guide_names`` and
  each library's own ``uns`` under ``uns['libraries'][lib]``.

Memory: one row block, one library's uns, and one numeric or categorical obs column of the screen (a few
bytes per cell); a string column with repeated values (anndata then stores it as a categorical) is built in
memory, its categories being the screen's distinct values.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence

import h5py
import numpy as np
import pandas as pd
import scipy.sparse as sp
from anndata.io import read_elem, write_elem
from natsort import natsorted
from pandas.api.types import infer_dtype

from pairedscreen.io import atomic_output

PathLike = str | os.PathLike
BLOCK_ROWS = 1 << 16
_GZIP = {"compression": "gzip"}


class _Libraries:
    """The libraries' files, opened one at a time as they are iterated and closed after: an open HDF5 file
    caches what was read from it (e.g. a library's string heap, ~75 bytes per string), so holding every
    library open would grow with the screen."""

    def __init__(self, paths: Sequence[PathLike]) -> None:
        self.paths = list(paths)

    def __len__(self) -> int:
        return len(self.paths)

    def __iter__(self) -> Iterator[h5py.File]:
        for p in self.paths:
            with h5py.File(p, "r") as f:
                yield f


def _library_name(f: h5py.File, path: PathLike, k: int) -> str:
    obs = f["obs"]
    if "library" in obs and f["obs"][obs.attrs["_index"]].shape[0]:
        col = read_elem(obs["library"])
        return str(col[0])
    return f"lib{k}"


def _column_order(files: Sequence[h5py.File]) -> list[str]:
    cols: list[str] = []
    for f in files:
        for c in f["obs"].attrs["column-order"]:
            if str(c) not in cols:
                cols.append(str(c))
    return cols


def _merged_column(files: Sequence[h5py.File], name: str) -> pd.Series:
    """One obs column over every library, as ``anndata.concat`` (outer join) then ``write_h5ad`` make it."""
    parts, cats = [], []
    for f in files:
        n = f["obs"][f["obs"].attrs["_index"]].shape[0]
        if name in f["obs"]:
            v = read_elem(f["obs"][name])
            parts.append(pd.Series(v))
            cats.append(isinstance(v, pd.Categorical))
        else:
            parts.append(pd.Series(np.full(n, np.nan)))
            cats.append(False)
    if cats and all(cats) and not any(p.cat.ordered for p in parts):
        union = pd.Index([]).append([p.cat.categories for p in parts]).unique()
        dtype = pd.CategoricalDtype(natsorted(union), ordered=False)
        parts = [p.astype(dtype) for p in parts]
    if name in ("library", "batch"):    # merge_libraries: .astype(str).astype("category"), per library
        uniq = [np.unique(p.astype(str).to_numpy(dtype=str), return_inverse=True) for p in parts]
        cats = np.unique(np.concatenate([u for u, _ in uniq])) if uniq else np.zeros(0, dtype=str)
        codes = np.concatenate([np.searchsorted(cats, u)[inv] for u, inv in uniq]) if uniq else \
            np.zeros(0, np.int64)
        return pd.Series(pd.Categorical.from_codes(codes, categories=pd.Index(cats, dtype=object)))
    col = pd.concat(parts, ignore_index=True)
    if infer_dtype(col) == "string":
        c = pd.Categorical(col)
        if len(c.categories) < len(c):
            return pd.Series(c.set_categories(natsorted(c.categories)))
    return col


def _unique_strings(files: Sequence[h5py.File], name: str) -> bool:
    """Whether a string column holds distinct values over all libraries (then ``write_h5ad`` keeps it a
    string array), from 64-bit hashes: 8 bytes per cell. Distinct hashes prove distinct strings; a hash
    collision only sends the column down the exact in-memory path."""
    hashes = []
    for f in files:
        g = f["obs"].get(name)
        if not isinstance(g, h5py.Dataset) or not h5py.check_string_dtype(g.dtype):
            return False
        for s in range(0, g.shape[0], BLOCK_ROWS):
            hashes.append(pd.util.hash_array(np.asarray(g.asstr()[s:s + BLOCK_ROWS], dtype=object)))
    h = np.concatenate(hashes) if hashes else np.zeros(0, np.uint64)
    del hashes
    h.sort()
    return not bool((h[1:] == h[:-1]).any())


def _same_numeric(files: _Libraries, name: str) -> bool:
    """A plain numeric/bool array of one dtype in every library: concatenating it is appending it."""
    dtypes = set()
    for f in files:
        d = f["obs"].get(name)
        plain = isinstance(d, h5py.Dataset) and d.dtype.kind in "biuf"
        if not (plain and d.attrs.get("encoding-type") == "array"):
            return False
        dtypes.add(d.dtype)
    return len(dtypes) == 1


def _stream_numeric(files: _Libraries, group: h5py.Group, name: str) -> None:
    ds = None
    for f in files:
        g = f["obs"][name]
        if ds is None:
            ds = group.create_dataset(name, shape=(0,), maxshape=(None,), dtype=g.dtype, chunks=(1 << 16,),
                                      **_GZIP)
            ds.attrs.update({"encoding-type": "array", "encoding-version": "0.2.0"})
        for s in range(0, g.shape[0], BLOCK_ROWS):
            _append(ds, g[s:s + BLOCK_ROWS])


def _stream_strings(files: Sequence[h5py.File], group: h5py.Group, name: str) -> None:
    """A string column with distinct values, appended library by library (a block at a time)."""
    ds = group.create_dataset(name, shape=(0,), maxshape=(None,), dtype=h5py.string_dtype(),
                              chunks=(1 << 14,), **_GZIP)
    ds.attrs.update({"encoding-type": "string-array", "encoding-version": "0.2.0"})
    for f in files:
        g = f["obs"][name]
        for s in range(0, g.shape[0], BLOCK_ROWS):
            _append(ds, g[s:s + BLOCK_ROWS])


def _write_column(group: h5py.Group, name: str, col: pd.Series) -> None:
    if isinstance(col.dtype, pd.CategoricalDtype):
        write_elem(group, name, col.array, dataset_kwargs=_GZIP)
    elif infer_dtype(col) == "string":
        write_elem(group, name, col.to_numpy(dtype=object), dataset_kwargs=_GZIP)
    else:
        write_elem(group, name, col.to_numpy(), dataset_kwargs=_GZIP)


def _append(ds: h5py.Dataset, values: np.ndarray) -> None:
    n = ds.shape[0]
    ds.resize((n + len(values),))
    ds[n:] = values


def _csr_group(out: h5py.Group, name: str, shape: tuple[int, int], data_dtype: np.dtype,
               index_dtype: np.dtype) -> h5py.Group:
    g = out.create_group(name)
    g.attrs.update({"encoding-type": "csr_matrix", "encoding-version": "0.1.0", "shape": np.asarray(shape)})
    g.create_dataset("data", shape=(0,), maxshape=(None,), dtype=data_dtype, chunks=(1 << 16,), **_GZIP)
    g.create_dataset("indices", shape=(0,), maxshape=(None,), dtype=index_dtype, chunks=(1 << 16,), **_GZIP)
    g.create_dataset("indptr", shape=(0,), maxshape=(None,), dtype=index_dtype, chunks=(1 << 16,), **_GZIP)
    return g


def _index_dtype(nnz: int, n: int) -> np.dtype:
    """scipy's choice for a stacked CSR matrix: int32 while every index and nnz fit, else int64."""
    return np.dtype(np.int32) if max(nnz, n) <= np.iinfo(np.int32).max else np.dtype(np.int64)


def _stream_csr(files: _Libraries, key: str, out: h5py.Group, name: str, n_cols: int,
                remap: Sequence[np.ndarray | None] | None = None) -> None:
    """Row-stack the CSR matrices ``f[key]`` of ``files`` into ``out[name]``, a block at a time
    (``remap[k]``: new column of each of file k's columns)."""
    shapes = [(int(f[key].attrs["shape"][0]), int(f[key]["data"].shape[0]), f[key]["data"].dtype)
              for f in files]
    n_rows, nnz = sum(r for r, _, _ in shapes), sum(n for _, n, _ in shapes)
    data_dtype = np.result_type(*[d for _, _, d in shapes])
    idx = _index_dtype(nnz, max(n_rows, n_cols))
    dst = _csr_group(out, name, (n_rows, n_cols), data_dtype, idx)
    _append(dst["indptr"], np.zeros(1, idx))
    offset = 0
    for k, f in enumerate(files):
        g = f[key]
        indptr = g["indptr"][()].astype(np.int64)
        rows = len(indptr) - 1
        for s in range(0, rows, BLOCK_ROWS):
            e = min(rows, s + BLOCK_ROWS)
            lo, hi = int(indptr[s]), int(indptr[e])
            cols, vals = g["indices"][lo:hi], g["data"][lo:hi]
            if remap is not None and remap[k] is not None:
                # re-indexed columns, sorted within each row as scipy's COO -> CSR conversion leaves them
                block = sp.csr_matrix((vals, remap[k][cols], indptr[s:e + 1] - lo), shape=(e - s, n_cols))
                block.sort_indices()
                cols, vals = block.indices, block.data
            _append(dst["data"], np.asarray(vals).astype(data_dtype))
            _append(dst["indices"], np.asarray(cols).astype(idx))
            _append(dst["indptr"], (indptr[s + 1:e + 1] - indptr[0] + offset).astype(idx))
        offset += int(indptr[-1] - indptr[0])


def _same_var(files: _Libraries) -> pd.DataFrame:
    """The first library's var, keeping the columns equal in every library (anndata's ``merge="same"``)."""
    var = None
    for f, p in zip(files, files.paths, strict=True):
        other = read_elem(f["var"])
        if var is None:
            var = other
            continue
        if not other.index.equals(var.index):
            raise ValueError(f"{p}: genes differ from {files.paths[0]}; every library must be counted "
                             "against the same reference to be merged")
        var = var[[c for c in var.columns if c in other.columns and other[c].equals(var[c])]]
    return var


def write_merged_cells(paths: Sequence[PathLike], out: PathLike) -> int:
    """Stream the libraries' ``cells.h5ad`` (in this order) into the merged ``out``; returns its cells."""
    if not paths:
        raise ValueError("no libraries to merge")
    files = _Libraries(paths)
    var = _same_var(files)
    libs = [_library_name(f, p, k) for k, (f, p) in enumerate(zip(files, paths, strict=True))]
    guide_lists = [[str(g) for g in read_elem(f["uns"]["guide_names"])]
                   if "guide_names" in f["uns"] else [] for f in files]
    guide_names = sorted({g for gl in guide_lists for g in gl})
    with atomic_output(out) as tmp, h5py.File(tmp, "w") as dst:
        dst.attrs.update({"encoding-type": "anndata", "encoding-version": "0.1.0"})
        _stream_csr(files, "X", dst, "X", len(var))
        obs = dst.create_group("obs")
        index = obs.create_dataset("_index", shape=(0,), maxshape=(None,), dtype=h5py.string_dtype(),
                                   chunks=(1 << 14,), **_GZIP)
        index.attrs.update({"encoding-type": "string-array", "encoding-version": "0.2.0"})
        for f in files:
            names = f["obs"][f["obs"].attrs["_index"]]
            for s in range(0, names.shape[0], BLOCK_ROWS):
                _append(index, names[s:s + BLOCK_ROWS])
        columns = _column_order(files)
        for c in columns:
            if all(c in f["obs"] for f in files) and _same_numeric(files, c):
                _stream_numeric(files, obs, c)
            elif all(c in f["obs"] for f in files) and _unique_strings(files, c):
                _stream_strings(files, obs, c)      # e.g. barcodes: never the screen's strings at once
            else:
                _write_column(obs, c, _merged_column(files, c))
        obs.attrs.update({"encoding-type": "dataframe", "encoding-version": "0.2.0", "_index": "_index",
                          "column-order": np.asarray(columns, dtype=object)})
        write_elem(dst, "var", var, dataset_kwargs=_GZIP)
        obsm = dst.create_group("obsm")
        obsm.attrs.update({"encoding-type": "dict", "encoding-version": "0.1.0"})
        has_guides = ["guide_counts" in f["obsm"] for f in files]
        if any(has_guides):
            if not all(has_guides):
                missing = [str(p) for p, h in zip(paths, has_guides, strict=True) if not h]
                raise ValueError(f"{missing}: no obsm['guide_counts'] while other libraries have one")
            remap = [pd.Index(guide_names).get_indexer(gl) for gl in guide_lists]
            _stream_csr(files, "obsm/guide_counts", obsm, "guide_counts", len(guide_names), remap)
        for name in ("layers", "obsp", "varm", "varp"):
            g = dst.create_group(name)
            g.attrs.update({"encoding-type": "dict", "encoding-version": "0.1.0"})
        uns = dst.create_group("uns")
        uns.attrs.update({"encoding-type": "dict", "encoding-version": "0.1.0"})
        if guide_names:
            write_elem(uns, "guide_names", np.asarray(guide_names, dtype=object), dataset_kwargs=_GZIP)
        per_lib = uns.create_group("libraries")
        per_lib.attrs.update({"encoding-type": "dict", "encoding-version": "0.1.0"})
        for lib, f in zip(libs, files, strict=True):
            u = {k: v for k, v in read_elem(f["uns"]).items() if k != "guide_names"}
            write_elem(per_lib, lib, u, dataset_kwargs=_GZIP)
    return sum(int(f["X"].attrs["shape"][0]) for f in files)
