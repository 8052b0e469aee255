"""Nuclei and cell segmentation with Cellpose 3, and the three-compartment object model.

Models: ``paint.segmentation.{nuclei,cells}.model`` is a Cellpose model name (``nuclei``, ``cyto3``, ...)
or a path to a Cellpose model file (the project ships ``resources/models/pairedscreen_{nuclei,cells}``,
trained from scratch on simulated sites by :mod:`pairedscreen.paint.train`). Relative paths are looked up
in the working directory first, then in the source checkout (``resources/`` lives there).
Named models load from Cellpose's model folder, ``$CELLPOSE_LOCAL_MODELS_PATH`` when set (offline
clusters: copy e.g. ``nucleitorch_0`` / ``cyto3`` there), else ``~/.cellpose/models``; when the weights
are absent Cellpose tries to download them and a failure is reported with what to copy where.

Inputs: nuclei = the nuclear channel alone (``[DNA, 0]``); cells = the cytoplasm channel with the nuclear
channel as Cellpose's second channel (``[AGP, DNA]``), both illumination-corrected when an illumination
stack is given. Sites of one shape are stacked and sent to ``model.eval`` together (``batch_size`` sites
per call, their tiles share forward passes), so a GPU is fed full batches.

Object model (what ``object_id`` means):

- every Cellpose cell is one object; cells are numbered 1..K in raster order of their first pixel;
- each cell gets at most one nucleus: the nucleus that overlaps it most among the nuclei whose largest
  overlap is with this cell, provided at least ``min_nucleus_overlap`` (default 0.5) of that nucleus lies
  inside the cell; the nucleus is clipped to the cell, so nucleus k is inside cell k;
- cells without such a nucleus keep their id, ``has_nucleus = False`` and an empty nucleus mask
  (their cytoplasm is the whole cell);
- nuclei matched to no cell (outside every cell, the second nucleus of a binucleate cell, or a nucleus
  mostly outside its best cell) are dropped from all three masks and counted
  (``n_nuclei_dropped`` in the site summary);
- cytoplasm k = cell k minus nucleus k.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import tifffile
from scipy.sparse import coo_matrix

from pairedscreen.errors import InputError, PairedscreenError, SetupError
from pairedscreen.io import atomic_output, repo_root, write_parquet

COMPARTMENTS = ("nuclei", "cells", "cytoplasm")
_MODEL_CACHE: dict[tuple[str, str], Any] = {}
log = logging.getLogger(__name__)


class ModelNotAvailableError(PairedscreenError, RuntimeError):
    """A Cellpose model name whose weights are not available (offline, not copied)."""


# ------------------------------------------------------------------------------------------- models

def resolve_device(gpu: bool | str) -> Any:
    """``auto``: CUDA when torch sees a GPU, else CPU; ``true``: CUDA or an error; ``false``: CPU."""
    import torch

    if isinstance(gpu, str):
        g = gpu.strip().lower()
        if g not in ("auto", "true", "false"):
            raise InputError(f"paint.segmentation.gpu must be auto, true or false, got {gpu!r}. Fix: set one "
                             "of them in config.yaml")
        gpu = "auto" if g == "auto" else g == "true"
    if gpu == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if gpu:
        if not torch.cuda.is_available():
            raise SetupError(
                "paint.segmentation.gpu is true but torch sees no CUDA device (torch.cuda.is_available() is "
                "False). Fix: set paint.segmentation.gpu: auto or false in config.yaml, or run the job on a "
                "GPU node")
        return torch.device("cuda")
    return torch.device("cpu")


def _cellpose_weight_file(name: str) -> Path:
    from cellpose import models

    base = f"{name}torch_0" if name in ("cyto", "cyto2", "nuclei") else name
    return Path(models.MODEL_DIR) / base


def _resolve_model_path(name_or_path: str | os.PathLike) -> Path | None:
    p = Path(name_or_path)
    if p.exists():
        return p.resolve()
    if not p.is_absolute():
        try:
            q = repo_root() / p
        except FileNotFoundError:
            return None
        if q.exists():
            return q
    return None


def load_model(name_or_path: str | os.PathLike, gpu: bool | str) -> Any:
    """A ``cellpose.models.CellposeModel`` for a model name or a model file path (cached per process)."""
    from cellpose import models

    device = resolve_device(gpu)
    key = (str(name_or_path), str(device))
    if key in _MODEL_CACHE:
        return _MODEL_CACHE[key]
    # honour CELLPOSE_LOCAL_MODELS_PATH even when it was set after cellpose was imported
    env_dir = os.environ.get("CELLPOSE_LOCAL_MODELS_PATH")
    if env_dir and Path(models.MODEL_DIR) != Path(env_dir):
        models.MODEL_DIR = Path(env_dir)
        models.MODEL_LIST_PATH = os.fspath(Path(env_dir) / "gui_models.txt")
    use_gpu = device.type == "cuda"
    path = _resolve_model_path(name_or_path)
    if path is not None:
        if path.is_dir():
            raise ModelNotAvailableError(f"segmentation model {path} is a directory; give the model file")
        model = models.CellposeModel(gpu=use_gpu, device=device, pretrained_model=str(path))
    elif str(name_or_path) in models.MODEL_NAMES:
        name = str(name_or_path)
        weights = _cellpose_weight_file(name)
        try:
            model = models.CellposeModel(gpu=use_gpu, device=device, model_type=name)
        except Exception as exc:  # download or load failure
            if weights.exists() and weights.stat().st_size == 0:
                weights.unlink()
            raise ModelNotAvailableError(
                f"Cellpose weights for {name!r} are not available: {weights} is missing and could not be "
                f"downloaded ({type(exc).__name__}: {exc}). On an offline machine copy the file "
                f"https://www.cellpose.org/models/{weights.name} to a folder and set "
                "CELLPOSE_LOCAL_MODELS_PATH to it, or point paint.segmentation.*.model at a model file "
                "(e.g. resources/models/pairedscreen_nuclei)"
            ) from exc
    else:
        raise ModelNotAvailableError(
            f"segmentation model {str(name_or_path)!r} is neither a file (looked in {Path.cwd()} and the "
            f"source checkout) nor a Cellpose model name ({', '.join(models.MODEL_NAMES[:4])}, ...)"
        )
    _MODEL_CACHE[key] = model
    return model


# ------------------------------------------------------------------------------------- object model

SUMMARY = "summary.tsv"


def read_site_summary(masks_dir: str | os.PathLike) -> pd.DataFrame:
    """A masks folder's ``summary.tsv`` (one row per site, quarantined sites included), as
    :func:`segment_chunk` writes it; wells as strings."""
    return pd.read_csv(Path(masks_dir) / SUMMARY, sep="\t", dtype={"well": str})


@dataclass
class SiteMasks:
    """Label images of one site (same id = same cell) and the matching bookkeeping.

    Iterating yields ``(nuclei, cells, cytoplasm)``.
    """

    nuclei: np.ndarray
    cells: np.ndarray
    cytoplasm: np.ndarray
    n_nuclei_detected: int = 0
    n_nuclei_dropped: int = 0
    n_cells_without_nucleus: int = 0
    dropped_nucleus_areas: list[int] = field(default_factory=list)
    nuclei_all: np.ndarray | None = None  # Cellpose nuclei before matching (original ids), for QC

    def __iter__(self) -> Iterator[np.ndarray]:
        return iter((self.nuclei, self.cells, self.cytoplasm))

    @property
    def n_cells(self) -> int:
        return int(self.cells.max()) if self.cells.size else 0


def _label_dtype(n: int) -> np.dtype:
    return np.dtype(np.uint16) if n < np.iinfo(np.uint16).max else np.dtype(np.uint32)


def match_compartments(nuclei: np.ndarray, cells: np.ndarray, min_nucleus_overlap: float) -> SiteMasks:
    """Relabel Cellpose nuclei and cells into the three-compartment object model (module docstring)."""
    nuclei = np.asarray(nuclei)
    cells = np.asarray(cells)
    if nuclei.shape != cells.shape:
        raise ValueError(f"nuclei {nuclei.shape} and cells {cells.shape} label images differ in shape")
    # cells: 1..K in raster order of their first pixel
    flat_c = cells.ravel()
    fg = np.flatnonzero(flat_c)
    cell_ids, first = np.unique(flat_c[fg], return_index=True)
    order = cell_ids[np.argsort(first)]
    k = order.size
    cmap = np.zeros(int(flat_c.max(initial=0)) + 1, np.int64)
    cmap[order] = np.arange(1, k + 1)
    new_cells = cmap[cells]

    nuc_ids, nuc_inv = np.unique(nuclei.ravel(), return_inverse=True)
    has_bg = nuc_ids.size > 0 and nuc_ids[0] == 0
    nuc_idx = nuc_inv.reshape(nuclei.shape) + (0 if has_bg else 1)  # 0 = background, 1..N nuclei
    n_nuc = int(nuc_ids.size - (1 if has_bg else 0))

    overlap = coo_matrix(
        (np.ones(nuclei.size, np.int64), (nuc_idx.ravel(), new_cells.ravel())), shape=(n_nuc + 1, k + 1)
    ).toarray()
    nuc_area = overlap.sum(axis=1)
    inner = overlap[1:, 1:]  # nuclei x cells
    nucleus_of_cell = np.zeros(k + 1, np.int64)  # cell -> nucleus index (1..N), 0 = none
    if n_nuc and k:
        best_cell = inner.argmax(axis=1) + 1
        best_ov = inner.max(axis=1)
        frac = best_ov / np.maximum(nuc_area[1:], 1)
        eligible = (best_ov > 0) & (frac >= min_nucleus_overlap)
        best_for_cell = np.zeros(k + 1, np.int64)
        for j in np.flatnonzero(eligible):
            c = best_cell[j]
            if best_for_cell[c] == 0 or best_ov[j] > best_ov[best_for_cell[c] - 1]:
                best_for_cell[c] = j + 1
        nucleus_of_cell = best_for_cell
    matched = np.zeros(n_nuc + 1, bool)
    matched[nucleus_of_cell[nucleus_of_cell > 0]] = True
    # nucleus index -> cell id it belongs to (0 = dropped)
    nuc_to_cell = np.zeros(n_nuc + 1, np.int64)
    cells_with = np.flatnonzero(nucleus_of_cell)
    nuc_to_cell[nucleus_of_cell[cells_with]] = cells_with
    candidate = nuc_to_cell[nuc_idx]
    new_nuclei = np.where((candidate > 0) & (candidate == new_cells), candidate, 0)
    cytoplasm = np.where(new_nuclei > 0, 0, new_cells)
    dt = _label_dtype(k)
    dropped = np.flatnonzero(~matched[1:]) + 1
    return SiteMasks(
        nuclei=new_nuclei.astype(dt), cells=new_cells.astype(dt), cytoplasm=cytoplasm.astype(dt),
        n_nuclei_detected=n_nuc, n_nuclei_dropped=int(dropped.size),
        n_cells_without_nucleus=int(k - cells_with.size),
        dropped_nucleus_areas=[int(a) for a in nuc_area[dropped]],
        nuclei_all=nuclei,
    )


# ------------------------------------------------------------------------------------- segmentation

def resolved(cfg: Mapping[str, Any]) -> dict[str, Any]:
    """The ``paint.segmentation`` section with the schema's defaults filled in and checked
    (:func:`pairedscreen.config.resolve_section`): the workflow passes it resolved already, tests and
    benchmarks may pass part of it; no default lives here."""
    from pairedscreen.config import resolve_section

    return resolve_section("paint.segmentation", cfg)


def _prepare(images: Sequence[np.ndarray], channel_names: Sequence[str], illum: np.ndarray | None,
             main: str, second: str | None) -> list[np.ndarray]:
    names = list(channel_names)
    for ch in (main, second):
        if ch is not None and ch not in names:
            raise ValueError(f"segmentation channel {ch!r} is not among the image channels {names}")
    out = []
    for img in images:
        img = np.asarray(img)
        if img.ndim != 3 or img.shape[0] != len(names):
            raise ValueError(f"expected a [C={len(names)}, H, W] site, got shape {img.shape}")
        a = img[names.index(main)].astype(np.float32)
        b = img[names.index(second)].astype(np.float32) if second is not None else None
        if illum is not None:
            a = a / illum[names.index(main)]
            if b is not None:
                b = b / illum[names.index(second)]
        out.append(np.stack([a, b if b is not None else np.zeros_like(a)], axis=-1))
    return out


def _run_model(model: Any, xs: list[np.ndarray], diameter: float | None, flow_threshold: float,
               cellprob_threshold: float, batch_size: int, tile_batch_size: int | None,
               min_size: int, normalize_percentiles: Sequence[float] | None = None) -> list[np.ndarray]:
    """Run Cellpose on ``xs`` ([H, W, 2] each), ``batch_size`` same-shape images per eval call."""
    results: list[np.ndarray | None] = [None] * len(xs)
    groups: dict[tuple[int, ...], list[int]] = {}
    for i, x in enumerate(xs):
        groups.setdefault(x.shape, []).append(i)
    normalize: bool | dict[str, Any] = True
    if normalize_percentiles is not None:
        lo, hi = (float(v) for v in normalize_percentiles)
        if not 0.0 <= lo < hi <= 100.0:
            raise ValueError(
                f"normalize_percentiles must be [low, high] within 0..100, got {normalize_percentiles}"
            )
        normalize = {"percentile": [lo, hi]}
    kw = dict(diameter=diameter if diameter else None, flow_threshold=flow_threshold,
              cellprob_threshold=cellprob_threshold, normalize=normalize, min_size=min_size)
    cp_logger = logging.getLogger("cellpose.models")
    level = cp_logger.level
    cp_logger.setLevel(logging.ERROR)  # "3D stack used, ... masks are made per plane" is what we want
    try:
        for shape, idx in groups.items():
            for start in range(0, len(idx), batch_size):
                chunk = idx[start:start + batch_size]
                h, w = shape[:2]
                if tile_batch_size:
                    tb = int(tile_batch_size)
                else:  # all tiles of the chunk in one forward pass when the batch is small
                    scale = float(model.diam_mean) / diameter if diameter else 1.0
                    ny = max(1, int(np.ceil(h * scale / 224 * 1.2)))
                    ntiles = ny * max(1, int(np.ceil(w * scale / 224 * 1.2)))
                    tb = int(min(64, max(8, ntiles * len(chunk))))
                if len(chunk) == 1:
                    masks = model.eval(xs[chunk[0]], channel_axis=2, batch_size=tb, **kw)[0]
                    results[chunk[0]] = np.asarray(masks)
                else:
                    stack = np.stack([xs[i] for i in chunk])
                    masks = model.eval(stack, channel_axis=3, z_axis=0, batch_size=tb, **kw)[0]
                    masks = np.asarray(masks)
                    for j, i in enumerate(chunk):
                        results[i] = masks[j]
    finally:
        cp_logger.setLevel(level)
    return [r for r in results if r is not None]


def segment_compartment(
    images: Sequence[np.ndarray],
    channel_names: Sequence[str],
    ccfg: Mapping[str, Any],
    *,
    gpu: bool | str,
    batch_size: int,
    min_size: int,
    illum: np.ndarray | None = None,
    nuclear: bool = True,
    tile_batch_size: int | None,
) -> list[np.ndarray]:
    """Raw Cellpose label images for one compartment (``ccfg`` = the resolved ``paint.segmentation.nuclei``
    or ``.cells``, :func:`resolved`): nuclei from ``[channel, 0]``, cells from ``[channel,
    nuclear_channel]``."""
    model = load_model(ccfg["model"], gpu)
    main = ccfg["channel"]
    second = None if nuclear else ccfg["nuclear_channel"]
    xs = _prepare(images, channel_names, illum, main, second)
    return _run_model(model, xs, ccfg["diameter"], float(ccfg["flow_threshold"]),
                      float(ccfg["cellprob_threshold"]), batch_size, tile_batch_size, min_size,
                      ccfg.get("normalize_percentiles"))


def segment_sites(
    images: Sequence[np.ndarray],
    channel_names: Sequence[str],
    cfg: Mapping[str, Any],
    illum: np.ndarray | None = None,
) -> list[SiteMasks]:
    """Segment sites (``[C, H, W]`` arrays, channels named by ``channel_names``) into nuclei/cells/cytoplasm.

    ``cfg`` is the ``paint.segmentation`` config section: ``gpu``, ``batch_size`` (sites per Cellpose call),
    ``nuclei`` / ``cells`` with ``model``, ``channel`` (and ``nuclear_channel`` for cells), ``diameter``,
    ``flow_threshold``, ``cellprob_threshold``; optional ``min_nucleus_overlap`` (0.5), ``min_size`` (15
    pixels), ``tile_batch_size`` (Cellpose's tiles per forward pass; default: all tiles of a call, max 64).
    Per compartment, optional ``normalize_percentiles`` ([low, high], default Cellpose's [1, 99]) maps
    those intensity percentiles to 0 and 1 before the network (e.g. [50, 99.5] on dense, dim nuclear
    images whose background is noisy: the median then marks background).
    ``illum`` is the ``[C, H, W]`` illumination stack (mean 1) or None. Returns one :class:`SiteMasks` per
    site; ``nuclei, cells, cytoplasm = result[i]`` unpacks the label images.
    """
    if len(images) == 0:
        return []
    cfg = resolved(cfg)
    gpu = cfg["gpu"]
    batch_size = int(cfg["batch_size"])
    tile_bs = cfg["tile_batch_size"]
    min_size = int(cfg["min_size"])
    ncfg, ccfg = cfg["nuclei"], cfg["cells"]
    if illum is not None:
        illum = np.asarray(illum, np.float32)
        if illum.shape != np.asarray(images[0]).shape:
            raise ValueError(
                f"illumination stack {illum.shape} does not match the sites {np.asarray(images[0]).shape}"
            )

    nuclei = segment_compartment(images, channel_names, ncfg, gpu=gpu, batch_size=batch_size, illum=illum,
                                 nuclear=True, tile_batch_size=tile_bs, min_size=min_size)
    cells = segment_compartment(images, channel_names, ccfg, gpu=gpu, batch_size=batch_size, illum=illum,
                                nuclear=False, tile_batch_size=tile_bs, min_size=min_size)
    min_ov = float(cfg["min_nucleus_overlap"])
    return [match_compartments(n, c, min_ov) for n, c in zip(nuclei, cells, strict=True)]


# ------------------------------------------------------------------------------------------ outputs

def mask_path(out_dir: str | os.PathLike, well: str, site: int, compartment: str) -> Path:
    return Path(out_dir) / f"{well}_s{site}_{compartment}.tif"


def write_site_masks(out_dir: str | os.PathLike, well: str, site: int, masks: SiteMasks) -> list[Path]:
    """``{well}_s{site}_{nuclei|cells|cytoplasm}.tif``, zlib-compressed label TIFFs."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for comp, arr in zip(COMPARTMENTS, masks, strict=True):
        p = mask_path(out_dir, well, site, comp)
        tifffile.imwrite(p, arr, compression="zlib", photometric="minisblack", metadata=None)
        paths.append(p)
    return paths


def read_site_masks(
    in_dir: str | os.PathLike, well: str, site: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    a, b, c = (tifffile.imread(mask_path(in_dir, well, site, comp)) for comp in COMPARTMENTS)
    return a, b, c


def objects_table(well: str, site: int, masks: SiteMasks) -> pd.DataFrame:
    """One row per cell: well, site, object_id, has_nucleus, nucleus_area, cell_area (+ cytoplasm_area)."""
    k = masks.n_cells
    cell_area = np.bincount(masks.cells.ravel(), minlength=k + 1)[1:]
    nuc_area = np.bincount(masks.nuclei.ravel(), minlength=k + 1)[1:]
    return pd.DataFrame({
        "well": well, "site": np.int64(site), "object_id": np.arange(1, k + 1, dtype=np.int64),
        "has_nucleus": nuc_area > 0, "nucleus_area": nuc_area.astype(np.int64),
        "cell_area": cell_area.astype(np.int64), "cytoplasm_area": (cell_area - nuc_area).astype(np.int64),
    })


def summary_row(well: str, site: int, masks: SiteMasks) -> dict[str, Any]:
    return {
        "well": well, "site": int(site), "n_cells": masks.n_cells,
        "n_nuclei_detected": masks.n_nuclei_detected, "n_nuclei_dropped": masks.n_nuclei_dropped,
        "n_cells_without_nucleus": masks.n_cells_without_nucleus,
    }


def segment_chunk(
    index: pd.DataFrame,
    out_dir: str | os.PathLike,
    cfg: Mapping[str, Any],
    illum_dir: str | os.PathLike | None = None,
    wells: Sequence[str] | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Segment every usable site of ``wells`` (default: all in ``index``) and write the chunk folder.

    Writes ``out_dir/`` atomically: the label TIFFs, ``objects.parquet`` and ``summary.tsv`` (per site:
    n_cells, n_nuclei_detected, n_nuclei_dropped, n_cells_without_nucleus). Quarantined and QC-flagged
    sites are skipped (they appear in the summary with ``n_cells`` 0 and ``status`` quarantined /
    qc_flagged). Sites are loaded ``batch_size`` at a time, so memory stays at one batch. Returns
    (objects, summary).
    """
    from pairedscreen.paint.illumination import load_illumination
    from pairedscreen.paint.ingest import load_site

    channel_names = list(dict.fromkeys(index.sort_values("channel_index")["channel"]))
    sel = index if wells is None else index[index["well"].isin(list(wells))]
    from pairedscreen.paint.ingest import site_usable

    site_status = sel.groupby(["well", "site"], sort=False)["status"].agg(lambda s: bool((s == "ok").all()))
    usable = site_usable(sel)  # not quarantined and not QC-flagged (blank, noise-only, defocused...)
    good = [(w, int(s)) for (w, s), ok in usable.items() if ok]
    # a plate with every site quarantined has no illumination function (and needs none)
    illum = load_illumination(illum_dir, channel_names) if illum_dir is not None and good else None
    cfg = resolved(cfg)
    batch = int(cfg["batch_size"])
    objects: list[pd.DataFrame] = []
    summary: list[dict[str, Any]] = []
    with atomic_output(out_dir, is_dir=True) as tmp:
        for start in range(0, len(good), batch):
            part = good[start:start + batch]
            imgs = [load_site(sel, w, s, channel_names) for w, s in part]
            for (w, s), m in zip(part, segment_sites(imgs, channel_names, cfg, illum), strict=True):
                write_site_masks(tmp, w, s, m)
                objects.append(objects_table(w, s, m))
                summary.append({**summary_row(w, s, m), "status": "ok"})
        for (w, s), ok in usable.items():
            if not ok:
                summary.append({"well": w, "site": int(s), "n_cells": 0, "n_nuclei_detected": 0,
                                "n_nuclei_dropped": 0, "n_cells_without_nucleus": 0,
                                "status": "quarantined" if not site_status[(w, s)] else "qc_flagged"})
        obj = pd.concat(objects, ignore_index=True) if objects else objects_table("", 0, _empty_masks())
        summ = pd.DataFrame(summary)
        write_parquet(obj, tmp / "objects.parquet")
        summ.to_csv(tmp / SUMMARY, sep="\t", index=False)
    return obj, summ


def _empty_masks() -> SiteMasks:
    z = np.zeros((1, 1), np.uint16)
    return SiteMasks(z, z, z)


# ------------------------------------------------------------------------------------------ overlays

def _stretch(a: np.ndarray) -> np.ndarray:
    lo, hi = np.percentile(a, [1, 99.5])
    return np.clip((a - lo) / max(hi - lo, 1e-6), 0, 1)


def overlay_rgb(
    site: np.ndarray, channel_names: Sequence[str], masks: SiteMasks,
    nuclear: str = "DNA", cyto: str = "AGP", max_side: int = 800,
) -> np.ndarray:
    """RGB uint8 composite (nuclear channel blue, cytoplasm channel green) with cell outlines in yellow
    (red: cells without a nucleus), nucleus outlines in magenta and dropped nuclei (no cell) in cyan,
    downscaled to ``max_side``."""
    from skimage.segmentation import find_boundaries
    from skimage.transform import resize

    names = list(channel_names)
    dna = _stretch(np.asarray(site[names.index(nuclear)], np.float32))
    cyt = _stretch(np.asarray(site[names.index(cyto)], np.float32))
    rgb = np.stack([0.15 * cyt, 0.85 * cyt, dna], axis=-1)
    cell_edge = find_boundaries(masks.cells, mode="inner")
    nuc_edge = find_boundaries(masks.nuclei, mode="inner")
    has_nuc = np.zeros(masks.n_cells + 1, bool)
    has_nuc[np.unique(masks.nuclei)] = True
    orphan = cell_edge & ~has_nuc[masks.cells]
    dropped = np.zeros_like(cell_edge)
    if masks.nuclei_all is not None:  # nuclei without a cell: dashed-looking cyan outlines
        dropped = find_boundaries(np.where(masks.nuclei > 0, 0, masks.nuclei_all), mode="inner")
    h, w = dna.shape
    f = min(1.0, max_side / max(h, w))
    if f < 1.0:
        shape = (round(h * f), round(w * f))
        rgb = resize(rgb, (*shape, 3), anti_aliasing=True)
        # keep outlines visible: a pixel is an outline when any source pixel under it is
        cell_edge, nuc_edge, orphan, dropped = (
            resize(e.astype(np.float32), shape, anti_aliasing=False) > 0.2
            for e in (cell_edge, nuc_edge, orphan, dropped))
    rgb[cell_edge] = (1.0, 0.9, 0.0)
    rgb[orphan] = (1.0, 0.1, 0.1)
    rgb[nuc_edge] = (1.0, 0.0, 1.0)
    rgb[dropped] = (0.0, 1.0, 1.0)
    return (np.clip(rgb, 0, 1) * 255).astype(np.uint8)


def write_overlay(path: str | os.PathLike, site: np.ndarray, channel_names: Sequence[str], masks: SiteMasks,
                  **kwargs: Any) -> Path:
    """Save :func:`overlay_rgb` as a PNG (atomic)."""
    rgb = overlay_rgb(site, channel_names, masks, **kwargs)
    with atomic_output(path) as tmp:
        _save_png(tmp, rgb)
    return Path(path)


def _save_png(path: Path, rgb: np.ndarray) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.imsave(path, rgb, format="png")
