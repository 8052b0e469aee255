"""Planted-truth recovery on a synthetic paired screen built here (cells of both arms):

- RNA: Poisson counts; `both` and `rna` perturbations knock their target down and switch on a program
  (`both` perturbations share programs in threes); `paint`/`neither` do nothing; library L2 scales some genes.
- Paint: per-cell features on two 384-well plates; `both` (sharing a direction with the same program
  partners as in RNA) and `paint` perturbations shift morphology; edge wells get an intensity offset;
  plate P2 an offset on every feature.

The metrics must recover it: hits precision/recall >= 0.9 per arm (mAP and E-distance), controls not
called, edge effect detected and reduced by correction, plates predictable from raw controls and not
after normalisation, concordance significant with shared programs and not without.
"""

from __future__ import annotations

from dataclasses import dataclass

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from config_values import SCHEMA

from pairedscreen import columns as C
from pairedscreen.expression import log1p_cp10k
from pairedscreen.modalities import rna_modality
from pairedscreen.paint import aggregate as A
from pairedscreen.paint import profiles as P
from pairedscreen.pair.datasheet import build_datasheet, validate_datasheet
from pairedscreen.plate import edge_mask
from pairedscreen.quality import batch, concordance, effect, position, replicate, truth
from pairedscreen.quality.summary import summarize_hits
from pairedscreen.quality.units import replicate_pseudobulks
from pairedscreen.rna.pseudobulk import pseudobulk

NPERM = 200
CLASSES = {"both": 12, "rna": 4, "paint": 4, "neither": 6}
N_CTRL = 4
N_GENES, PROGRAM_SIZE = 300, 15
PAINT_FEATURES = ([f"Cells_Intensity_MeanIntensity_F{i}" for i in range(10)]
                  + [f"Nuclei_AreaShape_F{i}" for i in range(10)]
                  + [f"Cytoplasm_Texture_Contrast_F{i}" for i in range(10)])
EDGE_OFFSET = 1.0          # added to Cells_Intensity features of edge-well cells
WELLS_384 = [f"{chr(65 + r)}{c + 1:02d}" for r in range(16) for c in range(24)]


@dataclass
class Screen:
    truth: pd.DataFrame         # perturbation_id, effect_class, program, rna_active, paint_active, is_control
    registry: pd.DataFrame
    rna_cells: ad.AnnData
    paint_cells: pd.DataFrame
    paint_wells: pd.DataFrame   # truth: plate, well, is_edge, perturbation_id, edge_multiplier


def _registry() -> pd.DataFrame:
    rows = []
    k = 0
    for cls, n in CLASSES.items():
        for j in range(n):
            prog = j // 3 if cls == "both" else -1
            rows.append({"perturbation_id": f"TGT{k:02d}", "effect_class": cls, "program": prog})
            k += 1
    n_shared = CLASSES["both"] // 3
    private = n_shared
    for r in rows:
        if r["effect_class"] in ("rna", "paint"):
            r["program"] = private
            private += 1
    rows += [{"perturbation_id": f"NTC_{i + 1}", "effect_class": "control", "program": -1}
             for i in range(N_CTRL)]
    t = pd.DataFrame(rows)
    t["is_control"] = t.effect_class == "control"
    t["rna_active"] = t.effect_class.isin(["both", "rna"])
    t["paint_active"] = t.effect_class.isin(["both", "paint"])
    t["perturbation_type"] = np.where(t.is_control, "control", "CRISPRi")
    t["target_gene"] = np.where(t.is_control, "", t.perturbation_id)
    t["control_type"] = np.where(t.is_control, "non-targeting", "")
    return t


def _rna(rng: np.random.Generator, t: pd.DataFrame, shared: bool, cells_per: int = 60) -> ad.AnnData:
    n_prog = int(t.program.max()) + 1
    mu = np.exp(rng.normal(0, 1.0, N_GENES))
    mu = mu / mu.sum() * 2500
    targets = {p: 10 + i for i, p in enumerate(t.perturbation_id[~t.is_control])}   # target gene index
    for p, g in targets.items():
        cls = t.set_index("perturbation_id").loc[p, "effect_class"]
        mu[g] = 0.0 if cls == "paint" else 8.0                                          # paint: unexpressed
    pool = np.arange(60, N_GENES)
    programs = [rng.choice(pool, PROGRAM_SIZE, replace=False) for _ in range(n_prog)]
    batch_genes = rng.choice(pool, 30, replace=False)
    x_rows, obs = [], []
    for r in t.itertuples():
        for c in range(cells_per):
            lib = "L1" if c % 2 == 0 else "L2"
            m = mu.copy()
            if r.effect_class in ("both", "rna"):
                m[targets[r.perturbation_id]] *= 0.15
                m[programs[r.program]] *= 2 ** 1.5
            if lib == "L2":
                m[batch_genes] *= 1.25
            x_rows.append(rng.poisson(m * np.exp(rng.normal(0, 0.25))))
            obs.append({"perturbation": r.perturbation_id,
                        "guide_ids": f"{r.perturbation_id}-g{c % 4 // 2 + 1}",
                        "library": lib, "batch": lib, "pass_qc": True, "is_control": bool(r.is_control)})
    obs = pd.DataFrame(obs, index=[f"{o['library']}_{i:06d}" for i, o in enumerate(obs)])
    return ad.AnnData(X=sp.csr_matrix(np.array(x_rows, dtype=np.int64)), obs=obs,
                      var=pd.DataFrame(index=[f"GENE{i:04d}" for i in range(N_GENES)]))


def _paint(rng: np.random.Generator, t: pd.DataFrame, shared: bool, plate_offset: float = 1.0,
           cells_per_well: int = 25) -> tuple[pd.DataFrame, pd.DataFrame]:
    n_prog = int(t.program.max()) + 1
    dirs = rng.normal(size=(n_prog, len(PAINT_FEATURES)))
    dirs = dirs / np.linalg.norm(dirs, axis=1, keepdims=True) * 4.0        # |shift| = 4 SD across features
    if not shared:                                   # paint partners of `both` perturbations unrelated to RNA
        dirs_both = rng.normal(size=(CLASSES["both"], len(PAINT_FEATURES)))
        dirs_both = dirs_both / np.linalg.norm(dirs_both, axis=1, keepdims=True) * 4.0
    plate_shift = {"P1": np.zeros(len(PAINT_FEATURES)),
                   "P2": rng.normal(size=len(PAINT_FEATURES)) * plate_offset}
    intensity = np.array([f.startswith("Cells_Intensity") for f in PAINT_FEATURES])
    cells, wells_truth = [], []
    both_ids = t.perturbation_id[t.effect_class == "both"].tolist()
    for plate in ("P1", "P2"):
        layout = []
        for r in t.itertuples():
            layout += [r.perturbation_id] * (10 if r.is_control else 3)
        wells = rng.choice(WELLS_384, len(layout), replace=False)
        edge = edge_mask(wells, (16, 24))
        for w, pid, e in zip(wells, layout, edge, strict=True):
            r = t.set_index("perturbation_id").loc[pid]
            shift = np.zeros(len(PAINT_FEATURES))
            if r.effect_class in ("both", "paint"):
                own = shared or r.effect_class != "both"
                shift = dirs[r.program] if own else dirs_both[both_ids.index(pid)]
            well_noise = rng.normal(0, 0.3, len(PAINT_FEATURES))
            base = 5.0 + shift + plate_shift[plate] + well_noise + EDGE_OFFSET * intensity * e
            x = base + rng.normal(0, 1.0, (cells_per_well, len(PAINT_FEATURES)))
            df = pd.DataFrame(x.astype(np.float32), columns=PAINT_FEATURES)
            df["plate"], df["well"], df["site"] = plate, w, 1
            df["object_id"] = np.arange(cells_per_well) + 1
            df["perturbation_id"], df["batch"] = pid, f"batch_{plate}"
            cells.append(df)
            wells_truth.append({"plate": plate, "well": w, "is_edge": bool(e), "perturbation_id": pid,
                                "edge_multiplier": 1.0 + EDGE_OFFSET / 5.0 if e else 1.0})
    return pd.concat(cells, ignore_index=True), pd.DataFrame(wells_truth)


def make_screen(seed: int = 0, *, shared: bool = True, plate_offset: float = 1.0) -> Screen:
    rng = np.random.default_rng(seed)
    t = _registry()
    reg = t[["perturbation_id", "perturbation_type", "target_gene", "is_control", "control_type"]]
    paint_cells, paint_wells = _paint(rng, t, shared, plate_offset)
    return Screen(t, reg, _rna(rng, t, shared), paint_cells, paint_wells)


@pytest.fixture(scope="module")
def screen() -> Screen:
    return make_screen(0)


@pytest.fixture(scope="module")
def paint_profiles(screen, tmp_path_factory):
    d = tmp_path_factory.mktemp("plates")
    paths = []
    for plate, df in screen.paint_cells.groupby("plate"):
        paths.append(d / f"{plate}.parquet")
        df.to_parquet(paths[-1], index=False)
    return P.build_profiles(paths, registry=screen.registry, position_correction="all",
                            aggregate=SCHEMA["profiles.aggregate"], normalize=SCHEMA["profiles.normalize"],
                            feature_select=SCHEMA["profiles.feature_select"],
                            outlier_cutoff=SCHEMA["profiles.outlier_cutoff"],
                            blocklist=SCHEMA["profiles.blocklist"])


@pytest.fixture(scope="module")
def rna_activity(screen):
    rep = replicate_pseudobulks(screen.rna_cells, min_cells=5, max_splits=3, seed=0)
    feats = replicate.rna_features(rep.X, rep.obs.is_control.to_numpy(), n_top=200)
    meta = rep.obs[["perturbation", "guide", "library", "is_control"]].reset_index(drop=True)
    return rep, feats, replicate.phenotypic_activity(feats, meta, null_size=NPERM, seed=0)


@pytest.fixture(scope="module")
def paint_activity(paint_profiles):
    prof = paint_profiles.profiles
    feats = C.feature_columns(prof)
    meta = pd.DataFrame({"perturbation": prof[C.PERT].astype(str), "is_control": prof[C.IS_CONTROL],
                         "plate": prof[C.PLATE]})
    x = replicate.paint_features(prof, feats, pca_variance=SCHEMA["quality.paint_pca_variance"])
    return replicate.phenotypic_activity(x, meta, null_size=NPERM, seed=0)


def _check_recovery(calls: pd.DataFrame, t: pd.DataFrame, arm: str) -> dict:
    rec = truth.hit_recovery(calls, t, f"{arm}_active", alpha=SCHEMA["quality.alpha"])
    assert rec["n_scored"] == len(t)
    assert rec["precision"] >= 0.9 and rec["recall"] >= 0.9, rec
    assert rec["controls_called"] == 0
    return rec


def test_replicate_map_recovers_hits_rna(screen, rna_activity):
    _check_recovery(rna_activity[2], screen.truth, "rna")


def test_replicate_map_recovers_hits_paint(screen, paint_activity):
    _check_recovery(paint_activity, screen.truth, "paint")


def test_guide_consistency_rna(screen, rna_activity):
    rep, feats, _ = rna_activity
    meta = rep.obs[["perturbation", "guide", "is_control"]].reset_index(drop=True)
    cons = replicate.consistency(feats, meta, diff_col="guide", null_size=NPERM, seed=0)
    active = set(screen.truth.perturbation_id[screen.truth.rna_active])
    called = set(cons.perturbation[cons.q_value < 0.05])
    assert len(called & active) >= 0.9 * len(active)
    assert not set(cons.perturbation) & set(screen.truth.perturbation_id[screen.truth.is_control])


def test_edistance_recovers_hits_rna_cells(screen):
    rna = screen.rna_cells
    x = log1p_cp10k(rna.X).toarray()
    emb = effect.pca_embedding(x, rna.obs.is_control.to_numpy(), n_comps=20, seed=SCHEMA["quality.seed"])
    rna_e = effect.edistance_table(emb, rna.obs.perturbation.to_numpy(), rna.obs.is_control.to_numpy(),
                                   n_permutations=NPERM, max_cells=120, seed=SCHEMA["quality.seed"])
    _check_recovery(rna_e, screen.truth, "rna")

def test_edistance_recovers_hits_paint_wells(screen, paint_profiles):
    # paint: wells are the experimental unit (cells of a well share its well-level noise; testing cells
    # would be pseudo-replication and calls every perturbation, controls included)
    prof = paint_profiles.profiles
    feats = C.feature_columns(prof)
    paint_e = effect.edistance_table(prof[feats].to_numpy(), prof[C.PERT].to_numpy(),
                                     prof[C.IS_CONTROL].to_numpy(), n_permutations=NPERM, min_cells=3,
                                     seed=SCHEMA["quality.seed"], max_cells=SCHEMA["quality.max_cells"])
    _check_recovery(paint_e, screen.truth, "paint")


def test_edge_effect_detected_and_reduced(screen, paint_profiles):
    # normalised, not position-corrected
    raw, _ = P.normalize_plates(paint_profiles.wells, method=SCHEMA["profiles.normalize"])
    before = position.position_effects(raw, PAINT_FEATURES, n_permutations=NPERM, seed=SCHEMA["quality.seed"])
    after = position.position_effects(paint_profiles.profiles, n_permutations=NPERM,
                                      seed=SCHEMA["quality.seed"])
    sb, sa = position.summarize(before,
                                alpha=SCHEMA["quality.alpha"]), position.summarize(after,
                                                                                   alpha=SCHEMA["quality.alpha"])
    assert sb["edge_detected"] and not sa["edge_detected"]
    grp_b = before.set_index(["plate", "feature_group"])
    grp_a = after.set_index(["plate", "feature_group"])
    for plate in ("P1", "P2"):
        assert grp_b.loc[(plate, "Cells_Intensity"), "edge_p_value"] < 0.05
        assert grp_b.loc[(plate, "Cells_Intensity"), "edge_shift"] > 0
        assert grp_a.loc[(plate, "all"), "r2_edge"] < 0.5 * grp_b.loc[(plate, "all"), "r2_edge"]
        # features without a planted edge effect show none
        assert grp_b.loc[(plate, "Nuclei_AreaShape"), "edge_p_value"] > 0.01
    rec = truth.edge_recovery(screen.paint_wells, sb["edge_detected"])
    assert rec["planted"] and rec["detected"] and rec["edge_definition_agreement"] == 1.0


def test_batch_predictability(screen, paint_profiles):
    wells = paint_profiles.wells
    ctrl = wells[wells[C.IS_CONTROL]]
    raw = batch.batch_predictability(ctrl[PAINT_FEATURES].to_numpy(), ctrl[C.PLATE].to_numpy(),
                                     n_permutations=NPERM, seed=SCHEMA["quality.seed"])
    assert raw["accuracy"] > 0.9 and raw["p_value"] < 0.05 and raw["chance"] < 0.7
    prof = paint_profiles.profiles
    pc = prof[prof[C.IS_CONTROL]]
    normed = batch.batch_predictability(pc[C.feature_columns(prof)].to_numpy(), pc[C.PLATE].to_numpy(),
                                        n_permutations=NPERM, seed=SCHEMA["quality.seed"])
    assert normed["p_value"] > 0.05
    rna = screen.rna_cells
    rc = rna[rna.obs.is_control.to_numpy()]
    x = log1p_cp10k(rc.X).toarray()
    top = np.argsort(x.mean(axis=0))[::-1][:100]                  # the 100 most expressed genes
    lib = batch.batch_predictability(x[:, top], rc.obs.library.to_numpy(), n_permutations=NPERM,
                                     seed=SCHEMA["quality.seed"])
    assert lib["p_value"] < 0.05 and lib["accuracy"] > lib["chance"]


def _arm_matrices(s: Screen, prof: P.ProfileResult) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    ids = s.registry.perturbation_id.tolist()
    pb = rna_modality(pseudobulk(s.rna_cells, order=ids), s.registry)
    cons = prof.consensus.set_index(C.PERT).reindex(ids)
    return pb.X, cons[C.feature_columns(prof.consensus)].to_numpy(), s.registry.is_control.to_numpy()


def test_concordance_significant_with_shared_programs(screen, paint_profiles):
    rna, paint, ctrl = _arm_matrices(screen, paint_profiles)
    res = concordance.concordance(rna, paint, ctrl, n_permutations=NPERM, seed=SCHEMA["quality.seed"])
    assert res["n_perturbations"] == len(screen.truth) - N_CTRL
    assert res["mantel_p"] < 0.05 and res["cka_p"] < 0.05 and res["mantel_r"] > 0


def test_concordance_not_significant_without_shared_programs(tmp_path):
    s = make_screen(1, shared=False)
    prof = P.build_profiles(wells=A.aggregate_wells(P.harmonize_metadata(s.paint_cells, s.registry),
                                                    operation=SCHEMA["profiles.aggregate"]),
                            position_correction=False,
                                  aggregate=SCHEMA["profiles.aggregate"],
                                  normalize=SCHEMA["profiles.normalize"],
                                  feature_select=SCHEMA["profiles.feature_select"],
                                  outlier_cutoff=SCHEMA["profiles.outlier_cutoff"],
                                  blocklist=SCHEMA["profiles.blocklist"])
    rna, paint, ctrl = _arm_matrices(s, prof)
    res = concordance.concordance(rna, paint, ctrl, n_permutations=NPERM, seed=SCHEMA["quality.seed"])
    assert res["mantel_p"] > 0.05 and res["cka_p"] > 0.05


def _truth_dir(tmp_path, s: Screen):
    tdir = tmp_path / "truth"
    tdir.mkdir(exist_ok=True)
    s.truth.to_csv(tdir / "perturbations.tsv", sep="\t", index=False)
    s.paint_wells.to_csv(tdir / "paint_wells.tsv", sep="\t", index=False)
    return tdir


@pytest.mark.parametrize("shared", [True, False])
def test_concordance_recovery_on_planted_shared_programs(tmp_path, shared):
    """Restricted to the planted `both` perturbations (4 programs of 3), the datasheet's truth block finds
    the shared programs when planted and stays quiet when each perturbation has a private program."""
    s = make_screen(0 if shared else 1, shared=shared)
    prof = P.build_profiles(wells=A.aggregate_wells(P.harmonize_metadata(s.paint_cells, s.registry),
                                                    operation=SCHEMA["profiles.aggregate"]),
                            position_correction=False,
                                  aggregate=SCHEMA["profiles.aggregate"],
                                  normalize=SCHEMA["profiles.normalize"],
                                  feature_select=SCHEMA["profiles.feature_select"],
                                  outlier_cutoff=SCHEMA["profiles.outlier_cutoff"],
                                  blocklist=SCHEMA["profiles.blocklist"])
    rna, paint, ctrl = _arm_matrices(s, prof)
    rec = truth.concordance_recovery(_truth_dir(tmp_path, s), s.registry.perturbation_id.tolist(), rna, paint,
                                     ctrl, n_permutations=NPERM,
                                     alpha=SCHEMA["quality.alpha"], seed=SCHEMA["quality.seed"])
    both = s.truth.loc[s.truth.effect_class == "both", "perturbation_id"].tolist()
    assert rec["perturbations"] == both and rec["n_perturbations"] == CLASSES["both"]
    assert rec["significant"] is shared and (rec["mantel_p"] < 0.05) is shared
    if shared:
        assert rec["n_programs"] == CLASSES["both"] // 3 and rec["cka_p"] < 0.05


def test_truth_recovery_into_datasheet(tmp_path, screen, rna_activity, paint_activity, paint_profiles):
    tdir = tmp_path / "truth"
    tdir.mkdir()
    screen.truth.to_csv(tdir / "perturbations.tsv", sep="\t", index=False)
    screen.paint_wells.to_csv(tdir / "paint_wells.tsv", sep="\t", index=False)
    rec = truth.truth_recovery(tdir, {"rna": rna_activity[2], "paint": paint_activity}, edge_detected=True,
                               alpha=SCHEMA["quality.alpha"])
    rna, paint, ctrl = _arm_matrices(screen, paint_profiles)
    ids = screen.registry.perturbation_id.tolist()
    rec["concordance"] = truth.concordance_recovery(tdir, ids, rna, paint, ctrl, n_permutations=NPERM,
                                                    alpha=SCHEMA["quality.alpha"],
                                                    seed=SCHEMA["quality.seed"])
    for arm in ("rna", "paint"):
        assert rec[arm]["precision"] >= 0.9 and rec[arm]["recall"] >= 0.9
    assert rec["edge"]["correct"]
    sheet = build_datasheet(
        config={"truth_dir": str(tdir), "quality": {"permutations": NPERM, "seed": 0}},
        inputs={"truth": tdir},
        metrics={"replicate": {"rna": summarize_hits(rna_activity[2], alpha=SCHEMA["quality.alpha"]),
                               "paint": summarize_hits(paint_activity, alpha=SCHEMA["quality.alpha"])}},
        truth_recovery=rec)
    validate_datasheet(sheet)
    assert sheet["truth_recovery"]["paint"]["recall"] == rec["paint"]["recall"]
