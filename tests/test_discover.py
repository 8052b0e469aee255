"""`pairedscreen discover`: new plates and sequencing runs from a landing folder, appended to the sheets."""

from __future__ import annotations

import pandas as pd
from workdir import minimal_workdir, snakemake, write_tsv

from pairedscreen.cli import main


def _landing(wd):
    land = wd / "landing" / "run42"
    for plate in ("P2", "P3"):
        d = land / "images" / plate
        d.mkdir(parents=True)
        for ch in range(1, 6):
            (d / f"B02_s1_w{ch}.tif").write_bytes(b"")
    (land / "images" / "P2" / "notes.txt").write_text("not an image")
    write_tsv(wd / "config" / "plate_maps" / "P2.tsv", ["well", "perturbation_id", "replicate"],
              [["B02", "TGT01", 1]])
    fq = land / "fastq"
    fq.mkdir()
    for lane in ("001", "002"):
        for kind in ("GEX", "CRISPR"):
            for r in ("R1", "R2", "I1"):
                (fq / f"L2_{kind}_S1_L{lane}_{r}_001.fastq.gz").write_bytes(b"")
    (fq / "L3_GEX_S2_L001_R1_001.fastq.gz").write_bytes(b"")
    (fq / "L3_GEX_S2_L001_R2_001.fastq.gz").write_bytes(b"")
    (fq / "L3_CRISPR_S3_L001_R1_001.fastq.gz").write_bytes(b"")
    return land


def test_discover_appends_new_rows_and_names_what_is_missing(tmp_path, capsys):
    wd = minimal_workdir(tmp_path / "screen")
    land = _landing(wd)
    plates_before = (wd / "config" / "plates.tsv").read_bytes()
    libs_before = (wd / "config" / "rna_libraries.tsv").read_bytes()

    rc = main(["discover", str(land.relative_to(wd)), "--directory", str(wd)])
    out, err = capsys.readouterr()
    assert rc == 1, (out, err)      # P3 has no plate map, L3 no guide R2: reported, not added
    assert "added plate P2" in out and "added library L2" in out
    assert "plate P3" in err and "no plate map" in err and "config/plate_maps/P3.tsv" in err
    assert "library L3" in err and "guide lane L001 has no R2" in err

    plates_after = (wd / "config" / "plates.tsv").read_bytes()
    libs_after = (wd / "config" / "rna_libraries.tsv").read_bytes()
    assert plates_after.startswith(plates_before) and libs_after.startswith(libs_before)
    plates = pd.read_csv(wd / "config" / "plates.tsv", sep="\t", dtype=str)
    assert list(plates.plate_id) == ["P1", "P2"]
    p2 = plates.set_index("plate_id").loc["P2"]
    assert p2.image_dir == "landing/run42/images/P2" and p2.plate_map == "config/plate_maps/P2.tsv"
    assert p2.batch == "run42"
    libs = pd.read_csv(wd / "config" / "rna_libraries.tsv", sep="\t", dtype=str).set_index("library_id")
    assert list(libs.index) == ["L1", "L2"]
    assert libs.loc["L2", "gex_fastq_r1"] == (
        "landing/run42/fastq/L2_GEX_S1_L001_R1_001.fastq.gz;landing/run42/fastq/L2_GEX_S1_L002_R1_001.fastq.gz")
    assert libs.loc["L2", "guide_fastq_r2"].endswith("L2_CRISPR_S1_L002_R2_001.fastq.gz")
    assert libs.loc["L2", "chemistry"] == "10xv3" and int(libs.loc["L2", "expected_cells"]) == 10000

    # idempotent: a second scan adds nothing and rewrites nothing
    rc = main(["discover", str(land), "--directory", str(wd)])
    out, _ = capsys.readouterr()
    assert "already in the sheets: plate P2, library L2" in out and "nothing new to add" in out
    assert (wd / "config" / "plates.tsv").read_bytes() == plates_after
    assert (wd / "config" / "rna_libraries.tsv").read_bytes() == libs_after

    # the appended sheets pass the workflow's own validation (dry run plans the new plate and library)
    dry = snakemake(wd, "-n", "--quiet", "rules")
    assert dry.returncode == 0, (dry.stdout + dry.stderr)[-3000:]


def test_discover_dry_run_changes_nothing(tmp_path, capsys):
    wd = minimal_workdir(tmp_path / "screen")
    land = _landing(wd)
    before = {p: p.read_bytes() for p in (wd / "config").rglob("*.tsv")}
    main(["discover", str(land), "--directory", str(wd), "--dry-run", "--batch", "B9"])
    out, _ = capsys.readouterr()
    assert "would add plate P2: batch B9" in out
    assert {p: p.read_bytes() for p in (wd / "config").rglob("*.tsv")} == before
