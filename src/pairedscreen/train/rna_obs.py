"""The cell-load export's obs, planned from the per-library cells files with a few bytes per cell.

:func:`plan_export` reads one library's obs at a time (each file opened and closed in turn: an open HDF5
file keeps the strings read from it) and keeps, per exported cell, only integers: the library row, the
registry perturbation (the export order and the ``perturbation``/``perturbation_id``/``is_control``
columns), its X row length and the library-local code of each text column (``guide_id``, ``library`` =
``gem_group``, ``batch``, ``split``, ``batch_split``). Each column's categories are the sorted union of
the libraries' distinct values (:func:`pairedscreen.train.h5obs.merge_sorted_runs`; the barcodes' runs, one
value per cell, wait in scratch files). The export order is the stable sort by (perturbation label,
perturbation id, position in the libraries' concatenation), as ``sort_values`` ordered the whole table:
one ``argsort`` of an integer rank per cell.

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
CODED = ("guide_id", "library", "batch", "split", "batch_split")   # small text columns: codes per cell
SPILL = 1 << 14   # a run of more distinct values than this goes to a scratch file


def _compact(codes: np.ndarray, n: int) -> np.ndarray:
    for t in (np.uint8, np.uint16, np.uint32):
        if n <= np.iinfo(t).max + 1:
            return codes.astype(t)
    return codes.astype(np.int64)


def present_columns(files: Sequence[PathLike]) -> set[str]:
    """The :data:`SOURCE_OBS` columns that any of the files holds."""
    found: set[str] = set()
    for f in files:
        with h5py.File(f, "r") as fh:
            found.update(c for c in SOURCE_OBS if c in fh["obs"])
    return found


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
    """One library's exported cells: local rows, registry codes, X row lengths, text column codes."""

    def __init__(self, path: PathLike, keep: np.ndarray, pid: np.ndarray, lens: np.ndarray,
                 codes: dict[str, np.ndarray], runs: dict[str, h5obs.Run]) -> None:
        self.path, self.keep, self.pid, self.lens = path, keep, pid, lens
        self.codes, self.runs = codes, runs
        self.offset = 0
        self.maps: dict[str, np.ndarray] = {}


class ExportPlan:
    """The export's rows and obs codes (see the module docstring); built by :func:`plan_export`."""

    def __init__(self, files: list[PathLike], libs: list[Library], var: pd.DataFrame, present: set[str],
                 ids: np.ndarray, labels: np.ndarray, ctrl: np.ndarray, cell_type: str,
                 scratch: Path) -> None:
        self.files, self.libs, self.var, self.present = files, libs, var, present
        self.scratch, self.cell_type = scratch, cell_type
        n = 0
        for lib in libs:
            lib.offset = n
            n += len(lib.keep)
        self.n = n
        # the registry ids present, their labels and the export order of (label, id)
        seen = np.zeros(len(ids), bool)
        for lib in libs:
            seen[lib.pid] = True
        self.pid_cats = ids[seen]
        self.pid_code = np.cumsum(seen) - 1                       # registry position -> category code
        self.pert_cats = np.unique(labels[seen]) if seen.any() else np.zeros(0, object)
        self.pert_code = np.searchsorted(self.pert_cats, labels) if len(self.pert_cats) else \
            np.zeros(len(ids), np.int64)
        self.ctrl = ctrl
        rank = np.empty(len(ids), np.int64)
        rank[sorted(range(len(ids)), key=lambda i: (labels[i], ids[i]))] = np.arange(len(ids))
        key = np.concatenate([rank[lib.pid].astype(np.int32) for lib in libs] or [np.zeros(0, np.int32)])
        order = np.argsort(key, kind="stable")          # export position -> exported cell (concatenation)
        del key
        self.inv = np.empty(n, np.int32 if n < 2**31 else np.int64)   # exported cell -> export position
        self.inv[order] = np.arange(n, dtype=self.inv.dtype)
        lens = np.concatenate([lib.lens for lib in libs] or [np.zeros(0, np.int32)])
        self.out_ptr = np.zeros(n + 1, np.int64)
        np.cumsum(lens[order], dtype=np.int64, out=self.out_ptr[1:])
        del order, lens
        for lib in libs:
            lib.lens = None
        self.n_categories: dict[str, int] = {}
        self._cat_files: dict[str, tuple[Path, np.dtype]] = {}
        for col in (*CODED, "barcode"):
            self._merge(col)

    def _merge(self, col: str) -> None:
        """The column's categories (the sorted union of the libraries' runs) into a scratch file; each
        library's map from its run to the category codes."""
        runs = [lib.runs[col] for lib in self.libs]
        width = max([r.dtype.itemsize for r in runs] or [1])
        path = self.scratch / f"categories_{col}.bin"
        with open(path, "wb") as fh:
            total, maps = h5obs.merge_sorted_runs(runs, lambda u: fh.write(u.astype(f"S{width}").tobytes()))
        for lib, m in zip(self.libs, maps, strict=True):
            lib.maps[col] = m.astype(h5obs.codes_dtype(total), copy=False)
            lib.runs.pop(col)
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

    def positions(self, lib: Library) -> tuple[np.ndarray, np.ndarray]:
        """The library's exported cells in export order: (export positions, ascending; their library rows)."""
        pos = self.inv[lib.offset:lib.offset + len(lib.keep)]
        o = np.argsort(pos, kind="stable")
        return pos[o].astype(np.int64), lib.keep[o].astype(np.int64)

    def release(self, lib: Library) -> None:
        """Drop a library's per-cell state once its cells are written."""
        lib.keep, lib.maps = np.zeros(0, np.int32), {}

    def export_codes(self, col: str) -> np.ndarray:
        """A small text column's codes in export order."""
        out = np.empty(self.n, h5obs.codes_dtype(self.n_categories[col]))
        for lib in self.libs:
            out[self.inv[lib.offset:lib.offset + len(lib.keep)]] = lib.maps[col][lib.codes[col]]
        return out

    def registry_codes(self, table: np.ndarray, dtype: np.dtype) -> np.ndarray:
        out = np.empty(self.n, dtype)
        for lib in self.libs:
            out[self.inv[lib.offset:lib.offset + len(lib.keep)]] = table[lib.pid]
        return out

    def write_small_columns(self, obs: h5py.Group) -> None:
        """Every obs column but ``barcode`` (filled with the cells' strings) into the obs group; the
        per-cell codes they came from are dropped then."""
        for col in ("perturbation", "perturbation_id"):
            cats = self.pert_cats if col == "perturbation" else self.pid_cats
            table = self.pert_code if col == "perturbation" else self.pid_code
            dt = h5obs.codes_dtype(len(cats))
            h5obs.write_categorical(obs, col, self.registry_codes(table.astype(dt), dt), len(cats),
                                    [np.asarray(cats, dtype=object)])
        for col in CODED:
            codes = self.export_codes(col)
            for name in (("gem_group", "library") if col == "library" else (col,)):
                h5obs.write_categorical(obs, name, codes, self.n_categories[col], self.category_blocks(col))
        cats = [self.cell_type] if self.n else []
        h5obs.write_categorical(obs, "cell_type", np.zeros(self.n, h5obs.codes_dtype(len(cats))), len(cats),
                                [np.asarray(cats, dtype=object)])
        h5obs.write_array(obs, "is_control", self.registry_codes(self.ctrl, np.dtype(bool)))
        for lib in self.libs:
            lib.pid, lib.codes = None, {}
            lib.maps = {"barcode": lib.maps["barcode"]}


def plan_export(files: list[PathLike], registry: pd.DataFrame, labels_of: Mapping[str, str],
                splits: pd.DataFrame, holdout: pd.DataFrame, params: Mapping[str, Any],
                scratch: Path) -> ExportPlan:
    """Pass over the libraries (one open file at a time): usable cells, codes and distinct values; then the
    export order and the categories. ``labels_of``: registry id -> the ``perturbation`` label. Raises as the
    whole-table export did for cells of perturbations missing from ``splits``."""
    reg_ids = registry["perturbation_id"].astype(str).tolist()
    ids = np.unique(np.asarray(reg_ids, dtype=object)) if reg_ids else np.zeros(0, object)
    labels = np.array([labels_of[i] for i in ids], dtype=object)
    ctrl_ids = set(splits.loc[splits["split"] == CONTROL_SPLIT, "perturbation_id"].astype(str))
    ctrl = np.isin(ids, np.asarray(sorted(ctrl_ids), dtype=object))
    split_ids = set(splits["perturbation_id"])
    present = present_columns(files)
    shared, libs, unknown = SharedVar(), [], set()
    for li, f in enumerate(files):
        obs, var, lens = read_library(f, present)
        shared.add(var, f)
        keep = np.flatnonzero(usable_cells(ad.AnnData(obs=obs), categories=reg_ids))
        vals = export_values(obs, keep)
        del obs
        missing = set(vals["perturbation_id"]) - split_ids
        if missing:
            unknown |= missing
            continue
        sp_ = cell_splits(vals["perturbation_id"], vals["cell_id"], vals["library"], splits, holdout, "rna",
                          val_fraction=float(params["val_fraction"]),
                          test_fraction=float(params["test_fraction"]))
        vals["split"] = sp_["split"].to_numpy(dtype=object)
        vals["batch_split"] = sp_["batch_split"].to_numpy(dtype=object)
        codes, runs = {}, {}
        for col in (*CODED, "barcode"):
            u, inv = np.unique(vals[col], return_inverse=True) if len(keep) else (np.zeros(0, object),
                                                                                  np.zeros(0, np.int64))
            b = h5obs.utf8(u)
            runs[col] = h5obs.Run(b, scratch / f"run_{col}_{li}.bin" if len(b) > SPILL else None)
            if col != "barcode":   # (the barcodes' codes are found again when the cells' strings are read)
                codes[col] = _compact(inv, len(u))
        pid = np.searchsorted(ids, vals["perturbation_id"]).astype(np.int32)
        libs.append(Library(f, keep.astype(np.int32), pid, lens[keep].astype(np.int32), codes, runs))
    if unknown:   # the same error as the whole table gave, for every library's unknown perturbations
        u = np.asarray(sorted(unknown), dtype=object)
        cell_splits(u, u, np.full(len(u), "", dtype=object), splits, holdout, "rna",
                    val_fraction=float(params["val_fraction"]), test_fraction=float(params["test_fraction"]))
    return ExportPlan(list(files), libs, shared.result(), present, ids, labels, ctrl,
                      str(params["cell_type"]), scratch)


def barcode_codes(plan: ExportPlan, lib: Library, barcodes: np.ndarray) -> np.ndarray:
    """The category codes of a library's exported cells' barcodes (``barcodes``: their strings)."""
    _, inv = np.unique(barcodes, return_inverse=True)
    return lib.maps["barcode"][inv]
