"""The simulated Cell Painting arm: determinism, truth agrees with the images, plate independence."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import tifffile
from scipy import ndimage as ndi

from pairedscreen.simulate.paint import (
    CHANNELS,
    EFFECTS,
    illumination_fields,
    plate_layout,
    render_site,
    simulate_paint,
)
from pairedscreen.simulate.registry import make_registry
from pairedscreen.simulate.spec import get_preset

SPEC = get_preset("tiny").with_overrides(seed=3)


def _files(root: Path, sub: str) -> dict[str, bytes]:
    base = root / sub
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(base.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def paint_dir(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, pd.DataFrame]:
    out = tmp_path_factory.mktemp("paint")
    truth = simulate_paint(make_registry(SPEC), SPEC, out)
    return out, truth


@pytest.fixture(scope="module")
def two_plates(tmp_path_factory: pytest.TempPathFactory) -> Path:
    spec = SPEC.with_overrides(**{"paint.n_plates": 2})
    out = tmp_path_factory.mktemp("paint2")
    simulate_paint(make_registry(spec), spec, out)
    return out


def test_files_and_formats(paint_dir: tuple[Path, pd.DataFrame]) -> None:
    out, _ = paint_dir
    wells = pd.read_csv(out / "truth" / "paint_wells.tsv", sep="\t")
    n_sites = SPEC.paint.sites_per_well
    assert set(wells.columns) >= {"plate", "well", "row", "col", "is_edge", "perturbation_id", "replicate",
                                  "edge_multiplier"}
    images = sorted((out / "raw" / "images" / "P1").glob("*.tif"))
    assert len(images) == len(wells) * n_sites * len(CHANNELS)
    img = tifffile.imread(images[0])
    assert img.dtype == np.uint16 and img.shape == (SPEC.paint.image_size,) * 2
    with tifffile.TiffFile(out / "truth" / "paint" / "P1" / f"{wells.well[0]}_s1_nuclei.tif") as tf:
        assert tf.pages[0].compression == tifffile.COMPRESSION.ADOBE_DEFLATE
        assert tf.pages[0].dtype == np.uint16
    for ch in CHANNELS:
        ill = np.load(out / "truth" / "illumination" / f"P1_{ch}.npy")
        assert ill.dtype == np.float32 and abs(float(ill.mean()) - 1) < 1e-4


def test_layout(paint_dir: tuple[Path, pd.DataFrame]) -> None:
    reg = make_registry(SPEC)
    ps = SPEC.paint
    wells = plate_layout(reg, SPEC, 0)
    assert wells.well.is_unique
    n = len(reg.perturbations) * ps.wells_per_perturbation + ps.extra_control_wells
    assert len(wells) == n
    assert set(wells.perturbation_id) == set(reg.perturbations.perturbation_id)
    ctrl = wells.perturbation_id.isin(reg.perturbations.loc[reg.perturbations.is_control, "perturbation_id"])
    assert wells.is_edge.any() and (~wells.is_edge).any()
    assert wells[ctrl].is_edge.any() and (~wells[ctrl].is_edge).any()     # controls in both kinds
    edge = wells.row.isin(["A", "P"]) | wells.col.isin([1, 24])
    assert (edge == wells.is_edge).all()
    assert np.allclose(wells.edge_multiplier, np.where(edge, 1 + ps.edge_effect, 1.0))
    assert not plate_layout(reg, SPEC, 1).well.tolist() == wells.well.tolist()   # randomised per plate


def test_effects_truth(paint_dir: tuple[Path, pd.DataFrame]) -> None:
    _, truth = paint_dir
    reg = make_registry(SPEC)
    df = reg.perturbations.merge(truth, on="perturbation_id")
    active = df.effect_class.isin(["both", "paint"])
    assert (df.paint_active == active).all()
    cols = [f"paint_{e}" for e in EFFECTS]
    assert (df.loc[~active, cols].to_numpy() == 0).all()
    assert (df.loc[active, cols].abs().to_numpy().max(axis=1) > 0.1).all()
    for _, grp in df[active].groupby("program"):
        signs = np.sign(grp[cols].to_numpy())
        assert (signs == signs[0]).all()                                   # a program shifts one way


def test_morphology_shift_is_visible() -> None:
    ps = SPEC.paint
    areas = {}
    for shift in (0.0, 0.3):
        n_area, c_area = [], []
        for site in range(6):
            _, nuc, cel = render_site(np.random.default_rng([7, site]), ps, {"nucleus_size": shift}, 12)
            n_area.append(np.bincount(nuc.ravel())[1:].mean())
            c_area.append(np.bincount(cel.ravel())[1:].mean())
        areas[shift] = (np.mean(n_area), np.mean(c_area))
    assert areas[0.3][0] > 1.4 * areas[0.0][0]
    assert abs(areas[0.3][1] / areas[0.0][1] - 1) < 0.15


def test_deterministic(paint_dir: tuple[Path, pd.DataFrame], tmp_path: Path) -> None:
    out, truth = paint_dir
    again = simulate_paint(make_registry(SPEC), SPEC, tmp_path)
    pd.testing.assert_frame_equal(truth, again)
    for sub in ("raw", "truth"):
        a, b = _files(out, sub), _files(tmp_path, sub)
        assert a.keys() == b.keys()
        assert all(a[k] == b[k] for k in a), [k for k in a if a[k] != b[k]][:5]


def test_masks_match_images(paint_dir: tuple[Path, pd.DataFrame]) -> None:
    out, _ = paint_dir
    objects = pd.read_parquet(out / "truth" / "paint_objects.parquet")
    wells = pd.read_csv(out / "truth" / "paint_wells.tsv", sep="\t")
    assert len(objects) > 5 * len(wells)
    for w in wells.itertuples():
        for site in range(1, SPEC.paint.sites_per_well + 1):
            stem = f"{w.well}_s{site}"
            nuc = tifffile.imread(out / "truth" / "paint" / "P1" / f"{stem}_nuclei.tif")
            cel = tifffile.imread(out / "truth" / "paint" / "P1" / f"{stem}_cells.tif")
            dna = tifffile.imread(out / "raw" / "images" / "P1" / f"{stem}_w1.tif").astype(float)
            agp = tifffile.imread(out / "raw" / "images" / "P1" / f"{stem}_w4.tif").astype(float)
            bg = ndi.binary_erosion(cel == 0, iterations=3)
            assert np.median(dna[nuc > 0]) > 4 * np.median(dna[bg])
            assert np.median(agp[(cel > 0) & (nuc == 0)]) > 1.5 * np.median(agp[bg])
            assert (cel[nuc > 0] == nuc[nuc > 0]).all()                   # nucleus k inside cell k
            obj = objects[(objects.well == w.well) & (objects.site == site)].sort_values("object_id")
            ids = obj.object_id.to_numpy()
            assert set(np.unique(nuc[nuc > 0])) == set(ids) == set(np.unique(cel[cel > 0]))
            assert (obj.perturbation_id == w.perturbation_id).all()
            assert (np.bincount(nuc.ravel(), minlength=ids.max() + 1)[ids] == obj.nucleus_area).all()
            assert (np.bincount(cel.ravel(), minlength=ids.max() + 1)[ids] == obj.cell_area).all()
            assert (obj.cell_area > obj.nucleus_area).all()
            d = 0.5 * SPEC.paint.nucleus_diameter
            assert 0.4 * np.pi * d * d < obj.nucleus_area.median() < 2.0 * np.pi * d * d
            cy, cx = obj.centroid_y.round().astype(int), obj.centroid_x.round().astype(int)
            assert (cel[cy, cx] > 0).mean() > 0.9


def test_vignetting_matches_images(paint_dir: tuple[Path, pd.DataFrame]) -> None:
    out, _ = paint_dir
    wells = pd.read_csv(out / "truth" / "paint_wells.tsv", sep="\t")
    ctrl = wells[wells.perturbation_id.str.startswith("NTC")]
    assert len(ctrl) >= 2
    for c, ch in enumerate(CHANNELS):
        ill = np.load(out / "truth" / "illumination" / f"P1_{ch}.npy")
        s = ill.shape[0]
        corner = ill[[0, 0, -1, -1], [0, -1, 0, -1]].mean()
        assert 0.4 * SPEC.paint.vignetting < 1 - corner / ill.max() < 1.5 * SPEC.paint.vignetting
        num = np.zeros_like(ill, dtype=float)
        den = np.zeros_like(ill, dtype=float)
        for w in ctrl.itertuples():
            img = tifffile.imread(out / "raw" / "images" / "P1" / f"{w.well}_s1_w{c + 1}.tif").astype(float)
            cel = tifffile.imread(out / "truth" / "paint" / "P1" / f"{w.well}_s1_cells.tif")
            bg = ndi.binary_erosion(cel == 0, iterations=3).astype(float)
            x = (img - img.min()) / w.edge_multiplier
            num += ndi.gaussian_filter(x * bg, s / 20)
            den += ndi.gaussian_filter(bg, s / 20)
        seen = num / np.maximum(den, 1e-6)
        assert np.corrcoef(seen.ravel(), ill.ravel())[0, 1] > 0.9, ch
    assert np.array_equal(illumination_fields(SPEC, 0), np.stack(
        [np.load(out / "truth" / "illumination" / f"P1_{ch}.npy") for ch in CHANNELS]))


def test_edge_wells_brighter(paint_dir: tuple[Path, pd.DataFrame]) -> None:
    out, _ = paint_dir
    wells = pd.read_csv(out / "truth" / "paint_wells.tsv", sep="\t")
    bg = {True: [], False: []}
    for w in wells.itertuples():
        img = tifffile.imread(out / "raw" / "images" / "P1" / f"{w.well}_s1_w4.tif").astype(float)
        cel = tifffile.imread(out / "truth" / "paint" / "P1" / f"{w.well}_s1_cells.tif")
        bg[bool(w.is_edge)].append(np.median(img[cel == 0]) - 100)
    assert np.mean(bg[True]) > (1 + 0.5 * SPEC.paint.edge_effect) * np.mean(bg[False])


def test_adding_a_plate_keeps_plate_one(paint_dir: tuple[Path, pd.DataFrame], two_plates: Path) -> None:
    one, _ = paint_dir
    for sub in ("raw/images/P1", "truth/paint/P1"):
        a, b = _files(one, sub), _files(two_plates, sub)
        assert a.keys() == b.keys() and all(a[k] == b[k] for k in a)
    for ch in CHANNELS:
        f = f"truth/illumination/P1_{ch}.npy"
        assert (one / f).read_bytes() == (two_plates / f).read_bytes()
    assert len(list((two_plates / "raw" / "images" / "P2").glob("*.tif"))) > 0
    o1 = pd.read_parquet(one / "truth" / "paint_objects.parquet")
    o2 = pd.read_parquet(two_plates / "truth" / "paint_objects.parquet")
    pd.testing.assert_frame_equal(o1, o2[o2.plate == "P1"].reset_index(drop=True))
    assert set(o2.plate) == {"P1", "P2"}
