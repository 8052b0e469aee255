"""Our lean scrublet against scanpy's own ``sc.pp.scrublet`` (exact neighbours) and the planted doublets."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scanpy as sc
import scipy.sparse as sp
from config_values import SCHEMA

from pairedscreen.rna.qc import flag_doublets
from pairedscreen.rna.scrublet import scrublet


def _library(seed: int, n: int = 2500, g: int = 1500, rate: float = 0.06) -> tuple[sp.csr_matrix, np.ndarray]:
    """Gamma-Poisson counts of 8 cell types; ``rate`` of the cells are planted doublets (the sum of two
    cells of different types); a few near-empty cells and genes seen in < 3 cells, which scrublet drops."""
    rng = np.random.default_rng(seed)
    base = rng.gamma(0.3, 1.0, g)
    prof = np.tile(base, (8, 1))
    for t in range(8):
        genes = rng.choice(g, g // 10, replace=False)
        prof[t, genes] *= rng.lognormal(0.0, 1.5, genes.size)
    prof /= prof.sum(axis=1, keepdims=True)
    kind = rng.integers(0, 8, n)

    def cells(types: np.ndarray) -> np.ndarray:
        lam = rng.lognormal(np.log(1500), 0.3, types.size)[:, None] * prof[types]
        return rng.poisson(lam * rng.gamma(2.0, 0.5, lam.shape))

    x = cells(kind)
    dbl = np.zeros(n, bool)
    dbl[rng.choice(n, round(rate * n), replace=False)] = True
    x[dbl] += cells((kind[dbl] + rng.integers(1, 8, dbl.sum())) % 8)
    x[:, :5] = 0
    x[rng.choice(n, 2, replace=False), :5] = 1  # genes in < 3 cells
    empty = np.flatnonzero(~dbl)[:3]
    x[empty] = 0
    x[empty, 5:7] = 1  # cells with 2 genes: filtered out, no score
    return sp.csr_matrix(x.astype(np.int32)), dbl


def _scanpy(counts: sp.csr_matrix, rate: float, n_pcs: int) -> ad.AnnData:
    a = ad.AnnData(X=counts.astype(np.float32))
    sc.pp.scrublet(a, expected_doublet_rate=rate, n_prin_comps=n_pcs, random_state=0, verbose=False,
                   use_approx_neighbors=False)
    return a


def test_calls_agree_with_scanpy_exact_scrublet_and_recover_planted_doublets():
    """Reference tool: ``sc.pp.scrublet`` with sklearn's exact neighbours; ground truth: planted doublets."""
    counts, dbl = _library(1)
    before = counts.copy()
    ours = scrublet(counts, expected_rate=0.06, n_pcs=30, seed=0)
    ref = _scanpy(counts, 0.06, 30)
    np.testing.assert_array_equal((counts != before).nnz, 0)  # input untouched
    ref_score = ref.obs["doublet_score"].to_numpy()
    ref_call = ref.obs["predicted_doublet"].astype("boolean").fillna(False).to_numpy(dtype=bool)
    np.testing.assert_array_equal(np.isnan(ours.scores), np.isnan(ref_score))  # same cells filtered
    assert np.isnan(ours.scores).sum() == 3 and not ours.called[np.isnan(ours.scores)].any()
    both = ~np.isnan(ref_score)
    agree = (ours.called == ref_call)[both].mean()
    r = np.corrcoef(ours.scores[both], ref_score[both])[0, 1]
    thr = ref.uns["scrublet"]["threshold"]
    same = np.mean(ours.scores[both] == ref_score[both])
    print(f"\nagreement {agree:.4f}, score r {r:.6f}, identical {same:.4f}, "
          f"threshold {ours.threshold:.4f} vs {thr:.4f}, hvg {ours.n_hvg}")
    assert agree >= 0.99
    assert r > 0.99
    assert abs(ours.threshold - thr) < 0.02
    assert ours.n_neighbors == ref.uns["scrublet"]["parameters"]["n_neighbors"]
    recall, precision = ours.called[dbl].mean(), dbl[ours.called].mean()
    ref_recall, ref_precision = ref_call[dbl].mean(), dbl[ref_call].mean()
    print(f"planted doublets: recall {recall:.3f} (scanpy {ref_recall:.3f}), "
          f"precision {precision:.3f} (scanpy {ref_precision:.3f})")
    assert recall >= 0.75 and precision >= 0.7  # 150 planted among 2,500 cells
    assert recall >= ref_recall - 0.01 and precision >= ref_precision - 0.01


def test_flag_doublets_per_library_both_routes():
    """Two libraries scored separately; ``knn='sklearn'`` (scanpy's own path) is the reference."""
    c1, d1 = _library(2, n=1500, g=1500)
    c2, d2 = _library(3, n=1000, g=1500)
    obs = pd.DataFrame({"library": ["L1"] * 1500 + ["L2"] * 1000}, index=[f"c{i}" for i in range(2500)])
    a = ad.AnnData(X=sp.vstack([c1, c2], format="csr"), obs=obs,
                   var=pd.DataFrame(index=[f"G{j}" for j in range(1500)]))
    e = flag_doublets(a, expected_rate=0.06, knn="exact")
    s = flag_doublets(a, expected_rate=0.06, knn="sklearn")
    assert e.uns["doublets"]["knn"] == "exact" and s.uns["doublets"]["knn"] == "sklearn"
    assert set(e.uns["doublets"]["by_group"]) == {"L1", "L2"} and "threshold" not in e.uns["doublets"]
    assert e.obs["predicted_doublet"].dtype == bool
    for lib in ("L1", "L2"):
        m = (a.obs["library"] == lib).to_numpy()
        agree = (e.obs["predicted_doublet"].to_numpy()[m] == s.obs["predicted_doublet"].to_numpy()[m]).mean()
        assert agree >= 0.99, lib
    planted = np.r_[d1, d2]
    recall = e.obs["predicted_doublet"].to_numpy()[planted].mean()
    ref_recall = s.obs["predicted_doublet"].to_numpy()[planted].mean()
    print(f"\nplanted doublets, two small libraries: recall {recall:.3f} (scanpy {ref_recall:.3f})")
    assert recall >= ref_recall - 0.01 and recall > 0.6
    np.testing.assert_array_equal(e.X.toarray(), a.X.toarray())
    with pytest.raises(ValueError, match="use 'exact' or 'sklearn'"):
        flag_doublets(a, knn="annoy", expected_rate=SCHEMA["rna.doublets.expected_rate"])


def test_a_small_library_gets_as_many_components_as_its_variable_genes_allow(caplog):
    """Fewer highly variable genes than components (a small library or panel): scrublet runs with one
    component fewer than the genes it keeps, exactly as when asked for that many, and says so."""
    from pairedscreen.rna import scrublet as S

    counts, _ = _library(4, n=300, g=60)
    x = sp.csr_matrix(counts)
    keep_gene, keep_cell, totals = S._filters(x)
    h = S._hvg(x, keep_gene, keep_cell, S._row_factor(totals, np.median(totals))).size
    assert 2 <= h < 200
    with caplog.at_level("WARNING", logger="pairedscreen.rna.scrublet"):
        res = scrublet(counts, expected_rate=0.06, n_pcs=200, seed=0)
    assert f"using {h - 1}" in caplog.text
    ref = scrublet(counts, expected_rate=0.06, n_pcs=h - 1, seed=0)
    np.testing.assert_array_equal(res.scores, ref.scores)
    np.testing.assert_array_equal(res.called, ref.called)
