"""Per-perturbation DE vs library-matched controls (pairedscreen.rna.de) on simulated cells with planted DE
genes, against scanpy's rank_genes_groups and the simulator's truth."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scanpy as sc
from _simulated_cells import simulated_libraries
from config_values import SCHEMA
from scipy import stats

from pairedscreen.expression import log1p_cp10k
from pairedscreen.rna import de

DE = {k: SCHEMA[f"rna.de.{k}"] for k in ("alpha", "min_abs_log2fc", "min_cells_per_library")}


@pytest.fixture(scope="module")
def screen(tmp_path_factory):
    libs, registry, truth = simulated_libraries()
    tmp = tmp_path_factory.mktemp("de")
    tables = []
    for i, a in enumerate(libs):
        tables.append(tmp / f"L{i + 1}_de.parquet")
        de.write_library_de(a, registry, tables[-1], min_cells=DE["min_cells_per_library"])
    summary = de.combine_de(tables, registry, tmp / "de.parquet", alpha=DE["alpha"],
                            min_abs_log2fc=DE["min_abs_log2fc"])
    return {"libs": libs, "registry": registry, "truth": truth, "tables": tables,
            "de": pd.read_parquet(tmp / "de.parquet"), "de_path": tmp / "de.parquet", "summary": summary}


def test_library_de_is_scanpy_wilcoxon_vs_the_library_controls(screen):
    """One library's table = scanpy's rank_genes_groups(wilcoxon, reference = the control cells) run on
    that library's log1p CP10k with every perturbation at once (our batching changes nothing)."""
    a = screen["libs"][0]
    ref = ad.AnnData(X=log1p_cp10k(a.X), obs=a.obs.copy(), var=pd.DataFrame(index=a.var_names))
    ref.uns["log1p"] = {"base": None}
    ref.obs["g"] = np.where(ref.obs["is_control"], "ctrl", ref.obs["perturbation"])
    sc.tl.rank_genes_groups(ref, "g", reference="ctrl", method="wilcoxon", tie_correct=True,
                            n_genes=ref.n_vars, use_raw=False)
    want = sc.get.rank_genes_groups_df(ref, group=None).rename(columns={"group": "perturbation_id",
                                                                         "names": "gene"})
    got = pd.read_parquet(screen["tables"][0])
    m = got.merge(want, on=["perturbation_id", "gene"], validate="1:1")
    assert len(m) == len(got) == len(want) and len(got) > 0
    np.testing.assert_allclose(m["statistic"], m["scores"], rtol=1e-5)
    np.testing.assert_allclose(m["pvalue"], m["pvals"], rtol=1e-5, atol=1e-300)
    np.testing.assert_allclose(m["logfoldchange"], m["logfoldchanges"], rtol=1e-5, atol=1e-6)
    n_ctrl = int(a.obs["is_control"].sum())
    assert (got["n_control_cells"] == n_ctrl).all()
    sizes = a.obs["perturbation"].value_counts()
    assert (got["n_cells"] == got["perturbation_id"].map(sizes)).all()


def test_one_library_combined_equals_scanpy_bh(screen):
    """With one library the combined table is that library's test, BH-adjusted as scanpy adjusts."""
    lib = pd.read_parquet(screen["tables"][0])
    first = lib[lib["perturbation_id"] == lib["perturbation_id"].iloc[0]]
    one = de.combine_perturbation([first], alpha=DE["alpha"], min_abs_log2fc=DE["min_abs_log2fc"])
    a = screen["libs"][0]
    ref = ad.AnnData(X=log1p_cp10k(a.X), obs=a.obs.copy(), var=pd.DataFrame(index=a.var_names))
    ref.uns["log1p"] = {"base": None}
    ref.obs["g"] = np.where(ref.obs["is_control"], "ctrl", ref.obs["perturbation"])
    pid = one["perturbation_id"].iloc[0]
    sc.tl.rank_genes_groups(ref, "g", groups=[pid], reference="ctrl", method="wilcoxon", tie_correct=True,
                            n_genes=ref.n_vars, use_raw=False)
    want = sc.get.rank_genes_groups_df(ref, group=pid).set_index("names")
    np.testing.assert_allclose(one.set_index("gene")["qvalue"], want.loc[one["gene"], "pvals_adj"],
                               rtol=1e-5, atol=1e-300)


def test_de_recovers_the_planted_genes(screen):
    """Planted DE genes = each RNA-active perturbation's knocked-down target + its program's genes; the
    screen's DE calls (both libraries combined) recover them: precision and recall printed."""
    d, truth = screen["de"], screen["truth"]
    planted = set()
    for r in truth.itertuples():
        if r.rna_active:
            planted.add((r.perturbation_id, r.target_gene))
            planted.update((r.perturbation_id, g) for g in r.program_genes.split(";") if g)
    called = set(map(tuple, d.loc[d["is_de"], ["perturbation_id", "gene"]].to_numpy()))
    tp = len(called & planted)
    precision, recall = tp / max(len(called), 1), tp / len(planted)
    inactive = set(truth.loc[~truth["rna_active"], "perturbation_id"])
    false_inactive = sum(p in inactive for p, _ in called)
    print(f"\nDE recovery: planted {len(planted)}, called {len(called)}, true {tp}, precision "
          f"{precision:.3f}, recall {recall:.3f}; calls on inactive perturbations {false_inactive}")
    assert set(d["n_libraries"]) == {2}
    assert recall >= 0.9 and precision >= 0.9
    s = screen["summary"].set_index("perturbation_id")
    counts = d[d["is_de"]].groupby("perturbation_id").size()
    assert (s["n_de_genes"] == counts.reindex(s.index).fillna(0).astype(int)).all()


def test_stouffer_combination_of_libraries():
    """Two libraries: z = (sqrt(n1) z1 + sqrt(n2) z2) / sqrt(n1 + n2), p two-sided normal, log2FC
    cell-weighted."""
    a = pd.DataFrame({"perturbation_id": "P", "gene": ["g1", "g2"], "logfoldchange": [1.0, -0.2],
                      "statistic": [3.0, -0.5], "pvalue": [0.0027, 0.617], "n_cells": 16,
                      "n_control_cells": 50})
    b = a.assign(statistic=[2.0, 0.5], logfoldchange=[2.0, 0.2], n_cells=9)
    out = de.combine_perturbation([a, b], alpha=0.05, min_abs_log2fc=0.5).set_index("gene")
    assert out.loc["g1", "statistic"] == pytest.approx((4 * 3 + 3 * 2) / 5)
    assert out.loc["g1", "logfoldchange"] == pytest.approx((16 + 18) / 25)
    assert out.loc["g1", "pvalue"] == pytest.approx(2 * stats.norm.sf(3.6))
    assert bool(out.loc["g1", "is_de"]) and not bool(out.loc["g2", "is_de"])
    assert out.loc["g1", "n_libraries"] == 2 and out.loc["g1", "n_cells"] == 25


def test_pair_carries_the_de_layers_and_summary(screen):
    """The h5mu's RNA modality: layers de_log2fc / de_qvalue = de.parquet's values at (perturbation,
    gene), NaN where untested (controls); obs de_* = de_summary; the datasheet's metrics.de agrees."""
    from pairedscreen.pair import join
    from pairedscreen.pair.stages import de_metrics

    reg, d, summary = screen["registry"], screen["de"], screen["summary"]
    genes = screen["libs"][0].var_names
    ids = pd.Index(reg["perturbation_id"].astype(str))
    pb = ad.AnnData(X=np.zeros((len(ids), len(genes)), np.float32),
                    obs=pd.DataFrame({"n_cells": 10}, index=ids), var=pd.DataFrame(index=genes))
    pb.layers["counts"] = np.zeros((len(ids), len(genes)), np.float32)
    layers = join.de_layers(screen["de_path"], ids, pd.Index(genes))
    mdata = join.build_perturbations(reg, rna=pb, paint=None, de=summary, de_layers=layers)
    rna = mdata.mod["rna"]
    sample = d.sample(200, random_state=0)
    r, c = ids.get_indexer(sample["perturbation_id"]), genes.get_indexer(sample["gene"])
    np.testing.assert_allclose(rna.layers["de_log2fc"][r, c], sample["logfoldchange"], rtol=1e-6)
    np.testing.assert_allclose(rna.layers["de_qvalue"][r, c], sample["qvalue"], rtol=1e-6,
                               atol=1e-37)   # float32: q-values below its range are 0
    ctrl = reg["is_control"].to_numpy()
    assert np.isnan(rna.layers["de_qvalue"][ctrl]).all()
    s = summary.set_index("perturbation_id")
    tested = rna.obs_names.isin(s.index)
    assert (rna.obs.loc[tested, "de_n_de_genes"] == s.loc[rna.obs_names[tested], "n_de_genes"]).all()
    m = de_metrics(summary, alpha=DE["alpha"], min_abs_log2fc=DE["min_abs_log2fc"])
    assert m["de_genes"] == int(d["is_de"].sum())
    assert m["perturbations_tested"] == d["perturbation_id"].nunique()
