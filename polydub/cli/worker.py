"""`dub worker`: a Prefect process worker that leaves no run Running.

- Its flow runs tell Prefect they are alive every DUB_RUN_HEARTBEAT seconds, and the server
  holds an automation (made by the first worker, kept in step with DUB_RUN_SILENT) that
  marks Crashed any run silent that long: a run whose machine or worker was lost ends
  Crashed on the server alone.
- SIGTERM or Ctrl-C drains: no new run is taken; runs in flight get DUB_WORKER_DRAIN seconds
  to finish, then are cancelled (their jobs recorded cancelled). A second signal cancels at
  once. Runs that do not end after that are marked Crashed before the worker leaves.
- A run of a deployment whose folder (its pull step's) is not on this machine fails at once,
  saying so in the run's own log and state, instead of crashing with a traceback.
- `lipsync` runs (the GPU side of the hand-off) run in the worker's own process, so the
  lip-sync models load once per worker, not once per video.
- Every REAP_EVERY_S it closes the catalog's jobs whose process is gone (`crash.reap`), so
  the catalog follows without anyone running `dub list`.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import sys
from datetime import timedelta

from polydub import config, crash
from polydub.errors import one_line

log = logging.getLogger(__name__)

CRASH_AUTOMATION = "polydub: crash runs whose process is gone"
# A run that reached one of these has no process to hear from (Paused/Suspended: waiting on
# a person's review); a heartbeat after them starts the clock again.
QUIET_STATES = ("Completed", "Failed", "Cancelled", "Crashed", "Paused", "Suspended")
REAP_EVERY_S = 60.0
CANCEL_WAIT_S = 30.0  # after cancelling, how long runs get to record it before the worker leaves


def say(text: str) -> None:
    print(f"dub worker: {text}", file=sys.stderr, flush=True)


def crash_automation(silent_s: int):
    """The Prefect automation that marks Crashed a flow run silent for `silent_s` seconds
    after a heartbeat (Prefect's "detect zombie flows" pattern)."""
    from prefect.client.schemas.objects import StateType
    from prefect.events.actions import ChangeFlowRunState
    from prefect.events.schemas.automations import AutomationCore, EventTrigger, Posture

    return AutomationCore(
        name=CRASH_AUTOMATION,
        description="Made by `dub worker` (DUB_RUN_SILENT): a run that stopped sending heartbeats "
                    "has lost its process.",
        trigger=EventTrigger(
            match={"prefect.resource.id": "prefect.flow-run.*"},
            after={"prefect.flow-run.heartbeat"},
            expect={"prefect.flow-run.heartbeat", *(f"prefect.flow-run.{s}" for s in QUIET_STATES)},
            for_each={"prefect.resource.id"},
            posture=Posture.Proactive,
            threshold=1,
            within=timedelta(seconds=silent_s),
        ),
        actions=[ChangeFlowRunState(
            state=StateType.CRASHED, force=True,
            message=f"no heartbeat for {silent_s} s: the run's process is gone (its worker or machine was lost)")],
    )


async def ensure_crash_automation(client, silent_s: int) -> bool:
    """Make the automation unless the server has it as configured; True if made."""
    want = crash_automation(silent_s)
    found = await client.read_automations_by_name(CRASH_AUTOMATION)
    if len(found) == 1 and found[0].enabled and found[0].trigger.within == want.trigger.within:
        return False
    for old in found:  # another silence, or two made by workers starting together
        await client.delete_automation(old.id)
    await client.create_automation(want)
    return True


def serve(pool: str, limit: int) -> int:
    """Run the worker until SIGTERM or Ctrl-C, then drain; the exit status."""
    drain_s, silent_s = config.worker_drain_s(), config.run_silent_s()
    return asyncio.run(_serve(pool, limit, drain_s, silent_s))


async def _serve(pool: str, limit: int, drain_s: float, silent_s: int) -> int:
    from prefect.client.orchestration import get_client
    from prefect.states import Cancelling, Crashed
    from prefect.workers.process import ProcessWorker

    stop, hurry = asyncio.Event(), asyncio.Event()

    def on_signal() -> None:
        (hurry if stop.is_set() else stop).set()

    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, on_signal)

    async with get_client() as client:
        if await ensure_crash_automation(client, silent_s):
            say(f"runs silent for {silent_s} s are marked Crashed by the server (automation "
                f"{CRASH_AUTOMATION!r})")

    worker = ProcessWorker(work_pool_name=pool, limit=limit or None, create_pool_if_not_found=True)
    in_flight: dict = {}  # flow run id -> name
    poll, execute = worker.get_and_submit_flow_runs, worker._submit_run_and_capture_errors

    async def polling():
        return [] if stop.is_set() else await poll()

    async def tracked(flow_run, task_status=None):  # from the run's start to its process's end
        why = await _cannot_run(worker, flow_run)
        if why:  # said in the run's own log and state, not only on this worker's console
            await _refuse(worker, flow_run, why)
            refused = RuntimeError(why)
            if task_status is not None:
                task_status.started(refused)
            return refused
        in_flight[flow_run.id] = flow_run.name
        try:
            return await execute(flow_run, task_status=task_status)
        finally:
            in_flight.pop(flow_run.id, None)

    # Instance attributes, read by the worker when it polls and when it starts a run: a
    # stopping worker takes no new run, and knows which runs it still has.
    process_run = worker.run

    async def run(flow_run, task_status=None, configuration=None):
        if await _runs_here(worker, flow_run):
            return await _run_in_process(flow_run, task_status)
        return await process_run(flow_run=flow_run, task_status=task_status, configuration=configuration)

    worker.get_and_submit_flow_runs = polling
    worker._submit_run_and_capture_errors = tracked
    worker.run = run
    running = asyncio.create_task(worker.start(printer=lambda text: say(str(text))))
    reaping = asyncio.create_task(_reap_every(REAP_EVERY_S))
    waiting = asyncio.create_task(stop.wait())
    await asyncio.wait({running, waiting}, return_when=asyncio.FIRST_COMPLETED)
    if running.done():  # the worker ended by itself (its API went away for good)
        reaping.cancel()
        exc = running.exception()
        say(f"stopped: {one_line(exc) if exc else 'the Prefect worker ended'}")
        return 1

    say(f"stopping: no new runs; {len(in_flight)} in flight get up to {drain_s:g} s to finish (DUB_WORKER_DRAIN)")
    await _until_none(in_flight, drain_s, hurry)
    if in_flight:
        names = await _end_runs(in_flight, Cancelling, "the worker was stopped before the run finished")
        say(f"cancelled {len(names)} run(s) still in flight: {', '.join(names)}")
        await _until_none(in_flight, CANCEL_WAIT_S, None)
    if in_flight:
        names = await _end_runs(in_flight, Crashed, "the worker stopped and the run's process did not end")
        say(f"marked Crashed: {', '.join(names)}")
    reaping.cancel()
    running.cancel()
    await asyncio.gather(running, reaping, return_exceptions=True)
    say("stopped")
    return 0


async def _cannot_run(worker, flow_run) -> str | None:
    """Why this machine cannot run `flow_run`'s deployment, or None: the folder its pull step
    moves to (where `prefect deploy` ran) must be here. Without it the run would crash
    under a traceback that names neither the folder nor the machine."""
    if flow_run.deployment_id is None:
        return None
    try:
        deployment = await worker.client.read_deployment(flow_run.deployment_id)
    except Exception:  # noqa: BLE001 - Prefect's own submission says what is wrong with it
        return None
    for step in deployment.pull_steps or []:
        for name, args in step.items():
            folder = (args or {}).get("directory") if name.endswith("set_working_directory") else None
            if not folder or "{{" in folder:
                continue
            if not (os.path.isdir(folder) and os.access(folder, os.R_OK | os.X_OK)):
                return (f"this worker ({socket.gethostname()}) cannot run deployment {deployment.name!r}: its "
                        f"folder {folder} (where `prefect deploy` ran) is not here or not readable; start "
                        f"workers where the project is at that path, or deploy from a path every worker has")
    return None


IN_PROCESS_FLOWS = ("lipsync",)  # run in the worker's own process: their models stay loaded between runs


async def _runs_here(worker, flow_run) -> bool:
    """Whether `flow_run` runs in this worker's process (a flow of IN_PROCESS_FLOWS)."""
    try:
        return (await worker.client.read_flow(flow_run.flow_id)).name in IN_PROCESS_FLOWS
    except Exception:  # noqa: BLE001 - unknown: in a process of its own, as Prefect runs any flow
        return False


async def _run_in_process(flow_run, task_status=None):
    """Run a `lipsync` flow run in a thread of this worker, not in a new process: the
    lip-sync models load with the first run and stay loaded for the next
    (`tasks.lipsync.loaded_models`). The run sees the worker's own environment. It has no
    process of its own to kill, so cancelling it stops it only when its stage ends."""
    from prefect.flow_engine import run_flow
    from prefect.workers.process import ProcessWorkerResult

    from polydub.flows.lipsync import lipsync_video

    if task_status is not None:
        task_status.started()  # no process id: nothing for a cancellation to kill but this worker

    def execute() -> int:
        try:
            run_flow(lipsync_video, flow_run=flow_run, parameters=flow_run.parameters, return_type="state")
            return 0
        except BaseException as exc:  # noqa: BLE001 - the worker marks the run Crashed, saying why
            say(f"{flow_run.name}: ended abnormally: {one_line(exc)}")
            return 1

    code = await asyncio.to_thread(execute)
    return ProcessWorkerResult(identifier=f"in-process-{flow_run.id}", status_code=code)


async def _refuse(worker, flow_run, why: str) -> None:
    """The run fails, saying why in its own log and state message."""
    from prefect.states import Failed

    say(f"refused {flow_run.name}: {why}")
    try:
        worker.get_flow_run_logger(flow_run).error(why)
        await worker.client.set_flow_run_state(flow_run.id, Failed(message=why), force=True)
    except Exception as exc:  # noqa: BLE001 - the console line above still says it
        say(f"flow run {flow_run.name} not marked Failed: {one_line(exc)}")


async def _until_none(in_flight: dict, seconds: float, hurry: asyncio.Event | None) -> None:
    deadline = asyncio.get_running_loop().time() + seconds
    while in_flight and asyncio.get_running_loop().time() < deadline and not (hurry and hurry.is_set()):
        await asyncio.sleep(0.5)


async def _end_runs(in_flight: dict, make, message: str) -> list[str]:
    """Set each run in flight to the state `make` builds (Cancelling, Crashed); their names as
    the UI shows them now."""
    from prefect.client.orchestration import get_client

    names = []
    async with get_client() as client:
        for run_id, name in list(in_flight.items()):
            try:
                names.append((await client.read_flow_run(run_id)).name)
                await client.set_flow_run_state(run_id, make(message=message), force=True)
            except Exception as exc:  # noqa: BLE001 - one run's answer does not stop the others
                say(f"flow run {name} not marked {make.__name__}: {one_line(exc)}")
    return names


async def _reap_every(seconds: float) -> None:
    """Close the catalog's jobs whose process is gone, now and every `seconds`."""
    while True:
        try:
            notes = await asyncio.to_thread(_reap)
            for note in notes:
                say(f"warning: {note}")
        except Exception as exc:  # noqa: BLE001 - a catalog out of reach now may answer later
            log.warning("catalog not reaped: %s", one_line(exc))
        await asyncio.sleep(seconds)


def _reap() -> list[str]:
    from polydub.storage import shared_catalog

    catalog = shared_catalog(config.database_url())
    return crash.reap(catalog) + crash.settle_flow_runs(catalog)
