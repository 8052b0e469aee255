"""Route a workflow step's Python logging, warnings and stdout/stderr into the rule's log file.

Every ``workflow/scripts/*.py`` runs its work inside :func:`snakemake_log`. A known error (a
:class:`~pairedscreen.errors.PairedscreenError`: bad input, with the file and the fix in its message) is
written to the log and to stderr as that message plus the log path, and the step exits with status 1,
without a Python traceback; any other exception is a bug and keeps its full traceback in the log.
"""

from __future__ import annotations

import contextlib
import logging
import sys
import time
import traceback
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pairedscreen.errors import PairedscreenError, exit_if_known, format_known_error


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
        try:
            yield logger
            record()
        except PairedscreenError as exc:
            exit_if_known(exc, None)
        return
    log_path.parent.mkdir(parents=True, exist_ok=True)
    known: PairedscreenError | None = None
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
        except PairedscreenError as exc:
            fh.write(format_known_error(exc) + "\n")
            known = exc
        except BaseException:
            fh.write(traceback.format_exc())
            raise
        finally:
            sys.stdout, sys.stderr = old_out, old_err
            root.removeHandler(handler)
    if known is not None:
        exit_if_known(known, str(log_path))
