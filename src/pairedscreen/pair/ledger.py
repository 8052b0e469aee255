"""The accounting ledger of a run: where every read, barcode, cell, image, site and object went.

Each count comes from the output of the stage that made it (nothing is recomputed here):

- per library: ``inputs.json`` (kb's ``run_info.json``: reads processed / pseudoaligned; bustools'
  ``inspect.json``: reads in the BUS file, on the whitelist; FASTQ records when the FASTQ check recorded
  them), ``raw.h5ad`` (barcodes), ``barcode_ranks.parquet`` (barcodes tested / called), ``cells.h5ad`` obs
  (QC flags, doublets, guide calls), ``pseudobulk.h5ad`` (cells behind each perturbation);
- per plate: ``image_index.parquet`` (images, status, QC flag), the masks' ``summary.tsv`` and
  ``objects.parquet`` (sites, nuclei, cells, matching), ``features/*.parquet`` (objects measured),
  ``cells.parquet`` / ``wells.parquet`` (cells per well), ``profiles.parquet`` (wells profiled).

An equation is ``{"equation": "a = b + c", "terms": {"a": n, "b": n, "c": n}, "balanced": bool}``;
:func:`check_equation` re-evaluates it from its terms, :func:`check_ledger` every equation of a ledger.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import anndata as ad
import numpy as np
import pandas as pd

from pairedscreen import columns as C
from pairedscreen.expression import usable_cells
from pairedscreen.paint.segment import read_site_summary

PathLike = str | os.PathLike


# ------------------------------------------------------------------------------------------ equations
def equation(text: str, **terms: int | None) -> dict[str, Any]:
    """An equation ``"lhs = t1 + t2 ..."`` over named integer terms, with ``balanced`` evaluated."""
    eq = {"equation": text, "terms": {k: (None if v is None else int(v)) for k, v in terms.items()}}
    eq["balanced"] = check_equation(eq)
    return eq


def check_equation(eq: Mapping[str, Any]) -> bool:
    """True when the left-hand term equals the sum of the right-hand terms (all known)."""
    lhs, _, rhs = str(eq["equation"]).partition("=")
    names = [lhs.strip()] + [t.strip() for t in rhs.split("+")]
    if not all(re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", n) for n in names):
        raise ValueError(f"malformed ledger equation {eq['equation']!r}")
    terms = eq["terms"]
    missing = [n for n in names if n not in terms]
    if missing:
        raise ValueError(f"ledger equation {eq['equation']!r}: no value for {missing}")
    vals = [terms[n] for n in names]
    if any(v is None for v in vals):
        return False
    return int(vals[0]) == int(sum(vals[1:]))


def _walk(node: Any, where: str) -> list[tuple[str, dict]]:
    out = []
    if isinstance(node, Mapping):
        if "equation" in node and "terms" in node:
            return [(where, node)]  # type: ignore[list-item]
        for k, v in node.items():
            out += _walk(v, f"{where}.{k}" if where else str(k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            out += _walk(v, f"{where}[{i}]")
    return out


def equations(ledger: Mapping[str, Any]) -> list[tuple[str, dict]]:
    """Every equation in a ledger with its location (``rna.L1.equations[2]``)."""
    return _walk(ledger, "")


def check_ledger(ledger: Mapping[str, Any]) -> dict[str, bool]:
    """{location: balanced} for every equation, re-evaluated from its terms."""
    return {where: check_equation(eq) for where, eq in equations(ledger)}


# ------------------------------------------------------------------------------------------------ RNA
def _n_obs(h5ad: PathLike) -> int:
    import h5py

    with h5py.File(h5ad, "r") as f:
        obs = f["obs"]
        index = obs.attrs.get("_index", "_index")
        return int(obs[index].shape[0])


def rna_library_ledger(inputs_json: PathLike, raw: PathLike, ranks: PathLike, cells_obs: pd.DataFrame,
                       fastq_r1: Sequence[str] | None = None) -> dict[str, Any]:
    """Reads -> barcodes -> called cells -> QC-passing -> singlets -> assigned of one library, each loss
    with its reason. ``fastq_r1``: the library's GEX R1 paths as in the sheet (their record counts, when
    ``inputs.json`` has them, are the reads in)."""
    info = json.loads(Path(inputs_json).read_text())
    eqs: list[dict] = []
    counts: dict[str, Any] = {}
    for kind in ("gex", "guide"):
        ri = info.get(f"kb_{kind}") or {}
        ins = info.get(f"kb_{kind}_inspect") or {}
        if "n_processed" not in ri:
            continue
        n, pa = int(ri["n_processed"]), int(ri.get("n_pseudoaligned", 0))
        c = {f"{kind}_reads_in": n, f"{kind}_reads_pseudoaligned": pa,
             f"{kind}_reads_not_pseudoaligned": n - pa}
        eqs.append(equation(f"{kind}_reads_in = {kind}_reads_pseudoaligned + {kind}_reads_not_pseudoaligned",
                            **c))
        if "numReads" in ins:   # bustools inspect of the BUS file kallisto wrote: an independent count
            c[f"{kind}_reads_in_bus"] = int(ins["numReads"])
            eqs.append(equation(f"{kind}_reads_pseudoaligned = {kind}_reads_in_bus",
                                **{k: c[k] for k in (f"{kind}_reads_pseudoaligned", f"{kind}_reads_in_bus")}))
            if "numReadsOnOnlist" in ins:
                c[f"{kind}_reads_barcode_on_whitelist"] = int(ins["numReadsOnOnlist"])
                c[f"{kind}_reads_barcode_off_whitelist"] = int(ins["numReads"]) - int(ins["numReadsOnOnlist"])
        counts.update(c)
    records = info.get("reads") or {}
    if fastq_r1 and records and all(p in records for p in fastq_r1):
        counts["fastq_records_r1"] = int(sum(int(records[p]) for p in fastq_r1))
        if "gex_reads_in" in counts:
            eqs.append(equation("fastq_records_r1 = gex_reads_in",
                                fastq_records_r1=counts["fastq_records_r1"],
                                gex_reads_in=counts["gex_reads_in"]))

    rk = pd.read_parquet(ranks, columns=["is_cell"])
    obs = cells_obs
    barcodes = _n_obs(raw)
    called = len(obs)
    ranked = len(rk)
    counts.update(barcodes=barcodes, barcodes_without_umis=barcodes - ranked, barcodes_ranked=ranked,
                  barcodes_not_called=int((~rk["is_cell"].astype(bool)).sum()), cells_called=called)
    eqs.append(equation("barcodes = barcodes_without_umis + barcodes_ranked", **{
        k: counts[k] for k in ("barcodes", "barcodes_without_umis", "barcodes_ranked")}))
    eqs.append(equation("barcodes_ranked = cells_called + barcodes_not_called", **{
        k: counts[k] for k in ("barcodes_ranked", "cells_called", "barcodes_not_called")}))

    flags = {c[len("qc_fail_"):]: obs[c].to_numpy(bool) for c in obs.columns if c.startswith("qc_fail_")}
    any_fail = np.zeros(called, bool)
    for v in flags.values():
        any_fail |= v
    pass_qc = obs["pass_qc"].to_numpy(bool) if "pass_qc" in obs else ~any_fail
    doublet = obs["predicted_doublet"].to_numpy(bool) if "predicted_doublet" in obs else \
        np.zeros(called, bool)
    pert = obs["perturbation"].astype(str).to_numpy() if "perturbation" in obs else np.full(called, "")
    single = pass_qc & ~doublet
    counts.update(cells_qc_pass=int(pass_qc.sum()), cells_qc_fail=int((~pass_qc).sum()),
                  cells_doublet=int((pass_qc & doublet).sum()), cells_singlet=int(single.sum()),
                  cells_no_guide=int((single & (pert == "unassigned")).sum()),
                  cells_multiple_guides=int((single & (pert == "multiple")).sum()))
    assigned = usable_cells(ad.AnnData(obs=pd.DataFrame(
        {"pass_qc": pass_qc, "predicted_doublet": doublet, "perturbation": pert},
        index=np.arange(called).astype(str))))
    counts["cells_assigned"] = int(assigned.sum())
    eqs.append(equation("cells_called = cells_qc_pass + cells_qc_fail", **{
        k: counts[k] for k in ("cells_called", "cells_qc_pass", "cells_qc_fail")}))
    eqs.append(equation("cells_qc_pass = cells_singlet + cells_doublet", **{
        k: counts[k] for k in ("cells_qc_pass", "cells_singlet", "cells_doublet")}))
    eqs.append(equation("cells_singlet = cells_assigned + cells_no_guide + cells_multiple_guides", **{
        k: counts[k]
        for k in ("cells_singlet", "cells_assigned", "cells_no_guide", "cells_multiple_guides")}))
    # QC failures by flag (a cell can fail several: the flags overlap, their union is cells_qc_fail)
    qc_fail_by_flag = {k: int(v.sum()) for k, v in flags.items()}
    counts["cells_qc_fail_any_flag"] = int(any_fail.sum())
    eqs.append(equation("cells_qc_fail = cells_qc_fail_any_flag", cells_qc_fail=counts["cells_qc_fail"],
                        cells_qc_fail_any_flag=counts["cells_qc_fail_any_flag"]))
    losses = {"no_umis": counts["barcodes_without_umis"], "not_a_cell": counts["barcodes_not_called"],
              "qc_fail": counts["cells_qc_fail"], "doublet": counts["cells_doublet"],
              "no_guide": counts["cells_no_guide"], "multiple_guides": counts["cells_multiple_guides"]}
    by_pert = pd.Series(pert[assigned]).value_counts()
    return {"counts": counts, "losses": losses, "qc_fail_by_flag": qc_fail_by_flag,
            "assigned_by_perturbation": {str(k): int(v) for k, v in sorted(by_pert.items())},
            "equations": eqs}


# ---------------------------------------------------------------------------------------------- paint
def _rows(parquet: PathLike) -> int:
    import pyarrow.parquet as pq

    return int(pq.ParquetFile(parquet).metadata.num_rows)


def paint_plate_ledger(plate: str, index: PathLike, masks: Sequence[PathLike], features: Sequence[PathLike],
                       cells: PathLike, wells: PathLike, profiled_wells: set[str] | None) -> dict[str, Any]:
    """Images -> sites -> objects segmented -> matched -> measured -> in profiles, for one plate.
    ``profiled_wells``: the plate's wells present in ``profiles.parquet`` (None: not known)."""
    import pyarrow.parquet as pq

    cols = ["well", "site", "status", "qc_flag", "reason"]
    cols += [c for c in ("qc_reason",) if c in pq.read_schema(index).names]
    idx = pd.read_parquet(index, columns=cols)
    ok = idx["status"].astype(str) == "ok"
    flag = idx["qc_flag"].fillna(False).astype(bool)
    keys = [idx["well"], idx["site"]]
    site_ok = ok.groupby(keys).transform("all")            # no channel quarantined
    site_flagged = flag.groupby(keys).transform("any")     # a channel flagged by image QC: site not used
    used = site_ok & ~site_flagged
    counts: dict[str, Any] = {"images_in": len(idx), "images_used": int(used.sum()),
                              "images_qc_flagged": int((ok & ~used).sum()),
                              "images_quarantined": int((~ok).sum())}
    eqs = [equation("images_in = images_used + images_qc_flagged + images_quarantined", **counts)]
    quarantine_reasons = idx.loc[~ok, "reason"].fillna("").astype(str).value_counts()
    qc_reasons = idx.loc[ok & flag, "qc_reason"].fillna("").astype(str).value_counts() \
        if "qc_reason" in idx else pd.Series(dtype=int)

    summ = pd.concat([read_site_summary(m) for m in masks],
                     ignore_index=True) if masks else pd.DataFrame(columns=["status"])
    objs = pd.concat([pd.read_parquet(Path(m) / "objects.parquet", columns=["well", "has_nucleus"])
                      for m in masks], ignore_index=True) if masks else pd.DataFrame(columns=["has_nucleus"])
    objs = objs[objs["well"].astype(str) != ""]   # an empty chunk's placeholder table
    status = summ["status"].astype(str)
    per_site = pd.DataFrame({"ok": site_ok, "flagged": site_flagged, "well": idx["well"], "site": idx["site"]}
                            ).drop_duplicates(["well", "site"])
    counts.update(sites=len(per_site), sites_segmented=int((status == "ok").sum()),
                  sites_qc_flagged=int((status == "qc_flagged").sum()),
                  sites_quarantined=int((~status.isin(["ok", "qc_flagged"])).sum()),
                  sites_qc_flagged_in_index=int((per_site["ok"] & per_site["flagged"]).sum()),
                  sites_quarantined_in_index=int((~per_site["ok"]).sum()))
    eqs += [
        equation("sites = sites_segmented + sites_qc_flagged + sites_quarantined", **{
            k: counts[k] for k in ("sites", "sites_segmented", "sites_qc_flagged", "sites_quarantined")}),
        equation("sites_qc_flagged = sites_qc_flagged_in_index", **{
            k: counts[k] for k in ("sites_qc_flagged", "sites_qc_flagged_in_index")}),
        equation("sites_quarantined = sites_quarantined_in_index", **{
            k: counts[k] for k in ("sites_quarantined", "sites_quarantined_in_index")}),
    ]

    def total(col: str) -> int:
        return int(pd.to_numeric(summ.get(col, pd.Series(dtype=float))).fillna(0).sum())

    matched = int(objs["has_nucleus"].astype(bool).sum())
    counts.update(nuclei_segmented=total("n_nuclei_detected"), nuclei_matched=matched,
                  nuclei_unmatched=total("n_nuclei_dropped"), objects_segmented=total("n_cells"),
                  objects_matched=matched, objects_without_nucleus=total("n_cells_without_nucleus"),
                  objects_in_masks=len(objs), objects_measured=int(sum(_rows(f) for f in features)),
                  cells_in_plate_table=_rows(cells))
    eqs += [
        equation("nuclei_segmented = nuclei_matched + nuclei_unmatched", **{
            k: counts[k] for k in ("nuclei_segmented", "nuclei_matched", "nuclei_unmatched")}),
        equation("objects_segmented = objects_matched + objects_without_nucleus", **{
            k: counts[k] for k in ("objects_segmented", "objects_matched", "objects_without_nucleus")}),
        equation("objects_segmented = objects_in_masks", **{
            k: counts[k] for k in ("objects_segmented", "objects_in_masks")}),
        equation("objects_segmented = objects_measured", **{
            k: counts[k] for k in ("objects_segmented", "objects_measured")}),
        equation("objects_measured = cells_in_plate_table", **{
            k: counts[k] for k in ("objects_measured", "cells_in_plate_table")}),
    ]
    losses: dict[str, int] = {"quarantined_images": counts["images_quarantined"],
                              "qc_flagged_images": counts["images_qc_flagged"],
                              "nuclei_without_cell": counts["nuclei_unmatched"]}
    _wells_part(counts, eqs, losses, wells, profiled_wells)
    return {"counts": counts, "losses": losses,
            "quarantine_reasons": {str(k): int(v) for k, v in quarantine_reasons.items()},
            "qc_flag_reasons": {str(k): int(v) for k, v in qc_reasons.items()},
            "equations": eqs}


def _wells_part(counts: dict[str, Any], eqs: list[dict], losses: dict[str, int], wells: PathLike,
                profiled_wells: set[str] | None) -> None:
    """The plate's wells: cells in the plate table = cells in its wells; wells and cells profiled or not."""
    w = pd.read_parquet(wells, columns=[C.WELL, C.COUNT_CELLS])
    n = w[C.COUNT_CELLS].fillna(0).astype(np.int64)
    counts.update(wells=len(w), cells_in_wells=int(n.sum()))
    eqs.append(equation("cells_in_plate_table = cells_in_wells", **{
        k: counts[k] for k in ("cells_in_plate_table", "cells_in_wells")}))
    if profiled_wells is not None:
        prof = w[C.WELL].astype(str).isin(profiled_wells).to_numpy()
        empty = (n == 0).to_numpy()
        counts.update(wells_profiled=int(prof.sum()), wells_not_profiled_no_cells=int((~prof & empty).sum()),
                      wells_not_profiled_no_features=int((~prof & ~empty).sum()),
                      cells_in_profiles=int(n[prof].sum()), cells_not_in_profiles=int(n[~prof].sum()))
        eqs += [
            equation("wells = wells_profiled + wells_not_profiled_no_cells + wells_not_profiled_no_features",
                     **{k: counts[k] for k in ("wells", "wells_profiled", "wells_not_profiled_no_cells",
                                               "wells_not_profiled_no_features")}),
            equation("cells_in_wells = cells_in_profiles + cells_not_in_profiles", **{
                k: counts[k] for k in ("cells_in_wells", "cells_in_profiles", "cells_not_in_profiles")}),
        ]
        losses["cells_in_wells_not_profiled"] = counts["cells_not_in_profiles"]


def cellprofiler_plate_ledger(record: PathLike, cells: PathLike, wells: PathLike,
                              profiled_wells: set[str] | None) -> dict[str, Any]:
    """A plate given as CellProfiler output (``cellprofiler.json`` of paint_load_cellprofiler): objects in
    the source -> joined cells (one per cytoplasm with its cell and nucleus) -> plate table -> wells ->
    profiles. No images, masks or features of ours: those counts are absent, not zero."""
    import json

    rec = json.loads(Path(record).read_text())
    obj = rec.get("objects") or {}
    joined = int(obj.get("joined", 0))
    counts: dict[str, Any] = {"source_images": int(rec.get("images", 0)), "source_cells_joined": joined,
                              "cells_in_plate_table": _rows(cells)}
    eqs = [equation("source_cells_joined = cells_in_plate_table", **{
        k: counts[k] for k in ("source_cells_joined", "cells_in_plate_table")})]
    losses: dict[str, int] = {}
    for comp in ("nuclei", "cells", "cytoplasm"):
        if comp in obj:
            counts[f"source_{comp}"] = int(obj[comp])
            counts[f"source_{comp}_not_joined"] = int(obj[comp]) - joined
            eqs.append(equation(f"source_{comp} = source_cells_joined + source_{comp}_not_joined", **{
                f"source_{comp}": counts[f"source_{comp}"], "source_cells_joined": joined,
                f"source_{comp}_not_joined": counts[f"source_{comp}_not_joined"]}))
            losses[f"{comp}_not_joined"] = counts[f"source_{comp}_not_joined"]
    _wells_part(counts, eqs, losses, wells, profiled_wells)
    return {"counts": counts, "losses": losses, "equations": eqs}


# --------------------------------------------------------------------------------------------- ledger
def build_ledger(rna: Mapping[str, Mapping[str, Any]], paint: Mapping[str, Mapping[str, Any]],
                 pseudobulk_cells: int | None = None, merged_cells: int | None = None,
                 paired_rna_cells: int | None = None, paired_paint_cells: int | None = None,
                 consensus_cells: int | None = None) -> dict[str, Any]:
    """The datasheet's ``ledger``: per library, per plate, and the equations across stages (the cells
    behind the pseudobulk and the consensus profiles = the sums over libraries / plates)."""
    cross: list[dict] = []
    if rna:
        called = sum(int(v["counts"]["cells_called"]) for v in rna.values())
        assigned = sum(int(v["counts"]["cells_assigned"]) for v in rna.values())
        if merged_cells is not None:
            cross.append(equation("rna_cells_merged = rna_cells_called_all_libraries",
                                  rna_cells_merged=merged_cells, rna_cells_called_all_libraries=called))
        if pseudobulk_cells is not None:
            cross.append(equation("rna_cells_in_pseudobulk = rna_cells_assigned_all_libraries",
                                  rna_cells_in_pseudobulk=pseudobulk_cells,
                                  rna_cells_assigned_all_libraries=assigned))
        if paired_rna_cells is not None:
            cross.append(equation("rna_cells_in_paired = rna_cells_assigned_all_libraries",
                                  rna_cells_in_paired=paired_rna_cells,
                                  rna_cells_assigned_all_libraries=assigned))
    if paint and all("cells_in_profiles" in v["counts"] for v in paint.values()):
        profiled = sum(int(v["counts"]["cells_in_profiles"]) for v in paint.values())
        if consensus_cells is not None:
            cross.append(equation("paint_cells_in_consensus = paint_cells_in_profiles_all_plates",
                                  paint_cells_in_consensus=consensus_cells,
                                  paint_cells_in_profiles_all_plates=profiled))
        if paired_paint_cells is not None:
            cross.append(equation("paint_cells_in_paired = paint_cells_in_profiles_all_plates",
                                  paint_cells_in_paired=paired_paint_cells,
                                  paint_cells_in_profiles_all_plates=profiled))
    ledger: dict[str, Any] = {"rna": {k: dict(v) for k, v in rna.items()},
                              "paint": {k: dict(v) for k, v in paint.items()}, "pair": {"equations": cross}}
    checks = check_ledger(ledger)
    ledger["balanced"] = bool(all(checks.values()))
    ledger["unbalanced"] = sorted(k for k, ok in checks.items() if not ok)
    return ledger
