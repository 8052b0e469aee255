"""RNA half of the simulator: determinism, truth vs FASTQs, reference validity and a kb count round trip."""

from __future__ import annotations

import gzip
import os
import shutil
import subprocess
import sys
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import scipy.io
from scipy.stats import spearmanr

from pairedscreen.simulate.reference import hamming_packed, make_whitelist, pack_barcodes
from pairedscreen.simulate.registry import make_registry
from pairedscreen.simulate.rna import simulate_rna
from pairedscreen.simulate.spec import ScreenSpec, get_preset

SMALL = get_preset("tiny").with_overrides(**{
    "rna.n_libraries": 2, "rna.cells_per_library": 60, "rna.empty_droplets_per_library": 200,
    "rna.mean_umis_per_cell": 500.0, "seed": 7,
})
KB = Path(sys.executable).parent / "kb"


def _simulate(spec: ScreenSpec, out: Path) -> pd.DataFrame:
    return simulate_rna(make_registry(spec), spec, out)


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, pd.DataFrame]:
    out = tmp_path_factory.mktemp("rna_small")
    return out, _simulate(SMALL, out)


def _fastq_seqs(path: Path) -> list[bytes]:
    with gzip.open(path, "rb") as fh:
        return fh.read().split(b"\n")[1::4]


def _all_files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_layout_and_determinism(small: tuple[Path, pd.DataFrame], tmp_path: Path) -> None:
    out, truth = small
    names = {f"raw/fastq/L{i}_{a}_R{r}.fastq.gz" for i in (1, 2) for a in ("gex", "guide") for r in (1, 2)}
    names |= {"raw/reference/transcriptome.fa", "raw/reference/genes.gtf", "raw/reference/whitelist.txt",
              "truth/rna_barcodes.tsv"}
    first = _all_files(out)
    assert set(first) == names
    pd.testing.assert_frame_equal(_simulate(SMALL, tmp_path / "again"), truth)
    again = _all_files(tmp_path / "again")
    assert again.keys() == first.keys()
    assert all(again[k] == first[k] for k in first), "same seed must give the same bytes"
    _simulate(SMALL.with_overrides(**{"rna.n_libraries": 1}), tmp_path / "one")
    one = _all_files(tmp_path / "one")
    assert all(one[k] == first[k] for k in one if "L1_" in k or "reference" in k)   # adding L2 changes no L1
    _simulate(SMALL.with_overrides(**{"seed": 8, "rna.n_libraries": 1}), tmp_path / "other")
    r1 = "raw/fastq/L1_gex_R1.fastq.gz"
    assert (tmp_path / "other" / r1).read_bytes() != first[r1]


def test_perturbation_truth(small: tuple[Path, pd.DataFrame]) -> None:
    _, truth = small
    perts = make_registry(SMALL).perturbations.set_index("perturbation_id")
    assert list(truth.columns) == ["perturbation_id", "rna_active", "knockdown_remaining", "program_genes"]
    t = truth.set_index("perturbation_id").join(perts)
    active = t.effect_class.isin(["both", "rna"])
    assert (t.rna_active == active).all()
    assert np.allclose(t.knockdown_remaining[active], SMALL.rna.knockdown_remaining)
    assert t.knockdown_remaining[~active].isna().all()
    assert (t.program_genes[~active] == "").all()
    sizes = t.program_genes[active].str.split(";").map(len)
    assert (sizes == SMALL.rna.program_size).all()
    both = t[t.effect_class == "both"]
    for _, grp in both.groupby("program"):
        assert grp.program_genes.nunique() == 1       # a shared program moves the same genes


def test_truth_matches_fastqs(small: tuple[Path, pd.DataFrame]) -> None:
    out, _ = small
    truth = pd.read_csv(out / "truth/rna_barcodes.tsv", sep="\t", keep_default_na=False)
    guides = make_registry(SMALL).guides.set_index("id")["sequence"]
    for lib, tl in truth.groupby("library_id"):
        tl = tl.set_index("barcode")
        kinds = tl.kind.value_counts()
        assert kinds["cell"] + kinds["doublet"] + kinds["low_quality"] == SMALL.rna.cells_per_library
        assert kinds["empty"] == SMALL.rna.empty_droplets_per_library
        r1 = _fastq_seqs(out / f"raw/fastq/{lib}_gex_R1.fastq.gz")
        umis: dict[str, set[bytes]] = defaultdict(set)
        for s in r1:
            umis[s[:16].decode()].add(s[16:28])
        n_umi = pd.Series({b: len(u) for b, u in umis.items()}).reindex(tl.index).fillna(0)
        occupied = tl.kind != "empty"
        ratio = n_umi[occupied] / tl.n_umi[occupied]
        assert ratio.between(0.8, 1.25).all()
        exact = sum(n for b, n in Counter(s[:16].decode() for s in r1).items() if b in tl.index)
        assert exact / len(r1) > 0.98
        assert tl.n_umi[tl.kind == "empty"].median() < 0.05 * tl.n_umi[tl.kind == "cell"].median()
        _check_guide_reads(out / f"raw/fastq/{lib}_guide_R1.fastq.gz", tl, guides)


def _check_guide_reads(r1_path: Path, tl: pd.DataFrame, guides: pd.Series) -> None:
    r1 = _fastq_seqs(r1_path)
    r2 = _fastq_seqs(Path(str(r1_path).replace("_R1.", "_R2.")))
    assert len(r1) == len(r2)
    proto: dict[str, Counter] = defaultdict(Counter)   # barcode -> protospacer -> UMIs
    for a, b in set(zip(r1, r2, strict=True)):
        assert len(b) == 90
        proto[a[:16].decode()][b[10:30].decode()] += 1
    seq_to_id = {s: i for i, s in guides.items()}
    captured = tl[(tl.kind == "cell") & (tl.n_true_guide_umi > 0)]
    assert len(captured) > 0.9 * (tl.kind == "cell").sum()
    clear = captured[captured.n_true_guide_umi > 2 * (captured.n_guide_umi - captured.n_true_guide_umi)]
    assert len(clear) > 0.8 * len(captured)
    for bc, row in clear.iterrows():
        top, _ = proto[bc].most_common(1)[0]
        assert seq_to_id.get(top) == row.guide_ids
    for bc, row in tl[(tl.kind == "doublet") & (tl.n_true_guide_umi > 0)].iterrows():
        seen = {seq_to_id.get(s) for s in proto[bc]}
        assert set(row.guide_ids.split(";")) & seen
    empty_reads = [sum(proto[b].values()) for b in tl.index[tl.kind == "empty"]]
    cell_reads = [sum(proto[b].values()) for b in captured.index]
    assert np.median(empty_reads) < 0.2 * np.median(cell_reads)


def test_reference_and_whitelist(small: tuple[Path, pd.DataFrame]) -> None:
    out, _ = small
    genes = make_registry(SMALL).genes
    gtf = pd.read_csv(out / "raw/reference/genes.gtf", sep="\t", header=None)
    exons = gtf[gtf[2] == "exon"]
    gene_ids = exons[8].str.extract(r'gene_id "([^"]+)"')[0]
    assert set(gene_ids) == set(genes.gene_id)
    assert gene_ids.value_counts().max() == 2                 # a few genes with two isoforms
    fasta = (out / "raw/reference/transcriptome.fa").read_text().split(">")[1:]
    lengths = {rec.split()[0]: len("".join(rec.splitlines()[1:])) for rec in fasta}
    assert lengths == dict(zip(exons[0], exons[4], strict=True))
    assert min(lengths.values()) > 500 and max(lengths.values()) <= 1500

    wl = (out / "raw/reference/whitelist.txt").read_text().split()
    assert len(wl) == len(set(wl)) == 20_000 and all(len(b) == 16 for b in wl)
    codes = make_whitelist(SMALL)
    assert ["".join("ACGT"[c] for c in row) for row in codes[:50]] == wl[:50]
    packed = pack_barcodes(codes)
    sample = packed[:1500]
    dist = hamming_packed(sample[:, None], packed[None, :])
    dist[np.arange(sample.size), np.arange(sample.size)] = 99
    assert dist.min() >= 3
    truth = pd.read_csv(out / "truth/rna_barcodes.tsv", sep="\t")
    assert set(truth.barcode) <= set(wl)


def test_gzip_has_no_timestamp(small: tuple[Path, pd.DataFrame]) -> None:
    out, _ = small
    head = (out / "raw/fastq/L1_gex_R2.fastq.gz").read_bytes()[:10]
    assert head[:2] == b"\x1f\x8b" and head[4:8] == b"\0\0\0\0"


def _kb(*args: str, cwd: Path) -> None:
    env = {**os.environ, "PATH": f"{KB.parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    res = subprocess.run([str(KB), *args], cwd=cwd, env=env, capture_output=True, text=True, check=False)
    assert res.returncode == 0, res.stderr[-3000:]


@pytest.mark.skipif(not KB.exists(), reason="kb-python is not installed in this environment")
def test_kb_count_recovers_umis(tmp_path: Path) -> None:
    spec = get_preset("tiny")
    _simulate(spec, tmp_path)
    (tmp_path / "kb").mkdir()
    _kb("ref", "-t", "2", "-i", "kb/index.idx", "-g", "kb/t2g.txt", "-f1", "kb/cdna.fa",
        "raw/reference/transcriptome.fa", "raw/reference/genes.gtf", cwd=tmp_path)
    _kb("count", "-t", "2", "-m", "1G", "-i", "kb/index.idx", "-g", "kb/t2g.txt", "-x", "10xv3",
        "-w", "raw/reference/whitelist.txt", "-o", "kb/gex",
        "raw/fastq/L1_gex_R1.fastq.gz", "raw/fastq/L1_gex_R2.fastq.gz", cwd=tmp_path)
    mtx = tmp_path / "kb/gex/counts_unfiltered/cells_x_genes"
    m = scipy.io.mmread(f"{mtx}.mtx").tocsr()
    barcodes = Path(f"{mtx}.barcodes.txt").read_text().split()
    totals = pd.Series(np.asarray(m.sum(axis=1)).ravel(), index=barcodes)
    truth = pd.read_csv(tmp_path / "truth/rna_barcodes.tsv", sep="\t")
    cells = truth[truth.kind == "cell"]
    kb_umis = totals.reindex(cells.barcode).fillna(0).to_numpy()
    assert spearmanr(cells.n_umi, kb_umis).statistic > 0.9
    assert np.median(kb_umis / cells.n_umi) == pytest.approx(1.0, abs=0.05)
    shutil.rmtree(tmp_path / "kb")
