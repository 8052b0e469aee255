"""Faults injected into a simulated screen's raw data (tests of empty and unusable data).

Each edits the working directory written by :func:`pairedscreen.simulate.simulate` in place, before a run,
so the workflow meets the fault exactly as a user's data would bring it.
"""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pandas as pd


def corrupt_plate(wd: Path, plate: str) -> int:
    """Truncate every image of ``plate`` to its first 64 bytes: every site unreadable."""
    files = sorted((wd / "raw" / "images" / plate).glob("*.tif"))
    for f in files:
        f.write_bytes(f.read_bytes()[:64])
    return len(files)


def _mito_sequences(wd: Path, mt_prefix: str = "MT-") -> list[str]:
    seqs, name, buf = [], None, []
    for line in (wd / "raw" / "reference" / "transcriptome.fa").read_text().splitlines():
        if line.startswith(">"):
            if name and name.startswith(mt_prefix):
                seqs.append("".join(buf))
            name = line.split("gene_name=")[-1].split()[0] if "gene_name=" in line else ""
            buf = []
        else:
            buf.append(line.strip())
    if name and name.startswith(mt_prefix):
        seqs.append("".join(buf))
    return seqs


def mito_library(wd: Path, library: str, seed: int = 0) -> int:
    """A library of dying cells: every GEX read of a non-empty droplet of ``library`` comes from a
    mitochondrial transcript (barcodes and UMIs kept). Cells are still called; all fail ``max_pct_mt``."""
    rng = np.random.default_rng(seed)
    truth = pd.read_csv(wd / "truth" / "rna_barcodes.tsv", sep="\t", dtype=str)
    occupied = set(truth.loc[(truth.library_id == library) & (truth.kind != "empty"), "barcode"])
    mito = _mito_sequences(wd)
    r1 = wd / "raw" / "fastq" / f"{library}_gex_R1.fastq.gz"
    r2 = wd / "raw" / "fastq" / f"{library}_gex_R2.fastq.gz"
    with gzip.open(r1, "rt") as f1, gzip.open(r2, "rt") as f2:
        l1, l2 = f1.read().splitlines(), f2.read().splitlines()
    changed = 0
    for i in range(0, len(l2), 4):
        if l1[i + 1][:16] in occupied:
            n = len(l2[i + 1])
            s = mito[int(rng.integers(len(mito)))]
            start = int(rng.integers(0, len(s) - n + 1))
            l2[i + 1] = s[start:start + n]
            changed += 1
    with gzip.open(r2, "wt", compresslevel=1) as out:
        out.write("\n".join(l2) + "\n")
    return changed


def add_unused_perturbation(wd: Path, pid: str = "TGT99",
                            sequence: str = "ACGTTGCAACGTTGCAACGT") -> str:
    """Register a targeting perturbation with a guide no read carries and no plate-map well: it is left
    with no cells in either arm."""
    cfg = wd / "config"
    reg = pd.read_csv(cfg / "perturbations.tsv", sep="\t", dtype=str, keep_default_na=False)
    row = reg[reg.is_control.str.lower() != "true"].iloc[0].copy()
    row["perturbation_id"] = pid          # targets the same gene as an existing perturbation
    pd.concat([reg, row.to_frame().T], ignore_index=True).to_csv(cfg / "perturbations.tsv", sep="\t",
                                                                 index=False)
    guides = pd.read_csv(cfg / "guides.tsv", sep="\t", dtype=str, keep_default_na=False)
    g = guides[guides.target_gene_name == row["target_gene"]].iloc[0].copy()
    g["id"] = g["name"] = f"{pid}-g1"
    g["sequence"], g["perturbation_id"] = sequence, pid
    pd.concat([guides, g.to_frame().T], ignore_index=True).to_csv(cfg / "guides.tsv", sep="\t", index=False)
    return pid
