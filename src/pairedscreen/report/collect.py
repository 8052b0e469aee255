"""Gather the data behind every report section into plain dicts/DataFrames (nothing here draws or computes
a statistic: :mod:`pairedscreen.report.plots` draws, the stages computed and stored every number).

Sections: :mod:`~pairedscreen.report.sections.provenance` (overview), :mod:`~.sections.rna`,
:mod:`~.sections.paint`, :mod:`~.sections.quality`, :mod:`~.sections.train`. They read only the stored
results the report rule declares as input (``workflow/rules/report.smk``), found through
:func:`pairedscreen.paths.path`; the libraries and plates are the ones the datasheet lists
(``counts.pair``). Every optional input that is missing becomes a note ``"not available: <file>
missing"``; only the datasheet is required.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pairedscreen.report.inputs import Inputs, ReportInputError, dig
from pairedscreen.report.sections.paint import collect_paint
from pairedscreen.report.sections.provenance import collect_overview, read_datasheet
from pairedscreen.report.sections.quality import collect_paired
from pairedscreen.report.sections.rna import collect_rna
from pairedscreen.report.sections.train import collect_train

__all__ = ["ReportInputError", "collect_report_data"]


def _truth_dir(results_dir: Path, config: Mapping[str, Any], truth_dir: Path | None) -> Path | None:
    if truth_dir is None and config.get("truth_dir"):
        t = Path(str(config["truth_dir"]))
        truth_dir = t if t.is_absolute() else results_dir.parent / t
    return Path(truth_dir) if truth_dir is not None and Path(truth_dir).is_dir() else None


def collect_report_data(results_dir: Path, config: Mapping[str, Any] | None, truth_dir: Path | None = None
                        ) -> dict[str, Any]:
    """Everything the report shows, as plain dicts/DataFrames/arrays; ``inputs_read``: every file opened.
    ``config`` None (the workflow): the configuration the datasheet records, the values the run's stages
    read, so the report reruns only when the datasheet does."""
    results_dir = Path(results_dir)
    truth = _truth_dir(results_dir, config or {}, truth_dir)
    inputs = Inputs(results_dir, truth)
    ds = read_datasheet(inputs)
    if config is None:
        config = ds["config"] if isinstance(ds.get("config"), Mapping) else {}
    paired_notes: list[str] = []
    metrics = inputs.json("quality_metrics", paired_notes) or {}
    libraries = [str(x) for x in dig(ds, "counts", "pair", "libraries") or []]
    plates = [str(x) for x in dig(ds, "counts", "pair", "plates") or []]
    rna = collect_rna(inputs, libraries, config)
    cp = ds.get("cellprofiler") if isinstance(ds.get("cellprofiler"), Mapping) else {}
    paint = collect_paint(inputs, plates, config, metrics, cp)
    overview = collect_overview(inputs, ds, metrics, rna, paint)
    paired = collect_paired(inputs, config, ds, metrics, paired_notes)
    train = collect_train(inputs)
    return {"overview": overview, "rna": rna, "paint": paint, "paired": paired, "train": train,
            "truth_dir": str(truth) if truth else None, "datasheet": ds, "metrics": metrics,
            "run_name": results_dir.resolve().parent.name, "inputs_read": list(dict.fromkeys(inputs.read))}
