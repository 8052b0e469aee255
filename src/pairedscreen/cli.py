"""Command line: `pairedscreen simulate`, `pairedscreen train-segmentation`, `pairedscreen provenance`,
`pairedscreen validate`."""

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

    args = p.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except PairedscreenError as exc:  # bad input: the message names the file and the fix; no traceback
        print(format_known_error(exc), file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
