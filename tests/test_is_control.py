"""One boolean rule for `is_control`: a registry writing T / yes / 1 / true (and f / no / 0 / False) gives the
same controls in the RNA arm, the paint arm and the pair, as the sheet validation accepted them.

Stage-level functions on the planted screen of test_quality_recovery: guide assignment (RNA cells' control
flag), rna_merge (pseudobulk, knockdown), profiles (paint control wells) and pair (h5mu, cell index)."""

from __future__ import annotations

import anndata as ad
import mudata as md
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from config_values import SCHEMA
from test_quality_recovery import make_screen
from workdir import minimal_workdir, write_tsv

from pairedscreen import columns as C
from pairedscreen.config import load_config, resolve_section
from pairedscreen.paint import aggregate as A
from pairedscreen.paint.stages import run_profiles
from pairedscreen.pair.stages import run_pair
from pairedscreen.rna import guides as G
from pairedscreen.rna.stages import run_rna_merge
from pairedscreen.sheets import load_screen, read_guides, read_registry

TRUE_SPELLINGS, FALSE_SPELLINGS = ["T", "yes", "1", "true"], ["f", "no", "0", "False"]


@pytest.fixture(scope="module")
def screen(tmp_path_factory):
    s = make_screen(4)
    wd = tmp_path_factory.mktemp("controls")
    reg = s.registry.copy()
    ctrl = reg["is_control"].to_numpy(bool)
    spell = np.empty(len(reg), dtype=object)
    spell[ctrl] = [TRUE_SPELLINGS[i % 4] for i in range(ctrl.sum())]
    spell[~ctrl] = [FALSE_SPELLINGS[i % 4] for i in range((~ctrl).sum())]
    reg["is_control"] = spell
    reg["target_gene"] = np.where(ctrl, "", reg["perturbation_id"])
    reg["control_type"] = np.where(ctrl, "non-targeting", "")
    (wd / "config").mkdir()
    reg.to_csv(wd / "config" / "perturbations.tsv", sep="\t", index=False)
    assert set(reg.loc[ctrl, "is_control"]) == set(TRUE_SPELLINGS)
    # one guide sheet row per guide the RNA cells carry (their ids name the perturbation)
    gids = sorted(set(s.rna_cells.obs["guide_ids"]))
    seqs = {g: "".join("ACGT"[(i >> (2 * k)) % 4] for k in range(20)) for i, g in enumerate(gids)}
    guides = pd.DataFrame({"id": gids, "name": gids, "read": "R2", "pattern": "^NNNNNNNNNN(BC)",
                           "sequence": [seqs[g] for g in gids], "feature_type": "CRISPR Guide Capture",
                           "target_gene_id": "", "target_gene_name": "",
                           "perturbation_id": [g.rsplit("-g", 1)[0] for g in gids]})
    guides.to_csv(wd / "config" / "guides.tsv", sep="\t", index=False)
    return s, wd, set(s.registry.loc[ctrl, "perturbation_id"])


def test_the_validation_reads_the_same_controls(screen):
    s, wd, controls = screen
    reg = read_registry(wd / "config" / "perturbations.tsv")
    assert reg["is_control"].dtype == bool
    assert set(reg.loc[reg["is_control"], "perturbation_id"]) == controls


def test_both_arms_and_the_pair_treat_the_same_perturbations_as_controls(screen, tmp_path):
    s, wd, controls = screen
    registry, guide_sheet = wd / "config" / "perturbations.tsv", wd / "config" / "guides.tsv"
    n_ctrl_cells = int(s.rna_cells.obs["perturbation"].isin(controls).sum())
    assert 0 < n_ctrl_cells < s.rna_cells.n_obs

    # RNA arm: guide assignment flags cells by the registry read through pairedscreen.sheets
    cells = s.rna_cells.copy()
    truth_pert = cells.obs["perturbation"].astype(str).to_numpy()
    guide_of = cells.obs["guide_ids"].astype(str).to_numpy()
    cells.obs = cells.obs.drop(columns=["perturbation", "is_control", "guide_ids"])
    names = sorted(set(guide_of))
    col = {g: j for j, g in enumerate(names)}
    umis = sp.csr_matrix((np.full(cells.n_obs, 20), (np.arange(cells.n_obs), [col[g] for g in guide_of])),
                         shape=(cells.n_obs, len(names)))
    guide_counts = ad.AnnData(X=umis, obs=pd.DataFrame(index=cells.obs_names), var=pd.DataFrame(index=names))
    called = G.assign_guides(cells, guide_counts, read_guides(guide_sheet), registry=read_registry(registry),
                             **{**resolve_section("rna")["guides"], "method": "threshold"})
    assert (called.obs["perturbation"].astype(str).to_numpy() == truth_pert).all()
    assert int(called.obs["is_control"].sum()) == n_ctrl_cells
    lib = tmp_path / "L1_cells.h5ad"
    called.write_h5ad(lib)
    res = tmp_path / "results"
    res.mkdir()
    run_rna_merge([lib], registry, 0.05, res / "rna_cells.h5ad", res / "pseudobulk.h5ad",
                  res / "knockdown.tsv", on_empty=SCHEMA["on_empty"])
    merged = ad.read_h5ad(res / "rna_cells.h5ad")
    assert int(merged.obs["is_control"].sum()) == n_ctrl_cells
    kd = pd.read_csv(res / "knockdown.tsv", sep="\t")
    assert not set(kd["perturbation_id"]) & controls          # controls are not knockdown targets
    assert set(kd["perturbation_id"]) == set(s.registry["perturbation_id"]) - controls

    # paint arm: control wells of the profiles
    paint_paths = []
    for plate, df in s.paint_cells.groupby("plate"):
        cells_p = df.rename(columns={"plate": C.PLATE, "well": C.WELL, "site": C.SITE,
                                     "object_id": C.OBJECT_NUMBER, "perturbation_id": C.PERT,
                                     "batch": C.BATCH})
        paint_paths.append(tmp_path / f"{plate}_cells.parquet")
        cells_p.to_parquet(paint_paths[-1], index=False)
        A.aggregate_wells(cells_p, operation=SCHEMA["profiles.aggregate"]).rename(
            columns={C.N_CELLS: C.COUNT_CELLS}).to_parquet(
            tmp_path / f"{plate}_wells.parquet", index=False)
    wells = sorted(tmp_path.glob("*_wells.parquet"))
    run_profiles(wells, registry, resolve_section("profiles"), res / "profiles.parquet",
                 res / "consensus.parquet", on_empty=SCHEMA["on_empty"])
    prof = pd.read_parquet(res / "profiles.parquet")
    truth_wells = s.paint_cells.drop_duplicates(["plate", "well"])
    n_ctrl_wells = int(truth_wells["perturbation_id"].isin(controls).sum())
    assert int(prof[C.IS_CONTROL].sum()) == n_ctrl_wells > 0
    assert set(prof.loc[prof[C.IS_CONTROL], C.PERT]) == controls

    # pair: the same controls in the h5mu and the cell index
    qt = pd.DataFrame({"perturbation_id": s.registry["perturbation_id"]})
    qt.to_csv(res / "quality.tsv", sep="\t", index=False)
    out = tmp_path / "paired"
    out.mkdir()
    run_pair(res / "pseudobulk.h5ad", res / "consensus.parquet", res / "quality.tsv", registry,
             res / "rna_cells.h5ad", paint_paths, out / "p.h5mu", out / "rna.h5ad", out / "paint.h5ad",
             out / "cell_index.tsv")
    with md.set_options(pull_on_update=False):
        mdata = md.read_h5mu(out / "p.h5mu")
    assert set(mdata.obs_names[mdata.obs["is_control"].astype(bool).to_numpy()]) == controls
    index = pd.read_csv(out / "cell_index.tsv", sep="\t")
    rna, paint = index[index.modality == "rna"], index[index.modality == "paint"]
    assert int(rna["is_control"].sum()) == n_ctrl_cells
    assert int(paint["is_control"].sum()) == int(s.paint_cells["perturbation_id"].isin(controls).sum())


def test_load_screen_and_stage_readers_agree(tmp_path):
    """`load_screen` (what the workflow validates) and `read_registry` (what a stage reads) give the
    same booleans for every spelling."""
    wd = minimal_workdir(tmp_path / "screen")
    rows = [[f"P{i}", "CRISPRi", "", v, ""] for i, v in enumerate(TRUE_SPELLINGS + FALSE_SPELLINGS)]
    write_tsv(wd / "config" / "perturbations.tsv",
              ["perturbation_id", "perturbation_type", "target_gene", "is_control", "control_type"], rows)
    write_tsv(wd / "config" / "guides.tsv",
              ["id", "name", "read", "pattern", "sequence", "feature_type", "perturbation_id"],
              [["g1", "g1", "R2", "^NNNNNNNNNN(BC)", "ACGTACGTACGTACGTACGT", "CRISPR Guide Capture", "P0"]])
    write_tsv(wd / "config" / "plate_maps" / "P1.tsv", ["well", "perturbation_id", "replicate"],
              [["A1", "P0", 1], ["b2", "P4", 1]])
    cfg = load_config(wd / "config" / "config.yaml")
    screen = load_screen(cfg, wd)
    flags = list(screen.perturbations["is_control"])
    assert flags == [True] * 4 + [False] * 4
    assert flags == list(read_registry(wd / "config" / "perturbations.tsv")["is_control"])
    assert list(screen.plate_maps["P1"]["well"]) == ["A01", "B02"]
