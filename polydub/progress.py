"""Stage progress events, for whoever is watching (the CLI's live table, logs), and the
logger stages write their one line to.

Tasks call `emit`; a front end installs a listener with `listen`. With no listener the
events only go to the log, which is what a remote worker wants.
"""

from __future__ import annotations

import logging
import threading
from typing import Callable

Listener = Callable[[str, str | None, str, str], None]  # stage, lang, status, note

_listeners: list[Listener] = []
_lock = threading.Lock()
log = logging.getLogger("polydub")


def listen(listener: Listener) -> Callable[[], None]:
    """Register a listener; return a function that removes it."""
    with _lock:
        _listeners.append(listener)

    def remove() -> None:
        with _lock:
            if listener in _listeners:
                _listeners.remove(listener)

    return remove


def emit(stage: str, lang: str | None, status: str, note: str = "") -> None:
    log.debug("%s %s %s %s", stage, lang or "-", status, note)
    with _lock:
        listeners = list(_listeners)
    for listener in listeners:
        try:
            listener(stage, lang, status, note)
        except Exception:  # a broken display must never fail a job
            log.exception("progress listener failed")


def stage_logger() -> logging.Logger | logging.LoggerAdapter:
    """The current task or flow run's logger (shown in the Prefect UI), else polydub's."""
    try:
        from prefect.logging import get_run_logger

        return get_run_logger()
    except Exception:  # noqa: BLE001 - outside a run: plain logging
        return logging.getLogger("polydub")
