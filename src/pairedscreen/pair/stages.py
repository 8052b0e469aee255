"""File-level stages of the pair and datasheet rules (``run_pair``, ``run_datasheet``: workflow/scripts/
{pair,datasheet}.py): read the arms' and quality's outputs, call the pure functions, write through
``atomic_output``. (The profiles stage is :func:`pairedscreen.paint.stages.run_profiles`, the quality stage
:func:`pairedscreen.quality.stage.run_quality`.)

Paths follow ARCHITECTURE.md / :mod:`pairedscreen.paths`.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import anndata as ad
import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from pairedscreen import columns as C
from pairedscreen import quarantine
from pairedscreen.expression import usable_cells
from pairedscreen.io import atomic_output, jsonable, repo_root, write_json
from pairedscreen.paint.correct import read_records
from pairedscreen.paint.profiles import harmonize_metadata
from pairedscreen.pair import datasheet as ds
from pairedscreen.pair import join
from pairedscreen.sheets import read_registry

log = logging.getLogger("pairedscreen.pair")
PathLike = str | os.PathLike


# ---------------------------------------------------------------------------------------------- pair
def _paint_cell_meta(path: PathLike) -> pd.DataFrame:
    names = [n for n in pq.read_schema(path).names if n.startswith("Metadata_")]
    return pq.read_table(path, columns=names).to_pandas()


RNA_INDEX_COLUMNS = ["modality", "cell_id", "perturbation", "library", "batch", "used"]
PAINT_INDEX_COLUMNS = ["modality", "cell_id", "perturbation", "plate", "well", "site", "batch", "used"]
INDEX_BLOCK = 1 << 17


def _rna_cell_index(rna_cells: PathLike, reg: pd.DataFrame) -> Iterator[pd.DataFrame]:
    """The RNA rows of ``cell_index.tsv``, a block of cells at a time (obs columns read with h5py: never
    the whole screen's obs)."""
    import h5py
    from anndata.io import read_elem

    ids = reg["perturbation_id"].astype(str).tolist()
    with h5py.File(rna_cells, "r") as f:
        obs = f["obs"]
        names = obs[obs.attrs["_index"]]
        n = names.shape[0]

        def column(name: str, s: int, e: int) -> np.ndarray | None:
            if name not in obs:
                return None
            g = obs[name]
            if isinstance(g, h5py.Group) and g.attrs.get("encoding-type") == "categorical":
                cats = np.asarray(read_elem(g["categories"]), dtype=object)
                codes = g["codes"][s:e]
                return np.where(codes >= 0, cats[np.maximum(codes, 0)], np.nan)
            if isinstance(g, h5py.Group):
                return np.asarray(read_elem(g))[s:e]
            return g.asstr()[s:e] if h5py.check_string_dtype(g.dtype) else g[s:e]

        for s in range(0, n, INDEX_BLOCK):
            e = min(n, s + INDEX_BLOCK)
            cols = {c: column(c, s, e) for c in ("perturbation", "library", "batch", "pass_qc",
                                                 "predicted_doublet")}
            block = pd.DataFrame({c: v for c, v in cols.items() if v is not None},
                                 index=pd.Index(names.asstr()[s:e]))
            used = usable_cells(ad.AnnData(obs=block), categories=ids)
            yield pd.DataFrame({"modality": "rna", "cell_id": block.index.astype(str),
                                "perturbation": block["perturbation"].astype(str).to_numpy(),
                                **{c: block[c].astype(str).to_numpy() if c in block else ""
                                   for c in ("library", "batch")},
                                "used": used})


def write_cell_index(rna_cells: PathLike | None, paint_cells: Sequence[PathLike], reg: pd.DataFrame,
                     out: PathLike) -> int:
    """``cell_index.tsv`` written part by part (the RNA cells a block at a time, then each plate's cells):
    the same bytes as one concatenated table, memory bounded by a block or a plate. Returns the rows."""
    ctrl = set(reg.loc[reg["is_control"], "perturbation_id"].astype(str))
    columns = (RNA_INDEX_COLUMNS if rna_cells is not None else []) + \
        [c for c in (PAINT_INDEX_COLUMNS if paint_cells else []) if c not in (
            RNA_INDEX_COLUMNS if rna_cells is not None else [])]
    if not columns:
        columns = ["modality", "cell_id", "perturbation", "used"]
    columns.insert(3, "is_control")

    def parts() -> Iterator[pd.DataFrame]:
        if rna_cells is not None:
            yield from _rna_cell_index(rna_cells, reg)
        for p in paint_cells:
            part = _paint_cell_index(p)
            if rna_cells is not None:           # as concatenated with the RNA rows, which have no site
                part["site"] = part["site"].astype(np.float64)
            yield part

    rows = 0
    with atomic_output(out) as tmp, open(tmp, "w", newline="") as fh:
        pd.DataFrame(columns=columns).to_csv(fh, sep="\t", index=False)
        for part in parts():
            part.insert(3, "is_control", part["perturbation"].isin(ctrl))
            part.reindex(columns=columns).to_csv(fh, sep="\t", index=False, header=False)
            rows += len(part)
    return rows


def _paint_cell_index(path: PathLike) -> pd.DataFrame:
    m = _paint_cell_meta(path)
    return pd.DataFrame({
        "modality": "paint",
        "cell_id": (m[C.PLATE].astype(str) + "_" + m[C.WELL].astype(str) + "_s"
                    + m[C.SITE].astype(str) + "_" + m[C.OBJECT_NUMBER].astype(str)).to_numpy(),
        "perturbation": m[C.PERT].astype(str).to_numpy(),
        "plate": m[C.PLATE].astype(str).to_numpy(),
        "well": m[C.WELL].astype(str).to_numpy(), "site": m[C.SITE].to_numpy(),
        "batch": m[C.BATCH].astype(str).to_numpy() if C.BATCH in m else "", "used": True})


def run_pair(pseudobulk: PathLike | None, consensus: PathLike | None, quality_table: PathLike,
             registry: PathLike, rna_cells: PathLike | None, paint_cells: Sequence[PathLike],
             h5mu_out: PathLike, rna_out: PathLike | None, paint_out: PathLike | None,
             cell_index_out: PathLike, cells_out: PathLike | None = None,
             paint_quarantine: PathLike | None = None, splits: PathLike | None = None,
             holdout: PathLike | None = None, de: PathLike | None = None,
             de_summary: PathLike | None = None) -> None:
    """``perturbations.h5mu`` + ``rna.h5ad`` + ``paint.h5ad`` (registry order; quality table columns in
    global obs), ``cell_index.tsv`` (every cell of both arms: modality, cell_id, perturbation, is_control,
    library/plate/well/site, used = behind the pseudobulk or a profiled well) and, when asked,
    ``cells.h5mu``. ``splits`` (results/train/splits.tsv) adds the training split as global obs
    ``split``; ``holdout`` (batch_holdout.tsv) goes to ``uns['batch_holdout']`` (batch_split is per cell).
    ``de`` / ``de_summary`` (results/rna/de.parquet, de_summary.tsv) add the RNA modality's DE layers
    (``de_log2fc``, ``de_qvalue``) and the per-perturbation DE summary columns (``de_*``).

    An arm given as None (no libraries / no plates in the sheets yet) is an empty modality (every
    perturbation NaN, no variables) and ``uns['arms']`` says it is missing; its ``{arm}.h5ad`` is not
    written. Plates quarantined in ``paint_quarantine`` are left out of the cell tables."""
    reg = read_registry(registry)
    paint_cells = quarantine.usable_files(paint_cells, quarantine.read_table(paint_quarantine))
    arms = {"rna": "present" if pseudobulk is not None else "missing",
            "paint": "present" if consensus is not None else "missing"}
    qc = pd.read_csv(quality_table, sep="\t").set_index("perturbation_id")
    uns: dict[str, Any] = {"arms": arms}
    if splits is not None:
        qc = qc.join(pd.read_csv(splits, sep="\t", dtype={"perturbation_id": str, "split": str})
                     .set_index("perturbation_id")[["split"]], how="left")
    if holdout is not None:
        hold = pd.read_csv(holdout, sep="\t", dtype=str, keep_default_na=False)
        uns["batch_holdout"] = {c: hold[c].to_numpy(dtype=str) for c in hold.columns}
    rna = ad.read_h5ad(pseudobulk) if pseudobulk is not None else None
    de_table = pd.read_csv(de_summary, sep="\t", keep_default_na=False, na_values=[""]) \
        if de_summary is not None else None
    layers = None
    if de is not None and rna is not None:
        ids = pd.Index(reg["perturbation_id"].astype(str))
        layers = join.de_layers(de, ids, pd.Index(rna.var_names.astype(str)))
    mdata = join.build_perturbations(reg, rna=rna,
                                     paint=pd.read_parquet(consensus) if consensus is not None else None,
                                     qc=qc, uns=uns, de=de_table, de_layers=layers)
    join.write_paired(mdata, h5mu_out, rna_out if arms["rna"] == "present" else None,
                      paint_out if arms["paint"] == "present" else None)

    write_cell_index(rna_cells, paint_cells, reg, cell_index_out)
    if cells_out is not None:   # only for screens under pair.cells_h5mu's size (the whole screen in memory)
        cells = ad.read_h5ad(rna_cells) if rna_cells is not None else None
        if cells is None or not paint_cells:
            raise ValueError("cells.h5mu needs both arms (the workflow asks for it only then)")
        tables = [harmonize_metadata(pd.read_parquet(p), reg) for p in paint_cells]
        painted = join.paint_cells_anndata(pd.concat(tables, ignore_index=True, sort=False).rename(columns={
            C.PLATE: "plate", C.WELL: "well", C.SITE: "site", C.OBJECT_NUMBER: "object_id"}))
        join.write_cells(join.build_cells(cells, painted), cells_out)


# ----------------------------------------------------------------------------------------- datasheet
def _get(inputs: Any, name: str) -> list[str]:
    v = getattr(inputs, name, None) if not isinstance(inputs, Mapping) else inputs.get(name)
    if v is None:
        return []
    return [str(v)] if isinstance(v, str | os.PathLike) else [str(x) for x in v]


def _h5_obs_sum(path: PathLike, column: str, mod: str | None = None) -> int:
    """Sum of an integer obs column of an h5ad (or of modality ``mod`` of an h5mu), read with h5py."""
    import h5py

    with h5py.File(path, "r") as f:
        grp = f[f"mod/{mod}/obs" if mod else "obs"]
        return int(np.nansum(np.asarray(grp[column][()], dtype=np.float64))) if column in grp else 0


def _ledger(inputs: Any, libraries: Sequence[str], plates: Sequence[str],
            chunks: Mapping[str, Sequence[str]] | None, rna_ledgers: Sequence[dict],
            cellprofiler_plates: Sequence[str] = ()) -> dict | None:
    """The datasheet's ledger; ``rna_ledgers``: each library's, in ``libraries`` order. ``image_index`` and
    the chunks are the image plates' (``plates`` less ``cellprofiler_plates``, in order); a CellProfiler
    plate's ledger starts from its source record (``cellprofiler``, in ``cellprofiler_plates`` order)."""
    from pairedscreen.pair import ledger
    from pairedscreen.paths import path

    if not _get(inputs, "barcode_ranks") or not (chunks or cellprofiler_plates):
        return None
    rna = dict(zip(libraries, rna_ledgers, strict=True))
    profiled: dict[str, set[str]] = {}
    prof_path = _get(inputs, "profiles")
    if prof_path:
        pw = pq.read_table(prof_path[0], columns=[C.PLATE, C.WELL]).to_pandas()
        for plate, grp in pw.groupby(C.PLATE):
            profiled[str(plate)] = set(grp[C.WELL].astype(str))
    paint = {}
    cp_records = dict(zip(cellprofiler_plates, _get(inputs, "cellprofiler"), strict=True))
    image_plates = [p for p in plates if p not in cp_records]
    image_index = dict(zip(image_plates, _get(inputs, "image_index"), strict=True))
    for i, plate in enumerate(plates):
        if plate in cp_records:
            paint[plate] = ledger.cellprofiler_plate_ledger(
                cp_records[plate], _get(inputs, "paint_cells")[i], _get(inputs, "paint_wells")[i],
                profiled.get(plate, set()) if prof_path else None)
            continue
        cs = list((chunks or {})[plate])
        paint[plate] = ledger.paint_plate_ledger(
            plate, image_index[plate], [path("masks", plate=plate, chunk=c) for c in cs],
            [path("features", plate=plate, chunk=c) for c in cs], _get(inputs, "paint_cells")[i],
            _get(inputs, "paint_wells")[i], profiled.get(plate, set()) if prof_path else None)
    h5mu = _get(inputs, "h5mu")
    cons = _get(inputs, "consensus")
    return ledger.build_ledger(
        rna, paint,
        pseudobulk_cells=_h5_obs_sum(_get(inputs, "pseudobulk")[0], "n_cells") if _get(inputs, "pseudobulk")
        else None,
        merged_cells=ledger._n_obs(_get(inputs, "rna_merged")[0]) if _get(inputs, "rna_merged") else None,
        paired_rna_cells=_h5_obs_sum(h5mu[0], "n_cells", "rna") if h5mu else None,
        paired_paint_cells=_h5_obs_sum(h5mu[0], "n_cells", "paint") if h5mu else None,
        consensus_cells=int(pd.read_parquet(cons[0], columns=[C.N_CELLS])[C.N_CELLS].fillna(0).sum())
        if cons and C.N_CELLS in pq.read_schema(cons[0]).names else None)


def arm_status(libraries: Sequence[str], plates: Sequence[str], held: pd.DataFrame) -> dict[str, dict]:
    """Datasheet ``arms``: per arm present/missing, its units in the sheets and those used (not
    quarantined)."""
    out = {}
    for arm, units, sheet in (("rna", libraries, "rna_libraries.tsv"), ("paint", plates, "plates.tsv")):
        bad = set(held.loc[held["arm"] == arm, "id"].astype(str))
        entry: dict[str, Any] = {"status": "present" if units else "missing",
                                 "units": [str(u) for u in units],
                                 "used": [str(u) for u in units if str(u) not in bad]}
        if not units:
            entry["reason"] = f"the sheet {sheet} has no rows yet: add them and rerun to build the pair"
        out[arm] = entry
    return out


def _paired_missing(h5mu: PathLike) -> dict[str, list[str]]:
    """``uns['missing']`` of ``perturbations.h5mu``: perturbation ids without data, per modality."""
    import h5py

    with h5py.File(h5mu, "r") as f:
        grp = f["uns"].get("missing") if "uns" in f else None
        if grp is None:
            return {}
        return {k: [v.decode() if isinstance(v, bytes) else str(v) for v in grp[k][()]] for k in grp}


def _cellranger_record(inputs_json: PathLike | None, obs: pd.DataFrame) -> dict | None:
    """The datasheet's record of a library read from a Cell Ranger folder: the folder, matrix, Cell Ranger
    version and chemistry (from ``inputs.json``) and the agreement of our guide calls with Cell Ranger's
    (:func:`pairedscreen.rna.cellranger.guide_agreement`; None without its calls). None for a kb library."""
    from pairedscreen.rna.cellranger import guide_agreement

    if inputs_json is None:
        return None
    info = (json.loads(Path(inputs_json).read_text()).get("cellranger") or {})
    if not info:
        return None
    keep = ("outs", "matrix", "cells", "guide_features", "guide_calls", "software_version",
            "chemistry_description")
    return {**{k: info[k] for k in keep if k in info}, "guide_agreement": guide_agreement(obs)}


def de_metrics(summary: pd.DataFrame, *, alpha: float, min_abs_log2fc: float) -> dict:
    """The datasheet's ``metrics.de``: the DE calls' thresholds, how many perturbations were tested and
    have DE genes, and per perturbation its DE gene counts and top genes (results/rna/de_summary.tsv)."""
    by = {str(r.perturbation_id): {"n_de_genes": int(r.n_de_genes), "n_up": int(r.n_up),
                                   "n_down": int(r.n_down),
                                   "top_de_genes": [g for g in str(r.top_de_genes or "").split(";") if g
                                                    and g != "nan"],
                                   "n_cells": int(r.n_cells), "n_libraries": int(r.n_libraries)}
          for r in summary.itertuples()}
    return {"test": "wilcoxon vs the same library's control cells (scanpy rank_genes_groups), Stouffer "
                    "across libraries, BH per perturbation",
            "alpha": float(alpha), "min_abs_log2fc": float(min_abs_log2fc),
            "perturbations_tested": len(by), "perturbations_with_de": sum(v["n_de_genes"] > 0
                                                                         for v in by.values()),
            "de_genes": sum(v["n_de_genes"] for v in by.values()), "by_perturbation": by}


def _repo_or(workdir: Path) -> Path:
    """The workflow's repository (where the shipped demo models live), else ``workdir``."""
    try:
        return repo_root()
    except FileNotFoundError:
        return workdir


def run_datasheet(inputs: Any, config: Mapping[str, Any], truth_dir: PathLike | None,
                  libraries: Sequence[str], plates: Sequence[str], out: PathLike,
                  chunks: Mapping[str, Sequence[str]] | None = None,
                  gex_r1: Mapping[str, Sequence[str]] | None = None,
                  workdir: PathLike | None = None, cellprofiler_plates: Sequence[str] = ()) -> dict:
    """``results/datasheet.json`` from the workflow outputs named in ``inputs`` (h5mu, metrics, rna_inputs,
    rna_cells, raw, image_index, paint_cells, sheets, plate_maps; for the ledger also barcode_ranks,
    paint_wells, profiles, consensus, pseudobulk, rna_merged and the masks/features of ``chunks``
    {plate: [chunk]}; ``outputs``: the final outputs whose content digests it records). FASTQ and image
    checksums are the ones the arms recorded (inputs.json, image_index.parquet), not recomputed.
    ``gex_r1``: {library: GEX R1 paths as in the sheet}, to match FASTQ record counts to kb's reads in.
    ``cellprofiler_plates``: the plates given as CellProfiler output (no image index, masks or features;
    ``cellprofiler``: their ``cellprofiler.json`` in that order): the datasheet's ``cellprofiler`` records
    each one's source (files and sha256, format, metadata columns) and the feature families and channels of
    ours it lacks, and that it has no training crops."""
    from pairedscreen import licences, provenance

    wd = Path(workdir) if workdir is not None else Path.cwd()
    prehashed: list[dict] = []
    reads = 0
    for p in _get(inputs, "rna_inputs"):
        info = json.loads(Path(p).read_text())
        for f, h in (info.get("fastqs") or {}).items():
            prehashed.append({"role": f"fastq:{info.get('library', '')}", "path": f, "sha256": h})
        for f, h in ((info.get("cellranger") or {}).get("files") or {}).items():
            prehashed.append({"role": f"cellranger:{info.get('library', '')}", "path": f, "sha256": h})
        reads += int((info.get("kb_gex") or {}).get("n_processed", 0) or 0)
    barcodes = sum(ad.read_h5ad(p, backed="r").n_obs for p in _get(inputs, "raw"))
    # one library's obs at a time: its stage counts (added up) and its ledger, never the screen's obs
    per_library, rna_ledgers, guide_stats, warnings = [], [], {}, []
    cellranger_libs: dict[str, dict] = {}
    rna_in, raws, ranks = _get(inputs, "rna_inputs"), _get(inputs, "raw"), _get(inputs, "barcode_ranks")
    from pairedscreen.pair import ledger as ledger_mod

    for i, p in enumerate(_get(inputs, "rna_cells")):
        lib = ad.read_h5ad(p, backed="r")
        obs = lib.obs.copy()
        lib.file.close()
        per_library.append(ds.rna_stage_counts(obs))
        name = libraries[i] if i < len(libraries) else Path(p).parent.name
        guide_stats[name], warning = ds.guide_assignment_stats(p)
        if warning:
            warnings.append(f"library {name}: guide assignment: {warning}")
        cr = _cellranger_record(rna_in[i] if i < len(rna_in) else None, obs)
        if cr is not None:
            cellranger_libs[libraries[i]] = cr
        if ranks and chunks:
            rna_ledgers.append(ledger_mod.rna_library_ledger(rna_in[i], raws[i], ranks[i], obs,
                                                             fastq_r1=(gex_r1 or {}).get(libraries[i])))
        del obs
    rna_counts = ds.add_stage_counts(per_library, reads=reads or None, barcodes=barcodes or None) \
        if per_library else ds.rna_stage_counts(pd.DataFrame({"perturbation": []}), reads=reads or None,
                                                barcodes=barcodes or None)
    idx = [pd.read_parquet(p) for p in _get(inputs, "image_index")]
    image_index = pd.concat(idx, ignore_index=True) if idx else pd.DataFrame()
    for r in image_index.itertuples() if "sha256" in image_index else []:
        if isinstance(r.sha256, str) and len(r.sha256) == 64:
            prehashed.append({"role": f"image:{r.plate}", "path": str(r.path), "sha256": r.sha256})
    n_cells, wells = 0, set()
    for p in _get(inputs, "paint_cells"):
        m = pq.read_table(p, columns=[C.PLATE, C.WELL]).to_pandas()
        n_cells += len(m)
        wells |= set(zip(m[C.PLATE], m[C.WELL], strict=True))
    paint_counts = ds.paint_stage_counts(image_index, objects=n_cells, cells_profiled=n_cells,
                                         wells_profiled=len(wells)) if len(image_index) else \
        {"images": 0, "sites": 0, "sites_flagged": 0}
    ledger = _ledger(inputs, libraries, plates, chunks, rna_ledgers, cellprofiler_plates)
    cp_sources: dict[str, Any] = {}
    for plate, rec_path in zip(cellprofiler_plates, _get(inputs, "cellprofiler"), strict=True):
        rec = json.loads(Path(rec_path).read_text())
        cp_sources[plate] = rec
        for f, h in (rec.get("files") or {}).items():
            prehashed.append({"role": f"cellprofiler:{plate}", "path": f, "sha256": h})
    metrics = json.loads(Path(_get(inputs, "metrics")[0]).read_text())
    truth_rec = metrics.pop("truth_recovery", None) if truth_dir else None
    metrics.pop("truth_recovery", None)
    metrics.pop("arms", None)
    for p in _get(inputs, "de_summary"):
        metrics["de"] = de_metrics(pd.read_csv(p, sep="\t", keep_default_na=False, na_values=[""]),
                                   alpha=config["rna"]["de"]["alpha"],
                                   min_abs_log2fc=config["rna"]["de"]["min_abs_log2fc"])
    held = pd.concat([quarantine.read_table(p) for p in _get(inputs, "rna_quarantine")
                      + _get(inputs, "paint_quarantine")] or [quarantine.table([])], ignore_index=True)
    arms = arm_status(libraries, plates, held)
    measured = [a for a, v in arms.items() if v["status"] == "present"]
    missing = _paired_missing(_get(inputs, "h5mu")[0])
    records = held.to_dict(orient="records") + quarantine.perturbations_without_cells(missing, measured)
    sheet = ds.build_datasheet(
        config=config,
        inputs={"sheets": _get(inputs, "sheets"), "plate_maps": _get(inputs, "plate_maps")},
        prehashed=prehashed,
        counts={"rna": rna_counts, "paint": paint_counts,
                "pair": {"libraries": list(libraries), "plates": list(plates)}},
        metrics=metrics, truth_recovery=truth_rec,
        outputs={"output": _get(inputs, "outputs") or _get(inputs, "h5mu")}, root=wd, arms=arms,
        quarantine=records)
    if guide_stats:
        sheet["counts"]["rna"]["guide_assignment_by_library"] = jsonable(guide_stats)
    sheet["warnings"] = warnings
    prof = _get(inputs, "profiles")
    chain = read_records(prof[0]) if prof else []
    if chain:   # profiles.correct's steps as the profiles stage ran them (paint/correct.py)
        sheet["profiles_correction"] = jsonable(chain)
    if ledger is not None:
        sheet["ledger"] = jsonable(ledger)
    if cellranger_libs:
        sheet["cellranger"] = jsonable(cellranger_libs)
    if cp_sources:
        sheet["cellprofiler"] = jsonable(cp_sources)
        for plate, rec in cp_sources.items():   # every one, so its source and gaps are never silent
            check = rec.get("feature_check") or {}
            sheet["warnings"].append(
                f"plate {plate} (CellProfiler {rec.get('format')}: {rec.get('source')}, source plate "
                f"{rec.get('source_plate') or 'the whole source'}): no images of ours; feature families "
                f"missing vs ours: {', '.join(check.get('families_missing') or []) or 'none'}; channels "
                f"missing: {', '.join(check.get('channels_missing') or []) or 'none'}; "
                "no training crops (no images)")
    sheet["provenance"] = jsonable({"library": provenance.library_provenance(),
                                        "outputs": provenance.output_table(wd)})
    evals = _get(inputs, "evals")
    # the licence ledger: the models, reference data and tools this run used (pairedscreen.licences)
    sheet["licences"] = jsonable(licences.run_ledger(
        config, workdir=wd, basedir=_repo_or(wd), paint=bool(_get(inputs, "image_index")),
        rna=bool(_get(inputs, "rna_inputs"))))
    sheet["warnings"] += [f"licence: {w}" for w in licences.restricted(
        [r for r in sheet["licences"] if r["kind"] == "model"])]
    if evals:   # the training export's splits and held-out evals (results/quality/evals.json)
        ev = json.loads(Path(evals[0]).read_text())
        sheet["train"] = {"splits": ev.get("splits"), "evals": {
            k: ({kk: vv for kk, vv in v.items() if kk != "per_perturbation"} if isinstance(v, dict) else v)
            for k, v in ev.items() if k != "splits"}}
        if (ev.get("leakage") or {}).get("warning"):
            sheet["warnings"].append(f"leakage audit: {ev['leakage']['warning']}")
    ds.validate_datasheet(sheet)
    write_json(sheet, out)
    return sheet
