"""Helpers to build and run Snakemake working directories in tests."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
PATTERN, FT = "^NNNNNNNNNN(BC)", "CRISPR Guide Capture"


def write_tsv(path: Path, header: list[str], rows: list[list[object]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = ["\t".join(header)] + ["\t".join(str(v) for v in r) for r in rows]
    path.write_text("\n".join(lines) + "\n")
    return path


def minimal_workdir(root: Path) -> Path:
    """A syntactically complete screen (empty raw files) for dry runs and validation tests."""
    raw = root / "raw"
    for name in ("L1_gex_R1.fastq.gz", "L1_gex_R2.fastq.gz", "L1_guide_R1.fastq.gz", "L1_guide_R2.fastq.gz"):
        (raw / "fastq").mkdir(parents=True, exist_ok=True)
        (raw / "fastq" / name).write_bytes(b"")
    (raw / "images" / "P1").mkdir(parents=True, exist_ok=True)
    for f in ("transcriptome.fa", "genes.gtf", "whitelist.txt"):
        (raw / "reference").mkdir(parents=True, exist_ok=True)
        (raw / "reference" / f).write_text("")
    cfg = root / "config"
    write_tsv(cfg / "perturbations.tsv",
              ["perturbation_id", "perturbation_type", "target_gene", "is_control", "control_type"],
              [["TGT01", "CRISPRi", "TGT01", "false", ""], ["NTC_1", "control", "", "true", "non-targeting"]])
    write_tsv(cfg / "guides.tsv",
              ["id", "name", "read", "pattern", "sequence", "feature_type", "target_gene_id",
               "target_gene_name", "perturbation_id"],
              [["TGT01-g1", "TGT01-g1", "R2", PATTERN, "ACGTACGTACGTACGTACGT", FT, "SYNG1", "TGT01", "TGT01"],
               ["NTC_1-g1", "NTC_1-g1", "R2", PATTERN, "TTTTACGTACGTACGTAAAA", FT, "Non-Targeting",
                "Non-Targeting", "NTC_1"]])
    write_tsv(cfg / "rna_libraries.tsv",
              ["library_id", "batch", "chemistry", "gex_fastq_r1", "gex_fastq_r2", "guide_fastq_r1",
               "guide_fastq_r2", "expected_cells"],
              [["L1", "B1", "10xv3", "raw/fastq/L1_gex_R1.fastq.gz", "raw/fastq/L1_gex_R2.fastq.gz",
                "raw/fastq/L1_guide_R1.fastq.gz", "raw/fastq/L1_guide_R2.fastq.gz", 300]])
    write_tsv(cfg / "plates.tsv", ["plate_id", "batch", "image_dir", "plate_map"],
              [["P1", "B1", "raw/images/P1", "config/plate_maps/P1.tsv"]])
    write_tsv(cfg / "plate_maps" / "P1.tsv", ["well", "perturbation_id", "replicate"],
              [["B02", "TGT01", 1], ["B03", "NTC_1", 1], ["C05", "TGT01", 2]])
    conf = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    conf["paint"]["segmentation"]["nuclei"]["model"] = "nuclei"
    conf["paint"]["segmentation"]["cells"]["model"] = "cyto3"
    (cfg / "config.yaml").write_text(yaml.safe_dump(conf, sort_keys=False))
    return root


def _command(workdir: Path, args: tuple[str, ...]) -> list[str]:
    """snakemake on ``workdir``, with profiles/workstation unless the arguments name a profile (there is no
    implicit profiles/default: see docs/usage.md "Run on a workstation")."""
    profile = [] if any(a.startswith("--profile") for a in args) else [
        "--profile", str(REPO / "profiles" / "workstation")]
    snakefile = str(REPO / "Snakefile")
    return [str(BIN / "snakemake"), "-s", snakefile, "--directory", str(workdir), *profile, *args]


def snakemake(workdir: Path, *args: str, timeout: int = 1800,
              env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """Run the repository's workflow on ``workdir`` with the test environment's snakemake (``env``: extra
    environment variables)."""
    env = dict(os.environ, **(env or {}), PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}")
    cmd = _command(workdir, args)
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout, cwd=REPO)


def planned_jobs(dry_run_output: str) -> list[tuple[str, dict[str, str]]]:
    """(rule, wildcards) of every job a `snakemake -n` would run, parsed from its output."""
    jobs: list[tuple[str, dict[str, str]]] = []
    # jobs of a group job are printed indented under "Group job ...": split at indented rules too
    for block in re.split(r"\n(?=[ \t]*(?:local)?rule \w+:)", dry_run_output):
        m = re.match(r"(?:local)?rule (\w+):", block.strip())
        if not m:
            continue
        wc: dict[str, str] = {}
        w = re.search(r"^\s*wildcards: (.*)$", block, re.M)
        if w:
            for part in w.group(1).split(", "):
                k, _, v = part.partition("=")
                wc[k.strip()] = v.strip()
        jobs.append((m.group(1), wc))
    return jobs


def copy_tree(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def start_snakemake(workdir: Path, *args: str, log: Path) -> subprocess.Popen:
    """Start the workflow in its own process group (so a test can SIGKILL snakemake and every job)."""
    env = dict(os.environ, PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}")
    cmd = _command(workdir, args)
    with open(log, "w") as fh:
        return subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, env=env, cwd=REPO,
                                start_new_session=True)
