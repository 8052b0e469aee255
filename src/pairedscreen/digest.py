"""Content digests of outputs: equal for equal content, whatever the absolute paths, timestamps or file
layout details (HDF5 object addresses, parquet page layout, JSON key order).

- ``.h5ad`` / ``.h5mu`` / ``.h5``: every group and dataset (sorted by name) with its attributes, dtype,
  shape and values (X, layers, obs, var, obsm, uns, ... and the MuData modalities);
- ``.parquet``: the column names, Arrow types and values (schema metadata excluded);
- ``.json``: the parsed document in canonical form (sorted keys), without volatile fields
  (:data:`VOLATILE_KEYS`);
- ``.tif``/``.tiff``: dtype, shape and pixels of every page;
- folders: the (relative name, digest) of every file under them (hidden temp files excluded);
- anything else (``.tsv``, ``.npy``, ...): the bytes.

In every text value the working directory (``root``) is replaced by ``<root>``, so a run moved or made
in another folder gives the same digests.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

PathLike = str | os.PathLike
VOLATILE_KEYS = frozenset({"generated_at", "start_time", "call", "elapsed_s", "hostname"})
DIGEST_KIND = "content-sha256/1"


class _Hasher:
    def __init__(self, root: PathLike | None) -> None:
        self.h = hashlib.sha256()
        self.roots = [str(Path(root).resolve()), str(root)] if root is not None else []

    def text(self, s: str) -> str:
        for r in self.roots:
            if r and r in s:
                s = s.replace(r, "<root>")
        return s

    def add(self, tag: str, data: bytes = b"") -> None:
        self.h.update(f"{tag}\0{len(data)}\0".encode())
        self.h.update(data)

    def value(self, tag: str, v: Any) -> None:
        a = np.asarray(v)
        if a.dtype.kind in "OSU":
            items = [self.text(x.decode("utf-8", "replace") if isinstance(x, bytes) else str(x))
                     for x in a.ravel().tolist()]
            self.add(f"{tag}:str{a.shape}", json.dumps(items).encode())
        else:
            self.add(f"{tag}:{a.dtype.str}{a.shape}", np.ascontiguousarray(a).tobytes())

    def hexdigest(self) -> str:
        return self.h.hexdigest()


def _hdf5(path: Path, hs: _Hasher) -> None:
    import h5py

    with h5py.File(path, "r") as f:
        names: list[str] = []
        f.visit(names.append)
        for name in ["", *sorted(names)]:
            obj = f[name] if name else f
            for k in sorted(obj.attrs):
                hs.value(f"attr:{name}/{k}", obj.attrs[k])
            if isinstance(obj, h5py.Dataset):
                data = obj[()]
                if obj.dtype.kind == "O" or h5py.check_string_dtype(obj.dtype) is not None:
                    data = np.asarray(data, dtype=object)
                hs.value(f"data:{name}", data)
            else:
                hs.add(f"group:{name}")


def _parquet(path: Path, hs: _Hasher) -> None:
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    pf = pq.ParquetFile(path)
    schema = pf.schema_arrow
    hs.add("schema", json.dumps([[f.name, str(f.type)] for f in schema]).encode())
    for batch in pf.iter_batches(batch_size=1 << 16):
        for name, col in zip(batch.schema.names, batch.columns, strict=True):
            if pa.types.is_string(col.type) or pa.types.is_large_string(col.type) \
                    or pa.types.is_dictionary(col.type):
                vals = col.cast(pa.string()) if pa.types.is_dictionary(col.type) else col
                hs.add(f"col:{name}", json.dumps([None if v is None else hs.text(v)
                                                  for v in vals.to_pylist()]).encode())
            elif pa.types.is_primitive(col.type):
                valid = pc.is_valid(col).to_numpy(zero_copy_only=False)
                filled = col.fill_null(pa.scalar(0, col.type) if not pa.types.is_boolean(col.type)
                                       else pa.scalar(False)) if col.null_count else col
                hs.add(f"valid:{name}", np.packbits(valid).tobytes())
                hs.add(f"col:{name}:{col.type}", np.ascontiguousarray(
                    filled.to_numpy(zero_copy_only=False)).tobytes())
            else:
                hs.add(f"col:{name}", json.dumps(col.to_pylist(), default=str).encode())


def _strip(obj: Any, hs: _Hasher) -> Any:
    if isinstance(obj, dict):
        return {k: _strip(v, hs) for k, v in obj.items() if k not in VOLATILE_KEYS}
    if isinstance(obj, list):
        return [_strip(v, hs) for v in obj]
    if isinstance(obj, str):
        return hs.text(obj)
    return obj


def _tiff(path: Path, hs: _Hasher) -> None:
    import tifffile

    with tifffile.TiffFile(path) as tf:
        for i, page in enumerate(tf.pages):
            hs.value(f"page{i}", page.asarray())


def content_digest(path: PathLike, root: PathLike | None = None) -> str:
    """Content digest (hex sha256) of a file or folder; ``root``: the working directory, replaced by
    ``<root>`` in text values."""
    p = Path(path)
    hs = _Hasher(root)
    if p.is_dir():
        for f in sorted(q for q in p.rglob("*") if q.is_file()
                        and not any(part.startswith(".") for part in q.relative_to(p).parts)):
            hs.add(f"file:{f.relative_to(p).as_posix()}", content_digest(f, root).encode())
        return hs.hexdigest()
    suffix = p.suffix.lower()
    if suffix in (".h5ad", ".h5mu", ".h5"):
        _hdf5(p, hs)
    elif suffix == ".parquet":
        _parquet(p, hs)
    elif suffix == ".json":
        hs.add("json", json.dumps(_strip(json.loads(p.read_text()), hs), sort_keys=True,
                                  separators=(",", ":")).encode())
    elif suffix in (".tif", ".tiff"):
        _tiff(p, hs)
    elif suffix in (".tsv", ".csv", ".txt"):
        hs.add("text", hs.text(p.read_text()).encode())
    else:
        hs.add("bytes", p.read_bytes())
    return hs.hexdigest()


def describe_outputs(outputs: Mapping[str, PathLike | Iterable[PathLike]],
                     root: PathLike | None = None) -> list[dict[str, Any]]:
    """``{role: path | [paths]}`` -> [{role, path, digest}] sorted by path (``path`` relative to ``root``
    when under it)."""
    rows = []
    base = Path(root).resolve() if root is not None else None
    for role, paths in outputs.items():
        plist = [paths] if isinstance(paths, str | os.PathLike) else list(paths)
        for q in plist:
            q = Path(q)
            rel = q
            if base is not None:
                try:
                    rel = (q if q.is_absolute() else base / q).resolve().relative_to(base)
                except ValueError:
                    rel = q
            rows.append({"role": role, "path": rel.as_posix(), "digest": content_digest(q, root)})
    return sorted(rows, key=lambda r: r["path"])


def compare(a: Iterable[Mapping[str, Any]], b: Iterable[Mapping[str, Any]]) -> dict[str, tuple]:
    """Outputs whose digests differ between two datasheets' ``outputs`` lists: {path: (digest_a, digest_b)}
    (a path present in one only has None on the other side)."""
    da = {r["path"]: r["digest"] for r in a}
    db = {r["path"]: r["digest"] for r in b}
    return {k: (da.get(k), db.get(k)) for k in sorted(set(da) | set(db)) if da.get(k) != db.get(k)}
