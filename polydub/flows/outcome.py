"""What a dub run shows in Prefect: its name, its final state, its artifacts, its logs.

States tell the truth: every language delivered is Completed; some delivered is a failed
state named `Partial` whose message lists each failed language and why; none delivered,
or input refused before work, is Failed. Schedules and automations can tell them apart.
"""

from __future__ import annotations

import re
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from prefect.states import Completed, Failed, State

from polydub import config, crash, review
from polydub.errors import DubError, JobFailed, JobRefused
from polydub.job import JobPlan
from polydub.qa import LanguageQA
from polydub.options import DubOptions
from polydub.report import AWAITING_REVIEW, JobReport
from polydub.storage import shared_catalog

ARTIFACT_KEY = re.compile(r"[^a-z0-9-]+")
MESSAGE_MAX = 2000  # characters of a state message: the UI shows it in a single box

# What the last run this thread made returned, and when (a time.time()): its caller's copy
# when only Prefect's bookkeeping of the run failed afterwards (see `finished_despite`).
_made = threading.local()


@dataclass(frozen=True)
class RunInfo:
    """The Prefect run behind a job, when there is one."""

    flow_run_id: str | None = None
    deployment: str | None = None  # "flow/deployment", set when a deployment triggered it
    ui_url: str | None = None
    subflow: bool = False  # run inside another flow run (a catalog's item)

    @property
    def suspendable(self) -> bool:
        """Whether the run can wait for a person suspended, holding no worker: a
        deployment's own run (Prefect starts it again when resumed), not a subflow."""
        return bool(self.deployment) and not self.subflow


def current_run() -> RunInfo:
    from prefect.runtime import deployment, flow_run

    run_id = flow_run.get_id()
    name = deployment.get_name() if deployment.get_id() else None
    from polydub.server import flow_run_url

    return RunInfo(run_id, f"{flow_run.get_flow_name()}/{name}" if name else None,
                   flow_run_url(run_id) if run_id else None, subflow=bool(flow_run.get_parent_flow_run_id()))


def over_deployment(options: DubOptions, run: RunInfo) -> DubOptions:
    """A deployment run's options over its deployment's own: a field the run does not set
    keeps the deployment's value. Prefect replaces the whole `options` object when a run
    sets any of it, which would silently drop, say, the deployment's `lipsync: off`. An
    InputError when the merge is not valid options."""
    if not run.deployment or run.subflow or not isinstance(options, DubOptions):
        return options
    from prefect.client.orchestration import get_client
    from prefect.runtime import deployment

    with get_client(sync_client=True) as client:
        given = (client.read_deployment(deployment.get_id()).parameters or {}).get("options") or {}
    if not isinstance(given, dict) or not given:
        return options
    from polydub.options import make_options

    return make_options({**given, **options.model_dump(include=options.model_fields_set)})


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

    from polydub.server import healthy

    url = PREFECT_API_URL.value()
    return not url or healthy(str(url).rstrip("/"))


def made(result):
    """Keep `result` (a JobReport, a catalog table) as what this thread's run made; return it."""
    _made.value = (time.time(), result)
    return result


def finished_despite(exc: Exception, since: float):
    """What the run called in this thread made, when it finished after `since` (a
    time.time()) and only Prefect's bookkeeping failed afterwards, e.g. the server stopped
    answering: a JobReport or a catalog table, with `not_recorded` saying so. Otherwise
    `exc` as a one-line DubError."""
    if isinstance(exc, DubError):
        raise exc
    at, result = getattr(_made, "value", (0.0, None))
    if result is None or at < since:
        raise crash.stopped_by(exc) from exc
    if isinstance(result, dict):
        return {**result, "not_recorded": crash.lost_server(exc)}
    result.not_recorded = crash.lost_server(exc)
    return result


def artifact_key(*parts: str) -> str:
    return ARTIFACT_KEY.sub("-", "-".join(parts).lower()).strip("-")[:100] or "dub"


def failures(report: JobReport) -> str:
    """`es: translate es: ...; fr: ...`: each failed language and why, one line."""
    return report.failures()[:MESSAGE_MAX]


def final_state(report: JobReport) -> State:
    """Completed, Partial or Failed, carrying the report as the run's result (its JSON,
    which Prefect stores)."""
    done = report.delivered
    if report.status == AWAITING_REVIEW:  # this run's part is done: a person decides what follows
        return Completed(name="Awaiting review", message=review.waiting_line(report)[:MESSAGE_MAX], data=report.to_json())
    if report.status == "done":
        return Completed(message=f"delivered {', '.join(done)} in {report.out_dir}", data=report.to_json())
    # A failed state's result must be an exception; it carries the report in this process.
    if report.status == "partial":
        message = f"delivered {', '.join(done)}; failed {failures(report)}"[:MESSAGE_MAX]
        return Failed(name="Partial", message=message, data=JobFailed(message, report))
    message = f"nothing delivered: {report.error or failures(report)}"[:MESSAGE_MAX]
    return Failed(message=message, data=JobFailed(message, report))


def report_of(result) -> JobReport | None:
    """The job report in a `dub_video` run's result (Completed: its JSON; Partial or
    Failed: a JobFailed carrying it); None for anything else."""
    if isinstance(result, JobFailed) and isinstance(result.report, JobReport):
        return result.report
    if isinstance(result, dict) and "languages" in result:
        return JobReport.from_json(result)
    return None


def worded(message: str, run: RunInfo) -> str:
    """A message in the words of where the run was started: a deployment's form says
    `options.source_lang` where the command line says `--source-lang`."""
    from polydub.options import in_form_words

    return in_form_words(message) if run.deployment else message


def rejected(input: str, langs: list[str] | str, options: DubOptions, message: str, run: RunInfo) -> State:
    """A job refused before any work: recorded in the catalog, and the run fails with the
    line the command line prints, in the form's words for a deployment's run."""
    from prefect.logging import get_run_logger

    message = worded(message, run)
    get_run_logger().error("dub: error: %s", message)
    try:
        cat = shared_catalog(config.database_url())
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


class ProgressArtifact:
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
    def of_job(cls, plan: JobPlan) -> ProgressArtifact:
        return cls(artifact_key("dub-progress", plan.name), 2 * len(plan.langs),
                   f"{plan.name}: languages mixed and delivered")

    def advance(self, label: str, what: str, steps: int = 1) -> None:
        """`steps` more of the work done (0 for a failure: the bar shows what was delivered)."""
        self.done += steps
        self._show(f"{label} {what}")

    def finish(self, summary: str) -> None:
        """The last word under the bar: a partial run stops short of 100 % and says why."""
        self._show(summary)

    def _show(self, description: str) -> None:
        if self.artifact is None or not api_answers():
            return
        from prefect.artifacts import update_progress_artifact

        try:
            update_progress_artifact(self.artifact, min(100.0, 100.0 * self.done / self.steps),
                                     description=description)
        except Exception:  # noqa: BLE001 - progress display must never fail a job
            pass


SHORT_REASON_CHARS = 80  # a table cell that leaves the other columns on screen


def short_reason(error: str | None) -> str:
    """An error's gist for a table cell: up to its first parenthesis or semicolon, at most
    SHORT_REASON_CHARS (the markdown artifact and the report keep the whole text)."""
    gist = re.split(r" \(|; ", error or "", maxsplit=1)[0].strip()
    return gist if len(gist) <= SHORT_REASON_CHARS else gist[:SHORT_REASON_CHARS - 1].rstrip() + "…"


def summary_rows(report: JobReport) -> list[dict]:
    """One row per language: what a producer checks first."""
    rows = []
    for lang, entry in report.languages.items():
        backends = entry.backends
        rows.append({
            "language": lang,
            "status": entry.status if entry.done or entry.status == AWAITING_REVIEW else f"failed: {short_reason(entry.error)}",
            "duration_s": round(report.duration or 0.0, 2),
            "voice": backends.voice if backends else "",
            "lines_sped_up": entry.sped_up if backends else "",
            "lines_overflowing": entry.overflowing if backends else "",
            "lipsync": backends.lipsync if backends else "",
            "outputs": ", ".join(entry.outputs.values()),
        })
    return rows


def markdown(report: JobReport) -> str:
    """The report as a short page: status, where the files are, each language."""
    lines = [f"# Job {report.job}: {report.status}", "",
             f"- input: `{report.input}`", f"- outputs: `{report.out_dir}`",
             f"- duration: {report.duration or 0:.2f} s, run time {report.seconds or 0:.1f} s"]
    if report.report:
        lines.append(f"- report: `{report.report}`")
    if report.multitrack:
        lines.append(f"- multi-track: `{report.multitrack}`")
    if report.error:
        lines.append(f"- error: {report.error}")
    if report.source_loudness_lufs is not None:
        lines.append(f"- source loudness: {report.source_loudness_lufs:.1f} LUFS, true peak "
                     f"{report.source_true_peak_db} dBTP")
    if report.background:
        reason = f" ({report.background.reason})" if report.background.reason else ""
        lines.append(f"- background: {report.background.method}{reason}")
    lines += ["", "| language | status | voice | sped up | overflowing | lip-sync | loudness (LUFS) |",
              "|---|---|---|---|---|---|---|"]
    for lang, entry in report.languages.items():
        backends = entry.backends
        status = entry.status if entry.done or entry.status == AWAITING_REVIEW else f"failed: {entry.error or ''}"
        if backends is None:  # not delivered: nothing to say of how
            lines.append(f"| {lang} | {status.replace('|', '/')} |  |  |  |  |  |")
            continue
        lines.append(f"| {lang} | {status.replace('|', '/')} | {backends.voice or ''} | "
                     f"{entry.sped_up} | {entry.overflowing} | {backends.lipsync} | {entry.loudness_lufs} |")
    for lang, entry in report.languages.items():
        for what, reason in (("voice", entry.backends and entry.backends.voice_reason),
                             ("lipsync", entry.backends and entry.backends.lipsync_reason)):
            if reason:
                lines.append(f"\n- {lang} {what}: {reason}")
        if entry.licences:  # what a model made, under which licence: what legal checks before it ships
            made_by = ", ".join(f"{stage} {licence}" for stage, licence in entry.licences.items())
            lines.append(f"\n- {lang} licences: {made_by}")
        for mark in entry.watermarks:
            lines.append(f"\n- {lang} audio watermark: {mark}")
    for lang, entry in report.languages.items():  # the measured QA report, and where its picture is
        if entry.qa and "lang" in entry.qa:
            lines += ["", LanguageQA.from_json(entry.qa).to_markdown().rstrip()]
            if entry.timeline:
                lines.append(f"\n- timeline: `{entry.timeline}`")
        elif entry.qa:
            lines.append(f"\n- {lang} QA {entry.qa.get('why', '')}")
    return "\n".join(lines)


def publish(report: JobReport, plan: JobPlan) -> None:
    """The job's table and markdown summary as artifacts of the current flow run; what
    could not be shown is said in the report's warnings."""
    warning = show("dub", plan.name, lambda: summary_rows(report), f"{plan.name}: job {report.job} {report.status}",
                   lambda: markdown(report), f"{plan.name}: the job report")
    if warning:
        report.warnings.append(warning)


def show(kind: str, name: str, rows: Callable[[], list[dict]], rows_description: str,
         page: Callable[[], str], page_description: str) -> str | None:
    """A table (key KIND-NAME) and a markdown page (KIND-report-NAME) as artifacts of the
    current flow run; what could not be shown, if anything, as a warning."""
    try:
        from prefect.artifacts import create_markdown_artifact, create_table_artifact
        from prefect.context import FlowRunContext

        if FlowRunContext.get() is None:
            return None
        if not api_answers():
            return "artifacts not recorded: the Prefect API does not answer"
        create_table_artifact(rows(), key=artifact_key(kind, name), description=rows_description)
        create_markdown_artifact(page(), key=artifact_key(f"{kind}-report", name), description=page_description)
    except Exception as exc:  # noqa: BLE001 - the work is delivered; say what could not be shown
        return f"artifacts not recorded: {exc}"
    return None


def _record(flow_run, state, status: str) -> None:
    """Mark the run's job as cancelled or crashed, with the state's message as the reason."""
    cat = shared_catalog(config.database_url())
    job_id = cat.job_for_flow_run(str(flow_run.id))
    if job_id is None:
        return
    if cat.show_job(job_id)["status"] == "running":
        cat.finish_job(job_id, status, (state.message or status)[:MESSAGE_MAX])


def record_cancelled(flow, flow_run, state) -> None:
    _record(flow_run, state, "cancelled")


def record_crashed(flow, flow_run, state) -> None:
    _record(flow_run, state, "crashed")

