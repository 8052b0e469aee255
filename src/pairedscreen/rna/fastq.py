"""FASTQ checks before counting: one streaming pass per file (sha256 + gzip integrity + records + lengths).

``kb count`` accepts a truncated gzip, counts what it could read and exits 0; it also accepts R1/R2
files with different numbers of reads, or reads too short for the chemistry's barcode + UMI. Those
inputs are caught here, before kb starts: :func:`scan_fastq` reads a file once, hashing its bytes,
inflating it with ISA-L (multi-member gzip or plain text), finding newlines with numpy and measuring every
read's length; :func:`check_library` applies the rules (no empty file, R1/R2 of a lane with equal
record counts, reads long enough for what the technology string reads from that file, R1 not longer
than R2 where R1 holds only the barcode + UMI: a swapped pair) and raises one
:class:`FastqError` listing every problem of the library, each with the file, the finding and the fix.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from isal import isal_zlib

from pairedscreen.errors import PairedscreenError

PathLike = str | os.PathLike
CHUNK = 1 << 20  # compressed bytes read per step (~4.5 MiB inflated: the newline scan stays in cache)
_GZIP_MAGIC = b"\x1f\x8b"
_TRIPLET = re.compile(r"^(-?\d+),(-?\d+),(-?\d+)$")


class FastqError(PairedscreenError):
    """FASTQ files that ``kb count`` must not be run on; the message lists every file, finding and fix."""


@dataclass
class FastqStats:
    """What one pass over a FASTQ found. ``problems`` are structural (gzip, record layout)."""

    path: str
    bytes: int
    sha256: str
    gzip: bool
    records: int
    min_length: int | None
    max_length: int | None
    problems: list[str] = field(default_factory=list)
    # reads shorter than ``required_length`` (0: no requirement given)
    required_length: int = 0
    n_short: int = 0

    def to_dict(self) -> dict:
        return asdict(self)


class _Records:
    """Line bookkeeping over decompressed buffers: whole 4-line records are measured, the rest carried.

    A buffer is scanned in place (``np.frombuffer`` at an offset, no copy); only the record cut by a
    buffer's end is carried, and it is completed with the few bytes of the next buffer that finish it.
    """

    def __init__(self, required_length: int) -> None:
        self.required = int(required_length)
        self.records = 0
        self.min_len: int | None = None
        self.max_len: int | None = None
        self.n_short = 0
        self.problem: str | None = None
        self.carry = b""

    def feed(self, data: bytes, final: bool = False) -> None:
        offset = 0
        if self.carry:
            need = 4 - self.carry.count(b"\n")  # lines still missing from the carried record
            pos = -1
            for _ in range(need):
                pos = data.find(b"\n", pos + 1)
                if pos < 0:
                    break
            if pos < 0:  # the record goes on past this buffer (only with tiny buffers)
                self.carry += data
                if final:
                    self._final()
                return
            head, self.carry = self.carry + data[:pos + 1], b""
            self._block(head, 0)
            offset = pos + 1
        if offset < len(data):
            self._block(data, offset)
        if final:
            self._final()

    def _final(self) -> None:
        """End of the file: a last line without its newline still counts; anything else left is cut."""
        if self.carry and not self.carry.endswith(b"\n"):
            self.carry += b"\n"
        if self.carry and self.carry.count(b"\n") == 4:
            buf, self.carry = self.carry, b""
            self._block(buf, 0)
        if self.carry:
            self._leftover(self.carry.count(b"\n"))

    def _block(self, buf: bytes, offset: int) -> None:
        """Measure the whole records of ``buf[offset:]``; carry the bytes after the last one."""
        arr = np.frombuffer(buf, np.uint8, offset=offset)
        nl = np.flatnonzero(arr == 10)
        n_whole = (len(nl) // 4) * 4
        if n_whole == 0:
            self.carry = buf[offset:]
            return
        ends = nl[:n_whole].reshape(-1, 4)
        # line k of a record starts one past the newline of line k - 1 (the first one after the
        # previous record's last newline)
        head_starts = np.empty(len(ends), dtype=ends.dtype)
        head_starts[0] = 0
        head_starts[1:] = ends[:-1, 3] + 1
        seq = ends[:, 1] - ends[:, 0] - 1
        qual = ends[:, 3] - ends[:, 2] - 1
        if self.problem is None:
            bad = (arr[head_starts] != 64) | (arr[ends[:, 1] + 1] != 43) | (seq != qual)
            if bad.any():
                k = int(np.flatnonzero(bad)[0])
                self.problem = (f"record {self.records + k + 1} (line {4 * (self.records + k) + 1}) is not a "
                                "FASTQ record ('@' header, sequence, '+' line, quality of the same length)")
        self.records += len(seq)
        lo, hi = int(seq.min()), int(seq.max())
        self.min_len = lo if self.min_len is None else min(self.min_len, lo)
        self.max_len = hi if self.max_len is None else max(self.max_len, hi)
        if self.required and lo < self.required:
            self.n_short += int(np.count_nonzero(seq < self.required))
        self.carry = buf[offset + int(ends[-1, 3]) + 1:]

    def _leftover(self, n_lines: int) -> None:
        if n_lines and self.problem is None:
            self.problem = (f"the file ends inside record {self.records + 1} ({n_lines} of its 4 lines): "
                            "the file is cut short")


def scan_fastq(path: PathLike, required_length: int = 0, chunk: int = CHUNK) -> FastqStats:
    """One pass over ``path``: sha256 of its bytes, gzip integrity, records, read lengths.

    Gzip (detected by its magic bytes, several members allowed: bgzip, concatenated lanes) or plain
    text; ISA-L inflates (``isal_zlib``, zlib's API, several times zlib's speed, the GIL released). A gzip
    stream that ends before its end-of-stream marker, fails its CRC or is not deflate data is reported
    in ``problems`` (the records counted up to there are kept), as is a record that is not 4 FASTQ lines.
    """
    path = Path(path)
    h = hashlib.sha256()
    rec = _Records(required_length)
    problems: list[str] = []
    size = 0
    with open(path, "rb") as fh:
        block = fh.read(max(chunk, 2))  # the gzip magic is 2 bytes
        is_gz = block[:2] == _GZIP_MAGIC
        d = isal_zlib.decompressobj(16 + isal_zlib.MAX_WBITS) if is_gz else None
        broken = False
        while block:
            h.update(block)
            size += len(block)
            if d is None:
                rec.feed(block)
            elif not broken:
                try:
                    rec.feed(d.decompress(block))
                    while d.eof and d.unused_data:  # concatenated gzip members (e.g. cat of lanes)
                        rest = d.unused_data
                        d = isal_zlib.decompressobj(16 + isal_zlib.MAX_WBITS)
                        rec.feed(d.decompress(rest))
                except isal_zlib.error as exc:
                    problems.append(f"corrupt gzip data after {size} bytes ({exc})")
                    broken = True
            block = fh.read(chunk)
        if d is not None and not broken:
            try:
                rec.feed(d.flush())
            except isal_zlib.error as exc:
                problems.append(f"corrupt gzip data at the end ({exc})")
                broken = True
            if not d.eof and not broken and size:
                problems.append("truncated gzip: the compressed stream ends before its end marker")
    rec.feed(b"", final=True)
    if rec.problem and not problems:  # a cut gzip also cuts its last record: report the cause once
        problems.append(rec.problem)
    return FastqStats(path=str(path), bytes=size, sha256=h.hexdigest(), gzip=is_gz, records=rec.records,
                      min_length=rec.min_len, max_length=rec.max_len, problems=problems,
                      required_length=int(required_length), n_short=rec.n_short)


def required_lengths(technology: str) -> dict[int, int]:
    """Shortest read each file of a kb technology string must have: ``{file index: length}``.

    ``bc:umi:seq`` segments are ``file,start,end`` triplets (several per part allowed); a segment needs
    ``end`` bases, or ``start + 1`` when ``end`` is 0 (to the end of the read); file -1 is "none".
    E.g. ``0,0,16:0,16,28:1,10,30`` -> ``{0: 28, 1: 30}``.
    """
    need: dict[int, int] = {}
    for part in technology.split(":"):
        nums = [int(x) for x in part.split(",")]
        if len(nums) % 3:
            raise ValueError(f"technology {technology!r}: {part!r} is not file,start,end triplets")
        for i in range(0, len(nums), 3):
            f, start, end = nums[i:i + 3]
            if f < 0:
                continue
            need[f] = max(need.get(f, 0), end if end > 0 else start + 1)
    return need


def barcode_only_r1(technology: str) -> bool:
    """Whether a kb technology string reads the cell barcode and UMI from R1 (file 0) and nothing of the
    insert (``seq``) from it: the layout of 10x 3' (v2, v3) and its guide capture, where R1 is the short
    read (16 + 10 or 16 + 12 bases) and R2 the long one."""
    parts = technology.split(":")
    files = [{int(x) for x in part.split(",")[0::3]} for part in parts]
    return len(parts) == 3 and files[0] == {0} and files[1] == {0} and 0 not in files[2]


@dataclass
class Lane:
    """One R1/R2 pair of a library: ``kind`` gex or guide, ``technology`` the kb string it is counted with."""

    kind: str
    r1: str
    r2: str
    technology: str
    chemistry: str = ""  # the sheet's name for it (10xv3...), for messages


def check_library(library: str, lanes: Sequence[Lane], threads: int = 1) -> dict:
    """Scan every FASTQ of a library once and apply the rules; raise :class:`FastqError` with all problems.

    Files are scanned ``threads`` at a time (inflate and sha256 release the GIL). Returns
    ``{"library", "files": [FastqStats dicts + kind/mate/lane], "lanes": [...]}`` for ``fastq_check.json``.
    """
    jobs: dict[tuple[str, int], None] = {}
    for lane in lanes:
        need = required_lengths(lane.technology)
        for fq, idx in ((lane.r1, 0), (lane.r2, 1)):
            jobs[(str(fq), need.get(idx, 1))] = None
    # largest first, so that the big gex R2 does not start last on a busy thread
    keys = sorted(jobs, key=lambda k: -_size(k[0]))
    if threads > 1 and len(keys) > 1:
        with ThreadPoolExecutor(max_workers=threads) as pool:
            scans = dict(zip(keys, pool.map(lambda k: scan_fastq(*k), keys), strict=True))
    else:
        scans = {k: scan_fastq(*k) for k in keys}
    problems: list[str] = []
    files: list[dict] = []
    lane_rows: list[dict] = []
    per_kind: dict[str, int] = {}
    for lane in lanes:
        n = per_kind[lane.kind] = per_kind.get(lane.kind, 0) + 1
        need = required_lengths(lane.technology)
        r1, r2 = (scans[(str(fq), need.get(idx, 1))] for fq, idx in ((lane.r1, 0), (lane.r2, 1)))
        swapped = _swap_problem(library, lane, n, r1, r2)
        for mate, st in (("R1", r1), ("R2", r2)):
            files.append({"kind": lane.kind, "mate": mate, "lane": n, **st.to_dict()})
            problems += _file_problems(library, lane, mate, st, short=swapped is None)
        if swapped:
            problems.append(swapped)
        lane_rows.append({"kind": lane.kind, "lane": n, "technology": lane.technology,
                          "r1_records": r1.records, "r2_records": r2.records})
        if r1.records and r2.records and r1.records != r2.records and not (r1.problems or r2.problems):
            problems.append(
                f"library {library}, {lane.kind} lane {n}: {r1.path} has {r1.records} reads but its mate "
                f"{r2.path} has {r2.records}. Fix: R1 and R2 must come from the same run and hold the same "
                "reads in the same order; re-export or re-copy the pair (a cut file is a common cause)")
    if problems:
        raise FastqError(f"library {library}: {len(problems)} FASTQ problem(s); kb count was not started:\n- "
                         + "\n- ".join(problems))
    return {"library": library, "files": files, "lanes": lane_rows}


def _size(path: str) -> int:
    try:
        return os.path.getsize(path)
    except OSError:  # reported by the scan itself
        return 0


def _swap_problem(library: str, lane: Lane, n: int, r1: FastqStats, r2: FastqStats) -> str | None:
    """R1 and R2 given the wrong way round: the technology reads only the barcode + UMI from R1, yet R1's
    reads are longer than R2's (e.g. 10xv3 GEX: R1 90 bases, R2 28). kb would count such a pair without
    an error and pseudoalign (almost) no read; the message names both files, their lengths and the fix."""
    if not barcode_only_r1(lane.technology) or r1.max_length is None or r2.max_length is None \
            or r1.problems or r2.problems or r1.max_length <= r2.max_length:
        return None
    need = required_lengths(lane.technology)
    chem = f"{lane.chemistry} ({lane.technology})" if lane.chemistry else repr(lane.technology)
    insert = "guide" if lane.kind == "guide" else "cDNA"
    r2_need = f", at least {need[1]} bases" if need.get(1, 1) > 1 else ""
    return (f"library {library}, {lane.kind} lane {n}: R1 {r1.path} has reads of {_span(r1)} bases but R2 "
            f"{r2.path} has reads of {_span(r2)} bases, while {lane.kind} technology {chem} reads only the "
            f"cell barcode + UMI from R1 (expected: R1 the short read, {need[0]} bases) and the {insert} "
            f"from R2 (expected: R2 the long read{r2_need}). Fix: R1 and R2 look swapped: "
            f"swap the {lane.kind}_fastq_r1/{lane.kind}_fastq_r2 columns of library {library} in "
            "config/rna_libraries.tsv (the sheet named by sheets.rna_libraries)")


def _span(st: FastqStats) -> str:
    return str(st.min_length) if st.min_length == st.max_length else f"{st.min_length}-{st.max_length}"


def _file_problems(library: str, lane: Lane, mate: str, st: FastqStats, *, short: bool = True) -> list[str]:
    where = f"library {library}, {lane.kind} {mate}: {st.path}"
    recopy = "re-copy or re-download the file and check it with `gzip -t`"
    if st.bytes == 0:
        return [f"{where}: the file is empty (0 bytes). Fix: point the sheet's {lane.kind}_fastq_"
                f"{mate.lower()} column at the real FASTQ, or re-copy it"]
    out = []
    if st.problems:
        out += [f"{where}: {p} ({st.records} complete reads before it). Fix: {recopy}" for p in st.problems]
    elif st.records == 0:
        out.append(f"{where}: no reads in the file ({st.bytes} bytes, 0 FASTQ records). Fix: point the sheet "
                   "at the FASTQ holding the reads, or re-copy it")
    if st.n_short and short:  # a swapped pair is reported once, by _swap_problem
        chem = f"{lane.chemistry} ({lane.technology})" if lane.chemistry else repr(lane.technology)
        out.append(
            f"{where}: {st.n_short} of {st.records} reads are shorter than the {st.required_length} bases "
            f"that {lane.kind} technology {chem} reads from {mate} (reads are "
            f"{st.min_length}-{st.max_length} bases). "
            "Fix: set the library's chemistry to the kit it was made with (10xv2: 16+10 bases on R1, 10xv3: "
            "16+12), correct the guide pattern/sequence length, or check that R1 and R2 are not swapped")
    return out
