"""The licence ledger of a run: every segmentation model it used (weights and training-data licence), every
tool installed in its environment (licence, installed version) and its reference data, each with a
``commercial_use`` verdict (allowed | restricted | unknown) and the reason for it - never blank.

What pairedscreen knows lives in ``licences.yaml`` next to this module (package data); :func:`run_ledger`
picks the entries a run used from its configuration. Why: a dataset sold or shared downstream inherits the
terms of the models that made its masks (pretrained Cellpose weights are trained on non-commercial data),
and that has to be on record in the datasheet, the report and the Croissant metadata.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from functools import cache
from importlib.metadata import PackageNotFoundError, metadata
from pathlib import Path
from typing import Any

from pairedscreen.config import CELLPOSE_MODEL_NAMES

LEDGER = Path(__file__).with_name("licences.yaml")
COMMERCIAL_USE = ("allowed", "restricted", "unknown")
COLUMNS = ("kind", "name", "used_for", "path", "version", "licence", "training_data", "training_data_licence",
           "commercial_use", "reason", "source")


@cache
def load_ledger(path: str | os.PathLike = LEDGER) -> dict[str, Any]:
    """The ledger file as a dict (``models``, ``tools``, ``reference``)."""
    import yaml

    return yaml.safe_load(Path(path).read_text())


def _row(**kw: Any) -> dict[str, Any]:
    row = {c: kw.get(c) for c in COLUMNS}
    if row["commercial_use"] not in COMMERCIAL_USE:
        raise ValueError(f"licence ledger entry {row['name']!r}: commercial_use {row['commercial_use']!r} "
                         f"is not one of {COMMERCIAL_USE}")
    if not str(row["reason"] or "").strip():
        raise ValueError(f"licence ledger entry {row['name']!r} has no reason for its commercial_use")
    return row


def declared_licence(distribution: str) -> str | None:
    """The licence an installed distribution declares in its metadata (License-Expression, else a short
    License field, else the licence classifiers), None when absent or not installed."""
    try:
        m = metadata(distribution)
    except PackageNotFoundError:
        return None
    if m.get("License-Expression"):
        return str(m["License-Expression"])
    lic = (m.get("License") or "").strip()
    if lic and "\n" not in lic and len(lic) < 60:
        return lic
    classifiers = [c.split(" :: ")[-1] for c in (m.get_all("Classifier") or []) if c.startswith("License ::")]
    return "; ".join(classifiers) or None


def _installed(distribution: str) -> str | None:
    try:
        return metadata(distribution)["Version"]
    except PackageNotFoundError:
        return None


def model_entry(compartment: str, value: str, *, workdir: str | os.PathLike, basedir: str | os.PathLike,
                ledger: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The ledger row of the model ``value`` (a Cellpose model name or a model file path, as in
    ``paint.segmentation.{compartment}.model``). A file is matched by its name to the ledger; a file not
    in the ledger is described from its JSON sidecar (written by ``pairedscreen train-segmentation``)
    when it records a random initialisation on simulated images, else recorded as unknown."""
    known = (ledger or load_ledger())["models"]
    used_for = f"segmentation of {compartment}"
    rel = None
    if value in CELLPOSE_MODEL_NAMES:
        key, file = value, None
    else:
        p = Path(value)
        cands = [p] if p.is_absolute() else [Path(workdir) / p, Path(basedir) / p]
        file = next((c for c in cands if c.exists()), None)
        key = p.name
        inside = file is not None and Path(file).resolve().is_relative_to(Path(workdir).resolve())
        rel = os.path.relpath(file, workdir) if inside else value   # else as configured (the repository's)
    if key in known:
        e = known[key]
        return _row(kind="model", name=key, used_for=used_for, path=rel, licence=e["weights_licence"],
                    training_data=e["training_data"], training_data_licence=e["training_data_licence"],
                    commercial_use=e["commercial_use"], reason=e["reason"], source=e.get("source"))
    sidecar = Path(str(file) + ".json") if file is not None else None
    side = json.loads(sidecar.read_text()) if sidecar is not None and sidecar.exists() else {}
    if side and side.get("pretrained_model") is None and (side.get("training_data") or {}).get("spec"):
        return _row(kind="model", name=key, used_for=used_for, path=rel, licence="MIT (pairedscreen)",
                    training_data="images simulated by `pairedscreen simulate` (sidecar "
                                  f"{sidecar.name}: random initialisation, no downloaded weights)",
                    training_data_licence="MIT (pairedscreen)", commercial_use="allowed",
                    reason="its sidecar records a random initialisation trained on simulated images only",
                    source=sidecar.name)
    base = side.get("pretrained_model") if side else None
    why = (f"model file fine-tuned from {base!r}: it inherits that model's terms, see its ledger entry"
           if base else "model not in pairedscreen's licence ledger and no training record next to it; "
                        "record its weights' and training data's licences before sharing the dataset")
    return _row(kind="model", name=key, used_for=used_for, path=rel, licence="unknown",
                training_data="unknown", training_data_licence="unknown", commercial_use="unknown",
                reason=why)


def tool_entries(ledger: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
    """One row per ledger tool installed in this environment (version from importlib.metadata); tools not
    installed were not used by the run and are left out."""
    rows = []
    for name, e in (ledger or load_ledger())["tools"].items():
        ver = _installed(e["distribution"])
        if ver is None:
            continue
        note = f"; {e['note']}" if e.get("note") else ""
        if e["distribution"] != name and e["distribution"].replace("-", "_") != name:
            ver = f"bundled with {e['distribution']} {ver}"   # e.g. kallisto's binary in kb-python
        rows.append(_row(kind="tool", name=name, used_for=e["used_for"], version=ver, licence=e["licence"],
                         commercial_use="allowed", source=f"{e['distribution']} package metadata: "
                         f"{declared_licence(e['distribution']) or 'no licence declared'}",
                         reason=f"open-source licence ({e['licence']}) with no field-of-use "
                                f"restriction{note}"))
    return rows


def reference_entries(config: Mapping[str, Any], *, workdir: str | os.PathLike,
                      ledger: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
    """One row per reference file the run used (``reference.*``, ``rna.whitelist``, non-empty only):
    simulated when ``truth_dir`` is set, else as supplied (licence from ``train.croissant.reference_licence``
    when given, else unknown with the reason)."""
    ref = (ledger or load_ledger())["reference"]
    simulated = bool(str(config["truth_dir"] or "").strip())
    stated = str(config["train"]["croissant"]["reference_licence"] or "").strip()
    files = {f"reference.{k}": v for k, v in config["reference"].items()}
    files["rna.whitelist"] = config["rna"]["whitelist"]
    rows = []
    for key, value in files.items():
        if not str(value or "").strip():
            continue
        p = Path(value)
        path = os.path.relpath(p, workdir) if p.is_absolute() else str(value)
        if simulated:
            e = ref["simulated"]
            rows.append(_row(kind="reference", name=key, path=path, used_for="RNA quantification",
                             licence=e["licence"], commercial_use=e["commercial_use"], reason=e["reason"]))
        elif stated:
            rows.append(_row(kind="reference", name=key, path=path, used_for="RNA quantification",
                             licence=stated, commercial_use="unknown",
                             reason="licence as stated in train.croissant.reference_licence; pairedscreen "
                                    "does not interpret its terms"))
        else:
            e = ref["supplied"]
            rows.append(_row(kind="reference", name=key, path=path, used_for="RNA quantification",
                             licence=e["licence"], commercial_use=e["commercial_use"], reason=e["reason"]))
    return rows


def run_ledger(config: Mapping[str, Any], *, workdir: str | os.PathLike, basedir: str | os.PathLike,
               paint: bool, rna: bool) -> list[dict[str, Any]]:
    """The licence rows of a run: the segmentation models of ``paint.segmentation`` (when the paint arm
    ran), the reference data (when the RNA arm ran) and the installed tools."""
    rows: list[dict[str, Any]] = []
    if paint:
        seg = config["paint"]["segmentation"]
        rows += [model_entry(c, seg[c]["model"], workdir=workdir, basedir=basedir)
                 for c in ("nuclei", "cells")]
    if rna:
        rows += reference_entries(config, workdir=workdir)
    return rows + tool_entries()


def restricted(rows: list[Mapping[str, Any]]) -> list[str]:
    """One sentence per row whose commercial use is not allowed (restricted or unknown), for warnings and
    the Croissant ``dataLimitations``."""
    return [f"{r['kind']} {r['name']} ({r.get('used_for') or ''}): commercial use {r['commercial_use']} - "
            f"{r['reason']}" for r in rows if r["commercial_use"] != "allowed"]
