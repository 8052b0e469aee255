"""The streamed profiles (plate by plate, column block by column block) against the whole-screen computation
they replace: ``_reference_build_profiles`` below is ``build_profiles`` as it ran on the concatenated table
(kept verbatim here as the reference), compared on the same inputs value for value."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from config_values import SCHEMA

from pairedscreen import columns as C
from pairedscreen import quarantine
from pairedscreen.io import write_parquet
from pairedscreen.paint import profiles as P
from pairedscreen.paint import screen_profiles as S
from pairedscreen.paint.stages import run_profiles
from pairedscreen.plate import edge_mask
from pairedscreen.sheets import read_registry

WELLS_384 = [f"{chr(65 + r)}{c + 1:02d}" for r in range(16) for c in range(24)]
N_FEAT = 40
FEATS = [f"Cells_Intensity_F{i:02d}_DNA" for i in range(N_FEAT)]


# ------------------------------------------------------------------------- the whole-table reference
def _reference_select_features(profiles: pd.DataFrame, operations, *, outlier_cutoff: float,
                               blocklist) -> tuple[pd.DataFrame, dict]:
    from pycytominer import feature_select

    ops = [o for o in P.FEATURE_SELECT_ORDER if o in operations]
    feats = C.feature_columns(profiles)
    record: dict[str, Any] = {"n_features_in": len(feats), "removed": {}}
    out = profiles.replace([np.inf, -np.inf], np.nan)
    for op in ops:
        cur = C.feature_columns(out)
        if not cur:
            break
        if op == "correlation_threshold":
            x = out[cur].to_numpy(np.float64)
            with np.errstate(invalid="ignore", divide="ignore"):
                c = np.corrcoef(x, rowvar=False) if np.isfinite(x).all() else out[cur].corr().to_numpy()
            rank = np.empty(len(cur), np.int64)
            rank[np.argsort(np.nansum(np.abs(c), axis=0), kind="stable")] = np.arange(len(cur))
            ii, jj = np.nonzero(np.triu(np.nan_to_num(c, nan=-np.inf) > 0.9, k=1))
            drop = [cur[k] for k in sorted(set(np.where(rank[ii] > rank[jj], ii, jj).tolist()))]
            record["removed"][op] = len(drop)
            out = out.drop(columns=drop)
            continue
        kw: dict[str, Any] = {}
        if op == "blocklist" and blocklist is not None:
            kw["blocklist"] = blocklist
        if op == "drop_outliers":
            kw["outlier_cutoff"] = outlier_cutoff
        try:
            sel = feature_select(out, features=cur, samples="all", operation=op, na_cutoff=0.05,
                                 corr_threshold=0.9, output_file=None, **kw)
        except ValueError as e:
            if "No feature in X meets the variance threshold" not in str(e):
                raise
            sel = out.drop(columns=cur)
        record["removed"][op] = len(cur) - len(C.feature_columns(sel))
        out = sel
    cur = C.feature_columns(out)
    finite = np.isfinite(out[cur].to_numpy(np.float64)).all(axis=0)
    record["removed"]["nonfinite"] = int((~finite).sum())
    out = out.drop(columns=np.asarray(cur)[~finite].tolist())
    record["n_features_out"] = len(C.feature_columns(out))
    return out.reset_index(drop=True), record


def _reference_consensus(profiles: pd.DataFrame) -> pd.DataFrame:
    feats = C.feature_columns(profiles)
    g = profiles.groupby(C.PERT, sort=True, observed=True)
    agg = g[feats].median()
    info = pd.DataFrame({C.N_WELLS: g.size()})
    if C.N_CELLS in profiles.columns:
        info[C.N_CELLS] = g[C.N_CELLS].sum()
    if C.IS_CONTROL in profiles.columns:
        info[C.IS_CONTROL] = g[C.IS_CONTROL].first().astype(bool)
    if C.PLATE in profiles.columns:
        info["n_plates"] = g[C.PLATE].nunique()
    return pd.concat([info, agg.astype(np.float32)], axis=1).reset_index()


def _reference_build_profiles(wells: pd.DataFrame, registry, *, normalize, feature_select, outlier_cutoff,
                              position_correction, blocklist=None):
    wells = P.harmonize_metadata(wells, registry)
    feats = C.feature_columns(wells)
    empty = np.array(wells[feats].isna().all(axis=1).to_numpy(), dtype=bool)
    if C.N_CELLS in wells.columns:
        empty |= wells[C.N_CELLS].fillna(0).to_numpy() == 0
    info: dict[str, Any] = {"n_wells": len(wells), "n_wells_empty": int(empty.sum()),
                            "n_plates": int(wells[C.PLATE].nunique()), "n_features_measured": len(feats)}
    prof = wells.loc[~empty].reset_index(drop=True)
    if position_correction:
        ref = "controls" if position_correction == "controls" else "all"
        prof = P.correct_position(prof, reference=ref)
        info["position_correction"] = ref
    prof, used = P.normalize_plates(prof, method=normalize)
    info["normalization_reference"] = used
    prof, record = _reference_select_features(prof, list(feature_select), outlier_cutoff=outlier_cutoff,
                                              blocklist=blocklist)
    info["feature_selection"] = record
    return prof, _reference_consensus(prof), info


# ------------------------------------------------------------------------------------------- inputs
REGISTRY = pd.DataFrame({"perturbation_id": [f"G{i:02d}" for i in range(60)] + ["NTC_1", "NTC_2"],
                         "perturbation_type": ["CRISPRi"] * 60 + ["control"] * 2,
                         "target_gene": [f"G{i:02d}" for i in range(60)] + ["", ""],
                         "is_control": ["false"] * 60 + ["true"] * 2,
                         "control_type": [""] * 60 + ["non-targeting"] * 2})


def _plate(k: int, n_controls: int, rng: np.random.Generator, *, light_na: bool) -> pd.DataFrame:
    """One plate's wells.parquet as the paint arm writes it, with planted problems: a constant feature,
    correlated pairs (one an exact copy), a feature with too many NaN, (``light_na``) one with a few NaN
    (so the correlation filter runs pandas' pairwise path), an outlier, an edge effect, a phenotype, an
    empty well and a well without cells."""
    perts = np.array([f"NTC_{i % 2 + 1}" for i in range(n_controls)]
                     + [f"G{i % 60:02d}" for i in range(384 - n_controls)])[rng.permutation(384)]
    x = rng.normal(size=(384, N_FEAT)) + 0.3 * k
    x[:, 1] = x[:, 0] * 2 + rng.normal(0, 0.01, 384)                  # correlated pair
    x[:, 9] = x[:, 8]                                                  # an exact copy
    x[:, 17] = -x[:, 3] + rng.normal(0, 0.05, 384)                     # anti-correlated (kept: r < 0)
    x[:, 25] = 0.7 * x[:, 24] + 0.7 * x[:, 26]                         # correlated with two others
    x[:, 2] = 4.0                                                      # constant
    x[rng.choice(384, 60, replace=False), 4] = np.nan                  # too many NA
    if light_na:
        x[rng.choice(384, 3, replace=False), 5] = np.nan               # a few NA: kept, pairwise corr
    x[:, 6] = np.where(np.arange(384) == 7, 1e6, x[:, 6])              # outlier
    x[edge_mask(WELLS_384), 10] += 3.0                                 # edge effect
    x[np.char.startswith(perts, "G1"), 11] += 2.0                      # a phenotype
    w = pd.DataFrame(x.astype(np.float32), columns=FEATS)
    w.insert(0, "Metadata_Plate", f"P{k}")
    w.insert(1, "Metadata_Well", WELLS_384)
    w.insert(2, "Metadata_Perturbation", perts)
    w.insert(3, "Metadata_Batch", f"b{k % 2}")
    w.insert(4, "Metadata_Count_Cells", rng.integers(1, 30, 384).astype(np.int64))
    w.insert(5, "Metadata_Count_Sites", np.int64(3))
    w.insert(6, "Metadata_Count_SitesUsable", np.int64(3))
    w.loc[10, FEATS] = np.nan                                          # an empty well
    w.loc[11, "Metadata_Count_Cells"] = 0                              # a well without cells
    return w


def _screen(tmp_path: Path, *, light_na: bool, quarantined: bool = False, extra: bool = False,
            seed: int = 5) -> tuple[list[Path], Path]:
    """Plates with 84, 30 and 2 control wells (the last falls back to all wells), and optionally a plate
    whose features are all NA (quarantined) and a plate map column only one plate has."""
    rng = np.random.default_rng(seed)
    files = []
    for k, n_ctrl in enumerate((84, 30, 2, 84, 84)[:5 if quarantined else 4]):
        w = _plate(k, n_ctrl, rng, light_na=light_na)
        if extra and k == 1:
            w["Metadata_Dose"] = np.linspace(0, 1, 384)                # only this plate has it
        if k == 4:
            w[FEATS] = np.nan                                          # quarantined
        (tmp_path / f"P{k}").mkdir()
        files.append(tmp_path / f"P{k}" / "wells.parquet")
        w.to_parquet(files[-1], index=False)
    reg = tmp_path / "perturbations.tsv"
    REGISTRY.to_csv(reg, sep="\t", index=False)
    return files, reg


def _params(**over) -> dict[str, Any]:
    from pairedscreen.config import resolve_section

    return {**resolve_section("profiles"), **over}


def _count_scans(monkeypatch) -> list[int]:
    """Record each time ScreenProfiles lays the screen out (the path for tables that are not one plate
    each)."""
    calls: list[int] = []
    scan = S.ScreenProfiles._scan

    def spy(self):
        calls.append(1)
        return scan(self)
    monkeypatch.setattr(S.ScreenProfiles, "_scan", spy)
    return calls


def _assert_same_files(new: Path, old: Path) -> None:
    assert pq.read_schema(new).equals(pq.read_schema(old), check_metadata=True)
    pd.testing.assert_frame_equal(pd.read_parquet(new), pd.read_parquet(old), check_exact=True)


# -------------------------------------------------------------------------------------------- tests
CASES = [  # (normalize, position_correction, light_na, feature_select)
    ("mad_robustize", True, False, None),
    ("mad_robustize", False, True, None),
    ("standardize", True, True, None),
    ("standardize", False, False, None),
    ("mad_robustize", True, True, list(P.FEATURE_SELECT_ORDER)),
]


@pytest.mark.parametrize(("normalize", "position", "light_na", "ops"), CASES)
def test_run_profiles_equals_the_whole_screen_computation(tmp_path, monkeypatch, caplog, normalize, position,
                                                          light_na, ops):
    """run_profiles (streamed, column blocks of 7 features) writes exactly the files and logs exactly the
    info of the whole-table computation on the concatenated plates; a quarantined plate is left out."""
    files, reg = _screen(tmp_path, light_na=light_na, quarantined=True)
    params = _params(normalize=normalize, position_correction=position)
    if ops is not None:
        params["feature_select"] = ops
    n_kept = 4 * 382
    monkeypatch.setattr(S, "BLOCK_BYTES", 8 * n_kept * 7)            # 7 columns a block
    monkeypatch.setattr(S, "ROW_GROUP_BYTES", 1)                     # a row group per plate
    scans = _count_scans(monkeypatch)
    new = tmp_path / "new"
    with caplog.at_level(logging.INFO, logger="pairedscreen.paint.stages"):
        info = run_profiles(files, reg, params, new / "profiles.parquet", new / "consensus.parquet",
                            new / "quarantine.tsv", on_empty="quarantine")
    logged = [r.getMessage() for r in caplog.records if r.getMessage().startswith("profiles: ")]

    registry = read_registry(reg)
    table = pd.concat([P.read_wells([f], registry) for f in files[:4]], ignore_index=True)
    prof, cons, ref_info = _reference_build_profiles(
        table, registry, normalize=normalize, feature_select=params["feature_select"],
        outlier_cutoff=float(params["outlier_cutoff"]), position_correction=position,
        blocklist=params["blocklist"])
    old = tmp_path / "old"
    write_parquet(prof, old / "profiles.parquet")
    write_parquet(cons, old / "consensus.parquet")
    _assert_same_files(new / "profiles.parquet", old / "profiles.parquet")
    _assert_same_files(new / "consensus.parquet", old / "consensus.parquet")
    assert info == ref_info and logged == [f"profiles: {json.dumps(ref_info, default=str)}"]
    assert quarantine.read_table(new / "quarantine.tsv")["id"].tolist() == ["P4"]
    assert not [p for p in new.iterdir() if p.name.startswith(".")]          # no scratch left
    # every planted problem exercised a step, and the P3 plate's 2 controls fell back to all wells
    removed = info["feature_selection"]["removed"]
    assert removed["drop_na_columns"] >= 1 and removed["correlation_threshold"] >= 2
    assert (removed["drop_outliers"] >= 1 or removed["nonfinite"] >= 1)
    assert "Cells_Intensity_F09_DNA" not in pd.read_parquet(new / "profiles.parquet").columns
    assert info["n_wells_empty"] == 8 and info["normalization_reference"]["P2"] == "all"
    assert scans == []                       # one plate per file: no laying out, each file read once
    assert pq.ParquetFile(new / "profiles.parquet").num_row_groups == 4


@pytest.mark.parametrize("light_na", [False, True])
@pytest.mark.parametrize("position", [False, "all", "controls"])
def test_build_profiles_in_memory_equals_reference(monkeypatch, position, light_na, tmp_path):
    """build_profiles(wells=...) (the same engine, frames in memory) gives the reference's frames; a plate
    map column that only one plate has is filled as pd.concat fills it."""
    files, _ = _screen(tmp_path, light_na=light_na, extra=True, seed=7)
    table = pd.concat([pd.read_parquet(f) for f in files], ignore_index=True)
    ops = list(P.FEATURE_SELECT_ORDER)
    monkeypatch.setattr(S, "BLOCK_BYTES", 8 * 4 * 382 * 5)            # 5 columns a block
    res = P.build_profiles(wells=table, registry=REGISTRY, feature_select=ops, position_correction=position,
                                 aggregate=SCHEMA["profiles.aggregate"],
                                 normalize=SCHEMA["profiles.normalize"],
                                 outlier_cutoff=SCHEMA["profiles.outlier_cutoff"],
                                 blocklist=SCHEMA["profiles.blocklist"])
    prof, cons, info = _reference_build_profiles(table, REGISTRY, normalize="mad_robustize",
                                                 feature_select=ops,
                                                 outlier_cutoff=SCHEMA["profiles.outlier_cutoff"],
                                                 position_correction=position)
    pd.testing.assert_frame_equal(res.profiles, prof, check_exact=True)
    pd.testing.assert_frame_equal(res.consensus, cons, check_exact=True)
    assert res.info == info and "Metadata_Dose" in res.profiles.columns
    assert res.info["normalization_reference"] == {"P0": "controls", "P1": "controls", "P2": "all",
                                                   "P3": "controls"}


def test_streamed_files_equal_reference_with_differing_plate_columns(tmp_path, monkeypatch):
    """Per-plate files whose columns differ (a plate map column one plate has) stream to the file the
    concatenated table gives."""
    files, reg = _screen(tmp_path, light_na=True, extra=True, seed=11)
    monkeypatch.setattr(S, "BLOCK_BYTES", 8 * 4 * 382 * 3)
    params = _params()
    info = run_profiles(files, reg, params, tmp_path / "new" / "profiles.parquet",
                        tmp_path / "new" / "consensus.parquet", on_empty=SCHEMA["on_empty"])
    registry = read_registry(reg)
    prof, cons, ref_info = _reference_build_profiles(
        P.read_wells(files, registry), registry, normalize=params["normalize"],
        feature_select=params["feature_select"], outlier_cutoff=float(params["outlier_cutoff"]),
        position_correction=bool(params["position_correction"]), blocklist=params["blocklist"])
    write_parquet(prof, tmp_path / "old" / "profiles.parquet")
    write_parquet(cons, tmp_path / "old" / "consensus.parquet")
    _assert_same_files(tmp_path / "new" / "profiles.parquet", tmp_path / "old" / "profiles.parquet")
    _assert_same_files(tmp_path / "new" / "consensus.parquet", tmp_path / "old" / "consensus.parquet")
    assert info == ref_info


def test_plate_by_plate_correlation_matches_numpy(tmp_path, monkeypatch):
    """The finite path's correlation matrix (cross-products summed plate by plate) equals np.corrcoef on
    the whole table to rounding, and the pandas path (a block pair at a time) equals DataFrame.corr
    exactly."""
    rng = np.random.default_rng(3)
    wells = pd.concat([_plate(k, 84, rng, light_na=True) for k in range(3)], ignore_index=True)
    monkeypatch.setattr(S, "BLOCK_BYTES", 8 * 3 * 382 * 6)
    sp = S.ScreenProfiles([P.harmonize_metadata(wells, REGISTRY)], tmp_path, position_correction=False,
                          normalize=SCHEMA["profiles.normalize"])
    feats = [f for f in FEATS if f not in {"Cells_Intensity_F02_DNA", "Cells_Intensity_F04_DNA"}]
    x = sp._read(feats)
    pd.testing.assert_frame_equal(pd.DataFrame(sp._pairwise_corr(feats, sp._blocks(feats)), index=feats,
                                               columns=feats), x.corr(), check_exact=True)
    finite = [f for f in feats if f != "Cells_Intensity_F05_DNA"]
    xf = x[finite].to_numpy(np.float64)
    ours = sp._corrcoef(finite, xf.T.mean(axis=1))
    np.testing.assert_allclose(ours, np.corrcoef(xf, rowvar=False), rtol=0, atol=1e-14)
    assert len(sp._blocks(feats)) > 5


def test_plates_split_across_tables_equal_reference(tmp_path, monkeypatch):
    """Tables that are not one plate each (a plate split over two files, a file with two plates) take the
    laid-out path: plates in order of their first non-empty well, rows in input order, as on the
    concatenated table."""
    rng = np.random.default_rng(13)
    plates = [_plate(k, 84 if k != 1 else 2, rng, light_na=True) for k in range(3)]
    parts = [plates[1].iloc[:200], pd.concat([plates[0], plates[1].iloc[200:]]), plates[2]]
    files = []
    for i, part in enumerate(parts):
        files.append(tmp_path / f"t{i}.parquet")
        part.to_parquet(files[-1], index=False)
    monkeypatch.setattr(S, "BLOCK_BYTES", 8 * 3 * 382 * 4)
    scans = _count_scans(monkeypatch)
    ops = list(P.FEATURE_SELECT_ORDER)
    new = tmp_path / "new"
    info = S.write_profiles(files, new / "profiles.parquet", new / "consensus.parquet", registry=REGISTRY,
                            normalize="standardize", feature_select=ops,
                            outlier_cutoff=SCHEMA["profiles.outlier_cutoff"],
                            position_correction="controls", blocklist=None,
                            correct=SCHEMA["profiles.correct"])
    table = pd.concat([pd.read_parquet(f) for f in files], ignore_index=True)
    prof, cons, ref_info = _reference_build_profiles(table, REGISTRY, normalize="standardize",
                                                     feature_select=ops,
                                                     outlier_cutoff=SCHEMA["profiles.outlier_cutoff"],
                                                     position_correction="controls")
    write_parquet(prof, tmp_path / "old" / "profiles.parquet")
    write_parquet(cons, tmp_path / "old" / "consensus.parquet")
    _assert_same_files(tmp_path / "new" / "profiles.parquet", tmp_path / "old" / "profiles.parquet")
    _assert_same_files(tmp_path / "new" / "consensus.parquet", tmp_path / "old" / "consensus.parquet")
    assert info == ref_info and list(info["normalization_reference"]) == ["P1", "P0", "P2"]
    assert scans == [1]
