"""Per-perturbation sums over random parts of the cells: the sufficient statistics behind the split-half
ceilings (parts ``0..K/2-1`` vs the rest) and the cells-per-perturbation learning curve (the first ``k`` of
``K`` parts = ``k/K`` of every perturbation's cells).

``sums[p, k, f]``: the sum over part ``k`` of perturbation ``p`` of feature ``f`` (RNA: log1p CP10k of the
cells; paint: normalised sub-well profiles); ``counts[p, k, f]`` (or ``[p, k, 1]``, broadcast over
features): how many cells / sub-wells went into it (paint: finite values only). Built by
:mod:`pairedscreen.train.halves` one library / plate at a time.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass
class Parts:
    sums: np.ndarray     # (perturbations, K, features) float64
    counts: np.ndarray   # (perturbations, K, features or 1) float64

    @property
    def n_parts(self) -> int:
        return int(self.sums.shape[1])

    def mean(self, parts: Sequence[int]) -> np.ndarray:
        """Per-perturbation mean over the given parts (NaN where they hold nothing)."""
        idx = list(parts)
        s, n = self.sums[:, idx].sum(axis=1), self.counts[:, idx].sum(axis=1)
        n = np.broadcast_to(n, s.shape)
        return np.divide(s, n, out=np.full(s.shape, np.nan), where=n > 0)

    def halves(self) -> tuple[np.ndarray, np.ndarray]:
        """The two disjoint halves: parts ``[0, K/2)`` and ``[K/2, K)``."""
        h = self.n_parts // 2
        return self.mean(range(h)), self.mean(range(h, self.n_parts))

    def n(self) -> np.ndarray:
        """Per perturbation: the units (cells / sub-wells) in every part together (first feature)."""
        return self.counts[:, :, 0].sum(axis=1)

    def columns(self, cols: np.ndarray) -> Parts:
        """The same parts restricted to feature columns ``cols``."""
        c = self.counts if self.counts.shape[2] == 1 else self.counts[:, :, cols]
        return Parts(self.sums[:, :, cols], c)
