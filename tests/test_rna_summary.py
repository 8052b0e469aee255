"""The RNA aggregates' map-reduce equals the whole-matrix computation (issue 20).

Per-library summaries combined (:mod:`pairedscreen.rna.summary`) against pseudobulk / knockdown_table on the
merged cells; the streamed merged file (:mod:`pairedscreen.rna.merge`) against anndata's in-memory merge
(content digests); the bounded quality subsample (:mod:`pairedscreen.quality.subsample`) against the same
selection on the merged cells. Counts and knockdown statistics must be exact, the mean log1p CP10k within
float64 summation order (rtol 1e-12).
"""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from pairedscreen.digest import content_digest
from pairedscreen.expression import usable_cells
from pairedscreen.quality.subsample import bounded_cells, select
from pairedscreen.rna import summary
from pairedscreen.rna.knockdown import knockdown_table
from pairedscreen.rna.merge import write_merged_cells
from pairedscreen.rna.pseudobulk import merge_libraries, pseudobulk

GENES = [f"T{i}" for i in range(6)] + [f"G{i}" for i in range(60)]
REGISTRY = pd.DataFrame({
    "perturbation_id": ["P0", "P1", "P2", "P3", "P4", "P5", "PX", "NTC1", "NTC2"],
    "target_gene": ["T0", "T1", "T2", "T3", "T4", "T5", "ABSENT", None, None],
    "is_control": [False] * 7 + [True, True],
})


def _library(lib: str, seed: int, n: int, perts: list[str]) -> ad.AnnData:
    """Called cells as rna_cells writes them: counts CSR int32, the obs columns the stages read (categorical
    perturbation/guide_ids whose categories differ between libraries, barcodes that collide across
    libraries), obsm['guide_counts'] over the library's own guides, uns entries."""
    rng = np.random.default_rng(seed)
    labels = rng.choice(perts + ["multiple", "unassigned"], n)
    base = rng.gamma(1.5, 1.0, len(GENES))
    mean = np.tile(base / base.sum() * rng.integers(300, 2000, n)[:, None], 1)
    for k, p in enumerate(labels):
        if p.startswith("P") and p != "PX":
            mean[k, int(p[1])] *= 0.2
    x = sp.csr_matrix(rng.poisson(mean).astype(np.int32))
    guides = np.array([f"{p}-g{1 + int(rng.integers(2))}" if p[0] in "PN" else "" for p in labels])
    obs = pd.DataFrame({
        "barcode": [f"BC{int(i):05d}" for i in rng.choice(2000, n, replace=False)],
        "library": pd.Categorical([lib] * n), "batch": pd.Categorical([f"B{seed % 2}"] * n),
        "total_counts": np.asarray(x.sum(axis=1)).ravel().astype(np.int64),
        "pass_qc": rng.random(n) > 0.1, "doublet_score": rng.random(n),
        "predicted_doublet": rng.random(n) < 0.05,
        "guide_ids": pd.Categorical(guides), "n_guides": (guides != "").astype(np.int64),
        "perturbation": pd.Categorical(labels), "is_control": np.char.startswith(labels.astype(str), "NTC"),
    }, index=[f"{lib}_{b}" for b in range(n)])
    a = ad.AnnData(X=x, obs=obs, var=pd.DataFrame({"gene_id": [f"ENSG{i}" for i in range(len(GENES))],
                                                   "total_counts": np.asarray(x.sum(axis=0)).ravel()},
                                                  index=GENES))
    names = sorted({g for g in guides if g})
    a.obsm["guide_counts"] = sp.csr_matrix(rng.poisson(0.5, (n, len(names))).astype(np.int64))
    a.uns["guide_names"] = np.asarray(names[::-1])        # not sorted: the merge re-indexes onto the union
    a.uns["cell_calling"] = {"knee": float(1000 + seed), "fdr": 0.01}
    return a


@pytest.fixture(scope="module")
def screen(tmp_path_factory):
    """Three libraries (one without P5, one without any control cell) written as cells.h5ad, their
    summaries, and the merged cells as anndata merges them in memory."""
    root = tmp_path_factory.mktemp("mapreduce")
    perts = [["P0", "P1", "P2", "P3", "P4", "P5", "NTC1", "NTC2"], ["P0", "P1", "P2", "P3", "P4", "NTC1"],
             ["P0", "P1", "P2", "P5"]]
    libs = [_library(f"L{k + 1}", 11 + k, n, p) for k, (n, p) in enumerate(zip([400, 250, 120], perts,
                                                                                   strict=True))]
    cells, sums = [], []
    for a in libs:
        lib = str(a.obs["library"].iloc[0])
        cells.append(root / lib / "cells.h5ad")
        cells[-1].parent.mkdir()
        a.write_h5ad(cells[-1], compression="gzip")
        sums.append(root / lib / "summary.h5ad")
        summary.write_summary(summary.library_summary(ad.read_h5ad(cells[-1]), REGISTRY), sums[-1])
    merged = merge_libraries([ad.read_h5ad(p) for p in cells])
    merged.write_h5ad(root / "merged_in_memory.h5ad", compression="gzip")
    return {"root": root, "cells": cells, "summaries": sums,
            "merged": ad.read_h5ad(root / "merged_in_memory.h5ad")}


def test_streamed_merge_is_the_in_memory_merge(screen):
    out = screen["root"] / "merged_streamed.h5ad"
    n = write_merged_cells(screen["cells"], out)
    assert n == screen["merged"].n_obs
    assert content_digest(out) == content_digest(screen["root"] / "merged_in_memory.h5ad")
    back = ad.read_h5ad(out)
    assert (back.obsm["guide_counts"] != screen["merged"].obsm["guide_counts"]).nnz == 0
    assert back.uns["libraries"]["L3"]["cell_calling"]["knee"] == 1013.0


def test_streamed_merge_refuses_libraries_counted_against_other_genes(screen, tmp_path):
    a = ad.read_h5ad(screen["cells"][0])
    a.var_names = [f"X{g}" for g in a.var_names]
    a.write_h5ad(tmp_path / "other.h5ad")
    with pytest.raises(ValueError, match="genes differ"):
        write_merged_cells([screen["cells"][1], tmp_path / "other.h5ad"], tmp_path / "m.h5ad")
    assert not (tmp_path / "m.h5ad").exists()


def test_combined_pseudobulk_equals_the_whole_matrix(screen):
    order = list(REGISTRY["perturbation_id"])
    controls = {"NTC1", "NTC2"}
    whole = pseudobulk(screen["merged"], order=order, controls=controls)
    combined = summary.combine_pseudobulk(screen["summaries"], order=order, controls=controls)
    pd.testing.assert_frame_equal(combined.obs, whole.obs)
    np.testing.assert_array_equal(combined.layers["counts"], whole.layers["counts"])
    np.testing.assert_allclose(combined.X, whole.X, rtol=1e-12, atol=0)
    assert list(combined.var_names) == GENES
    # the invariant behind it: every usable cell is in exactly one perturbation's sum
    usable = sum(int(usable_cells(ad.read_h5ad(p)).sum()) for p in screen["cells"])
    assert combined.obs["n_cells"].sum() == usable


def test_combined_knockdown_equals_the_whole_matrix(screen):
    whole = knockdown_table(screen["merged"], REGISTRY)
    combined = summary.combine_knockdown(screen["summaries"], REGISTRY)
    pd.testing.assert_frame_equal(combined, whole)
    row = combined.set_index("perturbation_id")
    assert np.isnan(row.loc["PX", "pvalue"])                  # target gene not in the annotation
    assert not row.loc["PX", "measurable"]
    assert row.loc["PX", "n_cells"] == 0       # PX has no cells in any library either: both reasons
    assert row.loc["PX", "reason"] == ("target gene not in the reference annotation; "
                                       "fewer than 3 usable perturbed cells")
    assert row.drop(index="PX")["measurable"].all() and (row.drop(index="PX")["reason"] == "").all()
    assert row.loc["P3", "remaining_fraction"] < 0.5            # planted 0.2 remaining
    welch = summary.combine_knockdown(screen["summaries"], REGISTRY, test="welch")
    pd.testing.assert_frame_equal(welch, knockdown_table(screen["merged"], REGISTRY, test="welch"))


@pytest.mark.parametrize("max_cells", [5, 1000])
def test_bounded_subsample_is_the_merged_cells_selection(screen, max_cells):
    merged = screen["merged"]
    ids = list(REGISTRY["perturbation_id"])
    sub, record = bounded_cells(screen["cells"], ids, max_cells=max_cells, seed=3)
    usable = usable_cells(merged, categories=ids)
    keep = select(merged.obs["perturbation"].astype(str).to_numpy(), usable, max_cells, 3)
    assert list(sub.obs_names) == list(merged.obs_names[keep])
    assert (sub.X != merged.X[keep]).nnz == 0
    assert record["cells"] == len(keep) and record["usable_cells"] == int(usable.sum())
    per = sub.obs["perturbation"].value_counts()
    assert per.max() <= max_cells
    if max_cells == 1000:
        assert record["perturbations_capped"] == 0 and len(keep) == usable.sum()
    else:
        capped = merged.obs["perturbation"].astype(str)[usable].value_counts() > 5
        assert record["perturbations_capped"] == int(capped.sum())


def _cell_index_whole(rna_cells, paint_cells, reg) -> pd.DataFrame:
    """cell_index.tsv as one table: every arm's rows concatenated (pandas' union of columns)."""
    from pairedscreen.expression import usable_cells as used_by

    parts = []
    if rna_cells is not None:
        a = ad.read_h5ad(rna_cells)
        parts.append(pd.DataFrame({"modality": "rna", "cell_id": a.obs_names.astype(str),
                                   "perturbation": a.obs["perturbation"].astype(str).to_numpy(),
                                   "library": a.obs["library"].astype(str).to_numpy(),
                                   "batch": a.obs["batch"].astype(str).to_numpy(),
                                   "used": used_by(a, categories=list(reg["perturbation_id"]))}))
    for p in paint_cells:
        m = pd.read_parquet(p)
        parts.append(pd.DataFrame({"modality": "paint", "cell_id": m["cell_id"], "perturbation": m["pert"],
                                   "plate": m["plate"], "well": m["well"], "site": m["site"],
                                   "batch": m["batch"], "used": True}))
    index = pd.concat(parts, ignore_index=True, sort=False)
    ctrl = set(reg.loc[reg["is_control"], "perturbation_id"])
    index.insert(3, "is_control", index["perturbation"].isin(ctrl))
    return index


@pytest.mark.parametrize("arms", ["both", "rna", "paint"])
def test_cell_index_written_in_blocks_is_the_whole_table(screen, tmp_path, monkeypatch, arms):
    """The streamed cell_index.tsv (RNA cells a block at a time, then each plate) has the bytes of the one
    concatenated table, whichever arms are present."""
    from pairedscreen.pair import stages

    monkeypatch.setattr(stages, "INDEX_BLOCK", 97)        # several blocks per library
    monkeypatch.setattr(stages, "_paint_cell_index", lambda p: pd.read_parquet(p).rename(
        columns={"pert": "perturbation"}).assign(modality="paint", used=True)[
        ["modality", "cell_id", "perturbation", "plate", "well", "site", "batch", "used"]])
    merged = screen["root"] / "merged_in_memory.h5ad"
    plates = []
    for k in range(2):
        rng = np.random.default_rng(k)
        n = 40 + 13 * k
        plates.append(tmp_path / f"P{k}.parquet")
        pd.DataFrame({"cell_id": [f"P{k}_c{i}" for i in range(n)], "pert": rng.choice(["P0", "NTC1"], n),
                      "plate": f"P{k}", "well": "A01", "site": rng.integers(1, 4, n),
                      "batch": "B1"}).to_parquet(plates[-1])
    reg = REGISTRY.assign(is_control=REGISTRY["is_control"].astype(bool))
    rna = merged if arms != "paint" else None
    paint = plates if arms != "rna" else []
    stages.write_cell_index(rna, paint, reg, tmp_path / "streamed.tsv")
    _cell_index_whole(rna, paint, reg).to_csv(tmp_path / "whole.tsv", sep="\t", index=False)
    assert (tmp_path / "streamed.tsv").read_bytes() == (tmp_path / "whole.tsv").read_bytes()


def test_streamed_merge_with_distinct_barcodes_is_the_in_memory_merge(screen, tmp_path):
    """Barcodes distinct over the screen stay a string array in anndata's merge: the streamed path."""
    paths = []
    for p in screen["cells"]:
        a = ad.read_h5ad(p)
        a.obs["barcode"] = [f"{a.obs['library'].iloc[0]}-{b}" for b in a.obs["barcode"]]
        paths.append(tmp_path / f"{p.parent.name}.h5ad")
        a.write_h5ad(paths[-1], compression="gzip")
    merge_libraries([ad.read_h5ad(p) for p in paths]).write_h5ad(tmp_path / "whole.h5ad", compression="gzip")
    write_merged_cells(paths, tmp_path / "streamed.h5ad")
    assert content_digest(tmp_path / "streamed.h5ad") == content_digest(tmp_path / "whole.h5ad")
    assert ad.read_h5ad(tmp_path / "streamed.h5ad").obs["barcode"].dtype == object
