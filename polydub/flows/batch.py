"""The `dub_catalog` flow: every item x language of a manifest that is not up to date.

It reads the manifest (every row checked, all problems reported at once), works out what
is done, stale, failed or missing against the catalog, claims the items it will dub (no
other runner dubs them meanwhile), dubs them, in this process with bounded concurrency or
as runs of a `dub_video` deployment that workers pick up, and records each item x
language's delivery with the recipe it was made from.

An item is dubbed in all its languages that are due or already done: the done ones come
from the cache in seconds, and the item's multi-track file keeps every language.
"""

from __future__ import annotations

import asyncio
import hashlib
import threading
import time
from concurrent import futures
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Annotated, Callable

from prefect import flow, task
from prefect.cache_policies import NONE
from prefect.states import Completed, Failed, State
from prefect.task_runners import ThreadPoolTaskRunner
from pydantic import Field

from polydub import config, crash, redact
from polydub.review import REVIEW_KEYS
from polydub.batch import staleness
from polydub.batch.manifest import Manifest, ManifestError, load_manifest, plan_items
from polydub.errors import InputError, JobFailed, JobRefused, one_line
from polydub.flows import outcome
from polydub.flows.dub import dub_video
from polydub.flows.logs import one_line_errors
from polydub.job import JobPlan, _out_dir
from polydub.options import DubOptions
from polydub.progress import stage_logger
from polydub.report import AWAITING_REVIEW, REJECTED, JobReport, LanguageReport
from polydub.storage import deliveries, objects, shared_catalog
from polydub.storage.catalog import process_owner

DEFAULT_CONCURRENCY = 2  # items dubbed at once in this process; each runs its languages in threads
MAX_CONCURRENCY = 16
POLL_S = 2.0  # how often deployment runs are looked at
CREATE_AT_ONCE = 16  # deployment runs created concurrently
CREATE_ATTEMPTS = 4  # a Prefect server on SQLite answers 503 when many runs are created at once
CREATE_BACKOFF_S = 2.0
TERMINAL = ("COMPLETED", "FAILED", "CANCELLED", "CRASHED")
ROW_LIMIT = 5000  # rows of the catalog table artifact
NOT_STARTED = "not started"  # a row's status: due, but the run stopped before its item began
UNFINISHED = ("failed", NOT_STARTED, "rejected")  # row statuses that leave the run short of done



@dataclass
class Work:
    """What one catalog run does: the manifest, each item's plan and why it is due."""

    manifest: Manifest
    out_root: str
    cells: dict[tuple[str, str], staleness.Cell]
    recipes: staleness.RecipeBook
    fingerprints: dict[tuple[str, str], str]
    outputs_root: str | None = None  # deployment runs: item folders are relative to it
    plans: dict[str, JobPlan] = field(default_factory=dict)  # item id -> its job (due items only)
    due: dict[str, list[str]] = field(default_factory=dict)  # item id -> languages due


def catalog_run_name() -> str:
    from prefect.runtime import flow_run

    params = flow_run.get_parameters()
    return f"catalog {Path(str(params.get('manifest') or '?')).name}" + (" (stale only)" if params.get("only_stale") else "")


@flow(name="dub-catalog", flow_run_name=catalog_run_name, task_runner=ThreadPoolTaskRunner(max_workers=MAX_CONCURRENCY),
      persist_result=True, result_serializer="json")
def dub_catalog(manifest: str, langs: list[str] | None = None, options: DubOptions = DubOptions(),
                only_stale: bool = False, via_deployment: str | None = None,
                concurrency: Annotated[int, Field(ge=1, le=MAX_CONCURRENCY)] = DEFAULT_CONCURRENCY):
    """Dub every item x language of a manifest that is not up to date: missing, stale
    (its source, scripts, glossary, options or models changed) or failed before. The run
    ends Completed when nothing failed, `Partial` when some failed, Failed when all due
    work failed or the manifest was refused; its result is the catalog table.

    Args:
        manifest: A CSV, JSON or YAML manifest (id, input, langs, options per row), or a
            folder of videos with their subtitle sidecars, as the worker sees it.
        langs: Languages for items (or a folder's videos) that do not name their own.
        options: Defaults for every item; a manifest's own defaults and columns win.
            `out` is the catalog's output folder (each item in a subfolder named by its id).
        only_stale: Redo only deliveries that are stale; skip missing and failed ones.
        via_deployment: Hand each item to workers as a run of this `dub_video` deployment
            (e.g. dub-video) instead of dubbing it in this process.
        concurrency: Items dubbed at once in this process.
    """
    redact.install()  # this run's logs, ours and Prefect's, carry no secrets
    one_line_errors()
    started = time.perf_counter()
    run = outcome.current_run()
    try:
        options = outcome.over_deployment(options, run)
        if via_deployment:
            via_deployment = deployment_name(via_deployment)
        work = plan_work(manifest, langs, options, only_stale, in_deployment=bool(run.deployment),
                         via_deployment=via_deployment)
    except InputError as exc:
        return refused(exc, run)
    cat = shared_catalog(config.database_url())
    deliveries.remember_defaults(cat, work.manifest.key, langs, options.model_dump(mode="json", exclude_unset=True,
                                                                                   exclude={"out"}))
    owner = process_owner()
    claimed = [item for item in work.due if deliveries.claim(cat, work.manifest.key, item, work.plans[item].langs, owner)]
    busy = sorted(set(work.due) - set(claimed))
    _log_plan(work, busy)
    beat = crash.Heartbeat(lambda: deliveries.heartbeat(cat, work.manifest.key, owner),
                           f"catalog {work.manifest.name}").start()
    ledger = Ledger(cat, work, len(claimed))
    stopped = None
    try:
        if via_deployment:
            _via_deployment(work, claimed, via_deployment, cat, owner, run.flow_run_id, ledger.add)
        else:
            stopped = _in_process(work, claimed, concurrency, ledger.add)
    finally:
        beat.stop()
        for item in set(claimed) - set(ledger.results):  # stopped first: rows go back as they were
            deliveries.release(cat, work.manifest.key, item, work.plans[item].langs, owner)
    ledger.finish(len(claimed))
    report = _report(work, ledger.results, busy, time.perf_counter() - started, stopped)
    report["flow_run"] = run.flow_run_id
    _publish(outcome.made(report))
    return _final_state(report)



def plan_work(manifest: str, langs, options: DubOptions, only_stale: bool, in_deployment: bool = False,
              via_deployment: str | None = None) -> Work:
    """Read and check the manifest, find what is due, and plan (and check) those items'
    jobs: every problem of every row at once, before any work."""
    loaded = load_manifest(manifest, langs, options)
    outputs_root = config.outputs_dir() if (in_deployment or via_deployment) else None
    if outputs_root is not None:
        out_root = str(_out_dir(options.out or loaded.name, loaded.name, outputs_root))
    elif options.out and objects.is_remote(options.out):  # a folder in a bucket
        out_root = objects.check_url(options.out, "--out")
    else:
        out_root = str(Path(options.out or Path("dubbed") / loaded.name).expanduser().resolve())
    cat = shared_catalog(config.database_url())
    judged = staleness.assess(cat, loaded)
    cells, recipes = judged.cells, judged.recipes
    wanted = ("stale",) if only_stale else ("stale", "missing", "failed")
    due_items = []
    work = Work(loaded, out_root, cells, recipes, judged.fingerprints,
                str(outputs_root) if outputs_root is not None else None)
    for item in loaded.items:
        due = [lang for lang in item.langs if cells[(item.id, lang)].state in wanted]
        if not due:
            continue
        keep = [lang for lang in item.langs if lang in due or cells[(item.id, lang)].state == "done"]
        work.due[item.id] = due
        due_items.append(replace(item, langs=keep))
    if due_items:
        due_manifest = replace(loaded, items=due_items)
        relative = (options.out or loaded.name) if outputs_root is not None else out_root
        work.plans = plan_items(due_manifest, relative, outputs_root=outputs_root)
        if not via_deployment:
            from polydub.preflight import check_job

            check_job(list(work.plans.values()))
    return work


def _settled(work: Work, item_id: str) -> DubOptions:
    """The item's options with what planning settled (its folder, transcript, language).
    Under a deployment the folder is relative to the outputs root, and each job gets a
    `job-N` folder in it, as every deployment run does."""
    plan = work.plans[item_id]
    item = work.manifest.item(item_id)
    out = plan.out_dir
    if work.outputs_root is not None and objects.is_remote(work.outputs_root):
        out = plan.out_dir[len(str(work.outputs_root).rstrip("/")) + 1:]
    elif work.outputs_root is not None:
        out = str(Path(plan.out_dir).relative_to(Path(work.outputs_root).resolve()))
    return item.options.model_copy(update={"out": out, "source_lang": plan.options.source_lang,
                                           "transcript": plan.options.transcript})


def _in_process(work: Work, items: list[str], concurrency: int,
                ended: Callable[[str, JobReport], None]) -> str | None:
    """Dub the items here, `concurrency` at a time, each as a `dub_video` subflow; each
    item's job report goes to `ended` as soon as it ends. An item starts only while
    Prefect's API answers (it is a flow run of its own); returns why some items were not
    started, or None."""
    pending, running, stopped = list(items), {}, None
    while pending or running:
        while pending and len(running) < concurrency:
            if not outcome.api_answers():  # those running finish; the rest wait for the next run
                stopped = "the Prefect server stopped answering (run `dub catalog` again)"
                stage_logger().warning("%s: %d item(s) not started: %s", work.manifest.name, len(pending), stopped)
                pending = []
                break
            item = pending.pop(0)
            running[item] = dub_item.submit(item, work.plans[item], _settled(work, item))
        if not running:
            break
        # Wait on the futures themselves: asking each one's state asks the Prefect server.
        futures.wait([f.wrapped_future for f in running.values()], return_when=futures.FIRST_COMPLETED)
        for item, future in list(running.items()):
            if future.wrapped_future.done():
                try:
                    report = future.result()
                except Exception as exc:  # the subflow itself broke: its languages failed, the rest go on
                    report = JobReport.failed(one_line(exc))
                del running[item]
                ended(item, report)
    return stopped


@task(name="dub-item", task_run_name="item[{item_id}]", cache_policy=NONE, persist_result=False)
def dub_item(item_id: str, plan: JobPlan, options: DubOptions) -> JobReport:
    """One item's job as a `dub_video` run of its own (a subflow): its report, also when
    the Prefect server stopped answering once the job had finished."""
    started = time.time()
    try:
        state = dub_video(plan.source, plan.langs, options, return_state=True)
    except Exception as exc:  # noqa: BLE001 - the server went away: the job may be complete
        return outcome.finished_despite(exc, started)
    return _report_of(state)


def _report_of(state: State) -> JobReport:
    result = state.result(raise_on_failure=False)
    return outcome.report_of(result) or JobReport.failed(str(result or state.message or state.name))


class Ledger:
    """Each item's outcome as soon as it ends: its deliveries recorded in the catalog (a
    runner stopped later loses nothing), a log line and the progress artifact."""

    def __init__(self, cat, work: Work, items: int):
        self.cat, self.work = cat, work
        self.results: dict[str, JobReport] = {}
        self.lock = threading.Lock()
        self.progress = outcome.ProgressArtifact(outcome.artifact_key("catalog-progress", work.manifest.name), items,
                                         f"{work.manifest.name}: items dubbed")
        self.logger = stage_logger()  # the run's logger, usable from the threads items end in

    def add(self, item: str, report: JobReport) -> None:
        with self.lock:
            _record(self.cat, self.work, item, report)
            self.results[item] = report
        langs = self.work.plans[item].langs
        done = [lang for lang in langs if report.language(lang).done]
        waiting = [lang for lang in langs if report.language(lang).status == AWAITING_REVIEW]
        failed = [f"{lang}: {report.language(lang).error or report.error or 'failed'}" for lang in langs
                  if lang not in done and lang not in waiting]
        self.logger.info("item %s: %s%s%s (job %s)", item,
                         f"delivered {', '.join(done)}" if done else "nothing delivered",
                         f"; awaiting review {', '.join(waiting)}" if waiting else "",
                         f"; failed {'; '.join(failed)}" if failed else "", report.job)
        self.progress.advance(item, "done" if not failed else "failed", 0 if failed else 1)

    def finish(self, claimed: int) -> None:
        failed = sorted(item for item, report in self.results.items() if report.status not in ("done", AWAITING_REVIEW))
        self.progress.finish(f"{len(self.results) - len(failed)} of {claimed} items dubbed"
                             + (f"; failed {', '.join(failed[:20])}{' …' if len(failed) > 20 else ''}" if failed else ""))


def _log_plan(work: Work, busy: list[str]) -> None:
    counts: dict[str, int] = {}
    for cell in work.cells.values():
        counts[cell.state] = counts.get(cell.state, 0) + 1
    states = ", ".join(f"{n} {state}" for state, n in sorted(counts.items()))
    stage_logger().info("%s: %s (%s); %d to dub%s", work.manifest.name, plural_items(len(work.manifest.items)), states,
                   len(work.due) - len(busy), f"; {len(busy)} held by another runner" if busy else "")


def _record(cat, work: Work, item: str, report: JobReport) -> None:
    """Each language's delivery: the file, its sha256 and the recipe it was made from."""
    staleness.record_deliveries(cat, work.manifest.key, item, work.plans[item].langs, work.recipes, work.fingerprints,
                                report)


# ------------------------------------------------------------------ via a deployment


def deployment_name(name: str) -> str:
    """`dub-video` or `dub-video/NAME`: the full name of a deployment of the dub_video flow
    that exists; InputError before any work otherwise."""
    from prefect.client.orchestration import get_client
    from prefect.exceptions import ObjectNotFound

    full = name if "/" in name else f"dub-video/{name}"
    if full.split("/", 1)[0] != "dub-video":
        raise InputError(f"--via-deployment {name}: give a deployment of the dub-video flow, e.g. dub-video")
    with get_client(sync_client=True) as client:
        try:
            client.read_deployment_by_name(full)
        except ObjectNotFound:
            raise InputError(f"--via-deployment {name}: no deployment {full} (see `prefect deployment ls`)") from None
    return full


def _via_deployment(work: Work, claimed: list[str], name: str, cat, owner: str,
                    parent: str | None, ended: Callable[[str, JobReport], None]) -> None:
    """Create one deployment run per item (all at once), wait for them, and read each
    job's outcome from the catalog the workers share, handing it to `ended`."""
    with ThreadPoolExecutor(1) as loop_thread:  # a loop of our own: the flow's thread may have one
        loop_thread.submit(asyncio.run, _dispatch(work, claimed, name, cat, owner, parent, ended)).result()


async def _dispatch(work: Work, claimed: list[str], name: str, cat, owner: str,
                    parent: str | None, ended: Callable[[str, JobReport], None]) -> None:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        FlowRunFilter,
        FlowRunFilterId,
        FlowRunFilterState,
        FlowRunFilterStateType,
        FlowRunFilterTags,
    )
    async with get_client() as client:
        deployment = await client.read_deployment_by_name(name)
        gate = asyncio.Semaphore(CREATE_AT_ONCE)
        catalog_tag = f"catalog:{hashlib.sha256(work.manifest.key.encode()).hexdigest()[:12]}"
        # Runs a runner that died handed out are still at work on the workers: wait for
        # those instead of dubbing the same item twice at once.
        unfinished = await client.read_flow_runs(flow_run_filter=FlowRunFilter(
            tags=FlowRunFilterTags(all_=[catalog_tag]), state=FlowRunFilterState(type=FlowRunFilterStateType(not_any_=list(TERMINAL)))))
        adopted = {tag[len("item:"):]: run.id for run in unfinished for tag in run.tags if tag.startswith("item:")}

        async def create(item: str):
            """The item's run id, or None when the server would not create it (the item
            fails with why; the others go on)."""
            if item in adopted:
                return item, adopted[item]
            plan = work.plans[item]
            options = _settled(work, item)
            for attempt in range(CREATE_ATTEMPTS):
                try:
                    async with gate:
                        run = await client.create_flow_run_from_deployment(
                            deployment.id, parameters={"input": plan.source, "langs": plan.langs,
                                                       "options": options.model_dump(mode="json", exclude_none=True)},
                            tags=["polydub", catalog_tag, f"item:{item}"],
                            idempotency_key=f"{parent}:{item}" if parent else None)
                    return item, run.id
                except Exception as exc:  # noqa: BLE001 - a busy server (503): wait and try again
                    if attempt + 1 == CREATE_ATTEMPTS:
                        report = JobReport.failed(f"its deployment run could not be created: {one_line(exc)}")
                        await asyncio.to_thread(ended, item, report)
                        return item, None
                    await asyncio.sleep(CREATE_BACKOFF_S * 2 ** attempt)

        runs = {item: run_id for item, run_id in await asyncio.gather(*(create(item) for item in claimed))
                if run_id is not None}
        waiting = {str(run_id): item for item, run_id in runs.items()}
        started: set[str] = set()
        while waiting:
            await asyncio.sleep(POLL_S)
            ids = list(waiting)
            for start in range(0, len(ids), 200):
                chunk = [runs[waiting[i]] for i in ids[start:start + 200]]
                for flow_run in await client.read_flow_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=chunk)),
                                                            limit=len(chunk)):
                    item = waiting.get(str(flow_run.id))
                    state = flow_run.state.type.value if flow_run.state else "PENDING"
                    if state == "RUNNING" and item not in started:
                        started.add(item)
                        deliveries.start(cat, work.manifest.key, item, work.plans[item].langs, owner)
                    paused = state == "PAUSED" and (flow_run.state.state_details.pause_key or "").startswith(REVIEW_KEYS)
                    if item and (state in TERMINAL or paused):  # suspended for review: it goes on when decided
                        del waiting[str(flow_run.id)]
                        report = _deployment_report(cat, str(flow_run.id), flow_run.state)
                        await asyncio.to_thread(ended, item, report)  # sync catalog and API calls


def _deployment_report(cat, flow_run_id: str, state) -> JobReport:
    """What a worker's job delivered, or waits a person's review for, as the catalog it
    shares with us recorded it."""
    from polydub.server import flow_run_url
    from polydub.storage import reviews

    job_id = cat.job_for_flow_run(flow_run_id)
    message = (state.message if state else None) or "the run ended without a job in this catalog"
    if job_id is None:
        return JobReport.failed(message)
    job = cat.show_job(job_id)
    languages = {lang: LanguageReport(error=job["error"] or message) for lang in job["langs"]}
    for output in job["outputs"]:
        if output["lang"] and output["kind"] in ("video", "audio"):
            ext = "mp4" if output["kind"] == "video" else "m4a"
            languages[output["lang"]] = LanguageReport(status="done", outputs={ext: output["path"]})
    status = job["status"]
    # Offered before the run suspends (its job may not say so yet): delivered or not, not done.
    for record in reviews.of_job(cat, job_id):
        if record.status == reviews.AWAITING and record.lang in languages:  # its run waits, suspended
            languages[record.lang] = LanguageReport(status=AWAITING_REVIEW, error=f"job {job_id}: dub review {job_id} "
                                                    f"or its run's form: {flow_run_url(flow_run_id) or flow_run_id}")
            status = AWAITING_REVIEW
    duration = (job.get("source") or {}).get("duration")
    return JobReport(job=job_id, status=status, duration=duration, languages=languages, error=job["error"],
                     flow_run=flow_run_url(flow_run_id))


# ------------------------------------------------------------------------ the outcome


def _report(work: Work, results: dict[str, JobReport], busy: list[str], seconds: float,
            stopped: str | None = None) -> dict:
    """The catalog table: one row per item x language, and the counts; `stopped` says why
    due items were not started."""
    rows = []
    for item in work.manifest.items:
        report = results.get(item.id)
        for lang in item.langs:
            cell = work.cells[(item.id, lang)]
            row = {"item": item.id, "language": lang, "status": "up to date", "output": cell.path or "",
                   "job": cell.job, "error": ""}
            if item.id in busy:
                row.update(status="skipped", error="another runner holds it")
            elif report is not None and report.language(lang).status == REJECTED:
                row.update(status=REJECTED, job=report.job, error=report.language(lang).error or "rejected")
            elif report is not None and report.language(lang).status == AWAITING_REVIEW:
                row.update(status=AWAITING_REVIEW, job=report.job,
                           error=report.language(lang).error or f"job {report.job}: dub review {report.job}")
            elif report is not None and lang in work.plans[item.id].langs:
                entry = report.language(lang)
                row.update(status=("dubbed" if lang in work.due[item.id] else "up to date") if entry.done else "failed",
                           output=(entry.media or "") if entry.done else row["output"],
                           job=report.job,
                           error="" if entry.done else (entry.error or report.error or "failed"))
            elif item.id in work.due and lang in work.due[item.id]:
                row.update(status=NOT_STARTED, error=stopped or "the run stopped first")
            elif cell.state != "done":
                row.update(status=f"not due ({cell.state})", error=cell.why)
            rows.append(row)
    counts: dict[str, int] = {}
    for row in rows:
        counts[row["status"]] = counts.get(row["status"], 0) + 1
    runs = {item: report.flow_run for item, report in results.items() if report.flow_run}
    return {"manifest": work.manifest.path, "out_dir": work.out_root, "items": len(work.manifest.items),
            "rows": rows, "counts": counts, "runs": runs, "seconds": round(seconds, 3)}


def plural_items(n: int) -> str:
    return f"{n} item{'' if n == 1 else 's'}"


def summary(report: dict) -> str:
    """`6 dubbed, 2 failed`: the catalog run's counts, one line."""
    return ", ".join(f"{n} {status}" for status, n in sorted(report["counts"].items())) or "nothing to do"


def _final_state(report: dict) -> State:
    failed = [r for r in report["rows"] if r["status"] in UNFINISHED]
    line = f"{Path(report['manifest']).name}: {summary(report)}"
    if not failed:
        return Completed(message=line, data=report)
    first = "; ".join(f"{r['item']} {r['language']}: {r['error']}" for r in failed[:5])
    message = f"{line}; {first}"[:outcome.MESSAGE_MAX]
    delivered = any(r["status"] == "dubbed" for r in report["rows"])
    return Failed(name="Partial" if delivered else "Failed", message=message, data=JobFailed(message, report))


def refused(exc: InputError, run: outcome.RunInfo) -> State:
    """The manifest or an item was refused before any work: every problem in the log, the
    run Failed with the first (in the form's words for a deployment's run)."""
    problems = [outcome.worded(p, run) for p in (exc.problems if isinstance(exc, ManifestError) else [str(exc)])]
    logger = stage_logger()
    for problem in problems:
        logger.error("dub: error: %s", problem)
    result = JobRefused(outcome.worded(str(exc), run))
    result.problems = problems  # the command line prints each (in this process)
    return Failed(message=result.args[0][:outcome.MESSAGE_MAX], data=result)


def _publish(report: dict) -> None:
    """The catalog table and a short summary as artifacts of this run."""
    name = Path(report["manifest"]).stem
    warning = outcome.show("catalog", name, lambda: _rows(report), f"{name}: {summary(report)}",
                           lambda: _page(report, name), f"{name}: the catalog run")
    if warning:
        report.setdefault("warnings", []).append(warning)


def _rows(report: dict) -> list[dict]:
    return [{k: r[k] for k in ("item", "language", "status", "output", "error")} for r in report["rows"][:ROW_LIMIT]]


def _page(report: dict, name: str) -> str:
    lines = [f"# Catalog {name}", "", f"- manifest: `{report['manifest']}`", f"- outputs: `{report['out_dir']}`",
             f"- {plural_items(report['items'])}: {summary(report)} in {report['seconds']:.1f} s"]
    failed = [r for r in report["rows"] if r["status"] == "failed"]
    if failed:
        lines += ["", "| item | language | error |", "|---|---|---|"]
        lines += [f"| {r['item']} | {r['language']} | {r['error'].replace('|', '/')} |" for r in failed[:200]]
    waiting = [r for r in report["rows"] if r["status"] == AWAITING_REVIEW]
    if waiting:  # what a person has to decide, and how
        lines += ["", "## Awaiting review", "", "| item | language | job | to review |", "|---|---|---|---|"]
        lines += [f"| {r['item']} | {r['language']} | {r['job']} | `dub review {r['job']} --lang {r['language']} "
                  f"--out DIR`, then `dub approve {r['job']}` or `dub reject {r['job']} --why TEXT` |"
                  for r in waiting[:200]]
    if report.get("runs"):  # each item's own run (a worker's, via the deployment), one click away
        lines += ["", "## Item runs", ""]
        lines += [f"- [{item}]({url})" for item, url in list(report["runs"].items())[:ROW_LIMIT]]
    return "\n".join(lines)
