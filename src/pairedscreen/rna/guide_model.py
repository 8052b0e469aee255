"""Per-guide background + signal mixture over ALL cells (zeros included), fitted by EM.

Why: a mixture fitted on the nonzero counts only (the ``mixture`` method) assumes the nonzero counts hold
both background and signal. On low-background data (Parse Evercode, TAP-seq: almost every nonzero guide
count is real) its two components split the true-positive population and most carriers go unassigned.
Modelling the background from every cell, zeros included, lets the data decide: when the background is
almost all zeros the threshold falls to the first counts, when every cell carries ambient guide UMIs
(10x guide capture) it lands above them.

The model of one guide's count ``c`` in a cell (the ``background`` method, as crispat's Poisson-Gaussian
and sceptre's mixture, with a negative binomial so that ambient counts that scale with cell size are
absorbed by the background):

- background, weight ``1 - pi``: negative binomial with mean ``m`` and size ``r`` (Poisson when the
  background is not overdispersed);
- signal, weight ``pi``: a discretised log-normal, ``P(c) = Phi((ln(c+1) - mu)/s) - Phi((ln c - mu)/s)``
  (``ln 0 = -inf``): a Gaussian on the log scale, as Cell Ranger and crispat model the guide's carriers,
  made a probability on integer counts so both components are comparable.

EM runs over the distinct count values weighted by how many cells have them (zeros are one value), so a
fit costs O(distinct counts x iterations) whatever the number of cells; the E-step is exact, the M-step is
the weighted moments (NB size from mean and variance, the log-normal from ``ln(c + 1/2)``). The guide is
called in cells whose count has signal posterior > 0.5, above the background mean and >= ``min_umis``:
one UMI threshold per guide. A guide whose mixture does not beat a background-only negative binomial by
BIC (``bic_gain`` <= 0: no carriers distinguishable from the background) is never called.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numba
import numpy as np

MODEL = "nb_lognormal"
_SQRT2 = math.sqrt(2.0)
_MAX_SIZE = 1e6           # NB size above which the background is Poisson
_MIN_SIGMA = 0.05         # log-scale floor of the signal's spread (one distinct count must not collapse it)


@dataclass(frozen=True)
class GuideFit:
    """One guide's fitted model (one row of ``uns['guide_model']``)."""

    model: str
    n_cells: int
    n_nonzero: int
    pi_signal: float
    bg_mean: float
    bg_size: float
    signal_mu: float
    signal_sigma: float
    threshold: float
    bic_gain: float
    n_iter: int

    def as_row(self) -> dict:
        return asdict(self)


@numba.njit(cache=True, nogil=True)
def _nb_logpmf(c: float, lgc1: float, m: float, r: float) -> float:
    """log NB(c; mean m, size r); Poisson when r >= _MAX_SIZE. ``lgc1`` = lgamma(c + 1)."""
    if m <= 0.0:
        return 0.0 if c == 0.0 else -np.inf
    if r >= _MAX_SIZE:
        return c * math.log(m) - m - lgc1
    return (math.lgamma(c + r) - math.lgamma(r) - lgc1 + r * math.log(r / (r + m))
            + c * math.log(m / (r + m)))


@numba.njit(cache=True, nogil=True)
def _log_ndtr(z: float) -> float:
    """log Phi(z), accurate in the far lower tail."""
    if z > -30.0:
        return math.log(0.5 * math.erfc(-z / _SQRT2))
    return -0.5 * z * z - math.log(-z) - 0.5 * math.log(2.0 * math.pi)


@numba.njit(cache=True, nogil=True)
def _signal_logpmf(c: float, mu: float, s: float) -> float:
    """log P(c) of the discretised log-normal: the mass of [ln c, ln(c+1)) under N(mu, s^2)."""
    b = (math.log(c + 1.0) - mu) / s
    if c == 0.0:
        return _log_ndtr(b)
    a = (math.log(c) - mu) / s
    if a > 0.0:   # upper tail: difference of complementary tails, no cancellation
        d = 0.5 * (math.erfc(a / _SQRT2) - math.erfc(b / _SQRT2))
    else:
        d = 0.5 * (math.erfc(-b / _SQRT2) - math.erfc(-a / _SQRT2))
    if d > 1e-300:
        return math.log(d)
    mid = 0.5 * (a + b)   # underflow: density at the midpoint times the width
    return -0.5 * mid * mid - 0.5 * math.log(2.0 * math.pi) + math.log(b - a)


@numba.njit(cache=True, nogil=True)
def _nb_moments(u: np.ndarray, w: np.ndarray) -> tuple[float, float]:
    tot = w.sum()
    m = (w * u).sum() / tot
    v = (w * (u - m) ** 2).sum() / tot
    r = m * m / (v - m) if v > m * (1.0 + 1e-9) and m > 0 else _MAX_SIZE
    return m, min(max(r, 1e-3), _MAX_SIZE)


@numba.njit(cache=True, nogil=True)
def _fit(u: np.ndarray, w: np.ndarray, split: float, n_iter: int, tol: float):
    """EM of background NB + discretised log-normal signal over distinct counts ``u`` (weights ``w``),
    starting from the split ``u >= split`` = signal. Returns (pi, m, r, mu, s, loglik, iterations,
    one-component NB loglik)."""
    n = u.shape[0]
    lgc1 = np.empty(n)
    y = np.empty(n)
    for i in range(n):
        lgc1[i] = math.lgamma(u[i] + 1.0)
        y[i] = math.log(u[i] + 0.5)
    tot = w.sum()
    # background-only NB (the null model of the BIC comparison)
    m0, r0 = _nb_moments(u, w)
    ll0 = 0.0
    for i in range(n):
        ll0 += w[i] * _nb_logpmf(u[i], lgc1[i], m0, r0)
    # initial split
    resp = np.where(u >= split, 1.0, 0.0)
    pi = 0.0
    m, r, mu, s = m0, r0, 0.0, 1.0
    ll = -np.inf
    it = 0
    for it in range(1, n_iter + 1):
        # M-step
        ws = w * resp
        wb = w - ws
        ns, nb = ws.sum(), wb.sum()
        if ns <= 0.0 or nb <= 0.0:
            return 0.0, m0, r0, 0.0, 1.0, ll0, it, ll0
        pi = ns / tot
        m, r = _nb_moments(u, wb)
        mu = (ws * y).sum() / ns
        s = math.sqrt(max((ws * (y - mu) ** 2).sum() / ns, _MIN_SIGMA * _MIN_SIGMA))
        # E-step
        new_ll = 0.0
        for i in range(n):
            lb = math.log(1.0 - pi) + _nb_logpmf(u[i], lgc1[i], m, r)
            ls = math.log(pi) + _signal_logpmf(u[i], mu, s)
            hi = max(lb, ls)
            lse = hi + math.log(math.exp(lb - hi) + math.exp(ls - hi))
            resp[i] = math.exp(ls - lse)
            new_ll += w[i] * lse
        if abs(new_ll - ll) <= tol * abs(new_ll):
            ll = new_ll
            break
        ll = new_ll
    return pi, m, r, mu, s, ll, it, ll0


@numba.njit(cache=True, nogil=True)
def _posterior_signal(u: np.ndarray, pi: float, m: float, r: float, mu: float, s: float) -> np.ndarray:
    out = np.empty(u.shape[0])
    for i in range(u.shape[0]):
        lb = math.log(1.0 - pi) + _nb_logpmf(u[i], math.lgamma(u[i] + 1.0), m, r)
        ls = math.log(pi) + _signal_logpmf(u[i], mu, s)
        out[i] = 1.0 / (1.0 + math.exp(min(lb - ls, 700.0)))
    return out


def _otsu_split(u: np.ndarray, w: np.ndarray) -> float:
    """The count that best splits ln(c+1) into two classes (Otsu: max between-class variance)."""
    x = np.log1p(u)
    cw = np.cumsum(w)
    cx = np.cumsum(w * x)
    tot, totx = cw[-1], cx[-1]
    w0, w1 = cw[:-1], tot - cw[:-1]
    m0, m1 = cx[:-1] / w0, (totx - cx[:-1]) / w1
    between = w0 * w1 * (m0 - m1) ** 2
    return float(u[int(np.argmax(between)) + 1])


def fit_guide(counts: np.ndarray, *, n_cells: int | None = None, min_umis: int,
              n_iter: int = 500, tol: float = 1e-9) -> GuideFit:
    """Fit one guide's background + signal model and its UMI threshold.

    ``counts``: the guide's count in every cell, or only its nonzero counts with ``n_cells`` the number
    of cells (the rest are zeros; a sparse column's data). The threshold is the smallest observed count
    with signal posterior > 0.5 that is above the background mean and >= ``min_umis``; ``inf`` (never
    called) when no count qualifies or the mixture does not beat a background-only NB by BIC.
    """
    c = np.asarray(counts)
    nz = c[c > 0].astype(np.int64)
    n = int(n_cells) if n_cells is not None else int(c.size)
    if nz.size > n:
        raise ValueError(f"{nz.size} nonzero counts for {n} cells")
    none = GuideFit(MODEL, n, int(nz.size), 0.0, float(nz.sum() / max(n, 1)), _MAX_SIZE, float("nan"),
                    float("nan"), float("inf"), 0.0, 0)
    if nz.size == 0:
        return none
    u, w = np.unique(nz, return_counts=True)
    if n > nz.size:
        u = np.concatenate([[0], u])
        w = np.concatenate([[n - nz.size], w])
    if u.size < 2:
        return none
    u = u.astype(np.float64)
    w = w.astype(np.float64)
    pi, m, r, mu, s, ll, it, ll0 = _fit(u, w, _otsu_split(u, w), n_iter, tol)
    bic_gain = float(2.0 * (ll - ll0) - 3.0 * math.log(n))
    fit = GuideFit(MODEL, n, int(nz.size), float(pi), float(m), float(r), float(mu), float(s),
                   float("inf"), bic_gain, int(it))
    if pi <= 0.0 or bic_gain <= 0.0:
        return GuideFit(**{**fit.as_row(), "threshold": float("inf")})
    post = _posterior_signal(u, pi, m, r, mu, s)
    ok = (post > 0.5) & (u > m) & (u >= min_umis)
    thr = float(u[ok][0]) if ok.any() else float("inf")
    return GuideFit(**{**fit.as_row(), "threshold": thr})
