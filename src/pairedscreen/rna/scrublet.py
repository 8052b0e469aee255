"""Scrublet's doublet scores for one library, lean enough for a superloaded channel (100k cells).

scanpy's ``sc.pp.scrublet`` holds several full copies of the library (float copies, a raw layer, a log
layer) and then a dense z-scored matrix of every observed *and* simulated cell (3 n_cells x n_hvg
float64), ~14x the sparse count matrix; its neighbour search above 50k cells is approximate.
:func:`scrublet` computes the same scores step by step, in row chunks, from the count matrix as given:

1. genes in >= 3 cells, then cells with >= 3 of those genes (scanpy's ``filter_genes`` / ``filter_cells``);
2. counts per cell over the kept genes normalised to their median (``normalize_total``, float32 as
   scanpy), ``log1p``; highly variable genes by scanpy's ``'seurat'`` dispersion rule (its defaults:
   20 mean bins, mean in (0.0125, 3), normalised dispersion > 0.5), from per-gene mean/variance
   accumulated chunk by chunk;
3. the raw counts of the kept cells on those genes (``R``) and their normalised values renormalised to
   1e6 (``N``): one float32 CSR sharing its index arrays, the only copy of the data kept;
4. the simulated doublets: parent pairs drawn exactly as scanpy draws them (``sample_without_replacement``
   on the n x n grid with ``RandomState(seed)``), counts = sum of the parents' raw counts ``R``,
   normalised to 1e6; built chunk by chunk and never kept whole;
5. z-scores with the observed cells' gene means / standard deviations (ddof 1), PCA fitted on the
   observed cells: scanpy's ARPACK ``svds`` converges (tol 0) to the top eigenvectors of the z-scored
   matrix's Gram matrix ``Z^T Z``, which is accumulated here over dense row chunks (n_hvg x n_hvg) and
   handed to the same ARPACK call (``eigsh``, tol 0, sklearn's v0); the z-scored matrices themselves are
   never formed: ``Z @ V = N @ (V / sd) - (mu / sd) @ V``;
6. for every observed and simulated cell the ``k_adj - 1`` exact nearest other cells
   (:func:`pairedscreen.rna.knn.count_neighbors_excluding_self`, chunked over queries), with k_adj in
   the score's denominator; the Bayesian score and the ``threshold_minimum`` of the simulated scores are
   scanpy's (``scanpy/preprocessing/_scrublet/core.py``, BSD-3), line for line.

The neighbourhood is the one scanpy 1.11's exact path uses on real data. That path asks sklearn for
k_adj neighbours including the cell itself, drops the self column, and adds it back only if no row's
first neighbour is the row itself (an ``.any()`` over rows). Duplicate points make that check fire: a
cell with a lower-index twin finds the twin first. Simulated doublets nearly always contain duplicates
(a pair drawn twice in either order; a cell paired with itself), so scanpy effectively never counts the
cell itself; when no duplicate exists (a few hundred cells) it does, and its simulated scores (hence the
threshold) differ from ours by that one neighbour. Observed cells' scores never differ.

PCA signs/rotations within the subspace do not change distances, so the scores equal scanpy's up to
neighbours tied to rounding. Peak memory: the input matrix, ``R``/``N`` (12 bytes per non-zero on the
highly variable genes), the embeddings and one chunk.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import pandas as pd
import scipy.sparse as sp
import scipy.sparse.linalg
from sklearn.utils.random import sample_without_replacement

from pairedscreen.rna.knn import count_neighbors_excluding_self

log = logging.getLogger(__name__)

MIN_CELLS = 3          # pp.filter_genes(min_cells=3) in scanpy's scrublet
MIN_GENES = 3          # pp.filter_cells(min_genes=3)
SIM_DOUBLET_RATIO = 2.0
STDEV_DOUBLET_RATE = 0.02
SIM_TARGET_SUM = 1e6   # both observed and simulated cells, before the z-score
HVG_MIN_MEAN, HVG_MAX_MEAN, HVG_MIN_DISP, HVG_N_BINS = 0.0125, 3.0, 0.5, 20  # highly_variable_genes defaults
_CHUNK_NNZ = 4_000_000  # non-zeros per row chunk (~50 MB of temporaries)


@dataclass
class ScrubletResult:
    """Per observed cell: ``scores`` (NaN for cells scrublet filters out), ``called``; and the run's facts."""

    scores: np.ndarray
    called: np.ndarray
    threshold: float
    scores_sim: np.ndarray
    n_hvg: int
    n_neighbors: int


def _row_chunks(indptr: np.ndarray, nnz: int = _CHUNK_NNZ) -> Iterator[tuple[int, int]]:
    """Row ranges [r0, r1) of about ``nnz`` stored entries each (at least one row)."""
    n = indptr.size - 1
    r0 = 0
    while r0 < n:
        r1 = int(np.searchsorted(indptr, indptr[r0] + nnz, side="right")) - 1
        r1 = min(n, max(r1, r0 + 1))
        yield r0, r1
        r0 = r1


def _chunk(x: sp.csr_matrix, r0: int, r1: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(data, column indices, row index relative to r0) of rows [r0, r1), views where possible."""
    a, b = int(x.indptr[r0]), int(x.indptr[r1])
    rows = np.repeat(np.arange(r1 - r0), np.diff(x.indptr[r0 : r1 + 1]))
    return x.data[a:b], x.indices[a:b], rows


def _filters(x: sp.csr_matrix) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Kept genes (in >= 3 cells), kept cells (>= 3 kept genes) and the kept cells' float32 totals."""
    n, g = x.shape
    in_cells = np.zeros(g, np.int64)
    for r0, r1 in _row_chunks(x.indptr):
        d, j, _ = _chunk(x, r0, r1)
        in_cells += np.bincount(j[d > 0], minlength=g)
    keep_gene = in_cells >= MIN_CELLS
    n_genes = np.zeros(n, np.int64)
    totals = np.zeros(n, np.float64)
    for r0, r1 in _row_chunks(x.indptr):
        d, j, rows = _chunk(x, r0, r1)
        kg = keep_gene[j]
        n_genes[r0:r1] = np.bincount(rows[kg & (d > 0)], minlength=r1 - r0)
        totals[r0:r1] = np.bincount(rows[kg], weights=d[kg].astype(np.float64), minlength=r1 - r0)
    keep_cell = n_genes >= MIN_GENES
    return keep_gene, keep_cell, totals[keep_cell].astype(np.float32)


def _row_factor(totals32: np.ndarray, target: float | np.floating) -> np.ndarray:
    """scanpy's ``normalize_total`` divisor per cell (float32; a zero total divides by 1)."""
    f = (totals32 / np.float32(target)).astype(np.float32)
    return f + (f == 0)


def _hvg(x: sp.csr_matrix, keep_gene: np.ndarray, keep_cell: np.ndarray, f1: np.ndarray) -> np.ndarray:
    """Highly variable genes (indices into x's columns) as ``highly_variable_genes(flavor='seurat')``
    on log1p of the median-normalised kept cells x kept genes."""
    g = x.shape[1]
    cell_pos = np.cumsum(keep_cell) - 1
    s1 = np.zeros(g)
    s2 = np.zeros(g)
    for r0, r1 in _row_chunks(x.indptr):
        d, j, rows = _chunk(x, r0, r1)
        m = keep_gene[j] & keep_cell[r0 + rows]
        v = d[m].astype(np.float32) / f1[cell_pos[r0 + rows[m]]]
        v = np.expm1(np.log1p(v))  # the log layer, back-transformed as the seurat flavor does
        s1 += np.bincount(j[m], weights=v, minlength=g)
        s2 += np.bincount(j[m], weights=v * v, minlength=g)  # value * value in float32, as scanpy's kernel
    n = int(keep_cell.sum())
    genes = np.flatnonzero(keep_gene)
    mean = s1[genes] / n
    var = s2[genes] / n - mean**2
    if n != 1:
        var *= n / (n - 1)
    mean[mean == 0] = 1e-12
    disp = var / mean
    disp[disp == 0] = np.nan
    with np.errstate(invalid="ignore", divide="ignore"):
        disp = np.log(disp)
    mean = np.log1p(mean)
    df = pd.DataFrame({"means": mean, "dispersions": disp})
    df["mean_bin"] = pd.cut(df["means"], bins=HVG_N_BINS)
    stats = df.groupby("mean_bin", observed=True)["dispersions"].agg(avg="mean", dev="std")
    one = stats["dev"].isnull()  # a bin with one gene: normalised dispersion 1 (scanpy's rule)
    stats.loc[one, "dev"] = stats.loc[one, "avg"]
    stats.loc[one, "avg"] = 0
    stats = stats.loc[df["mean_bin"]].set_index(df.index)
    norm = np.nan_to_num(((df["dispersions"] - stats["avg"]) / stats["dev"]).to_numpy())
    hv = (mean > HVG_MIN_MEAN) & (mean < HVG_MAX_MEAN) & (norm > HVG_MIN_DISP) & (norm < np.inf)
    return genes[hv]


def _obs_on_hvg(
    x: sp.csr_matrix, keep_cell: np.ndarray, hvg: np.ndarray, f1: np.ndarray
) -> tuple[sp.csr_matrix, np.ndarray]:
    """Raw counts of the kept cells on the HVGs (float32 CSR ``R``) and the data of their values
    normalised to the median, then to 1e6 over the HVGs (``N``, same index arrays)."""
    col = np.full(x.shape[1], -1, np.int64)
    col[hvg] = np.arange(hvg.size)
    cell_pos = np.cumsum(keep_cell) - 1
    counts_per_row = np.zeros(int(keep_cell.sum()), np.int64)
    for r0, r1 in _row_chunks(x.indptr):
        _, j, rows = _chunk(x, r0, r1)
        m = (col[j] >= 0) & keep_cell[r0 + rows]
        counts_per_row += np.bincount(cell_pos[r0 + rows[m]], minlength=counts_per_row.size)
    indptr = np.zeros(counts_per_row.size + 1, np.int64)
    np.cumsum(counts_per_row, out=indptr[1:])
    idx_dtype = np.int32 if max(indptr[-1], hvg.size) < 2**31 else np.int64
    raw = np.empty(indptr[-1], np.float32)
    norm = np.empty(indptr[-1], np.float32)
    indices = np.empty(indptr[-1], idx_dtype)
    for r0, r1 in _row_chunks(x.indptr):
        d, j, rows = _chunk(x, r0, r1)
        m = (col[j] >= 0) & keep_cell[r0 + rows]
        if not m.any():
            continue
        pos = cell_pos[r0 + rows[m]]
        a, b = indptr[pos[0]], indptr[pos[-1] + 1]
        raw[a:b] = d[m]
        indices[a:b] = col[j[m]]
        norm[a:b] = raw[a:b] / f1[pos]
    r = sp.csr_matrix((raw, indices, indptr), shape=(counts_per_row.size, hvg.size))
    tot = np.bincount(np.repeat(np.arange(r.shape[0]), counts_per_row), weights=norm.astype(np.float64),
                      minlength=r.shape[0]).astype(np.float32)
    f2 = _row_factor(tot, SIM_TARGET_SUM)
    for r0, r1 in _row_chunks(indptr):
        a, b = indptr[r0], indptr[r1]
        norm[a:b] /= np.repeat(f2[r0:r1], counts_per_row[r0:r1])
    return r, norm


def _normalise_sim(s: sp.csr_matrix) -> sp.csr_matrix:
    """Simulated doublets' counts normalised to 1e6 (float32, ``normalize_total(target_sum=1e6)``)."""
    tot = np.asarray(s.sum(axis=1, dtype=np.float64)).ravel().astype(np.float32)
    f = _row_factor(tot, SIM_TARGET_SUM)
    return sp.csr_matrix((s.data / np.repeat(f, np.diff(s.indptr)), s.indices, s.indptr), shape=s.shape)


def _pca_basis(nmat: sp.csr_matrix, n_pcs: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(gene means, 1/sd, top ``n_pcs`` right singular vectors of the z-scored observed matrix)."""
    n, h = nmat.shape
    if not 0 < n_pcs < min(n, h):  # sklearn's PCA(svd_solver='arpack') refuses the same
        raise ValueError(f"scrublet: {n_pcs} principal components need more than {n_pcs} cells and "
                         f"highly variable genes (have {n} cells, {h} genes)")
    s1 = np.bincount(nmat.indices, weights=nmat.data.astype(np.float64), minlength=h)
    d64 = nmat.data.astype(np.float64)
    s2 = np.bincount(nmat.indices, weights=d64 * d64, minlength=h)
    del d64
    mu = s1 / n
    var = (s2 / n - mu**2) * (n / (n - 1))
    inv = 1 / np.sqrt(var)
    gram = np.zeros((h, h))
    step = max(1, min(n, 2**24 // max(h, 1)))  # dense row chunks of <= 128 MB
    for r0 in range(0, n, step):
        z = nmat[r0 : r0 + step].toarray().astype(np.float64)
        z -= mu
        z *= inv
        gram += z.T @ z
    # sklearn's PCA(svd_solver='arpack'): ARPACK (tol 0) on Z^T Z from v0 ~ U(-1, 1) of RandomState(seed)
    v0 = np.random.RandomState(seed).uniform(-1, 1, h)
    vals, vecs = scipy.sparse.linalg.eigsh(gram, k=n_pcs, tol=0, v0=v0)
    return mu, inv, vecs[:, np.argsort(vals)[::-1]]


def scrublet(
    counts: sp.csr_matrix,
    *,
    expected_rate: float,
    n_pcs: int,
    seed: int = 0,
    threads: int | None = None,
) -> ScrubletResult:
    """Doublet scores and calls of one library (raw counts, cells x genes) as ``sc.pp.scrublet`` with
    exact neighbours and ``expected_doublet_rate=expected_rate, n_prin_comps=n_pcs, random_state=seed``.

    ``counts`` is read, never copied or changed. ``threads`` caps the kNN's numba threads.
    """
    x = sp.csr_matrix(counts)
    n_all = x.shape[0]
    keep_gene, keep_cell, totals = _filters(x)
    f1 = _row_factor(totals, np.median(totals))
    hvg = _hvg(x, keep_gene, keep_cell, f1)
    raw, norm = _obs_on_hvg(x, keep_cell, hvg, f1)
    del x
    n = raw.shape[0]
    nmat = sp.csr_matrix((norm, raw.indices, raw.indptr), shape=raw.shape)
    if 1 <= min(nmat.shape) - 1 < n_pcs:   # a small library: fewer variable genes (or cells) than components
        log.warning("scrublet: %d principal components asked, but the library has %d cells and %d highly "
                    "variable genes: using %d", n_pcs, nmat.shape[0], nmat.shape[1], min(nmat.shape) - 1)
        n_pcs = min(nmat.shape) - 1
    mu, inv, vecs = _pca_basis(nmat, n_pcs, seed)
    w = vecs * inv[:, None]
    off = (mu * inv) @ vecs
    n_sim = int(n * SIM_DOUBLET_RATIO)
    pairs = np.vstack(np.unravel_index(
        sample_without_replacement(n * n, n_sim, random_state=np.random.RandomState(seed)), (n, n))).T
    points = np.empty((n + n_sim, n_pcs))
    points[:n] = nmat @ w - off
    del nmat, norm
    step = max(1, _CHUNK_NNZ // max(1, 2 * raw.nnz // max(n, 1)))
    for s0 in range(0, n_sim, step):
        p = pairs[s0 : s0 + step]
        points[n + s0 : n + s0 + len(p)] = _normalise_sim(raw[p[:, 0]] + raw[p[:, 1]]) @ w - off
    del raw
    k = round(0.5 * np.sqrt(n))
    k_adj = round(k * (1 + n_sim / float(n)))
    is_sim = np.zeros(n + n_sim, bool)
    is_sim[n:] = True
    nd = count_neighbors_excluding_self(points, k_adj - 1, is_sim, threads=threads).astype(np.float64)
    # Bayesian score: scanpy's Scrublet._nearest_neighbor_classifier
    rho, r, nn = expected_rate, n_sim / float(n), float(k_adj)
    q = (nd + 1) / (nn + 2)
    ld = q * rho / r / (1 - rho - q * (1 - rho - rho / r))
    threshold = _threshold(ld[n:])
    scores = np.full(n_all, np.nan)
    scores[keep_cell] = ld[:n]
    called = np.zeros(n_all, bool)
    if np.isfinite(threshold):
        called[keep_cell] = ld[:n] > threshold
    return ScrubletResult(scores=scores, called=called, threshold=threshold, scores_sim=ld[n:],
                          n_hvg=int(hvg.size), n_neighbors=int(k))


def _threshold(scores_sim: np.ndarray) -> float:
    """scrublet's automatic threshold: the minimum between the two modes of the simulated scores'
    histogram (``skimage.filters.threshold_minimum``); NaN where it finds none (then no calls)."""
    from skimage.filters import threshold_minimum

    try:
        return float(threshold_minimum(scores_sim))
    except Exception:  # noqa: BLE001 - scanpy's own rule: any failure = no threshold
        return float("nan")
