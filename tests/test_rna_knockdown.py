"""Knockdown table, pseudobulk and library merging on planted counts."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp

from pairedscreen.rna.knockdown import knockdown_summary, knockdown_table, significant, unmeasurable_reason
from pairedscreen.rna.pseudobulk import merge_libraries, pseudobulk

GENES = ["GA", "GB", "GC"] + [f"G{i}" for i in range(47)]
REGISTRY = pd.DataFrame({
    "perturbation_id": ["A", "B", "C", "NTC"],
    "target_gene": ["GA", "GB", "GC", None],
    "is_control": [False, False, False, True],
})


def _library(lib: str, seed: int, remaining: dict[str, float]) -> ad.AnnData:
    rng = np.random.default_rng(seed)
    base = rng.gamma(2.0, 1.0, len(GENES))
    base[:3] = 8.0
    perts = np.repeat(["A", "B", "C", "NTC", "multiple", "unassigned"], [60, 60, 60, 120, 10, 10])
    mean = np.tile(base / base.sum() * 2000, (len(perts), 1))
    for p, frac in remaining.items():
        mean[perts == p, GENES.index(f"G{p}")] *= frac
    x = rng.poisson(mean)
    obs = pd.DataFrame({
        "library": lib, "batch": f"B{lib[-1]}", "perturbation": perts, "is_control": perts == "NTC",
        "pass_qc": True, "predicted_doublet": False,
    }, index=[f"{lib}_c{i}" for i in range(len(perts))])
    obs.loc[obs.index[:5], "pass_qc"] = False
    a = ad.AnnData(X=sp.csr_matrix(x), obs=obs, var=pd.DataFrame({"gene_id": GENES}, index=GENES))
    a.obsm["guide_counts"] = sp.csr_matrix(rng.poisson(1, (len(perts), 2)))
    a.uns["guide_names"] = np.array(["gA", "gB"] if lib == "L1" else ["gB", "gC"])
    a.uns["cell_calling"] = {"knee": 1000.0 + seed}
    return a


def test_knockdown_detects_planted_and_not_inert():
    a = _library("L1", 0, {"A": 0.2, "B": 0.5})        # C inert
    kd = knockdown_table(a, REGISTRY).set_index("perturbation_id")
    print("\nknockdown (planted A 0.2, B 0.5, C 1.0):\n" +
          kd[["remaining_fraction", "log2fc", "padj", "n_cells"]].to_string())
    assert list(kd.index) == ["A", "B", "C"]
    assert kd.loc["A", "padj"] < 1e-6 and kd.loc["B", "padj"] < 1e-3 and kd.loc["C", "padj"] > 0.05
    assert abs(kd.loc["A", "remaining_fraction"] - 0.2) < 0.07
    assert abs(kd.loc["B", "remaining_fraction"] - 0.5) < 0.1
    assert kd.loc["A", "n_cells"] == 55            # 5 of A's 60 cells fail QC
    welch = knockdown_table(a, REGISTRY, test="welch").set_index("perturbation_id")
    assert welch.loc["A", "padj"] < 1e-6 and welch.loc["C", "padj"] > 0.05


def test_unmeasurable_knockdown_has_a_reason_not_a_result():
    """Each cause that leaves a knockdown unmeasurable, planted: a target gene missing from the annotation,
    a target with no count in any control cell, a perturbation with fewer than min_cells usable cells. Such
    rows carry measurable False, the reason and no statistic; the call is NA (not False); the measurable
    rows are the ones BH adjusts over."""
    a = _library("L1", 4, {"A": 0.2})
    x = a.X.toarray()
    x[a.obs["is_control"].to_numpy(), GENES.index("GC")] = 0           # C's target: never seen in controls
    a.X = sp.csr_matrix(x)
    reg = pd.DataFrame({"perturbation_id": ["A", "B", "C", "X", "Y", "NTC"],
                        "target_gene": ["GA", "GB", "GC", "NOT_ANNOTATED", "G7", None],
                        "is_control": [False] * 5 + [True]})
    obs = a.obs.copy()
    obs["perturbation"] = obs["perturbation"].astype(object)
    b_cells = obs.index[(obs["perturbation"] == "B").to_numpy()]
    obs.loc[b_cells[:2], "perturbation"] = "Y"       # 2 usable Y cells
    obs.loc[b_cells[2:30], "perturbation"] = "X"     # 28 X cells, its target not annotated
    a.obs = obs
    kd = knockdown_table(a, reg).set_index("perturbation_id")
    print("\n" + kd[["target_gene", "n_cells", "control_mean_cp10k", "padj", "measurable",
                      "reason"]].to_string())
    assert kd.loc["A", "measurable"] and kd.loc["A", "reason"] == "" and kd.loc["A", "padj"] < 1e-6
    assert kd.loc["X", "reason"] == "target gene not in the reference annotation"
    assert kd.loc["C", "reason"] == "target not detected in control cells"
    assert kd.loc["C", "control_mean_cp10k"] == 0 and kd.loc["C", "mean_cp10k"] > 0
    assert kd.loc["Y", "n_cells"] == 2 and kd.loc["Y", "reason"] == "fewer than 3 usable perturbed cells"
    unmeasured = ["C", "X", "Y"]
    assert not kd.loc[unmeasured, "measurable"].any()
    assert kd.loc[unmeasured, ["log2fc", "pvalue", "padj", "remaining_fraction"]].isna().all().all()
    sig = significant(kd, 0.05)
    assert sig[unmeasured].isna().all() and bool(sig["A"]) and sig.drop(unmeasured).notna().all()
    # BH over the measurable rows only: padj of A and B as if the unmeasurable rows were not there
    from statsmodels.stats.multitest import multipletests
    tested = kd.loc[["A", "B"], "pvalue"].to_numpy()
    np.testing.assert_allclose(kd.loc[["A", "B"], "padj"], multipletests(tested, method="fdr_bh")[1])
    summary = knockdown_summary(kd.reset_index().assign(significant=sig.to_numpy()))
    n_sig = int(bool(sig["A"])) + int(bool(sig["B"]))
    assert summary == {"targeting": 5, "measurable": 2, "significant": n_sig, "not_measurable": 3,
                       "not_measurable_by_reason": {
                           "fewer than 3 usable perturbed cells": 1,
                           "target gene not in the reference annotation": 1,
                           "target not detected in control cells": 1}}
    # several reasons at once are all given
    assert unmeasurable_reason(in_annotation=False, n_cells=0, n_control=1, min_cells=3) == (
        "target gene not in the reference annotation; fewer than 3 usable perturbed cells; "
        "fewer than 3 usable control cells")


def test_knockdown_null_calibration_on_sparse_targets():
    """Inert perturbations on a lowly expressed target (mean ~0.05 UMI/cell): the default test must
    keep the null p-values calibrated (Welch is not: an all-zero perturbed group has no variance)."""
    rng = np.random.default_rng(7)
    n_null, per, n_ctrl, g = 60, 25, 1500, 60
    perts = np.concatenate([np.repeat([f"P{i}" for i in range(n_null)], per), np.full(n_ctrl, "NTC")])
    mean = np.full((len(perts), g), 30.0)
    mean[:, :n_null] = 0.05                     # each P{i} targets the sparse gene S{i}
    x = rng.poisson(mean)
    genes = [f"S{i}" for i in range(n_null)] + [f"H{i}" for i in range(g - n_null)]
    obs = pd.DataFrame({"perturbation": perts, "is_control": perts == "NTC"},
                       index=[f"c{i}" for i in range(len(perts))])
    a = ad.AnnData(X=sp.csr_matrix(x), obs=obs, var=pd.DataFrame(index=genes))
    reg = pd.DataFrame({"perturbation_id": [f"P{i}" for i in range(n_null)] + ["NTC"],
                        "target_gene": genes[:n_null] + [None], "is_control": [False] * n_null + [True]})
    kd = knockdown_table(a, reg)
    welch = knockdown_table(a, reg, test="welch")
    frac, frac_w = (kd["pvalue"] < 0.05).mean(), (welch["pvalue"] < 0.05).mean()
    print(f"\nnull sparse targets: p<0.05 in {frac:.3f} (Mann-Whitney, default) vs {frac_w:.3f} (Welch); "
          f"padj<0.05: {int((kd['padj'] < 0.05).sum())}/{n_null}")
    assert frac <= 0.1 and (kd["padj"] < 0.05).sum() == 0


def test_pseudobulk_sums_and_means():
    a = _library("L1", 1, {"A": 0.2})
    pb = pseudobulk(a, order=["NTC", "C", "B", "A"])
    assert list(pb.obs_names) == ["NTC", "C", "B", "A"]          # registry order, no multiple/unassigned
    keep = a.obs["pass_qc"].to_numpy()
    for p in pb.obs_names:
        m = keep & (a.obs["perturbation"] == p).to_numpy()
        np.testing.assert_array_equal(pb[p].layers["counts"].ravel(), np.asarray(a.X[m].sum(0)).ravel())
        assert pb.obs.loc[p, "n_cells"] == m.sum()
        x = a.X[m].toarray().astype(float)
        expected = np.log1p(x / x.sum(1, keepdims=True) * 1e4).mean(0)
        np.testing.assert_allclose(np.asarray(pb[p].X).ravel(), expected, rtol=1e-10)
    assert pb.obs.loc["NTC", "is_control"] and not pb.obs.loc["A", "is_control"]


def test_merge_libraries():
    l1, l2 = _library("L1", 2, {}), _library("L2", 3, {})
    m = merge_libraries([l1, l2])
    assert m.n_obs == l1.n_obs + l2.n_obs and list(m.var_names) == GENES
    assert list(m.uns["guide_names"]) == ["gA", "gB", "gC"]
    gc = m.obsm["guide_counts"].toarray()
    np.testing.assert_array_equal(gc[: l1.n_obs, :2], l1.obsm["guide_counts"].toarray())
    np.testing.assert_array_equal(gc[l1.n_obs :, 1:], l2.obsm["guide_counts"].toarray())
    assert set(m.uns["libraries"]) == {"L1", "L2"}
    assert m.uns["libraries"]["L2"]["cell_calling"]["knee"] == 1003.0
    assert set(m.obs["batch"]) == {"B1", "B2"}
