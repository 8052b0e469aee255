"""Cross-modal concordance: do perturbations that look alike in RNA also look alike in Cell Painting?

Over the perturbations present in both arms (controls excluded by default), each arm's profiles
(RNA pseudobulk mean log-expression, paint consensus) are centred on the arm's control mean (so inactive
perturbations sit near 0 and carry no shared structure; centring on the perturbation mean instead makes
all inactive perturbations look alike in both arms, a spurious concordance), not scaled (scaling RNA genes
to unit variance lets thousands of noise genes drown the programs); then
- Mantel: Pearson (or Spearman) correlation of the upper triangles of the two perturbation x perturbation
  cosine similarity matrices, p-value from permuting the perturbation labels of one matrix;
- linear CKA (centred kernel alignment) of the two profile matrices, p-value from permuting the rows of one.
Permutation p = (1 + #perm >= observed) / (1 + n_permutations).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from scipy.stats import rankdata


def center_on_controls(x: np.ndarray, is_control: np.ndarray, *, scale: bool = False,
                       eps: float = 1e-3) -> np.ndarray:
    """Subtract the control rows' mean (all rows' mean when < 2 controls); optionally divide each column by
    its SD across rows (floored at ``eps``); non-finite columns and zero-spread columns are dropped."""
    x = np.asarray(x, dtype=np.float64)
    ctrl = np.asarray(is_control, bool)
    x = x[:, np.isfinite(x).all(axis=0)]
    ref = x[ctrl] if ctrl.sum() >= 2 else x
    out = x - ref.mean(axis=0)
    sd = out.std(axis=0)
    out = out[:, sd > 0]
    if scale:
        out = out / np.maximum(sd[sd > 0], eps)
    return out


def cosine_similarity(x: np.ndarray) -> np.ndarray:
    norm = np.linalg.norm(x, axis=1, keepdims=True)
    u = np.divide(x, norm, out=np.zeros_like(x), where=norm > 0)
    return u @ u.T


def mantel(a: np.ndarray, b: np.ndarray, *, n_permutations: int, seed: int,
           method: str = "pearson") -> tuple[float, float]:
    """Mantel statistic (Pearson or Spearman correlation of the upper triangles) between two symmetric
    similarity matrices and its one-sided permutation p-value."""
    n = len(a)
    if n < 4:
        return float("nan"), float("nan")
    iu = np.triu_indices(n, 1)
    tr = rankdata if method == "spearman" else np.asarray
    ra = _z(tr(a[iu]))
    obs = float(ra @ _z(tr(b[iu])) / len(ra))
    rng = np.random.default_rng(seed)
    ge = 0
    for _ in range(n_permutations):
        p = rng.permutation(n)
        bp = b[np.ix_(p, p)]
        ge += float(ra @ _z(tr(bp[iu])) / len(ra)) >= obs - 1e-12
    return obs, (ge + 1) / (n_permutations + 1)


def _z(v: np.ndarray) -> np.ndarray:
    sd = v.std()
    return (v - v.mean()) / sd if sd > 0 else np.zeros_like(v)


def linear_cka(x: np.ndarray, y: np.ndarray) -> float:
    """Linear CKA of two (n x p), (n x q) matrices (rows = same perturbations)."""
    x = x - x.mean(axis=0)
    y = y - y.mean(axis=0)
    kx, ky = x @ x.T, y @ y.T
    hsic = (kx * ky).sum()
    den = np.sqrt((kx * kx).sum() * (ky * ky).sum())
    return float(hsic / den) if den > 0 else float("nan")


def cka_test(x: np.ndarray, y: np.ndarray, *, n_permutations: int,
             seed: int) -> tuple[float, float]:
    """Linear CKA and its permutation p-value (rows of ``y`` permuted)."""
    if len(x) < 4:
        return float("nan"), float("nan")
    obs = linear_cka(x, y)
    rng = np.random.default_rng(seed)
    x0 = x - x.mean(axis=0)
    y0 = y - y.mean(axis=0)
    kx, ky = x0 @ x0.T, y0 @ y0.T
    den = np.sqrt((kx * kx).sum() * (ky * ky).sum())
    ge = 0
    for _ in range(n_permutations):
        p = rng.permutation(len(x))
        ge += float((kx * ky[np.ix_(p, p)]).sum() / den) >= obs - 1e-12
    return obs, (ge + 1) / (n_permutations + 1)


def _compared(rna: np.ndarray, paint: np.ndarray, is_control: np.ndarray, include_controls: bool,
              subset: np.ndarray | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The centred profiles of the compared rows of both arms and their row indices (see
    :func:`concordance`)."""
    rna = np.asarray(rna, dtype=np.float64)
    paint = np.asarray(paint, dtype=np.float64)
    ctrl = np.asarray(is_control, bool)
    both = np.isfinite(rna).all(axis=1) & np.isfinite(paint).all(axis=1)
    rna_c = center_on_controls(rna[both], ctrl[both])
    paint_c = center_on_controls(paint[both], ctrl[both])
    keep = np.ones(int(both.sum()), bool) if include_controls else ~ctrl[both]
    if subset is not None:
        keep &= np.asarray(subset, bool)[both]
    return rna_c[keep], paint_c[keep], np.flatnonzero(both)[keep]


def concordance(rna: np.ndarray, paint: np.ndarray, is_control: np.ndarray, *, include_controls: bool = False,
                n_permutations: int, seed: int, method: str = "pearson",
                subset: np.ndarray | None = None, labels: Sequence[str] | None = None) -> dict:
    """RNA vs paint agreement over the rows given (same perturbations, same order; rows with any NaN in
    either arm are dropped). ``subset``: optional boolean mask of rows to compare (e.g. perturbations
    active in both arms); centring still uses every control. Returns {"n_perturbations", "mantel_r",
    "mantel_p", "cka", "cka_p", "method"}, plus "perturbations" (the compared rows' ``labels``) when
    ``labels`` are given."""
    a, b, rows = _compared(rna, paint, is_control, include_controls, subset)
    res = {"n_perturbations": len(rows), "mantel_r": None, "mantel_p": None, "cka": None, "cka_p": None,
           "method": method}
    if labels is not None:
        res["perturbations"] = [str(v) for v in np.asarray(labels)[rows]]
    if len(rows) < 4 or a.shape[1] == 0 or b.shape[1] == 0:
        return res
    r, p = mantel(cosine_similarity(a), cosine_similarity(b), n_permutations=n_permutations, seed=seed,
                  method=method)
    c, cp = cka_test(a, b, n_permutations=n_permutations, seed=seed + 1)
    res.update(mantel_r=r, mantel_p=p, cka=c, cka_p=cp)
    return res


def similarity_pairs(rna: np.ndarray, paint: np.ndarray, is_control: np.ndarray, labels: Sequence[str], *,
                     include_controls: bool = False, subset: np.ndarray | None = None) -> pd.DataFrame:
    """The two cosine similarity matrices behind :func:`concordance` (same rows, same centring), as a long
    table of the upper triangle with the diagonal: ``perturbation_a``, ``perturbation_b`` (labels, a <= b in
    row order), ``rna_similarity``, ``paint_similarity``. The Mantel statistic is the Pearson correlation of
    the two similarity columns over the off-diagonal rows."""
    a, b, rows = _compared(rna, paint, is_control, include_controls, subset)
    names = np.asarray([str(v) for v in np.asarray(labels)[rows]], dtype=object)
    cols = ["perturbation_a", "perturbation_b", "rna_similarity", "paint_similarity"]
    if len(rows) == 0 or a.shape[1] == 0 or b.shape[1] == 0:
        return pd.DataFrame({c: pd.Series(dtype=object if c.startswith("pert") else float) for c in cols})
    i, j = np.triu_indices(len(rows))
    sr, sp = cosine_similarity(a), cosine_similarity(b)
    return pd.DataFrame({"perturbation_a": names[i], "perturbation_b": names[j],
                         "rna_similarity": sr[i, j], "paint_similarity": sp[i, j]}, columns=cols)
