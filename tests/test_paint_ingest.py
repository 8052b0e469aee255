"""Image discovery and indexing: naming patterns, real Phenix files, bad-input errors and quarantine."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import numpy as np
import pytest
import tifffile
from config_values import SCHEMA

from pairedscreen.paint.ingest import (
    ImageIngestError,
    build_image_index,
    expected_name,
    fields_from_match,
    load_site,
    parse_pattern,
    usable_sites,
)

SIM_PATTERN = "{well}_s{site}_w{channel}.tif"
PHENIX_PATTERN = "r{row}c{col}f{site}p{plane}-ch{channel}sk1fk1fl1.tiff"
SIM_CHANNELS = {"DNA": 1, "ER": 2, "RNA": 3, "AGP": 4, "Mito": 5}
# ScaleFEx README: ch1 ConA (ER), ch2 WGA+phalloidin (AGP), ch3 MitoTracker, ch4 Hoechst (DNA),
# ch5 SYTO14 (RNA)
SCALEFEX_CHANNELS = {"DNA": 4, "ER": 1, "RNA": 5, "AGP": 2, "Mito": 3}


def _plate(tmp: Path, wells=("A01", "B02"), sites=(1, 2), shape=(24, 20)) -> Path:
    d = tmp / "plate"
    d.mkdir()
    rng = np.random.default_rng(0)
    for w in wells:
        for s in sites:
            for c in range(1, 6):
                tifffile.imwrite(d / f"{w}_s{s}_w{c}.tif", rng.integers(0, 4000, shape, dtype=np.uint16))
    return d


def test_parse_pattern_simulator_style():
    rx = parse_pattern(SIM_PATTERN)
    f = fields_from_match(rx.match("B7_s12_w3.tif"))
    assert f == {"well": "B07", "site": 12, "channel": "3", "plane": None}
    assert rx.match("B07_s1_w3.tiff") is None          # literal suffix must match exactly
    assert rx.match("thumbnail_B07_s1_w3.tif") is None
    assert fields_from_match(rx.match("p24_s1_w5.tif"))["well"] == "P24"


def test_parse_pattern_phenix_numeric_rows_and_cols():
    rx = parse_pattern(PHENIX_PATTERN)
    f = fields_from_match(rx.match("r03c03f01p01-ch4sk1fk1fl1.tiff"))
    assert f == {"well": "C03", "site": 1, "channel": "4", "plane": 1}
    f = fields_from_match(rx.match("r16c24f09p02-ch10sk1fk1fl1.tiff"))
    assert f == {"well": "P24", "site": 9, "channel": "10", "plane": 2}
    assert expected_name(PHENIX_PATTERN, "C03", 1, 4) == "r03c03f01p01-ch4sk1fk1fl1.tiff"
    assert expected_name(SIM_PATTERN, "A01", 2, 5) == "A01_s2_w5.tif"


@pytest.mark.parametrize("bad", ["{well}_w{channel}.tif", "{well}_s{site}_{foo}.tif",
                                 "r{row}f{site}-ch{channel}.tif", "{well}{row}{col}_s{site}_{channel}.tif",
                                 "{well}_s{site}_w{channel}_{site}.tif"])
def test_parse_pattern_rejects_bad_patterns(bad):
    with pytest.raises(ImageIngestError, match="image_pattern"):
        parse_pattern(bad)


@pytest.mark.realdata
def test_real_phenix_site_index(shared_data):
    d = shared_data("cellpainting_scalefex_5ch_site") / "ScaleFEx_Dataset01_Plate1"
    idx = build_image_index("Plate1", d, PHENIX_PATTERN, SCALEFEX_CHANNELS,
                            on_bad_image=SCHEMA["paint.on_bad_image"])
    assert list(idx["channel"]) == list(SCALEFEX_CHANNELS)
    assert list(idx["channel_index"]) == [0, 1, 2, 3, 4]
    assert set(idx["well"]) == {"C03"} and set(idx["site"]) == {1}
    assert (idx["status"] == "ok").all() and (idx["height"] == 1080).all() and (idx["width"] == 1080).all()
    assert set(idx["dtype"]) == {"uint16"}
    dna = idx[idx["channel"] == "DNA"].iloc[0]
    assert Path(dna["path"]).name == "r03c03f01p01-ch4sk1fk1fl1.tiff"
    assert dna["sha256"] == hashlib.sha256(Path(dna["path"]).read_bytes()).hexdigest()
    assert usable_sites(idx) == [("C03", 1)]
    site = load_site(idx, "C03", 1)
    assert site.shape == (5, 1080, 1080) and site.dtype == np.uint16
    # Hoechst is the nuclear stain: its background is the lowest of the five (ScaleFEx QC: min 97)
    assert int(site[0].min()) == 97


def test_index_sorted_and_filtered(tmp_path):
    d = _plate(tmp_path, wells=("A01", "B02", "C03"))
    idx = build_image_index("P1", d, SIM_PATTERN, SIM_CHANNELS, wells=["B2", "A01"],
                            on_bad_image=SCHEMA["paint.on_bad_image"])
    assert list(dict.fromkeys(idx["well"])) == ["B02", "A01"]   # plate-map order
    assert len(idx) == 2 * 2 * 5 and (idx["status"] == "ok").all()
    assert idx.columns[:14].tolist() == ["plate", "well", "site", "channel", "channel_index", "file_channel",
                                         "plane", "path", "height", "width", "dtype", "sha256", "status",
                                         "reason"]


def test_missing_channel_names_the_file(tmp_path):
    d = _plate(tmp_path)
    (d / "B02_s2_w4.tif").unlink()
    with pytest.raises(ImageIngestError, match=r"AGP.*B02 site 2.*B02_s2_w4\.tif"):
        build_image_index("P1", d, SIM_PATTERN, SIM_CHANNELS, on_bad_image=SCHEMA["paint.on_bad_image"])
    idx = build_image_index("P1", d, SIM_PATTERN, SIM_CHANNELS, on_bad_image="quarantine")
    site = idx[(idx["well"] == "B02") & (idx["site"] == 2)].set_index("channel")
    assert (site["status"] == "quarantined").all()
    assert site.loc["AGP", "reason"] == "missing file"
    assert site.loc["DNA", "reason"] == "site incomplete: AGP quarantined"
    assert (idx[idx["well"] == "A01"]["status"] == "ok").all()
    assert ("B02", 2) not in usable_sites(idx)
    assert len(idx.attrs["problems"]) == 1


def test_unreadable_file_names_the_file(tmp_path):
    d = _plate(tmp_path)
    (d / "A01_s1_w2.tif").write_bytes(b"this is not a tiff")
    with pytest.raises(ImageIngestError, match=r"A01_s1_w2\.tif.*cannot decode"):
        build_image_index("P1", d, SIM_PATTERN, SIM_CHANNELS, on_bad_image=SCHEMA["paint.on_bad_image"])
    idx = build_image_index("P1", d, SIM_PATTERN, SIM_CHANNELS, on_bad_image="quarantine")
    row = idx[(idx["well"] == "A01") & (idx["site"] == 1) & (idx["channel"] == "ER")].iloc[0]
    assert row["status"] == "quarantined" and row["reason"].startswith("cannot decode image")
    assert idx[(idx["well"] == "A01") & (idx["site"] == 1)]["status"].eq("quarantined").all()


def test_shape_and_dtype_mismatch(tmp_path):
    d = _plate(tmp_path)
    tifffile.imwrite(d / "B02_s1_w5.tif", np.zeros((30, 20), np.uint16))
    tifffile.imwrite(d / "A01_s2_w3.tif", np.zeros((24, 20), np.uint8))
    with pytest.raises(ImageIngestError, match=r"(B02_s1_w5|A01_s2_w3)\.tif.*differs"):
        build_image_index("P1", d, SIM_PATTERN, SIM_CHANNELS, on_bad_image=SCHEMA["paint.on_bad_image"])
    idx = build_image_index("P1", d, SIM_PATTERN, SIM_CHANNELS, on_bad_image="quarantine")
    bad = idx[idx["reason"].str.contains("differs")].set_index("channel")
    assert set(bad.index) == {"Mito", "RNA"}
    assert "30x20 uint16" in bad.loc["Mito", "reason"] and "24x20 uint8" in bad.loc["RNA", "reason"]
    assert usable_sites(idx) == [("A01", 1), ("B02", 2)]


def test_duplicate_planes_and_missing_well(tmp_path):
    d = _plate(tmp_path, wells=("C03",), sites=(1,))
    for f in list(d.iterdir()):
        w, s, c = f.stem.split("_")
        shutil.move(f, d / f"r03c03f01p01-ch{c[1:]}sk1fk1fl1.tiff")
    shutil.copy(d / "r03c03f01p01-ch1sk1fk1fl1.tiff", d / "r03c03f01p02-ch1sk1fk1fl1.tiff")
    with pytest.raises(ImageIngestError, match="2 files for well C03 site 1 channel DNA"):
        build_image_index("P1", d, PHENIX_PATTERN, SIM_CHANNELS, on_bad_image=SCHEMA["paint.on_bad_image"])
    idx = build_image_index("P1", d, PHENIX_PATTERN.replace("{plane}", "01"), SIM_CHANNELS,
                            on_bad_image=SCHEMA["paint.on_bad_image"])
    assert (idx["status"] == "ok").all()
    with pytest.raises(ImageIngestError, match="no images for well D04"):
        build_image_index("P1", d, PHENIX_PATTERN.replace("{plane}", "01"), SIM_CHANNELS,
                          wells=["C03", "D04"], on_bad_image=SCHEMA["paint.on_bad_image"])
    with pytest.raises(ImageIngestError, match="does not exist"):
        build_image_index("P1", tmp_path / "nope", SIM_PATTERN, SIM_CHANNELS,
                          on_bad_image=SCHEMA["paint.on_bad_image"])
