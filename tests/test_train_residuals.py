"""cell-load's on-target knockdown filter (cell_load.utils.data_utils.filter_on_target_knockdown) run on the
cell-load export of a simulated screen: it keeps exactly the cells our stored residuals
(pairedscreen.train.residuals) say it keeps, and the residuals recover the planted knockdown."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import pytest
from _simulated_cells import simulated_libraries
from config_values import SCHEMA

from pairedscreen.train import splits
from pairedscreen.train.residuals import CELL_RESIDUAL, GENE_NAME, PERTURBATION_RESIDUAL
from pairedscreen.train.rna_export import export_rna

cell_load = pytest.importorskip("cell_load.utils.data_utils")

PARAMS = {k: SCHEMA[f"train.{k}"] for k in ("seed", "val_fraction", "test_fraction", "cell_type",
                                            "control_label", "n_hvg")}
RESIDUAL, CELL, MIN_CELLS = 0.30, 0.50, 10   # cell-load's default thresholds; a min_cells that bites


@pytest.fixture(scope="module")
def export(tmp_path_factory):
    libs, registry, truth = simulated_libraries()
    tmp = tmp_path_factory.mktemp("residuals")
    files = []
    for a in libs:
        files.append(tmp / f"{a.obs['library'].iloc[0]}.h5ad")
        a.write_h5ad(files[-1])
    sp_ = splits.assign_splits(registry, seed=PARAMS["seed"], val_fraction=PARAMS["val_fraction"],
                               test_fraction=PARAMS["test_fraction"])
    hold = splits.batch_holdout(pd.DataFrame({"library_id": [a.obs["library"].iloc[0] for a in libs],
                                              "batch": [a.obs["batch"].iloc[0] for a in libs]}),
                                pd.DataFrame({"plate_id": [], "batch": []}), "auto")
    export_rna(files, registry, sp_, hold, PARAMS, tmp / "export.h5ad", block_nnz=5000)
    return ad.read_h5ad(tmp / "export.h5ad"), truth


def test_cell_load_filter_keeps_what_the_residuals_say(export):
    adata, _ = export
    assert (adata.var[GENE_NAME] == adata.var_names).all()
    ctrl = adata.obs["perturbation"].astype(str) == PARAMS["control_label"]
    assert adata.obs.loc[ctrl, [PERTURBATION_RESIDUAL, CELL_RESIDUAL]].isna().all().all()
    kept = cell_load.filter_on_target_knockdown(
        adata, perturbation_column="perturbation", control_label=PARAMS["control_label"],
        residual_expression=RESIDUAL, cell_residual_expression=CELL, min_cells=MIN_CELLS,
        var_gene_name=GENE_NAME)
    obs = adata.obs
    ok = (obs[PERTURBATION_RESIDUAL] < RESIDUAL) & (obs[CELL_RESIDUAL] < CELL)
    sizes = obs.loc[ok, "perturbation"].astype(str).value_counts()
    ok &= obs["perturbation"].astype(str).map(sizes).fillna(0).to_numpy() >= MIN_CELLS
    want = set(obs.index[ok | ctrl])
    n_pert = obs.loc[ok, "perturbation"].nunique()
    print(f"\ncell-load filter: {adata.n_obs} -> {kept.n_obs} cells, {n_pert} perturbations kept "
          f"(ours predicted {len(want)} cells)")
    assert set(kept.obs_names) == want
    assert 0 < n_pert < obs.loc[~ctrl, "perturbation"].nunique()   # some kept, some dropped


def test_residuals_recover_the_planted_knockdown(export):
    """Perturbation-level residual of the RNA-active perturbations ~ the planted remaining fraction
    (0.15 by default), of the others ~ 1."""
    adata, truth = export
    per = adata.obs.groupby("perturbation", observed=True)[PERTURBATION_RESIDUAL].first()
    t = truth.set_index("target_gene")
    active = t.loc[per.index.intersection(t.index), "rna_active"]
    planted = float(t["knockdown_remaining"].dropna().iloc[0])
    print("\nresidual_expression by target:\n" + pd.DataFrame({"residual": per, "active": active})
          .dropna().to_string())
    assert np.all(np.abs(per[active.index[active]] - planted) < 0.1)
    assert np.all(per[active.index[~active]] > 0.6)
