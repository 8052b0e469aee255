"""Colocalisation parity with CellProfiler 4.2.8's own MeasureColocalization code (objects mode,
``_cellprofiler_reference``) on real images and labels, and with cp_measure 0.3 where its per-object
definitions are CellProfiler's (r, slope, Manders, Overlap, K; cp_measure ranks RWC and finds Costes
thresholds per object, CellProfiler 4 over the whole image)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from _cellprofiler_reference import measure_objects
from _features_a_data import EXAMPLEHUMAN, examplehuman_images, examplehuman_nuclei
from _features_b_data import CHANNELS, SCALEFEX, _relabel, load_site, site_crops, site_masks, synthetic

from pairedscreen.paint.features import measure_site
from pairedscreen.paint.features.colocalization import channel_pairs, measure_colocalization, object_pixels
from pairedscreen.paint.features.objects import build_index

mc = pytest.importorskip("cp_measure.core.measurecolocalization")

RTOL = 1e-4
ATOL = 1e-12
# cp_measure key -> ours, first channel A, second B (CellProfiler naming)
NAMES = {
    "Correlation_Pearson": "Correlation_Correlation_A_B",
    "Correlation_Slope": "Correlation_Slope_A_B",
    "Correlation_Manders_1": "Correlation_Manders_A_B",
    "Correlation_Manders_2": "Correlation_Manders_B_A",
    "Correlation_RWC_1": "Correlation_RWC_A_B",
    "Correlation_RWC_2": "Correlation_RWC_B_A",
    "Correlation_Overlap": "Correlation_Overlap_A_B",
    "Correlation_K_1": "Correlation_K_A_B",
    "Correlation_K_2": "Correlation_K_B_A",
}
JUMP_COLUMNS = "jump_cpg0016_mandatory_features/cpg0016_mandatory_feature_columns_without_image_columns.txt"


def _constant(image: np.ndarray, labels: np.ndarray) -> np.ndarray:
    idx = build_index(labels)
    return np.array([np.ptp(image[idx.pixels(k)]) == 0 for k in range(idx.n_objects)], bool)


def _compare(im1, im2, labels) -> None:
    """cp_measure's per-object r, slope, Manders, Overlap and K, and CellProfiler 4.2.8's every feature."""
    agree = _compare_cellprofiler(im1, im2, labels, 65535.0)
    assert min(agree.values()) == 1.0, {k: v for k, v in agree.items() if v < 1}
    ours = measure_colocalization(im1, im2, labels, "A", "B")
    ref = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        for fn in (mc.get_correlation_pearson, mc.get_correlation_manders_fold, mc.get_correlation_overlap):
            ref.update(fn(im1, im2, labels))
    assert set(NAMES[k] for k in ref) <= set(ours)
    # a channel constant over an object leaves r (and the slope) undefined: NaN here, rounding
    # residue in cp_measure (documented exception in colocalization.py)
    undefined = _constant(im1, labels) | _constant(im2, labels)
    for key, values in ref.items():
        got = ours[NAMES[key]]
        want = np.asarray(values, dtype=float)
        if key in ("Correlation_Pearson", "Correlation_Slope"):
            assert np.isnan(got[undefined & _constant(im1, labels)]).all()
            assert np.isnan(ours["Correlation_Correlation_A_B"][undefined]).all()
            got, want = got[~undefined], want[~undefined]
        np.testing.assert_array_equal(np.isnan(got), np.isnan(want), err_msg=key)
        ok = ~np.isnan(want)
        np.testing.assert_allclose(got[ok], want[ok], rtol=RTOL, atol=ATOL, err_msg=key)


def _compare_cellprofiler(im1, im2, labels, scale: float, rtol: float = 1e-6) -> dict[str, float]:
    """Every CellProfiler 4.2.8 object measurement (Costes on the ``scale`` grid, RWC on image-wide
    ranks) vs ours; returns the agreement fraction per feature (all objects must agree, NaN = NaN)."""
    ref = measure_objects(im1, im2, labels, "A", "B", scale)
    ours = measure_colocalization(im1, im2, labels, "A", "B", costes=True, scale=scale)
    assert set(ref) <= set(ours)
    # r of an object constant in a channel: NaN here, rounding residue there (documented exception)
    defined = ~(_constant(im1, labels) | _constant(im2, labels))
    agree = {}
    for key, want in ref.items():
        got = ours[key]
        if key.startswith("Correlation_Correlation_"):
            assert np.isnan(got[~defined]).all()
            got, want = got[defined], want[defined]
        ok = np.isclose(got, want, rtol=rtol, atol=1e-12, equal_nan=True)
        agree[key] = float(ok.mean())
    return agree


def _second_channel(image: np.ndarray, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.clip(0.5 * image + 0.2 * rng.random(image.shape) - 0.02, 0.0, 1.0)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_synthetic_matches_cp_measure(seed: int) -> None:
    image, labels = synthetic(seed)
    _compare(image, _second_channel(image, seed), labels)


def test_uint16_quantised_values_and_ties() -> None:
    """Values j/65535 take the 16-bit rank path; coarse values give many rank ties."""
    image, labels = synthetic(4)
    q16 = np.round(image * 65535) / 65535
    other = np.round(_second_channel(image, 4) * 65535) / 65535
    _compare(q16, other, labels)
    _compare(np.round(image * 20) / 20, np.round(other * 10) / 10, labels)


def test_names_and_orders() -> None:
    image, labels = synthetic(0)
    other = _second_channel(image, 0)
    ab = measure_colocalization(image, other, labels, "DNA", "Mito")
    ba = measure_colocalization(other, image, labels, "Mito", "DNA")
    assert "Correlation_Costes_DNA_Mito" not in ab
    for fam in ("Manders", "RWC", "K"):
        np.testing.assert_allclose(ab[f"Correlation_{fam}_DNA_Mito"], ba[f"Correlation_{fam}_DNA_Mito"],
                                   rtol=1e-12)
    np.testing.assert_allclose(ab["Correlation_Correlation_DNA_Mito"], ba["Correlation_Correlation_Mito_DNA"],
                               rtol=1e-12)
    same = measure_colocalization(image, image, labels, "DNA", "DNA")
    fine = ~_constant(image, labels)
    np.testing.assert_allclose(same["Correlation_Correlation_DNA_DNA"][fine], 1.0, rtol=1e-12)
    np.testing.assert_allclose(same["Correlation_RWC_DNA_DNA"], same["Correlation_Manders_DNA_DNA"],
                               rtol=1e-12)


def test_real_site_crops_match_cp_measure(shared_data) -> None:
    root = shared_data(SCALEFEX)
    for images, nuclei, cells in site_crops(root):
        for c1, c2 in ((0, 1), (3, 4), (2, 0), (1, 3)):
            _compare(images[c1], images[c2], cells)
            _compare(images[c1], images[c2], nuclei)


@pytest.mark.realdata
def test_real_site_full_frame(shared_data) -> None:
    root = shared_data(SCALEFEX)
    images = load_site(root)
    nuclei, cells = site_masks(root)
    _compare(images[0], images[2], cells)
    _compare(images[3], images[4], nuclei)


def _report(agree: dict[str, float], where: str) -> None:
    print(where, " ".join(f"{k.removeprefix('Correlation_')}={v:.3f}" for k, v in sorted(agree.items())))
    low = {k: v for k, v in agree.items() if v < 0.97}
    assert not low, (where, low)


@pytest.mark.realdata
def test_cellprofiler4_costes_rwc_real_uint16_site(shared_data) -> None:
    """The 16-bit ScaleFEx site, whole frame (Costes on the 1/65535 grid over all 1080 x 1080 pixels),
    every feature of 4 channel pairs in both orders on nuclei and cells vs CellProfiler 4.2.8's code."""
    root = shared_data(SCALEFEX)
    images = load_site(root)
    nuclei, cells = site_masks(root)
    for i, j in ((0, 1), (3, 4), (2, 0), (1, 3), (4, 3)):
        for name, labels in (("nuclei", nuclei), ("cells", cells)):
            _report(_compare_cellprofiler(images[i], images[j], labels, 65535.0),
                    f"ScaleFEx {CHANNELS[i]}-{CHANNELS[j]} {name} (n={labels.max()})")


@pytest.mark.realdata
def test_cellprofiler4_costes_rwc_real_uint8_site(shared_data) -> None:
    """CellProfiler's 8-bit ExampleHuman site (Costes on the 1/255 grid) with its nuclei rebuilt from
    the CellProfiler run's outlines, every channel pair in both orders."""
    root = shared_data(EXAMPLEHUMAN)
    images = examplehuman_images(root)
    labels = _relabel(examplehuman_nuclei(root))
    for a, b in (("DNA", "PH3"), ("PH3", "DNA"), ("DNA", "cellbody"), ("cellbody", "PH3")):
        _report(_compare_cellprofiler(images[a], images[b], labels, 255.0),
                f"ExampleHuman {a}-{b} nuclei (n={labels.max()})")


def test_costes_needs_a_scale() -> None:
    image, labels = synthetic(3)
    with pytest.raises(ValueError, match="scale"):
        measure_colocalization(image, _second_channel(image, 3), labels, "A", "B", costes=True)


@pytest.mark.realdata
def test_jump_pair_names_and_directions(shared_data) -> None:
    """Every Correlation column a default run makes with the five JUMP channels (given in the tiny
    screen's order DNA, ER, RNA, AGP, Mito) that JUMP has is named as JUMP names it, every JUMP
    Correlation column is made, and a directional feature keeps its meaning (first channel's share)."""
    jump = set((shared_data("jump_cpg0016_mandatory_features").parent / JUMP_COLUMNS).read_text().split())
    jump_corr = {c for c in jump if c.split("_")[1] == "Correlation"}
    channels = ["DNA", "ER", "RNA", "AGP", "Mito"]
    assert channel_pairs(channels)[0] == ("AGP", "DNA")
    image, labels = synthetic(5)
    rng = np.random.default_rng(5)
    imgs = np.stack([np.clip(image * rng.uniform(0.3, 1.0) + 0.1 * rng.random(image.shape), 0, 1)
                     for _ in channels])
    df = measure_site(imgs, channels, labels, labels, labels, {"families": ["colocalization"]})
    ours = {c for c in df.columns if c.split("_")[1] == "Correlation"}
    not_jump = ours - jump
    # the per-object slope is a cp_measure addition that CellProfiler/JUMP do not record
    assert all("_Correlation_Slope_" in c for c in not_jump), sorted(not_jump)[:5]
    assert jump_corr <= ours, sorted(jump_corr - ours)[:5]
    dna, agp = imgs[channels.index("DNA")], imgs[channels.index("AGP")]
    direct = measure_colocalization(agp, dna, labels, "AGP", "DNA")
    for key in ("Manders_AGP_DNA", "Manders_DNA_AGP", "RWC_AGP_DNA", "K_DNA_AGP", "Correlation_AGP_DNA",
                "Overlap_AGP_DNA", "Slope_AGP_DNA"):
        np.testing.assert_array_equal(df[f"Cells_Correlation_{key}"], direct[f"Correlation_{key}"], key)
    # M1 of (AGP, DNA) is AGP's share: the DNA-first call names the same number Manders_AGP_DNA
    swapped = measure_colocalization(dna, agp, labels, "DNA", "AGP")
    np.testing.assert_allclose(swapped["Correlation_Manders_AGP_DNA"], direct["Correlation_Manders_AGP_DNA"],
                               rtol=1e-12)


def test_rank_cache_follows_content() -> None:
    image, labels = synthetic(1)
    image = image.copy()
    other = _second_channel(image, 1)
    idx = build_index(labels)
    measure_colocalization(image, other, labels, "A", "B", index=idx)
    image[:, ::3] = 1.0 - image[:, ::3]  # same buffer, new content: ranks must be recomputed
    ours = measure_colocalization(image, other, labels, "A", "B", index=idx)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        ref = measure_objects(image, other, labels, "A", "B", 65535.0)
    for key in ("Correlation_RWC_A_B", "Correlation_RWC_B_A"):
        np.testing.assert_allclose(ours[key], ref[key], rtol=RTOL, atol=ATOL)


def test_float32_images_read_in_place() -> None:
    image, labels = synthetic(2)
    other = _second_channel(image, 2)
    a32, b32 = image.astype(np.float32), other.astype(np.float32)
    got = measure_colocalization(a32, b32, labels, "A", "B", costes=True, scale=65535.0)
    a64, b64 = a32.astype(np.float64), b32.astype(np.float64)
    want = measure_colocalization(a64, b64, labels, "A", "B", costes=True, scale=65535.0)
    for key in want:
        np.testing.assert_array_equal(got[key], want[key], err_msg=key)


def test_object_pixels_passed_in() -> None:
    """Pixels gathered once (``object_pixels``, as measure_site does per channel) give the same values
    as gathering inside; mismatched values are refused."""
    image, labels = synthetic(3)
    other = _second_channel(image, 3).astype(np.float32)
    idx = build_index(labels)
    want = measure_colocalization(image, other, labels, "A", "B", index=idx, costes=True, scale=65535.0)
    px = (object_pixels(image, idx), object_pixels(other, idx))
    np.testing.assert_array_equal(px[1], other[idx.ys, idx.xs].astype(np.float64))
    got = measure_colocalization(image, other, labels, "A", "B", index=idx, costes=True, scale=65535.0,
                                 values=px)
    for key in want:
        np.testing.assert_array_equal(got[key], want[key], err_msg=key)
    with pytest.raises(ValueError, match="object_pixels"):
        measure_colocalization(image, other, labels, "A", "B", index=idx, values=(px[0][:-1], px[1]))


def test_zero_and_float32_constant_objects() -> None:
    """Exact-constant float32 values match cp_measure; an all-zero object gets the 0/0 = NaN of the
    definitions (cp_measure 0.3 raises ZeroDivisionError there, see the module docstring)."""
    image, labels = synthetic(0)
    image = image.astype(np.float32).astype(np.float64)
    other = _second_channel(image, 0)
    _compare(image, other, labels)
    image[labels == 1] = 0.0
    out = measure_colocalization(image, other, labels, "A", "B")
    k = 0  # label 1
    for key in ("Correlation", "Slope", "Manders_A_B", "RWC_A_B", "Overlap", "K_A_B"):
        name = key if key.endswith(("_A_B", "_B_A")) else f"{key}_A_B"
        assert np.isnan(out[f"Correlation_{name}"][k]), key
    assert out["Correlation_K_B_A"][k] == 0.0  # sum(0 * c2) / sum(c2^2)
    # the second channel's fractions are still defined: all of its above-threshold signal overlaps
    assert out["Correlation_Manders_B_A"][k] == 1.0


@pytest.mark.realdata
def test_measure_site_costes_takes_the_scale_of_integer_images(shared_data) -> None:
    """uint8 images carry scale 255 (CellProfiler's scale of 8-bit files): measure_site's Costes equals
    CellProfiler's on the 1/255 grid and records the scale; float images need it given."""
    root = shared_data(EXAMPLEHUMAN)
    images = examplehuman_images(root)
    labels = _relabel(examplehuman_nuclei(root))
    raw = np.stack([np.rint(images[c] * 255).astype(np.uint8) for c in ("DNA", "PH3")])
    params = {"families": ["colocalization"], "colocalization_costes": True}
    df = measure_site(raw, ["PH3", "DNA"], labels, None, None, params)
    assert df.attrs["costes_scale"] == 255.0
    # pairs in sorted order: DNA first although the images come PH3 first
    ref = measure_objects(raw[1] / 255.0, raw[0] / 255.0, labels, "DNA", "PH3", 255.0)
    for key in ("Correlation_Costes_DNA_PH3", "Correlation_Costes_PH3_DNA", "Correlation_RWC_DNA_PH3"):
        np.testing.assert_allclose(df[f"Nuclei_{key}"], ref[key], rtol=1e-9, atol=1e-12, err_msg=key)
    assert (df["Nuclei_Correlation_Costes_DNA_PH3"] > 0).mean() > 0.5  # thresholds inside the data
    with pytest.raises(ValueError, match="scale"):
        measure_site(raw / 255.0, ["PH3", "DNA"], labels, None, None, params)
    same = measure_site(raw / 255.0, ["PH3", "DNA"], labels, None, None, params, scale=255.0)
    key = "Nuclei_Correlation_Costes_DNA_PH3"
    np.testing.assert_array_equal(same[key], df[key])


@pytest.mark.parametrize("kind", ["uint16_grid", "float32", "float64"])
def test_image_ranks_are_numpys_dense_ranks(kind: str) -> None:
    """The three ranking paths (16-bit level table, float32 radix, float64 radix) against numpy's dense
    ranks (``np.unique(..., return_inverse=True)``), with ties, -0.0 next to 0.0 and negatives."""
    from pairedscreen.paint.features.colocalization import _image_ranks

    rng = np.random.default_rng(7)
    levels = rng.integers(0, 65536, 50_000)
    if kind == "uint16_grid":
        vals = levels / 65535.0
    elif kind == "float32":
        vals = (rng.choice(rng.random(3_000, dtype=np.float32) * 2 - 0.5, 50_000)).astype(np.float64)
        vals[:5] = [0.0, -0.0, -0.0, 0.0, np.float32(-1e-30)]
    else:
        vals = rng.choice(rng.random(3_000) * 2 - 0.5, 50_000)
        vals[:4] = [0.0, -0.0, 0.0, -1e-300]
    ranks, top = _image_ranks(vals)
    uniq, inverse = np.unique(vals, return_inverse=True)
    np.testing.assert_array_equal(ranks, inverse)
    assert top == uniq.size - 1
