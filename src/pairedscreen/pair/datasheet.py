"""``results/datasheet.json``: what went in (paths + sha256), with which software and configuration, what
each stage kept and dropped, the quality metrics, and truth recovery on simulated screens.

Schema: ``workflow/schemas/datasheet.schema.json``; :func:`validate_datasheet` checks a datasheet against it.
The datasheet is deterministic for given inputs (no timestamps unless ``generated_at`` is passed).
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
from collections.abc import Mapping, Sequence
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import anndata as ad
import numpy as np
import pandas as pd

from pairedscreen.columns import MULTIPLE, UNASSIGNED
from pairedscreen.expression import qc_singlets, usable_cells
from pairedscreen.io import _json_default, jsonable, repo_root, sha256sum

SCHEMA_VERSION = "1.0"
SOFTWARE = ("pairedscreen", "snakemake", "scanpy", "anndata", "mudata", "cellpose", "kb-python", "numpy",
            "pandas", "scipy", "scikit-learn", "scikit-image", "torch", "pycytominer", "copairs",
            "statsmodels", "pyarrow", "tifffile")


def software_versions(packages: Sequence[str] = SOFTWARE) -> dict[str, str | None]:
    """Installed version of each distribution (None when absent), plus ``python``."""
    out: dict[str, str | None] = {"python": platform.python_version()}
    for name in packages:
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = None
    return out


def config_digest(config: Mapping[str, Any]) -> str:
    """sha256 of the config as canonical JSON (sorted keys, no whitespace)."""
    text = json.dumps(config, sort_keys=True, separators=(",", ":"), default=_json_default)
    return hashlib.sha256(text.encode()).hexdigest()


def describe_inputs(inputs: Mapping[str, str | os.PathLike | Sequence[str | os.PathLike]]) -> list[dict]:
    """``{role: path or [paths]}`` -> [{role, path, bytes, sha256}] (directories: every file under them)."""
    rows = []
    for role, paths in inputs.items():
        plist = [paths] if isinstance(paths, str | os.PathLike) else list(paths)
        for p in plist:
            p = Path(p)
            files = sorted(f for f in p.rglob("*") if f.is_file()) if p.is_dir() else [p]
            for f in files:
                rows.append({"role": role, "path": str(f), "bytes": f.stat().st_size, "sha256": sha256sum(f)})
    return rows


def relative_input(record: Mapping[str, Any], root: str | os.PathLike) -> dict:
    """An input record with its path relative to ``root`` (the working directory; a relative path is taken
    as relative to it already) and ``bytes`` its size on disk now (left out when the file is gone), so
    every input row reads the same whichever arm hashed it and on whichever machine the run went."""
    out = dict(record)
    p = Path(str(record["path"]))
    full = p if p.is_absolute() else Path(root) / p
    out["path"] = Path(os.path.relpath(full, root)).as_posix()
    if full.is_file():
        out["bytes"] = full.stat().st_size
    return out


# --------------------------------------------------------------------------------------- stage counts
def read_kb_run_info(path: str | os.PathLike) -> dict:
    """kb/kallisto ``run_info.json`` -> {"reads": n_processed, "pseudoaligned": n_pseudoaligned}."""
    info = json.loads(Path(path).read_text())
    return {"reads": int(info.get("n_processed", 0)), "pseudoaligned": int(info.get("n_pseudoaligned", 0))}


def rna_stage_counts(cells_obs: pd.DataFrame, *, reads: int | None = None, barcodes: int | None = None,
                     perturbation_key: str = "perturbation") -> dict:
    """Counts from ``results/rna/cells.h5ad`` obs: called cells, removed by reason (each ``qc_fail_*`` flag
    and doublets, which overlap; then, among the QC-passing singlets, no guide and multiple guides: the
    ledger's ``cells_no_guide`` / ``cells_multiple_guides``), kept (the cells behind the pseudobulk:
    :func:`pairedscreen.expression.usable_cells`)."""
    obs = cells_obs
    n = len(obs)
    removed: dict[str, int] = {}
    for c in obs.columns:
        if c.startswith("qc_fail_"):
            removed[c[len("qc_fail_"):]] = int(obs[c].astype(bool).sum())
    if "predicted_doublet" in obs:
        removed["doublet"] = int(obs["predicted_doublet"].astype(bool).sum())
    pert = obs[perturbation_key].astype(str) if perturbation_key in obs else pd.Series("", index=obs.index)
    single = pd.Series(qc_singlets(obs), index=obs.index)
    removed["unassigned_guide"] = int((single & (pert == UNASSIGNED)).sum())
    removed["multiple_guides"] = int((single & (pert == MULTIPLE)).sum())
    holder = ad.AnnData(obs=obs.set_axis(obs.index.astype(str)))   # obs names as anndata keeps them
    kept = usable_cells(holder, key=perturbation_key) if perturbation_key in obs else np.zeros(n, bool)
    ok = pd.Series(kept, index=obs.index)
    out: dict[str, Any] = {"reads": reads, "barcodes": barcodes, "cells_called": int(n),
                           "cells_kept": int(ok.sum()), "cells_removed": removed}
    if "library" in obs:
        by_lib = ok.groupby(obs["library"].astype(str)).sum()
        out["cells_kept_by_library"] = {str(k): int(v) for k, v in by_lib.items()}
    return out


GUIDE_STATS = ("method", "assignment_rate", "many_umis_cutoff", "n_many_umis", "unassigned_many_umis",
               "unassigned_many_share", "max_unassigned_many")


def guide_assignment_stats(cells_h5ad: str | os.PathLike) -> tuple[dict, str | None]:
    """One library's guide assignment record from its ``cells.h5ad`` ``uns['guide_assignment']`` (written by
    :func:`pairedscreen.rna.guides.assign_guides`; read alone, not the cells): the stats of
    :data:`GUIDE_STATS` present, and its warning (None when the share of cells with many guide UMIs left
    unassigned is within ``rna.guides.max_unassigned_many``)."""
    import anndata
    import h5py

    with h5py.File(cells_h5ad, "r") as f:
        key = "uns/guide_assignment"
        rec = anndata.io.read_elem(f[key]) if key in f else {}
    warning = rec.get("warning")
    return {k: jsonable(rec[k]) for k in GUIDE_STATS if k in rec}, (str(warning) if warning else None)


def add_stage_counts(parts: Sequence[dict], *, reads: int | None = None, barcodes: int | None = None) -> dict:
    """The screen's :func:`rna_stage_counts` from each library's (computed on its own obs): the counts are
    sums, ``cells_removed`` is summed per reason (in first-seen order), ``cells_kept_by_library`` joined."""
    out: dict[str, Any] = {"reads": reads, "barcodes": barcodes,
                           "cells_called": sum(int(p["cells_called"]) for p in parts),
                           "cells_kept": sum(int(p["cells_kept"]) for p in parts), "cells_removed": {}}
    for p in parts:
        for k, v in p["cells_removed"].items():
            out["cells_removed"][k] = out["cells_removed"].get(k, 0) + int(v)
    if any("cells_kept_by_library" in p for p in parts):
        out["cells_kept_by_library"] = {}
        for p in parts:
            for k, v in p.get("cells_kept_by_library", {}).items():
                out["cells_kept_by_library"][k] = out["cells_kept_by_library"].get(k, 0) + int(v)
        out["cells_kept_by_library"] = dict(sorted(out["cells_kept_by_library"].items()))  # as a groupby
    return out


def paint_stage_counts(image_index: pd.DataFrame, *, objects: int | None = None,
                       cells_profiled: int | None = None, wells_profiled: int | None = None) -> dict:
    """Counts from ``image_index.parquet`` (all plates): images, quarantined images, sites, flagged sites
    (any channel with ``qc_flag``), plus object / profiled-cell / well totals given by the caller."""
    idx = image_index
    site_cols = [c for c in ("plate", "well", "site") if c in idx.columns]
    sites = idx.groupby(site_cols).size() if site_cols else pd.Series(dtype=int)
    if "qc_flag" in idx and site_cols:
        flagged = idx.groupby(site_cols)["qc_flag"].any()
    else:
        flagged = pd.Series(dtype=bool)
    quarantined = int((idx["status"].astype(str) == "quarantined").sum()) if "status" in idx else 0
    return {"images": int(len(idx)), "images_quarantined": quarantined, "sites": int(len(sites)),
            "sites_flagged": int(flagged.sum()), "objects": objects, "cells_profiled": cells_profiled,
            "wells_profiled": wells_profiled}


# ------------------------------------------------------------------------------------------ datasheet
def build_datasheet(*, config: Mapping[str, Any], inputs: Mapping[str, Any] | None = None,
                    counts: Mapping[str, Any] | None = None, metrics: Mapping[str, Any] | None = None,
                    truth_recovery: Mapping[str, Any] | None = None, outputs: Mapping[str, Any] | None = None,
                    prehashed: Sequence[Mapping[str, Any]] | None = None,
                    generated_at: str | None = None,
                    software: Mapping[str, str | None] | None = None,
                    root: str | os.PathLike | None = None,
                    arms: Mapping[str, Any] | None = None,
                    quarantine: Sequence[Mapping[str, Any]] | None = None) -> dict:
    """Assemble the datasheet dict (JSON-ready: numpy scalars/NaN converted).

    ``inputs``: {role: path | [paths]} hashed here; ``counts``: {"rna": rna_stage_counts(...),
    "paint": paint_stage_counts(...), "pair": {...}}; ``metrics``: {"replicate": ..., "effect": ...,
    "position": ..., "batch": ..., "concordance": ...}; ``truth_recovery``: from
    ``quality.truth.truth_recovery`` - required whenever ``config['truth_dir']`` is set; ``prehashed``:
    input records ({role, path, sha256[, bytes]}) whose checksums an arm already computed (FASTQs,
    images), appended to ``inputs``; every input's path is made relative to ``root`` (default: the working
    directory) and its ``bytes`` read from disk (:func:`relative_input`); ``outputs``: {role: path | [paths]}
    recorded with their
    content digests (:func:`pairedscreen.digest.content_digest`, ``root`` = the working directory);
    ``arms``: per arm {status present|missing, units, used}; ``quarantine``: records of
    :mod:`pairedscreen.quarantine` (plates, libraries, perturbations).
    """
    if str(config.get("truth_dir") or "").strip() and not truth_recovery:
        raise ValueError("config truth_dir is set: truth_recovery must be given")
    sheet: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "software": dict(software) if software is not None else software_versions(),
        "inputs": [relative_input(r, root if root is not None else Path.cwd()) for r in
                   describe_inputs(inputs or {}) + [dict(r) for r in (prehashed or [])]],
        "config": dict(config),
        "config_sha256": config_digest(config),
        "arms": dict(arms) if arms is not None else {
            a: {"status": "present", "units": []} for a in ("rna", "paint")},
        "counts": dict(counts or {}),
        "metrics": dict(metrics or {}),
        "quarantine": [dict(r) for r in (quarantine or [])],
    }
    if truth_recovery:
        sheet["truth_recovery"] = dict(truth_recovery)
    if outputs:
        from pairedscreen.digest import describe_outputs

        sheet["outputs"] = describe_outputs(outputs, root=root)
    if generated_at:
        sheet["generated_at"] = generated_at
    return jsonable(sheet)


def schema_path() -> Path:
    """The schema in the source checkout (``workflow/schemas/datasheet.schema.json``)."""
    try:
        return repo_root() / "workflow" / "schemas" / "datasheet.schema.json"
    except FileNotFoundError:
        return Path(__file__).resolve().parents[3] / "workflow" / "schemas" / "datasheet.schema.json"


def validate_datasheet(sheet: Mapping[str, Any], schema: str | os.PathLike | None = None) -> None:
    """Raise ``jsonschema.ValidationError`` when ``sheet`` does not satisfy the datasheet schema."""
    import jsonschema

    spec = json.loads(Path(schema or schema_path()).read_text())
    jsonschema.validate(sheet, spec, cls=jsonschema.Draft202012Validator)
