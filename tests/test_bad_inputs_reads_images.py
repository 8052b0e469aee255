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

import numpy as np
import pandas as pd
import pytest
import yaml
from config_values import SCHEMA
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


def test_swapped_gex_pair_refused_with_files_lengths_and_fix(reads, tmp_path):
    """Real 10x v2 GEX reads given the wrong way round (R1 = the 98-base cDNA read, R2 = the 26-base
    barcode + UMI read): every read is long enough, yet the pair is refused, naming the library, both
    files, their lengths, what the chemistry expects and the fix; a second swapped lane is reported in
    the same error, the right way round passes."""
    r1, r2 = str(reads["R1"]), str(reads["R2"])
    long_len = scan_fastq(reads["R2"]).max_length
    check_library("L7", [Lane("gex", r1, r2, V2, "10xv2")])
    with pytest.raises(FastqError) as e:
        check_library("L7", [Lane("gex", r2, r1, V2, "10xv2"), Lane("gex", r2, r1, V2, "10xv2")])
    msg = _expect(e, "library L7, gex lane 1", "library L7, gex lane 2", "2 FASTQ problem(s)",
                  f"R1 {r2} has reads of {long_len} bases", f"R2 {r1} has reads of 26 bases",
                  "R1 the short read, 26 bases", "kb count was not started",
                  "R1 and R2 look swapped: swap the gex_fastq_r1/gex_fastq_r2 columns of library L7 in "
                  "config/rna_libraries.tsv")
    assert "shorter than" not in msg  # the swap is the one finding, not a chemistry mismatch
    # the guide read of a 10x 3' library: a swapped pair is also a too-short R2: reported once, as a swap
    with pytest.raises(FastqError) as e:
        check_library("L7", [Lane("guide", r2, r1, "0,0,16:0,16,26:1,10,30", "10xv2 + guide pattern")])
    msg = _expect(e, "1 FASTQ problem(s)", "guide_fastq_r1/guide_fastq_r2", "at least 30 bases")
    # a layout that reads the insert from R1 (e.g. a 5' paired-end string) may have R1 longer than R2
    check_library("L7", [Lane("gex", r2, r1, "1,0,16:1,16,26:0,0,0")])


def test_swapped_gex_refused_by_the_stage_before_kb(reads, tmp_path):
    """The stage (rule rna_fastq_check, which both kb count rules wait for) refuses a library whose GEX
    pair is swapped while its guide pair is right, and writes nothing."""
    guides = _guide_sheet(tmp_path / "guides.tsv")
    out = tmp_path / "res" / "fastq_check.json"
    with pytest.raises(FastqError) as e:
        run_fastq_check("L1", "10xv2", [reads["R2"]], [reads["R1"]], [reads["R1"]], [reads["R2"]], guides,
                        out)
    _expect(e, "library L1, gex lane 1", str(reads["R1"]), str(reads["R2"]), "1 FASTQ problem(s)",
            "10xv2 (0,0,16:0,16,26:1,0,0)", "R1 and R2 look swapped")
    assert not out.exists()


def _guide_sheet(path: Path) -> Path:
    cols = ["id", "name", "read", "pattern", "sequence", "feature_type", "target_gene_id", "target_gene_name",
            "perturbation_id"]
    row = ["G1", "G1", "R2", "^NNNNNNNNNN(BC)", "ACGTACGTACGTACGTACGT", "CRISPR Guide Capture", "SYNG1",
           "T1", "T1"]
    path.write_text("\t".join(cols) + "\n" + "\t".join(row) + "\n")
    return path


def test_stage_writes_nothing_on_failure(reads, tmp_path):
    guides = tmp_path / "guides.tsv"
    _guide_sheet(guides)
    cut = tmp_path / "R1_cut.fastq.gz"
    cut.write_bytes(reads["R1"].read_bytes()[:5000])
    out = tmp_path / "res" / "fastq_check.json"
    with pytest.raises(FastqError):
        run_fastq_check("L1", "10xv2", [cut], [reads["R2"]], [reads["R1"]], [reads["R2"]], guides, out)
    assert not out.parent.exists() or not any(out.parent.iterdir())
    run_fastq_check("L1", "10xv2", [reads["R1"]], [reads["R2"]], [reads["R1"]], [reads["R2"]], guides, out,
                 threads=2)
    assert out.exists()


def _read_run(reads, tmp_path_factory, shared_data, fault: str) -> tuple[Path, object]:
    """A real run (snakemake, targets kb count) on one library of real 10x v2 reads with a fault:
    ``cut`` (GEX R2 a cut gzip) or ``swapped`` (the GEX R1 file holds R2's reads and vice versa)."""
    wd = minimal_workdir(tmp_path_factory.mktemp(f"badreads_{fault}") / "screen")
    fq = wd / "raw" / "fastq"
    for kind in ("gex", "guide"):
        for mate in ("R1", "R2"):
            shutil.copyfile(reads[mate], fq / f"L1_{kind}_{mate}.fastq.gz")
    if fault == "cut":
        data = reads["R2"].read_bytes()
        (fq / "L1_gex_R2.fastq.gz").write_bytes(data[: int(len(data) * 0.6)])
    else:
        shutil.copyfile(reads["R2"], fq / "L1_gex_R1.fastq.gz")
        shutil.copyfile(reads["R1"], fq / "L1_gex_R2.fastq.gz")
    ref = shared_data("scrna_10xv2_mouse_kb_python")
    shutil.copyfile(ref / "mouse_truncated.fasta", wd / "raw" / "reference" / "transcriptome.fa")
    shutil.copyfile(ref / "mouse_truncated.gtf", wd / "raw" / "reference" / "genes.gtf")
    sheet = wd / "config" / "rna_libraries.tsv"
    sheet.write_text(sheet.read_text().replace("10xv3", "10xv2"))
    res = snakemake(wd, "--cores", "1", "results/rna/L1/kb_gex", "results/rna/L1/kb_guide", timeout=900)
    return wd, res


@pytest.fixture(scope="module")
def bad_read_run(reads, tmp_path_factory, shared_data) -> tuple[Path, object]:
    """A real run (snakemake, targets kb count) on a library whose GEX R2 is a cut gzip."""
    return _read_run(reads, tmp_path_factory, shared_data, "cut")


def test_swapped_gex_pair_stops_the_run_before_kb_count(reads, tmp_path_factory, shared_data):
    """Acceptance (issue 21): GEX R1 and R2 given the wrong way round in a real run: the FASTQ check
    refuses the library before either kb count starts, naming the library, both files, their lengths and
    the fix (swap the sheet's columns)."""
    wd, res = _read_run(reads, tmp_path_factory, shared_data, "swapped")
    out = res.stdout + res.stderr
    assert res.returncode != 0, out[-3000:]
    for part in ("library L1, gex lane 1", "raw/fastq/L1_gex_R1.fastq.gz has reads of 98 bases",
                 "raw/fastq/L1_gex_R2.fastq.gz has reads of 26 bases", "R1 the short read, 26 bases",
                 "R1 and R2 look swapped: swap the gex_fastq_r1/gex_fastq_r2 columns of library L1",
                 "logs/rna_fastq_check/L1.log"):
        assert part in out, part
    print("\n" + next(ln for ln in out.splitlines() if "look swapped" in ln))
    lib = wd / "results" / "rna" / "L1"
    assert not (lib / "kb_gex").exists() and not (lib / "kb_guide").exists()
    assert not (wd / "logs" / "kb_count_gex").exists() and not (wd / "logs" / "kb_count_guide").exists()


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
    assert "Traceback" not in out and 'File "' not in out, out[-2000:]  # no Python or Snakemake traceback
    assert not (wd / "results").exists()


def test_config_typo_refused_at_planning_without_traceback(tmp_path):
    wd = minimal_workdir(tmp_path / "screen")
    cfg = wd / "config" / "config.yaml"
    conf = yaml.safe_load(cfg.read_text())
    conf["qualty"] = {"seed": 1}
    cfg.write_text(yaml.safe_dump(conf, sort_keys=False))
    res = snakemake(wd, "-n")
    out = res.stdout + res.stderr
    assert res.returncode != 0 and "qualty" in out and "quality" in out, out[-2000:]
    assert "Traceback" not in out and 'File "' not in out, out[-2000:]


def test_errors_share_the_known_base():
    from pairedscreen.config import ConfigError
    from pairedscreen.paint.ingest import ImageIngestError
    from pairedscreen.paint.segment import ModelNotAvailableError
    from pairedscreen.provenance import WrongLibraryError
    from pairedscreen.report.inputs import ReportInputError
    from pairedscreen.sheets import SheetError

    for cls in (SheetError, ImageIngestError, FastqError, count.KbError, ConfigError, ModelNotAvailableError,
                WrongLibraryError, ReportInputError):
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


# ---------------------------------------------------------------------------------------------- images
SIM_CHANNELS = {"DNA": 1, "ER": 2, "RNA": 3, "AGP": 4, "Mito": 5}
PATTERN = "{well}_s{site}_w{channel}.tif"


def _qc_thresholds() -> dict:
    """The shipped image-QC thresholds (config/config.yaml, as the workflow passes them)."""
    conf = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    return dict(conf["paint"]["qc"])


@pytest.fixture(scope="module")
def tiny_plate(tmp_path_factory) -> Path:
    """The tiny preset's simulated plate P1 (images + truth only)."""
    from pairedscreen.simulate import build_spec, make_registry
    from pairedscreen.simulate.paint import simulate_paint

    out = tmp_path_factory.mktemp("tiny_paint")
    spec = build_spec("tiny", None, {})
    simulate_paint(make_registry(spec), spec, out)
    return out


def _copy_plate(tiny_plate: Path, dst: Path) -> Path:
    images = dst / "images" / "P1"
    shutil.copytree(tiny_plate / "raw" / "images" / "P1", images)
    wells = sorted({p.name.split("_")[0] for p in images.iterdir()})
    pm = dst / "P1.tsv"
    pm.write_text("well\tperturbation_id\treplicate\n" + "".join(f"{w}\tX\t1\n" for w in wells))
    return images


def _index(images: Path, out: Path):
    from pairedscreen.paint.stages import run_paint_index

    return run_paint_index("P1", images, images.parent.parent / "P1.tsv", PATTERN, SIM_CHANNELS, "error",
                       _qc_thresholds(), out)


def _sites(images: Path) -> list[tuple[str, int]]:
    return sorted({(p.name.split("_")[0], int(p.name.split("_")[1][1:])) for p in images.iterdir()})


def test_true_tiny_sites_are_not_flagged(tiny_plate, tmp_path):
    images = _copy_plate(tiny_plate, tmp_path)
    idx = _index(images, tmp_path / "image_index.parquet")
    assert len(idx) == 5 * len(_sites(images)) and (idx["status"] == "ok").all()
    assert not idx["qc_flag"].any(), idx.loc[idx["qc_flag"], ["well", "site", "channel", "qc_reason"]]
    thr = _qc_thresholds()
    assert (idx["signal_to_noise"] > 2 * thr["min_signal_to_noise"]).all()  # a margin, not a knife edge
    assert idx["focus_plls"].between(thr["min_focus_plls"] + 1, thr["max_focus_plls"] - 0.3).all()


@pytest.fixture(scope="module")
def bad_sites(tiny_plate, tmp_path_factory):
    """A copy of the tiny plate with one blank, one noise-only and one defocused site (all channels)."""
    import tifffile
    from scipy import ndimage

    from pairedscreen.paint.image_qc import noise_sd

    root = tmp_path_factory.mktemp("bad_sites")
    images = _copy_plate(tiny_plate, root)
    sites = _sites(images)
    blank, noise, blur = sites[0], sites[1], sites[2]
    rng = np.random.default_rng(7)
    for name, token in SIM_CHANNELS.items():
        illum = np.load(tiny_plate / "truth" / "illumination" / f"P1_{name}.npy")
        for (well, site), kind in ((blank, "blank"), (noise, "noise"), (blur, "blur")):
            f = images / f"{well}_s{site}_w{token}.tif"
            img = tifffile.imread(f).astype(np.float64)
            sd = noise_sd(img)
            if kind == "blank":  # the site's own background level, vignetting and pixel noise, no cells
                new = np.percentile(img, 10) * illum + rng.normal(0, sd, img.shape)
            elif kind == "noise":  # the site's own pixels in random places: same histogram, no structure
                new = rng.permutation(img.ravel()).reshape(img.shape)
            else:  # out of focus: the optics blur the field, the camera adds its noise
                new = ndimage.gaussian_filter(img, 4) + rng.normal(0, sd, img.shape)
            tifffile.imwrite(f, np.clip(np.round(new), 0, 65535).astype(np.uint16))
    out = root / "results" / "image_index.parquet"
    _index(images, out)
    return {"index": pd.read_parquet(out), "blank": blank, "noise": noise, "blur": blur, "sites": sites}


def _site_rows(idx, site):
    return idx[(idx["well"] == site[0]) & (idx["site"] == site[1])]


@pytest.mark.parametrize("kind,reason", [("blank", "blank: signal-to-noise"),
                                         ("noise", "noise-only: PowerLogLogSlope"),
                                         ("blur", "defocused (blur): PowerLogLogSlope")])
def test_bad_site_flagged_with_its_reason(bad_sites, kind, reason):
    """Recorded in image_index.parquet with the reason: blank and noise-only on every channel; defocus on
    the channels sharp enough to lose their fine structure (the DNA always; a site counts as flagged when
    any channel is)."""
    rows = _site_rows(bad_sites["index"], bad_sites[kind]).set_index("channel")
    assert len(rows) == 5 and (rows["status"] == "ok").all()  # flagged, not quarantined: the files are fine
    hit = rows["qc_reason"].str.contains(reason, regex=False)
    if kind == "blur":
        assert hit["DNA"] and hit.sum() >= 3, rows["qc_reason"].tolist()
        assert rows.loc[hit, "qc_flag"].all()
    else:
        assert rows["qc_flag"].all() and hit.all(), rows["qc_reason"].tolist()


def test_only_the_bad_sites_are_flagged(bad_sites):
    idx = bad_sites["index"]
    flagged = set(map(tuple, idx.loc[idx["qc_flag"], ["well", "site"]].drop_duplicates().to_numpy()))
    assert flagged == {bad_sites["blank"], bad_sites["noise"], bad_sites["blur"]}


def test_flagged_sites_kept_out_of_illumination_and_segmentation(bad_sites, tmp_path, monkeypatch):
    from pairedscreen.paint import segment
    from pairedscreen.paint.illumination import compute_plate_illumination
    from pairedscreen.paint.ingest import usable_sites

    idx = bad_sites["index"]
    bad = {bad_sites["blank"], bad_sites["noise"], bad_sites["blur"]}
    good = [s for s in bad_sites["sites"] if s not in bad]
    assert usable_sites(idx) == good
    # the illumination function of the plate is the one of its good sites alone
    keep = [(w, s) not in bad for w, s in zip(idx["well"], idx["site"], strict=True)]
    with_bad = compute_plate_illumination(idx, smoothing_sigma=SCHEMA["paint.illumination.smoothing_sigma"])
    without = compute_plate_illumination(idx[keep].drop(columns=["qc_flag", "qc_reason"]),
                                         smoothing_sigma=SCHEMA["paint.illumination.smoothing_sigma"])
    for name in SIM_CHANNELS:
        np.testing.assert_array_equal(with_bad[name], without[name])
    # segmentation sees only the good sites; the flagged ones are in the summary as qc_flagged
    seen: list[int] = []

    def fake_segment(imgs, *a, **k):
        seen.extend([1] * len(imgs))
        z = np.zeros(imgs[0].shape[-2:], np.uint16)
        return [segment.SiteMasks(z, z, z) for _ in imgs]

    monkeypatch.setattr(segment, "segment_sites", fake_segment)
    cfg = {"batch_size": 4,     # a valid paint.segmentation section (the models are never loaded here)
           "nuclei": {"model": "nuclei", "channel": "DNA", "diameter": 12},
           "cells": {"model": "cyto3", "channel": "AGP", "nuclear_channel": "DNA", "diameter": 26}}
    _, summary = segment.segment_chunk(idx, tmp_path / "masks", cfg)
    assert len(seen) == len(good)
    status = {(w, int(s)): st for w, s, st in zip(summary["well"], summary["site"], summary["status"],
                                                  strict=True)}
    assert {s for s, st in status.items() if st == "qc_flagged"} == bad
    assert {s for s, st in status.items() if st == "ok"} == set(good)


def test_all_black_plate(tiny_plate, tmp_path):
    """Every image zero: image QC flags every site; illumination stops naming plate, channel and fix."""
    import tifffile

    from pairedscreen.paint.ingest import ImageIngestError
    from pairedscreen.paint.stages import run_paint_illum

    images = _copy_plate(tiny_plate, tmp_path)
    for f in images.iterdir():
        tifffile.imwrite(f, np.zeros_like(tifffile.imread(f)))
    idx = _index(images, tmp_path / "image_index.parquet")
    assert idx["qc_flag"].all() and idx["qc_reason"].str.startswith("blank: flat image").all()
    illum_dir = tmp_path / "illum"
    with pytest.raises(ImageIngestError) as e:
        run_paint_illum(tmp_path / "image_index.parquet", illum_dir, {"smoothing_sigma": 0.0})
    msg = _expect(e, "plate P1", "channel DNA", f"all {len(_sites(images))} sites", "blank")
    assert "non-positive mean" not in msg
    assert not illum_dir.exists() and not [p for p in tmp_path.iterdir() if p.name.startswith(".illum")]
    # without image QC the black images reach the estimator: still the plate, the channel and a fix
    from pairedscreen.paint.illumination import compute_plate_illumination

    with pytest.raises(ImageIngestError) as e:
        compute_plate_illumination(idx.drop(columns=["qc_flag", "qc_reason"]),
                                   smoothing_sigma=SCHEMA["paint.illumination.smoothing_sigma"])
    _expect(e, "plate P1, channel DNA", "non-positive mean")


def test_several_missing_channels_reported_at_once(tiny_plate, tmp_path):
    from pairedscreen.paint.ingest import ImageIngestError

    images = _copy_plate(tiny_plate, tmp_path)
    (w1, s1), (w2, s2) = _sites(images)[:2]
    gone = [images / f"{w1}_s{s1}_w2.tif", images / f"{w2}_s{s2}_w4.tif", images / f"{w2}_s{s2}_w5.tif"]
    for f in gone:
        f.unlink()
    out = tmp_path / "results" / "image_index.parquet"
    with pytest.raises(ImageIngestError) as e:
        _index(images, out)
    msg = _expect(e, "2 image problems", f"well {w1} site {s1}", f"well {w2} site {s2}", "channel ER",
                  "channels AGP (file channel 4), Mito (file channel 5)", "on_bad_image: quarantine")
    for f in gone:
        assert str(f) in msg
    assert not out.parent.exists() or not any(out.parent.iterdir())


def test_checks_are_deterministic(reads, tiny_plate, tmp_path):
    """The new outputs (fastq_check.json, the image index with its QC columns) are byte-identical on rerun."""
    guides = _guide_sheet(tmp_path / "guides.tsv")
    outs = []
    for k in range(2):
        out = tmp_path / f"run{k}" / "fastq_check.json"
        r1, r2 = [reads["R1"]], [reads["R2"]]
        run_fastq_check("L1", "10xv2", r1, r2, r1, r2, guides, out, threads=2 - k)
        outs.append(out.read_bytes())
    assert outs[0] == outs[1]
    images = _copy_plate(tiny_plate, tmp_path / "plate")
    idx = [(_index(images, tmp_path / f"idx{k}.parquet"), (tmp_path / f"idx{k}.parquet").read_bytes())[1]
           for k in range(2)]
    assert idx[0] == idx[1]
