"""Training export and held-out evals, below the workflow: splits invariants, crop geometry against the
image, and the cross-modal eval against the simulator's planted truth on a bigger profile table."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

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


def test_fitted_crop_size_is_twice_the_95th_percentile_extent():
    n = 100
    ext = np.arange(1, n + 1, dtype=float)
    cells = pd.DataFrame({crops.BBOX[0]: 0.0, crops.BBOX[1]: 0.0, crops.BBOX[2]: ext, crops.BBOX[3]: ext / 2})
    expected = 2 * np.quantile(ext, 0.95)
    s = crops.fit_crop_size(cells)
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
                         labels=perts["perturbation_id"].to_numpy(), classes=cls)
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
