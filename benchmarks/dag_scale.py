"""Planning at screen scale: CPU and peak memory of `snakemake -n` over placeholder screens.

    nice -n 10 .venv/bin/python benchmarks/dag_scale.py                 # 20 and 100 plates
    .venv/bin/python benchmarks/dag_scale.py --plates 20 --reuse        # keep/reuse the generated screens

Each screen has N plates x 384 wells x 9 sites x 5 channels of empty image files (planning never reads
them), full 384-well plate maps and one RNA library (empty FASTQs). The control is the same screen with
one image file per well: the same DAG, so `ratio` (screen / control) is what tracking the images costs the
planner on top of the DAG itself. Per screen one line::

    plates=N jobs=J cpu_s=X peak_rss_mb=Y   (control: ...; ratio cpu=..x rss=..x)

cpu_s = user + system CPU of the `snakemake -n` process and its children (getrusage of the waited child);
peak_rss_mb = the peak of the summed RSS of the process tree, sampled every 50 ms. The first `snakemake -n`
on a screen also writes the plates' image manifests (results/paint/{plate}/image_manifest.tsv); the figures
are from a second run, as a user replans a screen, with the first run's figures printed beside them.
"""

from __future__ import annotations

import argparse
import os
import re
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

import yaml
from rna_scale import PeakRSS

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
ROWS, COLS = "ABCDEFGHIJKLMNOP", range(1, 25)
WELLS = [f"{r}{c:02d}" for r in ROWS for c in COLS]
SITES, CHANNELS = 9, 5


def _tsv(path: Path, header: list[str], rows: list[list[object]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(["\t".join(header)] + ["\t".join(map(str, r)) for r in rows]) + "\n")


def make_screen(root: Path, n_plates: int, per_well_files: bool) -> Path:
    """A placeholder screen; ``per_well_files`` False = the control, one image file per well."""
    if (root / "config" / "config.yaml").exists():
        return root
    shutil.rmtree(root, ignore_errors=True)
    n_perts = 380
    perts = [[f"TGT{i:03d}", "CRISPRi", f"TGT{i:03d}", "false", ""] for i in range(n_perts - 4)]
    perts += [[f"NTC_{i}", "control", "", "true", "non-targeting"] for i in range(4)]
    cfg = root / "config"
    _tsv(cfg / "perturbations.tsv",
         ["perturbation_id", "perturbation_type", "target_gene", "is_control", "control_type"], perts)
    bases = "ACGT"
    guides = []
    for i, p in enumerate(perts):
        seq = "".join(bases[(i >> (2 * k)) & 3] for k in range(10)) + "ACGTACGTAC"
        tgt = "Non-Targeting" if p[3] == "true" else p[0]
        guides.append([f"{p[0]}-g1", f"{p[0]}-g1", "R2", "^NNNNNNNNNN(BC)", seq, "CRISPR Guide Capture",
                       tgt, tgt, p[0]])
    _tsv(cfg / "guides.tsv", ["id", "name", "read", "pattern", "sequence", "feature_type", "target_gene_id",
                              "target_gene_name", "perturbation_id"], guides)
    fq = root / "raw" / "fastq"
    fq.mkdir(parents=True)
    for kind in ("gex", "guide"):
        for mate in ("R1", "R2"):
            (fq / f"L1_{kind}_{mate}.fastq.gz").write_bytes(b"")
    _tsv(cfg / "rna_libraries.tsv",
         ["library_id", "batch", "chemistry", "gex_fastq_r1", "gex_fastq_r2", "guide_fastq_r1",
          "guide_fastq_r2", "expected_cells"],
         [["L1", "B1", "10xv3",
           *(f"raw/fastq/L1_{k}_{m}.fastq.gz" for k in ("gex", "guide") for m in ("R1", "R2")), 20000]])
    ref = root / "raw" / "reference"
    ref.mkdir(parents=True)
    for f in ("transcriptome.fa", "genes.gtf", "whitelist.txt"):
        (ref / f).write_text("")
    plates = []
    for k in range(1, n_plates + 1):
        pid = f"P{k:03d}"
        _tsv(cfg / "plate_maps" / f"{pid}.tsv", ["well", "perturbation_id", "replicate"],
             [[w, perts[i % n_perts][0], 1 + i // n_perts] for i, w in enumerate(WELLS)])
        d = root / "raw" / "images" / pid
        d.mkdir(parents=True)
        for w in WELLS:
            if per_well_files:
                for s in range(1, SITES + 1):
                    for c in range(1, CHANNELS + 1):
                        open(d / f"{w}_s{s}_w{c}.tif", "wb").close()
            else:
                open(d / f"{w}_s1_w1.tif", "wb").close()
        plates.append([pid, f"B{1 + (k - 1) // 10}", f"raw/images/{pid}", f"config/plate_maps/{pid}.tsv"])
    _tsv(cfg / "plates.tsv", ["plate_id", "batch", "image_dir", "plate_map"], plates)
    conf = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    conf["paint"]["segmentation"]["nuclei"]["model"] = "nuclei"
    conf["paint"]["segmentation"]["cells"]["model"] = "cyto3"
    conf.pop("truth_dir", None)
    (cfg / "config.yaml").write_text(yaml.safe_dump(conf, sort_keys=False))
    return root


def dry_run(workdir: Path) -> tuple[int, float, float]:
    """(jobs, CPU seconds, peak RSS MB) of one `snakemake -n` on ``workdir``."""
    env = dict(os.environ, PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}")
    cmd = [str(BIN / "snakemake"), "-s", str(REPO / "Snakefile"), "--directory", str(workdir), "-n"]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    with PeakRSS(children=True) as rss:
        res = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=REPO)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if res.returncode != 0:
        raise SystemExit(f"snakemake -n failed on {workdir}:\n{(res.stdout + res.stderr)[-3000:]}")
    m = re.search(r"^total\s+(\d+)$", res.stdout, re.M)
    jobs = int(m.group(1)) if m else -1
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return jobs, cpu, rss.children_peak / 2**20


def measure(workdir: Path) -> tuple[tuple[int, float, float], tuple[int, float, float]]:
    first = dry_run(workdir)   # writes the image manifests
    return dry_run(workdir), first


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--plates", type=int, nargs="+", default=[20, 100])
    ap.add_argument("--work", type=Path, default=Path("/tmp/pairedscreen-dag-scale"))
    ap.add_argument("--reuse", action="store_true", help="keep the generated screens (default: remove them)")
    args = ap.parse_args()
    for n in args.plates:
        t0 = time.time()
        screen = make_screen(args.work / f"plates{n}", n, per_well_files=True)
        control = make_screen(args.work / f"plates{n}_control", n, per_well_files=False)
        n_images = n * len(WELLS) * SITES * CHANNELS
        print(f"# generated {n} plates ({n_images} images) in {time.time() - t0:.0f} s", flush=True)
        (jobs, cpu, rss), (_, cpu1, rss1) = measure(screen)
        (cjobs, ccpu, crss), _ = measure(control)
        print(f"plates={n} jobs={jobs} cpu_s={cpu:.1f} peak_rss_mb={rss:.0f}   "
              f"(first run, writing manifests: cpu_s={cpu1:.1f} peak_rss_mb={rss1:.0f}; "
              f"control 1 file/well: jobs={cjobs} cpu_s={ccpu:.1f} peak_rss_mb={crss:.0f}; "
              f"ratio cpu={cpu / ccpu:.2f}x rss={rss / crss:.2f}x)", flush=True)
        if not args.reuse:
            shutil.rmtree(screen)
            shutil.rmtree(control)
    return 0


if __name__ == "__main__":
    sys.exit(main())
