"""Training export and held-out evals, below the workflow: splits invariants, crop geometry against the
image, and the cross-modal eval against the simulator's planted truth on a bigger profile table."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from config_values import SCHEMA

from pairedscreen.train import crops, evals, splits

EVAL_PARAMS = {"n_pcs": 10, "ridge_alpha": 1.0, "n_bootstrap": 1000, "n_hvg": 500}


def _registry(n_trt: int, n_ctrl: int = 2) -> pd.DataFrame:
    ids = [f"TGT{i:02d}" for i in range(n_trt)] + [f"NTC_{i}" for i in range(n_ctrl)]
    return pd.DataFrame({"perturbation_id": ids, "target_gene": ids[:n_trt] + [""] * n_ctrl,
                         "is_control": [False] * n_trt + [True] * n_ctrl})


def test_every_perturbation_in_exactly_one_split_and_controls_in_all():
    reg = _registry(40)
    table = splits.assign_splits(reg, seed=3, val_fraction=0.2, test_fraction=0.2)
    trt = table[~table["is_control"]]
    assert set(trt["split"]) == {"train", "val", "test"}
    assert trt["perturbation_id"].is_unique and len(trt) == 40
    assert (trt["split"] == "test").sum() == 8 and (trt["split"] == "val").sum() == 8
    assert (table.loc[table["is_control"], "split"] == splits.CONTROL_SPLIT).all()
    # independent of registry row order; different seeds give different splits
    shuffled = splits.assign_splits(reg.sample(frac=1, random_state=1), seed=3, val_fraction=0.2,
                                    test_fraction=0.2).set_index("perturbation_id")["split"]
    assert shuffled.reindex(table["perturbation_id"]).tolist() == table["split"].tolist()
    other = splits.assign_splits(reg, seed=4, val_fraction=0.2, test_fraction=0.2)
    assert other["split"].tolist() != table["split"].tolist()
    # control cells are spread over every split, treated cells follow their perturbation
    cells = np.array(["NTC_0"] * 300 + ["TGT00"] * 5)
    per_cell = splits.cell_splits(cells, [f"c{i}" for i in range(len(cells))], ["L1"] * len(cells), table,
                                  splits.batch_holdout(pd.DataFrame({"library_id": ["L1"], "batch": ["B1"]}),
                                                       pd.DataFrame({"plate_id": [], "batch": []}), "auto"),
                                  "rna", val_fraction=0.2, test_fraction=0.2)
    assert set(per_cell["split"][:300]) == {"train", "val", "test"}
    assert set(per_cell["split"][300:]) == {table.set_index("perturbation_id").at["TGT00", "split"]}
    assert set(per_cell["batch_split"]) == {"train"}   # one batch: nothing to hold out


def test_small_screens_still_hold_out_one_val_and_one_test():
    table = splits.assign_splits(_registry(3), seed=0, val_fraction=0.2, test_fraction=0.2)
    assert sorted(table.loc[~table["is_control"], "split"]) == ["test", "train", "val"]
    with pytest.raises(ValueError, match="sum to less than 1"):
        splits.assign_splits(_registry(5), seed=0, val_fraction=0.5, test_fraction=0.5)


def test_batch_holdout_holds_out_whole_units_of_one_batch():
    libs = pd.DataFrame({"library_id": ["L1", "L2"], "batch": ["B1", "B2"]})
    plates = pd.DataFrame({"plate_id": ["P1", "P2", "P3"], "batch": ["B1", "B2", "B2"]})
    auto = splits.batch_holdout(libs, plates, "auto")
    assert auto.loc[auto["batch_split"] == "test", "unit"].tolist() == ["L2", "P2", "P3"]
    assert (splits.batch_holdout(libs, plates, "none")["batch_split"] == "train").all()
    assert splits.batch_holdout(libs, plates, "B1").query("batch_split == 'test'")["unit"].tolist() == \
        ["L1", "P1"]
    with pytest.raises(ValueError, match="not a batch"):
        splits.batch_holdout(libs, plates, "B9")


def test_crop_windows_are_the_image_region_around_the_centroid_zero_padded():
    rng = np.random.default_rng(0)
    img = rng.random((2, 40, 50)).astype(np.float32)
    (c, corner, inside), padded = crops.crop_windows(img, np.array([20.4, 2.0, 8.0]),
                                                      np.array([25.6, 48.0, 8.0]), size=16)
    assert not padded[0] and np.array_equal(c, img[:, 12:28, 18:34])
    assert padded[1]   # top-right corner: padded with zeros
    assert np.array_equal(corner[:, 6:, :10], img[:, 0:10, 40:50])
    assert not corner[:, :6].any() and not corner[:, :, 10:].any()
    # a window flush with the top-left corner (rows/cols 0..15) is not padded
    assert not padded[2] and np.array_equal(inside, img[:, 0:16, 0:16])


def test_fitted_crop_size_is_the_factor_times_the_quantile_extent():
    """The schema's factor (2) x quantile (0.95) of the extent, rounded up to a multiple of 8."""
    n = 100
    ext = np.arange(1, n + 1, dtype=float)
    cells = pd.DataFrame({crops.BBOX[0]: 0.0, crops.BBOX[1]: 0.0, crops.BBOX[2]: ext, crops.BBOX[3]: ext / 2})
    factor, quantile = SCHEMA["train.crops.size_factor"], SCHEMA["train.crops.size_quantile"]
    expected = factor * np.quantile(ext, quantile)
    s = crops.fit_crop_size(cells, factor=factor, quantile=quantile)
    assert s % 8 == 0 and expected <= s < expected + 8


def simulated_profiles(seed: int, classes: dict[str, int]):
    """Per-perturbation profile tables from the simulator's planted effects (no FASTQs, no images): RNA =
    the gene model's log effects (knockdown + programs) + noise (controls averaged over more cells), paint
    = the planted morphology effects mixed into 60 features + noise. Returns (registry, rna, paint)."""
    from pairedscreen.simulate.paint import perturbation_effects
    from pairedscreen.simulate.registry import make_registry
    from pairedscreen.simulate.rna import make_gene_model
    from pairedscreen.simulate.spec import ScreenSpec

    spec = ScreenSpec(seed=seed, n_genes=600, classes=classes)
    reg = make_registry(spec)
    model = make_gene_model(reg, spec)
    rng = np.random.default_rng(seed)
    ctrl = reg.perturbations["is_control"].to_numpy(bool)
    sd = np.where(ctrl, 0.15 / 4, 0.15)[:, None]
    rna = model.log2_effects * np.log(2) * 0.5 + rng.normal(0.0, 1.0, model.log2_effects.shape) * sd
    eff = perturbation_effects(reg, spec)
    eff = eff[[c for c in eff.columns if c.startswith("paint_") and c not in ("paint_active",
                                                                               "paint_effect")]]
    paint = eff.to_numpy() @ rng.normal(0.0, 1.0, (eff.shape[1], 60)) + rng.normal(0.0, 0.3, (len(eff), 60))
    return reg.perturbations, rna, paint


def test_cross_modal_prediction_beats_the_mean_only_where_the_arms_share_biology():
    """Planted truth, 80 perturbations: held out are one perturbation of each of the 20 shared-program pairs
    (its partner trains the ridge) and half of the rna-only, paint-only and neither perturbations (8, 8, 4).
    RNA -> morphology beats the mean-of-train baseline on the shared-program ones and not on the others; the
    other direction (20 planted program genes among 500) is scored by discrimination."""
    perts, rna, paint = simulated_profiles(0, {"both": 40, "rna": 16, "paint": 16, "neither": 8})
    cls = perts["effect_class"].to_numpy()
    split = np.full(len(perts), "train", dtype=object)
    for c in ("both", "rna", "paint", "neither"):
        split[np.flatnonzero(cls == c)[::2]] = "test"
    res = evals.evaluate(rna, paint, split, perts["is_control"].to_numpy(bool), EVAL_PARAMS,
                         labels=perts["perturbation_id"].to_numpy(), classes=cls, seed=SCHEMA["train.seed"])
    fwd = res["rna_to_paint"]["by_class"]
    assert fwd["both"]["n"] == 20 and fwd["rna"]["n"] == 8 and fwd["paint"]["n"] == 8
    assert fwd["both"]["beats_baseline"], fwd["both"]
    assert fwd["both"]["correlation"]["difference_ci"][0] > 0
    assert not fwd["rna"]["beats_baseline"] and not fwd["paint"]["beats_baseline"], (fwd["rna"], fwd["paint"])
    assert fwd["both"]["discrimination"]["model"] > 0.7 and fwd["both"]["discrimination"]["beats_baseline"]
    back = res["paint_to_rna"]["by_class"]
    assert back["both"]["discrimination"]["beats_baseline"], back["both"]
    assert not back["rna"]["beats_baseline"] and not back["paint"]["beats_baseline"]
    assert not back["rna"]["discrimination"]["beats_baseline"]


def test_discrimination_of_a_perfect_and_of_a_constant_prediction():
    rng = np.random.default_rng(1)
    true = rng.normal(size=(6, 30))
    score, top1 = evals.discrimination(true.copy(), true)
    assert np.allclose(score, 1.0) and np.allclose(top1, 1.0)
    score, _ = evals.discrimination(np.repeat(true.mean(axis=0, keepdims=True), 6, axis=0), true)
    assert np.isclose(score.mean(), 0.5)


def test_streamed_row_read_equals_fancy_indexing(tmp_path):
    import anndata as ad
    import scipy.sparse as sp

    from pairedscreen.train.rna_export import read_rows

    rng = np.random.default_rng(2)
    x = sp.random(500, 40, density=0.2, format="csr", random_state=3, dtype=np.float64)
    x.data = np.ceil(x.data * 9).astype(np.int32)
    x = sp.csr_matrix(x, dtype=np.int32)
    ad.AnnData(X=x).write_h5ad(tmp_path / "c.h5ad")
    rows = rng.permutation(500)[:321]
    got = read_rows(tmp_path / "c.h5ad", rows, 40, block_nnz=97)   # many small blocks
    assert (got != x[rows]).nnz == 0 and got.dtype == np.int32


def test_rna_export_rows_counts_and_embedding(tmp_path):
    """Invariants of the cell-load h5ad against its source: the usable cells only, X = their source rows
    (by cell id), obsm['X_hvg'] = log1p CP10k of the flagged genes, (cell type, perturbation) contiguous."""
    import anndata as ad
    import scipy.sparse as sp

    from pairedscreen.expression import log1p_cp10k
    from pairedscreen.train.rna_export import export_rna

    rng = np.random.default_rng(5)
    n, g = 400, 60
    x = sp.csr_matrix(rng.poisson(rng.gamma(0.5, 2.0, g), (n, g)).astype(np.int32))
    reg = _registry(5)
    pert = rng.choice([*reg["perturbation_id"], "multiple", "unassigned"], n)
    obs = pd.DataFrame({"perturbation": pert, "guide_ids": [f"{p}-g1" for p in pert], "library": "L1",
                        "batch": "B1", "pass_qc": rng.random(n) > 0.1,
                        "predicted_doublet": rng.random(n) < 0.05,
                        "barcode": [f"BC{i}" for i in range(n)]}, index=[f"L1_{i}" for i in range(n)])
    src = ad.AnnData(X=x, obs=obs, var=pd.DataFrame(index=[f"G{i}" for i in range(g)]))
    src.write_h5ad(tmp_path / "cells.h5ad")
    splits_ = splits.assign_splits(reg, seed=0, val_fraction=0.2, test_fraction=0.2)
    hold = pd.DataFrame({"arm": ["rna"], "unit": ["L1"], "batch": ["B1"], "batch_split": ["train"]})
    params = {"seed": 0, "val_fraction": 0.2, "test_fraction": 0.2, "cell_type": "K562",
              "control_label": "non-targeting", "n_hvg": 20}
    export_rna(tmp_path / "cells.h5ad", reg, splits_, hold, params, tmp_path / "K562.h5ad")
    out = ad.read_h5ad(tmp_path / "K562.h5ad")
    usable = obs["pass_qc"] & ~obs["predicted_doublet"] & obs["perturbation"].isin(reg["perturbation_id"])
    assert sorted(out.obs_names) == sorted(obs.index[usable])
    assert (out.X != src[out.obs_names].X).nnz == 0 and out.X.dtype == np.int32
    genes = np.flatnonzero(out.var["highly_variable"].to_numpy())
    assert len(genes) == 20
    np.testing.assert_allclose(out.obsm["X_hvg"], log1p_cp10k(out.X)[:, genes].toarray(), rtol=1e-6)
    ctrl = out.obs["is_control"].to_numpy(bool)
    assert set(out.obs.loc[ctrl, "perturbation"]) == {"non-targeting"}
    trt = out.obs.loc[~ctrl]
    assert (trt["perturbation"].astype(str) == trt["perturbation_id"].astype(str)).all()   # symbol = id here
    keys = (out.obs["cell_type"].astype(str) + "|" + out.obs["perturbation"].astype(str)).to_numpy()
    assert len(np.flatnonzero(np.r_[True, keys[1:] != keys[:-1]])) == len(set(keys))


def _library_cells(rng: np.random.Generator, lib: str, batch: str, n: int, reg: pd.DataFrame,
                   mean: np.ndarray):
    """One library's cells.h5ad as rna_cells writes it: counts CSR, obs with the QC/guide columns."""
    import anndata as ad
    import scipy.sparse as sp

    g = len(mean)
    x = sp.csr_matrix(rng.poisson(mean * rng.gamma(2.0, 0.5, (n, 1)), (n, g)).astype(np.int32))
    pert = rng.choice([*reg["perturbation_id"], "multiple", "unassigned"], n)
    obs = pd.DataFrame({"library": lib, "batch": batch, "barcode": [f"BC{i:05d}" for i in range(n)],
                        "total_counts": np.asarray(x.sum(axis=1)).ravel().astype(float),
                        "pass_qc": rng.random(n) > 0.1, "predicted_doublet": rng.random(n) < 0.05,
                        "guide_ids": [f"{p}-g{rng.integers(1, 3)}" for p in pert], "perturbation": pert},
                       index=[f"{lib}_BC{i:05d}" for i in range(n)])
    var = pd.DataFrame({"gene_id": [f"ENSG{i:05d}" for i in range(g)]}, index=[f"G{i}" for i in range(g)])
    return ad.AnnData(X=x, obs=obs, var=var)


def _whole_matrix_export(merged, reg, splits_, hold, params):
    """The reference: the export computed on the whole merged matrix in memory, its HVG variance and
    embedding from scanpy's normalize_total (1e4) + log1p."""
    import anndata as ad
    import scanpy as sc
    from _train_export_reference import export_table

    from pairedscreen.expression import usable_cells

    keep = np.flatnonzero(usable_cells(merged, categories=reg["perturbation_id"].astype(str).tolist()))
    table = export_table(merged.obs.iloc[keep], reg, splits_, hold, params)
    rows = keep[table.pop("row").to_numpy()]
    x = merged.X[rows]
    norm = ad.AnnData(X=x.astype(np.float64))
    sc.pp.normalize_total(norm, target_sum=1e4)
    sc.pp.log1p(norm)
    dense = norm.X.toarray()
    var = dense.var(axis=0)
    genes = np.sort(np.lexsort((np.arange(len(var)), -var))[: int(params["n_hvg"])])
    obs = table.copy()
    for c in obs.columns:
        if c != "is_control":
            obs[c] = pd.Categorical(obs[c].astype(str))
    out = ad.AnnData(X=x, obs=obs, var=merged.var.assign(highly_variable=np.isin(np.arange(len(var)), genes)))
    out.obsm["X_hvg"] = dense[:, genes].astype(np.float32)
    out.uns["X_hvg_genes"] = np.asarray(merged.var_names[genes], dtype=str)
    return out


def test_streamed_multi_library_export_equals_the_whole_matrix_export(tmp_path):
    """The export streamed from 3 per-library files (small blocks: many blocks and runs per library) equals
    the export computed on the whole merged matrix (merged as rna_merge merges): X, obs, var (HVG flags),
    obsm['X_hvg'] (scanpy's log1p CP10k, float32 tolerance) and the obs table; streaming the one merged
    file gives the same file content; the streamed HVG moments equal numpy's variance."""
    import anndata as ad
    import scipy.sparse as sp

    from pairedscreen.expression import log1p_cp10k
    from pairedscreen.rna.pseudobulk import merge_libraries
    from pairedscreen.train.rna_export import LogNormMoments, export_rna

    rng = np.random.default_rng(11)
    reg = _registry(9)
    mean = rng.gamma(0.6, 3.0, 150)
    mean[:5] = 0.0                                   # genes never seen: zero variance, never chosen
    libs = [_library_cells(rng, f"L{i}", f"B{i % 2}", n, reg, mean) for i, n in enumerate((260, 90, 410))]
    files = []
    for lib in libs:
        (tmp_path / lib.obs["library"].iloc[0]).mkdir()
        files.append(tmp_path / lib.obs["library"].iloc[0] / "cells.h5ad")
        lib.write_h5ad(files[-1], compression="gzip")
    merged = merge_libraries([ad.read_h5ad(f) for f in files])
    merged.write_h5ad(tmp_path / "merged.h5ad", compression="gzip")
    splits_ = splits.assign_splits(reg, seed=0, val_fraction=0.2, test_fraction=0.2)
    hold = splits.batch_holdout(pd.DataFrame({"library_id": ["L0", "L1", "L2"], "batch": ["B0", "B1", "B0"]}),
                                pd.DataFrame({"plate_id": [], "batch": []}), "auto")
    params = {"seed": 0, "val_fraction": 0.2, "test_fraction": 0.2, "cell_type": "K562",
              "control_label": "non-targeting", "n_hvg": 40}
    export_rna(files, reg, splits_, hold, params, tmp_path / "lib.h5ad", tmp_path / "lib.parquet",
               block_nnz=500)
    export_rna(tmp_path / "merged.h5ad", reg, splits_, hold, params, tmp_path / "one.h5ad",
               tmp_path / "one.parquet")
    ref = _whole_matrix_export(merged, reg, splits_, hold, params)
    assert set(ref.obs["batch_split"]) == {"train", "test"}   # the holdout reaches the rows
    for name in ("lib", "one"):
        got = ad.read_h5ad(tmp_path / f"{name}.h5ad")
        assert got.X.format == "csr" and got.X.dtype == ref.X.dtype == np.int32
        for attr in ("data", "indices", "indptr"):
            np.testing.assert_array_equal(getattr(got.X, attr), getattr(ref.X, attr))
        resid = ["residual_expression", "cell_residual_expression"]
        pd.testing.assert_frame_equal(got.obs.drop(columns=resid), ref.obs)
        # the knockdown residuals cell-load's filter reads: the target gene's count over the control cells'
        # mean count, per cell and per perturbation (dense numpy on the reference export)
        x, genes = ref.X.toarray().astype(float), pd.Index(ref.var_names.astype(str))
        pert = ref.obs["perturbation"].astype(str).to_numpy()
        col = genes.get_indexer(pert)
        ctrl = pert == params["control_label"]
        cell = np.full(len(pert), np.nan)
        per = np.full(len(pert), np.nan)
        for c in np.unique(col[(col >= 0) & ~ctrl]):
            base = x[ctrl, c].mean()
            rows = (col == c) & ~ctrl
            if base > 0:
                cell[rows] = x[rows, c] / base
                per[rows] = x[rows, c].mean() / base
        np.testing.assert_allclose(got.obs["cell_residual_expression"].to_numpy(float), cell, rtol=1e-12)
        np.testing.assert_allclose(got.obs["residual_expression"].to_numpy(float), per, rtol=1e-12)
        assert (got.var["gene_name"] == got.var_names).all()      # the column cell-load's filter looks up
        pd.testing.assert_frame_equal(got.var.drop(columns="gene_name"), ref.var)
        np.testing.assert_array_equal(got.uns["X_hvg_genes"], ref.uns["X_hvg_genes"])
        np.testing.assert_allclose(got.obsm["X_hvg"], ref.obsm["X_hvg"], rtol=1e-6)
        genes = np.flatnonzero(got.var["highly_variable"])
        np.testing.assert_array_equal(got.obsm["X_hvg"],
                                      log1p_cp10k(got.X)[:, genes].toarray().astype(np.float32))
        pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / f"{name}.parquet"),
                                      ref.obs.reset_index(names="cell_id").astype(
                                          {c: str for c in ref.obs.columns if c != "is_control"}))
    m = LogNormMoments(ref.n_vars)
    for lo in range(0, ref.n_obs, 77):
        m.add(sp.csr_matrix(ref.X[lo:lo + 77]))
    np.testing.assert_allclose(m.variance(), log1p_cp10k(ref.X).toarray().var(axis=0), rtol=1e-9, atol=1e-12)


def test_eval_subsample_is_bounded_per_perturbation_and_independent_of_the_libraries():
    """At most N cells per perturbation (all of a smaller one), the same cells whatever the row order or the
    split into libraries, nested in N, a new draw for another seed, and not tied to the control cells'
    split assignment (the same seed hashes their ids for that)."""
    from pairedscreen.train.eval_cells import subsample_rows

    rng = np.random.default_rng(4)
    sizes = {"TGT00": 1000, "TGT01": 30, "NTC_0": 1500, "NTC_1": 400}
    groups = np.concatenate([[g] * n for g, n in sizes.items()])
    libs = rng.choice(["L1", "L2", "L3"], len(groups))
    names = np.array([f"{lib}_BC{i:06d}" for i, lib in enumerate(libs)])
    kept = subsample_rows(names, groups, 400, seed=0)
    per = pd.Series(groups[kept]).value_counts()
    assert per.to_dict() == {g: min(n, 400) for g, n in sizes.items()}
    assert np.all(np.diff(kept) > 0)
    # another row order (libraries concatenated the other way round, shuffled): the same cells
    perm = rng.permutation(len(names))
    assert set(names[perm][subsample_rows(names[perm], groups[perm], 400, seed=0)]) == set(names[kept])
    # nested in N: the cells kept under N are kept under N + 1
    assert set(names[subsample_rows(names, groups, 401, seed=0)]) >= set(names[kept])
    other = set(names[subsample_rows(names, groups, 400, seed=1)])
    assert len(other & set(names[kept])) < 0.8 * len(kept)
    # the kept control cells fall into the three cell splits as all control cells do
    from pairedscreen.train.splits import seeded_uniform

    ctrl = np.flatnonzero(groups == "NTC_0")
    u_all = seeded_uniform(names[ctrl], 0)
    u_kept = seeded_uniform(names[np.intersect1d(kept, ctrl)], 0)
    for lo, hi in ((0, 0.2), (0.2, 0.4), (0.4, 1.0)):
        a = np.mean((u_all >= lo) & (u_all < hi))
        b = np.mean((u_kept >= lo) & (u_kept < hi))
        assert abs(a - b) < 0.08, (lo, a, b)


def test_eval_cells_file_holds_the_export_rows_of_the_subsample(tmp_path):
    """eval_cells.h5ad = the export's rows (by cell id, X counts and obs) of the kept cells, in export
    order, with the summary evals.json records."""
    import anndata as ad
    import scipy.sparse as sp

    from pairedscreen.train.eval_cells import read_summary, subsample_rows, write_eval_cells

    rng = np.random.default_rng(9)
    n, g = 700, 30
    pid = np.sort(rng.choice(["A", "B", "C", "NTC"], n, p=[0.5, 0.1, 0.1, 0.3]))
    x = sp.csr_matrix(rng.poisson(1.0, (n, g)).astype(np.int32))
    obs = pd.DataFrame({"perturbation_id": pid, "perturbation": pid},
                       index=[f"L{i % 3}_{i}" for i in range(n)])
    var = pd.DataFrame(index=[f"G{i}" for i in range(g)])
    ad.AnnData(X=x, obs=obs, var=var).write_h5ad(tmp_path / "e.h5ad")
    summary = write_eval_cells(tmp_path / "e.h5ad", 60, 3, tmp_path / "sub.h5ad")
    sub = ad.read_h5ad(tmp_path / "sub.h5ad")
    keep = subsample_rows(obs.index, pid, 60, 3)
    assert list(sub.obs_names) == list(obs.index[keep])
    assert (sub.X != x[keep]).nnz == 0 and sub.X.dtype == np.int32
    counts = pd.Series(pid).value_counts()
    assert summary == read_summary(tmp_path / "sub.h5ad")
    assert summary["n_cells"] == int(np.minimum(counts, 60).sum()) and summary["n_cells_exported"] == n
    assert summary["n_perturbations_capped"] == int((counts > 60).sum()) and summary["seed"] == 3
