"""Per-cell crops for image models: ``results/train/paint/{plate}/crops.zarr`` + ``obs.parquet``.

``crops.zarr`` (zarr v3 group) holds one array ``crops``: cells x channels x S x S float32, chunked by blocks
of ``train.crops.chunk_cells`` cells (all channels and pixels of a cell in one chunk; Blosc lz4 + shuffle).
The channels are the
illumination-corrected images exactly as the features stage measures them
(:func:`pairedscreen.paint.stages.corrected_site`: intensities scaled to [0, 1] by the dtype's range, divided
by the plate's illumination function), in the configured channel order, plus (``train.crops.mask``) a last
channel ``mask`` = 1 inside the cell's own mask (the ``cells`` label image, object id = ``object_id``) and 0
elsewhere. The group's attributes name the channels, S and the source.

Crop geometry: the window is S x S with its pixel (S // 2, S // 2) on the object's rounded centroid
(``Cells_AreaShape_Center_Y/X``): rows ``round(cy) - S // 2`` .. ``+ S``, same for columns. Where the window
leaves the image it is padded with zeros and the cell is flagged ``crop_padded``; a cell whose mask touches
the image border (so part of the cell was not imaged) is flagged ``touches_border``. Nothing is dropped.

S: ``train.crops.size`` when set, else fitted to the cell size: ``size_factor`` (default 2) x the
``size_quantile`` (default 0.95) of the cells' bounding-box extent (max of width and height) on the reference
plate (the first plate of plates.tsv, so the size does not change when plates land), rounded up to a
multiple of 8 (:func:`fit_crop_size`).

``obs.parquet`` is in the crops' row order: cell_id, perturbation, is_control, plate, batch, well, site,
object_id, centroid_x, centroid_y, site_qc_flag, touches_border, crop_padded, split, batch_split.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from pairedscreen.io import atomic_output
from pairedscreen.train.splits import cell_splits

PathLike = str | os.PathLike
CX, CY = "Cells_AreaShape_Center_X", "Cells_AreaShape_Center_Y"
BBOX = ("Cells_AreaShape_BoundingBoxMinimum_X", "Cells_AreaShape_BoundingBoxMinimum_Y",
        "Cells_AreaShape_BoundingBoxMaximum_X", "Cells_AreaShape_BoundingBoxMaximum_Y")
META = ("Metadata_Plate", "Metadata_Batch", "Metadata_Well", "Metadata_Site", "Metadata_ObjectNumber",
        "Metadata_Perturbation", "Metadata_IsControl")


def fit_crop_size(cells: pd.DataFrame, factor: float = 2.0, quantile: float = 0.95, multiple: int = 8) -> int:
    """``factor`` x the ``quantile`` of the bounding-box extent (max of width, height), rounded up to a
    multiple of ``multiple`` (at least ``multiple``)."""
    if not len(cells):
        raise ValueError("cannot fit the crop size: the reference plate has no cells. Fix: set "
                         "train.crops.size in config.yaml")
    ext = np.maximum(cells[BBOX[2]] - cells[BBOX[0]], cells[BBOX[3]] - cells[BBOX[1]]).to_numpy(float)
    s = factor * float(np.quantile(ext, quantile))
    return int(max(multiple, multiple * np.ceil(s / multiple)))


def read_cell_table(path: PathLike) -> pd.DataFrame:
    """The columns of a plate's ``cells.parquet`` the crops need."""
    names = set(pq.read_schema(path).names)
    cols = [c for c in (*META, CX, CY, *BBOX) if c in names]
    table = pq.read_table(path, columns=cols).to_pandas()
    missing = [c for c in (CX, CY, *BBOX) if c not in table]
    if missing and len(table):
        raise ValueError(f"{path}: cell table lacks {', '.join(missing)}; it was not written by the "
                         "features stage. Fix: rerun the plate's paint_features and paint_plate jobs")
    for c in missing:  # a plate without cells has no feature columns at all: an empty crop set
        table[c] = pd.Series(dtype=float)
    return table


def crop_window(image: np.ndarray, cy: float, cx: float, size: int) -> tuple[np.ndarray, bool]:
    """The S x S window of ``image`` (..., H, W) centred as documented; zero-padded outside; and whether
    padding was needed."""
    h, w = image.shape[-2:]
    y0, x0 = int(np.round(cy)) - size // 2, int(np.round(cx)) - size // 2
    out = np.zeros((*image.shape[:-2], size, size), dtype=image.dtype)
    ya, yb, xa, xb = max(y0, 0), min(y0 + size, h), max(x0, 0), min(x0 + size, w)
    if ya < yb and xa < xb:
        out[..., ya - y0:yb - y0, xa - x0:xb - x0] = image[..., ya:yb, xa:xb]
    return out, bool(y0 < 0 or x0 < 0 or y0 + size > h or x0 + size > w)


def _mask_dirs(masks: Sequence[PathLike]) -> dict[str, Path]:
    """Well -> the chunk folder holding its masks."""
    out: dict[str, Path] = {}
    for m in masks:
        summary = pd.read_csv(Path(m) / "summary.tsv", sep="\t", dtype={"well": str})
        for well in summary["well"]:
            out[str(well)] = Path(m)
    return out


def export_crops(cells: PathLike, index: PathLike, illum_dir: PathLike, masks: Sequence[PathLike],
                 splits: pd.DataFrame, holdout: pd.DataFrame, plate: str, size: int,
                 params: Mapping[str, Any], zarr_out: PathLike, obs_out: PathLike) -> pd.DataFrame:
    """Write one plate's ``crops.zarr`` and ``obs.parquet`` (module docstring); returns the obs table."""
    import tifffile
    import zarr
    from zarr.codecs import BloscCodec

    from pairedscreen.paint.illumination import load_illumination
    from pairedscreen.paint.segment import mask_path
    from pairedscreen.paint.stages import channel_order, corrected_site

    table = read_cell_table(cells).sort_values(
        ["Metadata_Well", "Metadata_Site", "Metadata_ObjectNumber"], kind="stable", ignore_index=True)
    idx = pd.read_parquet(index)
    channels = channel_order(idx)
    # a plate with no cell (e.g. every site quarantined) has no illumination function and needs none
    illum = load_illumination(illum_dir, channels) if len(table) else None
    with_mask = bool(params["mask"])
    names = [*channels, "mask"] if with_mask else list(channels)
    block = int(params["chunk_cells"])
    n = len(table)
    site_flag = idx.groupby(["well", "site"])["qc_flag"].any() if "qc_flag" in idx else None
    dirs = _mask_dirs(masks)

    cell_id = (plate + "_" + table["Metadata_Well"].astype(str) + "_s" + table["Metadata_Site"].astype(str)
               + "_" + table["Metadata_ObjectNumber"].astype(str))
    sp_ = cell_splits(table["Metadata_Perturbation"].astype(str).to_numpy(), cell_id.to_numpy(),
                      np.full(n, plate), splits, holdout, "paint",
                      val_fraction=float(params["val_fraction"]),
                      test_fraction=float(params["test_fraction"]))
    obs = pd.DataFrame({
        "cell_id": cell_id.to_numpy(), "perturbation": table["Metadata_Perturbation"].astype(str).to_numpy(),
        "is_control": table["Metadata_IsControl"].astype(bool).to_numpy() if "Metadata_IsControl" in table
        else np.zeros(n, bool),
        "plate": plate, "batch": table["Metadata_Batch"].astype(str).to_numpy() if "Metadata_Batch" in table
        else "", "well": table["Metadata_Well"].astype(str).to_numpy(),
        "site": table["Metadata_Site"].astype(np.int64).to_numpy(),
        "object_id": table["Metadata_ObjectNumber"].astype(np.int64).to_numpy(),
        "centroid_x": table[CX].astype(float).to_numpy(), "centroid_y": table[CY].astype(float).to_numpy(),
        "site_qc_flag": False, "touches_border": False, "crop_padded": False,
        "split": sp_["split"].to_numpy(), "batch_split": sp_["batch_split"].to_numpy()})

    with atomic_output(zarr_out, is_dir=True) as tmp:
        root = zarr.open_group(store=str(tmp), mode="w", zarr_format=3)
        arr = root.create_array("crops", shape=(n, len(names), size, size), dtype="float32",
                                chunks=(max(1, min(block, n)), len(names), size, size), fill_value=0.0,
                                compressors=BloscCodec(cname="lz4", clevel=5, shuffle="shuffle"))
        root.attrs.update({"channels": names, "size": int(size), "plate": plate, "mask_channel": with_mask,
                           "row_order": "obs.parquet", "centre": "pixel (S//2, S//2) = rounded centroid",
                           "padding": "zeros outside the image (obs crop_padded)",
                           "intensity": "raw / dtype max / illumination function (as the features stage)"})
        buf = np.zeros((max(1, min(block, n)), len(names), size, size), np.float32)
        oid, cy, cx = (obs[c].to_numpy() for c in ("object_id", "centroid_y", "centroid_x"))
        padded, border, qc = np.zeros(n, bool), np.zeros(n, bool), np.zeros(n, bool)
        bbox = table[list(BBOX)].to_numpy(float) if all(c in table for c in BBOX) else None
        start = filled = 0
        for (well, site), rows in obs.groupby(["well", "site"], sort=False).indices.items():
            images = corrected_site(idx, well, int(site), channels, illum)
            cmask = tifffile.imread(mask_path(dirs[well], well, int(site), "cells"))
            h, w = cmask.shape
            if bbox is not None:   # half-open box: maximum == size means the last pixel
                b = bbox[rows]
                border[rows] = (b[:, 0] <= 0) | (b[:, 1] <= 0) | (b[:, 2] >= w) | (b[:, 3] >= h)
            if site_flag is not None:
                qc[rows] = bool(site_flag.get((well, int(site)), False))
            for r in rows:
                if r != start + filled:
                    raise AssertionError("crops must be written in obs row order")
                crop, padded[r] = crop_window(images, cy[r], cx[r], size)
                buf[filled, :len(channels)] = crop
                if with_mask:
                    buf[filled, -1] = crop_window(cmask, cy[r], cx[r], size)[0] == oid[r]
                filled += 1
                if filled == len(buf):
                    arr[start:start + filled] = buf[:filled]
                    start, filled = start + filled, 0
        obs["crop_padded"], obs["touches_border"], obs["site_qc_flag"] = padded, border, qc
        if filled:
            arr[start:start + filled] = buf[:filled]
        with atomic_output(obs_out) as otmp:
            obs.to_parquet(otmp, index=False)
    return obs


def write_crop_size(cells: PathLike, params: Mapping[str, Any], out: PathLike) -> int:
    """``results/train/paint/crop_size.json``: the configured S or the one fitted on the reference plate."""
    configured = params["size"]
    if configured:
        size, how = int(configured), "train.crops.size"
    else:
        size = fit_crop_size(read_cell_table(cells), float(params["size_factor"]),
                             float(params["size_quantile"]))
        how = (f"{params['size_factor']} x q{params['size_quantile']} of the cell bounding-box extent on "
               f"{Path(cells).parent.name}, rounded up to a multiple of 8")
    with atomic_output(out) as tmp:
        Path(tmp).write_text(json.dumps({"size": size, "how": how}, indent=2) + "\n")
    return size
