"""Quality metrics against their definitions (independent formulas, invariances, hand-countable cases)."""

from __future__ import annotations

import numpy as np
import pandas as pd
from config_values import SCHEMA
from scipy.spatial.distance import cdist

from pairedscreen.quality import batch, concordance, effect, position, replicate, truth


def test_edistance_matches_definition_and_permutation_p():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(15, 4)), rng.normal(size=(25, 4))
    n, m = len(x), len(y)
    direct = (2 * cdist(x, y).mean() - cdist(x, x).sum() / (n * (n - 1)) - cdist(y, y).sum() / (m * (m - 1)))
    e, p = effect.edistance_test(x, y, n_permutations=99, rng=np.random.default_rng(1))
    assert np.isclose(e, direct)
    assert 0.01 <= p <= 1.0                 # same distribution: not extreme
    e2, p2 = effect.edistance_test(x + 3.0, y, n_permutations=99, rng=np.random.default_rng(1))
    assert e2 > e and p2 == 0.01            # shifted: beats every permutation -> floor 1/(1+99)


def test_edistance_table_flags_shifted_group_only():
    rng = np.random.default_rng(2)
    labels = np.repeat(["A", "B", "NTC_1", "NTC_2"], 40)
    ctrl = np.char.startswith(labels, "NTC")
    x = rng.normal(size=(len(labels), 5))
    x[labels == "A"] += 1.5
    tab = effect.edistance_table(x, labels, ctrl, n_permutations=99,
                                 seed=SCHEMA["quality.seed"],
                                 max_cells=SCHEMA["quality.max_cells"]).set_index("perturbation")
    assert tab.loc["A", "q_value"] < 0.05
    assert (tab.drop(index="A")["q_value"] > 0.05).all()
    assert tab.loc["NTC_1", "is_control"] and tab.loc["A", "n_cells"] == 40


def test_phenotypic_activity_controls_and_singletons():
    rng = np.random.default_rng(3)
    rows, xs = [], []
    for pert, n, shift in [("A", 4, 3.0), ("B", 4, 0.0), ("C", 1, 3.0), ("NTC_1", 6, 0.0), ("NTC_2", 6, 0.0)]:
        v = rng.normal(size=20)
        for _ in range(n):
            rows.append({"perturbation": pert, "is_control": pert.startswith("NTC")})
            xs.append(rng.normal(size=20) + shift * v)
    res = replicate.phenotypic_activity(np.array(xs), pd.DataFrame(rows), null_size=500,
                                        seed=SCHEMA["quality.seed"])
    res = res.set_index("perturbation")
    assert res.loc["A", "q_value"] < 0.05 and res.loc["A", "mean_average_precision"] > 0.9
    assert np.isnan(res.loc["C", "p_value"]) and res.loc["C", "n_replicates"] == 1     # nothing to retrieve
    assert res.loc["NTC_1", "is_control"] and res.loc["NTC_1", "q_value"] > 0.05


def test_mantel_and_cka_properties():
    rng = np.random.default_rng(4)
    a = rng.normal(size=(12, 6))
    q, _ = np.linalg.qr(rng.normal(size=(6, 6)))
    # CKA is invariant to rotation and isotropic scaling
    assert np.isclose(concordance.linear_cka(a, 2.5 * a @ q), 1.0)
    s = concordance.cosine_similarity(a)
    r, p = concordance.mantel(s, s, n_permutations=99, seed=SCHEMA["quality.seed"])
    assert np.isclose(r, 1.0) and p == 0.01
    b = rng.normal(size=(12, 6))
    r2, p2 = concordance.mantel(s, concordance.cosine_similarity(b), n_permutations=99,
                                seed=SCHEMA["quality.seed"])
    assert abs(r2) < 0.5 and p2 > 0.01


def test_position_adjusted_r2_and_edge_test():
    rng = np.random.default_rng(5)
    wells = [f"{chr(65 + r)}{c + 1:02d}" for r in range(16) for c in range(24)]
    x = rng.normal(size=(len(wells), 4))
    prof = pd.DataFrame(x, columns=["Cells_Intensity_a", "Cells_Intensity_b", "Nuclei_AreaShape_c",
                                    "Nuclei_AreaShape_d"])
    prof["Metadata_Plate"], prof["Metadata_Well"], prof["Metadata_IsControl"] = "P1", wells, True
    null = position.position_effects(prof, n_permutations=199, seed=SCHEMA["quality.seed"])
    assert (null["edge_p_value"] > 0.01).all() and (null["r2_edge"].abs() < 0.05).all()
    edge = np.array([w[0] in "AP" or w[1:] in ("01", "24") for w in wells])
    prof.loc[edge, "Cells_Intensity_a"] += 2.0
    eff = position.position_effects(prof, n_permutations=199,
                                    seed=SCHEMA["quality.seed"]).set_index("feature_group")
    assert eff.loc["Cells_Intensity", "edge_p_value"] == 1 / 200
    assert eff.loc["Nuclei_AreaShape", "edge_p_value"] > 0.01
    # adjusted R^2 of one feature against the edge split equals the textbook formula
    y = prof["Cells_Intensity_a"].to_numpy()
    ss_tot = ((y - y.mean()) ** 2).sum()
    ss_res = ((y[edge] - y[edge].mean()) ** 2).sum() + ((y[~edge] - y[~edge].mean()) ** 2).sum()
    n = len(y)
    expected = 1 - (ss_res / ss_tot) * (n - 1) / (n - 2)
    got = position._adj_r2(y[:, None], edge)[0]
    assert np.isclose(got, expected)
    assert position.summarize(eff.reset_index(), alpha=SCHEMA["quality.alpha"])["edge_detected"]


def test_batch_predictability_null_and_degenerate():
    rng = np.random.default_rng(6)
    x = rng.normal(size=(60, 8))
    labels = np.repeat(["p1", "p2", "p3"], 20)
    null = batch.batch_predictability(x, labels, n_permutations=99, seed=SCHEMA["quality.seed"])
    assert null["p_value"] > 0.05 and abs(null["chance"] - 1 / 3) < 0.1
    x[labels == "p2"] += 1.0
    planted = batch.batch_predictability(x, labels, n_permutations=99, seed=SCHEMA["quality.seed"])
    assert planted["p_value"] == 0.01 and planted["accuracy"] > null["accuracy"]
    one = batch.batch_predictability(x, np.repeat("p1", 60), n_permutations=9, seed=SCHEMA["quality.seed"])
    assert one["accuracy"] is None and one["n_classes"] == 1


def test_hit_and_edge_recovery_counts():
    t = pd.DataFrame({"perturbation_id": ["a", "b", "c", "d", "NTC"],
                      "effect_class": ["both", "rna", "paint", "neither", "control"],
                      "rna_active": [True, True, False, False, False]})
    calls = pd.DataFrame({"perturbation": ["a", "b", "c", "d", "NTC"],
                          "q_value": [0.01, 0.2, 0.03, np.nan, 0.04]})
    rec = truth.hit_recovery(calls, t, "rna_active", alpha=SCHEMA["quality.alpha"])
    # called: a (TP), c (FP), NTC (FP, a control); missed: b
    assert (rec["true_positives"], rec["false_positives"], rec["false_negatives"]) == (1, 2, 1)
    assert rec["precision"] == 1 / 3 and rec["recall"] == 1 / 2 and rec["controls_called"] == 1
    wells = pd.DataFrame({"plate": "P1", "well": ["A01", "B02", "P24", "H12"],
                          "is_edge": [True, False, True, False],
                          "perturbation_id": "x", "edge_multiplier": [1.3, 1.0, 1.3, 1.0]})
    e = truth.edge_recovery(wells, detected=True)
    assert e == {"planted": True, "detected": True, "correct": True, "edge_definition_agreement": 1.0}
    flat = wells.assign(edge_multiplier=1.0)
    assert not truth.edge_recovery(flat, detected=True)["correct"]
