"""Per-perturbation cell parts of both arms, streamed one library / plate at a time, and the released
per-perturbation metadata the leakage audit reads, from the same pass.

RNA (:func:`rna_parts`): each per-library ``cells.h5ad`` (``results/rna/{lib}/cells.h5ad``) is read on its
own; its usable cells (:func:`pairedscreen.expression.usable_cells`, registry ids) are normalised with the
one log1p CP10k and dealt at random into ``K`` parts within each perturbation of the library (balanced:
sizes differ by at most one, a random part gets the extra cells), then summed per (perturbation, part) on
the eval genes only. Memory: one library + ``perturbations x K x genes`` sums. Also summed: the usable
control cells' per-gene sum and sum of squares over every gene (the DE-count proxy's control variance),
each perturbation's cells, UMIs and cells per library.

Paint (:func:`paint_parts`): each plate's ``cells.parquet`` is aggregated into ``K`` sub-wells per well
(cells dealt at random within each well, :func:`pairedscreen.paint.profiles.aggregate_plate_file`) and
normalised to the plate's control sub-wells (:func:`pairedscreen.paint.profiles.normalize_plates`, the
default ``mad_robustize``), then summed per (perturbation, part) over the consensus' features (finite
values counted per feature). Memory: one plate's sub-wells. The consensus takes the median over wells; the
parts take the mean over sub-wells (a median does not stream). Halves from one well share its well and
position effects: the ceiling is that of re-measuring the same wells' cells, as cell-eval's is of the
same cells' population.
"""

from __future__ import annotations

import os
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp

from pairedscreen.columns import N_CELLS, OBS_PERTURBATION, PERT, PLATE, SPLIT, WELL
from pairedscreen.expression import log1p_cp10k, usable_cells
from pairedscreen.plate import edge_mask, well_positions
from pairedscreen.train.parts import Parts

PathLike = str | os.PathLike


def deal_parts(group: np.ndarray, n_parts: int, rng: np.random.Generator) -> np.ndarray:
    """Part label ``0..n_parts-1`` per element, dealt at random within each ``group`` value (balanced;
    the first part of each group's deal is random so small groups do not all start in part 0)."""
    n = len(group)
    if n == 0:
        return np.zeros(0, np.int64)
    order = np.lexsort((rng.random(n), group))
    g = group[order]
    start = np.r_[0, np.flatnonzero(g[1:] != g[:-1]) + 1]
    rank = np.arange(n) - np.repeat(start, np.diff(np.r_[start, n]))
    offset = rng.integers(0, n_parts, len(start))
    out = np.empty(n, np.int64)
    out[order] = (rank + np.repeat(offset, np.diff(np.r_[start, n]))) % n_parts
    return out


@dataclass
class RnaParts:
    parts: Parts                     # eval genes
    n_cells: np.ndarray              # usable cells per perturbation
    umis: np.ndarray                 # summed total counts of those cells
    cells_by_library: pd.DataFrame   # perturbations x libraries
    ctrl_sum: np.ndarray             # usable control cells, every gene
    ctrl_sumsq: np.ndarray
    n_ctrl: int = 0
    genes: list[str] = field(default_factory=list)

    def ctrl_mean_var(self) -> tuple[np.ndarray, np.ndarray]:
        n = max(self.n_ctrl, 1)
        mean = self.ctrl_sum / n
        var = np.maximum(self.ctrl_sumsq / n - mean ** 2, 0) * n / max(n - 1, 1)
        return mean, var


def rna_parts(cells_files: Sequence[PathLike], ids: Sequence[str], controls: Sequence[str],
              eval_genes: Sequence[str], all_genes: Sequence[str], *, n_parts: int, seed: int) -> RnaParts:
    """Stream the per-library cells files (see the module doc); ``ids`` = registry perturbation ids (row
    order of the result), ``controls`` = the control ids, ``eval_genes`` = the genes of the parts,
    ``all_genes`` = the gene order of the control statistics (the pseudobulk's var names)."""
    ids = [str(i) for i in ids]
    pos = {p: i for i, p in enumerate(ids)}
    P, G = len(ids), len(eval_genes)
    sums, counts = np.zeros((P, n_parts, G)), np.zeros((P, n_parts, 1))
    n_cells, umis = np.zeros(P), np.zeros(P)
    by_lib: dict[str, np.ndarray] = {}
    ctrl_sum, ctrl_sumsq, n_ctrl = np.zeros(len(all_genes)), np.zeros(len(all_genes)), 0
    ctrl_set = set(map(str, controls))
    for path in cells_files:
        cells = ad.read_h5ad(path)
        lib = str(cells.obs["library"].iloc[0]) if "library" in cells.obs and cells.n_obs else \
            os.path.basename(os.path.dirname(os.fspath(path)))
        ok = usable_cells(cells, categories=ids)
        pert = cells.obs[OBS_PERTURBATION].astype(str).to_numpy()[ok]
        counts_x = sp.csr_matrix(cells.X[ok])
        x_names = list(cells.var_names)
        del cells
        pidx = np.array([pos[p] for p in pert], np.int64)
        rng = np.random.default_rng([seed, zlib.crc32(lib.encode())])
        part = deal_parts(pidx, n_parts, rng)
        tot = np.asarray(counts_x.sum(axis=1)).ravel()
        x = log1p_cp10k(counts_x)
        del counts_x
        np.add.at(n_cells, pidx, 1)
        np.add.at(umis, pidx, tot)
        by_lib[lib] = by_lib.get(lib, np.zeros(P)) + np.bincount(pidx, minlength=P)
        if len(pidx):
            cols = pd.Index(x_names).get_indexer(list(eval_genes))
            if (cols < 0).any():
                raise ValueError(f"{path}: eval genes missing from the cells file")
            onehot = sp.csr_matrix((np.ones(len(pidx)), (pidx * n_parts + part, np.arange(len(pidx)))),
                                   shape=(P * n_parts, len(pidx)))
            sums += np.asarray((onehot @ x[:, cols]).todense()).reshape(P, n_parts, G)
            np.add.at(counts, (pidx, part, 0), 1)
            cm = np.isin(pert, list(ctrl_set))
            if cm.any():
                gcols = pd.Index(x_names).get_indexer(list(all_genes))
                xc = x[cm][:, np.where(gcols >= 0, gcols, 0)]
                s = np.asarray(xc.sum(axis=0)).ravel()
                ss = np.asarray(xc.multiply(xc).sum(axis=0)).ravel()
                ctrl_sum += np.where(gcols >= 0, s, 0)
                ctrl_sumsq += np.where(gcols >= 0, ss, 0)
                n_ctrl += int(cm.sum())
        del x
    return RnaParts(Parts(sums, counts), n_cells, umis, pd.DataFrame(by_lib, index=ids), ctrl_sum, ctrl_sumsq,
                    n_ctrl, list(eval_genes))


def paint_parts(cells_files: Sequence[PathLike], features: Sequence[str], registry: pd.DataFrame, *,
                n_parts: int, seed: int, aggregate: str, normalize: str) -> tuple[Parts, pd.DataFrame]:
    """Stream the per-plate cells files (see the module doc); sub-wells aggregated and normalised as the
    profiles stage made the wells (``aggregate`` / ``normalize`` = ``profiles.aggregate`` / ``.normalize``).
    Returns the parts (registry order, on
    ``features``) and per perturbation: ``paint_wells``, ``paint_plates``, ``paint_cells``,
    ``paint_cells_per_well``, ``paint_mean_row``, ``paint_mean_col``, ``paint_edge_fraction``."""
    from pairedscreen.paint.profiles import aggregate_plate_file, normalize_plates
    ids = registry["perturbation_id"].astype(str).tolist()
    pos = pd.Index(ids)
    P, F = len(ids), len(features)
    sums, counts = np.zeros((P, n_parts, F)), np.zeros((P, n_parts, F))
    wells = []
    for path in cells_files:
        sub = aggregate_plate_file(path, operation=aggregate, registry=registry, features=list(features),
                                   n_splits=n_parts, seed=seed)
        sub, _ = normalize_plates(sub, method=normalize, features=list(features))
        pidx = pos.get_indexer(sub[PERT].astype(str))
        keep = pidx >= 0
        sub, pidx = sub[keep], pidx[keep]
        part = sub[SPLIT].to_numpy(np.int64)
        v = sub[list(features)].to_numpy(np.float64)
        fin = np.isfinite(v)
        np.add.at(sums, (pidx, part), np.where(fin, v, 0.0))
        np.add.at(counts, (pidx, part), fin.astype(float))
        w = sub.groupby([PLATE, WELL], sort=True, observed=True).agg(
            pert=(PERT, "first"), n=(N_CELLS, "sum")).reset_index()
        rc = well_positions(w[WELL].astype(str))
        w["row"], w["col"] = rc["row"].to_numpy(), rc["col"].to_numpy()
        w["edge"] = edge_mask(w[WELL].astype(str))
        wells.append(w)
        del sub, v
    meta = pd.DataFrame(index=ids)
    if wells:
        w = pd.concat(wells, ignore_index=True)
        g = w.groupby(w["pert"].astype(str))
        meta = pd.DataFrame({"paint_wells": g.size(), "paint_plates": g[PLATE].nunique(),
                             "paint_cells": g["n"].sum(), "paint_cells_per_well": g["n"].mean(),
                             "paint_mean_row": g["row"].mean(), "paint_mean_col": g["col"].mean(),
                             "paint_edge_fraction": g["edge"].mean()}).reindex(ids)
    return Parts(sums, counts), meta

