"""The common base of the errors pairedscreen raises for bad input.

A :class:`PairedscreenError` is a *known* problem: its message already names the file (sheet, line,
well, site...) and the fix, so it is shown to the user as that message plus the log path, without a
Python traceback (:func:`pairedscreen.logs.snakemake_log` in workflow scripts, ``common.smk`` at
planning time and the ``pairedscreen`` command line). Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import sys


class PairedscreenError(Exception):
    """A problem with the user's input or setup; the message names where it is and how to fix it."""


class InputError(PairedscreenError, ValueError):
    """A value of the input or configuration the run cannot use (the message says which and the fix)."""


class MissingInputError(PairedscreenError, FileNotFoundError):
    """A file or folder the run needs is not there (the message says where it looked and the fix)."""


class SetupError(PairedscreenError, RuntimeError):
    """The machine or environment cannot run the step as configured (no GPU, a missing tool...)."""


def format_known_error(exc: BaseException, log_path: str | None = None) -> str:
    """``ErrorType: message`` (+ ``(log: PATH)``), the one-paragraph form a user sees."""
    text = f"{type(exc).__name__}: {exc}"
    return f"{text}\n(log: {log_path})" if log_path else text


def exit_if_known(exc: BaseException, log_path: str | None = None) -> None:
    """For a :class:`PairedscreenError`: print its message (and log path) to stderr and exit with status 1,
    without a traceback. Any other exception returns, for the caller to re-raise."""
    if isinstance(exc, PairedscreenError):
        print(format_known_error(exc, log_path), file=sys.stderr, flush=True)
        raise SystemExit(1) from None
