"""Paint-arm workflow steps: each is one Snakemake rule's work, files in and files out.

The rules' scripts (``workflow/scripts/paint_*.py``, ``profiles.py``) only unpack ``snakemake`` and call
these.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pairedscreen import columns as C
from pairedscreen import quarantine
from pairedscreen.io import atomic_output, sha256sum, write_json, write_parquet, write_tsv
from pairedscreen.paint.aggregate import assemble_cells, plate_wells, stream_plate
from pairedscreen.paint.illumination import compute_plate_illumination, load_illumination, save_illumination
from pairedscreen.paint.image_qc import add_image_qc
from pairedscreen.paint.ingest import build_image_index, load_site, site_usable
from pairedscreen.paint.profiles import read_wells
from pairedscreen.paint.screen_profiles import write_profiles
from pairedscreen.paint.segment import read_site_summary
from pairedscreen.sheets import read_plate_map, read_registry

log = logging.getLogger(__name__)
PathLike = str | os.PathLike


def channel_order(index: pd.DataFrame) -> list[str]:
    """Channel names in the configured channel-map order (the image index's ``channel_index``)."""
    return list(dict.fromkeys(index.sort_values("channel_index")["channel"]))


def run_paint_index(plate: str, image_dir: PathLike, plate_map: PathLike, pattern: str,
                    channels: Mapping[str, Any], on_bad_image: str, qc: Mapping[str, Any],
                    out: PathLike) -> pd.DataFrame:
    """Image index of one plate (every file, shape, dtype, checksum; quarantines) with per-image QC."""
    wells = list(read_plate_map(plate_map)["well"])
    index = build_image_index(plate, image_dir, pattern, channels, wells=wells,
                              on_bad_image=on_bad_image)  # type: ignore[arg-type]
    index = add_image_qc(index, max_saturation_pct=qc["max_saturation_pct"],
                         min_focus_plls=qc["min_focus_plls"], max_focus_plls=qc["max_focus_plls"],
                         min_signal_to_noise=qc["min_signal_to_noise"])
    log.info("plate %s: %d images, %d quarantined, %d flagged by QC", plate, len(index),
             int((index["status"] != "ok").sum()), int(index["qc_flag"].sum()))
    write_parquet(index, out)
    return index


def run_paint_illum(index: PathLike, out_dir: PathLike, params: Mapping[str, Any]) -> None:
    """Illumination function per channel of one plate, streamed over its sites; saved as .npy + PNG."""
    idx = pd.read_parquet(index)
    if not (idx["status"] == "ok").any():
        # every site quarantined (reachable only with paint.on_bad_image: quarantine; a plate whose sites
        # are merely QC-flagged still stops in compute_plate_illumination, naming the flags and the fix):
        # the folder holds only status.json, segmentation and features find no usable site, and the
        # profiles step applies on_empty to the plate
        plate = str(idx["plate"].iloc[0]) if len(idx) else ""
        log.warning("plate %s: every site is quarantined; no illumination function", plate)
        with atomic_output(out_dir, is_dir=True) as tmp:
            write_json({"plate": plate, "status": "no usable site", "sites": int(
                idx.groupby(["well", "site"]).ngroups) if len(idx) else 0}, tmp / "status.json")
        return
    sigma = float(params["smoothing_sigma"])
    funcs = compute_plate_illumination(idx, smoothing_sigma=sigma, channels=channel_order(idx))
    with atomic_output(out_dir, is_dir=True) as tmp:
        save_illumination(funcs, tmp, png=Path(tmp) / "illum.png")


def run_paint_segment(index: PathLike, illum_dir: PathLike, wells: list[str], segmentation: Mapping[str, Any],
                      models: Mapping[str, str], out_dir: PathLike, threads: int = 1) -> pd.DataFrame:
    """Cellpose nuclei + cells for the usable sites of ``wells`` (batched); masks, ``objects.parquet`` and
    ``summary.tsv`` (per site, quarantined sites included) in ``out_dir``. Models are the resolved paths or
    names from the config."""
    import torch

    from pairedscreen.paint import segment

    torch.set_num_threads(max(1, int(threads)))
    cfg = {k: (dict(v) if isinstance(v, Mapping) else v) for k, v in segmentation.items()}
    for comp in ("nuclei", "cells"):
        cfg[comp]["model"] = models[comp]
    objects, summary = segment.segment_chunk(pd.read_parquet(index), out_dir, cfg, illum_dir=illum_dir,
                                             wells=wells)
    log.info("%d sites segmented, %d cells, %d nuclei without a cell", int((summary["status"] == "ok").sum()),
             int(summary["n_cells"].sum()), int(summary["n_nuclei_dropped"].sum()))
    return objects



def corrected_site_scaled(idx: pd.DataFrame, well: str, site: int, channels: list[str],
                          illum: np.ndarray) -> tuple[np.ndarray, float]:
    """(a site as CellProfiler measures it, its scale): integer images scaled to [0, 1] by their
    dtype's range (uint16 / 65535), then divided by the plate's illumination function; the scale is
    that range (CellProfiler's image scale, which illumination correction keeps; 1 for float files)."""
    raw = load_site(idx, well, site, channels)
    return _corrected(raw, illum)


def _corrected(raw: np.ndarray, illum: np.ndarray) -> tuple[np.ndarray, float]:
    scale = float(np.iinfo(raw.dtype).max) if raw.dtype.kind in "ui" else 1.0
    return (raw.astype(np.float32) / np.float32(scale)) / illum, scale


def corrected_site(idx: pd.DataFrame, well: str, site: int, channels: list[str],
                   illum: np.ndarray) -> np.ndarray:
    """The corrected site of :func:`corrected_site_scaled` without its scale."""
    return corrected_site_scaled(idx, well, site, channels, illum)[0]


def run_paint_features(index: PathLike, illum_dir: PathLike, masks_dir: PathLike, plate: str,
                       params: Mapping[str, Any], out: PathLike,
                       images_out: PathLike | None = None) -> pd.DataFrame:
    """Per-object features of every segmented site in a chunk: one row per cell (object id shared by the
    Nuclei, Cells and Cytoplasm compartments). With ``images_out`` (``paint.features.preset: jump``), also
    the JUMP per-site ``Image_*`` table of the chunk's segmented sites
    (:func:`pairedscreen.paint.features.image.measure_image`), one row per site, measured from the same
    loaded images right after the site's objects (the granularity spectra are shared)."""
    from pairedscreen.paint.features import feature_params, measure_site
    from pairedscreen.paint.segment import read_site_masks

    idx = pd.read_parquet(index)
    channels = channel_order(idx)
    sites = read_site_summary(masks_dir)
    sites = sites[sites["status"] == "ok"]
    illum = load_illumination(illum_dir, channels) if len(sites) else None
    tables = []
    image_rows: list[dict[str, Any]] = []
    resolved = feature_params(params) if images_out is not None else None
    for well, site in zip(sites["well"], sites["site"], strict=True):
        nuclei, cells, cytoplasm = read_site_masks(masks_dir, well, int(site))
        if cells.max() == 0 and resolved is None:
            continue
        raw = load_site(idx, well, int(site), channels)
        images, scale = _corrected(raw, illum)
        df = None
        if cells.max():
            df = measure_site(images, channels, nuclei, cells, cytoplasm, params, scale=scale)
        if resolved is not None:  # after the objects: the granularity spectra are cached by then
            image_rows.append(_image_row(plate, well, int(site), raw, images, scale, channels, cells,
                                         resolved, _site_plls(idx, well, int(site))))
        if df is None:
            continue
        if "costes_scale" in df.attrs:
            log.info("%s site %s: Costes thresholds on the 1/%g grid (original dtype range)", well, site,
                     df.attrs["costes_scale"])
        df = df.rename(columns={"object_id": C.OBJECT_NUMBER})
        df.insert(0, C.WELL, well)
        df.insert(1, C.SITE, int(site))
        tables.append(df)
    table = pd.concat(tables, ignore_index=True) if tables else pd.DataFrame(
        columns=[C.WELL, C.SITE, C.OBJECT_NUMBER])
    table.insert(0, C.PLATE, plate)
    if images_out is not None:
        write_parquet(image_table(image_rows, resolved), images_out)
    write_parquet(table, out)
    return table


def _site_plls(idx: pd.DataFrame, well: str, site: int) -> dict[str, float]:
    """The image index's PowerLogLogSlope (``focus_plls``) of each channel of a site."""
    rows = idx[(idx["well"] == well) & (idx["site"] == site)]
    return dict(zip(rows["channel"].astype(str), rows["focus_plls"].astype(float), strict=True))


def _image_row(plate: str, well: str, site: int, raw: np.ndarray, corrected: np.ndarray, scale: float,
               channels: list[str], cells: np.ndarray, params: Mapping[str, Any],
               plls: Mapping[str, float]) -> dict[str, Any]:
    """One site's row of the JUMP ``Image_*`` table: its metadata, then the 1,089 values (the
    PowerLogLogSlope columns from the image index, where paint_index computed them)."""
    from pairedscreen.paint.features.image import measure_image

    orig = raw.astype(np.float64) / scale
    values = measure_image(orig, corrected, channels, cells, scale, params, plls=plls)
    return {C.PLATE: plate, C.WELL: well, C.SITE: site, **values}


def image_table(rows: Sequence[Mapping[str, Any]], params: Mapping[str, Any]) -> pd.DataFrame:
    """The per-site ``Image_*`` table: ``Metadata_Plate``/``Well``/``Site`` then the JUMP columns the
    resolved ``paint.features`` ``params`` make (all 1,089 with the preset's settings) in the list's
    order, float64; an empty chunk gives the columns with no rows."""
    from pairedscreen.paint.features.image import made_columns

    cols = [C.PLATE, C.WELL, C.SITE, *made_columns(params)]
    df = pd.DataFrame(list(rows), columns=cols)
    df[C.SITE] = df[C.SITE].astype(np.int64)
    for c in cols[3:]:
        df[c] = df[c].astype(np.float64)
    return df


def run_paint_images(chunks: Sequence[PathLike], out: PathLike) -> pd.DataFrame:
    """A plate's per-site JUMP ``Image_*`` table: its chunks' tables concatenated (sorted by well, site).
    Memory: one plate's sites (1,089 floats each)."""
    tables = [pd.read_parquet(p) for p in chunks]
    if not tables:
        raise ValueError("a plate's Image_* table needs at least one chunk table")
    table = pd.concat(tables, ignore_index=True) if len(tables) > 1 else tables[0]
    table = table.sort_values([C.WELL, C.SITE], kind="stable", ignore_index=True)
    write_parquet(table, out)
    return table


def run_paint_plate(features: list[PathLike], masks: list[PathLike], index: PathLike, plate_map: PathLike,
                    plate: str, batch: str, aggregate: str, cells_out: PathLike, wells_out: PathLike) -> None:
    """Per-plate cell table (plate-map metadata attached) and per-well aggregates; every plate-map well is
    kept, with its site and object counts, so nothing disappears silently. The cell table is streamed
    chunk by chunk (:func:`~pairedscreen.paint.aggregate.stream_plate`): memory is one chunk's cells."""
    pm = read_plate_map(plate_map)
    wells = stream_plate(features, pm, plate, batch, cells_out, how=aggregate)
    idx = pd.read_parquet(index)
    site_status = site_usable(idx).sort_index()  # segmented: neither quarantined nor QC-flagged
    qc = idx.groupby(["well", "site"])["qc_flag"].any()
    per_well = pd.DataFrame({"usable": site_status, "qc_flag": qc}).reset_index().groupby("well").agg(
        Metadata_Count_Sites=("site", "size"), Metadata_Count_SitesUsable=("usable", "sum"),
        Metadata_Count_SitesFlagged=("qc_flag", "sum"))
    seg = pd.concat([read_site_summary(m) for m in masks], ignore_index=True)
    seg_well = seg.groupby("well")[["n_nuclei_dropped", "n_cells_without_nucleus"]].sum().rename(
        columns={"n_nuclei_dropped": "Metadata_Count_NucleiUnmatched",
                 "n_cells_without_nucleus": "Metadata_Count_CellsWithoutNucleus"})
    extra = per_well.join(seg_well, how="left").fillna(0).astype(np.int64)
    wells = wells.merge(extra, left_on=C.WELL, right_index=True, how="left")
    for col in extra.columns:
        wells[col] = wells[col].fillna(0).astype(np.int64)
    meta = [c for c in wells.columns if c.startswith("Metadata_")]
    wells = wells[meta + [c for c in wells.columns if c not in meta]]
    write_parquet(wells, wells_out)


def run_paint_load_cellprofiler(source: PathLike, source_plate: str | None, plate_map: PathLike, plate: str,
                                batch: str, *, metadata: Mapping[str, Any], families: Sequence[str],
                                channels: Sequence[str], aggregate: str, cells_out: PathLike,
                                wells_out: PathLike, record_out: PathLike) -> dict[str, Any]:
    """A plate given as CellProfiler output (plates.tsv ``cellprofiler``) -> the same ``cells.parquet`` and
    ``wells.parquet`` as :func:`run_paint_plate` writes for an image plate (plate-map metadata attached,
    every plate-map well kept, the same well aggregator), and ``cellprofiler.json``: the source (path,
    sha256, format), the metadata columns used, object counts, and the feature families and channels of
    ours the source lacks (:func:`~pairedscreen.paint.cellprofiler.feature_check`). ``metadata``: the
    resolved ``paint.cellprofiler`` block. Memory: one plate's cells."""
    from pairedscreen.paint import cellprofiler as cp

    cells, record = cp.read_cellprofiler(source, plate_columns=metadata["plate_columns"],
                                         well_columns=metadata["well_columns"],
                                         site_columns=metadata["site_columns"],
                                         filename_regex=metadata["filename_regex"], source_plate=source_plate)
    pm = read_plate_map(plate_map)
    feats = C.feature_columns(cells)
    check = cp.feature_check(feats, families=families, channels=channels)
    table = assemble_cells([cells], pm, plate, batch)
    wells = plate_wells(table, pm, plate, batch, how=aggregate)
    site_counts = cells.groupby(C.WELL)[C.SITE].nunique()
    wells["Metadata_Count_Sites"] = wells[C.WELL].map(site_counts).fillna(0).astype(np.int64)
    meta = [c for c in wells.columns if c.startswith("Metadata_")]
    wells = wells[meta + [c for c in wells.columns if c not in meta]]
    src = Path(source)
    files = sorted(f for f in src.iterdir() if f.suffix == ".csv") if src.is_dir() else [src]
    record = {"plate": plate, "source": str(source), "files": {str(f): sha256sum(f) for f in files},
              **record, **cp.well_object_counts(record), "cells": len(table),
              "wells_with_cells": int((wells[C.COUNT_CELLS] > 0).sum()), "wells": len(wells),
              "feature_check": check, "training_crops": "none: a CellProfiler plate has no images to crop"}
    log.info("plate %s from CellProfiler %s (%s): %d cells, %d features; families missing vs ours: %s; "
             "channels missing: %s", plate, source, record["format"], len(table), len(feats),
             check["families_missing"] or "none", check["channels_missing"] or "none")
    write_parquet(table, cells_out)
    write_parquet(wells, wells_out)
    write_json(record, record_out)
    return record


# ------------------------------------------------------------------------------------------- profiles
def usable_plates(wells: Sequence[PathLike], registry: pd.DataFrame,
                  on_empty: str) -> tuple[list[PathLike], pd.DataFrame]:
    """Per-plate ``wells.parquet`` -> (the usable plates' files, quarantine table), reading one plate at a
    time. A plate with every site quarantined, no cell, or every feature NA is an
    :class:`~pairedscreen.quarantine.EmptyDataError` under ``on_empty: error`` and left out (recorded)
    under ``quarantine``."""
    if not wells:
        raise quarantine.EmptyDataError("no plates to profile: config/plates.tsv has no rows")
    usable, records = [], []
    for p in wells:
        w = read_wells([p], registry)
        plate = str(w[C.PLATE].iloc[0]) if len(w) else Path(p).parent.name
        problem = quarantine.plate_problem(w, plate, C.feature_columns(w))
        del w
        if problem:
            records.append(problem)
        else:
            usable.append(p)
    held = quarantine.decide(records, [Path(p).parent.name for p in wells], on_empty, arm="paint",
                             unit="plate")
    for r in records:
        log.warning("plate %s quarantined: %s", r["id"], r["reason"])
    return usable, held


def run_profiles(wells: Sequence[PathLike], registry: PathLike, params: Mapping[str, Any],
                 profiles_out: PathLike, consensus_out: PathLike, quarantine_out: PathLike | None = None,
                 *, on_empty: str) -> dict[str, Any]:
    """Per-plate ``wells.parquet`` -> ``profiles.parquet`` (normalised, selected well profiles) and
    ``consensus.parquet`` (per perturbation), per the ``profiles:`` config block (``aggregate`` was
    applied by the paint arm when it wrote wells.parquet; from per-cell tables use
    :func:`pairedscreen.paint.profiles.build_profiles` with ``plate_files``). ``params`` is the resolved
    ``profiles:`` block (:func:`pairedscreen.config.load_config`), every key present. Unusable plates are
    handled by :func:`usable_plates` (``quarantine_out``: ``results/paint/quarantine.tsv``); feature
    selection that removes every feature is an error naming what removed them. The screen is streamed
    (:func:`pairedscreen.paint.screen_profiles.write_profiles`: one plate or one column block in memory);
    returns the logged info."""
    reg = read_registry(registry)
    plates, held = usable_plates(wells, reg, on_empty)

    def check(info: dict[str, Any], plate_ids: list[str]) -> None:
        log.info("profiles: %s", json.dumps(info, default=str))
        sel = info.get("feature_selection", {})
        if sel.get("n_features_out"):
            return
        removed = ", ".join(f"{op}: {n}" for op, n in (sel.get("removed") or {}).items() if n)
        raise quarantine.EmptyDataError(
            f"feature selection removed every one of the {info.get('n_features_measured')} measured "
            f"features of plates {plate_ids} ({removed or 'none kept'}). "
            "Fix: check results/paint/{plate}/wells.parquet for NA or constant features, and relax "
            "profiles.feature_select (e.g. drop drop_na_columns or variance_threshold)")

    info = write_profiles(plates, profiles_out, consensus_out, registry=reg,
                          normalize=params["normalize"],
                          feature_select=list(params["feature_select"]),
                          outlier_cutoff=float(params["outlier_cutoff"]),
                          position_correction=bool(params["position_correction"]),
                          blocklist=params["blocklist"], check=check,
                          correct=list(params["correct"]), correct_params=params)
    for rec in info.get("correction", []):
        log.info("profiles.correct %s: %s", rec["step"], json.dumps(rec, default=str))
    if quarantine_out is not None:
        write_tsv(held, quarantine_out)
    return info
