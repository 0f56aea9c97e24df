"""Logs as a dub's user reads them: one line per stage and language, no tracebacks on the
console for a stage that failed (the details stay in Prefect's log and the catalog)."""

from __future__ import annotations

import copy
import logging

from polydub.errors import DubError, JobFailed, JobRefused


class OneLineFormatter(logging.Formatter):
    """Formats like the wrapped formatter, but a polydub error's traceback is left out."""

    def __init__(self, inner: logging.Formatter | None):
        super().__init__()
        self.inner = inner or logging.Formatter()

    def format(self, record: logging.LogRecord) -> str:
        exc = record.exc_info[1] if record.exc_info else None
        if exc is None or not _ours(exc):
            return self.inner.format(record)
        # A copy: other handlers (Prefect's API log) still get the whole record.
        quiet = copy.copy(record)
        quiet.exc_info, quiet.exc_text, quiet.stack_info = None, None, None
        return self.inner.format(quiet)


def _ours(exc: BaseException) -> bool:
    while exc is not None:
        if isinstance(exc, DubError):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


class EndOfRun(logging.Filter):
    """Prefect logs a failed run's result exception with its traceback ("Engine execution
    exited with unexpected exception"); for a dub that ended Partial or Failed, or was
    refused, that exception is only the carrier of the state's message: say it in one line."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, (JobFailed, JobRefused)):
            record.msg, record.args = f"run ended: {exc}", ()
            record.exc_info, record.exc_text = None, None
        return True


def quiet_console_tracebacks(level: int | None = None) -> None:
    """Wrap the formatter of Prefect's console handlers (idempotent); with `level`, show
    only records at or above it there (the command line prints its own summary), and keep
    Prefect's failed sends to its server off the console. What Prefect's API receives is
    unchanged."""
    from prefect.logging.handlers import PrefectConsoleHandler

    runs = logging.getLogger("prefect.flow_runs")
    if not any(isinstance(f, EndOfRun) for f in runs.filters):
        runs.addFilter(EndOfRun())
    for name in ("", "prefect", "prefect.flow_runs", "prefect.task_runs"):
        for handler in logging.getLogger(name).handlers:
            if not isinstance(handler, PrefectConsoleHandler):
                continue
            if not isinstance(handler.formatter, OneLineFormatter):
                handler.setFormatter(OneLineFormatter(handler.formatter))
            if level is not None:
                handler.setLevel(level)
    if level is not None:
        # Prefect's own services (events, logs) report each failed send to a server that is
        # gone: an event dump per item, and raw text on stderr. The command line says once
        # what Prefect could not record.
        for handler in logging.getLogger("prefect._internal").handlers:  # its logger reads a setting, not its level
            handler.setLevel(level)
        logging.raiseExceptions = False
