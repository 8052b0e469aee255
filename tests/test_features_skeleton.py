"""``Nuclei_ObjectSkeleton_*_mito_skel`` against CellProfiler 4.2.8's own module code.

The reference (tests/_cellprofiler_skeleton_reference.py): CellProfiler's Threshold (global MCE,
the JUMP settings), MorphologicalSkeleton and MeasureObjectSkeleton ``run`` code copied verbatim, running
on centrosome. Counts must be equal and lengths equal to 1e-6 relative, on real sites (the ScaleFEx
1080x1080 Cell Painting site's Mito channel, ExampleHuman's cell-body and PH3 channels with the nuclei
CellProfiler drew), on a simulated site with planted filaments, and on small skeletons that reach the
module's corner cases (first image row, the four-way "odd case", a skeleton with no nucleus, holes).
"""

from __future__ import annotations

import _cellprofiler_skeleton_reference as ref
import numpy as np
import pytest
from _features_a_data import (
    EXAMPLEHUMAN,
    SCALEFEX,
    examplehuman_images,
    examplehuman_nuclei,
    load_scalefex,
    relabel,
    segment_site,
)

from pairedscreen.paint.features import measure_site
from pairedscreen.paint.features.skeleton import (
    FEATURES,
    NAME,
    measure_object_skeleton,
    measure_skeleton,
    mito_bw,
    threshold_value,
)
from pairedscreen.paint.features.tubeness import tubeness

SMOOTHING = 1.3488  # JUMP's Threshold smoothing scale
HOLE = 10           # JUMP's MeasureObjectSkeleton maximum hole size
COUNTS = ("NumberTrunks", "NumberNonTrunkBranches", "NumberBranchEnds")


def _column(f: str) -> str:
    return f"ObjectSkeleton_{f}_{NAME}"


def _assert_like_cellprofiler(ours: dict, cp: dict, label: str) -> None:
    for f in COUNTS:
        np.testing.assert_array_equal(ours[_column(f)], cp[_column(f)], err_msg=f"{label} {f}")
    np.testing.assert_allclose(ours[_column("TotalObjectSkeletonLength")],
                               cp[_column("TotalObjectSkeletonLength")], rtol=1e-6, atol=0, err_msg=label)


def _chain(image: np.ndarray, nuclei: np.ndarray, label: str) -> dict:
    """Our whole chain against CellProfiler's on a tubeness image; CellProfiler's features returned."""
    tub = tubeness(image, smoothing=1.0, rescale=True)
    thr, bw, skel, cp = ref.jump_mito_skeleton(tub, nuclei)
    assert threshold_value(tub) == thr
    np.testing.assert_array_equal(mito_bw(tub, thr, smoothing_scale=SMOOTHING), bw)
    ours = measure_skeleton(tub, nuclei, smoothing_scale=SMOOTHING, max_hole_size=HOLE)
    _assert_like_cellprofiler(ours, cp, label)
    print(f"\n{label}: {int(nuclei.max())} nuclei, mito_skel {int(skel.sum())} px, per nucleus "
          + ", ".join(f"{f} {cp[_column(f)].sum():.0f}" for f in FEATURES))
    return cp


@pytest.mark.realdata
def test_scalefex_site_matches_cellprofiler(shared_data):
    imgs = load_scalefex(shared_data(SCALEFEX))
    nuc, _, _ = segment_site(imgs)
    cp = _chain(imgs[2], relabel(nuc), "ScaleFEx Mito")          # channel order ER, AGP, Mito, DNA, RNA
    assert cp[_column("NumberBranchEnds")].sum() > 100 and cp[_column("NumberTrunks")].sum() > 10


@pytest.mark.realdata
def test_examplehuman_matches_cellprofiler(shared_data):
    root = shared_data(EXAMPLEHUMAN)
    nuc = examplehuman_nuclei(root)
    images = examplehuman_images(root)
    for channel in ("cellbody", "PH3"):
        cp = _chain(images[channel], nuc, f"ExampleHuman {channel}")
        assert cp[_column("NumberNonTrunkBranches")].sum() > 100


def simulated_site(seed: int, shape=(300, 340), n_nuclei=12, n_filaments=60):
    """A site with planted structure: disc nuclei (ids 1..n) and bright curved filaments (random walks with
    smooth turning), some crossing each other and the nuclei, some reaching the image border."""
    from scipy import ndimage as ndi

    rng = np.random.default_rng(seed)
    h, w = shape
    yy, xx = np.mgrid[:h, :w]
    nuc = np.zeros(shape, np.int32)
    for k in range(1, n_nuclei + 1):
        cy, cx, r = rng.uniform(0, h), rng.uniform(0, w), rng.uniform(6, 14)
        nuc[((yy - cy) ** 2 + (xx - cx) ** 2 <= r * r) & (nuc == 0)] = k
    img = np.zeros(shape)
    for _ in range(n_filaments):
        y, x, a = rng.uniform(0, h), rng.uniform(0, w), rng.uniform(0, 2 * np.pi)
        for _ in range(int(rng.integers(10, 80))):
            a += rng.normal(0, 0.25)
            y, x = y + np.sin(a), x + np.cos(a)
            if 0 <= y < h and 0 <= x < w:
                img[int(y), int(x)] = 1.0
    img = ndi.gaussian_filter(img, 1.0) + 0.02 * rng.random(shape)
    return img / img.max(), relabel(nuc)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_simulated_site_matches_cellprofiler(seed):
    img, nuc = simulated_site(seed)
    cp = _chain(img, nuc, f"simulated seed {seed}")
    assert cp[_column("NumberBranchEnds")].sum() > 0


def _skeleton_cases():
    """(name, skeleton, nuclei) small cases reaching MeasureObjectSkeleton's corner cases."""
    nuc = np.zeros((12, 14), np.int32)
    nuc[5:8, 5:8] = 1
    skel = np.zeros_like(nuc, bool)
    skel[0:12, 6] = True                        # a line through the nucleus, from the first row to the last
    skel[3, 2:12] = True                        # crossing it
    yield "cross through a nucleus", skel, nuc
    odd = np.zeros((10, 10), bool)
    odd[0:3, 1] = True
    odd[1, 0:3] = True                          # [1, 1] on: CellProfiler's odd case applies
    odd[[1, 2, 1, 2], [1, 1, 2, 2]] = True      # a 2x2 block at (1, 1)
    nuc2 = np.zeros((10, 10), np.int32)
    nuc2[6:9, 6:9] = 1
    yield "odd case at [1, 1]", odd, nuc2
    thick = np.zeros((14, 16), bool)
    thick[0:2, 2:14] = True                     # a two-pixel-thick bar on the first row: centrosome's
    thick[2:6, 8] = True                        # thinning keeps first-row pixels
    thick[0:3, 0] = True
    nuc4 = np.zeros((14, 16), np.int32)
    nuc4[7:10, 7:10] = 1
    yield "thick bar on the first row", thick, nuc4
    block = np.zeros((10, 10), bool)
    block[1:4, 0:4] = True                      # blocks at [1, 1] survive the re-skeletonisation
    block[0, 0:6] = True
    block[1:3, 5:8] = True
    yield "blocks at [1, 1]", block, nuc2
    odd_off = np.zeros((10, 10), bool)
    odd_off[4:6, 4:6] = True                    # a 2x2 block away from [1, 1]
    odd_off[3, 3] = odd_off[6, 6] = odd_off[3, 6] = odd_off[6, 3] = True
    yield "2x2 block, [1, 1] off", odd_off, nuc2
    ring = np.zeros((20, 20), bool)
    ring[2:9, 2] = ring[2:9, 8] = ring[2, 2:9] = ring[8, 2:9] = True   # a loop enclosing a 5x5 hole
    ring[5, 9:14] = True
    nuc3 = np.zeros((20, 20), np.int32)
    nuc3[12:16, 13:17] = 1
    nuc3[15:19, 2:6] = 2
    yield "loop with a hole, two nuclei", ring, nuc3
    yield "no skeleton", np.zeros((15, 15), bool), nuc3[:15, :15]
    # random 16x16 skeletons around one nucleus: in #70 [1, 1] is off and an L-corner lies outside the
    # nucleus (the odd case must not apply), in #276 [1, 1] is on (it must)
    from skimage.morphology import skeletonize

    nuc5 = np.zeros((16, 16), np.int32)
    nuc5[9:12, 9:12] = 1
    for seed in (70, 276):
        rnd = skeletonize(np.random.default_rng(seed).random((16, 16)) < 0.35)
        yield f"random skeleton {seed} ([1, 1] {'on' if seed == 276 else 'off'})", rnd, nuc5


@pytest.mark.parametrize("case", list(_skeleton_cases()), ids=lambda c: c[0])
def test_corner_cases_match_cellprofiler(case):
    name, skel, nuc = case
    cp = ref.measure_object_skeleton(skel, nuc)
    ours = {_column(f): v for f, v in measure_object_skeleton(skel, nuc, max_hole_size=HOLE).items()}
    _assert_like_cellprofiler(ours, cp, name)


def test_no_nuclei():
    out = measure_object_skeleton(np.ones((8, 8), bool), np.zeros((8, 8), np.int32), max_hole_size=HOLE)
    assert all(v.shape == (0,) for v in out.values())


def test_measure_site_maps_object_ids():
    """Through measure_site (jump preset families): ids with gaps and cells without a nucleus get
    CellProfiler's values of the same nuclei numbered 1..n, NaN where there is no nucleus."""
    img, nuc = simulated_site(4, shape=(200, 220), n_nuclei=8)
    ids = np.where(nuc > 0, 3 * nuc + 1, 0)          # ids 4, 7, 10, ...
    cells = ids.copy()
    cells[:5, :5] = 99                               # a cell without a nucleus
    images = np.stack([img] * 5)
    df = measure_site(images, ("DNA", "ER", "RNA", "AGP", "Mito"), ids, cells, None,
                      {"preset": "jump", "families": ["skeleton"], "location_z": False})
    tub = tubeness(img, smoothing=1.0, rescale=True)
    _, _, _, cp = ref.jump_mito_skeleton(tub, nuc)
    df = df.set_index("object_id")
    assert np.isnan(df.loc[99, f"Nuclei_{_column('NumberTrunks')}"])
    for f in FEATURES:
        col = f"Nuclei_{_column(f)}"
        np.testing.assert_allclose(df.loc[3 * np.arange(1, nuc.max() + 1) + 1, col].to_numpy(),
                                   cp[_column(f)], rtol=1e-6, atol=0)


def test_threshold_value_is_cellprofilers_li():
    """threshold_value against CellProfiler's get_global_threshold + _correct_global_threshold (skimage's
    threshold_li with its tolerance) on images of several sizes (numpy's summation blocks) and grids."""
    rng = np.random.default_rng(3)
    images = [rng.random((n, m)) ** k for n, m in ((2, 3), (11, 12), (97, 101), (300, 301)) for k in (1, 4)]
    images += [np.round(rng.random((64, 80)) * 255) / 255, np.round(rng.random((50, 50)) * 9) / 9,
               np.where(rng.random((40, 40)) < 0.5, 0.0, 0.25), np.full((5, 5), 0.5)]
    for img in images:
        thr = ref.Threshold()
        want = thr._correct_global_threshold(thr.get_global_threshold(img, np.ones(img.shape, bool)))
        assert threshold_value(img) == want


def test_thinning_distances_are_scipys():
    """The distances that order centrosome's thinning (its scipy distance_transform_edt), found ring by ring
    at the foreground pixels only, equal scipy's, thin and thick shapes, shapes touching the border."""
    from scipy import ndimage as ndi

    from pairedscreen.paint.features.skeleton_steps import _edt_at

    rng = np.random.default_rng(11)
    for k in range(40):
        h, w = (int(v) for v in rng.integers(1, 50, 2))
        img = rng.random((h, w)) < rng.uniform(0.2, 0.98)
        if k % 4 == 0:
            img = ndi.binary_dilation(img, iterations=3)
        if img.all():
            continue
        ii, jj = np.nonzero(img)
        np.testing.assert_array_equal(_edt_at(img, ii, jj), ndi.distance_transform_edt(img)[img])


def _close_nuclei_cases(chunk: int, n: int = 100):
    """Random 20x20 skeletons around three 2x2 nuclei placed close together (labels out of raster
    order): skeleton pixels next to two nuclei's seeds, where centrosome's propagate gives the pixel to
    the seed its unheapified heap pops first, not to the smaller label."""
    from skimage.morphology import skeletonize

    for seed in range(chunk * n, (chunk + 1) * n):
        rng = np.random.default_rng(seed)
        nuc = np.zeros((20, 20), np.int32)
        for lab in rng.permutation(3) + 1:
            cy, cx = rng.integers(3, 16, 2)
            block = nuc[cy:cy + 2, cx:cx + 2]
            block[block == 0] = lab
        if len(np.unique(nuc)) == 4:
            yield seed, skeletonize(rng.random((20, 20)) < 0.4), nuc


@pytest.mark.parametrize("chunk", range(3))
def test_close_nuclei_match_cellprofiler(chunk):
    for seed, skel, nuc in _close_nuclei_cases(chunk):
        cp = ref.measure_object_skeleton(skel, nuc)
        ours = {_column(f): v for f, v in measure_object_skeleton(skel, nuc, max_hole_size=HOLE).items()}
        _assert_like_cellprofiler(ours, cp, f"close nuclei {seed}")
