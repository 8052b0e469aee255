"""Numba kernels shared by several feature families (private; compiled on first call)."""

from __future__ import annotations

import numba
import numpy as np


@numba.njit(cache=True, nogil=True, error_model="numpy")
def _edt_1d(f, n, d, v, z):
    """Felzenszwalb-Huttenlocher lower envelope: d[q] = min_p (q - p)^2 + f[p] (exact in float).

    Squared 1-D distance transform of ``f[:n]`` into ``d[:n]``; entries ``>= 1e300`` count as
    infinite (no parabola). ``v`` (int64) and ``z`` (float) are scratch of sizes ``n`` and ``n + 1``.
    """
    k = 0
    first = -1
    for q in range(n):
        if f[q] < 1e300:
            first = q
            break
    if first < 0:
        for q in range(n):
            d[q] = f[q]
        return
    v[0] = first
    z[0] = -np.inf
    z[1] = np.inf
    for q in range(first + 1, n):
        if f[q] >= 1e300:
            continue
        s = ((f[q] + q * q) - (f[v[k]] + v[k] * v[k])) / (2.0 * q - 2.0 * v[k])
        while s <= z[k]:
            k -= 1
            s = ((f[q] + q * q) - (f[v[k]] + v[k] * v[k])) / (2.0 * q - 2.0 * v[k])
        k += 1
        v[k] = q
        z[k] = s
        z[k + 1] = np.inf
    k = 0
    for q in range(n):
        while z[k + 1] < q:
            k += 1
        dq = q - v[k]
        d[q] = dq * dq + f[v[k]]
