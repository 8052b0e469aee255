"""Bit-identity check of ``measure_site`` across a refactoring (a tool, not a test).

Measures every feature family on (a) the simulated-like site of ``benchmarks/features.py``, (b) the
real ScaleFEx site segmented as the feature tests do, and (c) the edge-case synthetic objects of the
texture/granularity/radial/colocalisation tests (with and without Costes), then either saves the
DataFrames (``save DIR``, before a change) or compares the current code's output with them
(``compare DIR``, after it: ``pandas.testing.assert_frame_equal(check_exact=True)``, NaNs equal).

    PYTHONPATH=src .venv/bin/python benchmarks/features_identity.py save /tmp/kern_before
    PYTHONPATH=src .venv/bin/python benchmarks/features_identity.py compare /tmp/kern_before
"""

from __future__ import annotations

import os

for _v in ("NUMBA_NUM_THREADS", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_v] = "1"

import argparse  # noqa: E402
import sys  # noqa: E402
import warnings  # noqa: E402
from collections.abc import Callable, Iterator  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

import _features_b_data as fb  # noqa: E402
from _features_a_data import SCALEFEX, load_scalefex, segment_site, synthetic_site  # noqa: E402

from pairedscreen.paint.features import feature_params, measure_site  # noqa: E402

SHARED = Path(os.environ.get("PAIREDSCREEN_SHARED_DATA", REPO.parent / "shared" / "data"))
CHANNELS = ("DNA", "ER", "RNA", "AGP", "Mito")


def cases() -> Iterator[tuple[str, Callable[[], pd.DataFrame]]]:
    """(name, function returning the site's feature table) of every site checked."""

    def simulated() -> pd.DataFrame:
        imgs, nuc, cells, cyto = synthetic_site(seed=3, shape=(1080, 1080), n_cells=520, n_channels=5)
        return measure_site(imgs, CHANNELS, nuc, cells, cyto, feature_params())

    def real() -> pd.DataFrame:
        imgs = load_scalefex(SHARED / SCALEFEX)
        rn, rc, ry = segment_site(imgs)
        return measure_site(imgs, fb.CHANNELS, rn, rc, ry, feature_params())

    def edge_cases(costes: bool) -> Callable[[], pd.DataFrame]:
        def run() -> pd.DataFrame:
            image, labels = fb.synthetic(seed=0)
            image2, _ = fb.synthetic(seed=1)
            imgs = np.stack([image, image2])
            return measure_site(imgs, ("A", "B"), None, labels, None,
                                feature_params({"colocalization_costes": costes}))

        return run

    yield "simulated", simulated
    if (SHARED / SCALEFEX).exists():
        yield "scalefex", real
    yield "edge", edge_cases(False)
    yield "edge_costes", edge_cases(True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("mode", choices=("save", "compare"))
    ap.add_argument("directory", type=Path)
    args = ap.parse_args(argv)
    warnings.filterwarnings("ignore")
    args.directory.mkdir(parents=True, exist_ok=True)
    failed = 0
    for name, run in cases():
        df = run()
        path = args.directory / f"{name}.parquet"
        if args.mode == "save":
            df.to_parquet(path)
            print(f"{name}: saved {df.shape[0]} objects x {df.shape[1]} columns to {path}")
            continue
        ref = pd.read_parquet(path)
        try:
            pd.testing.assert_frame_equal(df, ref, check_exact=True)
            print(f"{name}: identical ({df.shape[0]} objects x {df.shape[1]} columns)")
        except AssertionError as err:
            failed += 1
            print(f"{name}: DIFFERS\n{err}")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
