"""RNA for Arc Institute's cell-load: ``results/train/rna/{cell_type}.h5ad`` + ``cell_load.toml``.

The h5ad holds the cells behind the pseudobulk (QC-passing singlets with one assigned registry perturbation,
controls included: :func:`pairedscreen.expression.usable_cells`):

- ``X``: raw integer counts (CSR, as counted); ``var``: the genes (``gene_id``, ``highly_variable``);
- ``obsm['X_hvg']``: log1p CP10k (:func:`pairedscreen.expression.log1p_cp10k`) of the ``train.n_hvg``
  genes with the highest variance of log1p CP10k over the exported cells (float32, dense);
- ``obs``: ``perturbation`` (target gene symbol for CRISPR targets, ``train.control_label`` for controls),
  ``perturbation_id`` (registry id), ``guide_id``, ``gem_group`` (= library), ``library``, ``batch``,
  ``cell_type``, ``is_control``, ``split``, ``batch_split``, ``barcode`` (categoricals, as cell-load
  reads them), ``residual_expression`` and ``cell_residual_expression`` (cell-load's on-target knockdown
  residuals, :mod:`pairedscreen.train.residuals`; ``var['gene_name']`` the symbols its filter looks up);
- rows sorted by (cell_type, perturbation) so each pair is contiguous (cell-load's consecutive loading).

The TOML names the export folder (absolute path: cell-load resolves dataset paths from its working
directory), trains on the dataset and lists the held-out perturbations (``val``/``test`` of splits.tsv) under
``[fewshot."pairedscreen.{cell_type}"]``.

Memory: the export is streamed from the per-library cells files (``results/rna/{lib}/cells.h5ad``), never
the merged one, and no step holds the screen's obs as Python objects: :mod:`pairedscreen.train.rna_obs`
reads one library's obs at a time and keeps a few integers per cell (export order, category codes; the
categories are merged from per-library sorted runs), then one library at a time its exported rows are read
(:func:`read_rows`), written into their places in the file's CSR arrays (its cell ids into the obs index)
and added to the HVG moments (:class:`LogNormMoments`: per-gene sums of log1p CP10k and its square, so the
gene choice needs no whole matrix); ``obsm['X_hvg']`` is then filled from the written X one row block at a
time and the obs parquet from the written obs. Peak ~ one library's exported counts + one block + a few
bytes per cell, whatever the number of libraries (see ``benchmarks/train_export.py`` and
``benchmarks/atlas_scale.py``).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp

from pairedscreen.expression import BLOCK_NNZ, log1p_cp10k, row_blocks
from pairedscreen.io import atomic_output
from pairedscreen.train import h5obs, residuals, rna_obs

PathLike = str | os.PathLike
DATASET = "pairedscreen"

def perturbation_labels(registry: pd.DataFrame, control_label: str) -> dict[str, str]:
    """Registry id -> the label cell-load sees: the target gene symbol (the id when it has none), the
    control label for controls."""
    out = {}
    for r in registry.itertuples():
        gene = str(getattr(r, "target_gene", "") or "")
        pid = str(r.perturbation_id)
        out[pid] = control_label if bool(r.is_control) else (gene or pid)
    return out


class LogNormMoments:
    """Per-gene sums of log1p CP10k (:func:`pairedscreen.expression.log1p_cp10k`) and of its square over the
    count rows added so far: the HVG statistic accumulated one row block at a time, so it never needs the
    whole matrix (rows may come in any order and from any number of files)."""

    def __init__(self, n_genes: int) -> None:
        self.n = 0
        self.s1 = np.zeros(n_genes)
        self.s2 = np.zeros(n_genes)

    def add(self, counts: sp.spmatrix) -> None:
        """Add the rows of a count block (cells x genes)."""
        blk = log1p_cp10k(counts)
        self.n += blk.shape[0]
        self.s1 += np.asarray(blk.sum(axis=0)).ravel()
        self.s2 += np.asarray(blk.multiply(blk).sum(axis=0)).ravel()

    def variance(self) -> np.ndarray:
        """Per-gene variance (ddof 0) of log1p CP10k over the rows added."""
        mean = self.s1 / max(self.n, 1)
        return self.s2 / max(self.n, 1) - mean**2

    def top(self, n_top: int) -> np.ndarray:
        """Indices (sorted) of the ``n_top`` genes with the highest variance (ties: lower gene index)."""
        var = self.variance()
        order = np.lexsort((np.arange(len(var)), -var))
        return np.sort(order[: min(n_top, len(var))])


def hvg_variance(x: sp.csr_matrix, n_top: int, block_nnz: int | None = None) -> np.ndarray:
    """Indices (sorted) of the ``n_top`` genes with the highest variance of log1p CP10k over the rows of
    ``x`` (:class:`LogNormMoments`, one row block at a time; ties: lower gene index first)."""
    m = LogNormMoments(x.shape[1])
    for a, b in row_blocks(x.indptr, block_nnz):
        m.add(x[a:b])
    return m.top(n_top)


def read_rows(h5ad: PathLike, rows: np.ndarray, n_vars: int, block_nnz: int = 1 << 20) -> sp.csr_matrix:
    """Rows ``rows`` (in that order) of the h5ad's CSR ``X``, streamed from the file one block of source rows
    at a time into the output arrays: peak ~ the output matrix + one block + the file's row pointers (as
    stored; no sorted copy, then a permuted copy, and nothing else per source row: a subsample of a long
    file costs its rows, not the file's). Files whose X is not CSR are read through anndata."""
    import h5py

    rows = np.asarray(rows, dtype=np.int64)
    with h5py.File(h5ad, "r") as f:
        g = f["X"]
        if not isinstance(g, h5py.Group) or g.attrs.get("encoding-type") != "csr_matrix":
            a = ad.read_h5ad(h5ad, backed="r")
            return sp.csr_matrix(a.X[rows]) if len(rows) else sp.csr_matrix((0, n_vars), dtype=np.int32)
        indptr = g["indptr"][:]
        if indptr.dtype.itemsize < 8 and int(indptr[-1]) > np.iinfo(indptr.dtype).max - 2 * block_nnz:
            indptr = indptr.astype(np.int64)   # (row_blocks adds block_nnz to a row pointer)
        start = indptr[rows].astype(np.int64)
        lens = indptr[rows + 1].astype(np.int64) - start
        out_ptr = np.zeros(len(rows) + 1, np.int64)
        np.cumsum(lens, out=out_ptr[1:])
        data = np.empty(int(out_ptr[-1]), dtype=g["data"].dtype)
        indices = np.empty(int(out_ptr[-1]), dtype=g["indices"].dtype)
        by_row = np.argsort(rows, kind="stable")       # output positions in source row order
        sorted_rows = rows[by_row]
        for a, b in row_blocks(indptr, block_nnz):
            lo, hi = np.searchsorted(sorted_rows, [a, b])
            if hi == lo:
                continue
            sel = by_row[lo:hi]                         # output positions of the rows in [a, b)
            base = int(indptr[a])
            blk_data = g["data"][base:int(indptr[b])]
            blk_ind = g["indices"][base:int(indptr[b])]
            seg = lens[sel]
            total = int(seg.sum())
            if not total:
                continue
            within = np.arange(total) - np.repeat(np.cumsum(seg) - seg, seg)
            src_pos = np.repeat(start[sel] - base, seg) + within
            dst_pos = np.repeat(out_ptr[sel], seg) + within
            data[dst_pos] = blk_data[src_pos]
            indices[dst_pos] = blk_ind[src_pos]
            del blk_data, blk_ind, src_pos, dst_pos, within
    return sp.csr_matrix((data, indices, out_ptr), shape=(len(rows), n_vars))


def _source_files(rna_cells: PathLike | Sequence[PathLike]) -> list[PathLike]:
    if isinstance(rna_cells, str | os.PathLike):
        return [rna_cells]
    return list(rna_cells)


def _runs(pos: np.ndarray) -> list[tuple[int, int]]:
    """Maximal runs ``[i, j)`` of consecutive values in ``pos`` (increasing positions)."""
    if not len(pos):
        return []
    cut = np.flatnonzero(np.diff(pos) != 1) + 1
    starts, stops = np.r_[0, cut], np.r_[cut, len(pos)]
    return list(zip(starts.tolist(), stops.tolist(), strict=True))


@dataclass(frozen=True)
class ExportSummary:
    """What :func:`export_rna` wrote, without a per-cell table: the number of cells, the var (with
    ``highly_variable``) and the HVG genes of ``obsm['X_hvg']``."""

    n_obs: int
    var: pd.DataFrame
    hvg_genes: np.ndarray

    @property
    def n_vars(self) -> int:
        return len(self.var)


def export_rna(rna_cells: PathLike | Sequence[PathLike], registry: pd.DataFrame, splits: pd.DataFrame,
               holdout: pd.DataFrame, params: Mapping[str, Any], out: PathLike,
               obs_out: PathLike | None = None, block_nnz: int | None = None) -> ExportSummary:
    """Write ``results/train/rna/{cell_type}.h5ad`` (see the module docstring) from the per-library cells
    files (``results/rna/{lib}/cells.h5ad``, in sheet order; one merged file works the same) and, with
    ``obs_out``, its obs as ``{cell_type}.obs.parquet`` (``cell_id`` + the obs columns, same rows: the
    Croissant record set). Returns the number of cells, the var and the HVG genes (the counts and the obs go
    to the files only).

    Streaming: :func:`pairedscreen.train.rna_obs.plan_export` reads one library's obs at a time and keeps a
    few integers per cell (the export order, codes); pass 1 reads one library at a time (its exported rows,
    in export order), writes them into their runs of the file's CSR arrays, its cell ids into the obs index
    and its barcodes' codes, and adds the rows to the HVG moments (:class:`LogNormMoments`); pass 2 reads the
    written X back one row block at a time into ``obsm['X_hvg']``; the parquet is written from the h5ad's
    obs a row block at a time. Peak ~ one library's exported counts + one block + a few bytes per cell,
    whatever the number of libraries."""
    import h5py
    from anndata.io import write_elem

    files = _source_files(rna_cells)
    if not files:
        raise ValueError("no RNA cells files to export")
    labels = perturbation_labels(registry, str(params["control_label"]))
    with contextlib.ExitStack() as stack:
        obs_tmp = stack.enter_context(atomic_output(obs_out)) if obs_out is not None else None
        tmp = stack.enter_context(atomic_output(out))   # exits first: the h5ad lands, then the parquet
        scratch = Path(tmp).parent / "scratch"
        scratch.mkdir()
        plan = rna_obs.plan_export(files, registry, labels, splits, holdout, params, scratch)
        var, n, n_vars, out_ptr = plan.var, plan.n, len(plan.var), plan.out_ptr
        nnz = int(out_ptr[-1])
        # the index dtype scipy gives the same matrix (int32 while everything fits)
        idx_dtype = np.int32 if max(nnz, n, n_vars) <= np.iinfo(np.int32).max else np.int64
        n_top = int(params["n_hvg"])
        var["highly_variable"] = False   # set after pass 1 (the file's var is rewritten then)
        adata = ad.AnnData(obs=pd.DataFrame(index=pd.Index([], dtype=object)), var=var)
        adata.uns["log1p"] = {"base": None}   # obsm X_hvg is natural-log log1p (as scanpy records it)
        adata.uns["pairedscreen"] = {"control_label": str(params["control_label"]),
                                     "cell_type": str(params["cell_type"]),
                                     "normalization": "obsm['X_hvg'] = log1p(counts / total * 1e4), HVG "
                                                      "columns"}
        moments = LogNormMoments(n_vars)
        adata.write_h5ad(tmp)   # var, uns; obs, X and obsm['X_hvg'] are streamed in below
        barcode_width = plan.width("barcode")
        with h5py.File(tmp, "a") as fh, open(scratch / "barcodes.bin", "w+b") as bc_file:
            del fh["obs"]
            obs_grp, index_ds = h5obs.open_dataframe(fh, "obs", rna_obs.OBS_COLUMNS, n)
            plan.write_registry_columns(obs_grp)
            text = plan.new_text_columns(obs_grp)   # codes filled library by library
            bc_file.truncate(n * barcode_width)
            dtype = None
            for lib in plan.libs:
                if not lib.n:
                    continue
                cells = plan.library_cells(lib)
                mine = cells.pos
                bc_bytes = h5obs.utf8(cells.barcodes).astype(f"S{barcode_width}")
                x = read_rows(lib.path, cells.rows, n_vars, block_nnz or BLOCK_NNZ)
                if x.dtype.kind == "f" and x.nnz and not np.all(np.mod(x.data, 1) == 0):
                    raise ValueError(f"{lib.path}: X is not integer counts; the cell-load export needs raw "
                                     "counts")
                if dtype is None:
                    dtype = x.dtype
                    g = fh.create_group("X")
                    g.attrs.update({"encoding-type": "csr_matrix", "encoding-version": "0.1.0",
                                    "shape": np.array([n, n_vars])})
                    g.create_dataset("indptr", data=out_ptr.astype(idx_dtype))
                    data = g.create_dataset("data", shape=(nnz,), dtype=dtype)
                    indices = g.create_dataset("indices", shape=(nnz,), dtype=idx_dtype)
                elif x.dtype != dtype:
                    raise ValueError(f"{lib.path}: X dtype {x.dtype} differs from the other libraries' "
                                     f"{dtype}")
                for a, b in row_blocks(x.indptr, block_nnz):
                    moments.add(x[a:b])
                for i, j in _runs(mine):   # rows of this library that are contiguous in the export
                    p = int(mine[i])
                    index_ds[p:p + j - i] = cells.names[i:j]
                    for name, ds_codes in text.items():
                        ds_codes[p:p + j - i] = cells.codes[rna_obs.FROM_TEXT[name]][i:j]
                    bc_file.seek(p * barcode_width)
                    bc_file.write(bc_bytes[i:j].tobytes())
                    lo, hi = int(out_ptr[p]), int(out_ptr[p] + x.indptr[j] - x.indptr[i])
                    if hi > lo:
                        data[lo:hi] = x.data[x.indptr[i]:x.indptr[j]]
                        indices[lo:hi] = x.indices[x.indptr[i]:x.indptr[j]]
                del x, cells, bc_bytes
            if dtype is None:   # no exported cell
                write_elem(fh, "X", sp.csr_matrix((0, n_vars), dtype=np.int32))
            genes = moments.top(n_top)
            adata.var["highly_variable"] = np.isin(np.arange(n_vars), genes)
            hvg_genes = np.asarray(adata.var_names[genes], dtype=str)
            write_elem(fh, "var", adata.var)
            write_elem(fh["uns"], "X_hvg_genes", hvg_genes)
            # obsm['X_hvg'] from the X just written, one row block at a time, stored as anndata stores a
            # dense obsm array
            ds = fh["obsm"].create_dataset("X_hvg", shape=(n, len(genes)), dtype="float32",
                                           chunks=(max(1, min(n, 4096)), max(1, len(genes))))
            ds.attrs["encoding-type"] = "array"
            ds.attrs["encoding-version"] = "0.2.0"
            xg = fh["X"]
            data, indices = xg["data"], xg["indices"]
            for a, b in row_blocks(out_ptr, block_nnz):
                lo, hi = int(out_ptr[a]), int(out_ptr[b])
                blk = sp.csr_matrix((data[lo:hi], indices[lo:hi], out_ptr[a:b + 1] - lo),
                                    shape=(b - a, n_vars))
                ds[a:b] = log1p_cp10k(blk)[:, genes].toarray()
            # cell-load's on-target knockdown residuals (what its filter computes from this file)
            residuals.write_knockdown_residuals(fh, control_label=str(params["control_label"]),
                                                block_nnz=block_nnz)
        del plan, out_ptr   # the per-cell codes and positions: not needed for the parquet
        if obs_tmp is not None:
            write_obs_parquet(tmp, scratch / "barcodes.bin", barcode_width, obs_tmp)
    return ExportSummary(n_obs=n, var=adata.var, hvg_genes=hvg_genes)


def write_obs_parquet(h5ad: PathLike, barcodes: Path, width: int, out: PathLike,
                      block: int | None = None) -> None:
    """``{cell_type}.obs.parquet`` (``cell_id`` + the obs columns as text, ``is_control`` bool: what
    ``DataFrame.to_parquet`` writes of the export's obs table, same schema and pandas metadata) from the
    export's obs, ``block`` rows at a time (one row group each; Arrow arrays taken from the categories, no
    pandas table); the barcodes from their scratch file (fixed ``width`` bytes, export order)."""
    import h5py
    import pyarrow as pa
    import pyarrow.parquet as pq

    block = block or h5obs.BLOCK
    writer, schema = None, None
    with h5py.File(h5ad, "r") as f:
        g = f["obs"]
        n = g["_index"].shape[0]
        cats = {c: pa.array(g[c]["categories"].asstr()[:], type=pa.string()) for c in rna_obs.OBS_COLUMNS
                if c not in ("is_control", "barcode")}
        bc = h5obs.Run.on_file(barcodes, n, np.dtype(f"S{width}"))
        try:
            for a in range(0, n, block):
                b = min(n, a + block)
                cols = {"cell_id": pa.array(g["_index"].asstr()[a:b], type=pa.string())}
                for c in rna_obs.OBS_COLUMNS:
                    if c == "is_control":
                        cols[c] = pa.array(g[c][a:b])
                    elif c == "barcode":
                        cols[c] = pa.array(bc.read(a, b - a)).cast(pa.string())
                    else:
                        cols[c] = cats[c].take(pa.array(g[c]["codes"][a:b]))
                if schema is None:   # the schema (pandas metadata included) to_parquet gives such a table
                    head = pa.table({k: v.slice(0, 1) for k, v in cols.items()}).to_pandas()
                    schema = pa.Schema.from_pandas(head, preserve_index=False)
                    writer = pq.ParquetWriter(out, schema, compression="snappy")
                writer.write_table(pa.Table.from_arrays(list(cols.values()), schema=schema))
        finally:
            if writer is not None:
                writer.close()
    if writer is None:
        raise ValueError(f"{h5ad}: no exported cell to write to {out}")


def _toml_list(values: list[str]) -> str:
    return "[" + ", ".join('"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"' for v in values) + "]"


def cell_load_toml(rna_dir: PathLike, splits: pd.DataFrame, registry: pd.DataFrame,
                   params: Mapping[str, Any]) -> str:
    """The cell-load experiment TOML: the export folder as dataset ``pairedscreen``, trained on, with the
    held-out perturbations (labels as in the h5ad's ``perturbation``) as fewshot val/test lists."""
    labels = perturbation_labels(registry, str(params["control_label"]))
    trt = splits[~splits["is_control"].astype(bool)]
    lists = {s: sorted({labels[p] for p in trt.loc[trt["split"] == s, "perturbation_id"].astype(str)})
             for s in ("val", "test")}
    key = f"{DATASET}.{params['cell_type']}"
    return "\n".join([
        "# cell-load experiment config written by pairedscreen (results/train/cell_load.toml)",
        "[datasets]", f'{DATASET} = "{Path(rna_dir).resolve()}"', "",
        "[training]", f'{DATASET} = "train"', "",
        "[zeroshot]", "",
        "[fewshot]", f'[fewshot."{key}"]', f"val = {_toml_list(lists['val'])}",
        f"test = {_toml_list(lists['test'])}", ""])


def write_cell_load_toml(rna_dir: PathLike, splits: pd.DataFrame, registry: pd.DataFrame,
                         params: Mapping[str, Any], out: PathLike) -> None:
    with atomic_output(out) as tmp:
        Path(tmp).write_text(cell_load_toml(rna_dir, splits, registry, params))
