"""Cell Painting section, per plate: image counts, flagged and quarantined sites (``image_index``),
plate heatmaps (``image_index``, ``paint_wells``), the plate-position figures the quality stage stored
(``metrics.position``), illumination functions (``illum``), one segmentation overlay (``masks``).

A plate given as CellProfiler output (the datasheet's ``cellprofiler`` record, written by
paint_load_cellprofiler) has no image index, illumination functions or masks of ours: its section shows
where its measurements came from instead (format, files, source plate, metadata columns, object counts)
and the feature families and channels of ours the source lacks, next to its wells and cells.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pairedscreen.columns import COUNT_CELLS, WELL, metadata_columns
from pairedscreen.paths import path
from pairedscreen.plate import PLATE_SHAPE, well_rc
from pairedscreen.report.inputs import Inputs, dig, flag

DEFAULT_HEATMAP_FEATURE = "Cells_Intensity_MeanIntensity_AGP"
MAX_ILLUM_SIDE = 96
POSITION_KEYS = ("r2_row", "r2_col", "r2_edge", "edge_shift", "edge_p_value", "edge_q_value")


def plate_grid(wells: Iterable[str], values: Iterable[float]) -> np.ndarray:
    """Per-well values laid out on the plate (NaN where no well)."""
    grid = np.full(PLATE_SHAPE, np.nan)
    for w, v in zip(wells, values, strict=True):
        rc = well_rc(w)
        if rc is not None:
            grid[rc] = float(v) if v is not None and pd.notna(v) else np.nan
    return grid


def pick_feature(cols: Iterable[str]) -> str | None:
    cols = sorted(cols)
    if DEFAULT_HEATMAP_FEATURE in cols:
        return DEFAULT_HEATMAP_FEATURE
    return next((c for c in cols if c.startswith("Cells_Intensity_MeanIntensity_")), None)


def position_rows(metrics: Mapping[str, Any], plate: str) -> pd.DataFrame:
    """The quality stage's plate-position figures of one plate, before and after correction."""
    rows = []
    for stage in ("before", "after"):
        v = dig(metrics, "position", stage, "plates", plate)
        if isinstance(v, Mapping):
            rows.append({"profiles": stage, **{k: v.get(k) for k in POSITION_KEYS}})
    return pd.DataFrame(rows)


def _flagged(index: pd.DataFrame, plate: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    ok = index["status"].astype(str) == "ok"
    bad = index[flag(index["qc_flag"]) | ~ok]
    rows = []
    for (well, site), g in bad.groupby(["well", "site"], sort=True):
        why = [f"{r.channel}: quarantined: {r.reason}" if r.status != "ok" else f"{r.channel}: {r.qc_reason}"
               for r in g.itertuples()]
        rows.append({"plate": plate, "well": well, "site": site, "reasons": "; ".join(why)})
    flagged = pd.DataFrame(rows, columns=["plate", "well", "site", "reasons"])
    q = index[~ok]
    quarantined = pd.DataFrame({"plate": plate, "path": q["path"].astype(str),
                                "reason": q["reason"].astype(str)})
    return flagged, quarantined


def _objects(inputs: Inputs, plate: str) -> list[Path]:
    """``objects.parquet`` of every mask chunk of the plate (the chunk folders are the rule's inputs)."""
    masks = inputs.path("masks", plate=plate, chunk="*")
    found = sorted(f for f in masks.parent.glob(f"{masks.name}/objects.parquet")
                   if not f.parent.name.startswith("."))
    inputs.read.extend(f for f in found if f not in inputs.read)
    return found


def _overlay(inputs: Inputs, plate: str, index: pd.DataFrame | None, config: Mapping[str, Any]
             ) -> tuple[dict[str, Any] | None, str | None]:
    import tifffile

    objects = [(f.parent, pd.read_parquet(f, columns=["well", "site"])) for f in _objects(inputs, plate)]
    objects = [(c, o) for c, o in objects if len(o)]
    if not objects:
        masks = inputs.rel(inputs.path("masks", plate=plate, chunk="*"))
        return None, f"not available: no segmented object in {masks}"
    if index is None:
        return None, "not available: image index missing (raw images of the overlay)"
    # the busiest site of the first chunk with objects: a representative field
    chunk, obj = objects[0]
    (well, site), n = max(obj.groupby(["well", "site"]).size().items(), key=lambda kv: (kv[1], kv[0]))
    site = int(site)
    nuclei = tifffile.imread(chunk / f"{well}_s{site}_nuclei.tif")
    cell_path = chunk / f"{well}_s{site}_cells.tif"
    cells = tifffile.imread(cell_path) if cell_path.exists() else None
    seg = dig(config, "paint", "segmentation") or {}
    nuc_ch, cell_ch = str(dig(seg, "nuclei", "channel")), str(dig(seg, "cells", "channel"))
    ok = index[index["status"].astype(str) == "ok"]
    chans: dict[str, np.ndarray] = {}
    for ch in (nuc_ch, cell_ch):
        sel = ok[(ok["well"].astype(str) == well) & (ok["site"].astype(int) == site) &
                 (ok["channel"].astype(str) == ch)]
        if sel.empty:
            continue
        p = Path(str(sel["path"].iloc[0]))
        p = p if p.is_absolute() else inputs.workdir / p
        if p.exists():  # a raw input image, named (and checksummed) by the declared image index
            inputs.read.append(p)
            chans[ch] = tifffile.imread(p).astype(np.float32)
    if not chans:
        return None, f"not available: raw images of {plate} {well} s{site} missing"
    return {"well": well, "site": site, "nuclei": nuclei, "cells": cells, "images": chans,
            "nuclei_channel": nuc_ch, "cells_channel": cell_ch, "n_nuclei": int(len(np.unique(nuclei)) - 1),
            "n_cells": int(len(np.unique(cells)) - 1) if cells is not None else None}, None


def _listed(values: Any) -> str:
    """A recorded list as text; an empty list is ``none`` (shown, never a blank cell)."""
    return ", ".join(str(v) for v in values) if values else "none"


def cellprofiler_source(rec: Mapping[str, Any]) -> list[tuple[str, Any]]:
    """The source of a CellProfiler plate as (item, value) rows, from its ``cellprofiler.json`` record (as
    the datasheet copies it): what was read, which plate of it, how wells and sites were found, how many
    objects each compartment had and how many joined into cells, and what of ours it lacks."""
    check = rec.get("feature_check") or {}
    objects = rec.get("objects") or {}
    rows: list[tuple[str, Any]] = [
        ("format", f"{rec.get('format_name') or rec.get('format')} ({rec.get('format')})"),
        ("source", rec.get("source")),
        *((f"file sha256: {f}", h) for f, h in (rec.get("files") or {}).items()),
        ("source plate", f"{rec.get('source_plate')} (column {rec.get('plate_column')})"
         if rec.get("plate_column") else "the whole source (no plate column)"),
        ("plates in the source", _listed(rec.get("source_plates"))),
        ("well from", rec.get("well_column")), ("site from", rec.get("site_column")),
        ("images of the plate", rec.get("images")),
        *((f"objects: {k}", v) for k, v in objects.items()),
        ("cells (one per cytoplasm with its cell and nucleus)", rec.get("cells")),
        ("features read", rec.get("features")),
        ("feature families of ours missing", _listed(check.get("families_missing"))),
        ("channels of ours missing", _listed(check.get("channels_missing"))),
        ("channels in the source", _listed(check.get("channels_in_source"))),
        ("text feature columns made numeric", _listed(rec.get("text_features_coerced"))),
        ("training crops", rec.get("training_crops")),
    ]
    return [(k, v) for k, v in rows if v is not None]


def _wells_part(inputs: Inputs, plate: str, d: dict[str, Any], notes: list[str]) -> None:
    """Cells-per-well and one intensity feature on the plate (``paint_wells``)."""
    d["feature"] = None
    p = inputs.get("paint_wells", notes, plate=plate)
    if p is not None:
        wells = pd.read_parquet(p)
        d["heatmaps"] = {"cells per well": plate_grid(wells[WELL], wells[COUNT_CELLS]), **d["heatmaps"]}
        d["counts"]["wells_without_cells"] = int((wells[COUNT_CELLS] == 0).sum())
        meta = set(metadata_columns(wells))
        d["feature"] = pick_feature(c for c in wells.columns if c not in meta)
        if d["feature"] is not None:
            d["heatmaps"][d["feature"]] = plate_grid(wells[WELL], wells[d["feature"]])
        else:
            notes.append(f"not available: no intensity feature in {inputs.rel(p)} (no cells measured?)")


def collect_cellprofiler_plate(inputs: Inputs, plate: str, record: Mapping[str, Any],
                               metrics: Mapping[str, Any]) -> dict[str, Any]:
    """A plate given as CellProfiler output: its source (:func:`cellprofiler_source`), wells, cells and
    plate-position figures; no image, illumination or segmentation part (it has none of ours)."""
    import pyarrow.parquet as pq

    notes: list[str] = []
    d: dict[str, Any] = {"notes": notes, "counts": {}, "heatmaps": {}, "source": cellprofiler_source(record)}
    objects = record.get("objects") or {}
    d["counts"].update({f"source_{k}": v for k, v in objects.items()})
    _wells_part(inputs, plate, d, notes)
    d["position"] = position_rows(metrics, plate)
    p = inputs.get("paint_cells", notes, plate=plate)
    if p is not None:
        d["counts"]["cells"] = int(pq.ParquetFile(p).metadata.num_rows)
    return d


def collect_plate(inputs: Inputs, plate: str, config: Mapping[str, Any], metrics: Mapping[str, Any]
                  ) -> dict[str, Any]:
    import pyarrow.parquet as pq

    notes: list[str] = []
    d: dict[str, Any] = {"notes": notes, "counts": {}, "heatmaps": {}}
    index = None
    p = inputs.get("image_index", notes, plate=plate)
    if p is not None:
        index = pd.read_parquet(p)
        ok = index["status"].astype(str) == "ok"
        sites = index[["well", "site"]].drop_duplicates()
        d["flagged_sites"], d["quarantined"] = _flagged(index, plate)
        d["flagged_rc"] = sorted({rc for rc in map(well_rc, d["flagged_sites"]["well"]) if rc is not None})
        d["counts"].update(images=int(len(index)), images_quarantined=int((~ok).sum()), sites=int(len(sites)),
                           sites_pass_qc=int(len(sites)) - int(len(d["flagged_sites"])))
        per_well = index[ok].groupby("well")
        s = per_well["focus_plls"].mean()
        d["heatmaps"]["focus (PLLS, mean over sites and channels)"] = plate_grid(s.index, s.to_numpy())
        s = per_well["saturation_pct"].max()
        d["heatmaps"]["saturation % (max over sites and channels)"] = plate_grid(s.index, s.to_numpy())
    _wells_part(inputs, plate, d, notes)
    d["position"] = position_rows(metrics, plate)

    illum_dir = inputs.get("illum", notes, plate=plate)
    chan_order = list((dig(config, "paint", "channels") or {}).keys())
    files = sorted(illum_dir.glob("*.npy"), key=lambda f: (chan_order.index(f.stem) if f.stem in chan_order
                                                           else len(chan_order), f.stem)) if illum_dir else []
    if files:
        d["illum"] = {}
        for f in files:
            a = np.load(f)
            step = max(1, int(np.ceil(max(a.shape) / MAX_ILLUM_SIDE)))
            d["illum"][f.stem] = {"image": np.asarray(a[::step, ::step], float), "min": float(a.min()),
                                  "max": float(a.max()), "mean": float(a.mean()), "shape": tuple(a.shape)}
    objects = _objects(inputs, plate)
    if objects:
        d["counts"]["objects"] = int(sum(pq.ParquetFile(o).metadata.num_rows for o in objects))
    p = inputs.get("paint_cells", notes, plate=plate)
    if p is not None:
        d["counts"]["cells"] = int(pq.ParquetFile(p).metadata.num_rows)
    d["overlay"], note = _overlay(inputs, plate, index, config)
    if note:
        notes.append(note)
    return d


def collect_paint(inputs: Inputs, plates: list[str], config: Mapping[str, Any], metrics: Mapping[str, Any],
                  cellprofiler: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Every plate's part; ``cellprofiler``: the datasheet's records of the plates given as CellProfiler
    output ({plate: record})."""
    cellprofiler = cellprofiler or {}
    notes = [] if plates else [f"not available: no plate in {path('datasheet')} (counts.pair.plates)"]
    return {"plates": {p: collect_cellprofiler_plate(inputs, p, cellprofiler[p], metrics)
                       if isinstance(cellprofiler.get(p), Mapping)
                       else collect_plate(inputs, p, config, metrics) for p in plates}, "notes": notes}
