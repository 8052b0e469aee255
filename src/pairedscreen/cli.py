"""Command line: `pairedscreen simulate`, `train-segmentation`, `provenance`, `discover`, `slurm-check`,
`validate`."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from pairedscreen.errors import PairedscreenError, format_known_error


def _overrides(args: argparse.Namespace) -> dict:
    pairs = {
        "paint.n_plates": args.plates, "paint.sites_per_well": args.sites,
        "paint.image_size": args.image_size, "paint.cells_per_site": args.cells_per_site,
        "paint.wells_per_perturbation": args.wells_per_perturbation,
        "rna.n_libraries": args.libraries, "rna.cells_per_library": args.cells,
        "rna.empty_droplets_per_library": args.empty_droplets,
    }
    return {k: v for k, v in pairs.items() if v is not None}


def cmd_simulate(args: argparse.Namespace) -> int:
    from pairedscreen.simulate import simulate

    out = simulate(args.out, preset=args.preset, seed=args.seed, overrides=_overrides(args))
    print(f"simulated screen written to {out}; run it with: snakemake --directory {out} --cores 2")
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from pairedscreen.paint.train import SHIPPED_RECIPE, train_shipped
    from pairedscreen.simulate import simulate

    work = args.work_dir or Path(args.out) / ".training_screen"
    if not (Path(work) / "truth").exists():   # the training screen of the shipped recipe
        r = SHIPPED_RECIPE
        simulate(work, preset=r["sim_preset"], seed=r["sim_seed"], overrides=r["sim_overrides"])
    for path in train_shipped(args.out, work, tuple(args.compartment), n_epochs=args.epochs, seed=args.seed):
        print(path)
    return 0


def cmd_provenance(args: argparse.Namespace) -> int:
    from pairedscreen import provenance

    lib = provenance.library_provenance()
    rows = provenance.stale_outputs(args.directory) if args.stale else provenance.output_table(args.directory)
    if args.paths:
        for r in rows:
            print(r["path"])
        return 0
    if not args.stale:
        print(f"# library {lib['version']} source {lib['source_sha256'][:12]} "
              f"commit {lib['git_commit'] or '-'}")
    for r in rows:
        print(f"{r['path']}\t{r['rule']}\t{r['version']}\t{(r['source_sha256'] or '')[:12]}\t"
              f"{(r['git_commit'] or '-')[:12]}")
    return 0


def cmd_validate(args: argparse.Namespace) -> int:
    """The checks the workflow makes before planning any job (config + every sheet + cross-checks +
    segmentation models), without Snakemake: exit 0 with a one-line summary, or 1 with every problem."""
    from pairedscreen.config import ConfigError, load_config, resolve_model
    from pairedscreen.io import repo_root
    from pairedscreen.sheets import SheetError, load_screen

    workdir = args.directory.resolve()
    config_path = args.config if args.config.is_absolute() else workdir / args.config
    try:
        config = load_config(config_path, source=str(args.config))
        screen = load_screen(config, workdir)
        seg = config["paint"]["segmentation"]
        for comp in ("nuclei", "cells"):
            resolve_model(seg[comp]["model"], workdir, repo_root())
    except (ConfigError, SheetError, FileNotFoundError) as err:
        print(f"pairedscreen validate: {workdir}: invalid\n{err}", file=sys.stderr)
        return 1
    print(f"pairedscreen validate: {workdir}: ok: {screen.summary()}")
    return 0


def cmd_discover(args: argparse.Namespace) -> int:
    from pairedscreen.discover import discover
    from pairedscreen.sheets import fastq_lanes

    found = discover(args.landing, args.directory, batch=args.batch, dry_run=args.dry_run)
    verb = "would add" if args.dry_run else "added"
    for row in found.plates:
        print(f"{verb} plate {row['plate_id']}: batch {row['batch']}, images {row['image_dir']}, "
              f"plate map {row['plate_map']}")
    for row in found.libraries:
        print(f"{verb} library {row['library_id']}: batch {row['batch']}, "
              f"{len(fastq_lanes(row['gex_fastq_r1']))} GEX lane(s), "
              f"{len(fastq_lanes(row['guide_fastq_r1']))} guide lane(s)")
    if found.known:
        print(f"already in the sheets: {', '.join(found.known)}")
    if not (found.plates or found.libraries):
        print("nothing new to add")
    for problem in found.problems:
        print(f"not added: {problem}", file=sys.stderr)
    return 1 if found.problems else 0


def cmd_slurm_check(args: argparse.Namespace) -> int:
    from pairedscreen.slurm import SlurmSetupError, check, env_targets

    targets = env_targets(args.account, args.partition, args.gpu_partition)
    try:
        check(targets, check_account=not args.no_account)
    except SlurmSetupError as e:
        print(e, file=sys.stderr)
        return 1
    accounts = "no account" if args.no_account else "account " + ", ".join(targets.accounts)
    print(f"SLURM ok: {accounts}; partitions " + ", ".join(
        f"{p} ({', '.join(r)})" for p, r in targets.partitions.items()))
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="pairedscreen", description=__doc__)
    sub = p.add_subparsers(dest="cmd", required=True)

    s = sub.add_parser("simulate", help="write a simulated paired screen (raw data, sheets, config, truth)")
    s.add_argument("--out", type=Path, required=True, help="working directory to create")
    s.add_argument("--preset", default="tiny", help="tiny | demo")
    s.add_argument("--seed", type=int, default=None)
    for flag in ("plates", "sites", "image-size", "cells-per-site", "wells-per-perturbation", "libraries",
                 "cells", "empty-droplets"):
        s.add_argument(f"--{flag}", type=int, default=None)
    s.set_defaults(func=cmd_simulate)

    t = sub.add_parser("train-segmentation", help="train the small demo Cellpose models on simulated fields")
    t.add_argument("--out", type=Path, default=Path("resources/models"))
    t.add_argument("--compartment", nargs="+", default=["nuclei", "cells"], choices=["nuclei", "cells"])
    t.add_argument("--epochs", type=int, default=None, help="default: the shipped models' setting")
    t.add_argument("--seed", type=int, default=None, help="training seed (default: the shipped models')")
    t.add_argument("--work-dir", type=Path, default=None,
                   help="where the training screen is simulated (default: OUT/.training_screen)")
    t.set_defaults(func=cmd_train)

    v = sub.add_parser("provenance", help="which library version made each output of a run "
                       "(--stale: only those made by another version than this one)")
    v.add_argument("directory", type=Path, nargs="?", default=Path("."), help="the run's working directory")
    v.add_argument("--stale", action="store_true",
                   help="only outputs whose library source digest differs from the installed library's")
    v.add_argument("--paths", action="store_true",
                   help="print paths only, e.g. for "
                   "`snakemake --forcerun $(pairedscreen provenance --stale --paths DIR)`")
    v.set_defaults(func=cmd_provenance)

    v = sub.add_parser("validate", help="check the config and every sheet as the workflow does, without "
                                         "running anything")
    v.add_argument("directory", type=Path, nargs="?", default=Path("."),
                   help="the run's working directory (holds config/; default: the current directory)")
    v.add_argument("--config", type=Path, default=Path("config/config.yaml"),
                   help="config file, relative to the working directory (default: config/config.yaml)")
    v.set_defaults(func=cmd_validate)

    d = sub.add_parser("discover", help="append new plates / runs of a landing folder to the sheets")
    d.add_argument("landing", type=Path, help="folder to scan (relative to --directory, or absolute)")
    d.add_argument("--directory", "-d", type=Path, default=Path("."), help="the screen's working directory")
    d.add_argument("--batch", default=None, help="batch of the new rows (default: the landing folder's name)")
    d.add_argument("--dry-run", "-n", action="store_true", help="print what would be added, change nothing")
    d.set_defaults(func=cmd_discover)

    c = sub.add_parser("slurm-check", help="check the SLURM account and partitions profiles/slurm submits to")
    c.add_argument("--account", default=None, help="default: $PAIREDSCREEN_SLURM_ACCOUNT")
    c.add_argument("--partition", default=None, help="CPU jobs; default: $PAIREDSCREEN_SLURM_PARTITION")
    c.add_argument("--gpu-partition", default=None,
                   help="segmentation jobs; default: $PAIREDSCREEN_SLURM_GPU_PARTITION")
    c.add_argument("--no-account", action="store_true",
                   help="a cluster without accounts (--slurm-no-account)")
    c.set_defaults(func=cmd_slurm_check)

    args = p.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except PairedscreenError as exc:  # bad input: the message names the file and the fix; no traceback
        print(format_known_error(exc), file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
