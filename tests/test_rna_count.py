"""Counting (kb ref / kb count / load_counts) on real reads, and the guide technology strings."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import scipy.io
import scipy.sparse as sp
from scipy.stats import spearmanr

from pairedscreen.rna import count

# ----------------------------------------------------------------------------- technology strings
SEQS = ("ACGTACGTACGTACGTACGT", "TTTTACGTACGTACGTACGA")


def _sheet(pattern: str, read: str = "R2", seqs: tuple[str, ...] = SEQS) -> pd.DataFrame:
    return pd.DataFrame({"id": [f"g{i}" for i in range(len(seqs))], "read": read, "pattern": pattern,
                         "sequence": list(seqs)})


def test_guide_technology_from_read_and_pattern():
    assert count.guide_technology("10xv3", _sheet("^NNNNNNNNNN(BC)")) == "0,0,16:0,16,28:1,10,30"
    assert count.guide_technology("10xv2", _sheet("^(BC)")) == "0,0,16:0,16,26:1,0,20"
    assert count.guide_technology("10xv3", _sheet("^NNNN(BC)", read="R1")) == "0,0,16:0,16,28:0,4,24"
    # an anchor before the protospacer: position unknown -> scan the whole read
    anchor = "GCTATGCTGTTTCCAGCTTAGCTCTTAAAC(BC)"
    assert count.guide_technology("0,0,16:0,16,28:1,0,0", _sheet(anchor)) == "0,0,16:0,16,28:1,0,0"
    # mixed lengths cannot use a fixed window either
    mixed = _sheet("^NNNNNNNNNN(BC)", seqs=("ACGTACGTACGTACGTACGT", "ACGTACGTACGTACGTACGTA"))
    assert count.guide_technology("10xv3", mixed) == "0,0,16:0,16,28:1,0,0"
    with pytest.raises(ValueError):
        count.guide_technology("10xv3", _sheet("(BC)NNN^"))
    with pytest.raises(ValueError):
        count.guide_technology("dropseq", _sheet("^(BC)"))
    assert count.kb_technology("10xv2") == "10XV2"
    assert count.kb_technology("1,0,16:1,16,26:0,0,0") == "1,0,16:1,16,26:0,0,0"


def test_kb_failure_raises_with_log_tail(tmp_path):
    with pytest.raises(count.KbError) as err:
        count.kb_count(tmp_path / "missing.idx", tmp_path / "missing_t2g.txt", [tmp_path / "a_R1.fq"],
                       [tmp_path / "a_R2.fq"], "10xv3", None, tmp_path / "out", 1, memory="256M")
    msg = str(err.value)
    log_text = (tmp_path / "out" / "kb_count.log").read_text()
    assert "kb count failed" in msg and "kb's log ends with:" in msg
    # the message quotes kb's own words (an ERROR line of its log), not only the log's path, and carries the
    # whole text for the job's log; kb-python's Python traceback is left out of the quoted tail
    error_line = next(ln for ln in log_text.splitlines() if " ERROR " in ln)
    assert error_line in msg and err.value.log_text in log_text and err.value.log_text.strip()
    assert "Traceback" in log_text and "Traceback" not in msg
    assert "Hint" not in msg  # no pseudoalignment ran: no swap hint


def test_log_tail_and_hint_on_invented_logs():
    text = ("[quant] processed 25,000 reads, 0 reads pseudoaligned\nERROR x\nTraceback (most recent call "
            "last):\n  File \"a.py\", line 1\n    raise E\nsubprocess.CalledProcessError: boom\nlast\n")
    assert count.log_tail(text) == ("[quant] processed 25,000 reads, 0 reads pseudoaligned\nERROR x\n"
                                    "subprocess.CalledProcessError: boom\nlast")
    assert count.log_tail(text, 2) == "subprocess.CalledProcessError: boom\nlast"
    assert "pseudoaligned 0 of 25,000 reads" in count.kb_hint(text)
    assert "R1/R2 are not swapped" in count.kb_hint(text)
    assert count.kb_hint(text.replace(", 0 reads", ", 12 reads")) == ""
    assert count.kb_hint("nothing") == ""


def _fake_kb(out: Path, barcodes, ids, names, x) -> None:
    d = out / "counts_unfiltered"
    d.mkdir(parents=True)
    stem = "cells_x_genes"
    scipy.io.mmwrite(d / f"{stem}.mtx", sp.coo_matrix(np.asarray(x)))
    (d / f"{stem}.barcodes.txt").write_text("\n".join(barcodes) + "\n")
    (d / f"{stem}.genes.txt").write_text("\n".join(ids) + "\n")
    if names is not None:
        (d / f"{stem}.genes.names.txt").write_text("\n".join(names) + "\n")


def test_load_library_union_of_barcodes(tmp_path):
    _fake_kb(tmp_path / "gex", ["AAAA", "CCCC"], ["G1", "G2", "G3"], ["Actb", "Dup", "Dup"],
             [[1, 0, 2], [0, 5, 0]])
    _fake_kb(tmp_path / "guide", ["CCCC", "GGGG"], ["g1", "g2"], None, [[3, 0], [0, 7]])
    gex, guides = count.load_library(tmp_path / "gex", tmp_path / "guide", "L1", batch="B1")
    assert list(gex.obs_names) == list(guides.obs_names) == ["L1_AAAA", "L1_CCCC", "L1_GGGG"]
    assert list(gex.var_names) == ["Actb", "Dup", "Dup-1"]
    assert list(gex.var["gene_id"]) == ["G1", "G2", "G3"]
    np.testing.assert_array_equal(gex.X.toarray(), [[1, 0, 2], [0, 5, 0], [0, 0, 0]])
    np.testing.assert_array_equal(guides.X.toarray(), [[0, 0], [3, 0], [0, 7]])
    assert list(gex.obs["barcode"]) == ["AAAA", "CCCC", "GGGG"] and set(gex.obs["batch"]) == {"B1"}


# ----------------------------------------------------------------------------- real data
@pytest.mark.realdata
def test_kb_chain_reproduces_kb_python_fixture(shared_data, tmp_path):
    """kb_python's lamanno fixture (the README's expected outputs): 25k real 10x v2 reads, 28 targets
    (20 cDNA + 8 intron) and the bustools count matrix kb_python ships (counts/spliced.* ==
    counts/unspliced.*: one matrix over the t2g, which maps cDNA and intron targets to the same
    gene). Their bus file was corrected with the 737K v2 on-list (278 of its barcodes survive), so we
    count with that list."""
    d = shared_data("scrna_10xv2_mouse_kb_python")
    lam = d / "lamanno"
    targets = tmp_path / "targets.fa"
    targets.write_text((lam / "cdna.fa").read_text() + (lam / "intron.fa").read_text())
    ref = count.kb_ref(targets, None, tmp_path / "ref", 2, t2g=lam / "t2g.txt")
    # the reads split over two lanes (kb count gets R1/R2 pairs per lane) must give kb_python's matrix
    lanes: dict[int, list[Path]] = {1: [], 2: []}
    for mate in (1, 2):
        with gzip.open(lam / f"R{mate}.fastq.gz", "rt") as fh:
            lines = fh.readlines()
        cut = 4 * (len(lines) // 8)
        for k, chunk in enumerate((lines[:cut], lines[cut:])):
            path = tmp_path / f"lane{k}_R{mate}.fastq.gz"
            with gzip.open(path, "wt") as out:
                out.writelines(chunk)
            lanes[mate].append(path)
    wl = d / "10x_V2_barcode_whitelist.txt.gz"
    count.kb_count(ref["index"], ref["t2g"], lanes[1], lanes[2], "10xv2", wl, tmp_path / "kb", 2,
                   memory="512M")
    assert json.loads((tmp_path / "kb" / "run_info.json").read_text())["n_processed"] == 25000
    ours = count.load_counts(tmp_path / "kb", "lam")

    exp = sp.csr_matrix(scipy.io.mmread(lam / "counts" / "spliced.mtx")).astype(np.int64)
    exp_bc = (lam / "counts" / "spliced.barcodes.txt").read_text().split()
    exp_genes = (lam / "counts" / "spliced.genes.txt").read_text().split()
    our_bc = list(ours.obs["barcode"])
    our_genes = list(ours.var["gene_id"])
    print(f"\nkb fixture: {exp.shape[0]} barcodes x {exp.shape[1]} genes, {int(exp.sum())} UMIs; "
          f"ours: {ours.n_obs} x {ours.n_vars}, {int(ours.X.sum())} UMIs")
    assert set(our_bc) == set(exp_bc) and len(our_bc) == len(exp_bc)
    assert set(our_genes) == set(exp_genes)
    rows, cols = pd.Index(our_bc).get_indexer(exp_bc), pd.Index(our_genes).get_indexer(exp_genes)
    ours_m = sp.csr_matrix(ours.X)[rows][:, cols]
    diff = int(abs(ours_m - exp).sum())
    print(f"kb fixture: cells differing {int((abs(ours_m - exp).sum(axis=1) > 0).sum())}, |diff| = {diff}")
    assert diff == 0
    assert list(ours.obs_names[:1]) == [f"lam_{our_bc[0]}"]


@pytest.mark.realdata
def test_kb_on_swapped_reads_says_why(shared_data, tmp_path):
    """The lamanno reads given to kb count the wrong way round (what the FASTQ check now refuses first):
    kallisto pseudoaligns 0 reads and kb-python fails; the error quotes that line and hints at the
    chemistry / swapped mates, and names no file of the removed output folder."""
    d = shared_data("scrna_10xv2_mouse_kb_python")
    lam = d / "lamanno"
    targets = tmp_path / "targets.fa"
    targets.write_text((lam / "cdna.fa").read_text() + (lam / "intron.fa").read_text())
    ref = count.kb_ref(targets, None, tmp_path / "ref", 1, t2g=lam / "t2g.txt")
    with pytest.raises(count.KbError) as err:
        count.kb_count(ref["index"], ref["t2g"], [lam / "R2.fastq.gz"], [lam / "R1.fastq.gz"], "10xv2",
                       d / "10x_V2_barcode_whitelist.txt.gz", tmp_path / "kb", 1, memory="512M")
    msg = str(err.value)
    print("\n" + msg)
    assert "processed 25,000 reads, 0 reads pseudoaligned" in msg
    assert "Hint: kallisto pseudoaligned 0 of 25,000 reads" in msg and "R1/R2 are not swapped" in msg
    assert str(tmp_path / "kb" / "kb_count.log") not in msg and "Traceback" not in msg


def _exact_guide_hits(r2: Path, protospacers: set[str], length: int = 20) -> tuple[int, int, dict[str, int]]:
    n = hit = 0
    per_guide: dict[str, int] = {}
    with gzip.open(r2, "rt") as fh:
        for i, line in enumerate(fh):
            if i % 4 != 1:
                continue
            n += 1
            s = line.strip()
            for o in range(len(s) - length + 1):
                k = s[o : o + length]
                if k in protospacers:
                    hit += 1
                    per_guide[k] = per_guide.get(k, 0) + 1
                    break
    return n, hit, per_guide


@pytest.mark.realdata
def test_guide_counting_on_real_flex_reads(shared_data, tmp_path):
    """Real 10x Flex guide-capture reads (58k pairs; protospacer after one of two scaffold anchors,
    so at no fixed offset). The README measures 85.4% of R2 holding an exact anchor+protospacer."""
    d = shared_data("perturbseq_10x_flex_crispr_guides_cyto")
    lib = pd.read_csv(d / "crispr_guides.tsv", sep="\t", header=None, names=["id", "anchor", "sequence"])
    sheet = lib.assign(name=lib["id"], read="R2", pattern=lib["anchor"] + "(BC)")
    tech = count.guide_technology("0,0,16:0,16,28:1,0,0", sheet)
    assert tech == "0,0,16:0,16,28:1,0,0"
    ref = count.kb_ref_guides(sheet, tmp_path / "ref")
    head = (tmp_path / "ref" / "features.tsv").read_text().splitlines()[0].split("\t")
    assert head == [lib["sequence"][0], lib["id"][0]]          # kite: sequence, then name
    count.kb_count(ref["index"], ref["t2g"], [d / "crispr_R1.fastq.gz"], [d / "crispr_R2.fastq.gz"], tech,
                   d / "737K-fixed-rna-profiling.txt.gz", tmp_path / "kb", 2, memory="512M", kite=True)
    info = json.loads((tmp_path / "kb" / "run_info.json").read_text())
    frac = info["n_pseudoaligned"] / info["n_processed"]
    guides = count.load_counts(tmp_path / "kb", "flex")
    umis = np.asarray(guides.X.sum(axis=0)).ravel()

    n, hit, per_guide = _exact_guide_hits(d / "crispr_R2.fastq.gz", set(lib["sequence"]))
    seq_of = dict(zip(lib["id"], lib["sequence"], strict=True))
    exact = np.array([per_guide.get(seq_of[g], 0) for g in guides.var_names])
    rho = spearmanr(exact[(exact > 0) | (umis > 0)], umis[(exact > 0) | (umis > 0)]).statistic
    n_bc = int((np.asarray(guides.X.sum(axis=1)).ravel() > 0).sum())
    print(f"\nflex guides: {info['n_processed']} reads, {frac:.3f} assigned to a guide by kb "
          f"(exact + 1 mismatch); exact protospacer anywhere in R2 (independent scan): {hit / n:.3f}; "
          f"{int(umis.sum())} UMIs in {n_bc} on-list barcodes, {int((umis > 0).sum())} guides seen; "
          f"Spearman per-guide UMIs vs exact reads {rho:.3f}")
    assert info["n_processed"] == n
    assert frac >= 0.85 and frac >= hit / n
    assert rho > 0.9
