"""Per-library sufficient statistics for the RNA aggregates (map step of ``rna_merge``'s map-reduce).

Each library's ``results/rna/{lib}/summary.h5ad`` holds what the screen-wide pseudobulk and knockdown need,
so the aggregate job combines libraries without ever holding the screen's cells (memory bounded by one
library in the map, by the perturbations x genes tables in the reduce):

- obs = the perturbations with usable cells in the library (:func:`pairedscreen.expression.usable_cells`,
  first-appearance order), ``n_cells``, ``is_control``;
- ``layers['counts']``: summed counts (int64 CSR); ``X``: summed log1p CP10k (float64 CSR), so that the
  screen's pseudobulk mean is ``sum over libraries / n_cells``;
- ``uns['control_totals']``: total counts of the library's usable control cells, in cell order;
- ``uns['targets']``: the knockdown target's raw count in each usable cell that needs it, in cell order:
  every perturbed cell of a targeting perturbation at its own target (zeros included, with the cell's
  total count), and every usable control cell at every target gene where the count is not zero (with the
  cell's position among the library's control cells; zeros are implied), grouped per perturbation and per
  gene (CSR-like pointers) so the reduce reads one target at a time.

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
    """The knockdown values of one library in two CSR-like groups, so the reduce can read one target at a
    time: ``perts`` (targeting perturbations whose target is measured) with ``pert_ptr`` into
    ``pert_count`` / ``pert_total`` (each usable cell of the perturbation, cell order: its target's count
    and its total count), and ``genes`` (measured target genes) with ``gene_ptr`` into ``ctrl_rank`` /
    ``ctrl_count`` (usable control cells with a nonzero count of the gene: position among the library's
    control cells, count)."""
    pairs = targeting_pairs(registry)
    cols = {g: gene_column(var, g) for g in sorted({g for _, g in pairs})}
    genes = [g for g, j in cols.items() if j >= 0]
    target_of = dict(pairs)
    perts = [pid for pid, g in pairs if cols[g] >= 0]
    counts, totals, pert_ptr = [], [], [0]
    for pid in perts:
        rows = np.flatnonzero(pert == pid)
        counts.append(x[rows][:, [cols[target_of[pid]]]].toarray().ravel().astype(np.int64))
        totals.append(tot[rows].astype(np.int64))
        pert_ptr.append(pert_ptr[-1] + len(rows))
    ctrl_rows = np.flatnonzero(is_ctrl)
    if len(ctrl_rows) and genes:
        sub = sp.csc_matrix(x[ctrl_rows][:, [cols[g] for g in genes]])
        sub.eliminate_zeros()
        ranks, ccounts, gene_ptr = sub.indices.astype(np.int64), sub.data.astype(np.int64), sub.indptr
    else:
        ranks, ccounts, gene_ptr = np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(len(genes) + 1)
    empty = np.zeros(0, np.int64)
    return {"perts": np.asarray(perts, dtype=str), "pert_ptr": np.asarray(pert_ptr, np.int64),
            "pert_count": np.concatenate(counts) if counts else empty,
            "pert_total": np.concatenate(totals) if totals else empty,
            "genes": np.asarray(genes, dtype=str), "gene_ptr": np.asarray(gene_ptr, np.int64),
            "ctrl_rank": ranks, "ctrl_count": ccounts}


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
    summaries: each targeting perturbation's cells against every usable control cell of the screen, the
    values rebuilt in the merged cell order (so the statistics are the whole-matrix ones). One target at a
    time: its perturbed cells' and the control cells' values are sliced from each summary file, so memory
    is the screen's control cells (two int64 each) plus one perturbation's cells, never a matrix."""
    import h5py
    from anndata.io import read_elem

    pairs = targeting_pairs(registry)
    files = [h5py.File(p, "r") for p in summaries]
    try:
        libs, ctrl_totals, n_by_pert = [], [], {}
        for f in files:
            t = f["uns"]["targets"]
            libs.append({"t": t, "perts": {str(v): k for k, v in enumerate(read_elem(t["perts"]))},
                         "genes": {str(v): k for k, v in enumerate(read_elem(t["genes"]))},
                         "pert_ptr": t["pert_ptr"][()], "gene_ptr": t["gene_ptr"][()],
                         "offset": sum(len(c) for c in ctrl_totals)})
            ctrl_totals.append(np.asarray(f["uns"]["control_totals"][()], dtype=np.int64))
            obs = read_elem(f["obs"])
            for p, k in zip(obs.index.astype(str), obs["n_cells"].to_numpy(np.int64), strict=True):
                n_by_pert[p] = n_by_pert.get(p, 0) + int(k)
        b_tot = np.concatenate(ctrl_totals) if ctrl_totals else np.zeros(0, np.int64)
        del ctrl_totals
        measured = {g for lib in libs for g in lib["genes"]}
        rows = []
        for pid, gene in pairs:
            n_pert = n_by_pert.get(pid, 0)
            if gene not in measured:
                rows.append(knockdown_row(pid, gene, None, None, None, None, n_cells=n_pert,
                                          n_control=len(b_tot), test=test, min_cells=min_cells))
                continue
            a_raw, a_tot = [], []
            b_raw = np.zeros(len(b_tot), np.int64)
            for lib in libs:
                t = lib["t"]
                if pid in lib["perts"]:
                    k = lib["perts"][pid]
                    lo, hi = int(lib["pert_ptr"][k]), int(lib["pert_ptr"][k + 1])
                    a_raw.append(t["pert_count"][lo:hi])
                    a_tot.append(t["pert_total"][lo:hi])
                if gene in lib["genes"]:
                    i = lib["genes"][gene]
                    lo, hi = int(lib["gene_ptr"][i]), int(lib["gene_ptr"][i + 1])
                    if hi > lo:
                        b_raw[t["ctrl_rank"][lo:hi] + lib["offset"]] = t["ctrl_count"][lo:hi]
            a_raw_arr = np.concatenate(a_raw).astype(np.int64) if a_raw else np.zeros(0, np.int64)
            a_tot_arr = np.concatenate(a_tot).astype(np.int64) if a_tot else np.zeros(0, np.int64)
            rows.append(knockdown_row(pid, gene, a_raw_arr, a_tot_arr, b_raw, b_tot, n_cells=n_pert,
                                      n_control=len(b_tot), test=test, min_cells=min_cells))
        return adjust(pd.DataFrame(rows).reindex(columns=KD_COLUMNS))
    finally:
        for f in files:
            f.close()
