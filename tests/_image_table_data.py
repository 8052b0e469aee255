"""The JUMP per-site Image_* table's CellProfiler reference: the JUMP pipeline's settings (written out from
JUMP_analysis_v3.cppipe, not read from our module), CellProfiler 4.2.8's module code
(``_cellprofiler_reference.py``) run with them, and the two test sites (real ScaleFEx, simulated).
Shared by ``tests/test_features_image.py`` and ``benchmarks/feature_parity.py``."""

from __future__ import annotations

import numpy as np
from _features_a_data import load_scalefex, segment_site, synthetic_site

from pairedscreen.paint.features.tubeness import tubeness

CHANNELS = ("ER", "AGP", "Mito", "DNA", "RNA")
# JUMP_analysis_v3.cppipe, modules 26-33 (MaskImage output names) and 3/4 (MeasureImageQuality)
BACKGROUND = {"DNA": "DNA_BackgroundOnly", "AGP": "AGP__BackgroundOnly", "ER": "ER__BackgroundOnly",
              "Mito": "Mito_BackgroundOnly", "RNA": "RNA_BackgroundOnly"}
BLUR = (5, 10, 20, 50)
QUALITY_OTSU = {"DNA": [(True, False, "2W")], "RNA": [(False, True, "3FW")]}
# modules 8 (IdentifyPrimaryObjects), 9 (IdentifySecondaryObjects), 22 (Threshold), 6 (CorrBlue)
NUCLEI = dict(method="Minimum Cross-Entropy", smoothing=1, correction=1, lower=0.005, upper=1,
              three_class=True, middle_fg=False, log=False)
CELLS = dict(method="Otsu", smoothing=0, correction=0.7, lower=0.005, upper=0.06, three_class=True,
             middle_fg=True, log=True)
MITO_BW = dict(method="Minimum Cross-Entropy", smoothing=1.3488, correction=1, lower=0, upper=1,
               three_class=False, middle_fg=True, log=False)


def cellprofiler_table(orig, corrected, cells, params):
    """Every Image_* value as CellProfiler 4.2.8's modules compute it (keys without ``Image_``)."""
    import _cellprofiler_reference as cp

    out = {}
    for c, ch in enumerate(CHANNELS):
        out.update(cp.cp_image_quality(orig[c], f"Orig{ch}", 65535.0, BLUR, QUALITY_OTSU.get(ch, ())))
        out.update(cp.cp_image_intensity(corrected[c], ch, cells, BACKGROUND[ch]))
        out.update(cp.cp_texture_image(corrected[c], ch, params["texture_scales"], params["texture_levels"]))
        out.update(cp.cp_granularity_image(corrected[c], ch, params["granularity_subsample_size"],
                                           params["granularity_background_subsample_size"],
                                           params["granularity_element_size"],
                                           params["granularity_spectrum_length"]))
    dna, rna, mito = (corrected[CHANNELS.index(ch)] for ch in ("DNA", "RNA", "Mito"))
    out.update(cp.cp_threshold(cp.cp_corr_blue(dna, 30, 50), "NucleiIncludingEdges", **NUCLEI))
    out.update(cp.cp_threshold(rna, "CellsIncludingEdges", **CELLS))
    out.update(cp.cp_threshold(tubeness(mito, smoothing=1.0, rescale=True), "mito_bw", **MITO_BW))
    return out


def image_sites(scalefex_dir, crop: int | None = None):
    """{name: (orig, corrected, cells)} of the real ScaleFEx site (its top-left ``crop`` x ``crop`` pixels
    when given; a smooth illumination field divided out) and a simulated 300 x 320 site."""
    real = load_scalefex(scalefex_dir)
    if crop is not None:
        real = np.ascontiguousarray(real[:, :crop, :crop])
    _, real_cells, _ = segment_site(real)
    # a smooth illumination field (brightest in the centre), as CorrectIlluminationApply divides by
    h, w = real.shape[1:]
    yy, xx = np.mgrid[0:h, 0:w]
    illum = 1.0 + 0.2 * np.exp(-(((yy - h / 2) / h) ** 2 + ((xx - w / 2) / w) ** 2) * 4)
    real_corr = np.clip(real / illum, 0, 1)
    sim, _, sim_cells, _ = synthetic_site(seed=3, shape=(300, 320), n_cells=40, n_channels=5)
    return {"scalefex": (real, real_corr, real_cells), "simulated": (sim, sim, sim_cells)}
