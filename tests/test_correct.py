"""The profiles' correction chain (``profiles.correct``, :mod:`pairedscreen.paint.correct`) against the
reference tools and a planted batch effect:

- cell-count regression = numpy's least-squares residual on the wells before the chain;
- sphering = pycytominer's ``Spherize`` fitted on the control wells, applied to every well;
- harmony = ``harmonypy.run_harmony`` called directly on the same PCs, same seed;
- a simulated screen whose perturbed wells of batch B2 share an offset the plate controls do not carry (so
  normalisation to the controls leaves it): quality's batch predictability of the wells by batch falls
  after harmony, replicate mAP does not collapse; without the planted offset there is nothing to remove;
- memory: the chain reads one plate at a time (plus bounded samples) and the peak of its plate-bound
  steps does not grow with the plates.
"""

from __future__ import annotations

import tracemalloc
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from pairedscreen import columns as C
from pairedscreen.config import resolve_section
from pairedscreen.paint import correct as K
from pairedscreen.paint.screen_profiles import ScreenProfiles, write_profiles
from pairedscreen.quality.correction import correction_metrics

WELLS = [f"{chr(65 + r)}{c + 1:02d}" for r in range(16) for c in range(24)]
N_PERT, N_FEAT = 16, 24


def _screen(n_plates: int = 4, *, seed: int = 0, batch_shift: float = 3.0, reps: int = 3,
            n_ctrl: int = 24) -> list[pd.DataFrame]:
    """Per-plate well tables: plates alternate batches B1/B2; perturbation G{i} shifts wells along its own
    direction (|shift| 4 SD); the perturbed wells of batch B2 share an offset of norm ``batch_shift``;
    every well's features depend on its cell count (a planted cell-count effect)."""
    rng = np.random.default_rng(seed)
    feats = [f"Cells_Intensity_F{i:02d}" for i in range(N_FEAT)]
    dirs = rng.normal(size=(N_PERT, N_FEAT))
    dirs = dirs / np.linalg.norm(dirs, axis=1, keepdims=True) * 4.0
    bdir = rng.normal(size=N_FEAT)
    bdir = bdir / np.linalg.norm(bdir) * batch_shift
    cc = rng.normal(size=N_FEAT) * 0.01
    tables = []
    for p in range(n_plates):
        b = f"B{p % 2 + 1}"
        layout = [f"NTC_{i % 2 + 1}" for i in range(n_ctrl)] + [f"G{g:02d}" for g in range(N_PERT)
                                                                for _ in range(reps)]
        wells = rng.choice(WELLS, len(layout), replace=False)
        n = rng.integers(50, 400, len(layout))
        x = rng.normal(0, 1, (len(layout), N_FEAT)) + 5 + n[:, None] * cc
        ctrl = np.array([pid.startswith("NTC") for pid in layout])
        for i, pid in enumerate(layout):
            if not ctrl[i]:
                x[i] += dirs[int(pid[1:])] + (bdir if b == "B2" else 0)
        df = pd.DataFrame(x.astype(np.float32), columns=feats)
        df.insert(0, C.PLATE, f"P{p + 1}")
        df.insert(1, C.WELL, wells)
        df.insert(2, C.PERT, layout)
        df.insert(3, C.IS_CONTROL, ctrl)
        df.insert(4, C.BATCH, b)
        df.insert(5, C.N_CELLS, n.astype(np.int64))
        tables.append(df)
    return tables


def _registry() -> pd.DataFrame:
    ids = [f"G{g:02d}" for g in range(N_PERT)] + ["NTC_1", "NTC_2"]
    return pd.DataFrame({"perturbation_id": ids, "is_control": [i.startswith("NTC") for i in ids]})


def _run(tmp: Path, tables: list[pd.DataFrame], steps: list[str], **opts) -> tuple[dict, Path]:
    params = resolve_section("profiles", {"correct": steps, **opts})
    out = tmp / "profiles.parquet"
    info = write_profiles(tables, out, tmp / "consensus.parquet", registry=None, normalize="mad_robustize",
                          feature_select=["drop_na_columns"], outlier_cutoff=500, position_correction=False,
                          blocklist=None, correct=steps, correct_params=params)
    return info, out


def _features(df: pd.DataFrame) -> np.ndarray:
    return df[C.feature_columns(df)].to_numpy(np.float64)


def test_cell_count_regression_is_the_least_squares_residual(tmp_path):
    info, out = _run(tmp_path, _screen(3), ["cell_count_regression"])
    before = pd.read_parquet(K.step_path(out, 0, "input"))
    after = pd.read_parquet(out)
    x = _features(before)
    design = np.column_stack([np.ones(len(before)), before[C.N_CELLS].to_numpy(np.float64)])
    coef, *_ = np.linalg.lstsq(design, x, rcond=None)
    expected = x - design @ coef
    np.testing.assert_allclose(_features(after), expected, atol=2e-5, rtol=0)
    assert not np.allclose(expected, x, atol=0.1)          # the planted cell-count effect was there
    rec = info["correction"][0]
    assert rec["step"] == "cell_count_regression" and rec["n_wells"] == len(before)
    assert K.read_records(out) == info["correction"]


def test_cell_count_fit_accumulated_in_parts_equals_one_fit():
    rng = np.random.default_rng(1)
    c, x = rng.integers(10, 500, 200).astype(float), rng.normal(size=(200, 7))
    x += c[:, None] * rng.normal(size=7)
    fit = K.CellCountFit(7)
    for part in np.array_split(np.arange(200), 5):
        fit.add(c[part], x[part])
    a, b, r2 = fit.result()
    design = np.column_stack([np.ones(200), c])
    coef, *_ = np.linalg.lstsq(design, x, rcond=None)
    np.testing.assert_allclose(np.vstack([a, b]), coef, rtol=1e-9, atol=1e-12)
    resid = x - design @ coef
    np.testing.assert_allclose(r2, 1 - (resid ** 2).sum(0) / ((x - x.mean(0)) ** 2).sum(0), rtol=1e-9)


def test_sphering_is_pycytominer_spherize_fitted_on_controls(tmp_path):
    from pycytominer.operations import Spherize

    info, out = _run(tmp_path, _screen(3), ["sphering"], sphering={"regularisations": [0.01]})
    before = pd.read_parquet(K.step_path(out, 0, "input"))
    after = pd.read_parquet(out)
    x = before[C.feature_columns(before)]
    ref = Spherize(epsilon=0.01, method="ZCA-cor").fit(x[before[C.IS_CONTROL].to_numpy(bool)]).transform(x)
    np.testing.assert_allclose(_features(after), ref.to_numpy(np.float64), atol=2e-4, rtol=1e-4)
    # whitened controls: identity correlation
    ctrl = _features(after)[after[C.IS_CONTROL].to_numpy(bool)]
    np.testing.assert_allclose(np.corrcoef(ctrl, rowvar=False), np.eye(ctrl.shape[1]), atol=0.05)
    assert info["correction"][0]["epsilon"] == 0.01


def test_sphering_chooses_the_candidate_with_the_best_map(tmp_path):
    info, _ = _run(tmp_path, _screen(2), ["sphering"], sphering={"regularisations": [1e-4, 1.0, 1e3]})
    rec = info["correction"][0]
    scores = [c["mean_map"] for c in rec["candidates"]]
    assert [c["epsilon"] for c in rec["candidates"]] == [1e-4, 1.0, 1e3]
    assert len(set(np.round(scores, 6))) > 1                # the candidates differ
    assert rec["epsilon"] == rec["candidates"][int(np.argmax(scores))]["epsilon"]


def test_harmony_is_harmonypy_on_the_same_pcs(tmp_path):
    import harmonypy
    from sklearn.decomposition import PCA

    info, out = _run(tmp_path, _screen(4), ["harmony"], harmony={"n_pcs": 10, "max_iter": 5})
    before = pd.read_parquet(K.step_path(out, 0, "input"))
    after = pd.read_parquet(out)
    x = _features(before)
    pcs = PCA(n_components=10, svd_solver="full", random_state=0).fit(x).transform(x)
    ho = harmonypy.run_harmony(pcs, before[[C.BATCH]].astype(str), C.BATCH, max_iter_harmony=5,
                               nclust=K.harmony_clusters(300, len(x)), random_state=0, verbose=False)
    assert list(after.columns[-10:]) == [f"Harmony_PC{i:03d}" for i in range(1, 11)]
    np.testing.assert_allclose(_features(after), ho.Z_corr.T, atol=2e-4, rtol=1e-4)
    assert not np.allclose(ho.Z_corr.T, pcs, atol=0.05)     # harmony moved the wells
    rec = info["correction"][0]
    assert rec["corrected"] and rec["n_batches"] == 2 and rec["iterations"] == len(ho.objective_harmony) - 1


def _batch_and_map(tmp: Path, batch_shift: float) -> list[dict]:
    _, out = _run(tmp, _screen(4, batch_shift=batch_shift),
                  ["cell_count_regression", "sphering", "harmony", "pca"],
                  harmony={"n_pcs": 20})
    m = correction_metrics(out, _registry(), nperm=100, seed=0, alpha=0.05, pca=0.9, max_replicates=16)
    return m["steps"]


def test_planted_batch_effect_falls_after_harmony_and_map_holds(tmp_path):
    steps = {s["step"]: s for s in _batch_and_map(tmp_path, batch_shift=3.0)}
    assert list(steps) == ["input", "cell_count_regression", "sphering", "harmony", "pca"]
    before, after = steps["sphering"]["batch"]["batch_wells"], steps["harmony"]["batch"]["batch_wells"]
    assert before["accuracy"] > 0.75 and before["p_value"] < 0.05          # the planted effect is seen
    assert after["accuracy"] < before["accuracy"] - 0.2
    assert after["accuracy"] < after["chance"] + 0.15
    m_in, m_h = steps["input"]["replicate"]["mean_map"], steps["harmony"]["replicate"]["mean_map"]
    assert m_h > 0.5 * m_in and steps["harmony"]["replicate"]["fraction_active"] >= 0.75


def test_without_a_planted_batch_effect_the_wells_are_not_predictable(tmp_path):
    steps = {s["step"]: s for s in _batch_and_map(tmp_path, batch_shift=0.0)}
    assert steps["input"]["batch"]["batch_wells"]["accuracy"] < 0.65


class _Counting(ScreenProfiles):
    """Records the wells of every plate read and the largest array of wells the chain asks for."""

    reads: list[int]

    def plate_x(self, k: int) -> np.ndarray:
        x = super().plate_x(k)
        self.reads.append(len(x))
        return x


PLATE_BOUND = ["cell_count_regression", "sphering", "pca"]


def _peak(tmp: Path, n_plates: int) -> tuple[int, int, int]:
    tables = _screen(n_plates, reps=4)
    params = resolve_section("profiles", {"correct": PLATE_BOUND, "correct_max_fit_wells": 60,
                                          "sphering": {"regularisations": [0.1], "max_replicates": 2},
                                          "harmony": {"n_pcs": 5, "max_iter": 2}})
    sp = _Counting(tables, tmp, registry=None, normalize=params["normalize"], position_correction=False)
    sp.reads = []
    sp.select(["drop_na_columns"], outlier_cutoff=500, blocklist=None)
    del tables
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    sp.correct(PLATE_BOUND, params)
    peak = tracemalloc.get_traced_memory()[1] - base
    tracemalloc.stop()
    return peak, max(sp.reads), max(sp.rows)


def test_chain_memory_is_bounded_by_a_plate(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    small, read_small, plate_small = _peak(tmp_path / "a", 4)
    large, read_large, plate_large = _peak(tmp_path / "b", 16)
    assert read_small == plate_small and read_large == plate_large   # one plate's wells per read
    # 4x the wells, peak within 1.5x (what grows: the per-well metadata). Harmony is left out: by design it
    # holds every well's PCs and harmonypy's clusters x wells arrays (wells x (n_pcs + ~nclust) values,
    # never the features)
    assert large < 1.5 * small, (small, large)


def test_empty_chain_writes_no_step_tables_and_removes_stale_ones(tmp_path):
    _run(tmp_path, _screen(2), ["pca"])
    assert (tmp_path / K.STEPS_DIR / "0_input.parquet").exists()
    info, out = _run(tmp_path, _screen(2), [])
    # the folder is the rule's declared output: written empty, the earlier run's tables gone
    assert "correction" not in info and not any((tmp_path / K.STEPS_DIR).iterdir())
    assert K.read_records(out) == [] and K.step_tables(out) == []
    assert K.RECORD_KEY not in (pq.read_schema(out).metadata or {})


def test_unknown_step_and_missing_batch_key_are_refused(tmp_path):
    from pairedscreen.errors import PairedscreenError

    with pytest.raises(PairedscreenError, match="combat"):       # the config schema refuses it
        resolve_section("profiles", {"correct": ["combat"]})
    params = resolve_section("profiles", {})
    with pytest.raises(ValueError, match="unknown profiles.correct step"):      # and the library
        write_profiles(_screen(2), tmp_path / "p.parquet", tmp_path / "c.parquet", registry=None,
                       normalize="mad_robustize", feature_select=[], outlier_cutoff=500,
                       position_correction=False, blocklist=None, correct=["combat"], correct_params=params)
    with pytest.raises(ValueError, match="batch_key"):
        _run(tmp_path, _screen(2), ["harmony"], harmony={"batch_key": "Metadata_Run"})


def test_records_and_step_metrics_reach_the_datasheet_and_the_report(tmp_path):
    from pairedscreen.io import jsonable
    from pairedscreen.pair.datasheet import build_datasheet, validate_datasheet
    from pairedscreen.report.sections.quality import correction_table

    _, out = _run(tmp_path, _screen(2), ["sphering", "pca"], sphering={"regularisations": [0.1, 1.0]})
    m = correction_metrics(out, _registry(), nperm=20, seed=0, alpha=0.05, pca=None, max_replicates=8)
    sheet = build_datasheet(config={}, metrics={"correction": m},
                            software={"python": "3", "pairedscreen": "0"})
    sheet["profiles_correction"] = jsonable(K.read_records(out))
    validate_datasheet(sheet)
    bad = dict(sheet, profiles_correction=[{"step": "combat", "n_features_out": 3}])
    with pytest.raises(Exception, match="combat"):
        validate_datasheet(bad)
    tab = correction_table(sheet["metrics"])
    assert tab["step"].tolist() == ["input", "sphering", "pca"]
    assert "ZCA-cor epsilon" in tab.loc[1, "detail"] and tab["plate_controls accuracy"].notna().all()
