"""Route a workflow step's Python logging, warnings and stdout/stderr into the rule's log file."""

from __future__ import annotations

import contextlib
import logging
import sys
import time
import traceback
from collections.abc import Iterator
from pathlib import Path
from typing import Any


@contextlib.contextmanager
def snakemake_log(snakemake: Any) -> Iterator[logging.Logger]:
    """Use as ``with snakemake_log(snakemake) as log:`` in a workflow script.

    Before the step runs it checks that ``pairedscreen`` is the workflow's own library
    (:func:`pairedscreen.provenance.check_workflow_library`); after it succeeds it writes the job's
    provenance record (``results/provenance/{rule}/{name}.json``, :func:`pairedscreen.provenance.record_job`).
    """
    from pairedscreen import provenance

    if getattr(snakemake, "scriptdir", None):
        provenance.check_workflow_library(snakemake.scriptdir)
    log_path = Path(snakemake.log[0]) if len(snakemake.log) else None
    rule = getattr(snakemake, "rule", "step")
    name = f"pairedscreen.{rule}"
    logger = logging.getLogger(name)
    job = log_path.stem if log_path is not None else \
        "_".join(str(v) for v in dict(snakemake.wildcards).values()) or "all"

    def record() -> None:
        provenance.record_job(Path.cwd(), rule, job, list(snakemake.output), dict(snakemake.wildcards))

    if log_path is None:
        yield logger
        record()
        return
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "w", buffering=1) as fh:
        handler = logging.StreamHandler(fh)
        handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s"))
        root = logging.getLogger()
        root.addHandler(handler)
        root.setLevel(logging.INFO)
        logging.captureWarnings(True)
        old_out, old_err = sys.stdout, sys.stderr
        sys.stdout = sys.stderr = fh
        start = time.perf_counter()
        try:
            logger.info("rule %s: wildcards %s", getattr(snakemake, "rule", "?"), dict(snakemake.wildcards))
            yield logger
            record()
            logger.info("done in %.1f s", time.perf_counter() - start)
        except BaseException:
            fh.write(traceback.format_exc())
            raise
        finally:
            sys.stdout, sys.stderr = old_out, old_err
            root.removeHandler(handler)
