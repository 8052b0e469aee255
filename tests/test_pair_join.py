"""Join: perturbations.h5mu / rna.h5ad / paint.h5ad / cells.h5mu contracts; pseudobulks."""

from __future__ import annotations

import anndata as ad
import mudata as md
import numpy as np
import pandas as pd
import scipy.sparse as sp

from pairedscreen.columns import N_CELLS, N_WELLS, PERT
from pairedscreen.modalities import rna_modality
from pairedscreen.pair import join
from pairedscreen.quality.units import replicate_pseudobulks
from pairedscreen.rna.pseudobulk import pseudobulk

REG = pd.DataFrame({
    "perturbation_id": ["TGT02", "TGT01", "TGT03", "TGT04", "NTC_1", "NTC_2"],   # not sorted on purpose
    "perturbation_type": ["CRISPRi"] * 4 + ["control"] * 2,
    "target_gene": ["TGT02", "TGT01", "TGT03", "TGT04", "", ""],
    "is_control": [False] * 4 + [True] * 2,
    "control_type": [""] * 4 + ["non-targeting"] * 2,
})


def _rna_cells(rng: np.random.Generator, n: int = 400, n_genes: int = 30) -> ad.AnnData:
    # TGT04 never gets a cell (missing from the RNA arm); some cells are multiple/unassigned/failed QC
    choices = ["TGT02", "TGT01", "TGT03", "NTC_1", "NTC_2", "multiple", "unassigned"]
    pert = rng.choice(choices, n, p=[0.15, 0.15, 0.15, 0.15, 0.2, 0.1, 0.1])
    obs = pd.DataFrame({
        "perturbation": pert,
        "guide_ids": [f"{p}-g{rng.integers(1, 3)}" for p in pert],
        "library": rng.choice(["L1", "L2"], n),
        "pass_qc": rng.random(n) > 0.1,
        "is_control": np.char.startswith(pert.astype(str), "NTC"),
    }, index=[f"L_{i:05d}" for i in range(n)])
    x = sp.csr_matrix(rng.poisson(3.0, (n, n_genes)).astype(np.int64))
    return ad.AnnData(X=x, obs=obs, var=pd.DataFrame(index=[f"GENE{i}" for i in range(n_genes)]))


def _consensus() -> pd.DataFrame:
    # TGT03 missing from the paint arm
    return pd.DataFrame({PERT: ["NTC_1", "TGT01", "TGT02", "TGT04", "NTC_2"], N_WELLS: [4, 2, 2, 2, 4],
                         N_CELLS: [400, 210, 190, 205, 380],
                         "Metadata_IsControl": [True, False, False, False, True],
                         "Cells_Intensity_Mean_DNA": [0.0, 1.0, 2.0, 3.0, 0.1],
                         "Nuclei_AreaShape_Area": [0.0, -1.0, 0.5, 0.2, 0.0]})


def test_pseudobulk_counts_and_means():
    rng = np.random.default_rng(0)
    cells = _rna_cells(rng)
    pb = rna_modality(pseudobulk(cells, order=REG.perturbation_id.tolist()), REG)
    assert pb.obs_names.tolist() == REG.perturbation_id.tolist()
    ok = cells.obs.pass_qc & ~cells.obs.perturbation.isin(["multiple", "unassigned"])
    expected = cells.obs[ok].perturbation.value_counts()
    for pid in REG.perturbation_id:
        assert pb.obs.loc[pid, "n_cells"] == expected.get(pid, 0)
        rows = (cells.obs.perturbation == pid).to_numpy() & ok.to_numpy()
        if rows.any():
            np.testing.assert_array_equal(pb[pid].layers["counts"].ravel(), cells.X[rows].sum(axis=0).A1)
            lib = cells.X[rows].toarray()
            manual = np.log1p(lib / lib.sum(axis=1, keepdims=True) * 1e4).mean(axis=0)
            np.testing.assert_allclose(pb[pid].X.ravel(), manual, rtol=1e-5)
    assert np.isnan(pb["TGT04"].X).all()


def test_replicate_pseudobulks_partition_cells():
    rng = np.random.default_rng(1)
    cells = _rna_cells(rng, n=800)
    rep = replicate_pseudobulks(cells, min_cells=5, max_splits=3, seed=0)
    ok = cells.obs.pass_qc & ~cells.obs.perturbation.isin(["multiple", "unassigned"])
    units = cells.obs[ok].groupby(["perturbation", "guide_ids", "library"]).size()
    expected_cells = units[units >= 5].groupby(level=0).sum()
    got = rep.obs.groupby("perturbation")["n_cells"].sum()
    assert got.sort_index().to_dict() == expected_cells.sort_index().to_dict()
    assert (rep.obs.n_cells >= 5).all()
    assert rep.obs.groupby(["perturbation", "guide", "library"]).size().max() <= 3
    assert rep.obs.loc[rep.obs.perturbation.str.startswith("NTC"), "is_control"].all()
    kept_units = units[units >= 5].index
    key = pd.MultiIndex.from_frame(cells.obs[["perturbation", "guide_ids", "library"]])
    used = ok.to_numpy() & key.isin(kept_units)
    assert rep.layers["counts"].sum() == cells.X[used].sum()


def test_perturbations_h5mu_contract(tmp_path):
    rng = np.random.default_rng(2)
    cells = _rna_cells(rng)
    pb = pseudobulk(cells, order=REG.perturbation_id.tolist())
    kd = pd.DataFrame({"perturbation_id": ["TGT01", "TGT02"], "target_gene": ["TGT01", "TGT02"],
                       "log2fc": [-2.0, -1.5], "pvalue": [1e-5, 1e-3], "padj": [1e-4, 2e-3],
                       "remaining_fraction": [0.2, 0.3], "n_cells": [50, 60]})
    qc = pd.DataFrame({"map_paint": [0.9, 0.4], "q_paint": [0.01, 0.6]}, index=["TGT01", "NTC_1"])
    mdata = join.build_perturbations(REG, rna=pb, paint=_consensus(), knockdown=kd, qc=qc)
    paths = tmp_path / "perturbations.h5mu", tmp_path / "rna.h5ad", tmp_path / "paint.h5ad"
    join.write_paired(mdata, *paths)

    with md.set_options(pull_on_update=False):   # mudata 0.4 behaviour
        back = md.read_h5mu(paths[0])
    order = REG.perturbation_id.tolist()
    assert back.obs_names.tolist() == order
    assert back["rna"].obs_names.tolist() == order and back["paint"].obs_names.tolist() == order
    for col in ("perturbation_type", "target_gene", "is_control", "control_type", "n_cells_rna",
                "n_cells_paint", "n_wells", "in_rna", "in_paint", "knockdown_log2fc", "map_paint"):
        assert col in back.obs.columns, col
    ok = cells.obs.pass_qc & ~cells.obs.perturbation.isin(["multiple", "unassigned"])
    counts = cells.obs[ok].perturbation.value_counts().reindex(order).fillna(0).astype(int)
    assert back["rna"].obs["n_cells"].tolist() == counts.tolist()
    assert back.obs["n_cells_rna"].tolist() == counts.tolist()
    cons = _consensus().set_index(PERT)
    assert back.obs.loc["TGT01", "n_cells_paint"] == cons.loc["TGT01", N_CELLS]
    assert back.obs.loc["TGT03", "n_wells"] == 0
    # missing perturbations are kept as NaN rows and flagged
    assert not back.obs.loc["TGT04", "in_rna"] and not back.obs.loc["TGT03", "in_paint"]
    assert np.isnan(back["rna"]["TGT04"].X).all() and np.isnan(back["paint"]["TGT03"].X).all()
    assert list(back.uns["missing"]["rna"]) == ["TGT04"] and list(back.uns["missing"]["paint"]) == ["TGT03"]
    assert back.obs.loc["TGT01", "knockdown_log2fc"] == -2.0
    assert np.isnan(back.obs.loc["TGT03", "knockdown_log2fc"])
    assert back.obs["is_control"].tolist() == REG.is_control.tolist()
    np.testing.assert_allclose(back["paint"]["TGT02"].X.ravel(), [2.0, 0.5])
    assert "counts" in back["rna"].layers

    rna, paint = ad.read_h5ad(paths[1]), ad.read_h5ad(paths[2])
    assert rna.obs_names.tolist() == order and paint.obs_names.tolist() == order
    assert rna.obs["n_cells"].tolist() == counts.tolist() and "in_paint" in rna.obs


def test_cells_h5mu_with_disjoint_obs(tmp_path):
    rng = np.random.default_rng(3)
    rna_cells = _rna_cells(rng, n=50)
    table = pd.DataFrame({"plate": "P1", "well": ["A01", "A02", "B01"], "site": 1, "object_id": [1, 2, 3],
                          "perturbation_id": ["TGT01", "NTC_1", "TGT02"],
                          "Cells_AreaShape_Area": [100.0, 120.0, 90.0],
                          "Nuclei_Intensity_Mean_DNA": [1.0, 2.0, 3.0]})
    paint_cells = join.paint_cells_anndata(table)
    assert paint_cells.obs["perturbation"].tolist() == ["TGT01", "NTC_1", "TGT02"]
    mdata = join.build_cells(rna_cells, paint_cells)
    join.write_cells(mdata, tmp_path / "cells.h5mu")
    with md.set_options(pull_on_update=False):   # mudata 0.4 behaviour
        back = md.read_h5mu(tmp_path / "cells.h5mu")
    assert back["rna"].n_obs == 50 and back["paint"].n_obs == 3 and back.n_obs == 53
    assert not set(back["rna"].obs_names) & set(back["paint"].obs_names)
    assert join.should_write_cells("auto", 10) and not join.should_write_cells("auto", 300_000)
    assert join.should_write_cells(True, 10**9) and not join.should_write_cells("false", 1)
