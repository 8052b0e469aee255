"""``results/train/croissant.json``: MLCommons Croissant 1.1 (JSON-LD) metadata of the training export, with
the Responsible-AI vocabulary.

- ``distribution``: one FileObject per exported file under ``results/train/`` (every file of each
  ``crops.zarr`` store included), with ``contentUrl`` relative to ``results/train/``, size, encoding
  format and sha256;
- ``recordSet``: ``rna_cells`` (the cell-load h5ad's obs, from ``rna/{cell_type}.obs.parquet``),
  ``painted_cells_{plate}`` (each plate's crop obs, row i = crop i of ``crops.zarr``), ``perturbations``
  (``splits.tsv``: the paired perturbations and their split) and ``quality_summary`` (key/value pairs from
  the datasheet: stage counts, replicate hits, concordance, evals);
- name, description, license, citation, version, url, creator from the ``train.croissant`` config block;
- the Croissant RAI 1.0 properties (``rai:dataCollection``, ``rai:dataPreprocessingProtocol``,
  ``rai:machineAnnotationTools``, ``rai:dataLimitations``, ...: :func:`rai_fields`) from the datasheet
  (counts,
  recorded configuration, software, licence ledger, warnings, metrics) and ``train.croissant``; a plate given
  as CellProfiler output is named in them with its source (format, path, source plate) and the feature
  families and channels of ours it lacks (:func:`cellprofiler_plates`).

Built with mlcroissant's own classes (``mlcroissant.Metadata(...).to_json()``), so the context and
property names are the library's.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow.parquet as pq

from pairedscreen.io import jsonable, sha256sum, write_json

PathLike = str | os.PathLike
FORMATS = {".h5ad": "application/x-hdf5", ".parquet": "application/x-parquet",
           ".tsv": "text/tab-separated-values", ".toml": "application/toml", ".json": "application/json"}


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", name)


def _dtype(series_dtype: Any) -> Any:
    import mlcroissant as mlc

    kind = getattr(series_dtype, "kind", "O")
    return {"b": mlc.DataType.BOOL, "i": mlc.DataType.INTEGER, "u": mlc.DataType.INTEGER,
            "f": mlc.DataType.FLOAT}.get(kind, mlc.DataType.TEXT)


def exported_files(root: PathLike, exclude: Sequence[PathLike] = ()) -> list[Path]:
    """Every file under ``root`` (sorted), zarr stores walked into; hidden temporaries skipped."""
    skip = {Path(p).resolve() for p in exclude}
    out = []
    for p in sorted(Path(root).rglob("*")):
        if p.is_file() and p.resolve() not in skip and not any(part.startswith(".") for part in
                                                                  p.relative_to(root).parts):
            out.append(p)
    return out


def _file_object(path: Path, root: Path) -> Any:
    import mlcroissant as mlc

    rel = path.relative_to(root).as_posix()
    fmt = "application/octet-stream"
    if ".zarr/" in rel:
        fmt = "application/json" if path.name == "zarr.json" else "application/octet-stream"
    else:
        fmt = FORMATS.get(path.suffix, fmt)
    return mlc.FileObject(id=_safe(rel), name=_safe(rel), content_url=rel, encoding_formats=[fmt],
                          content_size=f"{path.stat().st_size} B", sha256=sha256sum(path))


def _record_set(name: str, file_id: str, columns: Mapping[str, Any], description: str) -> Any:
    import mlcroissant as mlc

    fields = [mlc.Field(id=f"{name}/{c}", name=c, data_types=[_dtype(t)],
                        source=mlc.Source(file_object=file_id, extract=mlc.Extract(column=c)))
              for c, t in columns.items()]
    return mlc.RecordSet(id=name, name=name, description=description, fields=fields)


def _parquet_columns(path: Path) -> dict[str, Any]:
    schema = pq.read_schema(path)
    import numpy as np

    out = {}
    for f in schema:
        try:
            out[f.name] = np.dtype(f.type.to_pandas_dtype())
        except (NotImplementedError, TypeError):
            out[f.name] = np.dtype("O")
    return out


def quality_summary(datasheet: Mapping[str, Any]) -> list[tuple[str, str]]:
    """Flat key/value pairs of the datasheet's counts, headline metrics and train block."""
    pairs: list[tuple[str, str]] = []

    def walk(obj: Any, prefix: str) -> None:
        if isinstance(obj, Mapping):
            for k, v in obj.items():
                if k in ("per_perturbation", "perturbations", "test_perturbations"):
                    continue
                walk(v, f"{prefix}.{k}" if prefix else str(k))
        elif isinstance(obj, list) and not any(isinstance(v, Mapping | list) for v in obj):
            pairs.append((prefix, ";".join(str(v) for v in obj)))
        elif not isinstance(obj, list):
            pairs.append((prefix, str(obj)))

    sheet = jsonable(datasheet)
    for key in ("counts", "train"):
        walk(sheet.get(key, {}), key)
    metrics = sheet.get("metrics", {})
    for key in ("replicate", "concordance"):
        walk({k: v for k, v in (metrics.get(key) or {}).items()}, f"metrics.{key}")
    return pairs


CROISSANT = "http://mlcommons.org/croissant/1.1"
CROISSANT_RAI = "http://mlcommons.org/croissant/RAI/1.0"


def _text(v: Any) -> str:
    return json.dumps(v, sort_keys=True) if isinstance(v, Mapping | list) else str(v)


def _listed(values: Any) -> str:
    return ", ".join(str(v) for v in values) if values else "none"


def cellprofiler_plates(datasheet: Mapping[str, Any]) -> dict[str, dict[str, str]]:
    """The plates given as CellProfiler output (the datasheet's ``cellprofiler`` records): per plate its
    format, source path, source plate, cells, object counts and the feature families and channels of ours
    it lacks, as text (``none`` for an empty list, never a blank)."""
    out = {}
    for plate, rec in (datasheet.get("cellprofiler") or {}).items():
        check = rec.get("feature_check") or {}
        out[str(plate)] = {
            "format": f"{rec['format_name']} ({rec.get('format')})" if rec.get("format_name")
            else str(rec.get("format")), "source": str(rec.get("source")),
            "source_plate": str(rec.get("source_plate") or "the whole source"),
            "cells": str(rec.get("cells")),
            "objects": _text(rec.get("objects") or {}),
            "families_missing": _listed(check.get("families_missing")),
            "channels_missing": _listed(check.get("channels_missing"))}
    return out


def rai_fields(datasheet: Mapping[str, Any], params: Mapping[str, Any]) -> dict[str, Any]:
    """The Croissant Responsible-AI (``rai:``) properties, as ``mlcroissant.Metadata`` keywords: collection,
    preprocessing, annotation and the machine annotation tools from the datasheet (its counts, recorded
    configuration, software versions and licence ledger); limitations and biases from its warnings,
    quarantines, licence ledger and quality metrics, plus the ``train.croissant`` texts; use cases,
    sensitive information and the maintenance plan from ``train.croissant``."""
    cfg = datasheet.get("config") or {}
    soft = datasheet.get("software") or {}
    counts = datasheet.get("counts") or {}
    rna, paint = counts.get("rna") or {}, counts.get("paint") or {}
    pair = counts.get("pair") or {}
    simulated = bool(str(cfg.get("truth_dir") or "").strip())
    inputs = datasheet.get("inputs") or []
    fastq = [r for r in inputs if str(r.get("role", "")).startswith("fastq")]
    images = [r for r in inputs if str(r.get("role", "")).startswith("image")]
    cp = cellprofiler_plates(datasheet)
    from_cp = "" if not cp else (
        f" ({len(cp)} of them from CellProfiler output, no images: "
        + "; ".join(f"plate {p}: {r['format']} {r['source']}, source plate {r['source_plate']}, "
                    f"{r['cells']} cells" for p, r in cp.items()) + ")")
    collection = (
        f"Pooled CRISPR Perturb-seq arm: {len(pair.get('libraries') or [])} 10x library(ies), "
        f"{len(fastq)} FASTQ files ({sum(int(r.get('bytes') or 0) for r in fastq)} bytes), "
        f"{rna.get('reads')} reads, {rna.get('cells_called')} cells called. Arrayed Cell Painting arm: "
        f"{len(pair.get('plates') or [])} plate(s){from_cp}, {len(images)} images "
        f"({sum(int(r.get('bytes') or 0) for r in images)} bytes), {paint.get('sites')} sites. "
        "Every input file is listed with its path, size and sha256 in datasheet.json.")
    if simulated:
        collection = "Simulated by `pairedscreen simulate` (planted ground truth in truth_dir). " + collection
    ctype = list(params["data_collection_type"]) or (
        ["Software Collection"] if simulated else ["Experiments", "Direct measurement"])
    seg = (cfg.get("paint") or {}).get("segmentation") or {}
    rcfg = cfg.get("rna") or {}
    steps = [
        f"RNA: kb count (kallisto|bustools, kb-python {soft.get('kb-python')}) against "
        f"{_text(cfg.get('reference') or {})}",
        f"RNA: cell calling {_text(rcfg.get('cell_calling', {}))}; QC {_text(rcfg.get('qc', {}))}; "
        f"doublets {_text(rcfg.get('doublets', {}))}",
        f"Paint: Cellpose {soft.get('cellpose')} segmentation "
        f"{_text({c: (seg.get(c) or {}).get('model') for c in ('nuclei', 'cells')})}; features "
        f"{_text((cfg.get('paint') or {}).get('features', {}))}",
        f"Profiles: {_text(cfg.get('profiles', {}))}",
    ]
    steps += [f"Paint plate {p}: no segmentation or measurement of ours; per-object measurements read from "
              f"{r['format']} {r['source']} (source plate {r['source_plate']}), cytoplasm joined to its "
              f"parent cell and nucleus ({r['objects']}); feature families of ours missing: "
              f"{r['families_missing']}; channels of ours missing: {r['channels_missing']}"
              for p, r in cp.items()]
    steps += [f"Profiles correction step: {_text(s)}" for s in datasheet.get("profiles_correction") or []]
    export = {k: v for k, v in (cfg.get("train") or {}).items() if k != "croissant"}
    steps.append(f"Training export: {_text(export)}")
    guides = (cfg.get("rna") or {}).get("guides", {})
    annotation = [
        f"Perturbation labels of RNA cells: guide assignment from guide UMI counts {_text(guides)} "
        f"(per library: {_text(rna.get('guide_assignment_by_library', {}))}); no human annotation",
        "Perturbation labels of painted cells: the plate maps (arrayed screen, one perturbation per well)",
        "Cell and nucleus masks: Cellpose, no human correction"
        + (f" (image plates; plates {', '.join(cp)} from CellProfiler output: the objects of the source's "
           "own CellProfiler pipeline)" if cp else ""),
    ]
    ledger = datasheet.get("licences") or []
    tools = [f"{r['name']} {r.get('version') or ''} ({r['licence']})".replace("  ", " ") for r in ledger
             if r["kind"] == "tool"]
    tools += [f"Cellpose model {r['name']} ({r.get('used_for')}): weights {r['licence']}; training data "
              f"{r.get('training_data_licence')}" for r in ledger if r["kind"] == "model"]
    limitations = [str(w) for w in datasheet.get("warnings") or []]
    limitations += [f"quarantined {q.get('what')} {q.get('id')}: {q.get('reason')}"
                    for q in datasheet.get("quarantine") or [] if isinstance(q, Mapping)]
    limitations += [f"licence: {r['kind']} {r['name']}: commercial use {r['commercial_use']} - {r['reason']}"
                    for r in ledger if r["commercial_use"] != "allowed"]
    if simulated:
        limitations.append("Simulated data: effects, noise and artefacts follow the simulator's model, not "
                           "biology; use it to test methods, not to draw biological conclusions")
    limitations += list(params["data_limitations"])
    biases = []
    metrics = datasheet.get("metrics") or {}
    for key, v in (metrics.get("batch") or {}).items():
        if isinstance(v, Mapping) and v.get("p_value") is not None and float(v["p_value"]) < 0.05:
            biases.append(f"batch is predictable from {key} (accuracy {v.get('accuracy')} vs chance "
                          f"{v.get('chance')}, p = {v['p_value']})")
    if ((metrics.get("position") or {}).get("after") or {}).get("edge_detected"):
        biases.append("a plate-edge effect remains in the corrected Cell Painting profiles")
    removed = rna.get("cells_removed") or {}
    if removed:
        biases.append("RNA cells removed before export, by reason (a cell can have several): "
                      f"{_text(removed)}; "
                      "cells with strong phenotypes (e.g. low counts, high mitochondrial share) may be "
                      "under-represented")
    biases += list(params["data_biases"])
    return {"data_collection": collection, "data_collection_type": ctype,
            "data_preprocessing_protocol": steps, "data_annotation_protocol": annotation,
            "machine_annotation_tools": tools, "data_limitations": limitations or ["none recorded"],
            "data_biases": biases or ["none detected by the quality metrics"],
            "data_use_cases": list(params["data_use_cases"]),
            "personal_sensitive_information": list(params["personal_sensitive_information"]),
            "data_release_maintenance_plan": params["data_release_maintenance_plan"]}


def build_croissant(root: PathLike, datasheet: Mapping[str, Any], params: Mapping[str, Any],
                    rna_obs: PathLike, crops_obs: Mapping[str, PathLike], splits: PathLike,
                    out: PathLike) -> dict:
    """Write ``croissant.json`` (module docstring) for the export under ``root``; returns the JSON-LD."""
    import mlcroissant as mlc

    root = Path(root)
    files = exported_files(root, exclude=[out])
    dist = [_file_object(p, root) for p in files]
    ids = {p.resolve(): _safe(p.relative_to(root).as_posix()) for p in files}
    sheet = pd.read_csv(splits, sep="\t", nrows=5)
    record_sets = [
        _record_set("rna_cells", ids[Path(rna_obs).resolve()], _parquet_columns(Path(rna_obs)),
                    "RNA cells of the cell-load export (obs of rna/*.h5ad, same row order)"),
        _record_set("perturbations", ids[Path(splits).resolve()],
                    {c: sheet[c].dtype if c != "is_control" else "O" for c in sheet.columns},
                    "The paired perturbations (registry ids) and their shared train/val/test split"),
    ]
    for plate, p in crops_obs.items():
        record_sets.append(_record_set(f"painted_cells_{_safe(plate)}", ids[Path(p).resolve()],
                                       _parquet_columns(Path(p)),
                                       f"Painted cells of plate {plate}: row i = crop i of "
                                       f"paint/{plate}/crops.zarr"))
    summary = quality_summary(datasheet)
    record_sets.append(mlc.RecordSet(
        id="quality_summary", name="quality_summary", description="Quality summary from datasheet.json",
        fields=[mlc.Field(id="quality_summary/key", name="key", data_types=[mlc.DataType.TEXT]),
                mlc.Field(id="quality_summary/value", name="value", data_types=[mlc.DataType.TEXT])],
        data=[{"quality_summary/key": k, "quality_summary/value": v} for k, v in summary]))
    creators = [mlc.Person(name=params["creator"])] if params["creator"] else []
    meta = mlc.Metadata(
        name=params["name"], description=params["description"], license=[params["license"]],
        cite_as=params["citation"] or None, version=params["version"], url=params["url"] or None,
        creators=creators, distribution=dist, record_sets=record_sets,
        conforms_to=[CROISSANT, CROISSANT_RAI], **rai_fields(datasheet, params))
    doc = meta.to_json()
    write_json(doc, out)
    return doc
