"""The per-site JUMP ``Image_*`` table against CellProfiler 4.2.8's own module code.

Names: exactly the ``Image_*`` part of the JUMP cpg0016 list (shared data), in its order. Values: every
column against CellProfiler's code (verbatim in ``_cellprofiler_reference.py``) run with the JUMP
pipeline's settings (JUMP_analysis_v3.cppipe, written out in ``_image_table_data.py`` from the pipeline,
not read from our module) on the same pixels: a 540x540 crop of a real Cell Painting site (ScaleFEx; the
full site in ``benchmarks/feature_parity.py --image-only``) and a simulated site,
within 1e-6 relative (parity exceptions: benchmarks/feature_parity.md).
"""

from __future__ import annotations

import numpy as np
import pytest
from _features_a_data import SCALEFEX
from _image_table_data import CHANNELS, cellprofiler_table, image_sites

from pairedscreen.paint.features import feature_params
from pairedscreen.paint.features.image import image_columns, measure_image

JUMP_LIST = "jump_cpg0016_mandatory_features/cpg0016_mandatory_feature_columns.txt"
RTOL = 1e-6


@pytest.fixture(scope="module")
def tables(shared_data):
    params = feature_params({"preset": "jump"})
    out = {}
    # a 540 x 540 crop of the real site keeps the test short; benchmarks/feature_parity.md has the full site
    for name, (orig, corr, cells) in image_sites(shared_data(SCALEFEX), crop=540).items():
        ours = measure_image(orig, corr, CHANNELS, cells, 65535.0, params)
        out[name] = (ours, cellprofiler_table(orig, corr, cells, params))
    return out


@pytest.mark.realdata
def test_columns_are_jumps_image_columns(shared_data):
    listed = [ln.strip() for ln in shared_data(JUMP_LIST.split("/")[0]).joinpath(
        JUMP_LIST.split("/")[1]).read_text().splitlines() if ln.strip()]
    image = [c for c in listed if c.startswith("Image_")]
    assert len(image) == 1089
    assert list(image_columns()) == image


@pytest.mark.realdata
@pytest.mark.parametrize("site", ["scalefex", "simulated"])
def test_values_match_cellprofiler(tables, site):
    ours, ref = tables[site]
    assert len(ours) == 1089
    missing = [c for c in ours if c[len("Image_"):] not in ref]
    assert not missing, missing[:5]
    bad = {}
    for col, v in ours.items():
        r = ref[col[len("Image_"):]]
        if not np.isclose(v, r, rtol=RTOL, atol=0.0, equal_nan=True):
            bad[col] = (v, r)
    worst = sorted(bad.items(), key=lambda kv: -abs(kv[1][0] - kv[1][1]) / max(abs(kv[1][1]), 1e-300))
    print(f"{site}: {len(ours) - len(bad)} of {len(ours)} within {RTOL:g} relative")
    for col, (v, r) in worst[:20]:
        print(f"  {col}: ours {v!r} CellProfiler {r!r}")
    assert not bad, f"{len(bad)} columns differ: {worst[:5]}"


def test_plate_table_is_the_chunks_in_well_site_order(tmp_path):
    """run_paint_images: the plate table is its chunks' rows (metadata + the 1,089 columns, list order),
    sorted by well and site; an empty chunk adds nothing."""
    import pandas as pd

    from pairedscreen.io import write_parquet
    from pairedscreen.paint.stages import image_table, run_paint_images

    cols = image_columns()
    rng = np.random.default_rng(0)

    def row(well, site):
        return {"Metadata_Plate": "P1", "Metadata_Well": well, "Metadata_Site": site,
                **dict(zip(cols, rng.random(len(cols)), strict=True))}

    chunks = [[row("B02", 2), row("B02", 1)], [], [row("A01", 1)]]
    paths = []
    for i, rows in enumerate(chunks):
        write_parquet(image_table(rows, feature_params({"preset": "jump"})), tmp_path / f"{i}.parquet")
        paths.append(tmp_path / f"{i}.parquet")
    table = run_paint_images(paths, tmp_path / "images.parquet")
    back = pd.read_parquet(tmp_path / "images.parquet")
    assert list(back.columns) == ["Metadata_Plate", "Metadata_Well", "Metadata_Site", *cols]
    assert list(zip(back["Metadata_Well"], back["Metadata_Site"], strict=True)) == [("A01", 1), ("B02", 1),
                                                                                   ("B02", 2)]
    want = pd.DataFrame([chunks[2][0], chunks[0][1], chunks[0][0]])
    np.testing.assert_array_equal(back[list(cols)].to_numpy(), want[list(cols)].to_numpy())
    assert table.shape == (3, 3 + 1089)


@pytest.mark.e2e
def test_workflow_plans_the_image_table_only_for_the_jump_preset(tmp_path):
    """Dry runs of the tiny screen: with ``paint.features.preset: jump`` paint_features also writes each
    chunk's Image_* table and paint_plate the plate's; the default preset plans neither file."""
    import yaml
    from workdir import snakemake

    from pairedscreen.simulate import simulate

    wd = simulate(tmp_path / "screen", preset="tiny")
    default = snakemake(wd, "-n", "-p")
    assert default.returncode == 0, (default.stdout + default.stderr)[-4000:]
    assert "images.parquet" not in default.stdout and "/images/" not in default.stdout
    cfg_path = wd / "config" / "config.yaml"
    cfg = yaml.safe_load(cfg_path.read_text())
    cfg["paint"].setdefault("features", {})["preset"] = "jump"
    cfg_path.write_text(yaml.safe_dump(cfg))
    jump = snakemake(wd, "-n", "-p")
    assert jump.returncode == 0, (jump.stdout + jump.stderr)[-4000:]
    assert "results/paint/P1/images.parquet" in jump.stdout
    assert "results/paint/P1/images/" in jump.stdout


@pytest.mark.realdata
def test_index_focus_is_the_orig_images_power_log_log_slope(shared_data):
    """paint_features takes ImageQuality_PowerLogLogSlope_Orig{ch} from the image index (focus_plls of the
    raw uint16 file): the slope does not depend on the intensity scale, so it equals the column's
    definition on the raw / 65535 image."""
    import tifffile

    from pairedscreen.paint.image_qc import image_metrics, power_log_log_slope

    files = sorted((shared_data(SCALEFEX) / "ScaleFEx_Dataset01_Plate1").glob("*.tiff"))
    for f in files:
        raw = tifffile.imread(f)
        assert raw.dtype == np.uint16
        index_value = image_metrics(raw)["focus_plls"]
        assert index_value == pytest.approx(power_log_log_slope(raw.astype(np.float64) / 65535.0), rel=1e-9)


def test_other_texture_and_granularity_settings_make_the_matching_subset():
    """Keys set in paint.features win over the preset: texture scale 3 only and an 8-step spectrum make the
    list's columns of those settings (1,089 - 520 texture - 40 granularity), in its order, and no others."""
    from _features_a_data import synthetic_site

    from pairedscreen.paint.features.image import made_columns

    p = feature_params({"preset": "jump", "texture_scales": [3], "granularity_spectrum_length": 8})
    cols = made_columns(p)
    assert len(cols) == 1089 - 520 - 40
    assert cols == [c for c in image_columns() if c in set(cols)]
    assert not any("_5_0" in c or "_10_0" in c for c in cols if c.startswith("Image_Texture_"))
    imgs, _, cells, _ = synthetic_site(seed=1, shape=(96, 96), n_cells=6, n_channels=5)
    values = measure_image(imgs, imgs, CHANNELS, cells, 65535.0, p)
    assert list(values) == cols


def test_corrected_values_above_one_are_clipped_as_cellprofiler_does():
    """A bright pixel divided by an illumination function below 1 exceeds 1; the JUMP pipeline's
    CorrectIlluminationApply clips to [0, 1] before measuring, so the table equals the clipped image's."""
    from _features_a_data import synthetic_site

    p = feature_params({"preset": "jump"})
    imgs, _, cells, _ = synthetic_site(seed=2, shape=(96, 96), n_cells=6, n_channels=5)
    bright = imgs * 1.6
    assert bright.max() > 1
    got = measure_image(imgs, bright, CHANNELS, cells, 65535.0, p)
    want = measure_image(imgs, np.clip(bright, 0, 1), CHANNELS, cells, 65535.0, p)
    assert got == want
