"""What a dub run shows in Prefect: its name, its final state, its artifacts, its logs.

States tell the truth: every language delivered is Completed; some delivered is a failed
state named `Partial` whose message lists each failed language and why; none delivered,
or input refused before work, is Failed. Schedules and automations can tell them apart.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from prefect.states import Completed, Failed, State

from polydub import config
from polydub.errors import DubError, InputError
from polydub.job import JobPlan
from polydub.options import DubOptions
from polydub.tasks.common import catalog

ARTIFACT_KEY = re.compile(r"[^a-z0-9-]+")
MESSAGE_MAX = 2000  # characters of a state message: the UI shows it in a single box


class JobFailed(DubError):
    """The result of a run that delivered some languages or none; `report` is the job
    report in the process that ran it (the file NAME.report.json everywhere else)."""

    def __init__(self, message: str, report: dict | None = None):
        super().__init__(message)
        self.report = report


class JobRefused(InputError):
    """The result of a run whose input or options were refused before any work."""


@dataclass(frozen=True)
class RunInfo:
    """The Prefect run behind a job, when there is one."""

    flow_run_id: str | None = None
    deployment: str | None = None  # "flow/deployment", set when a deployment triggered it
    ui_url: str | None = None


def current_run() -> RunInfo:
    from prefect.runtime import deployment, flow_run

    run_id = flow_run.get_id()
    name = deployment.get_name() if deployment.get_id() else None
    from polydub.server import flow_run_url

    return RunInfo(run_id, f"{flow_run.get_flow_name()}/{name}" if name else None,
                   flow_run_url(run_id) if run_id else None)


@dataclass(frozen=True)
class Stopped:
    """Why a job stopped before its end: its catalog status and the reason."""

    status: str  # cancelled | interrupted
    reason: str


def interruption(exc: BaseException, run: RunInfo) -> Stopped:
    """Tell a cancellation from Prefect (the worker ends the process with SIGTERM once the
    run is Cancelling) from any other stop."""
    if run.flow_run_id:
        try:
            from prefect.client.orchestration import get_client

            with get_client(sync_client=True) as client:
                state = client.read_flow_run(run.flow_run_id).state
            if state is not None and state.type.value in ("CANCELLING", "CANCELLED"):
                return Stopped("cancelled", f"cancelled from Prefect{': ' + state.message if state.message else ''}")
        except Exception:  # noqa: BLE001 - the server may be what went away
            pass
    if isinstance(exc, KeyboardInterrupt):
        from polydub.crash import CTRL_C_REASON

        return Stopped("interrupted", CTRL_C_REASON)
    return Stopped("interrupted", f"stopped by {type(exc).__name__}")


def run_name() -> str:
    """`ad42 → es,fr,de`: what is dubbed, readable in the run list."""
    from prefect.runtime import flow_run

    params = flow_run.get_parameters()
    langs = params.get("langs") or []
    langs = langs.split(",") if isinstance(langs, str) else langs
    return f"{Path(str(params.get('input') or '?')).stem} → {','.join(map(str, langs))}"


def api_answers() -> bool:
    """Whether Prefect's API answers now (2 s at most). Artifacts are worth showing, not
    worth waiting for: Prefect's client retries a server that went away for minutes."""
    from prefect.settings import PREFECT_API_URL

    from polydub.server import _healthy

    url = PREFECT_API_URL.value()
    return not url or _healthy(str(url).rstrip("/"))


def artifact_key(*parts: str) -> str:
    return ARTIFACT_KEY.sub("-", "-".join(parts).lower()).strip("-")[:100] or "dub"


def failures(report: dict) -> str:
    """`es: translate es: ...; fr: ...`: each failed language and why, one line."""
    failed = [f"{lang}: {entry.get('error') or 'failed'}" for lang, entry in report["languages"].items()
              if entry["status"] != "done"]
    return "; ".join(failed)[:MESSAGE_MAX]


def final_state(report: dict) -> State:
    """Completed, Partial or Failed, carrying the report as the run's result."""
    done = [lang for lang, entry in report["languages"].items() if entry["status"] == "done"]
    if report["status"] == "done":
        return Completed(message=f"delivered {', '.join(done)} in {report['out_dir']}", data=report)
    # A failed state's result must be an exception; it carries the report in this process.
    if report["status"] == "partial":
        message = f"delivered {', '.join(done)}; failed {failures(report)}"[:MESSAGE_MAX]
        return Failed(name="Partial", message=message, data=JobFailed(message, report))
    message = f"nothing delivered: {report.get('error') or failures(report)}"[:MESSAGE_MAX]
    return Failed(message=message, data=JobFailed(message, report))


def rejected(input: str, langs: list[str] | str, options: DubOptions, message: str, run: RunInfo) -> State:
    """A job refused before any work: recorded in the catalog, and the run fails with the
    same one line the command line prints."""
    from prefect.logging import get_run_logger

    get_run_logger().error("dub: error: %s", message)
    try:
        cat = catalog(config.database_url())
        langs = langs.split(",") if isinstance(langs, str) else list(langs or [])
        job_id = cat.create_job(None, [str(x) for x in langs], _params(input, options), "", options.consent,
                                input_path=str(input), flow_run_id=run.flow_run_id, deployment=run.deployment,
                                status="rejected", error=message)
        note = f" (job {job_id})"
    except Exception as exc:  # noqa: BLE001 - a refused job must still fail with its reason
        note = f" (not recorded in the catalog: {exc})"
    return Failed(message=f"{message}{note}"[:MESSAGE_MAX], data=JobRefused(message))


def _params(input: str, options: DubOptions) -> dict:
    return {"input": str(input), **options.model_dump()} if isinstance(options, DubOptions) else {"input": str(input)}


class Progress:
    """A progress artifact that moves as work finishes: a job's languages (mixed, then
    delivered) or a catalog's items."""

    def __init__(self, key: str, steps: int, description: str):
        self.steps = max(1, steps)
        self.done = 0
        self.key = key
        try:
            from prefect.artifacts import create_progress_artifact

            self.artifact = create_progress_artifact(0.0, key=self.key, description=description)
        except Exception:  # noqa: BLE001 - no run context (plain function call): nothing to show
            self.artifact = None

    @classmethod
    def of_job(cls, plan: JobPlan) -> Progress:
        return cls(artifact_key("dub-progress", plan.name), 2 * len(plan.langs),
                   f"{plan.name}: languages mixed and delivered")

    def advance(self, label: str, what: str, steps: int = 1) -> None:
        self.done += steps
        if self.artifact is None or not api_answers():
            return
        from prefect.artifacts import update_progress_artifact

        try:
            update_progress_artifact(self.artifact, min(100.0, 100.0 * self.done / self.steps),
                                     description=f"{label} {what}")
        except Exception:  # noqa: BLE001 - progress display must never fail a job
            pass


def summary_rows(report: dict) -> list[dict]:
    """One row per language: what a producer checks first."""
    rows = []
    for lang, entry in report["languages"].items():
        backends = entry.get("backends", {})
        outputs = entry.get("outputs", {})
        rows.append({
            "language": lang,
            "status": entry["status"] if entry["status"] == "done" else f"failed: {entry.get('error', '')}"[:300],
            "duration_s": round(report.get("duration") or 0.0, 2),
            "voice": backends.get("voice", ""),
            "lines_sped_up": entry.get("sped_up", ""),
            "lines_overflowing": entry.get("overflowing", ""),
            "lipsync": backends.get("lipsync", ""),
            "outputs": ", ".join(outputs.values()),
        })
    return rows


def markdown(report: dict) -> str:
    """The report as a short page: status, where the files are, each language."""
    lines = [f"# Job {report['job']}: {report['status']}", "",
             f"- input: `{report['input']}`", f"- outputs: `{report['out_dir']}`",
             f"- duration: {report.get('duration', 0):.2f} s, run time {report.get('seconds', 0):.1f} s"]
    if report.get("report"):
        lines.append(f"- report: `{report['report']}`")
    if report.get("multitrack"):
        lines.append(f"- multi-track: `{report['multitrack']}`")
    if report.get("error"):
        lines.append(f"- error: {report['error']}")
    if report.get("source_loudness_lufs") is not None:
        lines.append(f"- source loudness: {report['source_loudness_lufs']:.1f} LUFS, true peak "
                     f"{report.get('source_true_peak_db')} dBTP")
    if report.get("background"):
        background = report["background"]
        reason = f" ({background['reason']})" if background.get("reason") else ""
        lines.append(f"- background: {background['method']}{reason}")
    lines += ["", "| language | status | voice | sped up | overflowing | lip-sync | loudness (LUFS) |",
              "|---|---|---|---|---|---|---|"]
    for lang, entry in report["languages"].items():
        backends = entry.get("backends", {})
        status = "done" if entry["status"] == "done" else f"failed: {entry.get('error', '')}"
        lines.append(f"| {lang} | {status.replace('|', '/')} | {backends.get('voice', '')} | "
                     f"{entry.get('sped_up', '')} | {entry.get('overflowing', '')} | {backends.get('lipsync', '')} | "
                     f"{entry.get('loudness_lufs', '')} |")
    for lang, entry in report["languages"].items():
        for what in ("voice_reason", "lipsync_reason"):
            if entry.get("backends", {}).get(what):
                lines.append(f"\n- {lang} {what.split('_')[0]}: {entry['backends'][what]}")
    return "\n".join(lines)


def publish(report: dict, plan: JobPlan) -> None:
    """The job's table and markdown summary as artifacts of the current flow run."""
    show(report, "dub", plan.name, lambda: summary_rows(report), f"{plan.name}: job {report['job']} {report['status']}",
         lambda: markdown(report), f"{plan.name}: the job report")


def show(report: dict, kind: str, name: str, rows: Callable[[], list[dict]], rows_description: str,
         page: Callable[[], str], page_description: str) -> None:
    """A table (key KIND-NAME) and a markdown page (KIND-report-NAME) as artifacts of the
    current flow run; what could not be shown is said in the report's warnings."""
    try:
        from prefect.artifacts import create_markdown_artifact, create_table_artifact
        from prefect.context import FlowRunContext

        if FlowRunContext.get() is None:
            return
        if not api_answers():
            report.setdefault("warnings", []).append("artifacts not recorded: the Prefect API does not answer")
            return
        create_table_artifact(rows(), key=artifact_key(kind, name), description=rows_description)
        create_markdown_artifact(page(), key=artifact_key(f"{kind}-report", name), description=page_description)
    except Exception as exc:  # noqa: BLE001 - the work is delivered; say what could not be shown
        report.setdefault("warnings", []).append(f"artifacts not recorded: {exc}")


def _record(flow_run, state, status: str) -> None:
    """Mark the run's job as cancelled or crashed, with the state's message as the reason."""
    cat = catalog(config.database_url())
    job_id = cat.job_for_flow_run(str(flow_run.id))
    if job_id is None:
        return
    if cat.show_job(job_id)["status"] == "running":
        cat.finish_job(job_id, status, (state.message or status)[:MESSAGE_MAX])


def record_cancelled(flow, flow_run, state) -> None:
    _record(flow_run, state, "cancelled")


def record_crashed(flow, flow_run, state) -> None:
    _record(flow_run, state, "crashed")

