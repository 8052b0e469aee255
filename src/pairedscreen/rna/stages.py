"""File-in/file-out RNA stages called by ``workflow/scripts/*.py`` (one function per rule).

Each reads its inputs, calls the pure library functions of :mod:`pairedscreen.rna` and writes its
outputs atomically (:func:`pairedscreen.io.atomic_output`).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import anndata as ad
import pandas as pd

from pairedscreen import quarantine
from pairedscreen.expression import usable_cells
from pairedscreen.io import atomic_output, scratch_dir, write_json, write_parquet, write_tsv
from pairedscreen.rna import calling, cellranger, count, fastq, knockdown, qc
from pairedscreen.rna import guides as guide_calls
from pairedscreen.rna import summary as rna_summary
from pairedscreen.rna.kb_memory import sort_memory
from pairedscreen.rna.merge import write_merged_cells
from pairedscreen.sheets import read_guides, read_registry, read_sheet

PathLike = str | os.PathLike
log = logging.getLogger("pairedscreen.rna")


def _write_h5ad(adata: ad.AnnData, path: PathLike) -> None:
    with atomic_output(path) as tmp:
        adata.write_h5ad(tmp, compression="gzip")


@contextmanager
def _kb_log_on_failure() -> Iterator[None]:
    """On a kb failure, copy kb's whole log into the job's log before its (temporary) folder goes."""
    try:
        yield
    except count.KbError as exc:
        log.error("kb's log of the failed call:\n%s", exc.log_text)
        raise


def run_kb_ref(fasta: PathLike, gtf: PathLike, index: PathLike, t2g: PathLike, threads: int = 1) -> None:
    """kb ref (standard workflow) -> ``index`` + ``t2g``."""
    with scratch_dir(Path(index).parent, ".kb_ref.") as work, _kb_log_on_failure():
        out = count.kb_ref(fasta, gtf or None, work, threads)
        log.info("kb ref log:\n%s", (Path(work) / "kb_ref.log").read_text())
        with atomic_output(t2g) as tmp:
            shutil.move(out["t2g"], tmp)
        with atomic_output(index) as tmp:
            shutil.move(out["index"], tmp)


def run_kb_ref_guides(guides: PathLike, index: PathLike, t2g: PathLike, features: PathLike) -> None:
    """kb ref --workflow kite from the guides sheet -> ``index``, ``t2g``; ``features`` = the sheet's
    id/name/read/pattern/sequence (with header), read back by :func:`run_kb_count` for the layout."""
    sheet = read_guides(guides)
    with scratch_dir(Path(index).parent, ".kite.") as work, _kb_log_on_failure():
        out = count.kb_ref_guides(sheet, work)
        log.info("kb ref (kite) log:\n%s", (Path(work) / "kb_ref.log").read_text())
        with atomic_output(t2g) as tmp:
            shutil.move(out["t2g"], tmp)
        with atomic_output(index) as tmp:
            shutil.move(out["index"], tmp)
    write_tsv(sheet[["id", "name", "read", "pattern", "sequence"]], features)


def run_kb_count(
    r1: Sequence[PathLike],
    r2: Sequence[PathLike],
    index: PathLike,
    t2g: PathLike,
    chemistry: str,
    whitelist: PathLike | None,
    out_dir: PathLike,
    threads: int = 1,
    *,
    mem_mb: int,
    guide_features: PathLike | None = None,
) -> None:
    """kb count of one library's lanes into ``out_dir``; with ``guide_features`` a kite (guide) count whose
    technology string comes from the chemistry + the guides' read/pattern. kb's sort memory is what the
    job's ``mem_mb`` resource leaves beside the process (:func:`pairedscreen.rna.kb_memory.sort_memory`)."""
    technology, kite = chemistry, False
    if guide_features:
        technology, kite = count.guide_technology(chemistry, read_sheet(guide_features)), True
    log.info("kb count: technology %s, kite=%s, %d lane(s)", technology, kite, len(r1))
    with atomic_output(out_dir, is_dir=True) as tmp, _kb_log_on_failure():
        count.kb_count(index, t2g, list(r1), list(r2), technology, whitelist, tmp, threads,
                       memory=sort_memory(mem_mb), kite=kite)
        shutil.rmtree(tmp / "tmp", ignore_errors=True)
        log.info("kb log:\n%s", (tmp / "kb_count.log").read_text())


def run_fastq_check(
    library: str,
    chemistry: str,
    gex_r1: Sequence[PathLike],
    gex_r2: Sequence[PathLike],
    guide_r1: Sequence[PathLike],
    guide_r2: Sequence[PathLike],
    guide_sheet: PathLike,
    out: PathLike,
    threads: int = 1,
) -> dict:
    """Every FASTQ of a library checked in one pass each before ``kb count`` (:mod:`pairedscreen.rna.fastq`):
    sha256, gzip integrity, records, R1/R2 equal, read lengths for the chemistry (GEX) and for the guide
    layout (guides). Writes ``fastq_check.json``; raises :class:`~pairedscreen.rna.fastq.FastqError`
    listing every problem (nothing written then)."""
    gex_tech = f"{count.r1_layout(chemistry)}:1,0,0"
    guide_tech = count.guide_technology(chemistry, read_guides(guide_sheet))
    if len(gex_r1) != len(gex_r2) or len(guide_r1) != len(guide_r2):
        raise fastq.FastqError(
            f"library {library}: {len(gex_r1)} GEX R1 vs {len(gex_r2)} R2 and {len(guide_r1)} guide R1 vs "
            f"{len(guide_r2)} R2 lanes. Fix: list one R2 per R1 (';'-separated, same order) in "
            "rna_libraries.tsv")
    lanes = [fastq.Lane("gex", str(a), str(b), gex_tech, chemistry)
             for a, b in zip(gex_r1, gex_r2, strict=True)]
    lanes += [fastq.Lane("guide", str(a), str(b), guide_tech, f"{chemistry} + guide pattern")
              for a, b in zip(guide_r1, guide_r2, strict=True)]
    report = fastq.check_library(library, lanes, threads=threads)
    for f in report["files"]:
        log.info("%s %s lane %d: %s, %d reads, length %s-%s, sha256 %s", f["kind"], f["mate"], f["lane"],
                 f["path"], f["records"], f["min_length"], f["max_length"], f["sha256"][:12])
    write_json(report, out)
    return report


def run_rna_load(
    gex_dir: PathLike,
    guide_dir: PathLike,
    fastq_check: PathLike | None,
    library: str,
    batch: str,
    raw: PathLike,
    guides: PathLike,
    inputs: PathLike,
) -> None:
    """kb outputs -> ``raw.h5ad`` and ``guides_raw.h5ad`` (same obs) + ``inputs.json`` (FASTQ sha256 and
    read counts from :func:`run_fastq_check`'s ``fastq_check.json``, not recomputed; kb ``run_info.json``
    of both counts as ``kb_gex`` / ``kb_guide`` and bustools' ``inspect.json`` of the output BUS file as
    ``kb_gex_inspect`` / ``kb_guide_inspect``: the read counts of the ledger)."""
    gex, gd = count.load_library(gex_dir, guide_dir, library, batch)
    _write_h5ad(gex, raw)
    _write_h5ad(gd, guides)
    files = json.loads(Path(fastq_check).read_text())["files"] if fastq_check else []
    info: dict[str, Any] = {"library": library, "fastqs": {f["path"]: f["sha256"] for f in files},
                            "reads": {f["path"]: f["records"] for f in files}}
    for name, d in (("kb_gex", gex_dir), ("kb_guide", guide_dir)):
        for key, fname in ((name, "run_info.json"), (f"{name}_inspect", "inspect.json")):
            f = Path(d) / fname
            info[key] = json.loads(f.read_text()) if f.exists() else {}
    write_json(info, inputs)


def run_rna_load_cellranger(
    outs: PathLike,
    guide_sheet: PathLike,
    library: str,
    batch: str,
    cells: str,
    raw: PathLike,
    guides: PathLike,
    inputs: PathLike,
) -> None:
    """A Cell Ranger ``count``/``multi`` folder -> the same ``raw.h5ad`` / ``guides_raw.h5ad`` as
    :func:`run_rna_load` (:func:`pairedscreen.rna.cellranger.load_outs`; ``cells``: ``pipeline`` reads the raw
    matrix and the pipeline calls the cells, ``cellranger`` the filtered one and keeps Cell Ranger's cells) +
    ``inputs.json`` with ``cellranger``: the folder, matrix, Cell Ranger version and chemistry (the h5's
    attributes), metrics_summary.csv's row when present and the sha256 of every file read (``files``)."""
    gex, gd, info = cellranger.load_outs(outs, library, list(read_guides(guide_sheet)["id"].astype(str)),
                                         batch, cells=cells)
    _write_h5ad(gex, raw)
    _write_h5ad(gd, guides)
    for f, h in info["files"].items():
        log.info("Cell Ranger input %s sha256 %s", f, h[:12])
    write_json({"library": library, "fastqs": {}, "reads": {}, "cellranger": info}, inputs)


def run_rna_cells(
    raw: PathLike,
    guides: PathLike,
    guide_sheet: PathLike,
    registry: PathLike,
    expected_cells: int | None,
    params: Mapping[str, Any],
    cells_out: PathLike,
    ranks_out: PathLike,
    seed: int = 0,
    threads: int | None = None,
) -> None:
    """Cell calling -> QC flags -> doublets -> guide assignment of one library.

    ``params`` is the resolved config['rna'] (:func:`pairedscreen.config.load_config`: cell_calling, qc,
    doublets, guides sections, every key present); ``threads`` caps the doublet kNN's numba threads (the
    rule's threads; None: numba's default, all cores). A library read from Cell Ranger's filtered matrix
    (``uns['input']['cells'] == 'cellranger'``, :func:`run_rna_load_cellranger`) keeps Cell Ranger's cells
    (:func:`pairedscreen.rna.calling.keep_cells`) instead of calling them."""
    adata = ad.read_h5ad(raw)
    guide_counts = ad.read_h5ad(guides)
    cc, q, dbl, gd = (params[k] for k in ("cell_calling", "qc", "doublets", "guides"))
    source = adata.uns.get("input") or {}
    if source.get("cells") == "cellranger":   # Cell Ranger's filtered matrix: its cells are kept
        cells, ranks = calling.keep_cells(adata, source="cellranger")
    else:
        cells, ranks = calling.call_cells(
            adata, fdr=float(cc["fdr"]), ambient_max_umis=int(cc["ambient_max_umis"]),
            min_umis=int(cc["min_umis"]), n_iter=int(cc["n_iter"]), expected_cells=expected_cells,
            seed=seed,
        )
    log.info("cell calling: %s", cells.uns["cell_calling"])
    cells = qc.compute_qc(
        cells, mt_prefix=q["mt_prefix"], ribo_prefixes=list(q["ribo_prefixes"]),
        nmads_counts=float(q["nmads_counts"]), nmads_genes=float(q["nmads_genes"]),
        nmads_mt=float(q["nmads_mt"]), max_pct_mt=float(q["max_pct_mt"]),
    )
    if dbl["method"] != "scrublet":
        raise ValueError(f"doublet method {dbl['method']!r} not supported (scrublet)")
    cells = qc.flag_doublets(
        cells, expected_rate=float(dbl["expected_rate"]), seed=seed, knn=dbl["knn"], threads=threads,
    )
    cells = guide_calls.assign_guides(
        cells, guide_counts, read_guides(guide_sheet), registry=read_registry(registry),
        method=gd["method"], min_umis=int(gd["min_umis"]), threshold=int(gd["threshold"]),
        max_fraction=float(gd["max_fraction"]), many_umis=int(gd["many_umis"]),
        max_unassigned_many=float(gd["max_unassigned_many"]),
    )
    _write_h5ad(cells, cells_out)
    write_parquet(ranks, ranks_out)


def run_rna_summary(cells: PathLike, registry: PathLike, out: PathLike) -> None:
    """One library's ``cells.h5ad`` -> ``summary.h5ad``: the sufficient statistics of the screen-wide
    pseudobulk and knockdown (:mod:`pairedscreen.rna.summary`), so ``rna_merge`` never holds the screen."""
    summary = rna_summary.library_summary(ad.read_h5ad(cells), read_registry(registry))
    log.info("summary: %d perturbations, %d usable cells, %d knockdown values", summary.n_obs,
             int(summary.obs["n_cells"].sum()),
             len(summary.uns["targets"]["pert_count"]) + len(summary.uns["targets"]["ctrl_count"]))
    rna_summary.write_summary(summary, out)


def run_rna_merge(
    cells: Sequence[PathLike],
    registry: PathLike,
    alpha: float,
    cells_out: PathLike,
    pseudobulk_out: PathLike,
    knockdown_out: PathLike,
    quarantine_out: PathLike | None = None,
    *,
    on_empty: str,
    summaries: Sequence[PathLike] | None = None,
) -> pd.DataFrame:
    """All libraries -> merged ``cells.h5ad``, ``pseudobulk.h5ad`` (registry order) and ``knockdown.tsv``.

    A map-reduce: pseudobulk and knockdown combine the libraries' ``summary.h5ad``
    (:func:`run_rna_summary`; made here, one library at a time, when ``summaries`` is None), the merged
    cells are streamed file to file
    (:func:`pairedscreen.rna.merge.write_merged_cells`), and the quarantine check reads each library's obs
    alone; memory is bounded by one library's obs and the perturbations x genes tables, never the screen.

    A library with no usable cell (QC-passing singlet with one guide) is an :class:`EmptyDataError` under
    ``on_empty: error``; under ``quarantine`` it is recorded in ``quarantine_out``
    (``results/rna/quarantine.tsv``; see :mod:`pairedscreen.quarantine`) and its cells stay in the merge,
    flagged as they are (none of them is behind the pseudobulk). Returns the quarantine table."""
    if not cells:
        raise quarantine.EmptyDataError("no libraries to merge: config/rna_libraries.tsv has no rows")
    if summaries is not None and len(summaries) != len(cells):
        raise ValueError(f"{len(cells)} libraries' cells but {len(summaries)} summaries")
    if summaries is None:
        with scratch_dir(Path(pseudobulk_out).parent, ".summaries.") as work:
            made = [Path(work) / f"{k}.h5ad" for k in range(len(cells))]
            for c, out in zip(cells, made, strict=True):
                run_rna_summary(c, registry, out)
            return run_rna_merge(cells, registry, alpha, cells_out, pseudobulk_out, knockdown_out,
                                 quarantine_out, on_empty=on_empty, summaries=made)
    reg = read_registry(registry)
    records = []
    for p in cells:
        lib = ad.read_h5ad(p, backed="r")
        name = str(lib.obs["library"].iloc[0]) if lib.n_obs and "library" in lib.obs else Path(p).parent.name
        source = lib.uns.get("input") or {}
        no_guides = source.get("kind") == "cellranger" and int(source.get("guide_features", 1)) == 0
        problem = quarantine.library_problem(lib.obs, name, usable_cells(lib),
                                             no_guide_features=str(source.get("matrix", "")) if no_guides
                                             else None)
        lib.file.close()
        if problem:
            records.append(problem)
    names = [Path(p).parent.name for p in cells]
    held = quarantine.decide(records, names, on_empty, arm="rna", unit="library")
    for r in records:
        log.warning("library %s quarantined: %s", r["id"], r["reason"])
    n = write_merged_cells(cells, cells_out)
    log.info("merged cells: %d cells from %d libraries (streamed)", n, len(cells))
    controls = set(reg.loc[reg["is_control"], "perturbation_id"])
    pb = rna_summary.combine_pseudobulk(summaries, order=list(reg["perturbation_id"]), controls=controls)
    _write_h5ad(pb, pseudobulk_out)
    kd = rna_summary.combine_knockdown(summaries, reg)
    kd["significant"] = knockdown.significant(kd, alpha)
    for reason, n in kd.loc[~kd["measurable"], "reason"].value_counts().items():
        log.warning("knockdown not measurable for %d perturbation(s): %s", n, reason)
    write_tsv(kd, knockdown_out)
    if quarantine_out is not None:
        write_tsv(held, quarantine_out)
    return held
