"""Per-cell guide assignment from guide UMI counts.

Methods (config ``rna.guides.method``):

- ``background`` (default): per guide and batch, a negative-binomial background plus a log-normal
  signal fitted by EM over ALL cells, zeros included (:mod:`pairedscreen.rna.guide_model`), so the data
  decide the threshold on low-background (Parse, TAP-seq) and high-background (10x guide capture) screens
  alike. A cell carries the guide when its count has signal posterior > 0.5 and is >= ``min_umis``: a
  per-guide UMI threshold.
- ``mixture`` (Cell Ranger / crispat 'gauss' with ``nonzero=True``): per guide and batch, a
  two-component Gaussian mixture on log10(UMI + 1) over the cells with >= 1 UMI of that guide, fitted
  by weighted EM over the distinct count values. Fast, right when every cell carries ambient guide
  UMIs; on low-background data its components split the carriers and most go unassigned.
- ``threshold``: count >= max(``threshold``, ``min_umis``) for every guide.
- ``max``: only the top guide, when it has >= ``min_umis`` UMIs and >= ``max_fraction`` of the
  cell's guide UMIs.

Every method records its per-guide UMI thresholds in ``uns['guide_thresholds']`` and per guide the
model, its fitted parameters, threshold and cells called in ``uns['guide_model']``; per library the
assignment rate and the share of cells with many guide UMIs left unassigned (a warning when high) go to
``uns['guide_assignment']`` (:func:`assignment_stats`).

Cells with several guides are kept (multiplets are recorded: ``n_guides`` > 1, and ``perturbation``
= ``multiple`` when the guides belong to more than one perturbation).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp

from pairedscreen import sheets
from pairedscreen.columns import MULTIPLE, UNASSIGNED
from pairedscreen.rna import guide_model

log = logging.getLogger(__name__)

METHODS = ("background", "mixture", "threshold", "max")


def _normal_logpdf(x: np.ndarray, mu: float, var: float) -> np.ndarray:
    return -0.5 * (np.log(2 * np.pi * var) + (x - mu) ** 2 / var)


def mixture_threshold(counts: np.ndarray, *, min_umis: int, n_iter: int = 200) -> float:
    """UMI threshold of one guide from a two-component mixture on log10(count+1) of nonzero cells.

    Returns the smallest count (>= ``min_umis``) whose posterior for the high component exceeds 0.5,
    or ``inf`` when no count qualifies (the guide is then never called).
    """
    c = np.asarray(counts)
    c = c[c > 0]
    if len(c) < 2:
        return float(max(min_umis, c.max())) if len(c) and c.max() >= min_umis else float("inf")
    u, w = np.unique(c, return_counts=True)
    if len(u) == 1:
        return float(max(min_umis, u[0]))
    x = np.log10(u.astype(np.float64) + 1.0)
    w = w.astype(np.float64)
    cw = np.cumsum(w) / w.sum()
    mu = np.array([x[np.searchsorted(cw, 0.25)], x[min(np.searchsorted(cw, 0.99), len(x) - 1)]])
    if mu[1] <= mu[0]:
        mu = np.array([x[0], x[-1]])
    spread = float(np.average((x - np.average(x, weights=w)) ** 2, weights=w))
    var = np.full(2, max(spread / 4, 1e-4))
    pi = np.array([0.5, 0.5])
    floor = max(spread * 1e-3, 1e-4)
    for _ in range(n_iter):
        logp = np.stack([np.log(pi[k]) + _normal_logpdf(x, mu[k], var[k]) for k in (0, 1)])
        resp = np.exp(logp - np.logaddexp(logp[0], logp[1]))
        nk = (resp * w).sum(axis=1)
        if np.any(nk <= 0):
            break
        new_mu = (resp * w * x).sum(axis=1) / nk
        var = np.maximum((resp * w * (x - new_mu[:, None]) ** 2).sum(axis=1) / nk, floor)
        pi = nk / nk.sum()
        converged = np.allclose(new_mu, mu, atol=1e-7)
        mu = new_mu
        if converged:
            break
    hi = int(np.argmax(mu))
    logp = np.stack([np.log(pi[k]) + _normal_logpdf(x, mu[k], var[k]) for k in (0, 1)])
    post_hi = np.exp(logp[hi] - np.logaddexp(logp[0], logp[1]))
    ok = (post_hi > 0.5) & (x >= mu[1 - hi]) & (u >= min_umis)
    return float(u[ok][0]) if ok.any() else float("inf")


def _fit_thresholds(
    x: sp.csr_matrix, grp: np.ndarray, levels: list[str], *, method: str, min_umis: int, threshold: int,
) -> tuple[np.ndarray, pd.DataFrame]:
    """Per-(group, guide) UMI thresholds and the per-guide model table (one row per group and guide)."""
    n_guides = x.shape[1]
    thr = np.full((len(levels), n_guides), float(max(threshold, min_umis)))
    rows: list[dict] = []
    xc = x.tocsc() if method in ("mixture", "background") else None
    for gi, g in enumerate(levels):
        in_group = grp == g
        sub = (xc[in_group] if len(levels) > 1 else xc) if xc is not None else None
        n = int(in_group.sum())
        for j in range(n_guides):
            if sub is not None:
                col = sub.data[sub.indptr[j] : sub.indptr[j + 1]]
                if method == "background":
                    row = guide_model.fit_guide(col, n_cells=n, min_umis=min_umis).as_row()
                    thr[gi, j] = row["threshold"]
                else:
                    thr[gi, j] = mixture_threshold(col, min_umis=min_umis)
                    row = {"model": "log_gaussian_nonzero", "n_cells": n, "n_nonzero": int(col.size)}
            elif method == "max":
                thr[gi, j] = float(min_umis)
                row = {"model": "max", "n_cells": n}
            else:
                row = {"model": "fixed", "n_cells": n}
            rows.append({"group": g, "guide": j, **row, "threshold": float(thr[gi, j])})
    table = pd.DataFrame(rows, columns=list(dict.fromkeys(
        ["group", "guide", "model", "n_cells", "n_nonzero", *guide_model.GuideFit.__dataclass_fields__,
         "threshold"])))
    return thr, table


def _calls(
    x: sp.csr_matrix, *, method: str, min_umis: int, threshold: int, max_fraction: float,
    groups: Sequence[str] | np.ndarray | None,
) -> tuple[sp.csr_matrix, np.ndarray, list[str], pd.DataFrame]:
    """:func:`call_guides` plus the group levels and the per-guide model table."""
    if method not in METHODS:
        raise ValueError(f"guide method {method!r} not in {METHODS}")
    n_cells = x.shape[0]
    grp = np.asarray(groups).astype(str) if groups is not None else np.full(n_cells, "all")
    levels = list(pd.unique(grp))
    thr, table = _fit_thresholds(x, grp, levels, method=method, min_umis=min_umis, threshold=threshold)
    if method == "max":
        tot = np.asarray(x.sum(axis=1)).ravel()
        top = np.asarray(x.argmax(axis=1)).ravel()
        topv = np.asarray(x.max(axis=1).todense()).ravel()
        ok = (topv >= min_umis) & (topv >= max_fraction * np.maximum(tot, 1))
        rows = np.flatnonzero(ok)
        mat = sp.csr_matrix((np.ones(len(rows), bool), (rows, top[rows])), shape=x.shape)
    else:
        coo = x.tocoo()
        gidx = pd.Index(levels).get_indexer(grp)
        keep = coo.data >= thr[gidx[coo.row], coo.col]
        mat = sp.csr_matrix((np.ones(keep.sum(), bool), (coo.row[keep], coo.col[keep])), shape=x.shape)
    gidx = pd.Index(levels).get_indexer(grp)
    called = np.zeros((len(levels), x.shape[1]), np.int64)
    coo = mat.tocoo()
    np.add.at(called, (gidx[coo.row], coo.col), 1)
    table["n_called"] = called.ravel()
    return mat, thr, levels, table


def call_guides(
    counts: sp.spmatrix | np.ndarray,
    *,
    method: str,
    min_umis: int,
    threshold: int,
    max_fraction: float,
    groups: Sequence[str] | np.ndarray | None = None,
) -> tuple[sp.csr_matrix, np.ndarray]:
    """Boolean cells x guides assignment matrix and per-(group, guide) thresholds (groups x guides).

    ``groups`` (e.g. batch per cell) fits the per-guide models separately per group.
    """
    mat, thr, _, _ = _calls(sp.csr_matrix(counts), method=method, min_umis=min_umis, threshold=threshold,
                            max_fraction=max_fraction, groups=groups)
    return mat, thr


def assignment_stats(obs: pd.DataFrame, *, many_umis: int, max_unassigned_many: float) -> dict:
    """A library's assignment rate and the share of its cells with many guide UMIs left unassigned.

    "Many" is ``many_umis`` guide UMIs, or with ``many_umis`` = 0 the median guide UMIs of the cells that
    have any (not of the assigned cells: when the calls lose the carriers with few UMIs, the assigned
    cells are the high ones, and their median hides the loss). ``warning`` (a sentence, or None) when
    the share exceeds ``max_unassigned_many``: carriers the calls left out drop out of every estimate.
    """
    umis = obs["guide_umis"].to_numpy(np.int64)
    unassigned = obs["perturbation"].astype(str).to_numpy() == UNASSIGNED
    n = len(obs)
    many = int(many_umis) if many_umis > 0 else (int(np.median(umis[umis > 0])) if (umis > 0).any() else 0)
    has_many = (umis >= many) & (umis > 0)
    share = float(unassigned[has_many].mean()) if has_many.any() else 0.0
    out = {"n_cells": int(n), "assignment_rate": float((~unassigned).mean()) if n else 0.0,
           "many_umis_cutoff": many, "n_many_umis": int(has_many.sum()),
           "unassigned_many_umis": int((unassigned & has_many).sum()), "unassigned_many_share": share,
           "warning": None}
    if share > max_unassigned_many:
        out["warning"] = (f"{out['unassigned_many_umis']} of {out['n_many_umis']} cells with >= {many} guide "
                          f"UMIs ({share:.1%}, above rna.guides.max_unassigned_many = "
                          f"{max_unassigned_many:.0%}) have no guide call: the guide model may not fit "
                          "this library (see uns['guide_model'])")
    return out


def assign_guides(
    cells: ad.AnnData,
    guide_counts: ad.AnnData,
    guide_sheet: pd.DataFrame,
    *,
    registry: pd.DataFrame | None = None,
    method: str,
    min_umis: int,
    threshold: int,
    max_fraction: float,
    many_umis: int,
    max_unassigned_many: float,
    batch_key: str | None = "library",
) -> ad.AnnData:
    """A copy of ``cells`` with guide calls.

    ``guide_counts`` holds the guide UMIs (obs_names must cover ``cells``; var = guide ids of the
    sheet). Adds obsm['guide_counts'] (csr, columns = uns['guide_names']), obs['guide_ids'] (';'),
    obs['n_guides'], obs['guide_umis'], obs['perturbation'] (registry id, ``multiple`` or
    ``unassigned``), obs['is_control'] (from ``registry`` is_control, else control_type/target
    names containing 'non-targeting'), uns['guide_thresholds'] (a DataFrame group x guide),
    uns['guide_model'] (per group and guide: the model, its fitted parameters, threshold and cells
    called) and uns['guide_assignment'] (the settings and :func:`assignment_stats`; its warning is
    logged).
    """
    missing = cells.obs_names.difference(guide_counts.obs_names)
    if len(missing):
        raise ValueError(f"{len(missing)} cells have no guide-count row, e.g. {list(missing[:3])}")
    g = guide_counts[cells.obs_names]
    counts = sp.csr_matrix(g.X).astype(np.int64)
    groups = cells.obs[batch_key].astype(str).to_numpy() if batch_key and batch_key in cells.obs else None
    calls, thr, levels, table = _calls(
        counts, method=method, min_umis=min_umis, threshold=threshold, max_fraction=max_fraction,
        groups=groups,
    )
    names = np.asarray(g.var_names.astype(str))
    sheet = guide_sheet.set_index(guide_sheet["id"].astype(str))
    unknown = set(names) - set(sheet.index)
    if unknown:
        raise ValueError(f"guides not in the guides sheet: {sorted(unknown)[:5]}")
    pert_of = sheet["perturbation_id"].astype(str).reindex(names).to_numpy()
    ids, perts = _labels(calls, counts, names, pert_of)
    # Memory: copy the cells (their whole count matrix) only once the calling temporaries are gone.
    out = cells.copy()
    out.obsm["guide_counts"] = counts
    out.uns["guide_names"] = names
    out.obs["guide_ids"] = ids
    out.obs["n_guides"] = np.diff(calls.indptr).astype(np.int64)
    out.obs["guide_umis"] = np.asarray(counts.sum(axis=1)).ravel()
    out.obs["perturbation"] = perts
    controls = control_ids(registry, guide_sheet)
    out.obs["is_control"] = out.obs["perturbation"].isin(controls).to_numpy()
    out.uns["guide_thresholds"] = pd.DataFrame(thr, index=pd.Index(levels, name="group"), columns=names)
    table["guide"] = names[table["guide"].to_numpy(np.int64)]
    out.uns["guide_model"] = table
    stats = assignment_stats(out.obs, many_umis=many_umis, max_unassigned_many=max_unassigned_many)
    warning = stats.pop("warning")
    log.info("guide assignment (%s): %s", method, stats)
    if warning:
        log.warning("guide assignment: %s", warning)
    out.uns["guide_assignment"] = {"method": method, "min_umis": min_umis, "threshold": threshold,
                                   "max_fraction": max_fraction, "many_umis": many_umis,
                                   "max_unassigned_many": max_unassigned_many, **stats,
                                   **({"warning": warning} if warning else {})}
    return out


def _labels(
    calls: sp.csr_matrix, counts: sp.csr_matrix, names: np.ndarray, pert_of: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Per cell: ';'-joined guide ids (most UMIs first) and the perturbation label."""
    coo = calls.tocoo()
    umis = np.asarray(counts[coo.row, coo.col]).ravel()
    order = np.lexsort((coo.col, -umis, coo.row))
    rows, cols = coo.row[order], coo.col[order]
    n = calls.shape[0]
    ids = np.full(n, "", dtype=object)
    perts = np.full(n, UNASSIGNED, dtype=object)
    if len(rows):
        df = pd.DataFrame({"row": rows, "guide": names[cols], "pert": pert_of[cols]})
        grouped = df.groupby("row", sort=False)
        joined = grouped["guide"].agg(";".join)
        ids[joined.index.to_numpy()] = joined.to_numpy()
        first = grouped["pert"].first()
        n_pert = grouped["pert"].nunique()
        perts[first.index.to_numpy()] = np.where(n_pert.to_numpy() > 1, MULTIPLE, first.to_numpy())
    return ids, perts


def control_ids(registry: pd.DataFrame | None, guide_sheet: pd.DataFrame | None = None) -> set[str]:
    """Perturbation ids that are controls: registry ``is_control`` when given, else by name."""
    if registry is not None and "is_control" in registry:
        return sheets.control_ids(registry)
    if guide_sheet is None:
        return set()
    text = guide_sheet.get("target_gene_name", guide_sheet["perturbation_id"]).astype(str).str.lower()
    hit = text.str.contains("non-targeting|non_targeting|nontargeting")
    return set(guide_sheet.loc[hit.to_numpy(), "perturbation_id"].astype(str))
