"""Bad reads and bad images are refused (or flagged) with the file/well/site and the fix, before work runs.

FASTQ cases use real 10x v2 reads (``../shared/data/scrna_10xv2_mouse_kb_python``, 2,500 pairs) made
bad in a copy; record counts are checked against Python's own gzip reader. Image cases use the tiny
simulated plate made bad in a copy (blank, noise-only, defocused sites, an all-black plate, missing
channels); true sites must stay unflagged.
"""

from __future__ import annotations

import gzip
import hashlib
import shutil
from pathlib import Path

import pytest
import yaml
from workdir import REPO, minimal_workdir, snakemake

from pairedscreen.errors import PairedscreenError
from pairedscreen.rna import count
from pairedscreen.rna.fastq import FastqError, Lane, check_library, required_lengths, scan_fastq
from pairedscreen.rna.stages import run_fastq_check

V2 = "0,0,16:0,16,26:1,0,0"  # 10xv2 as a technology string
V3 = "0,0,16:0,16,28:1,0,0"


@pytest.fixture(scope="module")
def reads(shared_data, tmp_path_factory) -> dict[str, Path]:
    src = shared_data("scrna_10xv2_mouse_kb_python")
    out = tmp_path_factory.mktemp("fastq")
    files = {}
    for mate in ("R1", "R2"):
        files[mate] = out / f"{mate}.fastq.gz"
        shutil.copyfile(src / f"{mate}.fastq.gz", files[mate])
    return files


def _records_by_gzip(path: Path) -> int:
    with gzip.open(path, "rb") as fh:
        return sum(1 for _ in fh) // 4


def _expect(exc: pytest.ExceptionInfo, *parts: str) -> str:
    msg = str(exc.value)
    for p in parts:
        assert p in msg, f"{p!r} not in:\n{msg}"
    assert "Fix:" in msg
    return msg


# ----------------------------------------------------------------------------------------------- FASTQ
def test_intact_reads_pass_with_counts_of_gzip(reads):
    r1, r2 = scan_fastq(reads["R1"], 26), scan_fastq(reads["R2"], 1)
    assert r1.records == r2.records == _records_by_gzip(reads["R1"]) == _records_by_gzip(reads["R2"])
    assert (r1.min_length, r1.max_length, r1.n_short, r1.problems) == (26, 26, 0, [])
    report = check_library("L1", [Lane("gex", str(reads["R1"]), str(reads["R2"]), V2)])
    assert [f["records"] for f in report["files"]] == [r1.records, r2.records]
    assert report["files"][0]["sha256"] == hashlib.sha256(reads["R1"].read_bytes()).hexdigest()


def test_truncated_gzip(reads, tmp_path):
    cut = tmp_path / "R2_cut.fastq.gz"
    data = reads["R2"].read_bytes()
    cut.write_bytes(data[: int(len(data) * 0.6)])
    with pytest.raises(FastqError) as e:
        check_library("L1", [Lane("gex", str(reads["R1"]), str(cut), V2)])
    msg = _expect(e, str(cut), "truncated gzip", "gzip -t", "1 FASTQ problem(s)")
    assert str(reads["R1"]) not in msg  # only the cut file is blamed


def test_r1_r2_record_count_mismatch(reads, tmp_path):
    short = tmp_path / "R2_short.fastq.gz"
    with gzip.open(reads["R2"], "rb") as fh:
        lines = fh.read().split(b"\n")
    with gzip.open(short, "wb") as fh:
        fh.write(b"\n".join(lines[: 4 * 2000]) + b"\n")
    with pytest.raises(FastqError) as e:
        check_library("L1", [Lane("guide", str(reads["R1"]), str(short), V2)])
    _expect(e, str(reads["R1"]), str(short), f"{_records_by_gzip(reads['R1'])} reads", "2000", "guide lane 1")


def test_empty_fastqs_all_reported_at_once(reads, tmp_path):
    zero = tmp_path / "zero_R1.fastq.gz"
    zero.write_bytes(b"")
    norec = tmp_path / "norecords_R2.fastq.gz"
    with gzip.open(norec, "wb"):
        pass
    with pytest.raises(FastqError) as e:
        check_library("L1", [Lane("gex", str(zero), str(reads["R2"]), V2),
                             Lane("guide", str(reads["R1"]), str(norec), V2)])
    msg = _expect(e, str(zero), "empty (0 bytes)", str(norec), "0 FASTQ records", "2 FASTQ problem(s)")
    assert "kb count was not started" in msg


def test_reads_too_short_for_chemistry(reads, tmp_path):
    """Real 10x v2 reads (26-base R1) declared 10xv3 (16 + 12 = 28 bases needed)."""
    assert required_lengths(V3) == {0: 28, 1: 1}
    assert required_lengths("0,0,16:0,16,28:1,10,30") == {0: 28, 1: 30}
    check_library("L1", [Lane("gex", str(reads["R1"]), str(reads["R2"]), V2)])  # the right chemistry passes
    with pytest.raises(FastqError) as e:
        check_library("L1", [Lane("gex", str(reads["R1"]), str(reads["R2"]), V3)])
    _expect(e, str(reads["R1"]), "shorter than the 28 bases", "reads are 26-26 bases", "10xv2")


def test_stage_writes_nothing_on_failure(reads, tmp_path):
    guides = tmp_path / "guides.tsv"
    guides.write_text("id\tname\tread\tpattern\tsequence\nG1\tG1\tR2\t^NNNNNNNNNN(BC)\tACGTACGTACGTACGTACGT\n")
    cut = tmp_path / "R1_cut.fastq.gz"
    cut.write_bytes(reads["R1"].read_bytes()[:5000])
    out = tmp_path / "res" / "fastq_check.json"
    with pytest.raises(FastqError):
        run_fastq_check("L1", "10xv2", [cut], [reads["R2"]], [reads["R1"]], [reads["R2"]], guides, out)
    assert not out.parent.exists() or not any(out.parent.iterdir())
    run_fastq_check("L1", "10xv2", [reads["R1"]], [reads["R2"]], [reads["R1"]], [reads["R2"]], guides, out,
                 threads=2)
    assert out.exists()


@pytest.fixture(scope="module")
def bad_read_run(reads, tmp_path_factory, shared_data) -> tuple[Path, object]:
    """A real run (snakemake, targets kb count) on a library whose GEX R2 is a cut gzip."""
    wd = minimal_workdir(tmp_path_factory.mktemp("badreads") / "screen")
    fq = wd / "raw" / "fastq"
    for kind in ("gex", "guide"):
        for mate in ("R1", "R2"):
            shutil.copyfile(reads[mate], fq / f"L1_{kind}_{mate}.fastq.gz")
    data = reads["R2"].read_bytes()
    (fq / "L1_gex_R2.fastq.gz").write_bytes(data[: int(len(data) * 0.6)])
    ref = shared_data("scrna_10xv2_mouse_kb_python")
    shutil.copyfile(ref / "mouse_truncated.fasta", wd / "raw" / "reference" / "transcriptome.fa")
    shutil.copyfile(ref / "mouse_truncated.gtf", wd / "raw" / "reference" / "genes.gtf")
    sheet = wd / "config" / "rna_libraries.tsv"
    sheet.write_text(sheet.read_text().replace("10xv3", "10xv2"))
    res = snakemake(wd, "--cores", "1", "results/rna/L1/kb_gex", "results/rna/L1/kb_guide", timeout=900)
    return wd, res


def test_cut_gzip_stops_the_run_before_kb_count(bad_read_run):
    wd, res = bad_read_run
    out = res.stdout + res.stderr
    assert res.returncode != 0, out[-3000:]
    assert "raw/fastq/L1_gex_R2.fastq.gz" in out and "truncated gzip" in out and "Fix:" in out
    assert "logs/rna_fastq_check/L1.log" in out
    lib = wd / "results" / "rna" / "L1"
    assert not (lib / "kb_gex").exists() and not (lib / "kb_guide").exists()
    assert not (wd / "logs" / "kb_count_gex").exists() and not (wd / "logs" / "kb_count_guide").exists()
    assert not lib.exists() or not any(lib.iterdir()), sorted(lib.iterdir())  # no partial fastq_check.json


def test_known_error_in_a_script_has_no_traceback(bad_read_run):
    wd, res = bad_read_run
    log = (wd / "logs" / "rna_fastq_check" / "L1.log").read_text()
    assert "FastqError: library L1" in log and "Fix:" in log
    assert "Traceback" not in log
    assert "Traceback" not in res.stdout + res.stderr


# ------------------------------------------------------------------------------------------ guide alphabet
def test_guide_schema_and_counting_accept_the_same_alphabet():
    schema = yaml.safe_load((REPO / "workflow" / "schemas" / "guides.schema.yaml").read_text())
    assert schema["properties"]["sequence"]["pattern"] == count.GUIDE_SEQUENCE.pattern
    import re

    schema_re = re.compile(schema["properties"]["sequence"]["pattern"])
    for seq in ("ACGT", "ACGN", "acgt", "ACGU", "AC GT", "ACG-T", ""):
        assert bool(schema_re.search(seq)) == bool(count.GUIDE_SEQUENCE.fullmatch(seq)), seq


def test_guide_with_n_refused_at_validation(tmp_path):
    wd = minimal_workdir(tmp_path / "screen")
    sheet = wd / "config" / "guides.tsv"
    sheet.write_text(sheet.read_text().replace("TTTTACGTACGTACGTAAAA", "TTTTACGTACNTACGTAAAA"))
    res = snakemake(wd, "-n")
    out = res.stdout + res.stderr
    assert res.returncode != 0
    assert "config/guides.tsv" in out and "line 3" in out and "sequence" in out and "Fix:" in out, out[-2000:]
    assert "TTTTACGTACNTACGTAAAA" in out
    assert "Traceback" not in out
    assert not (wd / "results").exists()


def test_errors_share_the_known_base():
    from pairedscreen.paint.ingest import ImageIngestError
    from pairedscreen.sheets import SheetError

    for cls in (SheetError, ImageIngestError, FastqError, count.KbError):
        assert issubclass(cls, PairedscreenError)
    assert issubclass(SheetError, ValueError)  # callers catching ValueError keep working


def test_cli_prints_known_errors_without_traceback(monkeypatch, capsys):
    from pairedscreen import cli
    from pairedscreen.sheets import SheetError

    def boom(args):
        raise SheetError("config/plates.tsv", 3, "plate map 'x.tsv' does not exist", "correct the path")

    monkeypatch.setattr(cli, "cmd_simulate", boom)
    assert cli.main(["simulate", "--out", "unused"]) == 1
    err = capsys.readouterr().err
    assert "config/plates.tsv, line 3: plate map 'x.tsv' does not exist. Fix: correct the path" in err
    assert "Traceback" not in err
