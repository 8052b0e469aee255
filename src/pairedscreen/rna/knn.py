"""Exact Euclidean k-nearest neighbours for scrublet's doublet scores, about twice sklearn's speed.

Scrublet (:mod:`pairedscreen.rna.scrublet`) needs the ``k_adj`` nearest neighbours of every observed
and simulated cell: at 100k cells that is 300k points and k_adj ~ 470. :func:`kneighbors` returns the
neighbours sklearn's exact brute force finds:

1. a float32 GEMM (``[q, 1] . [-2p, |p|^2]``) gives ``|p|^2 - 2 q.p`` for every pair, tile by tile
   in cache; per query, values under a threshold (guessed from the first tile of points taken in a
   fixed shuffled order, tightened as a buffer fills) are kept until the ``k + margin`` smallest
   remain (numba, parallel over blocks of queries);
2. the candidates' distances are recomputed in float64 by direct differences and sorted;
3. every row is *certified*: the float32 error of step 1 is bounded (Higham's gamma_n for a dot
   product of length d+1, plus input rounding, doubled), and the row is accepted only if its k-th
   exact distance lies strictly below the smallest distance any non-candidate could have. Rows that
   fail (ties or near-ties across the margin) are redone by a float64 scan.

So the result is exact, not approximate; ties are broken by index. Euclidean metric only.
:func:`count_neighbors_excluding_self` runs it over query chunks against points prepared once, so the
memory is one chunk's neighbour lists, not n x k.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass

import numba
import numpy as np
from threadpoolctl import threadpool_limits

_U32 = float(np.finfo(np.float32).eps) / 2  # unit roundoff of float32
_QB = 64  # queries per block (one numba task)
_TB = 2048  # database points per GEMM tile (64 x 2048 float32 = 512 KiB: stays in L2)


@numba.njit(inline="always")
def _sift_down(hd: np.ndarray, hi: np.ndarray, size: int) -> None:
    """Restore the max-heap on (value, index) after the root was replaced.

    Ordering by index too makes the root the last of equal values, so a heap that evicts its root
    keeps, among ties, the lower indices.
    """
    p = 0
    while True:
        c = 2 * p + 1
        if c >= size:
            break
        if c + 1 < size and (hd[c + 1] > hd[c] or (hd[c + 1] == hd[c] and hi[c + 1] > hi[c])):
            c += 1
        if hd[c] > hd[p] or (hd[c] == hd[p] and hi[c] > hi[p]):
            hd[c], hd[p] = hd[p], hd[c]
            hi[c], hi[p] = hi[p], hi[c]
            p = c
        else:
            break


@numba.njit(inline="always")
def _compact(bv: np.ndarray, bi: np.ndarray, cnt: int, kc: int) -> float:
    """Keep the kc smallest of the cnt buffered values (ties: the earlier ones); return the largest kept."""
    thr = np.partition(bv[:cnt].copy(), kc - 1)[kc - 1]
    ties = kc
    for j in range(cnt):
        if bv[j] < thr:
            ties -= 1
    w = 0  # one forward pass: writes land at or before the read position
    for j in range(cnt):
        keep = bv[j] < thr
        if not keep and bv[j] == thr and ties > 0:
            keep = True
            ties -= 1
        if keep:
            bv[w] = bv[j]
            bi[w] = bi[j]
            w += 1
    return thr


@numba.njit(inline="always")
def _kth_smallest(row: np.ndarray, w: int, kth: int) -> float:
    """The kth smallest (1-based) of row[:w], by a small max-heap."""
    hd = np.full(kth, np.inf, np.float32)
    hi = np.zeros(kth, np.int64)
    for j in range(w):
        if row[j] < hd[0]:
            hd[0] = row[j]
            _sift_down(hd, hi, kth)
    return hd[0]


@numba.njit(parallel=True, cache=True)
def _candidates(
    qa: np.ndarray, tiles: np.ndarray, n: int, kc: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The kc smallest float32 values of ``qa . tile`` per query row (unordered), and found[r].

    A threshold is first guessed from the first tile (a quantile a few standard errors above the
    expected kc/n one); values under the row's threshold are appended to a buffer of 4 kc, and a full
    buffer is cut back to its kc smallest, which tightens the threshold. A row whose guess was too
    tight (fewer than kc values under it: rare by construction) has found[r] False.
    """
    nq = qa.shape[0]
    ntile, _, tb = tiles.shape
    nblk = (nq + _QB - 1) // _QB
    cap = 4 * kc
    w0 = min(tb, n)
    expect = kc * w0 / n
    kth = min(w0, int(expect + 3.0 * np.sqrt(expect) + 4.0))
    cand_v = np.empty((nq, kc), np.float32)
    cand_i = np.empty((nq, kc), np.int64)
    found = np.zeros(nq, np.bool_)
    for b in numba.prange(nblk):
        r0 = b * _QB
        m = min(nq, r0 + _QB) - r0
        q = np.ascontiguousarray(qa[r0 : r0 + m])
        bv = np.empty((m, cap), np.float32)
        bi = np.empty((m, cap), np.int64)
        cnt = np.zeros(m, np.int64)
        thr = np.full(m, np.inf, np.float32)
        g = np.empty((m, tb), np.float32)
        for t in range(ntile):
            t0 = t * tb
            w = min(tb, n - t0)
            np.dot(q, tiles[t], g)
            for r in range(m):
                row = g[r]
                if t == 0 and w0 < n:
                    thr[r] = _kth_smallest(row, w0, kth)
                th = thr[r]
                c = cnt[r]
                for j in range(w):
                    if row[j] < th:
                        if c == cap:
                            th = _compact(bv[r], bi[r], c, kc)
                            c = kc
                            if not row[j] < th:
                                continue
                        bv[r, c] = row[j]
                        bi[r, c] = t0 + j
                        c += 1
                cnt[r] = c
                thr[r] = th
        for r in range(m):
            c = cnt[r]
            found[r0 + r] = c >= kc
            if c > kc:
                _compact(bv[r], bi[r], c, kc)
            if c >= kc:
                cand_v[r0 + r] = bv[r, :kc]
                cand_i[r0 + r] = bi[r, :kc]
            else:
                cand_v[r0 + r] = np.inf
                cand_i[r0 + r] = 0
    return cand_v, cand_i, found


@numba.njit(inline="always")
def _order(dist: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """Positions sorting by (dist, idx): a quicksort on dist, then runs of equal dist by idx."""
    o = np.argsort(dist)
    n = o.size
    a = 0
    while a < n:
        b = a + 1
        while b < n and dist[o[b]] == dist[o[a]]:
            b += 1
        for i in range(a + 1, b):  # insertion sort of the (rare, short) tie run
            v = o[i]
            j = i - 1
            while j >= a and idx[o[j]] > idx[v]:
                o[j + 1] = o[j]
                j -= 1
            o[j + 1] = v
        a = b
    return o


@numba.njit(parallel=True, cache=True, fastmath={"reassoc", "contract"})  # vectorised sums; no NaN/inf tricks
def _refine(
    q: np.ndarray,
    p: np.ndarray,
    perm: np.ndarray,
    cand_v: np.ndarray,
    cand_i: np.ndarray,
    bound: np.ndarray,
    k: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Exact float64 distances of the candidates (``perm[cand_i]``), sorted; ok[r] if row r is certified."""
    nq, kc = cand_i.shape
    d = q.shape[1]
    out_i = np.empty((nq, k), np.int64)
    out_d = np.empty((nq, k), np.float64)
    ok = np.zeros(nq, np.bool_)
    for r in numba.prange(nq):
        ex = np.empty(kc, np.float64)
        ids = np.empty(kc, np.int64)
        vmax = -np.inf
        for c in range(kc):
            j = perm[cand_i[r, c]]
            ids[c] = j
            s = 0.0
            for t in range(d):
                diff = q[r, t] - p[j, t]
                s += diff * diff
            ex[c] = s
            vmax = max(vmax, np.float64(cand_v[r, c]))
        order = _order(ex, ids)
        for c in range(k):
            out_i[r, c] = ids[order[c]]
            out_d[r, c] = ex[order[c]]
        # any non-candidate has d^2 >= vmax + |q|^2 - bound[r]
        ok[r] = out_d[r, k - 1] < vmax - bound[r]
    return out_i, out_d, ok


@numba.njit(parallel=True, cache=True)
def _exact_rows(q: np.ndarray, p: np.ndarray, rows: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Plain float64 scan for the rows that could not be certified (ties broken by index)."""
    n, d = p.shape
    out_i = np.empty((rows.size, k), np.int64)
    out_d = np.empty((rows.size, k), np.float64)
    for a in numba.prange(rows.size):
        r = rows[a]
        hd = np.full(k, np.inf)
        hi = np.full(k, -1, np.int64)
        for j in range(n):
            s = 0.0
            for t in range(d):
                diff = q[r, t] - p[j, t]
                s += diff * diff
            if s < hd[0]:  # strict: among equal distances the lower index stays
                hd[0] = s
                hi[0] = j
                _sift_down(hd, hi, k)
        o = _order(hd, hi)
        for c in range(k):
            out_i[a, c] = hi[o[c]]
            out_d[a, c] = hd[o[c]]
    return out_i, out_d


def _error_bound(qn: np.ndarray, pmax: float, d: int) -> np.ndarray:
    """Upper bound on |float32 (|p|^2 - 2 q.p) - exact| for every p, per query (twice the proof's)."""
    n = d + 1
    gamma = n * _U32 / (1 - n * _U32)
    c = gamma * (1 + _U32) ** 2 + 2.0001 * _U32
    return 2.0 * c * (2.0 * qn * pmax + pmax * pmax)


@contextlib.contextmanager
def _numba_threads(threads: int | None) -> Iterator[None]:
    if threads is None:
        yield
        return
    before = numba.get_num_threads()
    numba.set_num_threads(max(1, min(int(threads), numba.config.NUMBA_NUM_THREADS)))
    try:
        yield
    finally:
        numba.set_num_threads(before)


def kneighbors(
    queries: np.ndarray, points: np.ndarray, k: int, margin: int = 8, threads: int | None = None
) -> tuple[np.ndarray, np.ndarray, int]:
    """Exact k nearest ``points`` of every query: (indices, distances, rows redone in float64).

    Rows sorted by distance, ties by index; a query that is also a point finds itself first at 0.
    ``threads`` caps numba's threads (None: numba's default).
    """
    with _numba_threads(threads):
        return _kneighbors(queries, points, k, margin)


def _drop_self(idx: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """k + 1 neighbours -> the k nearest others: the point itself is removed from its list; if k + 1
    exact duplicates of lower index crowd it out, the first column is dropped instead, as sklearn does."""
    keep = idx != rows[:, None]
    keep[keep.all(axis=1), 0] = False
    return idx[keep].reshape(idx.shape[0], idx.shape[1] - 1)


@dataclass(frozen=True)
class _Index:
    """The points, prepared once for any number of query batches."""

    p: np.ndarray       # float64 points
    psq: np.ndarray     # their squared norms
    perm: np.ndarray    # fixed shuffled order of the tiles
    tiles: np.ndarray   # float32 [-2p, |p|^2] in that order, (ntile, d + 1, _TB)


def _index(points: np.ndarray) -> _Index:
    p = np.ascontiguousarray(points, dtype=np.float64)
    if p.ndim != 2:
        raise ValueError(f"points have shape {p.shape}: need a 2-D array")
    if not np.isfinite(p).all():
        raise ValueError("kNN input holds NaN or infinite values")
    n, d = p.shape
    psq = np.einsum("ij,ij->i", p, p)
    ntile = -(-n // _TB)
    # points in a fixed shuffled order, so that the first tile (the threshold guess) is a fair sample
    # whatever the input's order (scrublet stacks observed cells, then simulated doublets)
    perm = np.random.default_rng(0).permutation(n)
    pa = np.zeros((ntile * _TB, d + 1), np.float32)
    pa[:n, :d] = -2.0 * p[perm]
    pa[:n, d] = psq[perm]
    tiles = np.ascontiguousarray(pa.reshape(ntile, _TB, d + 1).transpose(0, 2, 1))
    return _Index(p, psq, perm, tiles)


def _kneighbors(
    queries: np.ndarray, points: np.ndarray | _Index, k: int, margin: int
) -> tuple[np.ndarray, np.ndarray, int]:
    ix = points if isinstance(points, _Index) else _index(points)
    p = ix.p
    q = np.ascontiguousarray(queries, dtype=np.float64)
    n, d = p.shape
    if q.ndim != 2 or q.shape[1] != d:
        raise ValueError(f"queries have shape {q.shape}, points {p.shape}: dimensions differ")
    if not 1 <= k <= n:
        raise ValueError(f"k = {k} neighbours asked of {n} points")
    if not np.isfinite(q).all():
        raise ValueError("kNN input holds NaN or infinite values")
    kc = min(n, k + margin)
    qsq = np.einsum("ij,ij->i", q, q)
    qa = np.ones((q.shape[0], d + 1), np.float32)
    qa[:, :d] = q
    with threadpool_limits(1):  # one BLAS thread per numba task: no oversubscription
        cand_v, cand_i, found = _candidates(qa, ix.tiles, n, kc)
    del qa
    bound = _error_bound(np.sqrt(qsq), float(np.sqrt(ix.psq.max())), d) - qsq
    idx, dist2, ok = _refine(q, p, ix.perm, cand_v, cand_i, bound, k)
    if kc == n:
        ok[:] = True  # every point is a candidate: nothing left out
    ok &= found
    redo = np.flatnonzero(~ok)
    if redo.size:
        idx[redo], dist2[redo] = _exact_rows(q, p, redo, k)
    return idx, np.sqrt(dist2), int(redo.size)


def neighbors_excluding_self(x: np.ndarray, k: int, threads: int | None = None) -> np.ndarray:
    """The k nearest other points of every point (sklearn's ``kneighbors()`` with X=None).

    A point is removed from its own list; if k+1 exact duplicates of lower index crowd it out, the
    first column is dropped instead, as sklearn does.
    """
    idx, _, _ = kneighbors(x, x, k + 1, threads=threads)
    return _drop_self(idx, np.arange(idx.shape[0]))


def count_neighbors_excluding_self(
    x: np.ndarray, k: int, flag: np.ndarray, threads: int | None = None, chunk: int = 8192
) -> np.ndarray:
    """For every point, how many of its k nearest other points (:func:`neighbors_excluding_self`) have
    ``flag`` set; queries run ``chunk`` at a time against the points prepared once (memory ~ chunk x k)."""
    flag = np.asarray(flag, bool)
    if flag.shape != (x.shape[0],):
        raise ValueError(f"flag has shape {flag.shape}, points {x.shape}")
    ix = _index(x)
    out = np.empty(x.shape[0], np.int64)
    with _numba_threads(threads):
        for s in range(0, x.shape[0], chunk):
            e = min(x.shape[0], s + chunk)
            idx, _, _ = _kneighbors(ix.p[s:e], ix, k + 1, 8)
            out[s:e] = flag[_drop_self(idx, np.arange(s, e))].sum(axis=1)
    return out
