"""Sheet validation: bad sheets stop the run before any job starts, naming the sheet, row and fix."""

from __future__ import annotations

import pandas as pd
import pytest
from workdir import minimal_workdir, snakemake, write_tsv

from pairedscreen.paths import chunk_wells
from pairedscreen.sheets import SheetError, check_screen, normalise_well, read_sheet


@pytest.fixture()
def wd(tmp_path):
    return minimal_workdir(tmp_path / "screen")


def _load(wd):
    cfg = wd / "config"
    perts = read_sheet(cfg / "perturbations.tsv", bool_cols=("is_control",))
    guides = read_sheet(cfg / "guides.tsv")
    libs = read_sheet(cfg / "rna_libraries.tsv", int_cols=("expected_cells",))
    plates = read_sheet(cfg / "plates.tsv")
    pm = {"P1": read_sheet(cfg / "plate_maps" / "P1.tsv", int_cols=("replicate",))}
    return perts, guides, libs, plates, pm


def test_valid_minimal_screen_passes(wd):
    screen = check_screen(*_load(wd), workdir=wd)
    assert screen.library_ids == ["L1"] and screen.plate_ids == ["P1"]


def test_unknown_perturbation_in_plate_map_names_the_line(wd):
    pm_path = wd / "config" / "plate_maps" / "P1.tsv"
    write_tsv(pm_path, ["well", "perturbation_id", "replicate"],
              [["B02", "TGT01", 1], ["B03", "NOPE9", 1]])
    with pytest.raises(SheetError) as err:
        check_screen(*_load(wd), workdir=wd)
    assert err.value.line == 3 and "NOPE9" in str(err.value) and "P1.tsv" in str(err.value)


def test_duplicate_guide_id_names_both_lines(wd):
    g = pd.read_csv(wd / "config" / "guides.tsv", sep="\t", dtype=str, keep_default_na=False)
    g = pd.concat([g, g.iloc[[0]]])
    g.iloc[2, g.columns.get_loc("sequence")] = "GGGGACGTACGTACGTCCCC"
    g.to_csv(wd / "config" / "guides.tsv", sep="\t", index=False)
    with pytest.raises(SheetError, match=r"line 4: duplicate id 'TGT01-g1' \(first on line 2\)"):
        check_screen(*_load(wd), workdir=wd)


def test_missing_fastq_names_file_and_line(wd):
    (wd / "raw" / "fastq" / "L1_guide_R2.fastq.gz").unlink()
    with pytest.raises(SheetError, match=r"rna_libraries.tsv, line 2: FASTQ .raw/fastq/L1_guide_R2"):
        check_screen(*_load(wd), workdir=wd)


def test_bad_boolean_names_line(wd):
    p = wd / "config" / "perturbations.tsv"
    p.write_text(p.read_text().replace("\tfalse\t", "\tmaybe\t"))
    with pytest.raises(SheetError, match=r"perturbations.tsv, line 2: column 'is_control' has 'maybe'"):
        read_sheet(p, bool_cols=("is_control",))


def test_well_names_normalised():
    assert [normalise_well(w) for w in ("A1", "a01", "P24", "Q01")] == ["A01", "A01", "P24", "Q01"]


def test_chunks_cover_every_well_once():
    wells = [f"{r}{c:02d}" for r in "ABCDEFGHIJKLMNOP" for c in range(1, 25)]
    chunks = chunk_wells(wells, 16)
    assert len(chunks) == 24 and sum(chunks.values(), []) == wells


def test_dry_run_on_unknown_perturbation_names_the_row(wd):
    """`snakemake -n` refuses to plan anything and the error names the sheet, row and fix."""
    write_tsv(wd / "config" / "plate_maps" / "P1.tsv", ["well", "perturbation_id", "replicate"],
              [["B02", "TGT01", 1], ["B03", "NTC_1", 1], ["C05", "GHOST7", 2]])
    res = snakemake(wd, "-n")
    out = res.stdout + res.stderr
    assert res.returncode != 0
    assert "P1.tsv, line 4: unknown perturbation_id 'GHOST7'" in out, out[-3000:]
    assert "Fix: add 'GHOST7' to the perturbation registry" in out
    assert "Job stats" not in out  # nothing was planned


def test_dry_run_on_bad_well_names_the_row(wd):
    write_tsv(wd / "config" / "plate_maps" / "P1.tsv", ["well", "perturbation_id", "replicate"],
              [["B02", "TGT01", 1], ["Z99", "NTC_1", 1]])
    res = snakemake(wd, "-n")
    out = res.stdout + res.stderr
    assert res.returncode != 0 and "P1.tsv, line 3" in out and "Z99" in out, out[-3000:]


def test_dry_run_valid_screen_plans_all_stages(wd):
    res = snakemake(wd, "-n")
    assert res.returncode == 0, (res.stdout + res.stderr)[-3000:]
    for rule in ("kb_ref", "kb_count_gex", "kb_count_guide", "paint_segment", "pair", "report"):
        assert f"rule {rule}:" in res.stdout


@pytest.mark.parametrize("raw, norm", [("a1", "A01"), ("A01", "A01"), ("A001", "A01"), (" p24 ", "P24"),
                                       ("af48", "AF48"), ("B3", "B03")])
def test_one_well_normaliser_for_sheets_and_images(raw, norm):
    """Sheets (lenient) and image names (strict) normalise wells with the same function."""
    from pairedscreen.paint.ingest import _well
    from pairedscreen.plate import normalise_well

    assert normalise_well(raw) == normalise_well(raw, strict=True) == _well(raw) == norm


def test_not_a_well_kept_for_the_sheet_check_refused_for_images():
    from pairedscreen.paint.ingest import ImageIngestError, _well
    from pairedscreen.plate import normalise_well

    assert normalise_well(" well7 ") == "well7"
    with pytest.raises(ValueError, match="not a well name"):
        normalise_well("well7", strict=True)
    with pytest.raises(ImageIngestError, match="not a well name"):
        _well("well7")
