"""Exact kNN for scrublet: against a float64 brute-force reference, sklearn and scanpy's own scrublet path."""

from __future__ import annotations

import anndata as ad
import numba
import numpy as np
import pandas as pd
import pytest
import scanpy as sc
import scipy.sparse as sp
from sklearn.neighbors import NearestNeighbors

from pairedscreen.rna.knn import kneighbors, neighbors_excluding_self, scanpy_exact_knn
from pairedscreen.rna.qc import flag_doublets


def _reference(q: np.ndarray, p: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Brute force in float64 by direct differences; ties broken by index (lexsort)."""
    d2 = ((q[:, None, :] - p[None, :, :]) ** 2).sum(-1)
    cols = np.arange(p.shape[0])
    idx = np.array([np.lexsort((cols, row))[:k] for row in d2])
    return idx, np.sqrt(np.take_along_axis(d2, idx, 1))


@pytest.mark.parametrize(
    ("n", "d", "k", "kind"),
    [
        (3000, 30, 57, "clusters"),     # several tiles, first-tile guess, shuffled order
        (700, 12, 40, "ordered"),       # input sorted along one axis: the guess needs the shuffle
        (500, 8, 499, "clusters"),      # k + margin >= n: every point a candidate
        (2500, 5, 30, "lattice"),       # integer lattice: masses of exact ties at the boundary
        (1200, 6, 25, "duplicates"),    # many exact duplicate points
    ],
)
def test_kneighbors_equals_float64_brute_force(n, d, k, kind):
    rng = np.random.default_rng(n + k)
    if kind == "lattice":
        x = rng.integers(0, 4, (n, d)).astype(float)
    elif kind == "duplicates":
        base = rng.normal(size=(n // 4, d))
        x = base[rng.integers(0, len(base), n)]
    elif kind == "ordered":
        x = rng.normal(size=(n, d))
        x = x[np.argsort(x[:, 0])]
    else:
        centers = rng.normal(size=(8, d)) * 4
        x = centers[rng.integers(0, 8, n)] + rng.normal(size=(n, d))
    idx, dist, redone = kneighbors(x, x, k)
    ref_i, ref_d = _reference(x, x, k)
    np.testing.assert_array_equal(idx, ref_i)
    np.testing.assert_allclose(dist, ref_d, rtol=0, atol=1e-9)
    if kind == "lattice":
        assert redone > 0  # the float32 pass cannot separate exact ties: those rows are redone exactly


def test_kneighbors_other_queries_and_bad_input():
    rng = np.random.default_rng(3)
    p, q = rng.normal(size=(2600, 10)), rng.normal(size=(300, 10))
    idx, dist, _ = kneighbors(q, p, 20)
    ref_i, ref_d = _reference(q, p, 20)
    np.testing.assert_array_equal(idx, ref_i)
    np.testing.assert_allclose(dist, ref_d, atol=1e-9)
    before = numba.get_num_threads()
    one, _, _ = kneighbors(q, p, 20, threads=1)  # the rule's threads cap numba's; restored after
    np.testing.assert_array_equal(one, ref_i)
    assert numba.get_num_threads() == before
    with pytest.raises(ValueError, match="NaN or infinite"):
        kneighbors(np.full((2, 10), np.nan), p, 3)
    with pytest.raises(ValueError, match="dimensions differ"):
        kneighbors(q[:, :5], p, 3)
    with pytest.raises(ValueError, match="neighbours asked of"):
        kneighbors(q, p[:10], 11)


def test_neighbors_excluding_self_equals_sklearn():
    """Reference tool: sklearn's ``NearestNeighbors().kneighbors()`` (X=None: not its own neighbour)."""
    rng = np.random.default_rng(7)
    x = rng.normal(size=(4000, 20)) * rng.uniform(0.2, 3, 20)
    ours = neighbors_excluding_self(x, 60)
    ref = NearestNeighbors(n_neighbors=60, algorithm="brute").fit(x).kneighbors(return_distance=False)
    np.testing.assert_array_equal(np.sort(ours, 1), np.sort(ref, 1))
    assert not (ours == np.arange(4000)[:, None]).any()
    dup = np.vstack([x[:50], x[:50]])  # exact duplicates: each point's twin is its nearest other point
    nb = neighbors_excluding_self(dup, 3)
    np.testing.assert_array_equal(nb[:, 0], np.r_[np.arange(50, 100), np.arange(50)])


def _library(seed: int, n: int = 1500, g: int = 300) -> sp.csr_matrix:
    rng = np.random.default_rng(seed)
    types = rng.dirichlet(np.full(g, 0.3), size=5)
    kind = rng.integers(0, 5, n)
    x = np.vstack([rng.multinomial(s, types[t]) for s, t in zip(rng.poisson(1500, n), kind, strict=True)])
    dbl = rng.choice(n, 90, replace=False)
    x[dbl] += x[rng.integers(0, n, 90)]
    return sp.csr_matrix(x.astype(np.float32))


def test_scrublet_scores_equal_scanpy_own_exact_path():
    """Reference tool: scanpy's scrublet with its own sklearn kNN; swapping in ours changes nothing.

    As in nearly every real run, simulated doublets here include duplicate points (a parent pair drawn
    twice, or a cell paired with itself); scanpy's exact path then counts the k_adj - 1 nearest other
    cells, as ours does (see ``scanpy_exact_knn``). The precondition is checked, not assumed.
    """
    counts = _library(11)
    runs = {}
    for mode in ("sklearn", "exact"):
        a = ad.AnnData(X=counts.copy(), var=pd.DataFrame(index=[f"G{i}" for i in range(counts.shape[1])]))
        kw = dict(expected_doublet_rate=0.06, n_prin_comps=20, random_state=0, verbose=False,
                  use_approx_neighbors=False)
        if mode == "exact":
            with scanpy_exact_knn() as cls:
                patched = cls._nearest_neighbor_classifier
                sc.pp.scrublet(a, **kw)
            assert cls._nearest_neighbor_classifier is not patched  # restored after the block
        else:
            sc.pp.scrublet(a, **kw)
        runs[mode] = a
    parents = np.sort(runs["exact"].uns["scrublet"]["doublet_parents"], axis=1)
    duplicated = len(np.unique(parents, axis=0)) < len(parents) or (parents[:, 0] == parents[:, 1]).any()
    assert duplicated, "test data changed: no duplicate simulated doublets"
    s, e = runs["sklearn"], runs["exact"]
    np.testing.assert_array_equal(e.obs["doublet_score"].to_numpy(), s.obs["doublet_score"].to_numpy())
    sim = "doublet_scores_sim"
    np.testing.assert_array_equal(e.uns["scrublet"][sim], s.uns["scrublet"][sim])
    assert e.uns["scrublet"]["threshold"] == s.uns["scrublet"]["threshold"]
    np.testing.assert_array_equal(e.obs["predicted_doublet"], s.obs["predicted_doublet"])


def test_flag_doublets_knn_choice():
    counts = _library(11)
    obs = pd.DataFrame({"library": "L1"}, index=[f"c{i}" for i in range(counts.shape[0])])
    a = ad.AnnData(X=counts.astype(np.int64), obs=obs, var=pd.DataFrame(index=[f"G{i}" for i in range(300)]))
    e = flag_doublets(a, expected_rate=0.06, knn="exact")
    s = flag_doublets(a, expected_rate=0.06, knn="sklearn")
    assert e.uns["doublets"]["knn"] == "exact" and s.uns["doublets"]["knn"] == "sklearn"
    np.testing.assert_array_equal(e.obs["doublet_score"], s.obs["doublet_score"])
    with pytest.raises(ValueError, match="use 'exact' or 'sklearn'"):
        flag_doublets(a, knn="annoy")


def test_scanpy_internals_moved_is_a_clear_error(monkeypatch):
    from scanpy.preprocessing._scrublet import core

    monkeypatch.setattr(core, "Scrublet", object)
    with pytest.raises(RuntimeError, match="knn='sklearn'"), scanpy_exact_knn():
        pass
