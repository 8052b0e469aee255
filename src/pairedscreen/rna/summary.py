"""Per-library sufficient statistics for the RNA aggregates (map step of ``rna_merge``'s map-reduce).

Each library's ``results/rna/{lib}/summary.h5ad`` holds what the screen-wide pseudobulk and knockdown need,
so the aggregate job combines libraries without ever holding the screen's cells (memory bounded by one
library in the map, by the perturbations x genes tables in the reduce):

- obs = the perturbations with usable cells in the library (:func:`pairedscreen.expression.usable_cells`,
  first-appearance order), ``n_cells``, ``is_control``;
- ``layers['counts']``: summed counts (int64 CSR); ``X``: summed log1p CP10k (float64 CSR), so that the
  screen's pseudobulk mean is ``sum over libraries / n_cells``;
- ``uns['control_totals']``: total counts of the library's usable control cells, in cell order;
- ``uns['targets']`` (a table): the knockdown target's raw count in each usable cell that needs it, in cell
  order: every perturbed cell of a targeting perturbation at its own target (zeros included, with the cell's
  total count), and every usable control cell at every target gene where the count is not zero (``rank`` =
  the cell's position among the library's control cells; zeros are implied).

:func:`combine_pseudobulk` and :func:`combine_knockdown` are the reduce step; they equal
:func:`pairedscreen.rna.pseudobulk.pseudobulk` and :func:`pairedscreen.rna.knockdown.knockdown_table` on
the merged cells (counts and knockdown statistics exactly, the mean log1p CP10k within float64 summation
order, ``tests/test_rna_summary.py``).
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp

from pairedscreen.expression import log1p_cp10k, row_blocks, usable_cells
from pairedscreen.rna.knockdown import COLUMNS as KD_COLUMNS
from pairedscreen.rna.knockdown import adjust, gene_column, knockdown_row, targeting_pairs
from pairedscreen.rna.pseudobulk import row_totals

PathLike = str | os.PathLike


def _sum_rows(onehot: sp.csr_matrix, x: sp.csr_matrix, *, log: bool) -> np.ndarray:
    """``onehot @ x`` (dense float64, perturbations x genes) one row block of ``x`` at a time: the float
    copy of the counts (and its log1p CP10k) spans a block, never the library."""
    out = np.zeros((onehot.shape[0], x.shape[1]), np.float64)
    for s, e in row_blocks(x.indptr):
        lo, hi = x.indptr[s], x.indptr[e]
        xf = sp.csr_matrix((x.data[lo:hi].astype(np.float64), x.indices[lo:hi], x.indptr[s:e + 1] - lo),
                           shape=(e - s, x.shape[1]))
        if log:
            log1p_cp10k(xf, inplace=True)
        part = (onehot[:, s:e] @ xf).tocoo()
        out[part.row, part.col] += part.data   # a product in CSR form has no duplicate entries
    return out


def library_summary(cells: ad.AnnData, registry: pd.DataFrame) -> ad.AnnData:
    """One library's called cells (X = counts) -> its summary AnnData (see the module docstring)."""
    keep = usable_cells(cells)
    pert = cells.obs["perturbation"].astype(str).to_numpy()[keep]
    is_ctrl = cells.obs["is_control"].to_numpy(dtype=bool)[keep] if "is_control" in cells.obs else \
        np.zeros(len(pert), bool)
    present = list(pd.unique(pert))
    codes = pd.Index(present).get_indexer(pert)
    onehot = sp.csr_matrix((np.ones(len(codes)), (codes, np.arange(len(codes)))),
                           shape=(len(present), len(codes)))
    x = sp.csr_matrix(cells.X)
    if not keep.all():
        x = x[keep]
    counts = _sum_rows(onehot, x, log=False)
    logsum = _sum_rows(onehot, x, log=True)
    ctrl_of = {p: bool(c) for p, c in zip(pert, is_ctrl, strict=True)}
    obs = pd.DataFrame({"n_cells": np.asarray(onehot.sum(axis=1)).ravel().astype(np.int64),
                        "is_control": [ctrl_of[p] for p in present]},
                       index=pd.Index(present, name="perturbation_id"))
    out = ad.AnnData(X=sp.csr_matrix(logsum), obs=obs, var=cells.var.copy())
    out.layers["counts"] = sp.csr_matrix(np.rint(counts).astype(np.int64))
    del counts, logsum
    tot = row_totals(x)
    out.uns["control_totals"] = tot[is_ctrl].astype(np.int64)
    out.uns["targets"] = _target_values(x, tot, pert, is_ctrl, cells.var, registry)
    out.uns["library"] = str(cells.obs["library"].iloc[0]) if cells.n_obs and "library" in cells.obs else ""
    return out


def _target_values(x: sp.csr_matrix, tot: np.ndarray, pert: np.ndarray, is_ctrl: np.ndarray,
                   var: pd.DataFrame, registry: pd.DataFrame) -> dict[str, np.ndarray]:
    """The knockdown values of one library, as compact arrays (``kind`` 0 = perturbed cell at its own
    target, 1 = control cell at a target gene; ``pert`` / ``gene`` index ``perts`` / ``genes``)."""
    pairs = targeting_pairs(registry)
    cols = {g: gene_column(var, g) for g in sorted({g for _, g in pairs})}
    genes = [g for g, j in cols.items() if j >= 0]
    gpos = {g: i for i, g in enumerate(genes)}
    perts = [pid for pid, g in pairs if g in gpos]
    parts: list[tuple[int, int, int, np.ndarray, np.ndarray, np.ndarray]] = []
    for k, pid in enumerate(perts):
        g = dict(pairs)[pid]
        rows = np.flatnonzero(pert == pid)
        if len(rows):
            vals = x[rows][:, [cols[g]]].toarray().ravel()
            parts.append((0, k, gpos[g], np.arange(len(rows)), vals, tot[rows]))
    ctrl_rows = np.flatnonzero(is_ctrl)
    if len(ctrl_rows) and genes:
        sub = sp.csc_matrix(x[ctrl_rows][:, [cols[g] for g in genes]])
        sub.eliminate_zeros()
        for i in range(len(genes)):
            lo, hi = sub.indptr[i], sub.indptr[i + 1]
            if hi > lo:
                ranks = sub.indices[lo:hi]
                parts.append((1, -1, i, ranks, sub.data[lo:hi], tot[ctrl_rows][ranks]))
    out: dict[str, np.ndarray] = {
        "kind": np.concatenate([np.full(len(p[3]), p[0], np.int8) for p in parts]) if parts else
        np.zeros(0, np.int8)}
    for name, i, dtype in (("pert", 1, np.int32), ("gene", 2, np.int32)):
        out[name] = np.concatenate([np.full(len(p[3]), p[i], dtype) for p in parts]) if parts else \
            np.zeros(0, dtype)
    for name, i in (("rank", 3), ("count", 4), ("total", 5)):
        out[name] = np.concatenate([np.asarray(p[i]).astype(np.int64) for p in parts]) if parts else \
            np.zeros(0, np.int64)
    out["perts"] = np.asarray(perts, dtype=str)
    out["genes"] = np.asarray(genes, dtype=str)
    return out


def write_summary(summary: ad.AnnData, path: PathLike) -> None:
    """Write a library summary atomically."""
    from pairedscreen.io import atomic_output

    with atomic_output(path) as tmp:
        summary.write_h5ad(tmp, compression="gzip")


# ---------------------------------------------------------------------------------------------- reduce
def combine_pseudobulk(summaries: Sequence[PathLike], *, order: Sequence[str] | None = None,
                       controls: set[str] | None = None) -> ad.AnnData:
    """Perturbations x genes pseudobulk from the libraries' summaries, read one at a time: the same table
    as :func:`pairedscreen.rna.pseudobulk.pseudobulk` on the merged cells (layers['counts'] summed,
    X = mean log1p CP10k, obs n_cells, is_control)."""
    rows: dict[str, int] = {}
    var = None
    counts = logsum = None
    n = np.zeros(0, np.int64)
    ctrl_seen: dict[str, bool] = {}
    for path in summaries:
        s = ad.read_h5ad(path)
        if var is None:
            var = s.var.copy()
        elif not s.var_names.equals(var.index):
            raise ValueError(f"{path}: genes differ from the first library's summary; every library must be "
                             "counted against the same reference")
        new = [p for p in s.obs_names if p not in rows]
        for p in new:
            rows[p] = len(rows)
        grow = len(rows) - (0 if counts is None else counts.shape[0])
        if counts is None:
            counts = np.zeros((len(rows), s.n_vars), np.int64)
            logsum = np.zeros((len(rows), s.n_vars), np.float64)
        elif grow:
            counts = np.vstack([counts, np.zeros((grow, s.n_vars), np.int64)])
            logsum = np.vstack([logsum, np.zeros((grow, s.n_vars), np.float64)])
        n = np.concatenate([n, np.zeros(grow, np.int64)])
        idx = np.asarray([rows[p] for p in s.obs_names], dtype=np.int64)
        _add_rows(counts, idx, sp.csr_matrix(s.layers["counts"]))
        _add_rows(logsum, idx, sp.csr_matrix(s.X))
        n[idx] += s.obs["n_cells"].to_numpy(np.int64)
        for p, c in zip(s.obs_names, s.obs["is_control"].to_numpy(bool), strict=True):
            ctrl_seen[p] = ctrl_seen.get(p, False) or bool(c)
        del s
    present = list(rows)
    if order is not None:
        rank = {p: i for i, p in enumerate(order)}
        present.sort(key=lambda p: (rank.get(p, len(rank)), p))
    sel = np.asarray([rows[p] for p in present], dtype=np.int64)
    if controls is None:
        controls = {p for p, c in ctrl_seen.items() if c}
    nn = n[sel] if len(sel) else n
    obs = pd.DataFrame({"n_cells": nn.astype(np.int64), "is_control": [p in controls for p in present]},
                       index=pd.Index(present, name="perturbation_id"))
    if var is None:
        raise ValueError("no library summaries to combine")
    x = logsum[sel] * (1.0 / np.maximum(nn, 1))[:, None]   # as diags(1 / n) @ sums
    out = ad.AnnData(X=x, obs=obs, var=var)
    out.layers["counts"] = counts[sel]
    return out


def _add_rows(dense: np.ndarray, idx: np.ndarray, x: sp.csr_matrix) -> None:
    for k, r in enumerate(idx):
        lo, hi = x.indptr[k], x.indptr[k + 1]
        dense[r, x.indices[lo:hi]] += x.data[lo:hi]


def combine_knockdown(summaries: Sequence[PathLike], registry: pd.DataFrame, *, test: str = "mannwhitney",
                      min_cells: int = 3) -> pd.DataFrame:
    """The knockdown table of :func:`pairedscreen.rna.knockdown.knockdown_table` from the libraries'
    summaries, read one at a time: each targeting perturbation's cells against every usable control cell of
    the screen, the values rebuilt in the merged cell order (so the statistics are the whole-matrix ones).
    Held in memory: the perturbed cells' target counts and totals and the control cells' nonzero target
    counts (a few int64 per cell), never a matrix."""
    pairs = targeting_pairs(registry)
    pert_vals: dict[str, list[tuple[np.ndarray, np.ndarray]]] = {}
    ctrl_vals: dict[str, list[tuple[np.ndarray, np.ndarray]]] = {}
    ctrl_totals: list[np.ndarray] = []
    n_by_pert: dict[str, int] = {}
    measured: set[str] = set()
    offset = 0
    for path in summaries:
        s = ad.read_h5ad(path)
        t = s.uns["targets"]
        perts, genes = [str(v) for v in t["perts"]], [str(v) for v in t["genes"]]
        measured |= set(genes)
        kind, pcode, gcode = (np.asarray(t[k]) for k in ("kind", "pert", "gene"))
        rank, count, total = (np.asarray(t[k], dtype=np.int64) for k in ("rank", "count", "total"))
        for k, pid in enumerate(perts):
            sel = np.flatnonzero((kind == 0) & (pcode == k))
            if len(sel):
                sel = sel[np.argsort(rank[sel], kind="stable")]
                pert_vals.setdefault(pid, []).append((count[sel], total[sel]))
        for i, g in enumerate(genes):
            sel = np.flatnonzero((kind == 1) & (gcode == i))
            if len(sel):
                ctrl_vals.setdefault(g, []).append((rank[sel] + offset, count[sel]))
        totals = np.asarray(s.uns["control_totals"], dtype=np.int64)
        ctrl_totals.append(totals)
        offset += len(totals)
        for p, k in zip(s.obs_names, s.obs["n_cells"].to_numpy(np.int64), strict=True):
            n_by_pert[str(p)] = n_by_pert.get(str(p), 0) + int(k)
        del s, t
    b_tot = np.concatenate(ctrl_totals) if ctrl_totals else np.zeros(0, np.int64)
    rows = []
    for pid, gene in pairs:
        n_pert = n_by_pert.get(pid, 0)
        if gene not in measured:
            rows.append(knockdown_row(pid, gene, None, None, None, None, n_cells=n_pert,
                                      n_control=len(b_tot), test=test, min_cells=min_cells))
            continue
        got = pert_vals.get(pid, [])
        a_raw = np.concatenate([c for c, _ in got]) if got else np.zeros(0, np.int64)
        a_tot = np.concatenate([t for _, t in got]) if got else np.zeros(0, np.int64)
        b_raw = np.zeros(len(b_tot), np.int64)
        for pos, cnt in ctrl_vals.get(gene, []):
            b_raw[pos] = cnt
        rows.append(knockdown_row(pid, gene, a_raw, a_tot, b_raw, b_tot, n_cells=n_pert,
                                  n_control=len(b_tot), test=test, min_cells=min_cells))
    return adjust(pd.DataFrame(rows).reindex(columns=KD_COLUMNS))
