"""The FASTQ scan (ISA-L inflate, in-place newline scan) agrees with Python's ``gzip`` and catches cuts.

Real 10x v2 R2 reads (``../shared/data/scrna_10xv2_mouse_kb_python``) are trimmed to planted random
lengths and written as a multi-member gzip (bgzip-like 64 KiB members, then a ``cat`` of two lanes at
another level). Record counts and every read's length are compared with Python's ``gzip`` reader and
with the planted lengths, at read sizes that cut records, lines and members anywhere; a file cut inside
any member, or with a flipped byte, must be reported.
"""

from __future__ import annotations

import gzip
import zlib
from pathlib import Path

import numpy as np
import pytest

from pairedscreen.rna.fastq import scan_fastq


def _records(path: Path) -> list[bytes]:
    with gzip.open(path, "rb") as fh:
        lines = fh.read().split(b"\n")
    return [b"\n".join(lines[i:i + 4]) + b"\n" for i in range(0, len(lines) - 1, 4)]


@pytest.fixture(scope="module")
def multi(shared_data, tmp_path_factory) -> tuple[Path, np.ndarray, list[int]]:
    """A multi-member gzip of trimmed reads, its planted lengths and the member end offsets."""
    src = shared_data("scrna_10xv2_mouse_kb_python") / "R2.fastq.gz"
    rng = np.random.default_rng(7)
    recs, lengths = [], []
    for rec in _records(src):
        head, seq, plus, qual = rec.split(b"\n")[:4]
        n = int(rng.integers(1, len(seq) + 1))
        recs.append(b"\n".join([head, seq[:n], plus, qual[:n]]) + b"\n")
        lengths.append(n)
    half = len(recs) // 2
    lane1, lane2 = b"".join(recs[:half]), b"".join(recs[half:])
    members = [gzip.compress(lane1[i:i + 65536], compresslevel=6) for i in range(0, len(lane1), 65536)]
    members.append(gzip.compress(lane2, compresslevel=1))  # a second lane cat'ed on
    path = tmp_path_factory.mktemp("multi") / "R2_multi.fastq.gz"
    path.write_bytes(b"".join(members))
    ends = list(np.cumsum([len(m) for m in members]))
    return path, np.array(lengths), ends


def _gzip_lengths(path: Path) -> np.ndarray:
    with gzip.open(path, "rb") as fh:
        lines = fh.read().split(b"\n")
    return np.array([len(s) for s in lines[1::4]])


@pytest.mark.parametrize("chunk", [1, 777, 65536, 1 << 22])
def test_multi_member_agrees_with_gzip(multi, chunk):
    path, planted, ends = multi
    assert len(ends) > 3
    by_gzip = _gzip_lengths(path)
    assert np.array_equal(by_gzip, planted)
    need = 20
    st = scan_fastq(path, need, chunk=chunk)
    assert st.problems == [] and st.gzip
    assert st.records == len(by_gzip)
    assert (st.min_length, st.max_length) == (by_gzip.min(), by_gzip.max())
    assert st.n_short == int((by_gzip < need).sum()) > 0


def test_plain_text_agrees_with_gzip(multi, tmp_path):
    path, planted, _ = multi
    plain = tmp_path / "R2.fastq"
    plain.write_bytes(gzip.decompress(path.read_bytes()))
    st = scan_fastq(plain, 20, chunk=1000)
    assert (st.records, st.min_length, st.max_length, st.gzip) == (len(planted), planted.min(), planted.max(),
                                                                  False)
    assert st.n_short == int((planted < 20).sum())


def test_cut_or_flipped_multi_member_is_caught(multi, tmp_path):
    path, _, ends = multi
    data = path.read_bytes()
    cuts = [ends[0] // 2, (ends[1] + ends[2]) // 2, ends[-2] + 10, len(data) - 4]  # inside members
    for k, cut in enumerate(cuts):
        bad = tmp_path / f"cut{k}.fastq.gz"
        bad.write_bytes(data[:cut])
        with pytest.raises((EOFError, zlib.error)):  # Python's gzip agrees the file is broken
            gzip.decompress(bad.read_bytes())
        st = scan_fastq(bad, 1, chunk=4096)
        assert st.problems and "truncated gzip" in st.problems[0], (cut, st.problems)
        if cut < len(data) - 8:  # the last cut only loses the trailer (CRC, size): every record is there
            assert st.records < len(multi[1])
    flipped = bytearray(data)
    flipped[ends[1] + 200] ^= 0x40
    bad = tmp_path / "flipped.fastq.gz"
    bad.write_bytes(bytes(flipped))
    st = scan_fastq(bad, 1)
    assert st.problems and "corrupt gzip" in st.problems[0], st.problems
