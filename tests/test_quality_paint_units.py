"""Quality's paint half read a plate (a row group) at a time: the same numbers as on the whole table, and at
most ``quality.max_replicates`` replicate profiles per perturbation (issue 20)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from config_values import SCHEMA

from pairedscreen import columns as C
from pairedscreen.paint.profiles import harmonize_metadata, normalize_plates
from pairedscreen.quality import batch, position, replicate
from pairedscreen.quality.paint_units import PlateRows, paint_replicates
from pairedscreen.quality.stage import _paint_quality

FEATS = [f"Cells_Intensity_Mean_{c}" for c in ("DNA", "RNA", "AGP")] + ["Nuclei_AreaShape_Area",
                                                                      "Cytoplasm_Texture_Contrast_Mito_3"]

PROFILE = {"aggregate": SCHEMA["profiles.aggregate"], "normalize": SCHEMA["profiles.normalize"]}


def _screen(n_plates: int = 3, wells_per_pert: int = 4, seed: int = 0) -> pd.DataFrame:
    """Well profiles: 6 perturbations with a planted shift and 2 control ids, ``wells_per_pert`` wells of
    each per plate, an edge offset on plate P2."""
    rng = np.random.default_rng(seed)
    perts = [f"TGT{i:02d}" for i in range(6)] + ["NTC_1", "NTC_2"]
    shift = {p: rng.normal(0, 2, len(FEATS)) if p.startswith("TGT") else np.zeros(len(FEATS))
             for p in perts}
    names = [f"{r}{c:02d}" for r in "ABCDEFGHIJKLMNOP" for c in range(1, 25)]
    rows = []
    for k in range(n_plates):
        plate = f"P{k + 1}"
        wells = rng.permutation(names)[: len(perts) * wells_per_pert]
        for j, w in enumerate(wells):
            p = perts[j % len(perts)]
            x = rng.normal(0, 1, len(FEATS)) + shift[p]
            if plate == "P2" and (w[0] in "AP" or w[1:] in ("01", "24")):
                x = x + 6.0
            rows.append({C.PLATE: plate, C.WELL: w, C.PERT: p, C.BATCH: f"B{k % 2}", C.N_CELLS: 30,
                         **dict(zip(FEATS, x.astype(np.float32), strict=True))})
    reg = pd.DataFrame({"perturbation_id": perts, "is_control": [p.startswith("NTC") for p in perts]})
    return harmonize_metadata(pd.DataFrame(rows), reg), reg


def _write_by_plate(df: pd.DataFrame, path) -> None:
    """One row group per plate, as the profiles stage writes them."""
    table = pa.Table.from_pandas(df, preserve_index=False)
    with pq.ParquetWriter(path, table.schema) as w:
        for plate in pd.unique(df[C.PLATE]):
            w.write_table(pa.Table.from_pandas(df[df[C.PLATE] == plate], preserve_index=False,
                                               schema=table.schema))


@pytest.mark.parametrize("row_group_size", [None, 7])
def test_plate_rows_read_what_the_whole_table_holds(tmp_path, row_group_size):
    df, reg = _screen()
    path = tmp_path / "profiles.parquet"
    if row_group_size:   # plates spread over row groups of any size, not one per plate
        df.to_parquet(path, index=False, row_group_size=row_group_size)
    else:
        _write_by_plate(df, path)
    whole = harmonize_metadata(pd.read_parquet(path), reg)
    pr = PlateRows(path, reg)
    assert pr.features == C.feature_columns(whole)
    assert pr.plates() == sorted(whole[C.PLATE].unique())
    for plate in pr.plates():
        pd.testing.assert_frame_equal(pr.plate(plate), whole[whole[C.PLATE] == plate].reset_index(drop=True))
    pick = np.array([0, 5, 6, 7, 40, len(whole) - 1])
    pd.testing.assert_frame_equal(pr.rows(pick), whole.iloc[pick].reset_index(drop=True))
    ctrl = whole[whole[C.IS_CONTROL]]
    pd.testing.assert_frame_equal(pr.controls([C.PLATE, *FEATS], seed=SCHEMA["quality.seed"]),
                                  ctrl[[C.PLATE, *FEATS]].reset_index(drop=True))


def test_streamed_paint_quality_equals_the_whole_table(tmp_path):
    """Under the cap, every metric equals the computation on the whole profiles table and the raw wells."""
    df, reg = _screen()
    prof = tmp_path / "profiles.parquet"
    norm, _ = normalize_plates(df, features=FEATS, method=SCHEMA["profiles.normalize"])
    _write_by_plate(norm, prof)
    wells = []
    for plate in pd.unique(df[C.PLATE]):
        p = tmp_path / plate / "wells.parquet"
        p.parent.mkdir()
        df[df[C.PLATE] == plate].to_parquet(p, index=False)
        wells.append(p)
    metrics = {"replicate": {}, "consistency": {}, "effect": {}, "batch": {}}
    act = _paint_quality(prof, wells, None, reg, metrics, [], nperm=200, seed=3, alpha=0.05, pca=None,
                         position_out=tmp_path / "position.parquet", max_cells=200, max_replicates=64,
                         **PROFILE)
    assert metrics["paint_subsample"]["perturbations_capped"] == 0
    assert metrics["paint_subsample"]["replicates"] == len(df)
    whole = harmonize_metadata(pd.read_parquet(prof), reg)
    meta = pd.DataFrame({"perturbation": whole[C.PERT].astype(str), "is_control": whole[C.IS_CONTROL],
                         "plate": whole[C.PLATE].astype(str)})
    x = replicate.paint_features(whole, FEATS, pca_variance=None)
    ref = replicate.phenotypic_activity(x, meta, null_size=200, seed=3)
    pd.testing.assert_frame_equal(act.reset_index(drop=True), ref.reset_index(drop=True))
    for stage, table in (("before", norm), ("after", whole)):
        eff = position.position_effects(table, FEATS, n_permutations=200, seed=3)
        assert metrics["position"][stage] == position.summarize(eff, alpha=0.05), stage
    assert metrics["position"]["before"]["edge_detected"]
    r2 = pd.read_parquet(tmp_path / "position.parquet")
    ref_r2 = position.feature_r2(whole, FEATS)
    pd.testing.assert_frame_equal(r2[r2.profiles == "after"].drop(columns="profiles").reset_index(drop=True),
                                  ref_r2)
    ctrl = whole[whole[C.IS_CONTROL]]
    assert metrics["batch"]["paint_plate_normalized"] == batch.batch_predictability(
        ctrl[FEATS].to_numpy(), ctrl[C.PLATE].to_numpy(), n_permutations=200, seed=3)
    raw_ctrl = df[df[C.IS_CONTROL]]
    assert metrics["batch"]["paint_plate_raw"] == batch.batch_predictability(
        raw_ctrl[FEATS].to_numpy(), raw_ctrl[C.PLATE].to_numpy(), n_permutations=200, seed=3)


def test_replicates_capped_per_perturbation(tmp_path):
    """12 wells per perturbation over 3 plates, a cap of 5: 5 rows of each perturbation (controls: each id),
    taken unchanged from the profiles, the same on a rerun, and recorded."""
    df, reg = _screen(wells_per_pert=4)
    path = tmp_path / "profiles.parquet"
    _write_by_plate(df, path)
    pr = PlateRows(path, reg)
    rep, unit, record = paint_replicates(pr, None, reg, max_replicates=5, seed=1, **PROFILE)
    assert unit == "wells"
    assert rep.groupby(C.PERT).size().eq(5).all() and rep[C.PERT].nunique() == 8
    assert record == {"max_replicates_per_perturbation": 5, "replicates": 40, "replicates_total": 96,
                      "perturbations_capped": 8, "unit": "wells"}
    key = [C.PLATE, C.WELL]
    joined = rep.merge(df, on=key, suffixes=("", "_src"))
    assert len(joined) == len(rep)
    for f in FEATS:
        assert np.array_equal(joined[f].to_numpy(), joined[f + "_src"].to_numpy())
    again, _, _ = paint_replicates(PlateRows(path, reg), None, reg, max_replicates=5, seed=1, **PROFILE)
    pd.testing.assert_frame_equal(rep, again)
    other, _, _ = paint_replicates(PlateRows(path, reg), None, reg, max_replicates=5, seed=2, **PROFILE)
    assert not other[key].equals(rep[key])



@pytest.mark.parametrize("budget", [1, 57 * 41 * 7, 1 << 24])
def test_batch_distances_in_blocks_are_the_full_broadcast(budget):
    """The nearest-centroid distances computed a block of rows at a time (memory bounded whatever the
    number of plates) are bit-identical to the rows x classes x features broadcast."""
    from pairedscreen.quality.batch import _sq_distances

    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(300, 57)), rng.normal(size=(41, 57))
    assert np.array_equal(_sq_distances(a, b, budget), ((a[:, None, :] - b[None, :, :]) ** 2).sum(axis=2))


def test_batch_controls_capped_per_plate(tmp_path):
    """At most the cap of control wells per plate, the same rows whichever plates are read together."""
    from pairedscreen.quality.paint_units import per_plate

    df, reg = _screen(wells_per_pert=4)     # 8 control wells per plate
    ctrl = df[df[C.IS_CONTROL]].reset_index(drop=True)
    capped = per_plate(ctrl, 3, seed=5)
    assert capped.groupby(C.PLATE).size().eq(3).all()
    alone = pd.concat([per_plate(g, 3, seed=5) for _, g in ctrl.groupby(C.PLATE, sort=False)],
                      ignore_index=True)
    pd.testing.assert_frame_equal(capped, alone)
    assert per_plate(ctrl, 8, seed=5).equals(ctrl)
    path = tmp_path / "profiles.parquet"
    df.to_parquet(path, index=False, row_group_size=10)
    pd.testing.assert_frame_equal(PlateRows(path, reg).controls([C.PLATE, C.WELL, *FEATS], 3, seed=5),
                                  capped[[C.PLATE, C.WELL, *FEATS]])
