"""Ceilings, normalised scores, learning curves and the leakage audit of the held-out evals, against the
simulator's planted truth: per-perturbation effects from the simulator's gene model and morphology
effects, observed through K random parts of cells (each part = the planted effect + its own noise), so a
split half is a real replicate of the planted effect."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from config_values import SCHEMA

from pairedscreen.train import ceiling, evals, learning
from pairedscreen.train.parts import Parts

EVAL_PARAMS = {"n_pcs": 10, "ridge_alpha": 1.0, "n_bootstrap": 500, "n_hvg": 500}
K = 4


def simulated_parts(seed: int, classes: dict[str, int], *, rna_sd: float = 0.15, paint_sd: float = 0.3,
                    cells: np.ndarray | None = None):
    """(registry, rna, paint, rna_parts, paint_parts, truth): ``truth`` = planted per-perturbation effect
    tables (rna log effects, paint mixed morphology). Each of the K parts carries noise of ``sd * sqrt(K)``
    (one part = 1/K of the cells), so the full mean has ``sd``; ``cells`` (per perturbation, relative)
    scales the noise variance by 1/cells (more cells, less noise)."""
    from pairedscreen.simulate.paint import perturbation_effects
    from pairedscreen.simulate.registry import make_registry
    from pairedscreen.simulate.rna import make_gene_model
    from pairedscreen.simulate.spec import ScreenSpec

    spec = ScreenSpec(seed=seed, n_genes=600, classes=classes)
    reg = make_registry(spec)
    model = make_gene_model(reg, spec)
    rng = np.random.default_rng(seed)
    perts = reg.perturbations
    ctrl = perts["is_control"].to_numpy(bool)
    rel = np.ones(len(perts)) if cells is None else np.asarray(cells, float)
    scale = np.where(ctrl, 1 / 4, 1.0)[:, None, None] / np.sqrt(rel)[:, None, None]
    rna_true = model.log2_effects * np.log(2) * 0.5 + 2.0   # + a baseline expression level
    eff = perturbation_effects(reg, spec)
    eff = eff[[c for c in eff.columns if c.startswith("paint_") and c not in ("paint_active",
                                                                               "paint_effect")]]
    paint_true = eff.to_numpy() @ rng.normal(0.0, 1.0, (eff.shape[1], 60))
    rna_p = rna_true[:, None, :] + rng.normal(0, 1, (len(perts), K, rna_true.shape[1])) * rna_sd * \
        np.sqrt(K) * scale
    paint_p = paint_true[:, None, :] + rng.normal(0, 1, (len(perts), K, 60)) * paint_sd * np.sqrt(K) * scale
    ones = np.ones((len(perts), K, 1))
    rp, pp = Parts(rna_p, ones), Parts(paint_p, ones)
    return perts, rp.mean(range(K)), pp.mean(range(K)), rp, pp, (rna_true, paint_true)


def half_split(perts: pd.DataFrame, seed: int = 0) -> np.ndarray:
    """Half of each class held out (a shared-program pair split between train and test)."""
    cls = perts["effect_class"].to_numpy()
    split = np.full(len(perts), "train", dtype=object)
    for c in ("both", "rna", "paint", "neither"):
        split[np.flatnonzero(cls == c)[::2]] = "test"
    return split


def _genes(rna, split, ctrl):
    return evals.prepare(rna, np.zeros((len(rna), 1)), split, ctrl, EVAL_PARAMS["n_hvg"]).genes


def test_spearman_brown_is_cell_evals_rule():
    assert ceiling.spearman_brown(0.5) == pytest.approx(2 / 3)
    assert ceiling.spearman_brown(1.0) == pytest.approx(1.0)
    assert np.isnan(ceiling.spearman_brown(0.0)) and np.isnan(ceiling.spearman_brown(-0.2))


def test_ceiling_of_noise_free_halves_is_one_and_of_independent_noise_is_undefined():
    rng = np.random.default_rng(0)
    sig = rng.normal(size=(30, 50))
    r, d = evals.half_scores(sig, sig.copy())
    assert np.allclose(r, 1.0) and np.allclose(d, 1.0)
    r, _ = evals.half_scores(rng.normal(size=(300, 50)), rng.normal(size=(300, 50)))
    assert abs(np.nanmean(r)) < 0.02
    blk = ceiling.ceiling_block(np.zeros(300), np.zeros(300), r, rng.integers(0, 300, (200, 300)))
    assert blk["ceiling"] is None or blk["ceiling"] < 0.05


def test_baseline_model_ceiling_ordered_where_biology_is_shared_and_model_at_baseline_elsewhere():
    """Planted truth: RNA -> paint transfers for ``both`` perturbations only. There the ridge lies between
    the mean-of-train baseline and the split-half ceiling and its normalised score is in [0, 1]; for
    ``rna``-only perturbations (no morphology) the ridge does not beat the baseline. The ceiling itself
    matches the planted signal: the expected split-half replicate correlation of the planted morphology
    (Spearman-Brown to full depth) computed from the planted effects and the known noise."""
    perts, rna, paint, rp, pp, (_, paint_true) = simulated_parts(
        0, {"both": 40, "rna": 16, "paint": 16, "neither": 8})
    ctrl = perts["is_control"].to_numpy(bool)
    split = half_split(perts)
    cls = perts["effect_class"].to_numpy()
    genes = _genes(rna, split, ctrl)
    res = evals.evaluate(rna, paint, split, ctrl, EVAL_PARAMS, labels=perts["perturbation_id"].to_numpy(),
                         classes=cls, rna_parts=rp.columns(genes), paint_parts=pp, seed=SCHEMA["train.seed"])
    both = res["rna_to_paint"]["by_class"]["both"]["correlation"]
    assert both["baseline"] < both["model"] < both["ceiling"], both
    assert both["baseline_ci"][1] < both["ceiling_ci"][0]
    assert 0.0 <= both["normalised_ci"][0] <= both["normalised"] <= both["normalised_ci"][1] <= 1.0, both
    rna_only = res["rna_to_paint"]["by_class"]["rna"]
    assert not rna_only["beats_baseline"]
    assert abs(rna_only["correlation"]["model"] - rna_only["correlation"]["baseline"]) < 0.15
    # the ceiling against the planted truth: half-depth noise sd = 0.3 * sqrt(2) per feature
    te = np.flatnonzero((split == "test") & (cls == "both"))
    s = paint_true[te] - paint_true[te].mean(axis=1, keepdims=True)
    rel = (s.var(axis=1) / (s.var(axis=1) + 2 * 0.3 ** 2)).mean()
    assert both["ceiling_half_depth"] == pytest.approx(rel, abs=0.06)
    # the arm on its own: baseline below ceiling, same ceiling as the cross-modal target's
    arm = res["per_arm"]["paint"]["by_class"]["both"]["correlation"]
    assert arm["ceiling"] == pytest.approx(both["ceiling"])
    back = res["paint_to_rna"]["by_class"]["both"]["discrimination"]
    assert back["baseline"] < back["model"] < back["ceiling"] and 0 <= back["normalised"] <= 1, back


def test_ceilings_follow_the_noise():
    """More noise in the parts, lower ceiling (planted truth fixed)."""
    out = []
    for sd in (0.3, 1.2):
        perts, rna, paint, rp, pp, _ = simulated_parts(1, {"both": 40, "rna": 8, "paint": 8, "neither": 8},
                                                       paint_sd=sd)
        ctrl = perts["is_control"].to_numpy(bool)
        split = half_split(perts)
        res = evals.evaluate(rna, paint, split, ctrl, EVAL_PARAMS,
                             labels=perts["perturbation_id"].to_numpy(),
                             rna_parts=rp.columns(_genes(rna, split, ctrl)), paint_parts=pp,
                             seed=SCHEMA["train.seed"])
        out.append(res["per_arm"]["paint"]["overall"]["correlation"]["ceiling_half_depth"])
    assert out[0] > out[1] + 0.2, out


LEARN_PARAMS = {**EVAL_PARAMS, "n_bootstrap": 100, "learning_fractions": [0.25, 0.5, 0.75, 1.0],
                "learning_repeats": 5}


def _learning(seed: int, classes: dict[str, int]) -> dict:
    perts, rna, paint, rp, pp, _ = simulated_parts(seed, classes)
    ctrl = perts["is_control"].to_numpy(bool)
    split = half_split(perts)
    res = evals.evaluate(rna, paint, split, ctrl, LEARN_PARAMS, labels=perts["perturbation_id"].to_numpy(),
                         rna_parts=rp.columns(_genes(rna, split, ctrl)), paint_parts=pp, learning=True,
                         seed=SCHEMA["train.seed"])
    return res["learning_curve"]


def test_learning_curve_rises_with_perturbations_and_cells_on_planted_shared_biology_every_seed():
    """Seed sweep (5 screens): with shared programs, RNA -> paint improves with more train perturbations
    and with more cells per perturbation, every seed; the fitted next doubling gains. Without shared
    biology (rna-only, paint-only, neither) the curve stays flat (the control for the test itself)."""
    for seed in range(5):
        lc = _learning(seed, {"both": 60, "rna": 8, "paint": 8, "neither": 8})["rna_to_paint"]
        for axis in ("perturbations", "cells"):
            pts = lc[axis]["points"]
            assert [p["fraction"] for p in pts] == [0.25, 0.5, 0.75, 1.0]
            assert pts[-1]["correlation"] > pts[0]["correlation"] + 0.03, (seed, axis, pts)
            trend = lc[axis]["trend"]["correlation"]
            assert trend["next_doubling_gain"] > 0.02, (seed, axis, trend)
            assert trend["predicted_at_double"] > pts[-1]["correlation"] - 0.02
        assert lc["perturbations"]["points"][0]["n_perturbations"] * 4 == pytest.approx(
            lc["perturbations"]["points"][-1]["n_perturbations"], abs=2)
    flat = [_learning(seed, {"rna": 30, "paint": 30, "neither": 20})["rna_to_paint"]["perturbations"]
            ["trend"]["correlation"]["slope"] for seed in range(5)]
    assert abs(float(np.mean(flat))) < 0.01, flat


def test_trend_is_linear_in_log2_amount():
    t = learning.fit_trend([10, 20, 40, 80], [0.1, 0.2, 0.3, 0.4])
    assert t["slope"] == pytest.approx(0.1) and t["next_doubling_gain"] == pytest.approx(0.1)
    assert t["predicted_at_double"] == pytest.approx(0.5)


AUDIT = {"n_folds": 5, "n_permutations": 200, "threshold": 0.1}
N_BASE = 100   # cells behind a perturbation's profile at relative depth 1


def _audit(seed: int, leaky: bool) -> tuple[dict, np.ndarray]:
    """A screen whose cell counts depend on the planted effect size (``leaky``: stronger perturbations
    keep fewer cells, as a toxic knockout does) or not (clean: counts vary by chance, +-10 %); the other
    released fields are drawn independently. Returns the audit and the planted effect sizes."""
    from pairedscreen.train import leakage

    classes = {"both": 40, "rna": 16, "paint": 16, "neither": 8}
    perts, *_ , (rna_true, paint_true) = simulated_parts(seed, classes)
    ctrl = perts["is_control"].to_numpy(bool)
    planted = np.column_stack([np.sqrt(((rna_true - rna_true[ctrl].mean(axis=0)) ** 2).mean(axis=1)),
                               np.sqrt((paint_true ** 2).mean(axis=1))])
    rng = np.random.default_rng([seed, 7])
    if leaky:   # fewer cells the stronger either arm's planted effect
        zs = ((planted - planted[~ctrl].mean(axis=0)) / planted[~ctrl].std(axis=0)).sum(axis=1)
        rel = np.exp(-0.4 * zs + rng.normal(0, 0.1, len(perts)))
    else:
        rel = np.exp(rng.normal(0, 0.1, len(perts)))
    rel[ctrl] = 16.0
    perts, rna, paint, rp, pp, _ = simulated_parts(seed, classes, cells=rel)
    n_cells = N_BASE * rel
    off = rna[ctrl].mean(axis=0)
    ra, rb = (h - off for h in rp.halves())
    pa, pb = pp.halves()
    trt = ~ctrl
    targets = pd.DataFrame({
        "rna_effect": leakage.effect_size(ra, rb)[trt], "paint_effect": leakage.effect_size(pa, pb)[trt],
        "rna_de_genes": _de_genes(rna, off, (0.15 ** 2) * N_BASE, n_cells, N_BASE * 16 * ctrl.sum())[trt]})
    meta = pd.DataFrame({"rna_log_cells": np.log(n_cells),
                         "rna_log_umis_per_cell": rng.normal(8, 0.2, len(perts)),
                         "guides": rng.integers(2, 5, len(perts)),
                         "paint_wells": rng.integers(2, 4, len(perts)),
                         "paint_mean_row": rng.uniform(0, 15, len(perts)),
                         "paint_edge_fraction": rng.uniform(0, 1, len(perts))})[trt]
    return leakage.audit(meta, targets, **AUDIT, seed=seed), planted[trt]


def _de_genes(mean: np.ndarray, ctrl_mean: np.ndarray, cell_var: float, n_cells: np.ndarray,
              n_ctrl: float) -> np.ndarray:
    """The simulated screen's DE-gene counts: genes whose mean differs from the controls' by |z| > 3 (a
    two-sample z test with the simulator's known per-cell variance; its power grows with the cells, as a
    real Wilcoxon's does)."""
    se = np.sqrt(cell_var * (1.0 / n_cells[:, None] + 1.0 / n_ctrl))
    return (np.abs((mean - ctrl_mean[None, :]) / se) > 3).sum(axis=1).astype(float)


def test_effect_size_from_halves_is_unbiased_by_noise():
    """Same planted effect, 1 vs 16 x the noise variance: the split-half effect size agrees (the plain norm
    of the noisy mean would grow with the noise)."""
    from pairedscreen.train import leakage

    rng = np.random.default_rng(0)
    sig = rng.normal(0, 0.5, (400, 300))
    est = [leakage.effect_size(sig + rng.normal(0, s, sig.shape), sig + rng.normal(0, s, sig.shape))
           for s in (0.2, 0.8)]
    assert np.mean(est[0]) == pytest.approx(0.5, rel=0.03) and np.mean(est[1]) == pytest.approx(0.5, rel=0.05)


def test_leakage_audit_flags_cell_counts_that_follow_the_effect_size_and_stays_quiet_when_clean():
    for seed in range(3):
        leaky, _ = _audit(seed, leaky=True)
        assert "rna_effect" in leaky["flagged"] and "paint_effect" in leaky["flagged"], leaky["targets"]
        t = leaky["targets"]["rna_effect"]
        assert t["r2"] > t["null_q95"] and t["top_field"] == "rna_log_cells" and t["p_value"] <= 0.05
        assert leaky["warning"] and "rna_log_cells" in leaky["warning"]
        clean, _ = _audit(seed, leaky=False)
        assert clean["flagged"] == [] and clean["warning"] is None, clean["targets"]
        assert all(v["r2"] < 0.1 for v in clean["targets"].values())


def _cells_file(path, lib: str, rng: np.random.Generator, perts: list[str], n: int, genes: list[str]) -> None:
    import anndata as ad
    import scipy.sparse as sp

    x = sp.csr_matrix(rng.poisson(1.5, (n, len(genes))).astype(np.float32))
    pert = rng.choice(perts + ["multiple", "unassigned"], n)
    obs = pd.DataFrame({"library": lib, "perturbation": pert, "pass_qc": rng.random(n) > 0.1,
                        "predicted_doublet": rng.random(n) < 0.05}, index=[f"{lib}_{i}" for i in range(n)])
    ad.AnnData(X=x, obs=obs, var=pd.DataFrame(index=genes)).write_h5ad(path)


def test_streamed_rna_parts_partition_the_usable_cells_of_each_library(tmp_path):
    """Invariants against the whole-matrix computation: the parts' sums add up to each perturbation's
    summed log1p CP10k over its usable cells (the pseudobulk), parts are balanced within each perturbation
    and library, the control statistics are those of the pooled usable control cells; reruns equal."""
    import anndata as ad

    from pairedscreen.expression import log1p_cp10k, usable_cells
    from pairedscreen.train.halves import rna_parts

    rng = np.random.default_rng(0)
    perts, genes = ["A", "B", "C", "NTC"], [f"g{i}" for i in range(40)]
    files = [tmp_path / f"L{i}.h5ad" for i in range(2)]
    for i, f in enumerate(files):
        _cells_file(f, f"L{i}", rng, perts, 150 + 37 * i, genes)
    eval_genes = genes[5:25]
    res = rna_parts(files, perts, ["NTC"], eval_genes, genes, n_parts=4, seed=3)
    again = rna_parts(files, perts, ["NTC"], eval_genes, genes, n_parts=4, seed=3)
    assert np.array_equal(res.parts.sums, again.parts.sums)
    whole = ad.concat([ad.read_h5ad(f) for f in files])
    ok = usable_cells(whole, categories=perts)
    x = log1p_cp10k(whole.X[ok]).toarray()
    pert = whole.obs["perturbation"].astype(str).to_numpy()[ok]
    for i, p in enumerate(perts):
        assert np.allclose(res.parts.sums[i].sum(axis=0), x[pert == p][:, 5:25].sum(axis=0))
        assert res.n_cells[i] == (pert == p).sum() == res.parts.counts[i].sum()
    for lib in ("L0", "L1"):   # balanced per (perturbation, library): re-deal one library on its own
        one = rna_parts([tmp_path / f"{lib}.h5ad"], perts, ["NTC"], eval_genes, genes, n_parts=4, seed=3)
        c = one.parts.counts[:, :, 0]
        assert (c.max(axis=1) - c.min(axis=1) <= 1).all()
    mean, var = res.ctrl_mean_var()
    assert res.n_ctrl == (pert == "NTC").sum()
    assert np.allclose(mean, x[pert == "NTC"].mean(axis=0)) and np.allclose(var, x[pert == "NTC"].var(axis=0,
                                                                                                      ddof=1))
    a, b = res.parts.halves()
    assert np.isfinite(a).all() and np.isfinite(b).all()


def test_streamed_paint_parts_are_the_normalised_sub_wells(tmp_path):
    """Each plate's cells dealt into sub-wells, normalised to its control sub-wells: the parts' sums equal
    pairedscreen.paint's own aggregation + normalisation of the same plate; well metadata per
    perturbation from the plate layout."""
    from pairedscreen.columns import IS_CONTROL, PERT, PLATE, SPLIT, WELL
    from pairedscreen.paint.profiles import aggregate_plate_file, normalize_plates
    from pairedscreen.train.halves import paint_parts

    rng = np.random.default_rng(1)
    reg = pd.DataFrame({"perturbation_id": ["A", "B", "NTC"], "is_control": [False, False, True]})
    wells = {"A01": "A", "B03": "B", "C05": "NTC", "D07": "NTC", "E09": "NTC", "F11": "A"}
    rows = []
    for w, p in wells.items():
        for _ in range(12):
            rows.append({PLATE: "P1", WELL: w, PERT: p, "Cells_AreaShape_Area": rng.normal(100, 10),
                         "Nuclei_Intensity_Mean_DNA": rng.normal(5, 1) + (p == "A")})
    path = tmp_path / "cells.parquet"
    pd.DataFrame(rows).to_parquet(path, index=False)
    feats = ["Cells_AreaShape_Area", "Nuclei_Intensity_Mean_DNA"]
    parts, meta = paint_parts([path], feats, reg, n_parts=4, seed=0, aggregate=SCHEMA["profiles.aggregate"],
                              normalize=SCHEMA["profiles.normalize"])
    sub, _ = normalize_plates(aggregate_plate_file(path, operation=SCHEMA["profiles.aggregate"], registry=reg,
                                                   features=feats, n_splits=4, seed=0),
                              method=SCHEMA["profiles.normalize"], features=feats)
    assert IS_CONTROL in sub
    for i, p in enumerate(["A", "B", "NTC"]):
        for k in range(4):
            s = sub[(sub[PERT] == p) & (sub[SPLIT] == k)]
            assert np.allclose(parts.sums[i, k], s[feats].sum().to_numpy(), atol=1e-4)
            assert (parts.counts[i, k] == len(s)).all()
    assert meta.loc["A", "paint_wells"] == 2 and meta.loc["NTC", "paint_wells"] == 3
    assert meta.loc["A", "paint_cells"] == 24 and meta.loc["A", "paint_edge_fraction"] == 0.5
    assert meta.loc["B", "paint_mean_row"] == 1 and meta.loc["B", "paint_mean_col"] == 2


def test_an_unmeasurable_ceiling_or_normalised_score_says_why():
    """No split-half replicate, or a ceiling not above the baseline: None with its reason, never a blank."""
    u, b = np.array([0.5, 0.6, 0.4]), np.array([0.3, 0.3, 0.3])
    idx = np.random.default_rng(0).integers(0, 3, size=(50, 3))
    none = ceiling.ceiling_block(u, b, np.full(3, np.nan), idx)
    assert none["ceiling"] is None and "both halves" in none["ceiling_reason"]
    assert none["normalised"] is None and none["normalised_reason"] == none["ceiling_reason"]
    low = ceiling.ceiling_block(u, b, np.array([0.1, 0.1, 0.1]), idx)   # SB(0.1) = 0.18 < baseline 0.3
    assert low["ceiling"] is not None and low["normalised"] is None
    assert "not above the mean-of-train baseline" in low["normalised_reason"]
    fine = ceiling.ceiling_block(u, b, np.array([0.8, 0.8, 0.8]), idx)
    assert fine["normalised"] is not None and "normalised_reason" not in fine
