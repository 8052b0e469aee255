"""Exact kNN for scrublet: against a float64 brute-force reference and sklearn."""

from __future__ import annotations

import numba
import numpy as np
import pytest
from sklearn.neighbors import NearestNeighbors

from pairedscreen.rna.knn import count_neighbors_excluding_self, kneighbors, neighbors_excluding_self


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


@pytest.mark.parametrize("chunk", [7, 1000])
def test_count_neighbors_excluding_self_equals_full_lists(chunk):
    """Chunked counts = counts over :func:`neighbors_excluding_self`'s full lists (duplicates included)."""
    rng = np.random.default_rng(5)
    x = rng.normal(size=(900, 6))
    x[600:650] = x[:50]  # exact twins across the flag boundary
    flag = np.zeros(900, bool)
    flag[600:] = True
    want = flag[neighbors_excluding_self(x, 25)].sum(axis=1)
    np.testing.assert_array_equal(count_neighbors_excluding_self(x, 25, flag, chunk=chunk), want)
    with pytest.raises(ValueError, match="flag has shape"):
        count_neighbors_excluding_self(x, 25, flag[:10])
