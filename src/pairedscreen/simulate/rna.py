"""RNA half of the simulator: a Perturb-seq screen as 10x v3 GEX + guide-capture FASTQs with planted truth.

Model, per library (one library = one batch):

- gene base expression: background genes log-normal, ribosomal genes ~15 % of non-mito UMIs, expressed
  targets ~0.6-1.2 % each, ``unexpressed_target`` genes (class ``paint``) ~zero; mitochondrial genes take a
  per-cell fraction (3-8 % in good cells, 30-60 % in low-quality cells); a mild per-library gene scaling
  (log-normal, sigma 0.1) is the batch effect;
- perturbations of classes ``both``/``rna`` knock their target down to ``knockdown_remaining`` and move
  their program's ``program_size`` genes by +-``program_log2fc`` (one sign pattern per program; the two
  ``both`` perturbations of a program share it);
- counts are Gamma-Poisson (NB) around library size x profile; library sizes log-normal around
  ``mean_umis_per_cell``; every droplet also catches ambient RNA (ambient profile = mean cell expression);
- droplets: ``cells_per_library`` cell-containing droplets, of which ``doublet_rate`` are doublets (two cells,
  both guides) and ``low_quality_rate`` are low-quality, plus ``empty_droplets_per_library`` empties;
- guides: one uniformly drawn guide per cell with NB(``guide_umis_per_cell``) UMIs (none for a
  ``guide_dropout_rate`` share of cells) + Poisson(``guide_background_umis``) UMIs on other guides;
- reads per UMI ~ 1 + Poisson(``reads_per_umi`` - 1); R2 start uniform on the transcript (sense strand).
"""

from __future__ import annotations

import gzip
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from pairedscreen.io import atomic_output, write_tsv
from pairedscreen.simulate.reference import (
    WHITELIST_SIZE,
    Reference,
    barcode_strings,
    make_reference,
    make_whitelist,
    write_reference,
    write_whitelist,
)
from pairedscreen.simulate.registry import GUIDE_SCAFFOLD, Registry
from pairedscreen.simulate.spec import RnaSpec, ScreenSpec

READ_LENGTH = 90
UMI_LENGTH = 12
GUIDE_OFFSET = 10
RIBO_SHARE = 0.15
TARGET_SHARE = (0.006, 0.012)
UNEXPRESSED_SHARE = 2e-5
MITO_GOOD = (0.03, 0.08)
MITO_LOW_QUALITY = (0.30, 0.60)
LOW_QUALITY_UMI_SCALE = (0.15, 0.4)
LIBSIZE_SIGMA = 0.35
AMBIENT_SIGMA = 0.5
BATCH_SIGMA = 0.1
GENE_THETA = 8.0      # NB shape of gene counts
GUIDE_THETA = 3.0     # NB shape of true-guide counts
ALT_ISOFORM_SHARE = 0.4
R1_ERROR_RATE = 5e-4
R2_ERROR_RATE = 1e-3
CHUNK_READS = 200_000
GZIP_LEVEL = 1
ACTIVE_CLASSES = ("both", "rna")

_STREAM_MODEL = 110
_STREAM_DROPLETS = 200
_STREAM_GEX_READS = 300
_STREAM_GUIDE_READS = 400


@dataclass(frozen=True)
class GeneModel:
    weights: np.ndarray        # (genes,) non-mito relative expression, 0 on mito genes, sums to 1
    mito_weights: np.ndarray   # (genes,) mito relative expression, 0 elsewhere, sums to 1
    log2_effects: np.ndarray   # (perturbations, genes) planted log2 effect of each perturbation
    programs: dict[int, np.ndarray]   # program id -> gene indices


@dataclass(frozen=True)
class Droplets:
    """One library's droplets: true counts and guide UMIs (rows = droplets)."""

    library_id: str
    batch: str
    barcodes: np.ndarray       # (droplets, 16) base codes
    kind: np.ndarray           # str: cell|doublet|low_quality|empty
    guides: list[list[int]]    # planted guide indices per droplet
    counts: np.ndarray         # (droplets, genes) UMI counts
    guide_counts: np.ndarray   # (droplets, guides) guide UMI counts
    true_guide_umis: np.ndarray  # (droplets,) UMIs of the planted guides


# --------------------------------------------------------------------------- expression model

def _base_weights(registry: Registry, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    role = registry.genes["role"].to_numpy()
    w = np.zeros(role.size)
    targets = role == "target"
    w[targets] = rng.uniform(*TARGET_SHARE, targets.sum())
    w[role == "unexpressed_target"] = UNEXPRESSED_SHARE
    ribo = role == "ribo"
    w[ribo] = RIBO_SHARE * _normalised(rng.lognormal(0.0, 0.3, ribo.sum()))
    rest = ~(targets | ribo | (role == "unexpressed_target") | (role == "mito"))
    w[rest] = (1.0 - w.sum()) * _normalised(rng.lognormal(0.0, 1.2, rest.sum()))
    mito = np.zeros(role.size)
    mito[role == "mito"] = _normalised(rng.lognormal(0.0, 0.5, (role == "mito").sum()))
    return w, mito


def _normalised(x: np.ndarray) -> np.ndarray:
    return x / x.sum()


def _program_genes(registry: Registry, spec: ScreenSpec, weights: np.ndarray,
                   rng: np.random.Generator) -> dict[int, np.ndarray]:
    """Disjoint (while the pool lasts) sets of well-expressed background genes, one per program id."""
    background = np.flatnonzero(registry.genes["role"].to_numpy() == "background")
    strong = background[weights[background] >= np.median(weights[background])]
    programs = sorted(int(p) for p in registry.perturbations["program"].unique() if p >= 0)
    size = min(spec.rna.program_size, strong.size)
    out: dict[int, np.ndarray] = {}
    pool = rng.permutation(strong)
    for prog in programs:
        if pool.size < size:
            pool = rng.permutation(strong)
        out[prog], pool = np.sort(pool[:size]), pool[size:]
    return out


def _log2_effects(registry: Registry, spec: ScreenSpec, programs: dict[int, np.ndarray],
                  rng: np.random.Generator) -> np.ndarray:
    gene_index = {name: i for i, name in enumerate(registry.genes["gene_name"])}
    perts = registry.perturbations
    signs = {prog: rng.permutation(np.where(np.arange(genes.size) < (genes.size + 1) // 2, 1.0, -1.0))
             for prog, genes in programs.items()}
    eff = np.zeros((len(perts), len(registry.genes)))
    for i, p in enumerate(perts.itertuples()):
        if p.effect_class not in ACTIVE_CLASSES:
            continue
        eff[i, gene_index[p.target_gene]] = np.log2(spec.rna.knockdown_remaining)
        if p.program >= 0:
            eff[i, programs[p.program]] = signs[p.program] * spec.rna.program_log2fc
    return eff


def make_gene_model(registry: Registry, spec: ScreenSpec) -> GeneModel:
    """Deterministic expression model for ``spec.seed``."""
    rng = np.random.default_rng([spec.seed, _STREAM_MODEL])
    weights, mito = _base_weights(registry, rng)
    programs = _program_genes(registry, spec, weights, rng)
    return GeneModel(weights=weights, mito_weights=mito, programs=programs,
                     log2_effects=_log2_effects(registry, spec, programs, rng))


def truth_table(registry: Registry, spec: ScreenSpec, model: GeneModel) -> pd.DataFrame:
    """Per-perturbation RNA truth: perturbation_id, rna_active, knockdown_remaining, program_genes."""
    names = registry.genes["gene_name"].to_numpy()
    perts = registry.perturbations
    active = perts["effect_class"].isin(ACTIVE_CLASSES).to_numpy()
    program_genes = [";".join(names[model.programs[p]]) if a and p >= 0 else ""
                     for a, p in zip(active, perts["program"], strict=True)]
    return pd.DataFrame({
        "perturbation_id": perts["perturbation_id"].to_numpy(),
        "rna_active": active,
        "knockdown_remaining": np.where(active, spec.rna.knockdown_remaining, np.nan),
        "program_genes": program_genes,
    })


# --------------------------------------------------------------------------- droplets

def _kinds(rs: RnaSpec) -> np.ndarray:
    n_doublet = round(rs.doublet_rate * rs.cells_per_library)
    n_low = round(rs.low_quality_rate * rs.cells_per_library)
    n_cell = rs.cells_per_library - n_doublet - n_low
    if n_cell < 0:
        raise ValueError("doublet_rate + low_quality_rate must not exceed 1")
    return np.array(["cell"] * n_cell + ["doublet"] * n_doublet + ["low_quality"] * n_low
                    + ["empty"] * rs.empty_droplets_per_library)


def _cell_components(kind: np.ndarray, rs: RnaSpec, n_guides: int,
                     rng: np.random.Generator) -> pd.DataFrame:
    """One row per cell (doublets give two): droplet, guide, library size, mito fraction, guide UMI scale."""
    droplet = np.flatnonzero(kind != "empty")
    droplet = np.sort(np.concatenate([droplet, np.flatnonzero(kind == "doublet")]))
    low = kind[droplet] == "low_quality"
    n = droplet.size
    s = LIBSIZE_SIGMA
    libsize = rng.lognormal(np.log(rs.mean_umis_per_cell) - s * s / 2, s, n)
    scale = np.where(low, rng.uniform(*LOW_QUALITY_UMI_SCALE, n), 1.0)
    mito = np.where(low, rng.uniform(*MITO_LOW_QUALITY, n), rng.uniform(*MITO_GOOD, n))
    captured = rng.random(n) >= rs.guide_dropout_rate
    return pd.DataFrame({"droplet": droplet, "guide": rng.integers(0, n_guides, n),
                         "libsize": libsize * scale, "mito": mito, "guide_scale": scale * captured})


def _nb(mean: np.ndarray, theta: float, rng: np.random.Generator) -> np.ndarray:
    return rng.poisson(rng.gamma(theta, mean / theta)).astype(np.int64)


def _cell_counts(comp: pd.DataFrame, model: GeneModel, guide_pert: np.ndarray,
                 batch_scale: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    w = model.weights * batch_scale * np.exp2(model.log2_effects[guide_pert[comp["guide"].to_numpy()]])
    w /= w.sum(axis=1, keepdims=True)
    mito = comp["mito"].to_numpy()[:, None]
    profile = (1.0 - mito) * w + mito * model.mito_weights
    return _nb(comp["libsize"].to_numpy()[:, None] * profile, GENE_THETA, rng)


def _add_ambient(counts: np.ndarray, kind: np.ndarray, mean_umis: float,
                 rng: np.random.Generator) -> np.ndarray:
    cells = counts[kind != "empty"].sum(axis=0).astype(float)
    ambient = cells / cells.sum()
    s = AMBIENT_SIGMA
    n_amb = rng.poisson(rng.lognormal(np.log(mean_umis) - s * s / 2, s, kind.size))
    return counts + rng.multinomial(n_amb, ambient)


def _guide_counts(comp: pd.DataFrame, n_droplets: int, n_guides: int, rs: RnaSpec,
                  rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    counts = np.zeros((n_droplets, n_guides), dtype=np.int64)
    true_umis = _nb(rs.guide_umis_per_cell * comp["guide_scale"].to_numpy(), GUIDE_THETA, rng)
    droplet, guide = comp["droplet"].to_numpy(), comp["guide"].to_numpy()
    np.add.at(counts, (droplet, guide), true_umis)
    true_total = np.bincount(droplet, weights=true_umis, minlength=n_droplets).astype(np.int64)
    planted = np.zeros((n_droplets, n_guides), dtype=bool)
    planted[droplet, guide] = True
    n_bg = rng.poisson(rs.guide_background_umis, n_droplets)
    bg_droplet = np.repeat(np.arange(n_droplets), n_bg)
    bg_guide = rng.integers(0, n_guides, bg_droplet.size)
    while (clash := planted[bg_droplet, bg_guide]).any():   # background goes to *other* guides
        bg_guide[clash] = rng.integers(0, n_guides, clash.sum())
    np.add.at(counts, (bg_droplet, bg_guide), 1)
    return counts, true_total


def simulate_droplets(registry: Registry, spec: ScreenSpec, model: GeneModel, library: int,
                      whitelist: np.ndarray) -> Droplets:
    """True UMI and guide counts of every droplet of library ``library`` (0-based)."""
    rs = spec.rna
    rng = np.random.default_rng([spec.seed, _STREAM_DROPLETS + library])
    kind = _kinds(rs)
    n_guides = len(registry.guides)
    pert_index = {p: i for i, p in enumerate(registry.perturbations["perturbation_id"])}
    guide_pert = np.array([pert_index[p] for p in registry.guides["perturbation_id"]])
    barcodes = whitelist[rng.choice(len(whitelist), kind.size, replace=False)]
    comp = _cell_components(kind, rs, n_guides, rng)
    batch_scale = rng.lognormal(0.0, BATCH_SIGMA, len(registry.genes))
    counts = np.zeros((kind.size, len(registry.genes)), dtype=np.int64)
    np.add.at(counts, comp["droplet"].to_numpy(), _cell_counts(comp, model, guide_pert, batch_scale, rng))
    counts = _add_ambient(counts, kind, rs.ambient_umis_per_empty, rng)
    guide_counts, true_umis = _guide_counts(comp, kind.size, n_guides, rs, rng)
    guides: list[list[int]] = [[] for _ in range(kind.size)]
    for d, g in zip(comp["droplet"], comp["guide"], strict=True):
        guides[d].append(int(g))
    return Droplets(library_id=f"L{library + 1}", batch=f"B{library + 1}", barcodes=barcodes, kind=kind,
                    guides=guides, counts=counts, guide_counts=guide_counts, true_guide_umis=true_umis)


def droplet_truth(registry: Registry, d: Droplets) -> pd.DataFrame:
    """truth/rna_barcodes.tsv rows of one library."""
    gids = registry.guides["id"].to_numpy()
    gpert = registry.guides["perturbation_id"].to_numpy()
    return pd.DataFrame({
        "library_id": d.library_id,
        "batch": d.batch,
        "barcode": barcode_strings(d.barcodes),
        "kind": d.kind,
        "guide_ids": [";".join(dict.fromkeys(gids[g])) for g in d.guides],
        "perturbation_id": [";".join(dict.fromkeys(gpert[g])) for g in d.guides],
        "n_umi": d.counts.sum(axis=1),
        "n_guide_umi": d.guide_counts.sum(axis=1),
        "n_true_guide_umi": d.true_guide_umis,
    })


# --------------------------------------------------------------------------- reads

def _molecules(counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Expand a (droplets, features) count matrix into per-molecule droplet and feature indices."""
    flat = counts.ravel()
    idx = np.repeat(np.arange(flat.size), flat)
    return idx // counts.shape[1], idx % counts.shape[1]


def _quality_pool(rng: np.random.Generator, length: int, n: int = 4096) -> np.ndarray:
    """NovaSeq-style binned qualities: mostly F (Q37), some ':' (Q25) rising along the read, few ','."""
    pos = np.arange(length) / max(length - 1, 1)
    u = rng.random((n, length))
    qual = np.full((n, length), ord("F"), dtype=np.uint8)
    qual[u < 0.02 + 0.10 * pos**2] = ord(":")
    qual[u < 0.004 + 0.01 * pos**2] = ord(",")
    return qual


class _FastqWriter:
    """Writes fixed-layout FASTQ records from numpy arrays into a deterministic (mtime=0) gzip stream."""

    def __init__(self, fh: gzip.GzipFile, name_prefix: str, mate: int, length: int,
                 rng: np.random.Generator) -> None:
        self.fh = fh
        self.prefix = np.frombuffer(f"@{name_prefix}:".encode(), dtype=np.uint8)
        self.suffix = np.frombuffer(f" {mate}:N:0:1\n".encode(), dtype=np.uint8)
        self.qual_pool = _quality_pool(rng, length)
        self.length = length

    def write(self, first: int, codes: np.ndarray, error_rate: float, rng: np.random.Generator) -> None:
        n, length = codes.shape
        qual = self.qual_pool[rng.integers(0, len(self.qual_pool), n)]
        _add_errors(codes, qual, error_rate, rng)
        head = np.concatenate([np.broadcast_to(self.prefix, (n, self.prefix.size)),
                               _digits(np.arange(first, first + n), 10),
                               np.broadcast_to(self.suffix, (n, self.suffix.size))], axis=1)
        sep = np.broadcast_to(np.frombuffer(b"\n+\n", dtype=np.uint8), (n, 3))
        end = np.full((n, 1), ord("\n"), dtype=np.uint8)
        seq = np.frombuffer(b"ACGT", dtype=np.uint8)[codes]
        self.fh.write(np.concatenate([head, seq, sep, qual, end], axis=1).tobytes())


def _digits(numbers: np.ndarray, width: int) -> np.ndarray:
    powers = 10 ** np.arange(width - 1, -1, -1, dtype=np.int64)
    return ((numbers[:, None] // powers) % 10 + ord("0")).astype(np.uint8)


def _add_errors(codes: np.ndarray, qual: np.ndarray, rate: float, rng: np.random.Generator) -> None:
    """Substitute a random other base at ~``rate`` of positions (in place); mark them low quality."""
    k = rng.binomial(codes.size, rate)
    pos = rng.integers(0, codes.size, k)
    flat = codes.reshape(-1)
    flat[pos] = (flat[pos] + rng.integers(1, 4, k, dtype=np.uint8)) % 4
    qual.reshape(-1)[pos] = ord(",")


R2Maker = Callable[[np.ndarray, np.random.Generator], np.ndarray]


def _write_read_pairs(out_dir: Path, stem: str, name_prefix: str, mol_droplet: np.ndarray,
                      barcodes: np.ndarray, make_r2: R2Maker, rs: RnaSpec,
                      rng: np.random.Generator) -> int:
    """Write ``{stem}_R1/_R2.fastq.gz`` for the given molecules; returns the number of read pairs."""
    n_mol = mol_droplet.size
    umis = rng.integers(0, 4, (n_mol, UMI_LENGTH), dtype=np.uint8)
    reads_per_mol = 1 + rng.poisson(max(rs.reads_per_umi - 1.0, 0.0), n_mol)
    read_mol = np.repeat(np.arange(n_mol), reads_per_mol)
    read_mol = read_mol[rng.permutation(read_mol.size)]
    r1_len = barcodes.shape[1] + UMI_LENGTH
    with (atomic_output(out_dir / f"{stem}_R1.fastq.gz") as p1,
          atomic_output(out_dir / f"{stem}_R2.fastq.gz") as p2,
          open(p1, "wb") as f1, open(p2, "wb") as f2,
          gzip.GzipFile(filename="", mode="wb", fileobj=f1, compresslevel=GZIP_LEVEL, mtime=0) as g1,
          gzip.GzipFile(filename="", mode="wb", fileobj=f2, compresslevel=GZIP_LEVEL, mtime=0) as g2):
        w1 = _FastqWriter(g1, name_prefix, 1, r1_len, rng)
        w2 = _FastqWriter(g2, name_prefix, 2, READ_LENGTH, rng)
        for first in range(0, read_mol.size, CHUNK_READS):
            mol = read_mol[first:first + CHUNK_READS]
            w1.write(first + 1, np.concatenate([barcodes[mol_droplet[mol]], umis[mol]], axis=1),
                     R1_ERROR_RATE, rng)
            w2.write(first + 1, make_r2(mol, rng), R2_ERROR_RATE, rng)
    return int(read_mol.size)


def _gex_r2_maker(ref: Reference, mol_gene: np.ndarray, rng: np.random.Generator) -> R2Maker:
    alt = ref.alternative[mol_gene]
    use_alt = (alt >= 0) & (rng.random(mol_gene.size) < ALT_ISOFORM_SHARE)
    mol_tx = np.where(use_alt, alt, ref.primary[mol_gene])
    offset = ref.transcripts["offset"].to_numpy()
    span = ref.transcripts["length"].to_numpy() - READ_LENGTH + 1
    window = np.arange(READ_LENGTH)

    def make(mol: np.ndarray, r: np.random.Generator) -> np.ndarray:
        tx = mol_tx[mol]
        start = offset[tx] + (r.random(mol.size) * span[tx]).astype(np.int64)
        return ref.codes[start[:, None] + window]

    return make


def _guide_r2_maker(registry: Registry, mol_guide: np.ndarray) -> R2Maker:
    lut = np.zeros(256, dtype=np.uint8)
    lut[np.frombuffer(b"ACGT", dtype=np.uint8)] = np.arange(4, dtype=np.uint8)
    proto = lut[np.frombuffer("".join(registry.guides["sequence"]).encode(), dtype=np.uint8)]
    proto = proto.reshape(len(registry.guides), -1)
    scaffold = lut[np.frombuffer(GUIDE_SCAFFOLD.encode(), dtype=np.uint8)]
    tail = scaffold[:READ_LENGTH - GUIDE_OFFSET - proto.shape[1]]

    def make(mol: np.ndarray, r: np.random.Generator) -> np.ndarray:
        n = mol.size
        return np.concatenate([r.integers(0, 4, (n, GUIDE_OFFSET), dtype=np.uint8), proto[mol_guide[mol]],
                               np.broadcast_to(tail, (n, tail.size))], axis=1)

    return make


def write_library_fastqs(registry: Registry, spec: ScreenSpec, ref: Reference, d: Droplets,
                         fastq_dir: Path, library: int) -> dict[str, int]:
    """Write the GEX and guide FASTQ pairs of one library; returns read-pair counts."""
    rng = np.random.default_rng([spec.seed, _STREAM_GEX_READS + library])
    mol_droplet, mol_gene = _molecules(d.counts)
    n_gex = _write_read_pairs(fastq_dir, f"{d.library_id}_gex", f"PSIM:{d.library_id}:GEX", mol_droplet,
                              d.barcodes, _gex_r2_maker(ref, mol_gene, rng), spec.rna, rng)
    rng = np.random.default_rng([spec.seed, _STREAM_GUIDE_READS + library])
    mol_droplet, mol_guide = _molecules(d.guide_counts)
    n_guide = _write_read_pairs(fastq_dir, f"{d.library_id}_guide", f"PSIM:{d.library_id}:CRISPR",
                                mol_droplet, d.barcodes, _guide_r2_maker(registry, mol_guide), spec.rna, rng)
    return {"gex": n_gex, "guide": n_guide}


# --------------------------------------------------------------------------- entry point

def simulate_rna(registry: Registry, spec: ScreenSpec, out_dir: Path) -> pd.DataFrame:
    """Write the RNA arm (reference, whitelist, FASTQs, truth/rna_barcodes.tsv) under ``out_dir``.

    Returns per-perturbation RNA truth (perturbation_id, rna_active, knockdown_remaining, program_genes)
    for the orchestrator to merge into ``truth/perturbations.tsv``.
    """
    out_dir = Path(out_dir)
    ref_dir = out_dir / "raw" / "reference"
    ref = make_reference(registry, spec)
    write_reference(ref, ref_dir)
    droplets = spec.rna.cells_per_library + spec.rna.empty_droplets_per_library
    # 20k barcodes unless a library needs more (keeps the presets' whitelist, and their files, unchanged)
    whitelist = make_whitelist(spec, n=max(WHITELIST_SIZE, 2 * droplets))
    write_whitelist(whitelist, ref_dir / "whitelist.txt")
    model = make_gene_model(registry, spec)
    truth = []
    for lib in range(spec.rna.n_libraries):
        d = simulate_droplets(registry, spec, model, lib, whitelist)
        write_library_fastqs(registry, spec, ref, d, out_dir / "raw" / "fastq", lib)
        truth.append(droplet_truth(registry, d))
    write_tsv(pd.concat(truth, ignore_index=True), out_dir / "truth" / "rna_barcodes.tsv")
    return truth_table(registry, spec, model)
