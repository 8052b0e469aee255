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
    """Use as ``with snakemake_log(snakemake) as log:`` in a workflow script."""
    log_path = Path(snakemake.log[0]) if len(snakemake.log) else None
    name = f"pairedscreen.{getattr(snakemake, 'rule', 'step')}"
    logger = logging.getLogger(name)
    if log_path is None:
        yield logger
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
            logger.info("done in %.1f s", time.perf_counter() - start)
        except BaseException:
            fh.write(traceback.format_exc())
            raise
        finally:
            sys.stdout, sys.stderr = old_out, old_err
            root.removeHandler(handler)
