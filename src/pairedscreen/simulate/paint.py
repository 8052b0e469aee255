"""Simulated Cell Painting arm: 5-channel 16-bit site images, plate layouts and the planted truth.

For every plate ``P{i}`` (batch ``B{i}``) of a 384-well plate layout this writes

- ``raw/images/{plate}/{well}_s{site}_w{channel}.tif`` uint16 images, channel 1..5 = DNA, ER, RNA, AGP, Mito;
- ``truth/paint/{plate}/{well}_s{site}_{nuclei|cells}.tif`` uint16 label images (zlib), nucleus k inside
  cell k;
- ``truth/illumination/{plate}_{channel}.npy`` planted multiplicative vignetting (float32, mean 1);

and, over all plates, ``truth/paint_objects.parquet`` (one row per planted cell) and
``truth/paint_wells.tsv``.

Cells are drawn as Cell-Painting-like objects: irregular elliptical nuclei with chromatin texture and a
brighter rim (DNA), nucleoli (RNA), expansion-bounded weighted-Voronoi cell bodies that sometimes touch,
perinuclear reticulate ER, mitochondrial puncta (Mito) and actin enriched at the cell rims (AGP), blurred
by the optics, with an autofluorescence background, vignetting, an edge-well effect, per-plate batch
gains, Poisson shot noise, Gaussian read noise and a camera offset.

Perturbations of class ``both``/``paint`` shift morphology (see :data:`EFFECTS`); perturbations that share
a ``program`` id shift in the same direction. Everything else is unchanged.

Random streams are keyed by ``(seed, purpose, plate index, row, column, site)``, never drawn sequentially
across plates, so adding plates never changes the files of existing plates.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
import tifffile
from scipy import ndimage as ndi
from skimage.measure import label as cc_label
from skimage.segmentation import find_boundaries

from pairedscreen.io import atomic_output, write_parquet, write_tsv
from pairedscreen.plate import N_COLS, N_ROWS, ROWS, is_edge, well_name
from pairedscreen.simulate.registry import Registry
from pairedscreen.simulate.spec import PaintSpec, ScreenSpec

CHANNELS: tuple[str, ...] = ("DNA", "ER", "RNA", "AGP", "Mito")   # channel index = position + 1
PAINT_ACTIVE_CLASSES = ("both", "paint")

# Planted morphology effects. A perturbation's effect is a vector of log multipliers
# ``morphology_shift * magnitude * direction[k] * SENSITIVITY[k]``; direction is shared by a program.
EFFECTS: tuple[str, ...] = ("nucleus_size", "cell_size", "dna_intensity", "rna_nucleoli",
                            "er_texture", "agp_rim", "mito_intensity", "mito_puncta")
SENSITIVITY: dict[str, float] = {
    "nucleus_size": 0.35,    # nucleus radius (area ~ x^2)
    "cell_size": 0.25,       # cell radius
    "dna_intensity": 0.5,    # DNA stain per nucleus
    "rna_nucleoli": 0.8,     # nucleolar RNA intensity
    "er_texture": 1.0,       # contrast of the reticulate ER texture
    "agp_rim": 0.9,          # actin enrichment at the cell rim
    "mito_intensity": 0.9,   # mitochondrial intensity
    "mito_puncta": 0.9,      # number of mitochondrial puncta per cytoplasm area
}

# Intensities in camera counts (before illumination / edge / batch gains).
_BASE = {"dna": 2600.0, "er": 1000.0, "rna": 1400.0, "agp": 1200.0, "mito": 1600.0}
_AUTOFLUORESCENCE = np.array([120.0, 180.0, 150.0, 200.0, 140.0])
_CAMERA_OFFSET = 100.0
_READ_NOISE = 3.0
_OPTICS_SIGMA = 0.8
_EDGE_CELL_FACTOR = 0.85         # edge wells have ~15% fewer cells


# ----------------------------------------------------------------------------------------------- layout

def plate_id(plate_index: int) -> str:
    return f"P{plate_index + 1}"


def plate_batch(plate_index: int) -> str:
    return f"B{plate_index + 1}"


def plate_layout(registry: Registry, spec: ScreenSpec, plate_index: int) -> pd.DataFrame:
    """Randomised 384-well layout of one plate: plate, well, row, col, is_edge, perturbation_id, replicate,
    edge_multiplier; sorted by well. About 30% of wells are edge wells; controls get both kinds."""
    ps = spec.paint
    rng = np.random.default_rng([spec.seed, 20, plate_index])
    perts = registry.perturbations
    entries: list[str] = []
    for pid in perts.perturbation_id:
        entries += [pid] * ps.wells_per_perturbation
    controls = perts.loc[perts.is_control.astype(bool), "perturbation_id"].tolist()
    if controls:
        entries += [controls[j % len(controls)] for j in range(ps.extra_control_wells)]
    n = len(entries)
    edge = [(r, c) for r in range(N_ROWS) for c in range(N_COLS) if is_edge(r, c)]
    interior = [(r, c) for r in range(N_ROWS) for c in range(N_COLS) if not is_edge(r, c)]
    if n > len(edge) + len(interior):
        raise ValueError(f"{n} wells do not fit on a 384-well plate")
    n_edge = 0 if n < 2 else max(1, int(round(0.3 * n)))
    n_edge = max(min(n_edge, len(edge)), n - len(interior))
    pos_edge = rng.choice(len(edge), n_edge, replace=False)
    pos_int = rng.choice(len(interior), n - n_edge, replace=False)
    positions = [edge[i] for i in pos_edge] + [interior[i] for i in pos_int]
    order = rng.permutation(n)
    assigned = [entries[i] for i in order]           # assigned[k] sits at positions[k]
    # a deliberate mix: controls in edge and interior wells whenever both kinds exist
    is_ctrl = np.array([a in controls for a in assigned])
    kinds = np.array([k < n_edge for k in range(n)])
    if is_ctrl.sum() >= 2 and 0 < n_edge < n:
        for want_edge in (True, False):
            if not (is_ctrl & (kinds == want_edge)).any():
                src = np.flatnonzero(is_ctrl & (kinds != want_edge))[0]
                dst = np.flatnonzero(~is_ctrl & (kinds == want_edge))
                if len(dst):
                    d = int(dst[0])
                    assigned[src], assigned[d] = assigned[d], assigned[src]
                    is_ctrl[src], is_ctrl[d] = is_ctrl[d], is_ctrl[src]
    rows = []
    for (r, c), pid in zip(positions, assigned, strict=True):
        e = is_edge(r, c)
        rows.append({"plate": plate_id(plate_index), "well": well_name(r, c), "row": ROWS[r], "col": c + 1,
                     "is_edge": e, "perturbation_id": pid,
                     "edge_multiplier": 1.0 + ps.edge_effect if e else 1.0, "_r": r, "_c": c})
    df = pd.DataFrame(rows).sort_values(["_r", "_c"]).reset_index(drop=True)
    df["replicate"] = df.groupby("perturbation_id").cumcount() + 1
    return df[["plate", "well", "row", "col", "is_edge", "perturbation_id", "replicate", "edge_multiplier"]]


def illumination_fields(spec: ScreenSpec, plate_index: int) -> np.ndarray:
    """Planted vignetting, shape (5, S, S) float32, each channel mean 1 with a ``vignetting`` relative drop
    from the optical centre to the corners; the same for a plate, slightly different per channel."""
    ps = spec.paint
    s = ps.image_size
    rng = np.random.default_rng([spec.seed, 40, plate_index])
    yy, xx = np.mgrid[0:s, 0:s].astype(np.float64)
    centre = (s - 1) / 2 + rng.normal(0.0, 0.04 * s, 2)
    out = np.empty((len(CHANNELS), s, s), np.float32)
    for c in range(len(CHANNELS)):
        cy, cx = centre + rng.normal(0.0, 0.015 * s, 2)
        v = ps.vignetting * (1.0 + rng.uniform(-0.12, 0.12))
        r2 = ((yy - cy) ** 2 + (xx - cx) ** 2) / (2.0 * (s / 2.0) ** 2)
        f = np.clip(1.0 - v * r2, 0.05, None)
        out[c] = f / f.mean()
    return out


def perturbation_effects(registry: Registry, spec: ScreenSpec) -> pd.DataFrame:
    """Per-perturbation planted morphology: perturbation_id, paint_active, paint_effect (description),
    ``paint_{effect}`` log multipliers (0 where inactive)."""
    shift = spec.paint.morphology_shift
    sens = np.array([SENSITIVITY[e] for e in EFFECTS])
    rows = []
    for i, p in enumerate(registry.perturbations.itertuples()):
        active = p.effect_class in PAINT_ACTIVE_CLASSES
        eff = np.zeros(len(EFFECTS))
        if active:
            prog = np.random.default_rng([spec.seed, 51, int(p.program) + 1])
            direction = prog.choice([-1.0, 1.0], len(EFFECTS)) * prog.uniform(0.4, 1.0, len(EFFECTS))
            mag = np.random.default_rng([spec.seed, 52, i]).uniform(0.85, 1.15)
            eff = shift * mag * direction * sens
        desc = (", ".join(f"{e} x{np.exp(v):.2f}" for e, v in zip(EFFECTS, eff, strict=True))
                if active else "none")
        row = {"perturbation_id": p.perturbation_id, "paint_active": bool(active), "paint_effect": desc}
        row.update({f"paint_{e}": float(v) for e, v in zip(EFFECTS, eff, strict=True)})
        rows.append(row)
    return pd.DataFrame(rows)


# ----------------------------------------------------------------------------------------------- cells

def _place(rng: np.random.Generator, n: int, size: int, dmin: float, margin: float) -> np.ndarray:
    """Dart throwing: up to ``n`` centres at least ``dmin`` apart, ``margin`` from the image border."""
    cand = rng.uniform(margin, size - margin, (40 * n + 50, 2))
    pts = np.empty((n, 2))
    k = 0
    for p in cand:
        if k == n:
            break
        if k == 0 or np.min(np.sum((pts[:k] - p) ** 2, axis=1)) >= dmin * dmin:
            pts[k] = p
            k += 1
    return pts[:k]


def _nearest_outline(size: int, cy: np.ndarray, cx: np.ndarray, a: np.ndarray, b: np.ndarray,
                     ang: np.ndarray, amps: np.ndarray, phases: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Normalised distance to the nearest of N irregular ellipses (< 1 inside; 1 on the outline) and the
    0-based index of that ellipse, each (S, S). Each ellipse is evaluated only in its bounding window."""
    best = np.full((size, size), np.inf, np.float32)
    idx = np.zeros((size, size), np.int64)
    reach = 1.0 + amps.sum(axis=1)                      # the outline never leaves reach * max(a, b)
    for i in range(len(cy)):
        h = int(np.ceil(max(a[i], b[i]) * reach[i])) + 1
        y0, y1 = max(int(cy[i]) - h, 0), min(int(cy[i]) + h + 2, size)
        x0, x1 = max(int(cx[i]) - h, 0), min(int(cx[i]) + h + 2, size)
        if y0 >= y1 or x0 >= x1:
            continue
        dy = np.arange(y0, y1, dtype=np.float32)[:, None] - np.float32(cy[i])
        dx = np.arange(x0, x1, dtype=np.float32)[None, :] - np.float32(cx[i])
        c, s = np.float32(np.cos(ang[i])), np.float32(np.sin(ang[i]))
        u = (dx * c + dy * s) / np.float32(a[i])
        v = (dy * c - dx * s) / np.float32(b[i])
        th = np.arctan2(v, u)
        irr = np.ones_like(th)
        for k in range(amps.shape[1]):
            irr += np.float32(amps[i, k]) * np.cos((k + 2) * th + np.float32(phases[i, k]))
        rho = np.sqrt(u * u + v * v) / irr
        win = best[y0:y1, x0:x1]
        upd = rho < win
        win[upd] = rho[upd]
        idx[y0:y1, x0:x1][upd] = i
    return best, idx


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, int], sigma: float) -> np.ndarray:
    z = ndi.gaussian_filter(rng.standard_normal(shape).astype(np.float32), sigma)
    return z / (z.std() + 1e-9)


def _keep_largest_per_label(lab: np.ndarray) -> np.ndarray:
    """Keep, for every label value, only its largest 4-connected component."""
    comp = cc_label(lab, connectivity=1, background=0)
    if comp.max() == np.count_nonzero(np.bincount(lab.ravel())[1:]):
        return lab
    sizes = np.bincount(comp.ravel())
    val = np.zeros(len(sizes), lab.dtype)
    val[comp.ravel()] = lab.ravel()
    ids = np.arange(1, len(sizes))
    order = np.lexsort((-sizes[1:], val[1:]))            # per label value, largest first
    keep = np.zeros(len(sizes), bool)
    first = np.r_[True, val[1:][order][1:] != val[1:][order][:-1]]
    keep[ids[order][first]] = True
    return np.where(keep[comp], lab, 0).astype(lab.dtype)


def render_site(rng: np.random.Generator, ps: PaintSpec, effect: dict[str, float],
                n_cells: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One site: (signal (5, S, S) float32 in counts before illumination/gains/noise, nuclei, cells) where
    the label images are uint16 and object k's nucleus lies inside cell k."""
    s = ps.image_size
    g = {e: float(np.exp(effect.get(e, 0.0))) for e in EFFECTS}
    r_cell0 = ps.cell_diameter / 2.0 * g["cell_size"]
    r_nuc0 = min(ps.nucleus_diameter / 2.0 * g["nucleus_size"], 0.6 * r_cell0)
    centres = _place(rng, n_cells, s, dmin=1.55 * r_cell0, margin=r_nuc0 + 3.0)
    n = len(centres)
    f32 = np.float32

    # per-cell geometry
    big_r = r_cell0 * rng.lognormal(0.0, 0.12, n)
    el_c = rng.uniform(1.0, 1.35, n)
    crho, cidx = _nearest_outline(s, centres[:, 0], centres[:, 1], big_r * el_c, big_r / el_c,
                                  rng.uniform(0, np.pi, n), rng.uniform(0.0, 0.08, (n, 4)),
                                  rng.uniform(0, 2 * np.pi, (n, 4)))
    small_r = np.minimum(r_nuc0 * rng.lognormal(0.0, 0.10, n), 0.62 * big_r)
    el_n = rng.uniform(1.0, 1.3, n)
    off_r = rng.uniform(0.0, 0.12, n) * big_r
    off_a = rng.uniform(0, 2 * np.pi, n)
    ny = centres[:, 0] + off_r * np.sin(off_a)
    nx = centres[:, 1] + off_r * np.cos(off_a)
    nrho, nidx = _nearest_outline(s, ny, nx, small_r * el_n, small_r / el_n, rng.uniform(0, np.pi, n),
                                  rng.uniform(0.0, 0.045, (n, 3)), rng.uniform(0, 2 * np.pi, (n, 3)))

    # labels: nuclei by nearest outline, cells by weighted Voronoi bounded by each cell's outline
    nuclei = np.where(nrho < 1.0, nidx + 1, 0).astype(np.int32)
    cells = np.where(crho < 1.0, cidx + 1, 0).astype(np.int32)
    cells[nuclei > 0] = nuclei[nuclei > 0]
    nuclei = _keep_largest_per_label(nuclei)
    cells = _keep_largest_per_label(cells)
    nuclei = np.where(cells == nuclei, nuclei, 0)
    # drop objects whose nucleus mostly vanished (overlaps), then relabel 1..m in placement order
    n_area = np.bincount(nuclei.ravel(), minlength=n + 1)[1:]
    exp_area = np.pi * small_r ** 2
    ok = n_area >= 0.4 * exp_area
    lut = np.zeros(n + 1, np.int32)
    lut[1:][ok] = np.arange(1, ok.sum() + 1)
    nuclei, cells = lut[nuclei], lut[cells]
    keep = np.flatnonzero(ok)
    m = len(keep)
    big_r, small_r = big_r[keep], small_r[keep]

    def per_cell(base: float, sd: float, gain: float = 1.0) -> np.ndarray:
        v = np.zeros(m + 1)
        v[1:] = base * gain * rng.lognormal(0.0, sd, m)
        return v

    i_dna = per_cell(_BASE["dna"], 0.15, g["dna_intensity"])
    i_er = per_cell(_BASE["er"], 0.15)
    i_rna = per_cell(_BASE["rna"], 0.15)
    i_agp = per_cell(_BASE["agp"], 0.15)
    i_mito = per_cell(_BASE["mito"], 0.2, g["mito_intensity"])

    nucmask = nuclei > 0
    cellmask = cells > 0
    cyto = cellmask & ~nucmask
    rim = np.clip((nrho - 0.55) / 0.45, 0.0, 1.0) * nucmask
    rim = rim * rim * (3 - 2 * rim)
    dist_nuc = ndi.distance_transform_edt(~nucmask) if nucmask.any() else np.full((s, s), 1e3)
    perinuc = np.exp(-dist_nuc / (0.35 * r_cell0)).astype(f32)

    # RNA: nucleoli (1-4 spots inside each nucleus) + nucleoplasm + perinuclear cytoplasm
    sig = 1.3
    spots = np.zeros(s * s)
    ys, xs = np.nonzero(nucmask)
    if m:
        n_spots = np.minimum(1 + rng.poisson(1.0, m), 4)
        owner = np.repeat(np.arange(1, m + 1), n_spots)
        cyx = np.array(ndi.center_of_mass(nucmask, nuclei, np.arange(1, m + 1))).reshape(m, 2)
        rr = rng.uniform(0, 0.45, len(owner)) * small_r[owner - 1]
        aa = rng.uniform(0, 2 * np.pi, len(owner))
        py = np.clip(np.round(cyx[owner - 1, 0] + rr * np.sin(aa)), 0, s - 1).astype(int)
        px = np.clip(np.round(cyx[owner - 1, 1] + rr * np.cos(aa)), 0, s - 1).astype(int)
        inside = nuclei[py, px] == owner
        w = i_rna[owner] * g["rna_nucleoli"] * rng.lognormal(0.0, 0.2, len(owner)) * 2 * np.pi * sig * sig
        spots = np.bincount((py * s + px)[inside], w[inside], minlength=s * s)
    nucleoli = ndi.gaussian_filter(spots.reshape(s, s).astype(f32), sig)
    tex_rna = _smooth_noise(rng, (s, s), 1.5)
    rna = (nucmask * 0.22 * i_rna[nuclei] + cyto * i_rna[cells] * (0.08 + 0.3 * perinuc)
           * (1 + 0.15 * tex_rna) + nucleoli)

    # DNA: chromatin texture, bright rim, chromocentres, darker nucleoli
    tex = _smooth_noise(rng, (s, s), 1.0)
    dna = nucmask * i_dna[nuclei] * (0.72 + 0.45 * rim) * (1 + 0.16 * tex + 0.35 * (tex > 1.7))
    nmax = nucleoli.max()
    if nmax > 0:
        dna = dna * (1 - 0.45 * nucleoli / nmax)

    # ER: perinuclear reticulate network (zero crossings of band-passed noise) + nuclear envelope
    z = rng.standard_normal((s, s)).astype(f32)
    band = ndi.gaussian_filter(z, 1.0) - ndi.gaussian_filter(z, 2.2)
    band /= band.std() + 1e-9
    ridges = np.exp(-(band / 0.5) ** 2) * 3.0                    # mean ~1
    c_er = min(0.55 * g["er_texture"], 0.95)
    er = (cyto * i_er[cells] * (0.2 + perinuc) * ((1 - c_er) + c_er * ridges)
          + nucmask * i_er[nuclei] * 0.35 * rim)

    # AGP: faint body with fibre-like streaks, strong rim (incl. shared borders of touching cells)
    bnd = find_boundaries(cells, connectivity=1, mode="inner") & cellmask
    dist_b = ndi.distance_transform_edt(~bnd) if bnd.any() else np.full((s, s), 1e3)
    sy, sx = (0.6, 4.0) if rng.random() < 0.5 else (4.0, 0.6)
    fib = ndi.gaussian_filter(rng.standard_normal((s, s)).astype(f32), (sy, sx))
    fib = np.clip(fib / (fib.std() + 1e-9), 0, None)
    agp = cellmask * i_agp[cells] * (0.18 * (1 + 0.35 * fib) + 0.85 * g["agp_rim"] * np.exp(-dist_b / 1.3))

    # Mito: puncta in the cytoplasm, denser near the nucleus
    wmap = (cyto * (perinuc + 0.15)).ravel().astype(np.float64)
    sig_m = 0.9
    mito_pts = np.zeros(s * s)
    if wmap.sum() > 0:
        k = rng.poisson(0.08 * g["mito_puncta"] * wmap.sum())
        idx = rng.choice(s * s, k, p=wmap / wmap.sum())
        wts = 0.6 * i_mito[cells.ravel()[idx]] * rng.lognormal(0.0, 0.35, k) * 2 * np.pi * sig_m * sig_m
        mito_pts = np.bincount(idx, wts, minlength=s * s)
    mito = (ndi.gaussian_filter(mito_pts.reshape(s, s).astype(f32), sig_m)
            + cyto * 0.1 * i_mito[cells] * perinuc)

    signal = np.stack([dna, er, rna, agp, mito]).astype(f32)
    signal = ndi.gaussian_filter(signal, (0, _OPTICS_SIGMA, _OPTICS_SIGMA))
    np.clip(signal, 0, None, out=signal)
    return signal, nuclei.astype(np.uint16), cells.astype(np.uint16)


def acquire(rng: np.random.Generator, signal: np.ndarray, illum: np.ndarray, gains: np.ndarray,
            edge_multiplier: float) -> np.ndarray:
    """Signal + autofluorescence through vignetting, per-channel gains and the edge effect; shot noise,
    read noise and camera offset; uint16 (5, S, S)."""
    lam = (signal + _AUTOFLUORESCENCE[:, None, None].astype(np.float32)) * illum
    lam *= (gains * edge_multiplier)[:, None, None].astype(np.float32)
    img = rng.poisson(lam).astype(np.float32)
    img += _CAMERA_OFFSET + rng.normal(0.0, _READ_NOISE, img.shape).astype(np.float32)
    return np.clip(np.round(img), 0, 65535).astype(np.uint16)


# ----------------------------------------------------------------------------------------------- plates

def _write_tif(path: Path, arr: np.ndarray, *, compress: bool = False) -> None:
    tifffile.imwrite(path, arr, photometric="minisblack", metadata=None,
                     compression="zlib" if compress else None)


def simulate_plate(registry: Registry, spec: ScreenSpec, plate_index: int, out_dir: str | os.PathLike,
                   effects: pd.DataFrame | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Write one plate's images, truth masks and illumination; return (wells, objects) tables."""
    out = Path(out_dir)
    ps = spec.paint
    plate = plate_id(plate_index)
    if effects is None:
        effects = perturbation_effects(registry, spec)
    eff = {r.perturbation_id: {e: float(getattr(r, f"paint_{e}")) for e in EFFECTS}
           for r in effects.itertuples()}
    wells = plate_layout(registry, spec, plate_index)
    illum = illumination_fields(spec, plate_index)
    gains = np.exp(np.random.default_rng([spec.seed, 41, plate_index]).normal(0.0, 0.08, len(CHANNELS)))
    objects = []
    with atomic_output(out / "raw" / "images" / plate, is_dir=True) as img_dir, \
            atomic_output(out / "truth" / "paint" / plate, is_dir=True) as mask_dir:
        for w in wells.itertuples():
            r, c = ROWS.index(w.row), w.col - 1
            for site in range(1, ps.sites_per_well + 1):
                rng = np.random.default_rng([spec.seed, 30, plate_index, r, c, site])
                lam = ps.cells_per_site * (_EDGE_CELL_FACTOR if w.is_edge else 1.0)
                n_cells = max(3, int(rng.poisson(lam)))
                signal, nuclei, cells = render_site(rng, ps, eff[w.perturbation_id], n_cells)
                img = acquire(rng, signal, illum, gains, w.edge_multiplier)
                stem = f"{w.well}_s{site}"
                for ch in range(len(CHANNELS)):
                    _write_tif(img_dir / f"{stem}_w{ch + 1}.tif", img[ch])
                _write_tif(mask_dir / f"{stem}_nuclei.tif", nuclei, compress=True)
                _write_tif(mask_dir / f"{stem}_cells.tif", cells, compress=True)
                m = int(cells.max())
                if m:
                    ids = np.arange(1, m + 1)
                    yy, xx = np.indices(cells.shape)
                    cell_area = np.bincount(cells.ravel(), minlength=m + 1)[1:]
                    cy = np.bincount(cells.ravel(), yy.ravel(), minlength=m + 1)[1:] / cell_area
                    cx = np.bincount(cells.ravel(), xx.ravel(), minlength=m + 1)[1:] / cell_area
                    objects.append(pd.DataFrame({
                        "plate": plate, "well": w.well, "site": site, "object_id": ids,
                        "perturbation_id": w.perturbation_id, "centroid_y": cy, "centroid_x": cx,
                        "nucleus_area": np.bincount(nuclei.ravel(), minlength=m + 1)[1:],
                        "cell_area": cell_area}))
    for ch, name in enumerate(CHANNELS):
        with atomic_output(out / "truth" / "illumination" / f"{plate}_{name}.npy") as tmp:
            with open(tmp, "wb") as fh:
                np.save(fh, illum[ch])
    cols = ["plate", "well", "site", "object_id", "perturbation_id", "centroid_y", "centroid_x",
            "nucleus_area", "cell_area"]
    obj = pd.concat(objects, ignore_index=True) if objects else pd.DataFrame(columns=cols)
    return wells, obj


def simulate_paint(registry: Registry, spec: ScreenSpec, out_dir: str | os.PathLike) -> pd.DataFrame:
    """Simulate all ``spec.paint.n_plates`` plates into ``out_dir`` (see module doc); return the
    per-perturbation truth (perturbation_id, paint_active, paint_effect, paint_{effect} log multipliers)."""
    out = Path(out_dir)
    effects = perturbation_effects(registry, spec)
    all_wells, all_obj = [], []
    for p in range(spec.paint.n_plates):
        wells, obj = simulate_plate(registry, spec, p, out, effects)
        all_wells.append(wells)
        all_obj.append(obj)
    objects = pd.concat(all_obj, ignore_index=True)
    objects = objects.astype({"site": "int64", "object_id": "int64", "nucleus_area": "int64",
                              "cell_area": "int64", "centroid_y": "float64", "centroid_x": "float64"})
    write_parquet(objects, out / "truth" / "paint_objects.parquet")
    wells = pd.concat(all_wells, ignore_index=True)
    wells["is_edge"] = wells["is_edge"].map({True: "true", False: "false"})
    write_tsv(wells, out / "truth" / "paint_wells.tsv")
    return effects
