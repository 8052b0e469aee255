"""The one median/MAD: agrees with scipy's normal-scaled MAD, and no module computes a MAD of its own."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
from scipy.stats import median_abs_deviation

from pairedscreen.robust import MAD_TO_SD, median_mad

SRC = Path(__file__).resolve().parents[1] / "src" / "pairedscreen"


def test_median_mad_equals_scipy():
    rng = np.random.default_rng(1)
    x = rng.lognormal(3, 1, (500, 6))
    center, mad = median_mad(x, axis=0)
    assert np.array_equal(center, np.median(x, axis=0))
    np.testing.assert_allclose(mad, median_abs_deviation(x, axis=0, scale="normal"), rtol=1e-5)
    c1, m1 = median_mad(x[:, 2])
    assert c1 == center[2] and m1 == mad[2]


def test_skipna_ignores_nan_like_scipy_omit():
    rng = np.random.default_rng(2)
    x = rng.normal(0, 2, (300, 4))
    x[rng.random(x.shape) < 0.2] = np.nan
    _, mad = median_mad(x, axis=0, skipna=True)
    ref = median_abs_deviation(x, axis=0, scale="normal", nan_policy="omit")
    np.testing.assert_allclose(mad, ref, rtol=1e-5)
    assert np.isnan(median_mad(x, axis=0)[1]).all()       # without skipna a NaN propagates


def test_normal_sample_mad_estimates_its_sd():
    x = np.random.default_rng(3).normal(10, 4, 200_000)
    assert abs(median_mad(x)[1] / 4 - 1) < 0.01 and MAD_TO_SD == 1.4826


def test_no_second_mad_in_the_library():
    # a MAD is median |x - median(x)|; centrosome's power spectrum scales by median |x - mean| (another one)
    pattern = re.compile(r"\*\s*1\.4826|1\.4826\s*\*|median\(np\.abs\([^)]*median")
    hits = [f"{f.relative_to(SRC)}:{i}" for f in SRC.rglob("*.py") if f.name != "robust.py"
            for i, line in enumerate(f.read_text().splitlines(), 1)
            if pattern.search(line)]
    assert not hits, hits
