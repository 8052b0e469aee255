"""Profiles: aggregation, normalisation, feature selection, consensus; the real JUMP CellProfiler tables."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pycytominer
import pytest
from config_values import SCHEMA

from pairedscreen import columns as C
from pairedscreen.paint import aggregate as A
from pairedscreen.paint import profiles as P
from pairedscreen.paint.cellprofiler import read_cellprofiler_csvs
from pairedscreen.plate import edge_mask, infer_plate_shape, parse_well

JUMP = "cellprofiler_features_jump_cpg0043_BR00116991_A01"


def _cells(rng: np.random.Generator, n: int = 3000, n_feat: int = 12, plates=("P1", "P2")) -> pd.DataFrame:
    wells = ["A01", "A02", "B05", "C07", "D11", "H12"]
    pert = {"A01": "NTC_1", "A02": "NTC_2", "B05": "G1", "C07": "G2", "D11": "G3", "H12": "NTC_1"}
    x = rng.normal(size=(n, n_feat)).astype(np.float32)
    df = pd.DataFrame(x, columns=[f"Cells_Intensity_F{i}_DNA" for i in range(n_feat)])
    df["plate"] = rng.choice(plates, n)
    df["well"] = rng.choice(wells, n)
    df["site"] = rng.integers(1, 4, n)
    df["object_id"] = np.arange(n)
    df["perturbation_id"] = df["well"].map(pert)
    df["batch"] = df["plate"].map({p: f"b{i}" for i, p in enumerate(plates)})
    df.loc[rng.choice(n, 40, replace=False), "Cells_Intensity_F3_DNA"] = np.nan
    return df


REGISTRY = pd.DataFrame({"perturbation_id": ["G1", "G2", "G3", "NTC_1", "NTC_2"],
                         "is_control": [False, False, False, True, True]})


def test_plate_geometry():
    assert parse_well("A01") == (0, 0) and parse_well("P24") == (15, 23) and parse_well("B3") == (1, 2)
    assert infer_plate_shape(["A01", "H12"]) == (8, 12)
    assert infer_plate_shape(["A01", "I01"]) == (16, 24)
    m = edge_mask(["A05", "B02", "P10", "C24", "C23"], (16, 24))
    assert m.tolist() == [True, False, True, True, False]
    # default: the 384-well contract, even for a sparse map that fits a 96-well plate
    assert edge_mask(["A05", "H12", "B02"]).tolist() == [True, False, False]
    assert edge_mask(["H12"], (8, 12)).tolist() == [True]


def test_aggregate_matches_pycytominer_and_counts():
    rng = np.random.default_rng(0)
    cells = P.harmonize_metadata(_cells(rng), REGISTRY)
    feats = C.feature_columns(cells)
    ours = A.aggregate_wells(cells, chunk_bytes=len(cells) * 4 * 5,
                             operation=SCHEMA["profiles.aggregate"])   # forces 3 feature chunks
    ref = pycytominer.aggregate(cells, strata=[C.PLATE, C.WELL], features=feats, output_file=None)
    ours = ours.sort_values([C.PLATE, C.WELL]).reset_index(drop=True)
    ref = ref.sort_values([C.PLATE, C.WELL]).reset_index(drop=True)
    assert (ours[[C.PLATE, C.WELL]].to_numpy() == ref[[C.PLATE, C.WELL]].to_numpy()).all()
    np.testing.assert_allclose(ours[feats].to_numpy(), ref[feats].to_numpy(), rtol=1e-5, atol=1e-6)
    sizes = cells.groupby([C.PLATE, C.WELL]).size().to_numpy()
    assert ours[C.N_CELLS].tolist() == sizes.tolist()
    # constant per-well metadata is carried, per-cell metadata dropped
    assert {C.PERT, C.IS_CONTROL, C.BATCH}.issubset(ours.columns)
    assert C.SITE not in ours.columns and "object_id" not in ours.columns
    ctrl = ours.set_index(C.WELL)[C.IS_CONTROL]
    assert ctrl.loc["A01"].all() and not ctrl.loc["B05"].any()


def test_aggregate_plate_file_equals_in_memory(tmp_path):
    rng = np.random.default_rng(1)
    cells = _cells(rng, plates=("P1",))
    path = tmp_path / "cells.parquet"
    cells.to_parquet(path, index=False)
    from_file = P.aggregate_plate_file(path, registry=REGISTRY, chunk_bytes=len(cells) * 4 * 2,
                                       operation=SCHEMA["profiles.aggregate"])
    in_mem = A.aggregate_wells(P.harmonize_metadata(cells, REGISTRY), operation=SCHEMA["profiles.aggregate"])
    feats = C.feature_columns(in_mem)
    np.testing.assert_array_equal(from_file[feats].to_numpy(), in_mem[feats].to_numpy())
    assert from_file[C.N_CELLS].sum() == len(cells)
    both = P.aggregate_plates([path, path], registry=REGISTRY, operation=SCHEMA["profiles.aggregate"])
    assert len(both) == 2 * len(in_mem)


def test_aggregate_plate_file_sub_wells_equal_in_memory(tmp_path):
    """Sub-well replicates of some features read from the file (metadata, then those columns in chunks,
    as quality does) equal the whole table read, split and aggregated in memory."""
    rng = np.random.default_rng(4)
    cells = _cells(rng, plates=("P1",))
    path = tmp_path / "cells.parquet"
    cells.to_parquet(path, index=False)
    feats = C.feature_columns(cells)[::-2] + ["Cells_Absent_Feature"]
    from_file = P.aggregate_plate_file(path, registry=REGISTRY, features=feats, n_splits=3, seed=5,
                                       chunk_bytes=len(cells) * 4 * 2, operation=SCHEMA["profiles.aggregate"])
    whole = P.assign_splits(P.harmonize_metadata(pd.read_parquet(path), REGISTRY), 3, seed=5)
    in_mem = A.aggregate_wells(whole, strata=(C.PLATE, C.WELL, C.SPLIT), features=feats[:-1],
                               operation=SCHEMA["profiles.aggregate"])
    assert list(from_file.columns[-len(feats) + 1:]) == feats[:-1]
    keep = [c for c in in_mem.columns if c not in C.feature_columns(cells) or c in feats]
    pd.testing.assert_frame_equal(from_file[keep], in_mem[keep], check_exact=True)
    assert from_file[C.N_CELLS].sum() == len(cells) and set(from_file[C.SPLIT]) == {0, 1, 2}


@pytest.mark.parametrize("method", ["mad_robustize", "standardize"])
def test_normalize_matches_pycytominer_per_plate(method):
    rng = np.random.default_rng(2)
    n = 40
    df = pd.DataFrame(rng.normal(size=(n, 6)) * [1, 2, 3, 4, 5, 6] + 10,
                      columns=[f"Nuclei_AreaShape_F{i}" for i in range(6)])
    df[C.PLATE] = np.repeat(["P1", "P2"], n // 2)
    df[C.WELL] = [f"A{i % 20 + 1:02d}" for i in range(n)]
    df[C.IS_CONTROL] = np.tile([True] * 8 + [False] * 12, 2)
    df.loc[df[C.PLATE] == "P2", C.feature_columns(df)] += 7.0      # planted plate offset
    ours, used = P.normalize_plates(df, method=method)
    assert used == {"P1": "controls", "P2": "controls"}
    feats = C.feature_columns(df)
    for plate in ("P1", "P2"):
        sub = df[df[C.PLATE] == plate].reset_index(drop=True)
        ref = pycytominer.normalize(sub, features=feats, meta_features=[C.PLATE, C.WELL, C.IS_CONTROL],
                                    samples=f"{C.IS_CONTROL} == True", method=method, output_file=None)
        got = ours[ours[C.PLATE] == plate][feats].to_numpy()
        np.testing.assert_allclose(got, ref[feats].to_numpy(), rtol=1e-4, atol=1e-4)
    # the planted offset is gone: control medians are 0 on both plates
    ctrl = ours[ours[C.IS_CONTROL]]
    med = ctrl.groupby(C.PLATE)[feats].median().to_numpy()
    assert np.abs(med).max() < (0.5 if method == "standardize" else 1e-5)


def test_normalize_falls_back_to_all_wells_and_nans_zero_scale():
    df = pd.DataFrame({"Cells_A_x": [1.0, 2.0, 3.0, 4.0], "Cells_A_const": [5.0, 5.0, 5.0, 5.0],
                       C.PLATE: "P1", C.WELL: ["A01", "A02", "A03", "A04"],
                       C.IS_CONTROL: [True, False, False, False]})
    out, used = P.normalize_plates(df, method=SCHEMA["profiles.normalize"])
    assert used == {"P1": "all"}
    assert out["Cells_A_const"].isna().all() and out["Cells_A_x"].notna().all()


def test_correlation_threshold_matches_pycytominer():
    from pycytominer.operations import correlation_threshold as pcm_corr

    rng = np.random.default_rng(3)
    base = rng.normal(size=(30, 8))
    x = np.hstack([base, base[:, :3] + 0.05 * rng.normal(size=(30, 3)), -base[:, [4]]])
    df = pd.DataFrame(x, columns=[f"Cells_T_f{i}" for i in range(x.shape[1])])
    feats = list(df.columns)
    ours = P.correlation_threshold(df, feats, threshold=0.9)
    ref = pcm_corr(df, features=feats, threshold=0.9)
    assert sorted(ours) == sorted(ref)
    assert len(ours) == 3          # the three near-duplicates; the anti-correlated copy is kept (signed rule)


def test_select_features_removes_planted_bad_columns():
    rng = np.random.default_rng(4)
    n = 50
    good = rng.normal(size=(n, 5))
    df = pd.DataFrame(good, columns=[f"Cells_Intensity_G{i}" for i in range(5)])
    df["Cells_Intensity_dup"] = df["Cells_Intensity_G0"] * 2 + 1e-3 * rng.normal(size=n)
    df["Cells_Intensity_const"] = 3.0
    df["Cells_Intensity_nan"] = np.where(np.arange(n) < 10, np.nan, 1.0)
    df["Nuclei_Correlation_Manders_AGP_DNA"] = rng.normal(size=n)     # in pycytominer's default blocklist
    # a quantised feature: controls almost constant, so one well sits 10^4 MADs out after normalisation
    df["Cells_RadialDistribution_MeanFrac_RNA_3of4"] = np.where(np.arange(n) == 7, 2e4, rng.normal(size=n))
    df[C.PLATE] = "P1"
    out, rec = P.select_features(df,
                                 operations=SCHEMA["profiles.feature_select"],
                                 outlier_cutoff=SCHEMA["profiles.outlier_cutoff"],
                                 blocklist=SCHEMA["profiles.blocklist"])
    kept = set(C.feature_columns(out))
    assert kept.issuperset({f"Cells_Intensity_G{i}" for i in range(1, 5)})
    assert not kept & {"Cells_Intensity_const", "Cells_Intensity_nan", "Nuclei_Correlation_Manders_AGP_DNA",
                       "Cells_RadialDistribution_MeanFrac_RNA_3of4"}
    assert len(kept & {"Cells_Intensity_G0", "Cells_Intensity_dup"}) == 1
    assert rec["n_features_in"] == 10 and rec["n_features_out"] == len(kept)
    assert rec["removed"]["drop_outliers"] == 1
    assert C.PLATE in out.columns
    # the same call to pycytominer drops the same outlier feature
    ref = pycytominer.feature_select(df, features=C.feature_columns(df), operation="drop_outliers",
                                     outlier_cutoff=500)
    assert "Cells_RadialDistribution_MeanFrac_RNA_3of4" not in ref.columns


def _plate(perts: dict[str, str], effect: dict[str, float]) -> pd.DataFrame:
    """One plate, one feature: well -> perturbation; a well's value is its perturbation's effect."""
    rows = [{C.PLATE: "P1", C.WELL: w, C.PERT: p, C.IS_CONTROL: p.startswith("NTC"),
             "Cells_Intensity_X": effect.get(p, 0.0)} for w, p in perts.items()]
    return pd.DataFrame(rows)


def test_position_correction_keeps_a_perturbation_that_dominates_its_row():
    """Median polish on a sparse plate: row B holds 2 wells of HIT and 1 control, so its 'row effect' would
    be HIT's own effect; the correction must leave it alone (and still fit a row where controls dominate)."""
    wells = {"B03": "HIT", "B07": "HIT", "B11": "NTC", "D03": "NTC", "D07": "NTC", "D11": "A",
             "F03": "NTC", "F07": "B", "F11": "C", "H05": "NTC", "H09": "NTC", "H13": "NTC"}
    df = _plate(wells, {"HIT": 5.0})
    out = P.correct_position(df, reference="all", edge_term=False)
    hit = out.loc[out[C.PERT] == "HIT", "Cells_Intensity_X"].to_numpy()
    assert np.allclose(hit, 5.0)
    # without the guard (a row of 3 distinct perturbations) the same wells would be polished towards 0
    df2 = _plate({**wells, "B11": "OTHER"}, {"HIT": 5.0})
    df2.loc[df2[C.WELL] == "B07", C.PERT] = "HIT2"
    out2 = P.correct_position(df2, reference="all", edge_term=False)
    assert abs(float(out2.loc[out2[C.WELL] == "B03", "Cells_Intensity_X"].iloc[0])) < 5.0


def test_consensus_median_and_counts():
    df = pd.DataFrame({C.PERT: ["a", "a", "a", "b"], C.PLATE: ["p1", "p1", "p2", "p1"],
                       C.IS_CONTROL: False, C.N_CELLS: [10, 20, 30, 5],
                       "Cells_X_1": [1.0, 5.0, 2.0, 7.0], "Cells_X_2": [0.0, 0.0, 9.0, 1.0]})
    c = P.consensus(df).set_index(C.PERT)
    assert c.loc["a", "Cells_X_1"] == 2.0 and c.loc["a", "Cells_X_2"] == 0.0
    assert c.loc["a", C.N_WELLS] == 3 and c.loc["a", C.N_CELLS] == 60 and c.loc["a", "n_plates"] == 2
    assert c.loc["b", C.N_WELLS] == 1 and c.loc["b", "Cells_X_1"] == 7.0


def test_assign_splits_balanced():
    rng = np.random.default_rng(5)
    cells = P.harmonize_metadata(_cells(rng, n=600, plates=("P1",)), REGISTRY)
    split = P.assign_splits(cells, 3, seed=0)
    counts = split.groupby([C.WELL, "Metadata_Split"]).size().unstack()
    assert counts.shape[1] == 3 and (counts.max(axis=1) - counts.min(axis=1)).max() <= 1
    sub = A.aggregate_wells(split, strata=(C.PLATE, C.WELL, "Metadata_Split"),
                            operation=SCHEMA["profiles.aggregate"])
    assert len(sub) == 3 * cells[C.WELL].nunique() and sub[C.N_CELLS].sum() == len(cells)


def test_build_profiles_end_to_end(tmp_path):
    rng = np.random.default_rng(6)
    paths = []
    for plate in ("P1", "P2"):
        df = _cells(rng, n=1500, plates=(plate,))
        df.loc[df.well == "B05", "Cells_Intensity_F0_DNA"] += 3.0      # G1 active on feature 0
        paths.append(tmp_path / f"{plate}.parquet")
        df.to_parquet(paths[-1], index=False)
    res = P.build_profiles(paths, registry=REGISTRY, feature_select=["drop_na_columns", "variance_threshold"],
                           position_correction=False,
                           aggregate=SCHEMA["profiles.aggregate"], normalize=SCHEMA["profiles.normalize"],
                           outlier_cutoff=SCHEMA["profiles.outlier_cutoff"],
                           blocklist=SCHEMA["profiles.blocklist"])
    assert res.info["n_plates"] == 2 and len(res.wells) == 12
    cons = res.consensus.set_index(C.PERT)
    others = cons.drop(index="G1")["Cells_Intensity_F0_DNA"]
    assert cons.loc["G1", "Cells_Intensity_F0_DNA"] > 3 * np.abs(others).max()
    assert cons[C.N_CELLS].sum() == 3000 and cons.loc["NTC_1", C.N_WELLS] == 4
    assert np.isfinite(res.profiles[C.feature_columns(res.profiles)].to_numpy()).all()


@pytest.mark.realdata
def test_real_jump_tables_go_through_unchanged(shared_data):
    """Real CellProfiler JUMP output (one site, 109 cells) through aggregation -> normalisation -> selection.

    The site is split at random into 12 pseudo-wells (4 control) so per-plate normalisation has a reference;
    the features and their names are the real ones.
    """
    from pycytominer.cyto_utils import infer_cp_features

    cells = read_cellprofiler_csvs(shared_data(JUMP))
    assert len(cells) == 109
    feats = C.feature_columns(cells)
    assert sorted(feats) == sorted(infer_cp_features(cells))     # same feature naming rule as pycytominer
    assert len(feats) > 5000 and {"Cells_AreaShape_Area", "Nuclei_Intensity_MeanIntensity_DNA"} <= set(feats)
    rng = np.random.default_rng(0)
    wells = [f"{r}{c:02d}" for r in "BCDE" for c in (2, 3, 4)]
    cells = cells.assign(Metadata_Well=rng.choice(wells, len(cells)))
    cells[C.PERT] = np.where(cells[C.WELL].str[0].isin(["B"]), "NTC", "X" + cells[C.WELL])
    cells[C.IS_CONTROL] = cells[C.PERT] == "NTC"
    res = P.build_profiles(wells=A.aggregate_wells(cells,
                                                   operation=SCHEMA["profiles.aggregate"]),
                                                   position_correction=False,
                                 aggregate=SCHEMA["profiles.aggregate"],
                                 normalize=SCHEMA["profiles.normalize"],
                                 feature_select=SCHEMA["profiles.feature_select"],
                                 outlier_cutoff=SCHEMA["profiles.outlier_cutoff"],
                                 blocklist=SCHEMA["profiles.blocklist"])
    kept = C.feature_columns(res.profiles)
    assert res.info["normalization_reference"] == {"BR00116991": "controls"}
    assert 0 < len(kept) < len(feats) and set(kept) <= set(feats)
    rec = res.info["feature_selection"]["removed"]
    assert rec["blocklist"] > 0 and rec["drop_na_columns"] > 0
    assert np.isfinite(res.profiles[kept].to_numpy()).all()
    assert res.consensus[C.N_CELLS].sum() == 109
