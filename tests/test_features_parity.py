"""Parity of AreaShape / Intensity / Neighbors with cp_measure (CellProfiler's measurement code).

Same images and masks on both sides: simulated-like synthetic sites and the real ScaleFEx Cell
Painting site segmented with Otsu + watershed. Agreement required: 1e-4 relative (floored at
1e-6 of the feature's largest magnitude, see ``_features_a_data.rel_err``), Zernike moments included
(CellProfiler's pixel set: centrosome's enclosing circle and r^2 <= 1 cut-off). Documented convention
(feature_parity.md): FirstClosestObjectNumber is the nearest *other* object, as in CellProfiler.
"""

from __future__ import annotations

import numpy as np
import pytest
from _features_a_data import (
    SCALEFEX,
    SCALEFEX_CHANNELS,
    cp_areashape,
    cp_intensity,
    cp_neighbors,
    load_scalefex,
    rel_err,
    relabel,
    segment_site,
    synthetic_site,
)
from config_values import SCHEMA

from pairedscreen.paint.features import build_index, measure_site
from pairedscreen.paint.features.areashape import measure_areashape
from pairedscreen.paint.features.intensity import measure_intensity
from pairedscreen.paint.features.neighbors import measure_neighbors

TOL = 1e-4


@pytest.fixture(scope="module")
def sites(shared_data):
    """name -> (images, channel names, {compartment: contiguous labels})."""
    out = {}
    for seed in (0, 1):
        imgs, nuc, cells, cyto = synthetic_site(seed=seed)
        out[f"synthetic{seed}"] = (
            imgs,
            ("DNA", "ER", "Mito"),
            {"Nuclei": relabel(nuc), "Cells": relabel(cells), "Cytoplasm": relabel(cyto)},
        )
    imgs = load_scalefex(shared_data(SCALEFEX))
    nuc, cells, cyto = segment_site(imgs)
    out["scalefex"] = (imgs, SCALEFEX_CHANNELS, {"Nuclei": relabel(nuc), "Cells": relabel(cells),
                                                 "Cytoplasm": relabel(cyto)})
    return out


CASES = [(s, c) for s in ("synthetic0", "synthetic1", "scalefex") for c in ("Nuclei", "Cells", "Cytoplasm")]


def _check(ours: dict[str, np.ndarray], ref: dict[str, np.ndarray], keys) -> None:
    worst = {}
    for key in keys:
        assert key in ours, key
        err = rel_err(ours[key], ref[key])
        if err.size and err.max() > TOL:
            worst[key] = float(err.max())
    assert not worst, worst


@pytest.mark.realdata
@pytest.mark.parametrize(("site", "compartment"), CASES)
def test_areashape_matches_cp_measure(sites, site, compartment):
    _, _, comps = sites[site]
    labels = comps[compartment]
    ours = measure_areashape(labels, zernike_degree=SCHEMA["paint.features.zernike_degree"])
    ref = cp_areashape(labels)
    assert len([k for k in ours if "Zernike" not in k]) == 25
    assert sum("Zernike" in k for k in ours) == 30
    _check(ours, ref, list(ours))


@pytest.mark.realdata
@pytest.mark.parametrize(("site", "compartment"), CASES)
def test_intensity_matches_cp_measure(sites, site, compartment):
    imgs, channels, comps = sites[site]
    labels = comps[compartment]
    index = build_index(labels)
    for c, ch in enumerate(channels):
        ours = measure_intensity(imgs[c], labels, ch, index=index)
        ref = cp_intensity(imgs[c], labels, ch)
        assert set(ours) == set(ref)
        _check(ours, ref, list(ours))


@pytest.mark.realdata
@pytest.mark.parametrize(("site", "compartment"), [c for c in CASES if c[1] != "Cytoplasm"])
@pytest.mark.parametrize(("method", "distance"), [("within", 5), ("adjacent", 1), ("within", 2)])
def test_neighbors_match_cp_measure(sites, site, compartment, method, distance):
    _, _, comps = sites[site]
    labels = comps[compartment]
    ours = measure_neighbors(labels, distance, method=method)
    ref = cp_neighbors(labels, distance, method)
    assert set(ours) == set(ref)
    _check(ours, ref, list(ours))


def test_measure_site_layout_and_missing_nuclei():
    imgs, nuc, cells, cyto = synthetic_site(seed=2, shape=(160, 160), n_cells=16)
    params = {"families": ["areashape", "intensity", "neighbors"], "neighbors_distance": 5}
    df = measure_site(imgs, ["DNA", "ER", "Mito"], nuc, cells, cyto, params)
    ids = np.unique(cells[cells > 0])
    assert df["object_id"].tolist() == ids.tolist()
    no_nucleus = np.setdiff1d(ids, np.unique(nuc[nuc > 0]))
    assert no_nucleus.size > 0
    nuc_cols = [c for c in df.columns if c.startswith("Nuclei_")]
    assert df.loc[df["object_id"].isin(no_nucleus), nuc_cols].isna().all().all()
    assert df.loc[~df["object_id"].isin(no_nucleus), "Nuclei_AreaShape_Area"].notna().all()
    for col in ("Cells_AreaShape_Area", "Cytoplasm_Intensity_MeanIntensity_ER",
                "Nuclei_Intensity_MedianIntensity_DNA", "Cells_Neighbors_NumberOfNeighbors_5",
                "Nuclei_Location_CenterMassIntensity_X_Mito", "Cells_AreaShape_Zernike_9_9",
                "Cells_Neighbors_PercentTouching_Adjacent", "Nuclei_Location_Center_Y"):
        assert col in df.columns, col
    assert not any(c.startswith(("Cytoplasm_Neighbors", "Nuclei_Neighbors_NumberOfNeighbors_Adj"))
                   for c in df.columns)
    # each column is the family function's value for that object
    direct = measure_intensity(imgs[1], cells, "ER")
    np.testing.assert_array_equal(df["Cells_Intensity_MeanIntensity_ER"].to_numpy(),
                                  direct["Intensity_MeanIntensity_ER"])
    # a family subset only yields that family
    only = measure_site(imgs, ["DNA", "ER", "Mito"], nuc, cells, cyto, {"families": ["areashape"]})
    assert all(c == "object_id" or "_AreaShape_" in c or "_Location_Center_" in c for c in only.columns)
    with pytest.raises(ValueError, match="unknown feature families"):
        measure_site(imgs, ["DNA", "ER", "Mito"], nuc, cells, cyto, {"families": ["shape"]})
