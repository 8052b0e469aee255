"""A Cell Ranger output folder as a library's input (pairedscreen.rna.cellranger): a Cell Ranger-layout h5
made of the FASTQ route's own kb matrices of the simulated tiny library gives the same cells, guide calls and
pseudobulk; Cell Ranger's guide calls are kept alongside (here the simulator's planted guides play them);
the real Cell Ranger v3 h5 of scanpy's tests loads as a GEX-only library; the sheet takes either FASTQs or
cellranger_outs per row."""

from __future__ import annotations

import logging
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scanpy as sc
from cellranger_layout import outs_from_kb

from pairedscreen import quarantine
from pairedscreen.config import load_config
from pairedscreen.errors import MissingInputError
from pairedscreen.io import sha256sum
from pairedscreen.rna import cellranger, stages
from pairedscreen.sheets import SheetError, load_screen
from pairedscreen.simulate import simulate


@pytest.fixture(scope="module")
def fastq_route(tmp_path_factory) -> dict:
    """The tiny screen's library L1 through kb -> load -> cells -> summary (the FASTQ route)."""
    wd = simulate(tmp_path_factory.mktemp("cr_tiny"), preset="tiny")
    cfg = load_config(wd / "config" / "config.yaml")
    row = pd.read_csv(wd / "config" / "rna_libraries.tsv", sep="\t").iloc[0]
    res = wd / "results"
    ref, gref = res / "reference" / "kb", res / "reference" / "guides"
    stages.run_kb_ref(wd / cfg["reference"]["fasta"], wd / cfg["reference"]["gtf"], ref / "index.idx",
                      ref / "t2g.txt", threads=2)
    stages.run_kb_ref_guides(wd / "config" / "guides.tsv", gref / "index.idx", gref / "t2g.txt",
                             gref / "features.tsv")
    lib = res / "rna" / row.library_id
    for kind, idx, feats in (("gex", ref, None), ("guide", gref, gref / "features.tsv")):
        stages.run_kb_count([wd / getattr(row, f"{kind}_fastq_r1")], [wd / getattr(row, f"{kind}_fastq_r2")],
                            idx / "index.idx", idx / "t2g.txt", row.chemistry, wd / cfg["rna"]["whitelist"],
                            lib / f"kb_{kind}", threads=2, mem_mb=1536, guide_features=feats)
    stages.run_rna_load(lib / "kb_gex", lib / "kb_guide", None, row.library_id, row.batch,
                        lib / "raw.h5ad", lib / "guides_raw.h5ad", lib / "inputs.json")
    _cells(wd, cfg, lib, int(row.expected_cells))
    truth = pd.read_csv(wd / "truth" / "rna_barcodes.tsv", sep="\t", keep_default_na=False)
    truth = truth[truth["library_id"] == row.library_id].set_index("barcode")
    return {"wd": wd, "cfg": cfg, "row": row, "lib": lib, "truth": truth}


def _cells(wd: Path, cfg: dict, lib: Path, expected: int) -> None:
    stages.run_rna_cells(lib / "raw.h5ad", lib / "guides_raw.h5ad", wd / "config" / "guides.tsv",
                         wd / "config" / "perturbations.tsv", expected, cfg["rna"], lib / "cells.h5ad",
                         lib / "barcode_ranks.parquet")
    stages.run_rna_summary(lib / "cells.h5ad", wd / "config" / "perturbations.tsv", lib / "summary.h5ad")


def _cellranger_route(fr: dict, name: str, cells: str, keep: list[str] | None = None) -> Path:
    """The same library from a Cell Ranger-layout folder made of its kb matrices, through load -> cells."""
    wd, row = fr["wd"], fr["row"]
    truth_calls = fr["truth"]["guide_ids"]
    h5name = cellranger.MATRIX[cells]
    outs = outs_from_kb(fr["lib"] / "kb_gex", fr["lib"] / "kb_guide", wd / name / "outs", row.library_id,
                        keep=keep, calls=truth_calls, name=h5name)
    back = sc.read_10x_h5(outs / h5name, gex_only=False)   # scanpy reads the layout back
    assert set(back.var["feature_types"]) == {"Gene Expression", "CRISPR Guide Capture"}
    lib = wd / "results" / name
    stages.run_rna_load_cellranger(outs, wd / "config" / "guides.tsv", row.library_id, row.batch, cells,
                                   lib / "raw.h5ad", lib / "guides_raw.h5ad", lib / "inputs.json")
    _cells(wd, fr["cfg"], lib, int(row.expected_cells))
    return lib


def _same_library(fastq_lib: Path, cr_lib: Path) -> ad.AnnData:
    a, b = ad.read_h5ad(fastq_lib / "cells.h5ad"), ad.read_h5ad(cr_lib / "cells.h5ad")
    assert list(b.obs["barcode"].str.removesuffix("-1")) == list(a.obs["barcode"])   # the same cells
    assert (a.X != b.X).nnz == 0 and list(a.var_names) == list(b.var_names)
    for col in ("pass_qc", "predicted_doublet", "guide_ids", "n_guides", "guide_umis", "perturbation"):
        assert list(a.obs[col]) == list(b.obs[col]), col                          # the same calls
    pa, pb = ad.read_h5ad(fastq_lib / "summary.h5ad"), ad.read_h5ad(cr_lib / "summary.h5ad")
    assert list(pa.obs_names) == list(pb.obs_names) and pa.n_obs > 0
    np.testing.assert_array_equal(np.asarray(pa.X.todense() if hasattr(pa.X, "todense") else pa.X),
                                  np.asarray(pb.X.todense() if hasattr(pb.X, "todense") else pb.X))
    assert list(pa.obs["n_cells"]) == list(pb.obs["n_cells"])                    # the same pseudobulk
    return b


def test_raw_matrix_gives_the_fastq_routes_cells_calls_and_pseudobulk(fastq_route):
    lib = _cellranger_route(fastq_route, "cr_raw", "pipeline")
    cells = _same_library(fastq_route["lib"], lib)
    info = pd.read_json(lib / "inputs.json", typ="series")["cellranger"]
    assert info["software_version"] == "cellranger-8.0.1" and info["guide_features"] > 0
    assert info["chemistry_description"] == "Single Cell 3' v3" and info["cells"] == "pipeline"
    outs = fastq_route["wd"] / "cr_raw" / "outs"
    assert {Path(p).name: h for p, h in info["files"].items()} == {   # checksums of the files read
        "raw_feature_bc_matrix.h5": sha256sum(outs / "raw_feature_bc_matrix.h5"),
        "protospacer_calls_per_cell.csv": sha256sum(outs / cellranger.CALLS)}
    # Cell Ranger's calls kept alongside (here the planted guides): the agreement is that of ours with truth
    truth = fastq_route["truth"]["guide_ids"].reindex(cells.obs["barcode"].str.removesuffix("-1")).fillna("")
    assert list(cells.obs[cellranger.OBS_CALLS]) == list(truth)
    agree = cellranger.guide_agreement(cells.obs)
    ours = [frozenset(x for x in str(g).split(";") if x) for g in cells.obs["guide_ids"]]
    planted = [frozenset(x for x in str(g).split(";") if x) for g in truth]
    assert agree["same_guides"] == sum(o == p for o, p in zip(ours, planted, strict=True))
    assert agree["cells"] == cells.n_obs and agree["agreement"] > 0.8


def test_filtered_matrix_keeps_cellrangers_cells(fastq_route):
    called = list(ad.read_h5ad(fastq_route["lib"] / "cells.h5ad").obs["barcode"])
    lib = _cellranger_route(fastq_route, "cr_filtered", "cellranger", keep=called)
    _same_library(fastq_route["lib"], lib)
    assert ad.read_h5ad(lib / "cells.h5ad").uns["cell_calling"]["method"] == "cellranger"
    ranks = pd.read_parquet(lib / "barcode_ranks.parquet")
    assert len(ranks) == len(called) and ranks["is_cell"].all()


def test_missing_matrix_names_the_folder_and_the_fix(tmp_path):
    (tmp_path / "outs").mkdir()
    (tmp_path / "outs" / "filtered_feature_bc_matrix.h5").write_bytes(b"")
    with pytest.raises(MissingInputError, match=r"no raw_feature_bc_matrix.h5 .*Fix: .*rna.cellranger.cells: "
                                                r"cellranger"):
        cellranger.matrix_path(tmp_path / "outs", "pipeline")


def test_real_cellranger_v3_h5_loads_as_a_gex_only_library(shared_data, tmp_path, caplog):
    h5 = shared_data("scrna_10x_processed_matrices_scanpy") / "10x_data" / "3.0.0" / \
        "filtered_feature_bc_matrix.h5"
    outs = tmp_path / "outs"
    outs.mkdir()
    (outs / "filtered_feature_bc_matrix.h5").symlink_to(h5)
    ids = ["g1", "g2"]
    with caplog.at_level(logging.WARNING, logger="pairedscreen.rna"):
        gex, gd, info = cellranger.load_outs(outs, "R1", ids, "B1", cells="cellranger")
    ref = sc.read_10x_h5(h5)
    assert gex.shape == ref.shape == (1107, 507)
    assert (gex.X != ref.X).nnz == 0 and list(gex.obs["barcode"]) == list(ref.obs_names)
    assert info["guide_features"] == 0 and gd.shape == (1107, 2) and gd.X.nnz == 0
    # this fixture's h5 predates the software_version attribute: recorded as unknown, the rest as written
    assert info["software_version"] is None and info["chemistry_description"] == "Single Cell 3' v3"
    assert info["library_ids"] == ["test2"] and info["version"] == 2
    msg = caplog.text
    assert "has no CRISPR Guide Capture features" in msg
    assert str(outs / "filtered_feature_bc_matrix.h5") in msg
    assert "Fix:" in msg
    # the merge's quarantine names the reason and the fix for such a library
    obs = pd.DataFrame({"perturbation": ["unassigned"] * 3})
    rec = quarantine.library_problem(obs, "R1", np.zeros(3, bool), no_guide_features=str(h5))
    assert "no CRISPR Guide Capture features" in rec["reason"] and "cellranger_outs" in rec["fix"]


@pytest.mark.parametrize("fill, problem", [
    ("both", "library L1 has both FASTQs (gex_fastq_r1, gex_fastq_r2, guide_fastq_r1, guide_fastq_r2) and "
             "cellranger_outs 'cr/outs'. Fix: keep one way in"),
    ("neither", "library L1 has neither FASTQs nor cellranger_outs. Fix: fill gex_fastq_r1"),
    ("cellranger", None),
])
def test_sheet_takes_fastqs_or_cellranger_outs(tmp_path, fill, problem):
    from workdir import minimal_workdir

    wd = minimal_workdir(tmp_path)
    (wd / "cr" / "outs").mkdir(parents=True)
    sheet = wd / "config" / "rna_libraries.tsv"
    df = pd.read_csv(sheet, sep="\t", dtype=str, keep_default_na=False)
    df["cellranger_outs"] = "cr/outs"
    if fill != "both":
        for c in ("gex_fastq_r1", "gex_fastq_r2", "guide_fastq_r1", "guide_fastq_r2", "chemistry"):
            df[c] = ""
    if fill == "neither":
        df["cellranger_outs"] = ""
    df.to_csv(sheet, sep="\t", index=False)
    conf = load_config(wd / "config" / "config.yaml")
    if problem is None:
        screen = load_screen(conf, wd)
        assert screen.library_ids == ["L1"]
        assert conf["rna"]["cellranger"]["cells"] == "pipeline"   # the schema's default
        return
    with pytest.raises(SheetError) as err:
        load_screen(conf, wd)
    assert f"config/rna_libraries.tsv, line 2: {problem}" in str(err.value)
