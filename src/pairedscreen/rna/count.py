"""FASTQ -> count matrices with kallisto|bustools (the ``kb`` command of kb-python).

Files in, files out, plus :func:`load_counts` / :func:`load_library` that read kb's unfiltered
matrices into AnnData (obs_names ``{library}_{barcode}``; gene names made unique, ids in
``var['gene_id']``). Every kb call goes through :func:`run_kb`, which keeps kb's log next to the
outputs and raises :class:`KbError` quoting the tail of that log's text (not its path: the stages count into
a temporary folder that goes with a failed output) and a hint when no read pseudoaligned.
"""

from __future__ import annotations

import gzip
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import scipy.io
import scipy.sparse as sp

from pairedscreen.errors import PairedscreenError

PathLike = str | os.PathLike

# (barcode length, UMI length) on R1 for the named 10x chemistries kb knows.
CHEMISTRY_R1 = {"10xv2": (16, 10), "10xv3": (16, 12)}
_TECH_RE = re.compile(r"^-?\d+,-?\d+,-?\d+(?:,-?\d+,-?\d+)*$")
_FIXED_PATTERN = re.compile(r"^\^(N*)\(BC\)$")
_ANY_PATTERN = re.compile(r"^\^?[ACGTN]*\(BC\)[ACGTN]*$")
# the alphabet of a guide's protospacer: the same pattern as `sequence` in workflow/schemas/guides.schema.yaml
# (tests/test_bad_inputs_reads_images.py checks they agree), so the sheet check refuses what counting would
GUIDE_SEQUENCE = re.compile(r"^[ACGT]+$")
_KB_ERROR = re.compile(r"^\[[^\]]*\]\s+ERROR\b|Traceback \(most recent call last\)", re.MULTILINE)


_PSEUDOALIGNED = re.compile(r"processed ([\d,]+) reads, ([\d,]+) reads pseudoaligned")


class KbError(PairedscreenError, RuntimeError):
    """kb failed; the message holds the command and the tail of kb's log text itself (kb's output folder,
    log included, may be a temporary one that is removed with the failed output), ``log_text`` this call's
    whole log for the job's log."""

    def __init__(self, message: str, log_text: str = "") -> None:
        super().__init__(message)
        self.log_text = log_text


def log_tail(text: str, lines: int = 40) -> str:
    """The last ``lines`` lines of a kb log without kb-python's Python tracebacks (their last line, the
    exception, is kept): what kallisto/bustools said is what explains a failure."""
    out: list[str] = []
    in_tb = False
    for line in text.splitlines():
        if line.startswith("Traceback (most recent call last)"):
            in_tb = True
            continue
        if in_tb and (line.startswith((" ", "\t")) or not line.strip()):
            continue
        in_tb = False
        out.append(line)
    return "\n".join(out[-lines:])


def kb_hint(text: str) -> str:
    """A hint for a failure kb's log explains: no read pseudoaligned (wrong chemistry, swapped R1/R2)."""
    found = _PSEUDOALIGNED.findall(text)
    if found and all(int(aligned.replace(",", "")) == 0 for _, aligned in found):
        total = found[-1][0]
        return (f" Hint: kallisto pseudoaligned 0 of {total} reads: check the library's chemistry in "
                "config/rna_libraries.tsv and that R1/R2 are not swapped (R1 holds the cell barcode + UMI, "
                "R2 the cDNA or guide), and that the reference is the organism's.")
    return ""


def kb_executable() -> str:
    """The ``kb`` next to the running interpreter (the project's .venv), else the one on PATH."""
    here = Path(sys.executable).parent / "kb"
    if here.exists():
        return str(here)
    found = shutil.which("kb")
    if not found:
        raise FileNotFoundError("the kb command (kb-python) is not installed in this environment")
    return found


def run_kb(
    args: Sequence[str], log_path: PathLike, *, expect: Sequence[PathLike] = (), tail_lines: int = 40
) -> None:
    """Run ``kb *args``, appending stdout+stderr to ``log_path``; raise KbError with its tail on failure.

    kb-python exits 0 even when kallisto/bustools fail (it logs ``ERROR [...]`` and a traceback), so
    failure = non-zero exit, an ERROR line in this call's log, or a missing ``expect`` output.
    """
    log_path = Path(log_path)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    cmd = [kb_executable(), *map(str, args)]
    start = log_path.stat().st_size if log_path.exists() else 0
    with open(log_path, "a") as log:
        log.write("$ " + " ".join(cmd) + "\n")
        log.flush()
        proc = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, check=False)
    with open(log_path, errors="replace") as fh:
        fh.seek(start)
        text = fh.read()
    missing = [str(p) for p in expect if not Path(p).exists()]
    errors = _KB_ERROR.search(text)
    if proc.returncode != 0 or errors or missing:
        why = f"exit {proc.returncode}" + (", ERROR in log" if errors else "") + (
            f", missing {[Path(m).name for m in missing]}" if missing else ""
        )
        raise KbError(f"kb {args[0]} failed ({why}).{kb_hint(text)} kb's log ends with:\n"
                      f"{log_tail(text, tail_lines)}", log_text=text)


def _plain_whitelist(whitelist: PathLike, out_dir: Path) -> Path:
    """kb wants an uncompressed on-list: decompress a .gz one into ``out_dir``."""
    whitelist = Path(whitelist)
    if whitelist.suffix != ".gz":
        return whitelist
    target = out_dir / whitelist.name[:-3]
    with gzip.open(whitelist, "rb") as src, open(target, "wb") as dst:
        shutil.copyfileobj(src, dst)
    return target


# --------------------------------------------------------------------------- references
def kb_ref(
    fasta: PathLike,
    gtf: PathLike | None,
    out_dir: PathLike,
    threads: int = 1,
    *,
    t2g: PathLike | None = None,
) -> dict[str, Path]:
    """Build a kallisto index + transcript-to-gene map in ``out_dir`` (index.idx, t2g.txt, cdna.fa).

    With a GTF, ``fasta`` is the genome and kb's standard workflow extracts the transcriptome. With
    ``gtf=None``, ``fasta`` already holds the targets (transcripts) and is indexed directly
    (``--workflow custom``); ``t2g`` then gives its transcript-to-gene map (default: each target its
    own gene).
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    index, t2g_out, cdna = out / "index.idx", out / "t2g.txt", out / "cdna.fa"
    log = out / "kb_ref.log"
    common = ["-i", index, "-t", int(threads), "--tmp", out / "tmp", "--overwrite"]
    if gtf is not None:
        run_kb(["ref", *common, "-g", t2g_out, "-f1", cdna, fasta, gtf], log, expect=[index, t2g_out])
    else:
        run_kb(["ref", *common, "--workflow", "custom", fasta], log, expect=[index])
        if t2g is not None:
            shutil.copyfile(t2g, t2g_out)
        else:
            names = [ln[1:].split()[0] for ln in _read_text(fasta).splitlines() if ln.startswith(">")]
            t2g_out.write_text("".join(f"{n}\t{n}\t{n}\n" for n in names))
        cdna.write_text(_read_text(fasta))
    return {"index": index, "t2g": t2g_out, "fasta": cdna}


def _read_text(path: PathLike) -> str:
    path = Path(path)
    if path.suffix == ".gz":
        with gzip.open(path, "rt") as fh:
            return fh.read()
    return path.read_text()


def kb_ref_guides(guides: pd.DataFrame, out_dir: PathLike) -> dict[str, Path]:
    """Build a kite (feature-barcode) index from a guides sheet (10x feature reference columns).

    Writes ``features.tsv`` (kb's kite format: *sequence* then *name*, name = guide ``id``),
    ``index.idx``, ``t2g.txt`` and ``mismatch.fa`` (1-mismatch variants) into ``out_dir``.
    """
    missing = {"id", "sequence"} - set(guides.columns)
    if missing:
        raise ValueError(f"guides sheet lacks columns {sorted(missing)}")
    seqs = guides["sequence"].astype(str)
    bad = ~seqs.map(lambda v: bool(GUIDE_SEQUENCE.fullmatch(v)))
    if bad.any():
        raise ValueError(f"guide sequences must be A, C, G, T only (pattern {GUIDE_SEQUENCE.pattern}): "
                         f"{list(guides['id'][bad][:5])}")
    dup = seqs.duplicated(keep=False)
    if dup.any():
        raise ValueError(f"guides share a sequence: {sorted(guides['id'][dup])[:6]}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    features = out / "features.tsv"
    pd.DataFrame({"sequence": seqs, "name": guides["id"].astype(str)}).to_csv(
        features, sep="\t", header=False, index=False
    )
    index, t2g, mismatch = out / "index.idx", out / "t2g.txt", out / "mismatch.fa"
    run_kb(
        ["ref", "-i", index, "-g", t2g, "-f1", mismatch, "--workflow", "kite", "--tmp", out / "tmp",
         "--overwrite", features],
        out / "kb_ref.log",
        expect=[index, t2g],
    )
    return {"index": index, "t2g": t2g, "fasta": mismatch, "features": features}


# --------------------------------------------------------------------------- technology strings
def r1_layout(chemistry: str) -> str:
    """The barcode and UMI part (``bc:umi``) of a chemistry: 10xv2, 10xv3 or a kb technology string."""
    if chemistry in CHEMISTRY_R1:
        bc, umi = CHEMISTRY_R1[chemistry]
        return f"0,0,{bc}:0,{bc},{bc + umi}"
    parts = chemistry.split(":")
    if len(parts) != 3 or not all(_TECH_RE.match(p) for p in parts):
        raise ValueError(f"chemistry {chemistry!r} is neither 10xv2/10xv3 nor a kb 'bc:umi:seq' string")
    return ":".join(parts[:2])


def guide_technology(chemistry: str, guides: pd.DataFrame) -> str:
    """kb technology string for the guide library: the chemistry's barcode/UMI + the guides' read/pattern.

    ``read`` R1/R2 picks the file; a pattern ``^N{k}(BC)`` (all guides of one length L) places the
    protospacer at a fixed offset (``file,k,k+L``); any other pattern (anchor before/after ``(BC)``, or
    mixed offsets/lengths) scans the whole read (``file,0,0``): kallisto then finds the protospacer
    k-mers wherever they are. E.g. 10xv3 + ``^NNNNNNNNNN(BC)`` on R2 -> ``0,0,16:0,16,28:1,10,30``.
    """
    reads = set(guides["read"].astype(str).str.upper())
    if len(reads) != 1 or not reads <= {"R1", "R2"}:
        raise ValueError(f"guides must all sit on one read, R1 or R2; got {sorted(reads)}")
    file_index = 0 if reads == {"R1"} else 1
    patterns = guides["pattern"].astype(str)
    bad = [p for p in patterns.unique() if not _ANY_PATTERN.match(p)]
    if bad:
        raise ValueError(f"unsupported guide pattern(s) {bad}: expected e.g. ^NNNNNNNNNN(BC) or ANCHOR(BC)")
    offsets = {len(m.group(1)) if (m := _FIXED_PATTERN.match(p)) else None for p in patterns.unique()}
    lengths = set(guides["sequence"].astype(str).str.len())
    seq = f"{file_index},0,0"
    if len(offsets) == 1 and None not in offsets and len(lengths) == 1:
        start = offsets.pop()
        seq = f"{file_index},{start},{start + lengths.pop()}"
    return f"{r1_layout(chemistry)}:{seq}"


def kb_technology(chemistry: str) -> str:
    """The technology argument for GEX: kb's own name for 10xv2/10xv3, else the validated string."""
    if chemistry in CHEMISTRY_R1:
        return chemistry.upper()
    r1_layout(chemistry)
    return chemistry


# --------------------------------------------------------------------------- counting
def kb_count(
    index: PathLike,
    t2g: PathLike,
    r1s: Sequence[PathLike],
    r2s: Sequence[PathLike],
    technology: str,
    whitelist: PathLike | None,
    out_dir: PathLike,
    threads: int = 1,
    *,
    memory: str,
    kite: bool = False,
) -> Path:
    """``kb count`` over one library's lanes (``r1s[i]`` pairs ``r2s[i]``) into ``out_dir``.

    ``technology`` is 10xv2, 10xv3 or a kb string (see :func:`guide_technology` for guides).
    ``whitelist`` None/"" = kb's built-in on-list for the chemistry. ``kite=True`` counts feature
    barcodes (guides) against an index from :func:`kb_ref_guides`. Unfiltered matrices land in
    ``out_dir/counts_unfiltered``; kb's log is ``out_dir/kb_count.log``. Returns ``out_dir``.
    """
    if len(r1s) != len(r2s) or not r1s:
        raise ValueError(f"need matching R1/R2 lists, got {len(r1s)} R1 and {len(r2s)} R2")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    args: list[str | PathLike | int] = [
        "count", "-i", index, "-g", t2g, "-x", kb_technology(technology), "-o", out,
        "-t", int(threads), "-m", memory, "--tmp", out / "tmp", "--overwrite",
    ]
    if whitelist:
        args += ["-w", _plain_whitelist(whitelist, out)]
    if kite:
        args += ["--workflow", "kite"]
    fastqs = [str(f) for pair in zip(r1s, r2s, strict=True) for f in pair]
    stem = out / "counts_unfiltered" / ("cells_x_features" if kite else "cells_x_genes")
    run_kb([*map(str, args), *fastqs], out / "kb_count.log", expect=[f"{stem}.mtx"])
    return out


# --------------------------------------------------------------------------- loading
def _matrix_stem(kb_out_dir: Path) -> Path:
    counts = kb_out_dir / "counts_unfiltered"
    for stem in ("cells_x_genes", "cells_x_features"):
        if (counts / f"{stem}.mtx").exists():
            return counts / stem
    raise FileNotFoundError(f"no cells_x_genes.mtx / cells_x_features.mtx under {counts}")


def _lines(path: Path) -> list[str]:
    return [ln.split("\t")[0] for ln in path.read_text().splitlines() if ln]


def load_counts(kb_out_dir: PathLike, library_id: str) -> ad.AnnData:
    """kb's unfiltered matrix as AnnData: X csr int32 counts, all barcodes.

    obs_names ``{library_id}_{barcode}``, obs['barcode'], obs['library']; var_names unique gene names
    (kb's genes.names.txt when present, else ids; duplicates get ``-1``, ``-2``...), var['gene_id'].
    """
    stem = _matrix_stem(Path(kb_out_dir))
    x = sp.csr_matrix(scipy.io.mmread(f"{stem}.mtx"))
    x = sp.csr_matrix(x.astype(np.int32))
    barcodes = _lines(Path(f"{stem}.barcodes.txt"))
    ids = _lines(Path(f"{stem}.genes.txt"))
    names_path = Path(f"{stem}.genes.names.txt")
    names = _lines(names_path) if names_path.exists() else list(ids)
    names = [n if n else i for n, i in zip(names, ids, strict=True)]
    if x.shape != (len(barcodes), len(ids)):
        raise ValueError(f"{stem}.mtx is {x.shape} but lists {len(barcodes)} barcodes x {len(ids)} genes")
    obs = pd.DataFrame(
        {"barcode": barcodes, "library": library_id}, index=[f"{library_id}_{b}" for b in barcodes]
    )
    var = pd.DataFrame({"gene_id": ids}, index=ad.utils.make_index_unique(pd.Index(names)))
    adata = ad.AnnData(X=x, obs=obs, var=var)
    adata.obs["library"] = adata.obs["library"].astype("category")
    return adata


def _reindex_rows(adata: ad.AnnData, obs_names: pd.Index, library_id: str) -> ad.AnnData:
    pos = adata.obs_names.get_indexer(obs_names)
    rows = np.flatnonzero(pos >= 0)
    pick = sp.csr_matrix(
        (np.ones(len(rows), dtype=adata.X.dtype), (rows, pos[rows])), shape=(len(obs_names), adata.n_obs)
    )
    x = sp.csr_matrix(pick @ sp.csr_matrix(adata.X))
    prefix = len(library_id) + 1
    obs = pd.DataFrame(
        {"barcode": [n[prefix:] for n in obs_names], "library": library_id}, index=obs_names
    )
    obs["library"] = obs["library"].astype("category")
    return ad.AnnData(X=x, obs=obs, var=adata.var.copy())


def load_library(
    gex_dir: PathLike, guide_dir: PathLike, library_id: str, batch: str | None = None
) -> tuple[ad.AnnData, ad.AnnData]:
    """Raw GEX and guide AnnData of one library over the union of their barcodes (same obs order).

    A barcode seen in only one library gets an all-zero row in the other. ``batch`` (optional) goes
    to obs['batch'] of both.
    """
    gex = load_counts(gex_dir, library_id)
    guides = load_counts(guide_dir, library_id)
    union = gex.obs_names.union(guides.obs_names, sort=False)
    gex, guides = _reindex_rows(gex, union, library_id), _reindex_rows(guides, union, library_id)
    if batch is not None:
        for a in (gex, guides):
            a.obs["batch"] = pd.Categorical([batch] * a.n_obs)
    return gex, guides
