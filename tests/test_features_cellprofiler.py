"""Parity with CellProfiler 4.0.6's own outputs on its ExampleHuman site.

Nuclei are rebuilt from the outline overlay written by the same pipeline run as the reference
``Nuclei.csv`` (no label images are stored), matched by centroid (<= 2 px) with areas within 5%,
and our AreaShape / Intensity features compared per object. Reconstructions whose area equals
CellProfiler's are (nearly always) the same pixel set, so on them the features must agree to
float32 precision (CellProfiler holds images as float32); on all matched objects the medians must
stay within the 5% area-matching slack.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from _features_a_data import (
    CP406_CONVENTIONS,
    EXAMPLEHUMAN,
    SCALEFEX,
    examplehuman_comparison,
    examplehuman_nuclei,
    load_scalefex,
    relabel,
    segment_site,
)

from pairedscreen.paint.features.areashape import measure_areashape, zernike_indexes


@pytest.fixture(scope="module")
def comparison(shared_data):
    return examplehuman_comparison(shared_data(EXAMPLEHUMAN))


@pytest.mark.realdata
def test_objects_match(comparison):
    summary, table = comparison
    print(summary)
    assert summary["n_reference"] == 289
    assert summary["match_rate"] >= 0.85
    assert summary["n_exact_area"] >= 100
    assert len(table) >= 80  # all 2-D AreaShape (incl. 30 Zernike) + 2 x 17 intensity/location


@pytest.mark.realdata
def test_features_agree_with_cellprofiler(comparison):
    _, table = comparison
    print(table.to_string(float_format=lambda v: f"{v:.2e}"))
    regular = table.loc[[k for k in table.index if not k.startswith(CP406_CONVENTIONS)]]
    # same pixels -> same numbers (float32 images in CellProfiler: ~6e-8 relative)
    assert (regular["median_exact_area"] <= 1e-6).all(), regular["median_exact_area"].nlargest(5)
    # all matched objects: within the slack of the 5% area match
    non_zernike = regular.loc[[k for k in regular.index if "Zernike" not in k]]
    assert (non_zernike["median_matched"] <= 0.02).all(), non_zernike["median_matched"].nlargest(5)
    # CellProfiler 4.0.6 orientation is in radians: equal once ours is converted
    assert table.loc["AreaShape_Orientation", "median_exact_area"] <= 1e-9
    # convex hull of scikit-image 0.16/0.17 in 4.0.6: a few pixels of convex area
    assert table.loc["AreaShape_Solidity", "median_matched"] <= 0.05


@pytest.mark.realdata
def test_zernike_matches_cellprofiler_code(shared_data):
    """Zernike moments vs CellProfiler 4.2.8's own call (``centrosome.zernike.zernike(zernike_numbers,
    labels, indexes)`` in measureobjectsizeshape.py) on real labels: the ExampleHuman nuclei rebuilt
    from CellProfiler's outlines and the segmented ScaleFEx site. CellProfiler drops the pixels on the
    enclosing circle whose r^2 rounds above 1; the same pixel set gives the same moments."""
    from centrosome.zernike import zernike

    eh = relabel(examplehuman_nuclei(shared_data(EXAMPLEHUMAN)))
    nuc, cells, cyto = segment_site(load_scalefex(shared_data(SCALEFEX)))
    zi = zernike_indexes(9)
    for name, labels in (("ExampleHuman nuclei", eh), ("ScaleFEx nuclei", relabel(nuc)),
                         ("ScaleFEx cells", relabel(cells)), ("ScaleFEx cytoplasm", relabel(cyto))):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ref = zernike(zi, labels, np.arange(1, labels.max() + 1))
        ours = measure_areashape(labels, zernike_degree=9)      # CellProfiler's degree, as zi
        got = np.stack([ours[f"AreaShape_Zernike_{n}_{m}"] for n, m in zi], axis=1)
        ok = np.isclose(got, ref, rtol=1e-9, atol=1e-12, equal_nan=True)
        per_feature = ok.mean(axis=0)
        print(f"{name}: {labels.max()} objects, all 30 moments agree on {ok.all(axis=1).mean():.3f}, "
              f"worst feature {per_feature.min():.3f}")
        assert per_feature.min() >= 0.97, (name, dict(zip(map(tuple, zi), per_feature, strict=True)))
