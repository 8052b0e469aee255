"""``results/train/croissant.json``: MLCommons Croissant 1.0 (JSON-LD) metadata of the training export.

- ``distribution``: one FileObject per exported file under ``results/train/`` (every file of each
  ``crops.zarr`` store included), with ``contentUrl`` relative to ``results/train/``, size, encoding
  format and sha256;
- ``recordSet``: ``rna_cells`` (the cell-load h5ad's obs, from ``rna/{cell_type}.obs.parquet``),
  ``painted_cells_{plate}`` (each plate's crop obs, row i = crop i of ``crops.zarr``), ``perturbations``
  (``splits.tsv``: the paired perturbations and their split) and ``quality_summary`` (key/value pairs from
  the datasheet: stage counts, replicate hits, concordance, evals);
- name, description, license, citation, version, url, creator from the ``train.croissant`` config block.

Built with mlcroissant's own classes (``mlcroissant.Metadata(...).to_json()``), so the context and
property names are the library's.
"""

from __future__ import annotations

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
        creators=creators, distribution=dist, record_sets=record_sets)
    doc = meta.to_json()
    write_json(doc, out)
    return doc
