"""Image QC metrics (CellProfiler MeasureImageQuality) and streaming illumination correction."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.fftpack
import tifffile
from config_values import SCHEMA
from scipy import ndimage

from pairedscreen.paint.illumination import (
    IlluminationAccumulator,
    apply_illumination,
    auto_sigma,
    compute_illumination,
    compute_plate_illumination,
    load_illumination,
    save_illumination,
)
from pairedscreen.paint.image_qc import add_image_qc, image_metrics, percent_maximal, power_log_log_slope
from pairedscreen.paint.ingest import build_image_index

PHENIX_PATTERN = "r{row}c{col}f{site}p01-ch{channel}sk1fk1fl1.tiff"
SCALEFEX_CHANNELS = {"DNA": 4, "ER": 1, "RNA": 5, "AGP": 2, "Mito": 3}
SIM_CHANNELS = {"DNA": 1, "ER": 2, "RNA": 3, "AGP": 4, "Mito": 5}


def cellprofiler_plls(img: np.ndarray) -> float:
    """CellProfiler 4 MeasureImageQuality.calculate_power_spectrum + centrosome.radial_power_spectrum.rps,
    restated line by line (scipy.fftpack FFT, ndimage sums over integer radii, lstsq on log-log)."""
    radii2 = (np.arange(img.shape[0]).reshape((img.shape[0], 1)) ** 2) + (np.arange(img.shape[1]) ** 2)
    radii2 = np.minimum(radii2, np.flipud(radii2))
    radii2 = np.minimum(radii2, np.fliplr(radii2))
    maxwidth = min(img.shape[0], img.shape[1]) / 8.0
    if np.ptp(img) > 0:
        img = img / np.median(abs(img - img.mean()))
    mag = abs(scipy.fftpack.fft2(img - np.mean(img)))
    power = mag**2
    radii = np.floor(np.sqrt(radii2)).astype(int) + 1
    labels = np.arange(2, np.floor(maxwidth)).astype(int).tolist()
    magnitude = np.array(ndimage.sum(mag, radii, labels))
    power = np.array(ndimage.sum(power, radii, labels))
    radii = np.array(labels)
    valid = magnitude > 0
    radii = radii[valid].reshape((-1, 1))
    power = power[valid].reshape((-1, 1))
    idx = np.isfinite(np.log(power))
    return float(scipy.linalg.lstsq(
        np.hstack((np.log(radii)[idx][:, np.newaxis], np.ones(radii.shape)[idx][:, np.newaxis])),
        np.log(power)[idx][:, np.newaxis],
    )[0][0][0])


@pytest.fixture(scope="module")
def scalefex_dna(shared_data) -> np.ndarray:
    d = shared_data("cellpainting_scalefex_5ch_site") / "ScaleFEx_Dataset01_Plate1"
    return tifffile.imread(d / "r03c03f01p01-ch4sk1fk1fl1.tiff")


@pytest.mark.realdata
def test_focus_matches_cellprofiler_formula(scalefex_dna):
    img = scalefex_dna.astype(np.float64)
    for crop in (img, img[:300, :257], img[500:, 100:900]):
        assert power_log_log_slope(crop) == pytest.approx(cellprofiler_plls(crop), abs=1e-9)


@pytest.mark.realdata
def test_focus_decreases_with_blur(scalefex_dna):
    img = scalefex_dna.astype(np.float64)[:512, :512]
    slopes = [power_log_log_slope(ndimage.gaussian_filter(img, s) if s else img) for s in (0, 1, 2, 3)]
    assert all(a > b for a, b in zip(slopes, slopes[1:], strict=False)), slopes
    # intensity invariance (the image is divided by its mean absolute deviation)
    assert power_log_log_slope(img * 7.5 + 0) == pytest.approx(slopes[0], abs=1e-9)
    assert power_log_log_slope(np.full((64, 64), 5.0)) == 0.0


def test_saturation_is_percent_maximal():
    img = np.arange(100, dtype=np.uint16).reshape(10, 10)
    assert percent_maximal(img) == pytest.approx(1.0)
    img[:3] = 65535
    assert percent_maximal(img) == pytest.approx(30.0)
    m = image_metrics(img)
    assert m["saturation_pct"] == pytest.approx(30.0)
    assert m["p99"] == 65535 and m["p01"] == pytest.approx(np.percentile(img, 1))


@pytest.mark.realdata
def test_image_qc_on_real_site_and_flags(shared_data, tmp_path):
    d = shared_data("cellpainting_scalefex_5ch_site") / "ScaleFEx_Dataset01_Plate1"
    idx = add_image_qc(build_image_index("Plate1", d, PHENIX_PATTERN, SCALEFEX_CHANNELS,
                                         on_bad_image=SCHEMA["paint.on_bad_image"]),
                       max_saturation_pct=1.0, min_focus_plls=-3.0,
                       max_focus_plls=SCHEMA["paint.qc.max_focus_plls"],
                       min_signal_to_noise=SCHEMA["paint.qc.min_signal_to_noise"])
    assert not idx["qc_flag"].any(), idx[["channel", "focus_plls", "saturation_pct", "qc_reason"]]
    assert idx["focus_plls"].between(-3.0, -1.0).all()
    dna = idx.set_index("channel").loc["DNA"]
    assert dna["p50"] == 131.0          # ScaleFEx's own QC: background ~137, min 97, max 3533
    # a blurred and a saturated copy of the plate's DNA image get flagged, and are kept
    img = tifffile.imread(dna["path"]).astype(np.float64)[:540, :540]
    (tmp_path / "p").mkdir()
    for site, arr in ((1, img), (2, ndimage.gaussian_filter(img, 4)), (3, np.minimum(img * 100, 65535))):
        for ch in range(1, 6):
            tifffile.imwrite(tmp_path / "p" / f"r03c03f{site:02d}p01-ch{ch}sk1fk1fl1.tiff",
                             arr.astype(np.uint16))
    q = add_image_qc(build_image_index("P", tmp_path / "p", PHENIX_PATTERN, SCALEFEX_CHANNELS,
                                       on_bad_image=SCHEMA["paint.on_bad_image"]),
                     max_saturation_pct=SCHEMA["paint.qc.max_saturation_pct"],
                     min_focus_plls=SCHEMA["paint.qc.min_focus_plls"],
                     max_focus_plls=SCHEMA["paint.qc.max_focus_plls"],
                     min_signal_to_noise=SCHEMA["paint.qc.min_signal_to_noise"])
    by_site = q[q["channel"] == "DNA"].set_index("site")
    assert not by_site.loc[1, "qc_flag"]
    assert by_site.loc[2, "qc_flag"] and "blur" in by_site.loc[2, "qc_reason"]
    assert by_site.loc[3, "qc_flag"] and "saturation" in by_site.loc[3, "qc_reason"]
    assert len(q) == 15


@pytest.fixture(scope="module")
def sim_plate(tmp_path_factory):
    from pairedscreen.simulate import simulate

    out = tmp_path_factory.mktemp("sim_illum")
    simulate(out, preset="tiny", seed=23, overrides={"paint.sites_per_well": 3})
    return out


def test_illumination_recovers_planted_vignetting(sim_plate, tmp_path):
    idx = build_image_index("P1", sim_plate / "raw" / "images" / "P1", "{well}_s{site}_w{channel}.tif",
                            SIM_CHANNELS, on_bad_image=SCHEMA["paint.on_bad_image"])
    assert idx["site"].nunique() == 3 and (idx["status"] == "ok").all()
    funcs = compute_plate_illumination(idx, smoothing_sigma=0.0)
    for name, illum in funcs.items():
        truth = np.load(sim_plate / "truth" / "illumination" / f"P1_{name}.npy")
        assert illum.dtype == np.float32 and illum.shape == truth.shape
        assert illum.mean() == pytest.approx(1.0, abs=1e-4)
        r = np.corrcoef(illum.ravel(), truth.ravel())[0, 1]
        assert r >= 0.95, (name, r)
    # correction flattens: the corner/centre ratio of the mean corrected DNA image moves towards 1
    paths = idx[idx["channel"] == "DNA"]["path"].tolist()
    raw = np.mean([tifffile.imread(p).astype(np.float64) for p in paths], axis=0)
    cor = np.mean([apply_illumination(tifffile.imread(p), funcs["DNA"]) for p in paths], axis=0)
    s = raw.shape[0]
    c, k = slice(s // 2 - 20, s // 2 + 20), slice(0, 25)

    def ratio(a):
        return a[k, k].mean() / a[c, c].mean()

    assert abs(1 - ratio(cor)) < abs(1 - ratio(raw))
    written = save_illumination(funcs, tmp_path / "illum", tmp_path / "illum.png")
    assert [p.name for p in written] == [f"{n}.npy" for n in SIM_CHANNELS] + ["illum.png"]
    stack = load_illumination(tmp_path / "illum", list(SIM_CHANNELS))
    assert stack.shape == (5, *truth.shape) and stack.dtype == np.float32
    assert (tmp_path / "illum.png").read_bytes()[:4] == b"\x89PNG"


def test_illumination_is_streaming_and_validates():
    rng = np.random.default_rng(1)
    yy, xx = np.mgrid[0:64, 0:80]
    field = 1.0 - 0.3 * (((yy - 32) / 32) ** 2 + ((xx - 40) / 40) ** 2) / 2
    for method in ("background", "mean"):
        gen = (rng.poisson(500 * field).astype(np.uint16) for _ in range(20))   # consumed lazily
        illum = compute_illumination(gen, smoothing_sigma=4, method=method)
        assert illum.shape == field.shape
        assert np.corrcoef(illum.ravel(), field.ravel())[0, 1] > 0.99, method
    assert auto_sigma((1080, 1080)) == 54.0
    acc = IlluminationAccumulator()
    acc.add(np.ones((40, 40)))
    with pytest.raises(ValueError, match="differs"):
        acc.add(np.ones((50, 40)))
    with pytest.raises(ValueError, match="method"):
        IlluminationAccumulator("median")
    with pytest.raises(ValueError, match="no images"):
        compute_illumination([], smoothing_sigma=SCHEMA["paint.illumination.smoothing_sigma"])
    with pytest.raises(ValueError, match="shape"):
        apply_illumination(np.ones((3, 3)), np.ones((4, 4)))
