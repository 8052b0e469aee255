"""The cell-load export's obs, planned from the per-library cells files with a few bytes per cell.

Pass 1 (:func:`plan_export`) reads one library's obs at a time (each file opened and closed in turn: an
open HDF5 file keeps the strings read from it) and keeps, per exported cell, two integers: the rank of its
registry perturbation and its X row length (arrays sized once for the screen's cells, before any library's
temporaries). The export order is the stable sort by (perturbation label, perturbation id, position in the
libraries' concatenation), as ``sort_values`` ordered the whole table: one ``argsort`` of the rank; so the
``perturbation``/``perturbation_id``/``is_control`` columns are the registry's values repeated by their cell
counts. The text columns' (``guide_id``, ``library`` = ``gem_group``, ``batch``, ``split``,
``batch_split``, ``barcode``) categories are the sorted union of the libraries' distinct values
(:func:`pairedscreen.train.h5obs.merge_sorted_runs`; long runs, e.g. the barcodes', wait in scratch files,
and so do the long maps from a library's values to the category codes). Pass 2
(:meth:`ExportPlan.library_cells`, driven by the export writer) reads one library again for its cells' ids,
barcodes and codes, in export order. Across the screen the plan holds 12 bytes per exported cell (export
position, X row pointer).

The cells kept and their values are those of the libraries' concatenation, library by library:
:func:`pairedscreen.expression.usable_cells` and :func:`pairedscreen.train.splits.cell_splits` are per cell,
and a column that only some libraries hold reads NaN (``'nan'``) in the others, as in the concatenated
table."""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import anndata as ad
import h5py
import numpy as np
import pandas as pd

from pairedscreen.expression import usable_cells
from pairedscreen.train import h5obs
from pairedscreen.train.splits import CONTROL_SPLIT, cell_splits

PathLike = str | os.PathLike
OBS_COLUMNS = ("perturbation", "perturbation_id", "guide_id", "gem_group", "library", "batch", "cell_type",
               "is_control", "split", "batch_split", "barcode")
SOURCE_OBS = ("perturbation", "library", "guide_ids", "batch", "barcode", "pass_qc", "predicted_doublet")
TEXT = ("guide_id", "library", "batch", "split", "batch_split", "barcode")   # categories from the libraries
FROM_TEXT = {"guide_id": "guide_id", "gem_group": "library", "library": "library", "batch": "batch",
             "split": "split", "batch_split": "batch_split", "barcode": "barcode"}   # obs column -> values
SPILL = 1 << 14   # a run of more distinct values than this goes to a scratch file


def screen_columns(files: Sequence[PathLike]) -> tuple[set[str], list[int]]:
    """The :data:`SOURCE_OBS` columns that any of the files holds, and each file's number of cells."""
    found: set[str] = set()
    sizes = []
    for f in files:
        with h5py.File(f, "r") as fh:
            grp = fh["obs"]
            found.update(c for c in SOURCE_OBS if c in grp)
            sizes.append(int(grp[grp.attrs["_index"]].shape[0]))
    return found, sizes


def read_library(path: PathLike, present: set[str], with_x: bool = True
                 ) -> tuple[pd.DataFrame, pd.DataFrame | None, np.ndarray | None]:
    """One cells file's obs (the :data:`SOURCE_OBS` columns ``present`` in the screen; one this file lacks
    is NaN), its var and X row lengths (stored values per row, without reading X's values)."""
    from anndata.io import read_elem

    with h5py.File(path, "r") as f:
        grp = f["obs"]
        index = pd.Index(np.asarray(read_elem(grp[grp.attrs["_index"]]), dtype=str))
        obs = pd.DataFrame({c: (read_elem(grp[c]) if c in grp else np.full(len(index), np.nan, dtype=object))
                            for c in SOURCE_OBS if c in present}, index=index)
        if not with_x:
            return obs, None, None
        var = read_elem(f["var"])
        g = f["X"]
        csr = isinstance(g, h5py.Group) and g.attrs.get("encoding-type") == "csr_matrix"
        lens = np.diff(g["indptr"][:].astype(np.int64)) if csr else None
    if lens is None:   # not CSR: row lengths from the rows themselves (through anndata, a block at a time)
        import scipy.sparse as sp

        a = ad.read_h5ad(path, backed="r")
        lens = np.concatenate([np.diff(sp.csr_matrix(a.X[s:s + 4096]).indptr)
                               for s in range(0, a.n_obs, 4096)] or [np.zeros(0, np.int64)])
        a.file.close()
    return obs, var, lens.astype(np.int64)


def _text(obs: pd.DataFrame, col: str, fallback: np.ndarray | str) -> np.ndarray:
    if col in obs:
        return obs[col].astype(str).to_numpy(dtype=object)
    return np.full(len(obs), fallback, dtype=object) if isinstance(fallback, str) else fallback


def export_values(obs: pd.DataFrame, keep: np.ndarray) -> dict[str, np.ndarray]:
    """The exported cells' text values that come from the library file (object arrays of str): the
    perturbation id, ``guide_id``, ``library``, ``batch``, ``barcode`` (the cell id where there is no
    barcode column) and the cell id."""
    sub = obs.iloc[keep]
    names = np.asarray(sub.index, dtype=object)
    return {"perturbation_id": _text(sub, "perturbation", ""), "guide_id": _text(sub, "guide_ids", ""),
            "library": _text(sub, "library", ""), "batch": _text(sub, "batch", ""),
            "barcode": _text(sub, "barcode", names), "cell_id": names}


class SharedVar:
    """The genes every library file holds (same names, same order) with the var columns whose values agree
    in all of them (what merging the libraries keeps), one library's var at a time."""

    def __init__(self) -> None:
        self.first: pd.DataFrame | None = None
        self.first_file: PathLike | None = None
        self.keep: list[str] = []

    def add(self, var: pd.DataFrame, path: PathLike) -> None:
        if self.first is None:
            self.first, self.first_file, self.keep = var, path, list(var.columns)
            return
        if not var.index.equals(self.first.index):
            raise ValueError(f"{path}: genes differ from {self.first_file}; the libraries must share one "
                             "reference")
        self.keep = [c for c in self.keep if c in var and var[c].equals(self.first[c])]

    def result(self) -> pd.DataFrame:
        assert self.first is not None
        return self.first[self.keep].copy()


class Library:
    """One library in the plan: its exported cells' offset and count, the sorted runs of distinct values
    of its text columns (until merged) and their maps to the category codes."""

    def __init__(self, path: PathLike, offset: int, n: int, runs: dict[str, h5obs.Run]) -> None:
        self.path, self.offset, self.n, self.runs = path, offset, n, runs
        self.maps: dict[str, h5obs.Run] = {}


class LibraryCells:
    """A library's exported cells in export order (pass 2): export positions (ascending), library rows,
    cell ids, barcodes and the category codes of every text column."""

    def __init__(self, pos: np.ndarray, rows: np.ndarray, names: np.ndarray, barcodes: np.ndarray,
                 codes: dict[str, np.ndarray]) -> None:
        self.pos, self.rows, self.names, self.barcodes, self.codes = pos, rows, names, barcodes, codes


class ExportPlan:
    """The export's order (``inv``: exported cell, in the libraries' concatenation -> export position),
    X row pointers (``out_ptr``) and the categories of its obs columns; built by :func:`plan_export`,
    which reads every library once; :meth:`library_cells` reads one library again for its strings and
    codes. Per cell it holds 12 bytes."""

    def __init__(self, libs: list[Library], var: pd.DataFrame, cells: _Cells, key: np.ndarray,
                 lens: np.ndarray, pid_counts: np.ndarray, scratch: Path) -> None:
        self.libs, self.var, self.cells, self.scratch = libs, var, cells, scratch
        self.n = n = len(key)
        ids, labels = cells.ids, cells.labels
        seen = pid_counts > 0
        self.pid_counts = pid_counts
        self.pid_cats = ids[seen]
        self.pid_code = np.cumsum(seen) - 1                       # registry position -> category code
        self.pert_cats = np.unique(labels[seen]) if seen.any() else np.zeros(0, object)
        self.pert_code = np.searchsorted(self.pert_cats, labels) if len(self.pert_cats) else \
            np.zeros(len(ids), np.int64)
        self.by_rank = cells.by_rank
        order = np.argsort(key, kind="stable")          # export position -> exported cell (concatenation)
        self.inv = np.empty(n, np.int32 if n < 2**31 else np.int64)   # exported cell -> export position
        self.inv[order] = np.arange(n, dtype=self.inv.dtype)
        self.out_ptr = np.zeros(n + 1, np.int64)
        np.cumsum(lens[order], dtype=np.int64, out=self.out_ptr[1:])
        del order
        self.n_categories: dict[str, int] = {}
        self._cat_files: dict[str, tuple[Path, np.dtype]] = {}
        for col in TEXT:
            self._merge(col)

    def _merge(self, col: str) -> None:
        """The column's categories (the sorted union of the libraries' runs) into a scratch file; each
        library's map from its run to the category codes (a scratch file too when long)."""
        runs = [lib.runs.pop(col) for lib in self.libs]
        width = max([r.dtype.itemsize for r in runs] or [1])
        path = self.scratch / f"categories_{col}.bin"
        with open(path, "wb") as fh:
            total, maps = h5obs.merge_sorted_runs(runs, lambda u: fh.write(u.astype(f"S{width}").tobytes()))
        dt = h5obs.codes_dtype(total)
        for li, (lib, m) in enumerate(zip(self.libs, maps, strict=True)):
            m = m.astype(dt, copy=False)
            lib.maps[col] = h5obs.Run(m, self.scratch / f"map_{col}_{li}.bin" if len(m) > SPILL else None)
        del maps
        self.n_categories[col] = total
        self._cat_files[col] = (path, np.dtype(f"S{width}"))

    def width(self, col: str) -> int:
        """Bytes of the longest value (UTF-8) of a text column."""
        return self._cat_files[col][1].itemsize

    def category_blocks(self, col: str) -> Iterator[np.ndarray]:
        """A text column's categories (str, sorted), a block at a time."""
        path, dtype = self._cat_files[col]
        run = h5obs.Run.on_file(path, self.n_categories[col], dtype)
        for s in range(0, run.n, h5obs.BLOCK):
            yield h5obs.decode(run.read(s, h5obs.BLOCK))

    def write_registry_columns(self, obs: h5py.Group) -> None:
        """``perturbation``, ``perturbation_id``, ``is_control`` and ``cell_type``: the export is sorted by
        the registry rank, so each is the registry ids' values repeated by their cell counts."""
        counts = self.pid_counts[self.by_rank]
        for col, cats, table in (("perturbation", self.pert_cats, self.pert_code),
                                 ("perturbation_id", self.pid_cats, self.pid_code)):
            dt = h5obs.codes_dtype(len(cats))
            h5obs.write_categorical(obs, col, np.repeat(table[self.by_rank].astype(dt), counts), len(cats),
                                    [np.asarray(cats, dtype=object)])
        cats = [self.cells.cell_type] if self.n else []
        h5obs.write_categorical(obs, "cell_type", np.zeros(self.n, h5obs.codes_dtype(len(cats))), len(cats),
                                [np.asarray(cats, dtype=object)])
        h5obs.write_array(obs, "is_control", np.repeat(self.cells.ctrl[self.by_rank], counts))

    def new_text_columns(self, obs: h5py.Group) -> dict[str, h5py.Dataset]:
        """The text columns (categories written; codes datasets to fill, by obs column name)."""
        return {name: h5obs.new_categorical(obs, name, self.n, self.n_categories[col],
                                            self.category_blocks(col))
                for name, col in FROM_TEXT.items()}

    def library_cells(self, lib: Library) -> LibraryCells:
        """Read a library again: its exported cells in export order with their strings and codes."""
        obs, _, _ = read_library(lib.path, self.cells.present, with_x=False)
        keep = self.cells.usable(obs)
        if len(keep) != lib.n:
            raise RuntimeError(f"{lib.path} changed while the export was written")
        vals = self.cells.values(obs, keep)
        del obs
        pos = self.inv[lib.offset:lib.offset + lib.n]
        o = np.argsort(pos, kind="stable")
        codes = {}
        for col in TEXT:
            _, inv = np.unique(vals[col], return_inverse=True)   # positions in the library's run
            codes[col] = lib.maps[col].all()[inv[o]]
        return LibraryCells(pos[o].astype(np.int64), keep[o].astype(np.int64), vals["cell_id"][o],
                            vals["barcode"][o], codes)


class _Cells:
    """The per-cell rules: which cells are exported and their values (both passes use them)."""

    def __init__(self, registry: pd.DataFrame, labels_of: Mapping[str, str], splits: pd.DataFrame,
                 holdout: pd.DataFrame, params: Mapping[str, Any], present: set[str]) -> None:
        self.reg_ids = registry["perturbation_id"].astype(str).tolist()
        self.ids = np.unique(np.asarray(self.reg_ids, dtype=object)) if self.reg_ids else np.zeros(0, object)
        self.labels = np.array([labels_of[i] for i in self.ids], dtype=object)
        rank = sorted(range(len(self.ids)), key=lambda i: (self.labels[i], self.ids[i]))
        self.by_rank = np.asarray(rank, dtype=np.int64)            # registry positions in export order
        self.rank = np.empty(len(self.ids), np.int32)
        self.rank[self.by_rank] = np.arange(len(self.ids), dtype=np.int32)
        ctrl_ids = set(splits.loc[splits["split"] == CONTROL_SPLIT, "perturbation_id"].astype(str))
        self.ctrl = np.isin(self.ids, np.asarray(sorted(ctrl_ids), dtype=object))
        self.split_ids = set(splits["perturbation_id"])
        self.splits, self.holdout, self.present = splits, holdout, present
        self.fractions = {"val_fraction": float(params["val_fraction"]),
                          "test_fraction": float(params["test_fraction"])}
        self.cell_type = str(params["cell_type"])

    def usable(self, obs: pd.DataFrame) -> np.ndarray:
        return np.flatnonzero(usable_cells(ad.AnnData(obs=obs), categories=self.reg_ids))

    def unknown(self, pids: np.ndarray) -> set[str]:
        return set(pids) - self.split_ids

    def values(self, obs: pd.DataFrame, keep: np.ndarray) -> dict[str, np.ndarray]:
        """:func:`export_values` + the cells' ``split`` and ``batch_split``."""
        return self.add_splits(export_values(obs, keep))

    def add_splits(self, vals: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """The cells' ``split`` and ``batch_split`` (:func:`pairedscreen.train.splits.cell_splits`)."""
        sp_ = cell_splits(vals["perturbation_id"], vals["cell_id"], vals["library"], self.splits,
                          self.holdout, "rna", **self.fractions)
        vals["split"] = sp_["split"].to_numpy(dtype=object)
        vals["batch_split"] = sp_["batch_split"].to_numpy(dtype=object)
        return vals

    def raise_unknown(self, unknown: set[str]) -> None:
        """The error the whole-table export gave for cells of perturbations missing from splits.tsv."""
        u = np.asarray(sorted(unknown), dtype=object)
        cell_splits(u, u, np.full(len(u), "", dtype=object), self.splits, self.holdout, "rna",
                    **self.fractions)


def plan_export(files: list[PathLike], registry: pd.DataFrame, labels_of: Mapping[str, str],
                splits: pd.DataFrame, holdout: pd.DataFrame, params: Mapping[str, Any],
                scratch: Path) -> ExportPlan:
    """Pass 1 over the libraries (one open file at a time): usable cells, their sort key and X row
    length (in arrays sized once for the screen's cells), the distinct values of the text columns; then
    the export order and the categories. ``labels_of``: registry id -> the ``perturbation`` label. Raises
    as the whole-table export did for cells of perturbations missing from ``splits``."""
    present, sizes = screen_columns(files)
    cells = _Cells(registry, labels_of, splits, holdout, params, present)
    key = np.empty(sum(sizes), np.int32)      # allocated before the libraries' temporaries
    lens = np.empty(sum(sizes), np.int32)
    pid_counts = np.zeros(len(cells.ids), np.int64)
    shared, libs, unknown, n = SharedVar(), [], set(), 0
    for li, f in enumerate(files):
        obs, var, row_lens = read_library(f, present)
        shared.add(var, f)
        keep = cells.usable(obs)
        vals = export_values(obs, keep)
        del obs
        missing = cells.unknown(vals["perturbation_id"])
        if missing:
            unknown |= missing
            continue
        cells.add_splits(vals)
        runs = {}
        for col in TEXT:
            u = np.unique(vals[col]) if len(keep) else np.zeros(0, object)
            runs[col] = h5obs.Run(h5obs.utf8(u), scratch / f"run_{col}_{li}.bin" if len(u) > SPILL else None)
        pid = np.searchsorted(cells.ids, vals["perturbation_id"])
        pid_counts += np.bincount(pid, minlength=len(cells.ids))
        key[n:n + len(keep)] = cells.rank[pid]
        lens[n:n + len(keep)] = row_lens[keep]
        libs.append(Library(f, n, len(keep), runs))
        n += len(keep)
        del vals, pid, row_lens
    if unknown:
        cells.raise_unknown(unknown)
    return ExportPlan(libs, shared.result(), cells, key[:n], lens[:n], pid_counts, scratch)
