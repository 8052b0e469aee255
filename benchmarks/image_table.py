"""CPU time of the JUMP per-site ``Image_*`` table (a benchmark, not a test), single thread.

On the real 1080 x 1080 5-channel ScaleFEx site (shared data), best of ``--repeat``:

1. ``per_object``: the jump preset's per-object features (``measure_site``; budget 1.5 CPU-s/site);
2. ``image_after_objects``: ``measure_image`` right after, as ``paint_features`` runs it: the granularity
   spectra of the five channels are cached by the per-object pass and reused, and PowerLogLogSlope comes
   from the image index (computed by ``paint_index`` for its QC, not counted here);
3. ``image_alone``: ``measure_image`` with an empty cache (every part computed);
4. the parts of (3) per channel family, to show where the time goes.

Prints ``added_fraction: <image_after_objects / per_object>``.

    .venv/bin/python benchmarks/image_table.py [--repeat 3]
"""

from __future__ import annotations

import os

for _v in ("NUMBA_NUM_THREADS", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_v] = "1"

import argparse  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from _features_a_data import SCALEFEX, SCALEFEX_CHANNELS, load_scalefex, segment_site  # noqa: E402

from pairedscreen.paint import image_qc  # noqa: E402
from pairedscreen.paint.features import feature_params, granularity, measure_site  # noqa: E402
from pairedscreen.paint.features import image as image_table  # noqa: E402
from pairedscreen.paint.features import tubeness as tubeness_module  # noqa: E402
from pairedscreen.paint.features.skeleton import mito_threshold_settings  # noqa: E402
from pairedscreen.paint.features.texture import measure_image_texture  # noqa: E402
from pairedscreen.paint.features.threshold import otsu_quality_threshold, threshold_measurements  # noqa: E402
from pairedscreen.paint.features.tubeness import tubeness  # noqa: E402

SHARED = Path(os.environ.get("PAIREDSCREEN_SHARED_DATA", REPO.parent / "shared" / "data"))


def cpu(fn, repeat: int) -> float:
    best = np.inf
    for _ in range(repeat):
        t = time.process_time()
        fn()
        best = min(best, time.process_time() - t)
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    orig = load_scalefex(SHARED / SCALEFEX)
    nuc, cells, cyto = segment_site(orig)
    # a corrected site: a smooth illumination function, as the paint stage divides by
    h, w = orig.shape[1:]
    yy, xx = np.mgrid[0:h, 0:w]
    illum = 1.0 + 0.2 * np.exp(-(((yy - h / 2) / h) ** 2 + ((xx - w / 2) / w) ** 2) * 4)
    corr = (orig / illum).astype(np.float32)
    params = feature_params({"preset": "jump"})
    ch = list(SCALEFEX_CHANNELS)
    measure_image = image_table.measure_image
    measure_image(orig, corr, ch, cells, 65535.0, params)  # compile the kernels

    plls = {c: image_qc.power_log_log_slope(orig[i]) for i, c in enumerate(ch)}  # the index's focus_plls

    def cold() -> None:
        granularity._SPECTRUM_CACHE.clear()
        tubeness_module._CACHE.clear()

    def objects_then_image():
        cold()
        t = time.process_time()
        measure_site(corr, ch, nuc, cells, cyto, params, scale=65535.0)
        mid = time.process_time()
        measure_image(orig, corr, ch, cells, 65535.0, params, plls=plls)
        return mid - t, time.process_time() - mid

    runs = [objects_then_image() for _ in range(args.repeat)]
    per_object = min(r[0] for r in runs)
    after = min(r[1] for r in runs)

    def alone():
        cold()
        measure_image(orig, corr, ch, cells, 65535.0, params)

    t_alone = cpu(alone, args.repeat)
    print(f"site: ScaleFEx {h}x{w}, 5 channels, {int(cells.max())} cells; CPU seconds, best of {args.repeat}")
    print(f"per_object (jump preset):          {per_object:6.2f}")
    print(f"image_after_objects (paint stage): {after:6.2f}")
    print(f"image_alone (empty cache):         {t_alone:6.2f}")
    c64 = corr.astype(np.float64)
    bg = cells == 0
    parts = {
        "ImageQuality (5 x Orig)": lambda: [image_table._quality(orig[i], c, 65535.0, None)
                                            for i, c in enumerate(ch)],
        "  of which PowerLogLogSlope": lambda: [image_qc.power_log_log_slope(orig[i]) for i in range(5)],
        "  of which ThresholdOtsu (2)": lambda: (otsu_quality_threshold(orig[3], False, False),
                                                 otsu_quality_threshold(orig[4], True, True)),
        "Intensity (5 x image + background)": lambda: [(image_table.intensity_statistics(c64[i]),
                                                        image_table.intensity_statistics(c64[i][bg]))
                                                       for i in range(5)],
        "Texture (5 x 3 scales x 4 angles)": lambda: [measure_image_texture(c64[i], c, [3, 5, 10], 256)
                                                     for i, c in enumerate(ch)],
        "Granularity (5, uncached)": lambda: (granularity._SPECTRUM_CACHE.clear(),
                                              [granularity.image_granularity(c64[i], c, 16, 0.5, 0.5, 10)
                                               for i, c in enumerate(ch)]),
        "Threshold (CorrBlue, RNA, mito_bw)": lambda: (
            threshold_measurements(image_table.corr_blue(c64[3]),
                                   image_table.JUMP_THRESHOLDS["NucleiIncludingEdges"]),
            threshold_measurements(c64[4], image_table.JUMP_THRESHOLDS["CellsIncludingEdges"]),
            cold(),
            threshold_measurements(tubeness(c64[2], smoothing=1.0, rescale=True),
                                   mito_threshold_settings(params["skeleton_threshold_smoothing"]))),
    }
    for name, fn in parts.items():
        print(f"  {name:36s} {cpu(fn, args.repeat):6.2f}")
    print(f"added_fraction: {after / per_object:.2f}")


if __name__ == "__main__":
    main()
