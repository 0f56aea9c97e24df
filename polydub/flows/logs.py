"""Logs as a dub's user reads them: one line per stage and language; a stage that failed is
one line on the console and in the Prefect UI (its traceback, a provider's internals, goes
to DUB_HOME/logs/tracebacks.log; what failed is in the catalog and the report)."""

from __future__ import annotations

import copy
import logging

from polydub import config
from polydub.errors import DubError, JobFailed, JobRefused

TRACEBACKS_LOG = "logs/tracebacks.log"  # under DUB_HOME


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


class Ours(logging.Filter):
    """Only records that carry a polydub error (for the tracebacks log)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return bool(record.exc_info and record.exc_info[1] is not None and _ours(record.exc_info[1]))


def one_line_errors(level: int | None = None) -> None:
    """A polydub error is one line in Prefect's console and API logs (idempotent): its
    traceback goes to DUB_HOME/logs/tracebacks.log. With `level`, the console shows only
    records at or above it (the command line prints its own summary), and Prefect's failed
    sends to its server stay off the console."""
    from prefect.logging.handlers import APILogHandler, PrefectConsoleHandler

    runs = logging.getLogger("prefect.flow_runs")
    if not any(isinstance(f, EndOfRun) for f in runs.filters):
        runs.addFilter(EndOfRun())
    for name in ("", "prefect", "prefect.flow_runs", "prefect.task_runs", "prefect.extra"):
        logger = logging.getLogger(name)
        for handler in logger.handlers:
            if not isinstance(handler, (PrefectConsoleHandler, APILogHandler)):
                continue
            if not isinstance(handler.formatter, OneLineFormatter):
                handler.setFormatter(OneLineFormatter(handler.formatter))
            if level is not None and isinstance(handler, PrefectConsoleHandler):
                handler.setLevel(level)
        if name in ("prefect.flow_runs", "prefect.task_runs") and not any(
                isinstance(h, logging.FileHandler) for h in logger.handlers):
            logger.addHandler(_tracebacks_log())
    if level is not None:
        # Prefect's own services (events, logs) report each failed send to a server that is
        # gone: an event dump per item, and raw text on stderr. The command line says once
        # what Prefect could not record.
        for handler in logging.getLogger("prefect._internal").handlers:  # its logger reads a setting, not its level
            handler.setLevel(level)
        logging.raiseExceptions = False


def run_logs_at(level: str) -> None:
    """Send flow and task run records at `level` (a PREFECT_LOGGING_LEVEL name) to the
    Prefect UI, whatever level Prefect was imported with: the console has its own level."""
    for name in ("prefect.flow_runs", "prefect.task_runs"):
        logging.getLogger(name).setLevel(level.upper())


def _tracebacks_log() -> logging.Handler:
    """The whole record, traceback included, of each polydub error a run logs."""
    path = config.home() / TRACEBACKS_LOG
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handler: logging.Handler = logging.FileHandler(path, delay=True, encoding="utf-8")
    except OSError:  # a read-only DUB_HOME: the one-line errors are what is left
        handler = logging.NullHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    handler.addFilter(Ours())
    return handler
