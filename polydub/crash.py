"""What is left behind when a job stops without finishing: the heartbeat a running job
writes, Ctrl-C, and closing the records of jobs whose process is gone.

`dub list`, `dub show` and every new job call `reap`, which marks such jobs (and their
running stages) 'interrupted' in the catalog and their Prefect flow runs Crashed.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import signal
import sys
import threading
from datetime import datetime, timedelta
from pathlib import Path
from typing import Callable

from polydub import config
from polydub.errors import DubError
from polydub.storage.tables import utcnow

log = logging.getLogger(__name__)

CTRL_C_REASON = "interrupted: stopped by Ctrl-C (SIGINT)"
STOPPED_REASON = "interrupted: the job was stopped (its run cancelled)"
PREFECT_TIMEOUT_S = 10.0  # a Prefect server that does not answer does not hold up `dub list`
# Ctrl-C reaches child processes (ffmpeg, espeak-ng) at once, but Python runs its handler
# only when the main thread next gets to: stages that failed this shortly before count as
# interrupted, not failed.
INTERRUPT_WINDOW_S = 5.0
# After Ctrl-C the process leaves within this many seconds whatever it is waiting for
# (Prefect retrying a temporary server that the same Ctrl-C stopped, for one).
INTERRUPT_EXIT_S = 30.0
INTERRUPTED_MESSAGE = "dub: interrupted"
# After a job whose server went away: what is recorded is recorded; Prefect's queued events
# and logs cannot reach a server that is gone, and retrying them only delays the exit.
LOST_SERVER_EXIT_S = 2.0

_interrupted_at: datetime | None = None
_said = threading.Event()
_stopping = threading.Event()


# ------------------------------------------------------------------------- heartbeat


class Heartbeat:
    """A daemon thread calling `beat` (a catalog write saying "still at work") every
    `interval` seconds until `stop()`; a failing beat is logged once, never raised."""

    def __init__(self, beat: Callable[[], None], name: str, interval: float = config.HEARTBEAT_INTERVAL_S):
        self._beat, self._name, self._interval = beat, name, interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"heartbeat-{name}", daemon=True)

    def _run(self) -> None:
        failing = False
        while True:
            try:
                self._beat()
                failing = False
            except Exception as exc:  # noqa: BLE001 - a catalog hiccup must not stop the work
                if not failing:
                    log.warning("%s: heartbeat not recorded (%s)", self._name, exc)
                failing = True
            if self._stop.wait(self._interval):
                return

    def start(self) -> Heartbeat:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


def start_heartbeat(catalog, job_id: int) -> Heartbeat:
    return Heartbeat(lambda: catalog.heartbeat(job_id), f"job {job_id}").start()


# ---------------------------------------------------------------------------- Ctrl-C


def _on_sigint(signum, frame) -> None:
    global _interrupted_at
    if _interrupted_at is None:
        _interrupted_at = utcnow()
        exit_within(INTERRUPT_EXIT_S, 130)
    raise KeyboardInterrupt


def say_interrupted() -> None:
    """Print `dub: interrupted` on stderr, once."""
    if not _said.is_set():
        _said.set()
        print(INTERRUPTED_MESSAGE, file=sys.stderr, flush=True)


def install_interrupt_handler() -> None:
    """Remember when Ctrl-C came (stages failing on it are then recorded as interrupted),
    then interrupt as Python does. Main thread only."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, _on_sigint)


def interrupted_at() -> datetime | None:
    """When this process got Ctrl-C, or None."""
    return _interrupted_at


def stop_stages() -> None:
    """The job is ending early (cancelled from Prefect, Ctrl-C): stages that wait or poll
    give up, so that the process ends now rather than when Prefect's grace period is over."""
    _stopping.set()


def stopping() -> bool:
    """Whether this process's job is ending early (see `stop_stages`)."""
    return _stopping.is_set() or _interrupted_at is not None


def stop_reason() -> str:
    """Why a stage failing while the job is stopping counts as interrupted, not failed."""
    return CTRL_C_REASON if _interrupted_at is not None else STOPPED_REASON


def record_interrupt(catalog, job_id: int) -> None:
    """Close a job stopped by Ctrl-C: it and its running stages read 'interrupted'."""
    since = _interrupted_at - timedelta(seconds=INTERRUPT_WINDOW_S) if _interrupted_at else None
    catalog.interrupt_job(job_id, CTRL_C_REASON, since=since)


# ------------------------------------------------------------------------ dead jobs


def reap(catalog) -> list[str]:
    """Mark the jobs whose process is gone as interrupted (and their flow runs Crashed).
    Returns notes on what could not be done (a Prefect server out of reach)."""
    jobs = catalog.mark_interrupted(config.heartbeat_timeout())
    return crash_flow_runs([(j["flow_run_id"], j["error"]) for j in jobs if j.get("flow_run_id")])


def _api_here() -> bool:
    """Whether this process has a Prefect API to talk to (PREFECT_API_URL, else the server
    `dub` keeps, if it is up; never start one for this)."""
    if os.environ.get("PREFECT_API_URL") or config.prefect_api_url()[0]:
        return True
    from polydub import server

    info = server.status()
    if info is None:
        return False
    os.environ["PREFECT_API_URL"] = info["url"]
    return True


# How each way a job ends reads in Prefect, for a run whose end Prefect missed.
FINAL_STATES = {"done": ("Completed", "COMPLETED"), "partial": ("Partial", "FAILED"), "failed": ("Failed", "FAILED"),
                "rejected": ("Failed", "FAILED"), "cancelled": ("Cancelled", "CANCELLED"),
                "interrupted": ("Crashed", "CRASHED"), "crashed": ("Crashed", "CRASHED")}
SETTLE_WINDOW = timedelta(days=7)  # jobs that ended this recently are checked
SETTLE_AFTER = timedelta(seconds=10)  # ... and not just now: their own run may be saying it
SETTLE_LIMIT = 200


def settle_flow_runs(catalog) -> list[str]:
    """A run whose job ended while the Prefect server was away stays Running there: set the
    final state the catalog recorded (newest SETTLE_LIMIT jobs of the last week). Called by
    the reads of the catalog (`dub list`, `dub show`, a worker each minute), not by each job
    as it starts. Runs Prefect already showed ended are remembered on this machine
    (`_settled_runs`), so that a read with nothing new to settle neither imports Prefect's client
    nor asks its server. Notes on what could not be done; nothing when there is no server."""
    now = utcnow()
    ended = catalog.ended_with_runs(now - SETTLE_WINDOW, now - SETTLE_AFTER, SETTLE_LIMIT)
    known = _settled_runs(catalog)
    jobs = {j["flow_run_id"]: j for j in ended if j["flow_run_id"] not in known}
    if not jobs or not _api_here():
        return []
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId, FlowRunFilterState, FlowRunFilterStateType
    from prefect.client.schemas.objects import State, StateType

    notes, settled = [], set()
    try:
        with get_client(sync_client=True, httpx_settings={"timeout": PREFECT_TIMEOUT_S}) as client:
            open_runs = client.read_flow_runs(flow_run_filter=FlowRunFilter(
                id=FlowRunFilterId(any_=list(jobs)),
                state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType.RUNNING, StateType.PENDING]))),
                limit=len(jobs))
            settled = set(jobs) - {str(run.id) for run in open_runs}  # ended there already
            for run in open_runs:
                job = jobs[str(run.id)]
                name, kind = FINAL_STATES.get(job["status"], ("Crashed", "CRASHED"))
                said = job["error"] or "delivered"
                state = State(type=StateType(kind), name=name,
                              message=f"job {job['id']}: {said} (recorded when the Prefect server answered again)")
                try:
                    client.set_flow_run_state(run.id, state, force=True)
                    settled.add(str(run.id))
                except Exception as exc:  # noqa: BLE001 - one run's answer does not stop the others
                    notes.append(f"flow run {run.id} not given its final state: {_first_line(exc)}")
    except Exception as exc:  # noqa: BLE001 - server unreachable: next time
        notes.append(f"flow runs not given their final states: {_first_line(exc)}")
    _remember_settled(catalog, (known | settled) & {j["flow_run_id"] for j in ended})  # forget what left the window
    return notes


def note_settled(catalog, flow_run_id) -> None:
    """A run whose final state Prefect accepted (the command line saw it): never asked about."""
    _remember_settled(catalog, _settled_runs(catalog) | {str(flow_run_id)})


def _settled_path(catalog) -> Path:
    """The flow runs of one catalog that Prefect showed ended, as this machine last saw them."""
    digest = hashlib.sha256(repr(catalog).encode()).hexdigest()[:16]  # its URL, password hidden
    return config.home() / "state" / f"settled-runs-{digest}.json"


def _settled_runs(catalog) -> set[str]:
    try:
        return set(json.loads(_settled_path(catalog).read_text(encoding="utf-8")))
    except (OSError, ValueError, TypeError):  # lost or unreadable: it only costs one more ask
        return set()


def _remember_settled(catalog, ids: set[str]) -> None:
    from polydub import cache

    try:
        cache.write_text(_settled_path(catalog), json.dumps(sorted(ids)))  # owner-only, whole or absent
    except (OSError, DubError):  # a read-only DUB_HOME: asked again next time
        pass


def crash_flow_runs(runs: list[tuple[str, str]]) -> list[str]:
    """Set each (flow run id, reason) to Crashed in Prefect; notes on the failures."""
    if not runs:
        return []
    if not _api_here():
        return [f"flow run {run_id} not marked Crashed: no Prefect server is running" for run_id, _ in runs]
    from prefect.client.orchestration import get_client
    from prefect.states import Crashed

    notes = []
    try:
        with get_client(sync_client=True, httpx_settings={"timeout": PREFECT_TIMEOUT_S}) as client:
            for run_id, reason in runs:
                try:
                    client.set_flow_run_state(run_id, Crashed(message=reason), force=True)
                except Exception as exc:  # noqa: BLE001 - one missing run does not stop the others
                    notes.append(f"flow run {run_id} not marked Crashed: {_first_line(exc)}")
    except Exception as exc:  # noqa: BLE001 - server unreachable
        notes.append(f"flow runs not marked Crashed: {_first_line(exc)}")
    return notes


def _first_line(exc: BaseException) -> str:
    from polydub.redact import redact

    return next((ln for ln in redact(str(exc)).splitlines() if ln.strip()), type(exc).__name__)


# ----------------------------------------------------------- Prefect server gone


def lost_server(exc: Exception) -> str:
    """Why a run's end is missing from Prefect: what the server's client raised, one line."""
    return f"the flow run's final state is not in Prefect ({type(exc).__name__}: {_first_line(exc)})"


def stopped_by(exc: Exception) -> DubError:
    """A run that raised before it ended (not a DubError) as one line."""
    return DubError(f"the run stopped: {type(exc).__name__}: {_first_line(exc)}")


def exit_within(seconds: float, status: int) -> None:
    """Leave with `status` after `seconds` even if Prefect is still trying to send
    events or logs to a server that is gone (it retries for minutes at exit)."""
    def leave() -> None:
        if status == 130:
            say_interrupted()
        for stream in (sys.stdout, sys.stderr):
            stream.flush()
        os._exit(status)

    timer = threading.Timer(seconds, leave)
    timer.daemon = True
    timer.start()
