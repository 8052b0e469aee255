"""The simulator orchestrator: a complete, consistent and deterministic working directory."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import yaml

from pairedscreen.io import repo_root
from pairedscreen.sheets import check_screen, read_sheet
from pairedscreen.simulate import simulate
from pairedscreen.simulate.registry import make_registry
from pairedscreen.simulate.spec import get_preset

SEED = 5


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return simulate(tmp_path_factory.mktemp("sim1"), preset="tiny", seed=SEED)


@pytest.fixture(scope="module")
def workdir_two_plates(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return simulate(tmp_path_factory.mktemp("sim2"), preset="tiny", seed=SEED,
                    overrides={"paint.n_plates": 2})


def _all_files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_sheets_are_consistent(workdir: Path) -> None:
    cfg = workdir / "config"
    perts = read_sheet(cfg / "perturbations.tsv", bool_cols=("is_control",))
    guides = read_sheet(cfg / "guides.tsv")
    libs = read_sheet(cfg / "rna_libraries.tsv", int_cols=("expected_cells",))
    plates = read_sheet(cfg / "plates.tsv")
    maps = {p.plate_id: read_sheet(workdir / p.plate_map, int_cols=("replicate",))
            for p in plates.itertuples()}
    screen = check_screen(perts, guides, libs, plates, maps, workdir=workdir)   # ids known, paths exist
    known = set(perts.perturbation_id)
    assert set(guides.perturbation_id) <= known
    for pm in maps.values():
        assert set(pm.perturbation_id) <= known
        assert set(pm.perturbation_id) == known                         # every perturbation imaged
    assert screen.plate_ids == ["P1"] and screen.library_ids == ["L1"]
    assert set(perts.columns) == {"perturbation_id", "perturbation_type", "target_gene", "is_control",
                                  "control_type"}
    assert (cfg / "perturbations.tsv").read_text().count("\ttrue\t") == get_preset("tiny").n_controls
    for p in plates.itertuples():
        wells = pd.read_csv(workdir / "truth" / "paint_wells.tsv", sep="\t").query("plate == @p.plate_id")
        imgs = {f.name for f in (workdir / p.image_dir).glob("*.tif")}
        assert {f"{w}_s1_w1.tif" for w in maps[p.plate_id].well} <= imgs
        assert sorted(maps[p.plate_id].well) == sorted(wells.well)
    for col in ("gex_fastq_r1", "gex_fastq_r2", "guide_fastq_r1", "guide_fastq_r2"):
        assert all((workdir / v).is_file() and not Path(v).is_absolute() for v in libs[col])
    reg = make_registry(get_preset("tiny").with_overrides(seed=SEED))
    assert list(perts.perturbation_id) == list(reg.perturbations.perturbation_id)


def test_config_and_truth(workdir: Path) -> None:
    cfg = yaml.safe_load((workdir / "config" / "config.yaml").read_text())
    base = yaml.safe_load((repo_root() / "config" / "config.yaml").read_text())
    assert cfg["truth_dir"] == "truth"
    assert {k: v for k, v in cfg.items() if k != "truth_dir"} == {k: v for k, v in base.items()
                                                                   if k != "truth_dir"}
    truth = pd.read_csv(workdir / "truth" / "perturbations.tsv", sep="\t")
    assert {"perturbation_id", "effect_class", "program", "rna_active", "paint_active",
            "knockdown_remaining", "paint_effect"} <= set(truth.columns)
    assert (truth.paint_active == truth.effect_class.isin(["both", "paint"])).all()
    assert truth.loc[truth.effect_class == "control", "knockdown_remaining"].isna().all()
    genes = pd.read_csv(workdir / "truth" / "genes.tsv", sep="\t")
    assert {"gene_id", "gene_name", "role"} <= set(genes.columns)
    spec = json.loads((workdir / "truth" / "spec.json").read_text())
    assert spec["seed"] == SEED and spec["paint"]["n_plates"] == 1
    for f in ("rna_barcodes.tsv", "paint_objects.parquet", "paint_wells.tsv"):
        assert (workdir / "truth" / f).is_file()


def test_custom_base_config(tmp_path: Path) -> None:
    from pairedscreen.simulate import write_config

    base = tmp_path / "base.yaml"
    base.write_text("truth_dir: ''\nquality: {seed: 9}\n")
    path = write_config(tmp_path / "w", base)
    assert yaml.safe_load(path.read_text()) == {"truth_dir": "truth", "quality": {"seed": 9}}


def test_deterministic_and_plates_independent(workdir: Path, workdir_two_plates: Path) -> None:
    """Same seed -> byte-identical files; a second plate adds files and changes only plate-wide tables."""
    a, b = _all_files(workdir), _all_files(workdir_two_plates)
    changed = {"config/plates.tsv", "truth/spec.json", "truth/paint_objects.parquet", "truth/paint_wells.tsv"}
    assert set(a) <= set(b)
    assert [k for k in a if k not in changed and a[k] != b[k]] == []
    assert any(k.startswith("raw/images/P2/") for k in b)
    assert "config/plate_maps/P2.tsv" in b
    plates = pd.read_csv(workdir_two_plates / "config" / "plates.tsv", sep="\t")
    assert list(plates.plate_id) == ["P1", "P2"] and list(plates.batch) == ["B1", "B2"]


def test_example_sheets_in_config_are_the_tiny_screens(tmp_path, repo):
    """config/*.tsv document the sheet formats; they must stay exactly what the simulator writes."""
    from pairedscreen.simulate import simulate

    wd = simulate(tmp_path / "tiny", preset="tiny")
    for rel in ("perturbations.tsv", "guides.tsv", "rna_libraries.tsv", "plates.tsv", "plate_maps/P1.tsv"):
        assert (repo / "config" / rel).read_text() == (wd / "config" / rel).read_text(), rel
