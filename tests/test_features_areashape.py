"""AreaShape features on shapes with known geometry (independent of cp_measure)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from config_values import SCHEMA
from skimage.measure import regionprops

from pairedscreen.paint.features import build_index
from pairedscreen.paint.features.areashape import measure_areashape, zernike_indexes


def _one(labels: np.ndarray, **kw) -> dict[str, float]:
    out = measure_areashape(labels, **{"zernike_degree": SCHEMA["paint.features.zernike_degree"], **kw})
    return {k: float(v[0]) for k, v in out.items()}


def test_rectangle_geometry():
    lab = np.zeros((30, 40), np.int32)
    lab[5:15, 10:30] = 7  # 10 rows x 20 columns, label 7
    f = _one(lab)
    assert f["AreaShape_Area"] == 200
    assert f["AreaShape_BoundingBoxArea"] == 200
    assert (f["AreaShape_BoundingBoxMinimum_X"], f["AreaShape_BoundingBoxMaximum_X"]) == (10, 30)
    assert (f["AreaShape_BoundingBoxMinimum_Y"], f["AreaShape_BoundingBoxMaximum_Y"]) == (5, 15)
    assert f["AreaShape_Center_X"] == pytest.approx(19.5)
    assert f["AreaShape_Center_Y"] == pytest.approx(9.5)
    assert f["AreaShape_Extent"] == 1.0
    assert f["AreaShape_Solidity"] == 1.0
    assert f["AreaShape_ConvexArea"] == 200
    assert f["AreaShape_EulerNumber"] == 1
    # Feret on pixel centres: width 9 (rows 5..14), diameter = diagonal between corner centres
    assert f["AreaShape_MinFeretDiameter"] == pytest.approx(9.0)
    assert f["AreaShape_MaxFeretDiameter"] == pytest.approx(math.hypot(9, 19))
    # second moments of a uniform w x h pixel grid: var = (n^2 - 1) / 12
    assert f["AreaShape_MajorAxisLength"] == pytest.approx(4 * math.sqrt((20**2 - 1) / 12))
    assert f["AreaShape_MinorAxisLength"] == pytest.approx(4 * math.sqrt((10**2 - 1) / 12))
    assert f["AreaShape_Orientation"] == pytest.approx(90.0)  # major axis along x (scikit-image)
    # exact distance to the nearest outside pixel: the centre rows reach 5
    assert f["AreaShape_MaximumRadius"] == 5.0
    assert f["AreaShape_EquivalentDiameter"] == pytest.approx(math.sqrt(4 * 200 / math.pi))


def test_matches_scikit_image_regionprops_on_blobs():
    rng = np.random.default_rng(3)
    lab = np.zeros((120, 120), np.int32)
    yy, xx = np.mgrid[:120, :120]
    for k, (cy, cx) in enumerate([(30, 30), (30, 85), (85, 40), (90, 95)], start=1):
        r = 10 + 4 * np.sin(3 * np.arctan2(yy - cy, xx - cx) + rng.uniform(0, 6))
        lab[(np.hypot(yy - cy, xx - cx) < r) & (lab == 0)] = k
    lab[30, 30] = 0  # a hole
    f = measure_areashape(lab, zernike_degree=SCHEMA["paint.features.zernike_degree"])
    for i, p in enumerate(regionprops(lab)):
        assert f["AreaShape_Area"][i] == p.area
        assert f["AreaShape_Perimeter"][i] == pytest.approx(p.perimeter, rel=1e-12)
        assert f["AreaShape_Solidity"][i] == pytest.approx(p.solidity, rel=1e-12)
        assert f["AreaShape_EulerNumber"][i] == p.euler_number
        assert f["AreaShape_Eccentricity"][i] == pytest.approx(p.eccentricity, rel=1e-9)
        assert f["AreaShape_Orientation"][i] == pytest.approx(math.degrees(p.orientation), abs=1e-9)
    assert f["AreaShape_EulerNumber"][0] == 0  # the holed object


def test_ring_and_thin_and_single_pixel():
    lab = np.zeros((40, 40), np.int32)
    lab[2:12, 2:12] = 1
    lab[5:9, 5:9] = 0  # ring: one hole
    lab[20, 5:15] = 2  # one-pixel-thick horizontal line
    lab[30, 30] = 3  # single pixel
    f = measure_areashape(lab, zernike_degree=SCHEMA["paint.features.zernike_degree"])
    assert f["AreaShape_EulerNumber"].tolist() == [0, 1, 1]
    assert f["AreaShape_MinFeretDiameter"][1] == 0.0
    assert f["AreaShape_MaxFeretDiameter"][1] == pytest.approx(9.0)
    assert f["AreaShape_Area"][2] == 1
    assert f["AreaShape_MaximumRadius"][2] == 1.0
    assert np.isnan(f["AreaShape_Zernike_0_0"][2])  # zero-radius enclosing circle, as CellProfiler
    assert f["AreaShape_Solidity"][0] == pytest.approx(84 / 100)


def test_zernike_of_a_disk():
    lab = np.zeros((81, 81), np.int32)
    yy, xx = np.mgrid[:81, :81]
    lab[np.hypot(yy - 40, xx - 40) <= 30] = 1
    f = _one(lab)
    r = f["AreaShape_MaxFeretDiameter"] / 2  # enclosing circle radius of a symmetric disk
    assert f["AreaShape_Zernike_0_0"] == pytest.approx(f["AreaShape_Area"] / (math.pi * r * r))
    # a pixel disk has 4-fold symmetry: every moment with m not a multiple of 4 vanishes
    for n, m in zernike_indexes(9):
        if m % 4:
            assert abs(f[f"AreaShape_Zernike_{n}_{m}"]) < 1e-12


def test_index_reuse_gapped_ids_and_empty():
    lab = np.zeros((20, 20), np.uint16)
    lab[2:6, 2:6] = 5
    lab[10:15, 10:12] = 900
    index = build_index(lab)
    a = measure_areashape(lab, index=index, zernike_degree=4)
    assert a["AreaShape_Area"].tolist() == [16, 10]
    assert sum("Zernike" in k for k in a) == len(zernike_indexes(4)) == 9
    empty = measure_areashape(np.zeros((5, 5), np.int32),
                              zernike_degree=SCHEMA["paint.features.zernike_degree"])
    assert all(v.shape == (0,) for v in empty.values())
