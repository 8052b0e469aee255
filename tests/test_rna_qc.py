"""QC: our wrapper adds flags but leaves scanpy's calculate_qc_metrics numbers intact; scrublet flags."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scanpy as sc
import scipy.sparse as sp
import zarr
from config_values import SCHEMA
from sklearn.metrics import roc_auc_score

from pairedscreen.rna.qc import compute_qc, flag_doublets


def _read_10k(folder) -> ad.AnnData:
    z = zarr.open(str(folder / "10x-10k-subset.zarr"), mode="r")
    obs = pd.DataFrame(index=[b.decode() for b in z["obs"][:]["index"]])
    var_rec = z["var"][:]
    var = pd.DataFrame({"gene_ids": [b.decode() for b in var_rec["gene_ids"]]},
                       index=[b.decode() for b in var_rec["index"]])
    var.index = ad.utils.make_index_unique(var.index)
    x = sp.csr_matrix(np.asarray(z["X"][:]))
    return ad.AnnData(X=x, obs=obs, var=var)


@pytest.mark.realdata
@pytest.mark.parametrize("mt_prefix,ribo", [("MT-", ["RPL", "RPS"]), ("Gm", ["Rp", "Sn"])])
def test_qc_metrics_equal_scanpy(shared_data, mt_prefix, ribo):
    """10k real cells x 1000 mouse genes. The default prefixes match no gene in this chr1-start panel
    (so pct_counts_mt is 0 everywhere); the second case uses prefixes that do match to exercise the
    percentages. Reference: a direct sc.pp.calculate_qc_metrics call on the same gene sets."""
    adata = _read_10k(shared_data("scrna_10x_processed_matrices_scanpy"))
    adata.obs["library"] = np.where(np.arange(adata.n_obs) < 6000, "L1", "L2")
    ours = compute_qc(adata, mt_prefix=mt_prefix, ribo_prefixes=ribo, nmads_counts=5, nmads_genes=5,
                      nmads_mt=3, max_pct_mt=20.0)

    ref = adata.copy()
    upper = ref.var_names.str.upper()
    ref.var["mt"] = upper.str.startswith(mt_prefix.upper())
    ref.var["ribo"] = np.logical_or.reduce([upper.str.startswith(p.upper()) for p in ribo])
    sc.pp.calculate_qc_metrics(ref, qc_vars=["mt", "ribo"], inplace=True)
    ref_cols = [c for c in ref.obs.columns if c != "library"]
    worst = 0.0
    for col in ref_cols:
        np.testing.assert_array_equal(ours.obs[col].to_numpy(), ref.obs[col].to_numpy(), err_msg=col)
        worst = max(worst, float(np.max(np.abs(ours.obs[col].to_numpy() - ref.obs[col].to_numpy()))))
    for col in [c for c in ref.var.columns]:
        np.testing.assert_array_equal(ours.var[col].to_numpy(), ref.var[col].to_numpy(), err_msg=col)
    flags = ours.obs[["qc_fail_counts", "qc_fail_genes", "qc_fail_mt"]]
    print(f"\nQC ({mt_prefix}, {ribo}): {len(ref_cols)} scanpy obs columns identical "
          f"(max |diff| {worst}), {int(ref.var['mt'].sum())} mt / {int(ref.var['ribo'].sum())} ribo genes, "
          f"mean pct_counts_mt {ref.obs['pct_counts_mt'].mean():.2f}; flagged {flags.sum().to_dict()}, "
          f"pass_qc {int(ours.obs['pass_qc'].sum())}/{ours.n_obs}")
    assert ours.n_obs == adata.n_obs                       # flagged only, nothing dropped
    assert (ours.obs["pass_qc"] == ~flags.any(axis=1)).all()
    # per-library thresholds, applied per library
    thr = ours.uns["qc_thresholds"]["by_group"]
    assert set(thr) == {"L1", "L2"}
    for lib, t in thr.items():
        m = (ours.obs["library"] == lib).to_numpy()
        tc = ours.obs["total_counts"].to_numpy()[m]
        inside = (tc >= t["total_counts_min"] - 1e-6) & (tc <= t["total_counts_max"] + 1e-6)
        np.testing.assert_array_equal(~inside, ours.obs["qc_fail_counts"].to_numpy()[m])
    np.testing.assert_array_equal(adata.X.toarray(), ours.X.toarray())   # input counts untouched


def test_mt_flags_and_doublets_on_planted_data():
    """Planted: 5% cells with 40% mitochondrial reads; 8% doublets = sums of two cells of distinct types."""
    rng = np.random.default_rng(0)
    n, g = 1500, 400
    names = [f"MT-{i}" for i in range(10)] + [f"RPL{i}" for i in range(10)] + [f"G{i}" for i in range(g - 20)]
    types = rng.dirichlet(np.full(g, 0.2), size=6)
    types[:, :10] = 0.002
    types /= types.sum(1, keepdims=True)
    kind = rng.integers(0, 6, n)
    sizes = rng.poisson(2000, n)
    x = np.vstack([rng.multinomial(s, types[k]) for s, k in zip(sizes, kind, strict=True)])
    bad_mt = rng.choice(n, 75, replace=False)
    mt_prof = np.zeros(g)
    mt_prof[:10] = 0.1
    x[bad_mt] += np.vstack([rng.multinomial(1200, mt_prof) for _ in bad_mt])
    dbl = rng.choice(np.setdiff1d(np.arange(n), bad_mt), 120, replace=False)
    partner = rng.integers(0, n, len(dbl))
    partner = np.where(kind[partner] == kind[dbl], (partner + 1) % n, partner)
    x[dbl] = x[dbl] + x[partner]
    obs = pd.DataFrame({"library": "L1"}, index=[f"c{i}" for i in range(n)])
    adata = ad.AnnData(X=sp.csr_matrix(x), obs=obs, var=pd.DataFrame(index=names))
    out = flag_doublets(compute_qc(adata, max_pct_mt=20.0,
                                   mt_prefix=SCHEMA["rna.qc.mt_prefix"],
                                   ribo_prefixes=SCHEMA["rna.qc.ribo_prefixes"],
                                   nmads_counts=SCHEMA["rna.qc.nmads_counts"],
                                   nmads_genes=SCHEMA["rna.qc.nmads_genes"],
                                   nmads_mt=SCHEMA["rna.qc.nmads_mt"]), expected_rate=0.08,
                        knn=SCHEMA["rna.doublets.knn"])
    is_mt = np.zeros(n, bool)
    is_mt[bad_mt] = True
    is_dbl = np.zeros(n, bool)
    is_dbl[dbl] = True
    auc = roc_auc_score(is_dbl, out.obs["doublet_score"])
    mt_recall = out.obs["qc_fail_mt"].to_numpy()[is_mt].mean()
    mt_fp = out.obs["qc_fail_mt"].to_numpy()[~is_mt].mean()
    print(f"\nplanted: mt-outlier recall {mt_recall:.3f}, false-flag rate {mt_fp:.3f}; "
          f"doublet AUROC {auc:.3f}, "
          f"predicted {int(out.obs['predicted_doublet'].sum())} (planted {len(dbl)})")
    assert mt_recall == 1.0 and mt_fp < 0.01
    assert auc > 0.8
    assert out.n_obs == n and out.obs["predicted_doublet"].dtype == bool
    assert "threshold" in out.uns["doublets"]
