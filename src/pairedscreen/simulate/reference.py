"""Synthetic reference for the simulated RNA arm: transcript sequences, a GTF and a barcode on-list.

``transcriptome.fa`` holds one record per transcript (header = transcript id), and ``genes.gtf`` places each
transcript on its own record as a single exon, so the same FASTA serves as the "genome" that ``kb ref``
splits with the GTF and as a plain transcriptome. A few genes have a second isoform that skips an internal
segment of the primary one (shared k-mers, as with real alternative exons).

Sequences are held as base codes 0..3 (``A C G T``) in one concatenated ``uint8`` array.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from pairedscreen.io import atomic_output
from pairedscreen.simulate.registry import Registry
from pairedscreen.simulate.spec import ScreenSpec

BASES = np.frombuffer(b"ACGT", dtype=np.uint8)
TX_LENGTH = (800, 1500)
ALT_ISOFORM_FRACTION = 0.05
WHITELIST_SIZE = 20_000
BARCODE_LENGTH = 16
MIN_BARCODE_DISTANCE = 3
_STREAM_REFERENCE = 101
_STREAM_WHITELIST = 102


@dataclass(frozen=True)
class Reference:
    """Transcripts of the synthetic reference; ``codes[offset[i]:offset[i] + length[i]]`` is transcript i."""

    transcripts: pd.DataFrame   # transcript_id, gene_id, gene_name, gene_index, isoform, offset, length
    codes: np.ndarray           # uint8 base codes of all transcripts, concatenated
    primary: np.ndarray         # per gene (registry order): row of its primary transcript
    alternative: np.ndarray     # per gene: row of its second isoform, -1 if none


def decode(codes: np.ndarray) -> np.ndarray:
    """Base codes (any shape) -> ASCII bytes of the same shape."""
    return BASES[codes]


def _transcript_rows(registry: Registry, rng: np.random.Generator) -> tuple[list[dict], list[np.ndarray]]:
    genes = registry.genes
    n = len(genes)
    lengths = rng.integers(TX_LENGTH[0], TX_LENGTH[1] + 1, n)
    background = np.flatnonzero(genes["role"].to_numpy() == "background")
    n_alt = max(2, round(ALT_ISOFORM_FRACTION * n))
    alt_genes = set(rng.choice(background, size=min(n_alt, background.size), replace=False).tolist())
    rows: list[dict] = []
    seqs: list[np.ndarray] = []
    for g, gene in enumerate(genes.itertuples()):
        seq = rng.integers(0, 4, lengths[g], dtype=np.uint8)
        isoforms = [seq]
        if g in alt_genes:
            start = int(rng.integers(200, seq.size - 400))
            skip = int(rng.integers(100, 251))
            isoforms.append(np.concatenate([seq[:start], seq[start + skip:]]))
        for k, iso in enumerate(isoforms):
            rows.append({"transcript_id": f"SYNT{len(rows) + 1:06d}", "gene_id": gene.gene_id,
                         "gene_name": gene.gene_name, "gene_index": g, "isoform": k + 1,
                         "length": iso.size})
            seqs.append(iso)
    return rows, seqs


def make_reference(registry: Registry, spec: ScreenSpec) -> Reference:
    """Deterministic transcript sequences for ``registry.genes`` (one or two isoforms per gene)."""
    rng = np.random.default_rng([spec.seed, _STREAM_REFERENCE])
    rows, seqs = _transcript_rows(registry, rng)
    tx = pd.DataFrame(rows)
    tx["offset"] = np.concatenate([[0], np.cumsum(tx["length"].to_numpy())[:-1]])
    n_genes = len(registry.genes)
    primary = np.full(n_genes, -1, dtype=np.int64)
    alternative = np.full(n_genes, -1, dtype=np.int64)
    gi = tx["gene_index"].to_numpy()
    iso = tx["isoform"].to_numpy()
    primary[gi[iso == 1]] = np.flatnonzero(iso == 1)
    alternative[gi[iso == 2]] = np.flatnonzero(iso == 2)
    return Reference(transcripts=tx, codes=np.concatenate(seqs), primary=primary, alternative=alternative)


def _fasta_text(ref: Reference, width: int = 60) -> str:
    ascii_codes = decode(ref.codes).tobytes().decode()
    out: list[str] = []
    for t in ref.transcripts.itertuples():
        seq = ascii_codes[t.offset:t.offset + t.length]
        out.append(f">{t.transcript_id} gene_id={t.gene_id} gene_name={t.gene_name}\n")
        out.extend(seq[i:i + width] + "\n" for i in range(0, len(seq), width))
    return "".join(out)


def _gtf_text(ref: Reference) -> str:
    lines: list[str] = []
    for t in ref.transcripts.itertuples():
        gene_attr = f'gene_id "{t.gene_id}"; gene_name "{t.gene_name}"; gene_biotype "protein_coding";'
        tx_attr = (f'{gene_attr} transcript_id "{t.transcript_id}"; '
                   f'transcript_name "{t.gene_name}-{200 + t.isoform}"; transcript_biotype "protein_coding";')
        cols = f"{t.transcript_id}\tpairedscreen\t{{}}\t1\t{t.length}\t.\t+\t.\t"
        if t.isoform == 1:
            lines.append(cols.format("gene") + gene_attr)
        lines.append(cols.format("transcript") + tx_attr)
        lines.append(cols.format("exon") + tx_attr + ' exon_number "1";')
    return "\n".join(lines) + "\n"


def write_reference(ref: Reference, ref_dir: Path) -> None:
    """Write ``transcriptome.fa`` and ``genes.gtf`` under ``ref_dir``."""
    with atomic_output(ref_dir / "transcriptome.fa") as tmp:
        tmp.write_text(_fasta_text(ref))
    with atomic_output(ref_dir / "genes.gtf") as tmp:
        tmp.write_text(_gtf_text(ref))


def pack_barcodes(codes: np.ndarray) -> np.ndarray:
    """(n, <=16) base codes -> uint32, 2 bits per base, first base most significant."""
    shifts = (2 * np.arange(codes.shape[1] - 1, -1, -1)).astype(np.uint32)
    return (codes.astype(np.uint32) << shifts).sum(axis=1, dtype=np.uint32)


def hamming_packed(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Hamming distance (in bases) between 2-bit packed barcodes."""
    x = np.bitwise_xor(a, b)
    return np.bitwise_count((x | (x >> np.uint32(1))) & np.uint32(0x55555555))


def _close_pairs(packed: np.ndarray, min_dist: int) -> tuple[np.ndarray, np.ndarray]:
    """All pairs (i, j) at Hamming distance < min_dist, for min_dist <= 3 (pigeonhole over 3 blocks)."""
    found_i: list[np.ndarray] = []
    found_j: list[np.ndarray] = []
    for shift, bits in ((20, 12), (10, 10), (0, 10)):
        key = (packed >> np.uint32(shift)) & np.uint32((1 << bits) - 1)
        order = np.argsort(key, kind="stable")
        ks = key[order]
        d = 1
        while d < ks.size and (same := ks[:-d] == ks[d:]).any():
            i, j = order[:-d][same], order[d:][same]
            close = hamming_packed(packed[i], packed[j]) < min_dist
            found_i.append(i[close])
            found_j.append(j[close])
            d += 1
    if not found_i:
        return np.empty(0, np.int64), np.empty(0, np.int64)
    return np.concatenate(found_i), np.concatenate(found_j)


def make_whitelist(spec: ScreenSpec, n: int = WHITELIST_SIZE) -> np.ndarray:
    """``n`` random 16-nt barcodes (codes, shape (n, 16)) with pairwise Hamming distance >= 3."""
    rng = np.random.default_rng([spec.seed, _STREAM_WHITELIST])
    margin = n // 50 + 100
    while True:
        codes = rng.integers(0, 4, (n + margin, BARCODE_LENGTH), dtype=np.uint8)
        i, j = _close_pairs(pack_barcodes(codes), MIN_BARCODE_DISTANCE)
        keep = np.ones(len(codes), dtype=bool)
        keep[np.maximum(i, j)] = False
        if keep.sum() >= n:
            return codes[keep][:n]
        margin *= 2


def barcode_strings(codes: np.ndarray) -> np.ndarray:
    """(n, L) base codes -> array of str."""
    width = codes.shape[1]
    return np.frombuffer(decode(codes).tobytes(), dtype=f"S{width}").astype(str)


def write_whitelist(codes: np.ndarray, path: Path) -> None:
    with atomic_output(path) as tmp:
        tmp.write_text("\n".join(barcode_strings(codes)) + "\n")
