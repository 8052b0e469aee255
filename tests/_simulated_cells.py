"""Per-library cells of a simulated screen straight from the simulator's true counts (no FASTQs, no kb):
the planted singlets with their planted perturbation, and the RNA truth (planted DE genes, knockdown)."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp

from pairedscreen.simulate import build_spec, make_registry
from pairedscreen.simulate.reference import make_whitelist
from pairedscreen.simulate.rna import make_gene_model, simulate_droplets, truth_table


def simulated_libraries(n_libraries: int = 2, cells: int = 900):
    """Per-library cells AnnData (planted singlets only, perturbation = the planted one) + RNA truth."""
    spec = build_spec("tiny", overrides={"rna.n_libraries": n_libraries, "rna.cells_per_library": cells,
                                         "rna.empty_droplets_per_library": 0})
    reg = make_registry(spec)
    model = make_gene_model(reg, spec)
    wl = make_whitelist(spec, n=4 * cells)
    perts = reg.perturbations
    is_ctrl = dict(zip(perts["perturbation_id"], perts["effect_class"] == "control", strict=True))
    gpert = reg.guides["perturbation_id"].to_numpy()
    libs = []
    for lib in range(n_libraries):
        d = simulate_droplets(reg, spec, model, lib, wl)
        keep = np.array([k == "cell" and len(g) == 1 for k, g in zip(d.kind, d.guides, strict=True)])
        pert = np.array([gpert[g[0]] for g, k in zip(d.guides, keep, strict=True) if k])
        obs = pd.DataFrame({"library": d.library_id, "batch": d.batch, "perturbation": pert,
                            "barcode": [f"BC{i:05d}" for i in range(len(pert))],
                            "is_control": [is_ctrl[p] for p in pert], "pass_qc": True,
                            "predicted_doublet": False},
                           index=[f"{d.library_id}_{i}" for i in range(len(pert))])
        var = pd.DataFrame({"gene_id": reg.genes["gene_id"].to_numpy()},
                           index=reg.genes["gene_name"].to_numpy())
        libs.append(ad.AnnData(X=sp.csr_matrix(d.counts[keep].astype(np.int64)), obs=obs, var=var))
    registry = pd.DataFrame({"perturbation_id": perts["perturbation_id"],
                             "target_gene": perts["target_gene"],
                             "is_control": perts["effect_class"] == "control"})
    truth = truth_table(reg, spec, model).merge(perts[["perturbation_id", "target_gene"]])
    return libs, registry, truth
