"""Find a plate's images by a file-name pattern and index them (one row per site x channel).

Patterns use ``{field}`` placeholders, everything else is literal text::

    "{well}_s{site}_w{channel}.tif"                       # simulator / MetaXpress style, well "A01"
    "r{row}c{col}f{site}p{plane}-ch{channel}sk1fk1fl1.tiff"  # Opera Phenix, row/col numeric
    "r{row}c{col}f{site}p01-ch{channel}sk1fk1fl1.tiff"    # Phenix, one fixed plane

Fields: ``well`` (``A1``/``A01``/``a01``), ``row`` (letter(s) or number, 1 = A), ``col`` (number),
``site`` (number), ``channel`` (the file's channel token, matched against the values of the
``channels`` mapping), ``plane`` (number; one plane per site and channel is allowed, otherwise fix the
plane in the pattern). A pattern may contain ``/`` to reach into sub-folders of the image directory.
Wells are always reported as ``A01`` (row letters + two-digit column).

Bad input (a channel missing for a site, a file that cannot be decoded, a shape or dtype different from
the plate's, two files for one site and channel) raises :class:`ImageIngestError` naming the file and the
fix, or with ``on_bad_image="quarantine"`` is recorded: the affected rows get ``status="quarantined"``
and a ``reason``; the other channels of that site are quarantined too (``reason`` says why), so a site is
either fully usable or fully quarantined. Downstream steps use ``status == "ok"`` rows only.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
from collections import Counter
from collections.abc import Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
import tifffile

from pairedscreen.errors import PairedscreenError
from pairedscreen.plate import normalise_well

FIELDS = ("well", "row", "col", "site", "channel", "plane")
_FIELD_RE = {
    "well": r"[A-Za-z]{1,2}\d{1,3}",
    "row": r"[A-Za-z]{1,2}|\d{1,3}",
    "col": r"\d{1,3}",
    "site": r"\d+",
    "channel": r"[A-Za-z0-9]+?",
    "plane": r"\d+",
}
_PLACEHOLDER = re.compile(r"\{([^{}]*)\}")

INDEX_COLUMNS = [
    "plate", "well", "site", "channel", "channel_index", "file_channel", "plane", "path",
    "height", "width", "dtype", "sha256", "status", "reason",
]


class ImageIngestError(PairedscreenError, ValueError):
    """An image (or a missing one) that the workflow cannot use; the message names the file and the fix."""


def parse_pattern(pattern: str) -> re.Pattern[str]:
    """Compile a file-name pattern into a regular expression with one named group per field.

    Each field may appear once; ``{well}`` and ``{row}``/``{col}`` are alternatives; ``{site}`` and
    ``{channel}`` are required (a single-site layout still needs a site token in the names).
    """
    if not isinstance(pattern, str) or not pattern:
        raise ImageIngestError(f"image_pattern must be a non-empty string, got {pattern!r}")
    parts: list[str] = []
    seen: list[str] = []
    pos = 0
    for m in _PLACEHOLDER.finditer(pattern):
        name = m.group(1)
        if name not in _FIELD_RE:
            known = ", ".join("{" + f + "}" for f in FIELDS)
            raise ImageIngestError(f"image_pattern {pattern!r}: unknown field {{{name}}}; use {known}")
        if name in seen:
            raise ImageIngestError(f"image_pattern {pattern!r}: field {{{name}}} appears twice")
        seen.append(name)
        parts.append(re.escape(pattern[pos:m.start()]))
        parts.append(f"(?P<{name}>{_FIELD_RE[name]})")
        pos = m.end()
    parts.append(re.escape(pattern[pos:]))
    if "{" in pattern[pos:] or "}" in pattern[pos:]:
        raise ImageIngestError(f"image_pattern {pattern!r}: unbalanced braces")
    has_well = "well" in seen
    has_rc = "row" in seen and "col" in seen
    if has_well == has_rc or ("row" in seen) != ("col" in seen):
        raise ImageIngestError(
            f"image_pattern {pattern!r}: give either {{well}} or both {{row}} and {{col}}"
        )
    for required in ("site", "channel"):
        if required not in seen:
            raise ImageIngestError(f"image_pattern {pattern!r}: the field {{{required}}} is required")
    return re.compile("^" + "".join(parts) + "$")


def _row_letters(row: str) -> str:
    if row.isdigit():
        n = int(row)
        if n < 1:
            raise ValueError(f"row number {row!r} must be >= 1")
        letters = ""
        while n:
            n, rem = divmod(n - 1, 26)
            letters = chr(ord("A") + rem) + letters
        return letters
    return row.upper()


def _well(well: str) -> str:
    """:func:`pairedscreen.plate.normalise_well` (strict), a non-well an :class:`ImageIngestError`."""
    try:
        return normalise_well(well, strict=True)
    except ValueError as exc:
        raise ImageIngestError(str(exc)) from None


def fields_from_match(m: re.Match[str]) -> dict[str, Any]:
    """Well (``A01``), site (int), channel token (str), plane (int or None) from a pattern match."""
    g = m.groupdict()
    if g.get("well") is not None:
        well = _well(g["well"])
    else:
        well = f"{_row_letters(g['row'])}{int(g['col']):02d}"
    return {
        "well": well,
        "site": int(g["site"]),
        "channel": g["channel"],
        "plane": int(g["plane"]) if g.get("plane") is not None else None,
    }


def expected_name(pattern: str, well: str, site: int, channel: str | int, plane: int = 1) -> str:
    """Render a pattern for one image (used in error messages: the file we looked for)."""
    well = _well(well)
    letters = re.match(r"[A-Z]+", well).group(0)  # type: ignore[union-attr]
    row_num = 0
    for ch in letters:
        row_num = row_num * 26 + (ord(ch) - ord("A") + 1)
    values = {
        "well": well, "row": f"{row_num:02d}", "col": well[len(letters):], "site": f"{site}",
        "channel": f"{channel}", "plane": f"{plane:02d}",
    }
    if "r{row}c{col}f{site}" in pattern:  # Phenix pads fields to two digits
        values["site"] = f"{site:02d}"
    return _PLACEHOLDER.sub(lambda mm: values.get(mm.group(1), mm.group(0)), pattern)


def _same_token(a: str | int, b: str | int) -> bool:
    sa, sb = str(a), str(b)
    if sa.isdigit() and sb.isdigit():
        return int(sa) == int(sb)
    return sa == sb


@dataclass
class _ReadResult:
    height: int | None
    width: int | None
    dtype: str | None
    sha256: str | None
    error: str | None


def read_image(path: str | os.PathLike) -> np.ndarray:
    """Read one 2-D image (TIFF); raise :class:`ImageIngestError` naming the file when it cannot be used."""
    try:
        img = tifffile.imread(path)
    except Exception as exc:  # noqa: BLE001 - any decoder failure is reported with the file
        raise ImageIngestError(
            f"cannot read image {path}: {type(exc).__name__}: {exc}. Re-export or re-copy the file, or set "
            "paint.on_bad_image: quarantine to skip its site"
        ) from exc
    img = np.squeeze(img)
    if img.ndim != 2:
        raise ImageIngestError(
            f"image {path} has shape {img.shape}; one 2-D plane per file is expected (split multi-page "
            "or RGB files into one file per channel)"
        )
    return img


def _inspect(path: Path) -> _ReadResult:
    try:
        data = path.read_bytes()
    except OSError as exc:
        return _ReadResult(None, None, None, None, f"unreadable file: {exc}")
    sha = hashlib.sha256(data).hexdigest()
    try:
        img = np.squeeze(tifffile.imread(io.BytesIO(data)))
    except Exception as exc:  # noqa: BLE001
        return _ReadResult(None, None, None, sha, f"cannot decode image: {type(exc).__name__}: {exc}")
    if img.ndim != 2:
        return _ReadResult(None, None, str(img.dtype), sha, f"not a 2-D plane (shape {img.shape})")
    return _ReadResult(int(img.shape[0]), int(img.shape[1]), str(img.dtype), sha, None)


def _list_files(image_dir: Path, pattern: str) -> list[str]:
    if "/" in pattern:
        return sorted(p.relative_to(image_dir).as_posix() for p in image_dir.rglob("*") if p.is_file())
    return sorted(e.name for e in os.scandir(image_dir) if e.is_file())


def build_image_index(
    plate_id: str,
    image_dir: str | os.PathLike,
    pattern: str,
    channels: Mapping[str, str | int],
    wells: Iterable[str] | None = None,
    *,
    on_bad_image: Literal["error", "quarantine"],
    threads: int = 1,
) -> pd.DataFrame:
    """Index a plate's images: one row per (well, site, channel) in ``channels`` order.

    ``channels`` maps channel names to the file's channel token (``{"DNA": 1, ...}``); ``wells`` restricts
    the index to those wells (e.g. the plate map's, or one job's chunk) and every listed well must have
    images. Columns: plate, well, site, channel, channel_index (0-based position in ``channels``),
    file_channel, plane, path (absolute), height, width, dtype, sha256, status (ok|quarantined), reason.
    Rows are sorted by well (in ``wells`` order when given), site, channel_index.
    """
    if on_bad_image not in ("error", "quarantine"):
        raise ValueError(f"on_bad_image must be 'error' or 'quarantine', got {on_bad_image!r}")
    if not channels:
        raise ImageIngestError("paint.channels is empty: map channel names to file channel tokens")
    image_dir = Path(image_dir)
    if not image_dir.is_dir():
        raise ImageIngestError(
            f"plate {plate_id}: image_dir {image_dir} does not exist or is not a directory; fix image_dir "
            "in plates.tsv (paths are relative to the working directory)"
        )
    regex = parse_pattern(pattern)
    chan_names = list(channels)
    token_to_name: dict[str, str] = {}
    for name, token in channels.items():
        token_to_name[str(token)] = name
    wanted = [_well(w) for w in wells] if wells is not None else None
    wanted_set = set(wanted) if wanted is not None else None

    # (well, site, channel name) -> list of (relative path, plane)
    found: dict[tuple[str, int, str], list[tuple[str, int | None]]] = {}
    for rel in _list_files(image_dir, pattern):
        m = regex.match(rel)
        if not m:
            continue
        f = fields_from_match(m)
        name = next((n for t, n in token_to_name.items() if _same_token(t, f["channel"])), None)
        if name is None:
            continue  # a channel this run does not use (e.g. brightfield)
        if wanted_set is not None and f["well"] not in wanted_set:
            continue
        found.setdefault((f["well"], f["site"], name), []).append((rel, f["plane"]))

    sites_per_well: dict[str, set[int]] = {}
    for well, site, _ in found:
        sites_per_well.setdefault(well, set()).add(site)

    problems: list[str] = []
    rows: list[dict[str, Any]] = []

    def bad(msg: str) -> None:  # every problem is collected; under "error" they are raised together
        problems.append(msg)

    well_order = wanted if wanted is not None else sorted(sites_per_well)
    for well in well_order:
        if well not in sites_per_well:
            example = expected_name(pattern, well, 1, next(iter(channels.values())))
            bad(
                f"plate {plate_id}: no images for well {well} in {image_dir} matching {pattern!r} "
                f"(looked for e.g. {example}); fix image_pattern / image_dir, or drop the well from the "
                "plate map"
            )
            for ci, name in enumerate(chan_names):
                rows.append(_row(plate_id, well, -1, name, ci, channels[name], None, "", "quarantined",
                                 "no images for this well"))
            continue
        for site in sorted(sites_per_well[well]):
            absent: list[tuple[str, Path]] = []
            for ci, name in enumerate(chan_names):
                hits = found.get((well, site, name), [])
                if not hits:
                    missing = image_dir / expected_name(pattern, well, site, channels[name])
                    absent.append((name, missing))
                    rows.append(_row(plate_id, well, site, name, ci, channels[name], None, str(missing),
                                     "quarantined", "missing file"))
                elif len(hits) > 1:
                    paths = ", ".join(str(image_dir / h[0]) for h in hits)
                    bad(
                        f"plate {plate_id}: {len(hits)} files for well {well} site {site} channel {name}: "
                        f"{paths}; fix the plane or other literal parts of image_pattern so that one file "
                        "matches (e.g. p01 instead of p{{plane}})"
                    )
                    rows.append(_row(plate_id, well, site, name, ci, channels[name], hits[0][1],
                                     str((image_dir / hits[0][0]).resolve()), "quarantined",
                                     f"{len(hits)} files match this site and channel"))
                else:
                    rel, plane = hits[0]
                    rows.append(_row(plate_id, well, site, name, ci, channels[name], plane,
                                     str((image_dir / rel).resolve()), "ok", ""))
            if absent:
                names = ", ".join(f"{n} (file channel {channels[n]})" for n, _ in absent)
                files = ", ".join(str(f) for _, f in absent)
                bad(
                    f"plate {plate_id}: channel{'s' if len(absent) > 1 else ''} {names} missing for well "
                    f"{well} site {site}: expected {files}. Fix: add the files, correct paint.channels / "
                    "image_pattern, or set paint.on_bad_image: quarantine"
                )

    df = pd.DataFrame(rows, columns=INDEX_COLUMNS)
    # read every file once: decodability, shape, dtype, checksum
    to_read = df.index[df["status"] == "ok"].tolist()
    paths = [Path(p) for p in df.loc[to_read, "path"]]
    if threads > 1:
        with ThreadPoolExecutor(max_workers=threads) as pool:
            results = list(pool.map(_inspect, paths))
    else:
        results = [_inspect(p) for p in paths]
    for i, res in zip(to_read, results, strict=True):
        df.at[i, "height"] = res.height
        df.at[i, "width"] = res.width
        df.at[i, "dtype"] = res.dtype
        df.at[i, "sha256"] = res.sha256
        if res.error:
            bad(f"plate {plate_id}: image {df.at[i, 'path']}: {res.error}; re-export or re-copy the file, "
                "or set paint.on_bad_image: quarantine to skip its site")
            df.at[i, "status"] = "quarantined"
            df.at[i, "reason"] = res.error

    ok = df["status"] == "ok"
    if ok.any():
        shapes = Counter(zip(df.loc[ok, "height"], df.loc[ok, "width"], df.loc[ok, "dtype"], strict=True))
        (ref_h, ref_w, ref_dtype), _ = shapes.most_common(1)[0]
        for i in df.index[ok]:
            h, w, dt = df.at[i, "height"], df.at[i, "width"], df.at[i, "dtype"]
            if (h, w) != (ref_h, ref_w) or dt != ref_dtype:
                reason = (f"shape/dtype {h}x{w} {dt} differs from the plate's {ref_h}x{ref_w} {ref_dtype}")
                bad(f"plate {plate_id}: image {df.at[i, 'path']}: {reason}; re-export it like the other "
                    "images of the plate, or set paint.on_bad_image: quarantine")
                df.at[i, "status"] = "quarantined"
                df.at[i, "reason"] = reason

    # a site is usable only as a whole
    bad_sites = df.loc[df["status"] != "ok", ["well", "site", "channel"]]
    for (well, site), grp in bad_sites.groupby(["well", "site"]):
        sib = (df["well"] == well) & (df["site"] == site) & (df["status"] == "ok")
        df.loc[sib, "status"] = "quarantined"
        df.loc[sib, "reason"] = "site incomplete: " + ", ".join(sorted(grp["channel"])) + " quarantined"

    if df.empty:
        raise ImageIngestError(
            f"plate {plate_id}: no file in {image_dir} matches {pattern!r} with channels "
            f"{dict(channels)}; fix image_pattern or paint.channels"
        )
    if problems and on_bad_image == "error":
        raise ImageIngestError(problems[0] if len(problems) == 1 else _all_problems(plate_id, problems))
    df["site"] = df["site"].astype("int64")
    df["channel_index"] = df["channel_index"].astype("int64")
    df["plane"] = df["plane"].astype("Int64")
    df["height"] = df["height"].astype("Int64")
    df["width"] = df["width"].astype("Int64")
    df["file_channel"] = df["file_channel"].astype(str)
    df.attrs["problems"] = problems
    return df.reset_index(drop=True)


def _all_problems(plate_id: str, problems: list[str], limit: int = 50) -> str:
    shown = problems[:limit]
    more = f"\n- ... and {len(problems) - limit} more" if len(problems) > limit else ""
    return (f"plate {plate_id}: {len(problems)} image problems, all listed. Fix: correct them together, or "
            "set paint.on_bad_image: quarantine to record the sites and go on:\n- "
            + "\n- ".join(shown) + more)


def _row(plate: str, well: str, site: int, channel: str, ci: int, token: str | int, plane: int | None,
         path: str, status: str, reason: str) -> dict[str, Any]:
    return {
        "plate": plate, "well": well, "site": site, "channel": channel, "channel_index": ci,
        "file_channel": str(token), "plane": plane, "path": path, "height": None, "width": None,
        "dtype": None, "sha256": None, "status": status, "reason": reason,
    }


def site_usable(index: pd.DataFrame) -> pd.Series:
    """Per (well, site), in index order: every channel ``ok`` and, when the index has image QC
    (``qc_flag``), none flagged. The one rule for which sites feed illumination and segmentation."""
    good = index["status"] == "ok"
    if "qc_flag" in index:
        good &= ~index["qc_flag"].astype(bool)
    return good.groupby([index["well"], index["site"]], sort=False).all()


def usable_sites(index: pd.DataFrame) -> list[tuple[str, int]]:
    """(well, site) pairs neither quarantined nor QC-flagged (:func:`site_usable`), in index order."""
    return [(w, int(s)) for (w, s), good in site_usable(index).items() if good]


def load_site(index: pd.DataFrame, well: str, site: int, channels: list[str] | None = None) -> np.ndarray:
    """Stack a site's channel images as ``[C, H, W]`` in ``channel_index`` order (or ``channels`` order)."""
    rows = index[(index["well"] == well) & (index["site"] == site)].sort_values("channel_index")
    if rows.empty:
        raise ImageIngestError(f"well {well} site {site} is not in the image index")
    if channels is not None:
        rows = rows.set_index("channel").loc[channels].reset_index()
    bad = rows[rows["status"] != "ok"]
    if not bad.empty:
        raise ImageIngestError(
            f"well {well} site {site} is quarantined ({'; '.join(bad['reason'])}); use usable_sites()"
        )
    return np.stack([read_image(p) for p in rows["path"]])
