"""The cells the RNA evals score: a seeded, bounded subsample per perturbation of the cell-load export.

cell-eval's cost and memory grow with the cells it is given; the Virtual Cell Challenge scores ~400 cells
per perturbation. So ``results/quality/eval_cells.h5ad`` holds, for every registry perturbation id of the
export (controls included, each control id on its own), at most ``train.eval_max_cells_per_perturbation``
cells: those with the smallest :func:`pairedscreen.train.splits.seeded_uniform` value of
``"eval_cells:{obs_name}"`` under ``train.seed`` (ties: obs name). The choice depends only on the cells'
names (``{library}_{barcode}``), the perturbation and the seed, never on how the cells are split into
libraries or files, and its key prefix keeps it independent of the control cells' split assignment (the same
hash of the bare cell id).

The file is the export's rows in export order (X counts, obs, var; no ``obsm``), read with
:func:`pairedscreen.train.rna_export.read_rows` (one block of the export at a time, never the whole export);
its ``uns['eval_subsample']`` (:func:`subsample_summary`) is what ``results/quality/evals.json`` records.

Memory: the export's obs index is read one block at a time and hashed; only each perturbation's candidates
(the cells whose key is at most its ``max_cells``-th smallest so far) are kept between blocks, the names of
cells with equal keys are read only to order those; the obs columns of the kept rows are then read a block
at a time, and a categorical's categories (all of them, as ``obs.iloc[rows]`` keeps them: the barcodes'
are one per exported cell) are copied a block at a time. So the peak is the subsample, whatever the size of
the export.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import pandas as pd

from pairedscreen.io import atomic_output
from pairedscreen.train import h5obs
from pairedscreen.train.rna_export import read_rows
from pairedscreen.train.splits import seeded_uniform

PathLike = str | os.PathLike
KEY_PREFIX = "eval_cells:"
UNIT = "perturbation_id"


def _candidates(grp: np.ndarray, key: np.ndarray, max_cells: int) -> np.ndarray:
    """Positions of the cells that can still be among their group's ``max_cells`` smallest (key, name):
    those whose key is at most the group's ``max_cells``-th smallest (equal keys kept for the names)."""
    order = np.lexsort((key, grp))
    g, k = grp[order], key[order]
    n = len(g)
    if not n:
        return order
    start = np.r_[True, g[1:] != g[:-1]]
    first = np.maximum.accumulate(np.where(start, np.arange(n), 0))
    end = np.searchsorted(g, g, side="right")
    kth = first + max_cells - 1
    return order[k <= np.where(kth < end, k[np.minimum(kth, n - 1)], np.inf)]


def _choose(rows: np.ndarray, grp: np.ndarray, key: np.ndarray, max_cells: int,
            names_of: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
    """Rows (ascending) of the ``max_cells`` smallest (key, name) per group; ``names_of(rows)`` is asked
    only for the cells whose key another cell of their group shares."""
    order = np.lexsort((key, grp))
    g, k = grp[order], key[order]
    same = np.r_[False, (g[1:] == g[:-1]) & (k[1:] == k[:-1])]
    tied = same | np.r_[same[1:], False]
    if tied.any():
        name = np.full(len(order), "", dtype=object)
        name[tied] = names_of(rows[order[tied]])
        p = np.lexsort((name, k, g))
        order, g = order[p], g[p]
    start = np.r_[True, g[1:] != g[:-1]] if len(g) else np.zeros(0, bool)
    first = np.maximum.accumulate(np.where(start, np.arange(len(g)), 0))
    rank = np.arange(len(g)) - first
    return np.sort(rows[order[rank < max_cells]])


def subsample_rows(names: Sequence[str], groups: Sequence[str], max_cells: int, seed: int) -> np.ndarray:
    """Positions (ascending) of the kept cells: per group, the ``max_cells`` cells with the smallest seeded
    hash of their name (ties: name)."""
    names = np.asarray(names, dtype=str)
    groups = np.asarray(groups, dtype=str)
    if max_cells < 1:
        raise ValueError(f"max_cells must be >= 1, got {max_cells}")
    key = seeded_uniform((KEY_PREFIX + n for n in names), seed)
    _, grp = np.unique(groups, return_inverse=True)
    rows = np.arange(len(names))
    keep = _candidates(grp, key, max_cells)
    return _choose(rows[keep], grp[keep], key[keep], max_cells, lambda r: names[r].astype(object))


def subsample_summary(counts: np.ndarray, n_kept: int, max_cells: int, seed: int) -> dict[str, Any]:
    """What ``evals.json`` records about the subsample (``counts``: exported cells per group)."""
    counts = np.asarray(counts)
    counts = counts[counts > 0]
    return {"max_cells_per_perturbation": int(max_cells), "seed": int(seed), "unit": UNIT,
            "selection": f"per {UNIT}, the cells with the smallest SHA-256 of '{{seed}}:{KEY_PREFIX}"
                         "{obs_name}' (pairedscreen.train.eval_cells)",
            "n_cells": int(n_kept), "n_cells_exported": int(counts.sum()),
            "n_perturbations": int(len(counts)), "n_perturbations_capped": int((counts > max_cells).sum())}


def _is_categorical(elem: Any) -> bool:
    import h5py

    return isinstance(elem, h5py.Group) and elem.attrs.get("encoding-type") == "categorical"


def _group_codes(elem: Any) -> tuple[Callable[[int, int], np.ndarray], int]:
    """A reader of the unit column's group codes for rows ``[a, b)`` (equal codes = equal text, as the
    whole-table subsample compared ``astype(str)`` values) and the number of groups."""
    from anndata.io import read_elem

    if _is_categorical(elem):
        cats = pd.Index(read_elem(elem["categories"])).astype(str).to_numpy(dtype=object)
        _, gid = np.unique(np.append(cats, "nan"), return_inverse=True)   # code -1 (NaN) reads "nan"
        codes = elem["codes"]
        return (lambda a, b: gid[np.where((c := codes[a:b]) < 0, len(cats), c)]), int(gid.max()) + 1
    values = pd.Series(read_elem(elem)).astype(str).to_numpy(dtype=object)   # (not what exports write)
    uniq, inv = np.unique(values, return_inverse=True)
    return (lambda a, b: inv[a:b]), len(uniq)


def _pick(ds: Any, rows: np.ndarray, text: bool = False) -> np.ndarray:
    """``ds[rows]`` (rows ascending) read one block at a time."""
    src = ds.asstr() if text else ds
    parts = []
    for a in range(0, len(rows) and int(rows[-1]) + 1, h5obs.BLOCK):
        lo, hi = np.searchsorted(rows, [a, a + h5obs.BLOCK])
        if hi > lo:
            parts.append(np.asarray(src[a:min(a + h5obs.BLOCK, ds.shape[0])])[rows[lo:hi] - a])
    return np.concatenate(parts) if parts else np.asarray(src[0:0])


def _copy_categorical(src: Any, dst_parent: Any, name: str, rows: np.ndarray) -> None:
    """The categorical ``src`` restricted to ``rows``: every category (as ``obs.iloc[rows]`` keeps them),
    copied a block at a time."""
    g = dst_parent.create_group(name)
    codes = _pick(src["codes"], rows)
    ds = g.create_dataset("codes", data=codes, shape=codes.shape, dtype=codes.dtype)
    ds.attrs.update(dict(src["codes"].attrs))
    cats = src["categories"]
    out = g.create_dataset("categories", shape=cats.shape, dtype=h5obs.STR_DTYPE)
    for a in range(0, cats.shape[0], h5obs.BLOCK):
        out[a:a + h5obs.BLOCK] = cats.asstr()[a:a + h5obs.BLOCK]
    out.attrs.update(dict(cats.attrs))
    g.attrs.update(dict(src.attrs))


def write_eval_cells(export: PathLike, max_cells: int, seed: int, out: PathLike) -> dict[str, Any]:
    """Write the subsample of the cell-load export ``export`` to ``out`` (see the module docstring); returns
    its summary. Memory: one block of the export's obs and X at a time + the subsample (the candidates per
    perturbation are kept as the blocks go by: never a value per exported cell)."""
    import anndata as ad
    import h5py
    from anndata.io import read_elem

    if max_cells < 1:
        raise ValueError(f"max_cells must be >= 1, got {max_cells}")
    with h5py.File(export, "r") as f:
        g = f["obs"]
        idx_key = g.attrs["_index"]
        index = g[idx_key]
        n = index.shape[0]
        groups_of, n_groups = _group_codes(g[UNIT])
        counts = np.zeros(n_groups, np.int64)
        rows, grp, key = np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0)
        for a in range(0, n, h5obs.BLOCK):
            b = min(n, a + h5obs.BLOCK)
            k = seeded_uniform((KEY_PREFIX + s for s in index.asstr()[a:b]), seed)
            gb = groups_of(a, b)
            counts += np.bincount(gb, minlength=n_groups)
            rows, grp, key = (np.concatenate([rows, np.arange(a, b)]), np.concatenate([grp, gb]),
                              np.concatenate([key, k]))
            keep = _candidates(grp, key, max_cells)
            rows, grp, key = rows[keep], grp[keep], key[keep]

        def names_of(r: np.ndarray) -> np.ndarray:
            u, inv = np.unique(r, return_inverse=True)
            return np.asarray(index.asstr()[u], dtype=object)[inv]

        rows = _choose(rows, grp, key, max_cells, names_of)
        summary = subsample_summary(counts, len(rows), max_cells, seed)
        var = read_elem(f["var"])
        columns = [str(c) for c in g.attrs["column-order"]]
        categorical = [c for c in columns if _is_categorical(g[c])]
        plain = {}
        for c in columns:
            if c in categorical:
                continue
            e = g[c]
            if isinstance(e, h5py.Dataset) and e.attrs.get("encoding-type") == "array":
                plain[c] = _pick(e, rows)
            else:
                plain[c] = read_elem(e)[rows]
        obs = pd.DataFrame(plain, index=pd.Index(_pick(index, rows, text=True), dtype=object))
        if idx_key != "_index":
            obs.index.name = idx_key
    x = read_rows(export, rows, len(var))
    sub = ad.AnnData(X=x, obs=obs, var=var)
    sub.uns["eval_subsample"] = summary
    with atomic_output(out) as tmp:
        sub.write_h5ad(tmp)
        with h5py.File(export, "r") as f, h5py.File(tmp, "a") as fo:
            for c in categorical:
                _copy_categorical(f["obs"][c], fo["obs"], c, rows)
            fo["obs"].attrs["column-order"] = columns
    return summary


def read_summary(eval_cells: PathLike) -> dict[str, Any]:
    """The subsample's summary as :func:`write_eval_cells` stored it (``uns['eval_subsample']``)."""
    import h5py
    from anndata.io import read_elem

    with h5py.File(eval_cells, "r") as f:
        raw = read_elem(f["uns"]["eval_subsample"])
    return {k: (v.item() if hasattr(v, "item") else v) for k, v in raw.items()}
