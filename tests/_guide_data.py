"""Guide-count matrices with planted truth at low (Parse-like) and high (10x-like) background, shared by
tests/test_rna_guides.py and benchmarks/guide_assignment.py."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp


def planted_regime(regime: str, n: int = 3000, n_guides: int = 12, seed: int = 0):
    """Guide counts with planted truth: 75 % single-guide cells, 8 % two-guide cells, 17 % no guide.

    ``low`` (Parse Evercode-like): background almost all zeros (Poisson 0.005), carriers' counts from 5 up
    (5 + NB, mean 30, heavy at 5-20: the counts a nonzero-only mixture splits). ``high`` (10x guide
    capture-like): every cell carries 1-20 ambient UMIs of every guide (NB scaled by a per-cell size
    factor), carriers 50 + NB (mean 200)."""
    rng = np.random.default_rng(seed)
    kind = rng.choice(3, n, p=[0.75, 0.08, 0.17])
    first = rng.integers(0, n_guides, n)
    second = (first + 1 + rng.integers(0, n_guides - 1, n)) % n_guides
    if regime == "low":
        x = rng.poisson(0.005, (n, n_guides))

        def signal(k):
            return 5 + rng.negative_binomial(0.8, 0.8 / (0.8 + 25), k)
    else:
        size = rng.lognormal(0, 0.4, n)[:, None]
        x = np.minimum(rng.negative_binomial(4, 4 / (4 + 6 * size), (n, n_guides)) + 1, 20)

        def signal(k):
            return 50 + rng.negative_binomial(2, 2 / (2 + 150), k)
    carriers = np.flatnonzero(kind < 2)
    x[carriers, first[carriers]] += signal(carriers.size)
    two = np.flatnonzero(kind == 1)
    x[two, second[two]] += signal(two.size)
    truth = [frozenset() if k == 2 else frozenset({f} if k == 0 else {f, o})
             for k, f, o in zip(kind, first, second, strict=True)]
    return sp.csr_matrix(x), truth


def single_guide_pr(called: list[frozenset], truth: list[frozenset]) -> tuple[float, float]:
    """Precision and recall of single-guide calls: a cell called with one guide is right when the truth
    is that one guide; recall over the true single-guide cells."""
    tp = sum(1 for c, t in zip(called, truth, strict=True) if len(c) == 1 and c == t)
    return tp / max(sum(len(c) == 1 for c in called), 1), tp / max(sum(len(t) == 1 for t in truth), 1)
