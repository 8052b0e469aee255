"""Images + masks for the shape/intensity/neighbour parity tests, the parity table and benchmarks.

- ``synthetic_site``: a simulated-like 3-compartment site (elliptic cells around elliptic nuclei,
  touching neighbours, holes, thin/tiny objects, objects on the border, a cell without nucleus)
  with textured uint16-like channels.
- ``scalefex_site``: the real ScaleFEx Cell Painting site (1080 x 1080, 5 channels) with nuclei
  from an Otsu threshold + distance-transform watershed of the Hoechst channel and cells from a
  seeded watershed of the cytoplasm stains (ids shared; cytoplasm = cell minus nucleus).
- ``examplehuman_nuclei``: CellProfiler's ExampleHuman nuclei rebuilt from the CellProfiler
  outline overlay saved by the same pipeline run that wrote the reference CSVs.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from config_values import SCHEMA

SCALEFEX = "cellpainting_scalefex_5ch_site"
EXAMPLEHUMAN = "cellprofiler_examplehuman"
# ScaleFEx README channel map: ch1 ER, ch2 AGP, ch3 Mito, ch4 DNA (Hoechst), ch5 RNA
SCALEFEX_CHANNELS = ("ER", "AGP", "Mito", "DNA", "RNA")


def relabel(labels: np.ndarray) -> np.ndarray:
    """Contiguous 1..N labels in the same order (cp_measure's requirement)."""
    ids = np.unique(labels)
    ids = ids[ids > 0]
    lut = np.zeros(int(labels.max()) + 1, np.int32)
    lut[ids] = np.arange(1, ids.size + 1)
    return lut[labels]


def synthetic_site(
    seed: int = 0, shape: tuple[int, int] = (256, 256), n_cells: int = 30, n_channels: int = 3
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(images (C, H, W) float64 in [0, 1] on a 1/65535 grid, nuclei, cells, cytoplasm)."""
    from scipy import ndimage as ndi
    from skimage.segmentation import watershed

    rng = np.random.default_rng(seed)
    h, w = shape
    yy, xx = np.mgrid[0:h, 0:w]
    cell_field = np.zeros(shape)
    nuc = np.zeros(shape, np.int32)
    markers = np.zeros(shape, np.int32)
    for k in range(1, n_cells + 1):
        cy, cx = rng.uniform(-5, h + 5), rng.uniform(-5, w + 5)
        a, b = rng.uniform(8, 22, 2)
        th = rng.uniform(0, np.pi)
        frac = rng.uniform(0.15, 0.35)
        rad = int(1.3 * max(a, b)) + 2
        y0, y1 = max(0, int(cy) - rad), min(h, int(cy) + rad + 1)
        x0, x1 = max(0, int(cx) - rad), min(w, int(cx) + rad + 1)
        if y0 < y1 and x0 < x1:
            dy, dx = yy[y0:y1, x0:x1] - cy, xx[y0:y1, x0:x1] - cx
            u = (dy * np.cos(th) + dx * np.sin(th)) / a
            v = (-dy * np.sin(th) + dx * np.cos(th)) / b
            r2 = u * u + v * v
            np.maximum(cell_field[y0:y1, x0:x1], 1.0 - r2, out=cell_field[y0:y1, x0:x1])
            if k % 7 != 0:  # every 7th cell has no nucleus
                box = nuc[y0:y1, x0:x1]
                box[(r2 < frac) & (box == 0)] = k
        iy, ix = int(np.clip(cy, 0, h - 1)), int(np.clip(cx, 0, w - 1))
        markers[iy, ix] = k
    noise = ndi.gaussian_filter(rng.standard_normal(shape), 2.0)
    fg = cell_field + 0.4 * noise > 0.05
    cells = watershed(-cell_field, markers, mask=fg | (nuc > 0)).astype(np.int32)
    nuc = np.where((cells == nuc) & (nuc > 0), nuc, 0).astype(np.int32)
    # a hole in one nucleus and a thin bar + a tiny cell
    ids = np.unique(nuc[nuc > 0])
    if ids.size:
        ys, xs = np.nonzero(nuc == ids[0])
        cy, cx = int(ys.mean()), int(xs.mean())
        nuc[cy, cx] = 0
    free = cells == 0
    bar = np.zeros(shape, bool)
    bar[h // 2 : h // 2 + 2, 5:40] = True
    cells[bar & free] = n_cells + 1
    tiny = np.zeros(shape, bool)
    tiny[h - 3 : h, w - 2 : w] = True
    cells[tiny & (cells == 0)] = n_cells + 2
    cyto = np.where(nuc > 0, 0, cells).astype(np.int32)
    images = np.empty((n_channels,) + shape)
    for c in range(n_channels):
        tex = ndi.gaussian_filter(rng.standard_normal(shape), 1.0 + c)
        base = 0.05 + 0.3 * (cells > 0) + (0.3 if c == 0 else 0.1) * (nuc > 0)
        img = base * (1.0 + 0.5 * tex) + 0.02 * rng.random(shape)
        images[c] = np.round(np.clip(img, 0, 1) * 65535) / 65535
    return images, nuc, cells, cyto


def load_scalefex(root: Path) -> np.ndarray:
    """The five channels as float64 in [0, 1], shape (5, 1080, 1080), ScaleFEx channel order."""
    import tifffile

    files = sorted((root / "ScaleFEx_Dataset01_Plate1").glob("*.tiff"))
    if len(files) != 5:
        raise FileNotFoundError(f"expected 5 channel TIFFs under {root}, found {len(files)}")
    return np.stack([tifffile.imread(f) for f in files]).astype(np.float64) / 65535.0


def segment_site(images: np.ndarray, dna: int = 3) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(nuclei, cells, cytoplasm) int32 with shared ids: Otsu + watershed, no learned model."""
    from scipy import ndimage as ndi
    from skimage import feature, filters, measure, segmentation

    d = ndi.gaussian_filter(images[dna], 1.5)
    fg = d > filters.threshold_otsu(d)
    comp = measure.label(fg)
    fg &= np.bincount(comp.ravel())[comp] >= 40
    fg = ndi.binary_fill_holes(fg)
    dist = ndi.distance_transform_edt(fg)
    peaks = feature.peak_local_max(dist, min_distance=7, labels=measure.label(fg), exclude_border=False)
    markers = np.zeros(d.shape, np.int32)
    markers[tuple(peaks.T)] = np.arange(1, len(peaks) + 1)
    nuc = segmentation.watershed(-dist, markers, mask=fg).astype(np.int32)
    others = [i for i in range(images.shape[0]) if i != dna]
    cyto_img = ndi.gaussian_filter(images[others].sum(0), 2.0)
    cfg = cyto_img > 0.8 * filters.threshold_otsu(cyto_img)
    cells = segmentation.watershed(-cyto_img, nuc, mask=cfg | (nuc > 0)).astype(np.int32)
    nuc = np.where(cells == nuc, nuc, 0).astype(np.int32)
    cells = relabel(cells)
    # nuclei carry the id of their cell
    nuc = np.where(nuc > 0, cells, 0).astype(np.int32)
    cyto = np.where(nuc > 0, 0, cells).astype(np.int32)
    return nuc, cells, cyto


def examplehuman_images(root: Path) -> dict[str, np.ndarray]:
    """ExampleHuman channels as CellProfiler loads them (uint8 / 255)."""
    import tifffile

    names = {"DNA": "d0", "PH3": "d1", "cellbody": "d2"}
    return {
        k: tifffile.imread(root / f"AS_09125_050116030001_D03f00{v}.tif").astype(np.float64) / 255.0
        for k, v in names.items()
    }


def examplehuman_nuclei(root: Path) -> np.ndarray:
    """Nuclei rebuilt from CellProfiler's own outline overlay (``*_Overlay.png``).

    The pipeline draws thick outlines (both sides of each boundary) in blue for Nuclei, #0080FF for
    Cells and yellow for PH3. Each connected region enclosed by outline pixels that is not the
    background becomes a nucleus; it is grown by one pixel into adjacent outline pixels (the inner
    half of the thick outline) that do not also touch the background or another nucleus.
    """
    from scipy import ndimage as ndi
    from skimage import io, measure, segmentation

    rgb = io.imread(root / "AS_09125_050116030001_D03f00d0_Overlay.png")[..., :3].astype(int)
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    blue = (r == 0) & (g == 0) & (b == 255)
    cyan = (r == 0) & (g == 128) & (b == 255)
    yellow = (r == 255) & (g == 255) & (b == 0)
    outline = blue | cyan | yellow
    regions = measure.label(~outline, connectivity=1)
    # a nucleus interior is enclosed by nucleus (blue/yellow) outline only
    nuc = np.zeros(regions.shape, np.int32)
    n = 0
    for prop in measure.regionprops(regions):
        sl = prop.slice
        region = regions[sl] == prop.label
        ring = ndi.binary_dilation(region, np.ones((3, 3), bool), border_value=0) & ~region
        ys, xs = np.nonzero(ring)
        if ys.size == 0:
            continue
        around = rgb[sl][ys, xs]
        is_nuc_outline = ((around[:, 0] == 0) & (around[:, 1] == 0) & (around[:, 2] == 255)) | (
            (around[:, 0] == 255) & (around[:, 1] == 255) & (around[:, 2] == 0)
        )
        if prop.area > 2000 or is_nuc_outline.mean() < 0.9:
            continue
        n += 1
        nuc[sl][region] = n
    # grow each interior by one pixel into the thick outline (its inner half)
    grown = segmentation.expand_labels(nuc, distance=1)
    nuc = np.where((nuc == 0) & (blue | yellow) & (grown > 0), grown, nuc)
    return nuc.astype(np.int32)


# ------------------------------------------------------------------------------------------------
# references: cp_measure (CellProfiler's measurement code) on the same pixels and masks


def rel_err(ours: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """|ours - ref| / max(|ref|, 1e-6 * max|ref|, 1e-9): relative error, floored for values near zero.

    The absolute floor 1e-9 only matters for features that are zero up to rounding (e.g. a granular
    spectrum step of a channel without signal, ~1e-14 on both sides): there a 1e-15 difference is
    rounding noise, not disagreement. Real feature values (images in [0, 1], granularity in percent) are
    many orders of magnitude above it.

    Equal non-finite values (NaN/NaN, inf/inf) count as 0; a NaN on one side only as inf.
    """
    a = np.asarray(ours, dtype=np.float64)
    b = np.asarray(ref, dtype=np.float64)
    finite = np.isfinite(b)
    scale = float(np.max(np.abs(b[finite]))) if finite.any() else 1.0
    floor = max(1e-6 * scale, 1e-9)
    with np.errstate(invalid="ignore"):
        err = np.abs(a - b) / np.maximum(np.abs(b), floor)
    same = (np.isnan(a) & np.isnan(b)) | ((a == b) & ~np.isfinite(b))
    err[same] = 0.0
    err[np.isnan(err)] = np.inf
    return err


def cp_areashape(labels: np.ndarray) -> dict[str, np.ndarray]:
    """cp_measure sizeshape + zernike + feret, keyed ``AreaShape_*`` (labels contiguous 1..N)."""
    from cp_measure.bulk import get_core_measurements

    core = get_core_measurements()
    dummy = np.zeros(labels.shape)
    out: dict[str, np.ndarray] = {}
    for fam in ("sizeshape", "zernike", "feret"):
        out.update({f"AreaShape_{k}": np.asarray(v, float) for k, v in core[fam](labels, dummy).items()})
    return out


def cp_intensity(image: np.ndarray, labels: np.ndarray, channel: str) -> dict[str, np.ndarray]:
    """cp_measure intensity with CellProfiler's quantile convention (``legacy=True``), 2-D keys."""
    from cp_measure.bulk import get_core_measurements

    ref = get_core_measurements(legacy=True)["intensity"](labels, image)
    return {f"{k}_{channel}": np.asarray(v, float) for k, v in ref.items() if not k.endswith("_Z")}


def cp_neighbors(labels: np.ndarray, distance: int, method: str = "within") -> dict[str, np.ndarray]:
    """cp_measure MeasureObjectNeighbors (objects vs themselves), re-keyed to CellProfiler meaning.

    cp_measure reports the object itself as ``FirstClosestObjectNumber`` (its ``order[:, 0]``) and
    the nearest other object as ``SecondClosestObjectNumber``; CellProfiler reports the nearest and
    second nearest other objects. The first is taken from cp_measure's second; the second nearest
    comes from ranking cp_measure-equivalent centroid distances (scipy ``center_of_mass``).
    """
    from cp_measure.bulk import get_multimask_measurements
    from scipy import ndimage as ndi

    fn = get_multimask_measurements()["neighbors"]
    if method == "adjacent":
        ref = fn(labels, labels, distance_method="Adjacent")
        suffix = "Adjacent"
    else:
        ref = fn(labels, labels, distance_method="Within a specified distance", distance=distance)
        suffix = str(distance)
    out = {k: np.asarray(v, float) for k, v in ref.items()}
    n = int(labels.max())
    first = out[f"Neighbors_SecondClosestObjectNumber_{suffix}"].copy()
    second = np.zeros(n)
    if n > 2:
        c = np.array(ndi.center_of_mass(np.ones(labels.shape), labels, np.arange(1, n + 1)))
        d = np.sqrt(((c[:, None, :] - c[None, :, :]) ** 2).sum(-1))
        np.fill_diagonal(d, np.inf)
        order = np.argsort(d, axis=1, kind="stable")
        second = order[:, 1] + 1.0
    out[f"Neighbors_FirstClosestObjectNumber_{suffix}"] = first
    out[f"Neighbors_SecondClosestObjectNumber_{suffix}"] = second
    return out


# ------------------------------------------------------------------------------------------------
# CellProfiler 4.0.6 reference outputs (ExampleHuman)

# Features whose CellProfiler 4.0.6 value is not comparable as such (see feature_parity.md):
# Orientation is reported in radians by 4.0.6 (degrees in CellProfiler >= 4.1, cp_measure and here);
# Solidity comes from the scikit-image 0.16/0.17 convex hull of 4.0.6; Location_MaxIntensity picks
# an arbitrary pixel among tied maxima (uint8 images have many ties).
CP406_CONVENTIONS = ("AreaShape_Orientation", "AreaShape_Solidity", "Location_MaxIntensity")


def examplehuman_comparison(root: Path):
    """Our Nuclei features vs CellProfiler 4.0.6's ``Nuclei.csv``, objects matched by centroid.

    Returns ``(summary, table)``: summary = {n_reference, n_ours, n_matched, match_rate,
    n_exact_area}; table = DataFrame indexed by feature with the median / 90th percentile relative
    error over matched objects and the median / max over matched objects whose rebuilt area equals
    CellProfiler's. Orientation is compared after converting ours to radians (4.0.6's unit).
    """
    import pandas as pd
    from scipy.spatial import cKDTree

    from pairedscreen.paint.features.areashape import measure_areashape
    from pairedscreen.paint.features.intensity import measure_intensity

    nuc = examplehuman_nuclei(root)
    images = examplehuman_images(root)
    ours = measure_areashape(nuc, zernike_degree=SCHEMA["paint.features.zernike_degree"])
    for ch in ("DNA", "PH3"):
        ours.update(measure_intensity(images[ch], nuc, ch))
    ours["AreaShape_Orientation"] = np.deg2rad(ours["AreaShape_Orientation"])
    ref = pd.read_csv(root / "Nuclei.csv")
    tree = cKDTree(np.c_[ours["AreaShape_Center_X"], ours["AreaShape_Center_Y"]])
    dist, j = tree.query(np.c_[ref["AreaShape_Center_X"], ref["AreaShape_Center_Y"]])
    area_o = ours["AreaShape_Area"][j]
    area_r = ref["AreaShape_Area"].to_numpy()
    matched = (dist <= 2.0) & (np.abs(area_o - area_r) <= 0.05 * area_r)
    exact = matched & (area_o == area_r)
    rows = {}
    for key, values in ours.items():
        if key not in ref.columns:
            continue
        a = values[j]
        b = ref[key].to_numpy(dtype=float)
        err_m = rel_err(a[matched], b[matched])
        err_e = rel_err(a[exact], b[exact])
        rows[key] = {
            "median_matched": float(np.median(err_m)),
            "p90_matched": float(np.percentile(err_m, 90)),
            "median_exact_area": float(np.median(err_e)),
            "max_exact_area": float(np.max(err_e)),
        }
    summary = {
        "n_reference": int(len(ref)),
        "n_ours": int(nuc.max()),
        "n_matched": int(matched.sum()),
        "match_rate": float(matched.mean()),
        "n_exact_area": int(exact.sum()),
    }
    return summary, pd.DataFrame.from_dict(rows, orient="index")
