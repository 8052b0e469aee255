"""Cell calling: barcode-rank knee + EmptyDrops against a planted ambient profile."""

from __future__ import annotations

import time

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp
from config_values import SCHEMA

from pairedscreen.rna.calling import barcode_ranks, call_cells, emptydrops


def _droplets(n_empty: int, n_cells: int, n_genes: int = 1000, seed: int = 0):
    """Empty droplets = multinomial draws from one ambient profile; cells = draws from 5 cell-type
    profiles (plus 10% ambient), lognormal sizes, some of them small (below the knee)."""
    rng = np.random.default_rng(seed)
    amb = rng.dirichlet(np.full(n_genes, 0.3))
    types = rng.dirichlet(np.full(n_genes, 0.3), size=5)
    size_e = rng.poisson(12, n_empty)
    size_c = np.exp(rng.normal(np.log(1500), 0.9, n_cells)).astype(int) + 220
    sizes = np.concatenate([size_c, size_e])
    profile = np.concatenate([np.arange(n_cells) % 5, np.full(n_empty, 5)])   # 5 = ambient
    probs = np.vstack([0.9 * types + 0.1 * amb, amb[None, :]])
    rows, cols = [], []
    for k in range(6):
        members = np.flatnonzero(profile == k)
        row = np.repeat(members, sizes[members])
        rows.append(row)
        cols.append(rng.choice(n_genes, size=len(row), p=probs[k]))
    rows_a, cols_a = np.concatenate(rows), np.concatenate(cols)
    x = sp.csr_matrix((np.ones(len(rows_a), np.int64), (rows_a, cols_a)), shape=(n_cells + n_empty, n_genes))
    x.sum_duplicates()
    names = [f"L1_BC{i:06d}" for i in range(x.shape[0])]
    adata = ad.AnnData(X=x, obs=pd.DataFrame({"barcode": [n[3:] for n in names]}, index=names))
    truth = np.zeros(x.shape[0], bool)
    truth[:n_cells] = True
    return adata, truth


def test_emptydrops_recovers_planted_cells():
    adata, truth = _droplets(n_empty=6000, n_cells=600)
    cells, table = call_cells(adata, fdr=0.01, ambient_max_umis=100, min_umis=200, n_iter=2000)
    called = adata.obs_names.isin(cells.obs_names)
    recall = (called & truth).sum() / truth.sum()
    precision = (called & truth).sum() / called.sum()
    cc = cells.uns["cell_calling"]
    below_knee = int((truth & (np.asarray(adata.X.sum(1)).ravel() < cc["knee"])).sum())
    print(f"\ncalling: recall {recall:.3f} precision {precision:.3f}; knee {cc['knee']:.0f}, "
          f"inflection {cc['inflection']:.0f}, {below_knee} planted cells below the knee, "
          f"tested {cc['n_tested']}")
    assert recall >= 0.99 and precision >= 0.99
    assert below_knee > 50           # the test really exercises EmptyDrops, not only the knee
    assert cc["inflection"] < cc["knee"]
    assert cells.uns["ambient_profile"].shape == (adata.n_vars,)
    assert np.isclose(cells.uns["ambient_profile"].sum(), 1.0)
    assert list(table.columns[:4]) == ["obs_name", "barcode", "total", "rank"]
    assert table["total"].is_monotonic_decreasing and table["is_cell"].sum() == cells.n_obs


def test_emptydrops_pvalues_uniform_for_ambient_draws():
    """Barcodes drawn from the ambient profile itself must not be called (p-values ~ uniform)."""
    rng = np.random.default_rng(1)
    g = 300
    amb = rng.dirichlet(np.ones(g))
    sizes = np.concatenate([rng.poisson(20, 3000), rng.integers(200, 600, 400)])
    x = sp.csr_matrix(np.vstack([rng.multinomial(n, amb) for n in sizes]))
    df, _ = emptydrops(x, ambient_max_umis=100, min_umis=200, n_iter=2000, seed=3)
    p = df.loc[df["tested"], "pvalue"].to_numpy()
    print(f"\nnull p-values: n={len(p)}, mean {p.mean():.3f}, frac<0.05 {np.mean(p < 0.05):.3f}, "
          f"min FDR {df['fdr'].min():.3f}")
    assert len(p) == 400
    assert 0.4 < p.mean() < 0.6 and np.mean(p < 0.05) < 0.1
    assert df["fdr"].min() > 0.01


def test_knee_on_two_level_curve():
    totals = np.concatenate([np.full(2000, 5000), np.full(50000, 20)])
    r = barcode_ranks(totals, lower=10)
    assert 20 < r["inflection"] < 5000 and r["knee"] >= r["inflection"]


def test_calling_is_fast_on_100k_barcodes():
    adata, truth = _droplets(n_empty=95000, n_cells=5000, n_genes=2000, seed=2)
    call_cells(adata[4000:7000].copy(), n_iter=10,
               fdr=SCHEMA["rna.cell_calling.fdr"],
               ambient_max_umis=SCHEMA["rna.cell_calling.ambient_max_umis"],
               min_umis=SCHEMA["rna.cell_calling.min_umis"])     # compile the kernel outside the timing
    t = time.perf_counter()
    cells, _ = call_cells(adata, n_iter=10000,
                          fdr=SCHEMA["rna.cell_calling.fdr"],
                          ambient_max_umis=SCHEMA["rna.cell_calling.ambient_max_umis"],
                          min_umis=SCHEMA["rna.cell_calling.min_umis"])
    dt = time.perf_counter() - t
    called = adata.obs_names.isin(cells.obs_names)
    print(f"\ncalling 100k barcodes x 2000 genes, 10k iterations: {dt:.1f} s; "
          f"recall {(called & truth).sum() / truth.sum():.3f}")
    assert dt < 30
