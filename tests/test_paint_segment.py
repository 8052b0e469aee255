"""Segmentation: AP metric, compartment matching, the shipped Cellpose models on simulated and real images."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import tifffile
from config_values import SCHEMA

from pairedscreen.io import repo_root
from pairedscreen.paint.illumination import compute_plate_illumination
from pairedscreen.paint.ingest import build_image_index, load_site, usable_sites
from pairedscreen.paint.segment import (
    ModelNotAvailableError,
    load_model,
    match_compartments,
    objects_table,
    read_site_masks,
    resolved,
    segment_chunk,
    segment_compartment,
    segment_sites,
    write_overlay,
)
from pairedscreen.quality.segmentation import average_precision, average_precision_many, match_stats

SIM_CHANNELS = {"DNA": 1, "ER": 2, "RNA": 3, "AGP": 4, "Mito": 5}
NAMES = list(SIM_CHANNELS)
MODELS = repo_root() / "resources" / "models"


def seg_cfg(**over) -> dict:
    cfg = {
        "gpu": "auto", "batch_size": 4,
        "nuclei": {"model": "resources/models/pairedscreen_nuclei", "channel": "DNA", "diameter": 12,
                   "flow_threshold": 0.4, "cellprob_threshold": 0.0},
        "cells": {"model": "resources/models/pairedscreen_cells", "channel": "AGP", "nuclear_channel": "DNA",
                  "diameter": 26, "flow_threshold": 0.4, "cellprob_threshold": 0.0},
    }
    for k, v in over.items():
        if isinstance(v, dict):
            cfg[k] = {**cfg[k], **v}
        else:
            cfg[k] = v
    return cfg


# ----------------------------------------------------------------------------------------- metric

def _disk(shape, cy, cx, r):
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    return (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r


def test_average_precision_definition():
    t = np.zeros((60, 60), np.uint16)
    t[_disk(t.shape, 15, 15, 8)] = 5
    t[_disk(t.shape, 40, 40, 8)] = 9
    assert average_precision(t, t) == 1.0
    p = np.zeros_like(t)
    p[_disk(t.shape, 15, 16, 8)] = 1        # shifted by 1 px: IoU ~0.85
    p[_disk(t.shape, 45, 10, 5)] = 2        # false positive
    s = match_stats(t, p, 0.5)
    assert (s.tp, s.fp, s.fn) == (1, 1, 1) and s.ap == pytest.approx(1 / 3)
    assert 0.8 < s.mean_matched_iou < 0.9
    assert average_precision(t, p, iou=0.9) == 0.0
    assert average_precision(np.zeros_like(t), np.zeros_like(t)) == 1.0
    assert average_precision(t, np.zeros_like(t)) == 0.0
    assert average_precision_many([t, t], [t, p]) == pytest.approx(3 / 5)


# ------------------------------------------------------------------------------- compartments

def test_match_compartments_object_model():
    shape = (80, 80)
    cells = np.zeros(shape, np.int32)
    nuclei = np.zeros(shape, np.int32)
    cells[_disk(shape, 20, 20, 12)] = 7           # cell with one nucleus
    nuclei[_disk(shape, 20, 20, 5)] = 3
    cells[_disk(shape, 20, 60, 12)] = 4           # binucleate cell: the larger nucleus wins
    nuclei[_disk(shape, 20, 55, 4)] = 11
    nuclei[_disk(shape, 20, 66, 3)] = 12
    cells[_disk(shape, 60, 20, 10)] = 2           # cell without nucleus
    nuclei[_disk(shape, 65, 65, 4)] = 1           # nucleus without cell -> dropped
    nuclei[_disk(shape, 48, 20, 4)] = 2           # nucleus mostly outside cell 2 -> dropped
    m = match_compartments(nuclei, cells,
                           min_nucleus_overlap=SCHEMA["paint.segmentation.min_nucleus_overlap"])
    n, c, y = m
    assert c.max() == 3 and m.n_cells == 3
    # raster order of first pixel: cell 7 (row 8, col 20) and cell 4 (row 8, col 60) -> 1, 2; cell 2 -> 3
    assert c[20, 20] == 1 and c[20, 60] == 2 and c[60, 20] == 3
    assert n[20, 20] == 1 and n[20, 55] == 2 and n[20, 66] == 0 and n[65, 65] == 0 and n[48, 20] == 0
    assert set(np.unique(n)) == {0, 1, 2}
    assert m.n_nuclei_detected == 5 and m.n_nuclei_dropped == 3 and m.n_cells_without_nucleus == 1
    assert np.all(n[n > 0] == c[n > 0])                       # nucleus k inside cell k
    assert np.array_equal(y, np.where(n > 0, 0, c))           # cytoplasm = cell - nucleus
    tab = objects_table("A01", 1, m)
    assert tab["object_id"].tolist() == [1, 2, 3]
    assert tab["has_nucleus"].tolist() == [True, True, False]
    assert (tab["cell_area"] == tab["nucleus_area"] + tab["cytoplasm_area"]).all()
    assert c.dtype == np.uint16


def test_load_model_errors(tmp_path, monkeypatch):
    with pytest.raises(ModelNotAvailableError, match="neither a file"):
        load_model("no_such_model_anywhere", gpu=False)
    with pytest.raises(ValueError, match="auto, true or false"):
        load_model("cyto3", gpu="maybe")


# ------------------------------------------------------------------------------ shipped models

@pytest.fixture(scope="module")
def sim(tmp_path_factory):
    """A fresh tiny screen (seed 7; the models were trained on seed 101)."""
    from pairedscreen.simulate import simulate

    out = tmp_path_factory.mktemp("sim_seg")
    simulate(out, preset="tiny", seed=7)
    return out


def test_shipped_models_exist_with_sidecars():
    import json

    from pairedscreen.io import sha256sum

    for comp in ("nuclei", "cells"):
        f = MODELS / f"pairedscreen_{comp}"
        meta = json.loads((MODELS / f"pairedscreen_{comp}.json").read_text())
        assert meta["sha256"] == sha256sum(f)
        assert meta["pretrained_model"] is None and meta["versions"]["cellpose"] == "3.1.1.3"


def test_shipped_recipe_rebuilds_the_recorded_training_screen():
    """`pairedscreen train-segmentation` simulates the screen the sidecars record (presets may change)."""
    import json

    from pairedscreen.paint.train import SHIPPED_RECIPE
    from pairedscreen.simulate import build_spec

    r = SHIPPED_RECIPE
    spec = build_spec(r["sim_preset"], r["sim_seed"], r["sim_overrides"]).to_dict()
    for comp in ("nuclei", "cells"):
        meta = json.loads((MODELS / f"pairedscreen_{comp}.json").read_text())
        recorded = {k: v for k, v in meta["training_data"]["spec"].items() if k != "preset"}
        assert spec == recorded
        assert (meta["seed"], meta["n_epochs"], meta["bsize"]) == (r["seed"], r["n_epochs"], r["bsize"][comp])


def test_segmentation_accuracy_on_simulated_sites(sim, tmp_path):
    idx = build_image_index("P1", sim / "raw" / "images" / "P1", "{well}_s{site}_w{channel}.tif",
                            SIM_CHANNELS, on_bad_image=SCHEMA["paint.on_bad_image"])
    illum = np.stack(list(compute_plate_illumination(idx,
                                                     smoothing_sigma=SCHEMA["paint.illumination.smoothing_sigma"]).values()))
    sites = usable_sites(idx)[:6]            # 6 sites, ~70 objects per compartment: keeps the test short
    imgs = [load_site(idx, w, s) for w, s in sites]
    res = segment_sites(imgs, NAMES, seg_cfg(), illum=illum)
    truth_dir = sim / "truth" / "paint" / "P1"
    tn = [tifffile.imread(truth_dir / f"{w}_s{s}_nuclei.tif") for w, s in sites]
    tc = [tifffile.imread(truth_dir / f"{w}_s{s}_cells.tif") for w, s in sites]
    ap_n = average_precision_many(tn, [r.nuclei for r in res], 0.5)
    ap_c = average_precision_many(tc, [r.cells for r in res], 0.5)
    print(f"\nsimulated sites: {len(sites)} ({sum(int(t.max()) for t in tn)} cells); "
          f"AP@0.5 nuclei {ap_n:.3f} cells {ap_c:.3f}; AP@0.75 nuclei "
          f"{average_precision_many(tn, [r.nuclei for r in res], 0.75):.3f} cells "
          f"{average_precision_many(tc, [r.cells for r in res], 0.75):.3f}")
    assert ap_n >= 0.9 and ap_c >= 0.9
    # batched and one-site-per-call runs give the same masks
    one = segment_sites(imgs[:1], NAMES, seg_cfg(batch_size=1), illum=illum)
    for a, b in zip(one, res[:1], strict=True):
        assert average_precision(a.cells, b.cells, 0.9) > 0.95
    # the chunk writer: label TIFFs (zlib), objects table, summary
    obj, summ = segment_chunk(idx, tmp_path / "chunk", seg_cfg(), wells=[sites[0][0]])
    n, c, y = read_site_masks(tmp_path / "chunk", sites[0][0], sites[0][1])
    with tifffile.TiffFile(tmp_path / "chunk" / f"{sites[0][0]}_s{sites[0][1]}_cells.tif") as tf:
        assert tf.pages[0].compression == 8  # ADOBE_DEFLATE (zlib)
    assert list(obj.columns[:6]) == ["well", "site", "object_id", "has_nucleus", "nucleus_area", "cell_area"]
    assert len(obj) == c.max() and np.all(n[n > 0] == c[n > 0])
    assert pd.read_parquet(tmp_path / "chunk" / "objects.parquet").equals(obj)
    assert summ.loc[0, "n_cells"] == c.max()


@pytest.mark.realdata
def test_nuclei_dsb2018_ap(shared_data):
    from cellpose import utils

    d = shared_data("nuclei_dsb2018_stardist")
    img = tifffile.imread(d / "img2d.tif")
    truth = tifffile.imread(d / "mask2d.tif")
    diam = float(utils.diameters(truth)[0])      # the object size a user would put in the config
    site = img[None]
    cfg = resolved(seg_cfg(nuclei={"diameter": diam}))
    ncfg = cfg["nuclei"]
    aps = {}
    for label, extra in (("Cellpose default 1-99 normalisation", {}),
                         ("normalize_percentiles [50, 99.5]", {"normalize_percentiles": [50, 99.5]})):
        pred = segment_compartment([site], ["DNA"], {**ncfg, **extra}, nuclear=True, gpu=cfg["gpu"],
                                   batch_size=cfg["batch_size"], min_size=cfg["min_size"],
                                   tile_batch_size=SCHEMA["paint.segmentation.tile_batch_size"])[0]
        s5, s75 = match_stats(truth, pred, 0.5), match_stats(truth, pred, 0.75)
        aps[label] = s5.ap
        print(f"\nDSB2018 (125 nuclei, diameter {diam:.1f} px), {label}: AP@0.5 {s5.ap:.3f} "
              f"(precision {s5.precision:.2f}, recall {s5.recall:.2f}, {s5.n_pred} objects), "
              f"AP@0.75 {s75.ap:.3f}")
        assert 0.0 <= s5.ap <= 1.0 and pred.shape == truth.shape
    # loose sanity bound: a model trained only on simulated sites still finds a good part of real nuclei
    assert max(aps.values()) > 0.25


@pytest.mark.realdata
def test_real_scalefex_site_end_to_end(shared_data, tmp_path):
    d = shared_data("cellpainting_scalefex_5ch_site")
    idx = build_image_index("Plate1", d / "ScaleFEx_Dataset01_Plate1",
                            "r{row}c{col}f{site}p01-ch{channel}sk1fk1fl1.tiff",
                            {"DNA": 4, "ER": 1, "RNA": 5, "AGP": 2, "Mito": 3},
                            on_bad_image=SCHEMA["paint.on_bad_image"])
    illum = np.stack(list(compute_plate_illumination(idx,
                                                     smoothing_sigma=SCHEMA["paint.illumination.smoothing_sigma"]).values()))
    site = load_site(idx, "C03", 1)
    # half resolution keeps the test fast; diameters are in (half-resolution) pixels
    half = site.reshape(5, 540, 2, 540, 2).mean(axis=(2, 4))
    ill = illum.reshape(5, 540, 2, 540, 2).mean(axis=(2, 4))
    cfg = seg_cfg(nuclei={"diameter": REAL_NUC_DIAM}, cells={"diameter": REAL_CELL_DIAM})
    res = segment_sites([half], NAMES, cfg, illum=ill)[0]
    ref = pd.read_csv(d / "output" / "Dataset01_coordinates.csv")   # ScaleFEx nucleus centroids (full res)
    found = 0
    for r in ref.itertuples():
        # ScaleFEx's coordX is the row (first array axis), coordY the column
        y, x = int(round(r.coordX / 2)), int(round(r.coordY / 2))
        found += int(res.nuclei_all[max(0, y - 3):y + 4, max(0, x - 3):x + 4].max() > 0)
    print(f"\nScaleFEx site: {res.n_cells} cells, {res.n_nuclei_detected} nuclei detected, "
          f"{res.n_nuclei_dropped} dropped, {res.n_cells_without_nucleus} cells without nucleus; "
          f"{found}/{len(ref)} ScaleFEx reference nuclei hit")
    assert found >= 7                       # nuclei: the ScaleFEx reference nuclei are found
    assert 15 <= res.n_nuclei_detected <= 40
    assert res.n_cells >= 5                 # cells: the simulated-data model finds only some fibroblasts
    assert np.all(res.nuclei[res.nuclei > 0] == res.cells[res.nuclei > 0])
    png = write_overlay(tmp_path / "overlay.png", half, NAMES, res, max_side=540)
    assert png.stat().st_size < 1_000_000


REAL_NUC_DIAM = 30.0
REAL_CELL_DIAM = 80.0
