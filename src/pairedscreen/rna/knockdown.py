"""Knockdown of each targeting perturbation's own target gene vs non-targeting control cells."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp
from scipy import stats
from statsmodels.stats.multitest import multipletests

from pairedscreen.columns import bool_column
from pairedscreen.expression import cp10k_scale, usable_cells
from pairedscreen.rna.pseudobulk import row_totals

COLUMNS = ["perturbation_id", "target_gene", "log2fc", "pvalue", "padj", "remaining_fraction", "n_cells",
           "n_control_cells", "mean_cp10k", "control_mean_cp10k"]


def _gene_column(adata: ad.AnnData, gene: str) -> int:
    if gene in adata.var_names:
        return int(adata.var_names.get_loc(gene))
    if "gene_id" in adata.var:
        hits = np.flatnonzero(adata.var["gene_id"].astype(str).to_numpy() == gene)
        if len(hits):
            return int(hits[0])
    return -1


def knockdown_table(
    adata: ad.AnnData,
    registry: pd.DataFrame,
    *,
    test: str = "mannwhitney",
    min_cells: int = 3,
) -> pd.DataFrame:
    """One row per targeting perturbation (registry rows with a target_gene and not is_control).

    Cells: :func:`~pairedscreen.expression.usable_cells` of the perturbation vs those of all
    control perturbations. Test on log1p CP10k of the target gene, BH-adjusted over the perturbations
    tested: ``mannwhitney`` (default; two-sided, tie-corrected: calibrated on sparse targets) or
    ``welch`` t-test (more power, but anti-conservative when a sparse target is all zeros in the
    perturbed cells: 12-20% of null perturbations reached p < 0.05 in benchmarks/rna_scale.py data).
    remaining_fraction = mean CP10k in perturbed / control cells; log2fc = log2 of the (mean CP10k +
    0.01) ratio. Target genes not in var, or fewer than ``min_cells`` cells on either side, give NaN
    statistics.
    """
    if test not in ("welch", "mannwhitney"):
        raise ValueError(f"test {test!r} not in ('welch', 'mannwhitney')")
    keep = usable_cells(adata)
    pert = adata.obs["perturbation"].astype(str).to_numpy()[keep]
    is_ctrl = adata.obs["is_control"].to_numpy(dtype=bool)[keep]
    flag = bool_column(registry["is_control"])
    targeting = registry[~flag.to_numpy() & registry["target_gene"].notna()]
    targeting = targeting[targeting["target_gene"].astype(str).str.len() > 0]
    pairs = list(zip(targeting["perturbation_id"].astype(str), targeting["target_gene"].astype(str),
                     strict=True))
    genes = {gene: _gene_column(adata, gene) for _, gene in pairs}
    cols = sorted({j for j in genes.values() if j >= 0})
    # Memory: only the target genes' columns of the usable cells are copied (csc), never the whole
    # matrix; per-cell totals/scale come from the full rows a block at a time, so each target value
    # log1p(scale * count) is bit for bit what log1p_cp10k(x)[:, j] held.
    x = sp.csr_matrix(adata.X)  # no copy when X is already CSR
    targets = sp.csc_matrix(x[:, cols][keep])
    pos = {j: k for k, j in enumerate(cols)}
    tot = row_totals(x)[keep]
    scale = cp10k_scale(row_totals(x, np.float64)[keep])
    del x
    rows = []
    for pid, gene in pairs:
        m = pert == pid
        row = {"perturbation_id": pid, "target_gene": gene, "n_cells": int(m.sum()),
               "n_control_cells": int(is_ctrl.sum())}
        j = genes[gene]
        if j < 0 or m.sum() < min_cells or is_ctrl.sum() < min_cells:
            rows.append(row)
            continue
        raw = targets[:, pos[j]].toarray().ravel()
        col = np.log1p(scale * raw)
        cp10k = np.divide(raw * 1e4, tot, out=np.zeros_like(tot, dtype=float), where=tot > 0)
        a, b = col[m], col[is_ctrl]
        if test == "welch":
            p = stats.ttest_ind(a, b, equal_var=False).pvalue
        else:
            p = stats.mannwhitneyu(a, b, alternative="two-sided").pvalue
        mp, mc = float(cp10k[m].mean()), float(cp10k[is_ctrl].mean())
        row.update(
            pvalue=float(p) if np.isfinite(p) else 1.0,
            log2fc=float(np.log2((mp + 0.01) / (mc + 0.01))),
            remaining_fraction=mp / mc if mc > 0 else np.nan,
            mean_cp10k=mp, control_mean_cp10k=mc,
        )
        rows.append(row)
    df = pd.DataFrame(rows).reindex(columns=COLUMNS)
    tested = df["pvalue"].notna().to_numpy()
    df["padj"] = np.nan
    if tested.any():
        df.loc[tested, "padj"] = multipletests(df.loc[tested, "pvalue"].to_numpy(), method="fdr_bh")[1]
    return df
