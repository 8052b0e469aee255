"""Write the run report.

``python -m pairedscreen.report RESULTS_DIR CONFIG_YAML OUT_HTML [--truth-dir DIR]``
"""

from __future__ import annotations

import argparse
from pathlib import Path

from pairedscreen.config import load_config
from pairedscreen.paths import path
from pairedscreen.report.render import build_report


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m pairedscreen.report", description=__doc__)
    ap.add_argument("results_dir", type=Path, help="the run's results folder")
    ap.add_argument("config", type=Path, help="the run's config.yaml")
    ap.add_argument("out_html", type=Path, help=f"where to write the report ({path('report')})")
    ap.add_argument("--truth-dir", type=Path, default=None, help="simulator truth/ folder, if any")
    args = ap.parse_args(argv)
    config = load_config(args.config)
    info = build_report(args.results_dir, config, args.out_html, truth_dir=args.truth_dir)
    t = info["timing"]
    print(f"wrote {args.out_html}: {info['size_bytes'] / 1e6:.2f} MB in {t['total_s']:.1f} s "
          f"(collect {t['collect_s']:.1f} s, render {t['render_s']:.1f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
