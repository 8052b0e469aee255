"""Speed of the texture / granularity / radial / colocalisation families vs cp_measure 0.3.

Real ScaleFEx 1080x1080 site intensities with synthetic masks of a few hundred cells (Voronoi cells
around random seeds, cut to a disc; nuclei = discs): ``.venv/bin/python benchmarks/features_b_speed.py
[n_cells]``. CPU seconds (``time.process_time``), best of ``REPEATS`` for ours (first call warms
numba's cache), one run for cp_measure. Prints per family and channel/pair: ours, cp_measure, ratio.
"""

from __future__ import annotations

import sys
import time
import warnings
from pathlib import Path

import numpy as np
from scipy import ndimage as ndi

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from _features_b_data import SCALEFEX, load_site  # noqa: E402

from pairedscreen.config import schema_defaults  # noqa: E402
from pairedscreen.paint.features.colocalization import measure_colocalization  # noqa: E402
from pairedscreen.paint.features.granularity import measure_granularity  # noqa: E402
from pairedscreen.paint.features.objects import build_index  # noqa: E402
from pairedscreen.paint.features.radial import measure_radial_distribution  # noqa: E402
from pairedscreen.paint.features.texture import measure_texture  # noqa: E402

SCHEMA = schema_defaults()   # the pipeline's values: library functions take them as required keywords
TEXTURE = {"scales": SCHEMA["paint.features.texture_scales"],
           "levels": SCHEMA["paint.features.texture_levels"]}
GRANULARITY = {k: SCHEMA[f"paint.features.granularity_{k}"]
               for k in ("spectrum_length", "subsample_size", "background_subsample_size", "element_size")}
RADIAL = {"bins": SCHEMA["paint.features.radial_bins"]}

REPEATS = 3


def masks(shape: tuple[int, int], n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    seeds = rng.integers(20, shape[0] - 20, size=(n, 2))
    markers = np.zeros(shape, np.int32)
    markers[seeds[:, 0], seeds[:, 1]] = np.arange(1, n + 1)
    dist, (iy, ix) = ndi.distance_transform_edt(markers == 0, return_indices=True)
    cells = markers[iy, ix]
    cells[dist > 24] = 0
    nuclei = np.where(dist <= 9, cells, 0)
    return nuclei.astype(np.int32), cells.astype(np.int32)


def cpu(fn, repeats: int = 1, before=None) -> float:
    best = np.inf
    for _ in range(repeats):
        if before is not None:
            before()
        t = time.process_time()
        fn()
        best = min(best, time.process_time() - t)
    return best


def clear_caches() -> None:
    """Forget cached per-image / per-index work so a call is measured cold."""
    from pairedscreen.paint.features import colocalization, granularity, radial, tubeness

    granularity._SPECTRUM_CACHE.clear()
    tubeness._CACHE.clear()
    colocalization._RANK_CACHE.clear()
    radial._GEOMETRY_CACHE.clear()


def main(n_cells: int = 500) -> None:
    from cp_measure.core import measurecolocalization as mc
    from cp_measure.core.measuregranularity import get_granularity
    from cp_measure.core.measureobjectintensitydistribution import get_radial_distribution
    from cp_measure.core.measuretexture import get_texture

    warnings.simplefilter("ignore")
    images = load_site(REPO.parent / "shared" / "data" / SCALEFEX)
    nuclei, cells = masks(images.shape[1:], n_cells)
    cytoplasm = np.where(nuclei > 0, 0, cells)
    idx = build_index(cells)
    print(f"cells: {idx.n_objects} objects, mean area {idx.areas.mean():.0f} px; CPU ms, best of {REPEATS}")
    ch = 3  # DNA
    rows = [
        ("texture (1 channel)", lambda: measure_texture(images[ch], cells, "DNA", index=idx, **TEXTURE),
         lambda: get_texture(cells, images[ch])),
        ("granularity (1 channel)", lambda: measure_granularity(images[ch], cells, "DNA", index=idx,
                                                                **GRANULARITY),
         lambda: get_granularity(cells, images[ch])),
        ("radial (1 channel)", lambda: measure_radial_distribution(images[ch], cells, "DNA", index=idx,
                                                                   **RADIAL),
         lambda: get_radial_distribution(cells, images[ch])),
        ("colocalisation (1 pair)",
         lambda: measure_colocalization(images[0], images[2], cells, "ER", "Mito", index=idx),
         lambda: [f(images[0], images[2], cells) for f in (mc.get_correlation_pearson,
                  mc.get_correlation_manders_fold, mc.get_correlation_rwc, mc.get_correlation_overlap)]),
    ]
    print(f"{'family':26s} {'cold':>8s} {'warm':>8s} {'cp_measure':>11s} {'x cold':>7s}")
    tot_o = tot_r = 0.0
    ref_ms = []
    for name, ours, ref in rows:
        ours()  # compile / load numba's cache
        t_cold = cpu(ours, REPEATS, clear_caches)
        t_warm = cpu(ours, REPEATS)
        t_r = cpu(ref)
        tot_o += t_cold
        tot_r += t_r
        ref_ms.append(t_r)
        print(f"{name:26s} {t_cold * 1e3:8.1f} {t_warm * 1e3:8.1f} {t_r * 1e3:11.1f} {t_r / t_cold:7.1f}")
    print(f"{'sum (cold)':26s} {tot_o * 1e3:8.1f} {'':8s} {tot_r * 1e3:11.1f} {tot_r / tot_o:7.1f}")
    print("warm = cached work reused: radial geometry per index, granularity image spectrum per channel,"
          " colocalisation ranks per channel and index")

    compartments = [(lab, build_index(lab)) for lab in (nuclei, cells, cytoplasm)]

    def full_site() -> None:
        # the whole part-B set of a site: 5 channels x 3 compartments, 10 pairs x 3 compartments
        for lab, ix in compartments:
            for c in range(5):
                measure_texture(images[c], lab, str(c), index=ix, **TEXTURE)
                measure_granularity(images[c], lab, str(c), index=ix, **GRANULARITY)
                measure_radial_distribution(images[c], lab, str(c), index=ix, **RADIAL)
            for a in range(5):
                for b in range(a + 1, 5):
                    measure_colocalization(images[a], images[b], lab, str(a), str(b), index=ix)

    full_site()
    t_full = cpu(full_site, 2, clear_caches)
    print(f"full part-B set (5 channels, 10 pairs, nuclei + cells + cytoplasm, caches cold at start): "
          f"{t_full:.3f} CPU-s")
    # cp_measure for the same set, extrapolated from its single-call cell timings above (an upper
    # bound: nuclei and cytoplasm are smaller than cells)
    est = 3 * (5 * sum(ref_ms[:3]) + 10 * ref_ms[3])
    print(f"cp_measure estimate for the same set: {est:.1f} CPU-s -> x{est / t_full:.0f}")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 500)
