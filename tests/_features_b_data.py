"""Test images + masks shared by the texture/granularity/radial/colocalisation parity tests.

Synthetic objects (discs, ellipses, touching and thin shapes, an object on the image border) with
textured intensities, and crops of the real ScaleFEx Cell Painting site with nuclei from an Otsu
threshold of the Hoechst channel and cells from a watershed of the cytoplasm stains.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import numpy as np

SCALEFEX = "cellpainting_scalefex_5ch_site"
# ScaleFEx README channel map: ch1 ER, ch2 AGP, ch3 Mito, ch4 DNA (Hoechst), ch5 RNA
CHANNELS = ("ER", "AGP", "Mito", "DNA", "RNA")


def synthetic(seed: int = 0, shape: tuple[int, int] = (96, 128)) -> tuple[np.ndarray, np.ndarray]:
    """(image float64 [0, 1], labels int32) with varied shapes, textures and edge cases."""
    rng = np.random.default_rng(seed)
    h, w = shape
    yy, xx = np.mgrid[0:h, 0:w]
    labels = np.zeros(shape, np.int32)
    lab = 0
    for cy, cx, ry, rx in [(20, 20, 12, 9), (22, 45, 10, 14), (60, 30, 16, 16), (70, 80, 9, 20),
                           (30, 100, 14, 7), (85, 115, 8, 8), (5, 70, 6, 10)]:
        lab += 1
        inside = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1.0
        labels[inside & (labels == 0)] = lab
    lab += 1
    labels[45:48, 60:100] = lab          # thin bar (3 px): no vertical pairs at scale 3
    lab += 1
    labels[88:96, 0:12] = lab            # touches the image border
    lab += 1
    labels[10:13, 120:123] = lab         # tiny
    lab += 1
    labels[52:66, 100:118] = lab         # U shape: geodesic != Euclidean distance
    labels[52:62, 105:113] = 0
    lab += 1
    labels[80:86, 50:56] = lab           # two separate pieces of one object
    labels[88:92, 62:66] = lab
    lab += 1
    labels[1, 1] = lab                   # single pixel
    lab += 1
    labels[40:46, 2:9] = lab             # constant intensity (set below)
    smooth = np.sin(yy / 5.0) * np.cos(xx / 7.0)
    image = 0.25 + 0.15 * smooth + 0.05 * rng.standard_normal(shape)
    image += 0.3 * rng.random(shape) * (rng.random(shape) < 0.05)
    image = np.clip(image, 0.0, 1.0)
    image[labels == 3] = np.round(image[labels == 3] * 8) / 8   # few grey levels
    image[labels == lab] = 0.4
    return image, _relabel(labels)


@lru_cache(maxsize=2)
def load_site(root: Path) -> np.ndarray:
    """The five channels as float64 in [0, 1], shape (5, 1080, 1080), ScaleFEx channel order."""
    import tifffile

    files = sorted((root / "ScaleFEx_Dataset01_Plate1").glob("*.tiff"))
    assert len(files) == 5, files
    return np.stack([tifffile.imread(f) for f in files]).astype(np.float64) / 65535.0


def segment(images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(nuclei, cells) label images of a site or crop: Otsu on DNA, watershed of the cell stains."""
    from scipy import ndimage as ndi
    from skimage import filters, measure, segmentation

    dna = ndi.gaussian_filter(images[3], 1.0)
    nuc = measure.label(dna > filters.threshold_otsu(dna))
    sizes = np.bincount(nuc.ravel())
    nuc[np.isin(nuc, np.flatnonzero(sizes < 30))] = 0
    nuc = measure.label(nuc > 0).astype(np.int32)
    cyto = ndi.gaussian_filter(images[[0, 1, 4]].sum(0), 2.0)
    fg = cyto > 0.7 * filters.threshold_otsu(cyto)
    cells = segmentation.watershed(-cyto, nuc, mask=fg | (nuc > 0)).astype(np.int32)
    return nuc, cells


@lru_cache(maxsize=2)
def site_masks(root: Path) -> tuple[np.ndarray, np.ndarray]:
    """(nuclei, cells) of the whole real site, contiguous labels."""
    nuc, cells = segment(load_site(root))
    return _relabel(nuc), _relabel(cells)


@lru_cache(maxsize=2)
def site_crops(root: Path, size: int = 320) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Two crops of the real site, (images (5, s, s), nuclei, cells): one around the centre of the
    nuclei, one in the bottom-right corner (objects cut by the crop border)."""
    images = load_site(root)
    nuc, cells = site_masks(root)
    cy, cx = np.argwhere(nuc > 0).mean(0).astype(int)
    out = []
    for y0, x0 in [(max(0, cy - size // 2), max(0, cx - size // 2)), (1080 - size, 1080 - size)]:
        sl = (slice(y0, y0 + size), slice(x0, x0 + size))
        n = _relabel(nuc[sl])
        c = _relabel(cells[sl])
        out.append((images[:, sl[0], sl[1]].copy(), n, c))
    return out


def crop_cases(root: Path) -> list[tuple[np.ndarray, np.ndarray]]:
    """(image, labels) of every channel of every real-site crop: each channel on the cells, then on
    the nuclei of its crop."""
    return [
        (images[c], labels)
        for images, nuclei, cells in site_crops(root)
        for c in range(len(CHANNELS))
        for labels in (cells, nuclei)
    ]


def full_site(root: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(images, nuclei, cells) of the whole real site."""
    return (load_site(root), *site_masks(root))


def _relabel(labels: np.ndarray) -> np.ndarray:
    """Contiguous 1..N labels (cp_measure's requirement) in the same order."""
    ids = np.unique(labels)
    ids = ids[ids > 0]
    lut = np.zeros(int(labels.max()) + 1, np.int32)
    lut[ids] = np.arange(1, ids.size + 1)
    return lut[labels]
