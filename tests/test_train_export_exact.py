"""The streamed cell-load export and eval-cells subsample (a few bytes per cell held across the screen) write
the same files as the whole-table implementations they replaced (tests/_train_export_reference.py, kept
verbatim): the same content digest of the h5ad (every group, dataset, attribute), the same ``read_h5ad``
result, the same ``read_parquet`` table (the same bytes while the table is one row group)."""

from __future__ import annotations

import hashlib

import numpy as np
import pandas as pd
import pytest
from _train_export_reference import (
    reference_eval_cells,
    reference_export,
    reference_subsample_rows,
)

from pairedscreen.digest import content_digest
from pairedscreen.train import h5obs, residuals, rna_obs, splits
from pairedscreen.train.eval_cells import subsample_rows, write_eval_cells
from pairedscreen.train.rna_export import export_rna

PARAMS = {"seed": 0, "val_fraction": 0.2, "test_fraction": 0.2, "cell_type": "K562",
          "control_label": "non-targeting", "n_hvg": 25}


def _registry() -> pd.DataFrame:
    """Labels that sort unlike the ids: shared gene symbols, an id without a symbol, controls."""
    ids = [f"TGT{i:02d}" for i in range(8)] + ["NTC_0", "NTC_1"]
    genes = ["ZNF1", "ACTB", "ZNF1", "MYC", "", "BRCA1", "ACTB", "Ärm"] + ["", ""]
    return pd.DataFrame({"perturbation_id": ids, "target_gene": genes,
                         "is_control": [False] * 8 + [True] * 2})


def _library(rng, lib: str, batch: str, n: int, ids: list[str], mean: np.ndarray, *, usable: bool = True,
             drop: tuple[str, ...] = ()):
    """One library's cells.h5ad content; barcodes BC00000.. in every library (they collide across
    libraries, the cell ids do not)."""
    import anndata as ad
    import scipy.sparse as sp

    x = sp.csr_matrix(rng.poisson(mean * rng.gamma(2.0, 0.5, (n, 1)), (n, len(mean))).astype(np.int32))
    pert = rng.choice([*ids, "multiple", "unassigned"], n)
    obs = pd.DataFrame({"library": lib, "batch": batch, "barcode": [f"BC{i:05d}" for i in range(n)],
                        "total_counts": np.asarray(x.sum(axis=1)).ravel().astype(float),
                        "pass_qc": (rng.random(n) > 0.1) & usable, "predicted_doublet": rng.random(n) < 0.05,
                        "guide_ids": [f"{p}-g{rng.integers(1, 3)}" for p in pert], "perturbation": pert},
                       index=[f"{lib}_BC{i:05d}" for i in range(n)]).drop(columns=list(drop))
    var = pd.DataFrame({"gene_id": [f"ENSG{i:05d}" for i in range(len(mean))]},
                       index=[f"G{i}" for i in range(len(mean))])
    return ad.AnnData(X=x, obs=obs, var=var)


@pytest.fixture(scope="module")
def screen(tmp_path_factory):
    """4 libraries: colliding barcodes, one without usable cells, one with only some perturbations (and
    a non-ASCII batch, no guide_ids column), and the same cells merged into one file."""
    import anndata as ad

    from pairedscreen.rna.pseudobulk import merge_libraries

    tmp = tmp_path_factory.mktemp("screen")
    rng = np.random.default_rng(20)
    reg = _registry()
    ids = reg["perturbation_id"].tolist()
    mean = rng.gamma(0.6, 3.0, 80)
    libs = [_library(rng, "L0", "B0", 300, ids, mean),
            _library(rng, "L1", "B1", 120, ids, mean, usable=False),
            _library(rng, "L2", "Bä", 400, ids[:4] + ["NTC_0"], mean, drop=("guide_ids",)),
            _library(rng, "L3", "B0", 250, ids, mean)]
    files = []
    for lib in libs:
        path = tmp / lib.obs["library"].iloc[0] / "cells.h5ad"
        path.parent.mkdir()
        lib.write_h5ad(path)
        files.append(path)
    merged = merge_libraries([ad.read_h5ad(f) for f in files])
    merged.write_h5ad(tmp / "merged.h5ad")
    sp_ = splits.assign_splits(reg, seed=0, val_fraction=0.2, test_fraction=0.2)
    hold = splits.batch_holdout(pd.DataFrame({"library_id": ["L0", "L1", "L2", "L3"],
                                              "batch": ["B0", "B1", "Bä", "B0"]}),
                                pd.DataFrame({"plate_id": [], "batch": []}), "auto")
    return {"tmp": tmp, "files": files, "merged": tmp / "merged.h5ad", "reg": reg, "splits": sp_,
            "hold": hold}


def _add_residuals(h5ad) -> None:
    """The reference export (written before the knockdown residuals) with cell-load's residual columns
    added by the one implementation (pairedscreen.train.residuals, checked against cell-load in
    tests/test_train_residuals.py)."""
    import h5py

    with h5py.File(h5ad, "a") as fh:
        residuals.write_knockdown_residuals(fh, control_label=PARAMS["control_label"])


def _assert_same_export(new, ref, new_pq, ref_pq) -> None:
    import anndata as ad

    assert content_digest(new) == content_digest(ref)
    a, b = ad.read_h5ad(new), ad.read_h5ad(ref)
    assert a.n_obs == b.n_obs and (a.X != b.X).nnz == 0 and a.X.dtype == b.X.dtype
    pd.testing.assert_frame_equal(a.obs, b.obs)
    for c in a.obs.columns:
        if isinstance(a.obs[c].dtype, pd.CategoricalDtype):
            assert list(a.obs[c].cat.categories) == list(b.obs[c].cat.categories)
    pd.testing.assert_frame_equal(a.var, b.var)
    np.testing.assert_array_equal(a.obsm["X_hvg"], b.obsm["X_hvg"])
    np.testing.assert_array_equal(a.uns["X_hvg_genes"], b.uns["X_hvg_genes"])
    assert a.uns["pairedscreen"] == b.uns["pairedscreen"]
    got, want = pd.read_parquet(new_pq), pd.read_parquet(ref_pq)
    pd.testing.assert_frame_equal(got, want)
    assert content_digest(new_pq) == content_digest(ref_pq)


@pytest.mark.parametrize("small_blocks", [False, True])
def test_streamed_export_equals_the_whole_table_export(screen, tmp_path, monkeypatch, small_blocks):
    """Per-library files: the same h5ad and parquet as the reference; with tiny blocks (runs spilled to
    scratch files, categories merged 3 values at a time, parquet row groups of 64 rows) too, else the
    parquet's bytes are the reference's."""
    s = screen
    ref, ref_pq = s["tmp"] / "ref.h5ad", s["tmp"] / "ref.parquet"
    if not ref.exists():
        reference_export(s["files"], s["reg"], s["splits"], s["hold"], PARAMS, ref, ref_pq)
        _add_residuals(ref)
    if small_blocks:
        monkeypatch.setattr(rna_obs, "SPILL", 5)
        monkeypatch.setattr(h5obs, "BLOCK", 3)
    out = export_rna(s["files"], s["reg"], s["splits"], s["hold"], PARAMS, tmp_path / "new.h5ad",
                     tmp_path / "new.parquet", block_nnz=300)
    _assert_same_export(tmp_path / "new.h5ad", ref, tmp_path / "new.parquet", ref_pq)
    obs = pd.read_parquet(ref_pq)
    assert out.n_obs == len(obs) > 0 and out.n_vars == 80 and int(out.var["highly_variable"].sum()) == 25
    # the case's premises: colliding barcodes, no cell of L1, perturbations absent from L2, 'nan' guides
    assert obs["barcode"].duplicated().any() and "L1" not in set(obs["library"])
    assert set(obs.loc[obs["library"] == "L2", "perturbation_id"]) < set(obs["perturbation_id"])
    assert set(obs.loc[obs["library"] == "L2", "guide_id"]) == {"nan"}
    assert {"test", "train"} == set(obs["batch_split"])
    if not small_blocks:
        assert (tmp_path / "new.parquet").read_bytes() == ref_pq.read_bytes()


def test_streamed_export_of_one_merged_file(screen, tmp_path):
    s = screen
    reference_export(s["merged"], s["reg"], s["splits"], s["hold"], PARAMS, tmp_path / "ref.h5ad",
                     tmp_path / "ref.parquet")
    _add_residuals(tmp_path / "ref.h5ad")
    export_rna(s["merged"], s["reg"], s["splits"], s["hold"], PARAMS, tmp_path / "new.h5ad",
               tmp_path / "new.parquet")
    _assert_same_export(tmp_path / "new.h5ad", tmp_path / "ref.h5ad", tmp_path / "new.parquet",
                        tmp_path / "ref.parquet")


def test_no_exported_cell_fails_as_before(screen, tmp_path):
    """Only the library without usable cells: the reference stops (h5py refuses the empty X_hvg's chunks;
    rna_merge's on_empty decision comes first in the workflow) and so does the streamed export, leaving
    no output."""
    s = screen
    one = [s["files"][1]]
    with pytest.raises(ValueError) as ref:
        reference_export(one, s["reg"], s["splits"], s["hold"], PARAMS, tmp_path / "ref.h5ad",
                         tmp_path / "ref.parquet")
    with pytest.raises(ValueError) as new:
        export_rna(one, s["reg"], s["splits"], s["hold"], PARAMS, tmp_path / "new.h5ad",
                   tmp_path / "new.parquet")
    assert str(new.value) == str(ref.value)
    assert not (tmp_path / "new.h5ad").exists() and not (tmp_path / "new.parquet").exists()


def test_unknown_perturbation_error_as_before(screen, tmp_path):
    s = screen
    part = s["splits"][s["splits"]["perturbation_id"] != "TGT01"]
    with pytest.raises(ValueError) as ref:
        reference_export(s["files"], s["reg"], part, s["hold"], PARAMS, tmp_path / "r.h5ad")
    with pytest.raises(ValueError) as new:
        export_rna(s["files"], s["reg"], part, s["hold"], PARAMS, tmp_path / "n.h5ad")
    assert str(new.value) == str(ref.value) and "TGT01" in str(ref.value)
    assert not (tmp_path / "n.h5ad").exists()


@pytest.mark.parametrize("max_cells", [1, 20, 1000])
def test_eval_cells_equal_the_whole_obs_subsample(screen, tmp_path, monkeypatch, max_cells):
    """eval_cells.h5ad streamed from the export (tiny blocks) = the reference's from the whole obs."""
    s = screen
    ref = s["tmp"] / "ref_eval_src.h5ad"
    if not ref.exists():
        reference_export(s["files"], s["reg"], s["splits"], s["hold"], PARAMS, ref)
    want = reference_eval_cells(ref, max_cells, 3, tmp_path / "ref.h5ad")
    monkeypatch.setattr(h5obs, "BLOCK", 37)
    got = write_eval_cells(ref, max_cells, 3, tmp_path / "new.h5ad")
    assert got == want
    assert content_digest(tmp_path / "new.h5ad") == content_digest(tmp_path / "ref.h5ad")


def test_subsample_ties_resolved_by_name(monkeypatch):
    """Cells with equal hash keys (forced: every key one of three values) are ranked by name, as the
    reference's lexsort over (group, key, name) does."""
    import pairedscreen.train.eval_cells as ec

    def coarse(keys, seed):
        return np.array([float(hashlib.sha256(f"{seed}:{k}".encode()).digest()[0] % 3) for k in keys])

    monkeypatch.setattr(ec, "seeded_uniform", coarse)
    import _train_export_reference as refmod
    monkeypatch.setattr(refmod, "seeded_uniform", coarse)
    rng = np.random.default_rng(1)
    names = np.array([f"L{rng.integers(3)}_{i:04d}" for i in rng.permutation(500)])
    groups = rng.choice(["A", "B", "C"], 500)
    for m in (1, 7, 100, 400):
        np.testing.assert_array_equal(subsample_rows(names, groups, m, 0),
                                      reference_subsample_rows(names, groups, m, 0))
