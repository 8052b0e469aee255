"""Per-perturbation differential expression against the control cells of the same library (gem group).

The statistic is scanpy's ``rank_genes_groups(method="wilcoxon", reference=<controls>, tie_correct=True)``
on log1p CP10k (:func:`pairedscreen.expression.log1p_cp10k`) of the usable cells
(:func:`pairedscreen.expression.usable_cells`): the rank-sum z-score, its two-sided normal p-value and
scanpy's log2 fold change of the mean expression (``expm1`` of the log1p means), as the Virtual Cell
Challenge scores a perturbation's DE genes (a Wilcoxon test against controls).

Memory is bounded by one library: :func:`library_de` sees one library's cells (``results/rna/{lib}/
cells.h5ad``) and writes ``de.parquet`` a batch of perturbations at a time; :func:`combine_de` reads one
perturbation at a time from every library's table and combines the libraries by Stouffer's method
(z = sum_l sqrt(n_l) z_l / sqrt(sum_l n_l), n_l = the perturbation's cells in library l; one library: its
z unchanged), the log2 fold change as the cell-weighted mean, then Benjamini-Hochberg q-values over the
genes of each perturbation. A DE gene has ``qvalue < alpha`` and ``|logfoldchange| >= min_abs_log2fc``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import anndata as ad
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from scipy import stats
from statsmodels.stats.multitest import multipletests

from pairedscreen.columns import OBS_PERTURBATION, bool_column
from pairedscreen.expression import log1p_cp10k, usable_cells
from pairedscreen.io import atomic_output

PathLike = str | os.PathLike
CONTROLS = "__controls__"      # the reference group (all control perturbations of the library)
GROUPS_PER_CALL = 32           # perturbations per rank_genes_groups call (bounds its result arrays)
LIBRARY_COLUMNS = ["perturbation_id", "gene", "logfoldchange", "statistic", "pvalue", "n_cells",
                   "n_control_cells"]
COLUMNS = ["perturbation_id", "gene", "logfoldchange", "statistic", "pvalue", "qvalue", "is_de", "n_cells",
           "n_control_cells", "n_libraries"]
_LIB_SCHEMA = pa.schema([("perturbation_id", pa.string()), ("gene", pa.string()),
                         ("logfoldchange", pa.float64()), ("statistic", pa.float64()),
                         ("pvalue", pa.float64()), ("n_cells", pa.int64()), ("n_control_cells", pa.int64())])
_SCHEMA = pa.schema([("perturbation_id", pa.string()), ("gene", pa.string()),
                     ("logfoldchange", pa.float64()), ("statistic", pa.float64()), ("pvalue", pa.float64()),
                     ("qvalue", pa.float64()), ("is_de", pa.bool_()), ("n_cells", pa.int64()),
                     ("n_control_cells", pa.int64()), ("n_libraries", pa.int64())])


def _groups(cells: ad.AnnData, registry: pd.DataFrame) -> tuple[ad.AnnData, list[str], int]:
    """The usable cells as log1p CP10k with obs ``de_group`` (registry id, :data:`CONTROLS` for control
    cells), the targeting perturbations present (registry order) and the number of control cells."""
    ids = registry["perturbation_id"].astype(str)
    control = set(ids[bool_column(registry["is_control"]).to_numpy()])
    keep = usable_cells(cells, categories=list(ids))
    pert = cells.obs[OBS_PERTURBATION].astype(str).to_numpy()[keep]
    group = np.where(np.isin(pert, list(control)), CONTROLS, pert)
    x = log1p_cp10k(cells.X[keep])
    a = ad.AnnData(X=x, obs=pd.DataFrame({"de_group": pd.Categorical(group)},
                                          index=cells.obs_names[keep].astype(str)),
                   var=pd.DataFrame(index=cells.var_names.astype(str)))
    a.uns["log1p"] = {"base": None}
    present = set(group)
    return a, [p for p in ids if p in present and p not in control], int((group == CONTROLS).sum())


def library_de_tables(cells: ad.AnnData, registry: pd.DataFrame, *, min_cells: int):
    """Yield one library's DE tables (:data:`LIBRARY_COLUMNS`), a batch of perturbations at a time: each
    targeting perturbation with at least ``min_cells`` usable cells against the library's usable control
    cells (none when the library has fewer than ``min_cells`` of them)."""
    import scanpy as sc

    a, perts, n_ctrl = _groups(cells, registry)
    if n_ctrl < min_cells:
        return
    counts = a.obs["de_group"].value_counts()
    perts = [p for p in perts if int(counts.get(p, 0)) >= min_cells]
    for s in range(0, len(perts), GROUPS_PER_CALL):
        batch = perts[s:s + GROUPS_PER_CALL]
        sub = a[a.obs["de_group"].isin([*batch, CONTROLS]).to_numpy()].copy()
        sub.obs["de_group"] = sub.obs["de_group"].cat.remove_unused_categories()
        sc.tl.rank_genes_groups(sub, "de_group", groups=batch, reference=CONTROLS, method="wilcoxon",
                                tie_correct=True, n_genes=sub.n_vars, use_raw=False, key_added="de")
        res = sub.uns["de"]
        parts = []
        for p in batch:
            parts.append(pd.DataFrame({
                "perturbation_id": p, "gene": np.asarray(res["names"][p], dtype=str),
                "logfoldchange": np.asarray(res["logfoldchanges"][p], dtype=np.float64),
                "statistic": np.asarray(res["scores"][p], dtype=np.float64),
                "pvalue": np.asarray(res["pvals"][p], dtype=np.float64),
                "n_cells": int(counts[p]), "n_control_cells": n_ctrl}))
        yield pd.concat(parts, ignore_index=True)[LIBRARY_COLUMNS]


def write_library_de(cells: ad.AnnData, registry: pd.DataFrame, out: PathLike, *, min_cells: int) -> int:
    """Write one library's ``de.parquet`` (:func:`library_de_tables`; one row group per batch, rows of a
    perturbation contiguous). Returns the number of perturbations tested."""
    n = 0
    with atomic_output(out) as tmp, pq.ParquetWriter(tmp, _LIB_SCHEMA) as w:
        for df in library_de_tables(cells, registry, min_cells=min_cells):
            n += df["perturbation_id"].nunique()
            w.write_table(pa.Table.from_pandas(df, schema=_LIB_SCHEMA, preserve_index=False))
        if not n:
            w.write_table(_LIB_SCHEMA.empty_table())
    return n


def combine_perturbation(parts: Sequence[pd.DataFrame], *, alpha: float,
                         min_abs_log2fc: float) -> pd.DataFrame:
    """One perturbation's rows from its per-library tables: Stouffer z, cell-weighted log2 fold change,
    two-sided p-value, BH q-value over its genes, the DE call (:data:`COLUMNS`)."""
    df = pd.concat(parts, ignore_index=True)
    n = df["n_cells"].to_numpy(dtype=np.float64)
    df = df.assign(_wz=np.sqrt(n) * df["statistic"], _wl=n * df["logfoldchange"], _n=n)
    g = df.groupby("gene", sort=True)
    out = pd.DataFrame({
        "statistic": g["_wz"].sum() / np.sqrt(g["_n"].sum()),
        "logfoldchange": g["_wl"].sum() / g["_n"].sum(),
        "n_cells": g["n_cells"].sum(), "n_control_cells": g["n_control_cells"].sum(),
        "n_libraries": g.size()}).reset_index()
    if len(parts) == 1:   # one library: its p-values as scanpy gave them (same formula, no re-rounding)
        out["pvalue"] = parts[0].set_index("gene")["pvalue"].reindex(out["gene"]).to_numpy()
    else:
        out["pvalue"] = 2 * stats.norm.sf(np.abs(out["statistic"].to_numpy()))
    p = np.nan_to_num(out["pvalue"].to_numpy(dtype=np.float64), nan=1.0)
    out["qvalue"] = multipletests(p, method="fdr_bh")[1] if len(p) else p
    out["is_de"] = (out["qvalue"] < alpha) & (out["logfoldchange"].abs() >= min_abs_log2fc)
    out["perturbation_id"] = str(df["perturbation_id"].iloc[0])
    return out.sort_values(["qvalue", "gene"], kind="stable")[COLUMNS].reset_index(drop=True)


def combine_de(tables: Sequence[PathLike], registry: pd.DataFrame, out: PathLike, *, alpha: float,
               min_abs_log2fc: float) -> pd.DataFrame:
    """Write ``results/rna/de.parquet`` from the libraries' ``de.parquet`` files, one perturbation at a
    time (registry order), and return the per-perturbation summary (:func:`de_summary` of each)."""
    present = [set(pq.read_table(t, columns=["perturbation_id"]).column(0).unique().to_pylist())
               for t in tables]
    summaries = []
    with atomic_output(out) as tmp, pq.ParquetWriter(tmp, _SCHEMA) as w:
        for pid in registry["perturbation_id"].astype(str):
            parts = [pq.read_table(t, filters=[("perturbation_id", "=", pid)]).to_pandas()
                     for t, have in zip(tables, present, strict=True) if pid in have]
            if not parts:
                continue
            df = combine_perturbation(parts, alpha=alpha, min_abs_log2fc=min_abs_log2fc)
            w.write_table(pa.Table.from_pandas(df, schema=_SCHEMA, preserve_index=False))
            summaries.append(de_summary(df))
        if not summaries:
            w.write_table(_SCHEMA.empty_table())
    return pd.DataFrame(summaries, columns=SUMMARY_COLUMNS)


SUMMARY_COLUMNS = ["perturbation_id", "n_de_genes", "n_up", "n_down", "top_de_genes", "n_cells",
                   "n_control_cells", "n_libraries"]
TOP_GENES = 10


def de_summary(df: pd.DataFrame) -> dict:
    """One perturbation's DE summary: number of DE genes (up / down) and its top DE genes by q-value
    (``;``-joined, at most :data:`TOP_GENES`)."""
    de = df[df["is_de"]]
    return {"perturbation_id": str(df["perturbation_id"].iloc[0]), "n_de_genes": int(len(de)),
            "n_up": int((de["logfoldchange"] > 0).sum()), "n_down": int((de["logfoldchange"] < 0).sum()),
            "top_de_genes": ";".join(de["gene"].astype(str).head(TOP_GENES)),
            "n_cells": int(df["n_cells"].max()), "n_control_cells": int(df["n_control_cells"].max()),
            "n_libraries": int(df["n_libraries"].max())}
