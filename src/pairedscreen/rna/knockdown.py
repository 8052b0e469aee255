"""Knockdown of each targeting perturbation's own target gene vs non-targeting control cells.

One statistic, two ways in: :func:`knockdown_table` from a cells AnnData (one library or merged cells) and
:func:`pairedscreen.rna.summary.combine_knockdown` from the libraries' summaries; both build each row
with :func:`knockdown_row` and adjust with :func:`adjust`.
"""

from __future__ import annotations

import os

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
           "n_control_cells", "mean_cp10k", "control_mean_cp10k", "measurable", "reason"]
TESTS = ("welch", "mannwhitney")
# why a knockdown cannot be measured (``reason``; several are joined by "; "): a fixed text per cause, so
# that rows can be counted per reason (the numbers are in n_cells / n_control_cells / control_mean_cp10k)
NOT_IN_ANNOTATION = "target gene not in the reference annotation"
NOT_IN_CONTROLS = "target not detected in control cells"


def too_few(side: str, min_cells: int) -> str:
    """The reason for fewer than ``min_cells`` usable cells on one side (``perturbed`` or ``control``)."""
    return f"fewer than {min_cells} usable {side} cells"


def unmeasurable_reason(*, in_annotation: bool, n_cells: int, n_control: int, min_cells: int,
                        control_mean: float | None = None) -> str:
    """Why a knockdown cannot be measured ("" when it can): the target gene is not in the reference
    annotation, fewer than ``min_cells`` usable perturbed or control cells, or the target is not detected
    in the control cells (nothing to knock down: ``control_mean`` = its mean CP10k there is 0)."""
    reasons = [] if in_annotation else [NOT_IN_ANNOTATION]
    if n_cells < min_cells:
        reasons.append(too_few("perturbed", min_cells))
    if n_control < min_cells:
        reasons.append(too_few("control", min_cells))
    if not reasons and control_mean is not None and not control_mean > 0:
        reasons.append(NOT_IN_CONTROLS)
    return "; ".join(reasons)


def gene_column(var: pd.DataFrame | ad.AnnData, gene: str) -> int:
    """Column of ``gene`` by var name, else by ``var['gene_id']``; -1 when absent."""
    var = var.var if isinstance(var, ad.AnnData) else var
    if gene in var.index:
        return int(var.index.get_loc(gene))
    if "gene_id" in var:
        hits = np.flatnonzero(var["gene_id"].astype(str).to_numpy() == gene)
        if len(hits):
            return int(hits[0])
    return -1


def targeting_pairs(registry: pd.DataFrame) -> list[tuple[str, str]]:
    """(perturbation_id, target_gene) of the registry rows with a target gene that are not controls."""
    flag = bool_column(registry["is_control"])
    targeting = registry[~flag.to_numpy() & registry["target_gene"].notna()]
    targeting = targeting[targeting["target_gene"].astype(str).str.len() > 0]
    return list(zip(targeting["perturbation_id"].astype(str), targeting["target_gene"].astype(str),
                    strict=True))


def knockdown_row(pid: str, gene: str, a_raw: np.ndarray | None, a_tot: np.ndarray | None,
                  b_raw: np.ndarray | None, b_tot: np.ndarray | None, *, n_cells: int, n_control: int,
                  test: str, min_cells: int) -> dict:
    """One knockdown row from the target's raw counts and the cells' total counts, perturbed (``a``) and
    control (``b``) cells in cell order; ``a_raw`` None = target gene not in the annotation.

    A row that cannot be measured (:func:`unmeasurable_reason`) has ``measurable`` False, the ``reason``
    and no test statistics (log2fc, pvalue, remaining_fraction NaN: it is not among the perturbations BH
    adjusts over); the means are kept when computed (a target not detected in controls: control mean 0)."""
    if test not in TESTS:
        raise ValueError(f"test {test!r} not in {TESTS}")
    row = {"perturbation_id": pid, "target_gene": gene, "n_cells": int(n_cells),
           "n_control_cells": int(n_control)}
    why = unmeasurable_reason(in_annotation=a_raw is not None, n_cells=n_cells, n_control=n_control,
                              min_cells=min_cells)
    if why:
        return {**row, "measurable": False, "reason": why}
    raw = np.concatenate([a_raw, b_raw])
    tot = np.concatenate([a_tot, b_tot])
    cp10k = np.divide(raw * 1e4, tot, out=np.zeros_like(tot, dtype=float), where=tot > 0)
    na = len(a_raw)
    mp, mc = float(cp10k[:na].mean()), float(cp10k[na:].mean())
    row.update(mean_cp10k=mp, control_mean_cp10k=mc)
    why = unmeasurable_reason(in_annotation=True, n_cells=n_cells, n_control=n_control, min_cells=min_cells,
                              control_mean=mc)
    if why:
        return {**row, "measurable": False, "reason": why}
    col = np.log1p(cp10k_scale(tot.astype(np.float64)) * raw)
    a, b = col[:na], col[na:]
    if test == "welch":
        p = stats.ttest_ind(a, b, equal_var=False).pvalue
    else:
        p = stats.mannwhitneyu(a, b, alternative="two-sided").pvalue
    row.update(pvalue=float(p) if np.isfinite(p) else 1.0, log2fc=float(np.log2((mp + 0.01) / (mc + 0.01))),
               remaining_fraction=mp / mc, measurable=True, reason="")
    return row


def significant(kd: pd.DataFrame, alpha: float) -> pd.Series:
    """The knockdown call: padj < ``alpha`` and log2fc < 0 where measurable, missing (NA) where not, so that
    "not measurable" never reads as "no knockdown"."""
    call = ((kd["padj"] < alpha) & (kd["log2fc"] < 0)).astype("boolean")
    return call.mask(~kd["measurable"].astype(bool))


def read_knockdown(path: str | os.PathLike) -> pd.DataFrame:
    """``knockdown.tsv`` as written: ``measurable`` bool, ``significant`` nullable boolean (NA where not
    measurable), ``reason`` text ("" where measurable)."""
    kd = pd.read_csv(path, sep="\t", dtype={"perturbation_id": str, "target_gene": str})
    if "measurable" in kd:
        kd["measurable"] = kd["measurable"].astype(bool)
    if "reason" in kd:
        kd["reason"] = kd["reason"].fillna("").astype(str)
    if "significant" in kd:
        kd["significant"] = kd["significant"].astype("boolean")
    return kd


def knockdown_summary(kd: pd.DataFrame) -> dict:
    """Counts for the datasheet: targeting perturbations, measurable, significant, and the perturbations
    not measurable per reason (the ``reason`` text as written, combinations included)."""
    measurable = kd["measurable"].astype(bool) if "measurable" in kd else \
        kd["padj"].notna() if "padj" in kd else pd.Series(True, kd.index)   # a table from before the column
    sig = kd["significant"].astype("boolean").fillna(False) if "significant" in kd else measurable & False
    reasons = (kd["reason"] if "reason" in kd else pd.Series("not recorded", kd.index))[~measurable]
    by_reason = reasons.value_counts().sort_index()
    return {"targeting": int(len(kd)), "measurable": int(measurable.sum()),
            "significant": int(sig.astype(bool).sum()), "not_measurable": int((~measurable).sum()),
            "not_measurable_by_reason": {str(k): int(v) for k, v in by_reason.items()}}


def adjust(df: pd.DataFrame) -> pd.DataFrame:
    """BH-adjusted ``padj`` over the perturbations tested (rows with a p-value)."""
    tested = df["pvalue"].notna().to_numpy()
    df["padj"] = np.nan
    if tested.any():
        df.loc[tested, "padj"] = multipletests(df.loc[tested, "pvalue"].to_numpy(), method="fdr_bh")[1]
    return df


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
    0.01) ratio. A target gene not in var, fewer than ``min_cells`` cells on either side or a target not
    detected in the control cells give NaN statistics, ``measurable`` False and the ``reason``.
    """
    if test not in TESTS:
        raise ValueError(f"test {test!r} not in {TESTS}")
    keep = usable_cells(adata)
    pert = adata.obs["perturbation"].astype(str).to_numpy()[keep]
    is_ctrl = adata.obs["is_control"].to_numpy(dtype=bool)[keep]
    pairs = targeting_pairs(registry)
    genes = {gene: gene_column(adata, gene) for _, gene in pairs}
    cols = sorted({j for j in genes.values() if j >= 0})
    # Memory: only the target genes' columns of the usable cells are copied (csc), never the whole
    # matrix; per-cell totals come from the full rows a block at a time.
    x = sp.csr_matrix(adata.X)  # no copy when X is already CSR
    targets = sp.csc_matrix(x[:, cols][keep])
    pos = {j: k for k, j in enumerate(cols)}
    tot = row_totals(x)[keep]
    del x
    rows = []
    b_tot = tot[is_ctrl]
    for pid, gene in pairs:
        m = pert == pid
        j = genes[gene]
        if j < 0:
            rows.append(knockdown_row(pid, gene, None, None, None, None, n_cells=int(m.sum()),
                                      n_control=int(is_ctrl.sum()), test=test, min_cells=min_cells))
            continue
        raw = targets[:, pos[j]].toarray().ravel()
        rows.append(knockdown_row(pid, gene, raw[m], tot[m], raw[is_ctrl], b_tot, n_cells=int(m.sum()),
                                  n_control=int(is_ctrl.sum()), test=test, min_cells=min_cells))
    return adjust(pd.DataFrame(rows).reindex(columns=COLUMNS))
