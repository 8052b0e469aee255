"""Per-cell crops for image models: ``results/train/paint/{plate}/crops.zarr`` + ``obs.parquet``.

``crops.zarr`` (zarr v3 group) holds one array ``crops``: cells x channels x S x S of ``train.crops.dtype``
(float16 by default, float32 on request), chunked by blocks of ``train.crops.chunk_cells`` cells (all
channels and pixels of a cell in one chunk; Blosc lz4 + bitshuffle). The channels are the
illumination-corrected images exactly as the features stage measures them
(:func:`pairedscreen.paint.stages.corrected_site`: intensities scaled to [0, 1] by the dtype's range, divided
by the plate's illumination function; float32), rounded to the crops' dtype (float16: to nearest, ties to
even, as numpy's ``astype``; relative error <= 2^-11), in the configured channel order, plus
(``train.crops.mask``) a last channel ``mask`` = 1 inside the cell's own mask (the ``cells`` label image,
object id = ``object_id``) and 0 elsewhere. The group's attributes name the channels, dtype, S and the
source.

Crop geometry: the window is S x S with its pixel (S // 2, S // 2) on the object's rounded centroid
(``Cells_AreaShape_Center_Y/X``): rows ``round(cy) - S // 2`` .. ``+ S``, same for columns. Where the window
leaves the image it is padded with zeros and the cell is flagged ``crop_padded``; a cell whose mask touches
the image border (so part of the cell was not imaged) is flagged ``touches_border``. Nothing is dropped.

S: ``train.crops.size`` when set, else fitted to the cell size: ``size_factor`` (default 2) x the
``size_quantile`` (default 0.95) of the cells' bounding-box extent (max of width and height) on the reference
plate (the first plate of plates.tsv, so the size does not change when plates land), rounded up to a
multiple of 8 (:func:`fit_crop_size`).

Each chunk file is written through (:func:`pairedscreen.io.write_through`: flushed to disk and dropped from
the page cache as it is written), so a plate's many gigabytes of crops do not crowd the node's page cache,
and every chunk is on disk before the store is moved into place.

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

from pairedscreen.errors import InputError
from pairedscreen.io import atomic_output, write_through
from pairedscreen.paint.segment import read_site_summary
from pairedscreen.train.half import to_float16
from pairedscreen.train.splits import cell_splits

PathLike = str | os.PathLike
CX, CY = "Cells_AreaShape_Center_X", "Cells_AreaShape_Center_Y"
BBOX = ("Cells_AreaShape_BoundingBoxMinimum_X", "Cells_AreaShape_BoundingBoxMinimum_Y",
        "Cells_AreaShape_BoundingBoxMaximum_X", "Cells_AreaShape_BoundingBoxMaximum_Y")
META = ("Metadata_Plate", "Metadata_Batch", "Metadata_Well", "Metadata_Site", "Metadata_ObjectNumber",
        "Metadata_Perturbation", "Metadata_IsControl")


def fit_crop_size(cells: pd.DataFrame, factor: float, quantile: float, multiple: int = 8) -> int:
    """``factor`` x the ``quantile`` of the bounding-box extent (max of width, height), rounded up to a
    multiple of ``multiple`` (at least ``multiple``)."""
    if not len(cells):
        raise InputError("cannot fit the crop size: the reference plate has no cells. Fix: set "
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
        raise InputError(f"{path}: cell table lacks {', '.join(missing)}; it was not written by the "
                         "features stage. Fix: rerun the plate's paint_features and paint_plate jobs")
    for c in missing:  # a plate without cells has no feature columns at all: an empty crop set
        table[c] = pd.Series(dtype=float)
    return table


def crop_windows(image: np.ndarray, cy: np.ndarray, cx: np.ndarray,
                 size: int) -> tuple[list[np.ndarray], np.ndarray]:
    """The S x S windows of ``image`` (..., H, W) around many cells of one site, centred as documented
    (pixel (S // 2, S // 2) on the rounded centroid): views of ``image`` where the window lies inside it,
    zero-padded copies where it leaves it; and, per cell, whether its window needed padding."""
    h, w = image.shape[-2:]
    y0 = np.round(np.asarray(cy, float)).astype(np.int64) - size // 2
    x0 = np.round(np.asarray(cx, float)).astype(np.int64) - size // 2
    padded = (y0 < 0) | (x0 < 0) | (y0 + size > h) | (x0 + size > w)
    views = []
    for ya, xa, pad in zip(y0.tolist(), x0.tolist(), padded.tolist(), strict=True):
        if not pad:
            views.append(image[..., ya:ya + size, xa:xa + size])
            continue
        out = np.zeros((*image.shape[:-2], size, size), dtype=image.dtype)
        ra, rb, ca, cb = max(ya, 0), min(ya + size, h), max(xa, 0), min(xa + size, w)
        if ra < rb and ca < cb:
            out[..., ra - ya:rb - ya, ca - xa:cb - xa] = image[..., ra:rb, ca:cb]
        views.append(out)
    return views, padded


class _ChunkWriter:
    """Whole chunks of a new zarr v3 array (``bytes`` little-endian + one Blosc codec, as created in
    :func:`export_crops`) written as zarr writes them: the Blosc frame of the chunk's bytes under the
    array's chunk key. zarr 3.1's ``arr[a:b] = block`` spent about twice the compression itself in its
    async machinery per chunk; here each chunk is one Blosc call (single-threaded, as in zarr's own workers)
    and one file write, handed to one I/O thread so the next chunk is cut while the last is written (at most
    two in flight). Leaving the ``with`` block waits for the writes and reads the first rows back through
    zarr, so a zarr whose format differs fails the job instead of leaving an unreadable store."""

    def __init__(self, arr: Any) -> None:
        from concurrent.futures import ThreadPoolExecutor

        import numcodecs
        from zarr.codecs import BloscCodec, BytesCodec
        from zarr.storage import LocalStore

        serializer, compressors = arr.serializer, arr.compressors
        if not (isinstance(arr.store, LocalStore) and isinstance(serializer, BytesCodec)
                and str(serializer.endian.value) == "little" and len(compressors) == 1
                and isinstance(compressors[0], BloscCodec) and not arr.filters):
            raise TypeError("_ChunkWriter writes local zarr v3 arrays of bytes(little) + one Blosc codec")
        (b,) = compressors
        self.codec = numcodecs.Blosc(cname=b.cname.value, clevel=b.clevel,
                                     shuffle={"noshuffle": 0, "shuffle": 1, "bitshuffle": 2}[b.shuffle.value],
                                     blocksize=b.blocksize, typesize=b.typesize)
        self.arr, self.rows = arr, int(arr.chunks[0])
        self.dir = Path(arr.store.root) / arr.path
        self.dtype = np.dtype(arr.dtype).newbyteorder("<")
        self.first: np.ndarray | None = None
        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="crops-io")
        self.pending: list[Any] = []

    def write(self, index: int, block: np.ndarray) -> None:
        """Chunk ``index`` (along the first axis): ``block`` of up to one chunk's rows (a short last chunk
        is padded with the fill value, as zarr does); ``block`` may be reused once this returns."""
        import numcodecs.blosc

        if block.shape[0] == self.rows and block.dtype == self.dtype and block.flags.c_contiguous:
            full = block
        else:
            full = np.zeros((self.rows, *block.shape[1:]), self.dtype)
            full[:block.shape[0]] = block
        before, numcodecs.blosc.use_threads = numcodecs.blosc.use_threads, False
        try:
            frame = self.codec.encode(full)
        finally:
            numcodecs.blosc.use_threads = before
        if index == 0:
            self.first = block[:8].copy()
        key = self.dir / self.arr.metadata.encode_chunk_key((index,) + (0,) * (block.ndim - 1))
        while len(self.pending) >= 2:
            self.pending.pop(0).result()
        self.pending.append(self.pool.submit(self._put, key, frame))

    @staticmethod
    def _put(key: Path, frame: bytes) -> None:
        key.parent.mkdir(parents=True, exist_ok=True)
        write_through(key, frame)

    def __enter__(self) -> _ChunkWriter:
        return self

    def __exit__(self, kind: Any, *_: Any) -> None:
        """Wait for every write; on success raise the first write error and check that the first rows read
        back through zarr equal what was written, bit for bit (on failure the store is discarded anyway)."""
        try:
            for f in self.pending:
                if kind is None:
                    f.result()
                else:
                    f.exception()
        finally:
            self.pool.shutdown(wait=True)
        if kind is None and self.first is not None:
            import zarr

            back = np.asarray(self.arr[: len(self.first)])
            if not np.array_equal(back.view(np.uint8), self.first.view(np.uint8)):
                raise RuntimeError(f"{self.dir}: chunks written directly do not read back through zarr "
                                   f"{zarr.__version__}; this zarr's format differs")


def _mask_dirs(masks: Sequence[PathLike]) -> dict[str, Path]:
    """Well -> the chunk folder holding its masks."""
    out: dict[str, Path] = {}
    for m in masks:
        summary = read_site_summary(m)
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
    dtype = np.dtype(params["dtype"])
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
        arr = root.create_array("crops", shape=(n, len(names), size, size), dtype=dtype,
                                chunks=(max(1, min(block, n)), len(names), size, size), fill_value=0.0,
                                compressors=BloscCodec(cname="lz4", clevel=5, shuffle="bitshuffle"))
        root.attrs.update({"channels": names, "size": int(size), "plate": plate, "mask_channel": with_mask,
                           "dtype": dtype.name,
                           "row_order": "obs.parquet", "centre": "pixel (S//2, S//2) = rounded centroid",
                           "padding": "zeros outside the image (obs crop_padded)",
                           "intensity": "raw / dtype max / illumination function (as the features stage)"})
        buf = np.zeros((max(1, min(block, n)), len(names), size, size), dtype)
        with _ChunkWriter(arr) as writer:
            oid, cy, cx = (obs[c].to_numpy() for c in ("object_id", "centroid_y", "centroid_x"))
            padded, border, qc = np.zeros(n, bool), np.zeros(n, bool), np.zeros(n, bool)
            bbox = table[list(BBOX)].to_numpy(float) if all(c in table for c in BBOX) else None
            start = filled = 0
            for (well, site), rows in obs.groupby(["well", "site"], sort=False).indices.items():
                images = corrected_site(idx, well, int(site), channels, illum)
                images = to_float16(images) if dtype == np.float16 else images.astype(dtype, copy=False)
                cmask = tifffile.imread(mask_path(dirs[well], well, int(site), "cells"))
                h, w = cmask.shape
                windows, padded[rows] = crop_windows(images, cy[rows], cx[rows], size)
                if with_mask:   # each cell's own object in its window, all cells of the site at once
                    own = np.stack(crop_windows(cmask, cy[rows], cx[rows], size)[0]) == oid[rows, None, None]
                if bbox is not None:   # half-open box: maximum == size means the last pixel
                    b = bbox[rows]
                    border[rows] = (b[:, 0] <= 0) | (b[:, 1] <= 0) | (b[:, 2] >= w) | (b[:, 3] >= h)
                if site_flag is not None:
                    qc[rows] = bool(site_flag.get((well, int(site)), False))
                for k, r in enumerate(rows):
                    if r != start + filled:
                        raise AssertionError("crops must be written in obs row order")
                    buf[filled, :len(channels)] = windows[k]
                    if with_mask:   # 1 inside, 0 outside, without casting a boolean image
                        buf[filled, -1] = 0
                        np.copyto(buf[filled, -1], 1, where=own[k])
                    filled += 1
                    if filled == len(buf):
                        writer.write(start // len(buf), buf)
                        start, filled = start + filled, 0
            if filled:
                writer.write(start // len(buf), buf[:filled])
        obs["crop_padded"], obs["touches_border"], obs["site_qc_flag"] = padded, border, qc
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
