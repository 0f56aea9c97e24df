"""The `dub_video` flow: one source video into one dubbed deliverable per language.

The flow only orchestrates: per-video stages once, per-language stages concurrently,
lip-sync once for all languages, then the deliverables and the report.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import time
from dataclasses import dataclass

from prefect import flow, task
from prefect.exceptions import Pause
from prefect.cache_policies import NONE
from prefect.task_runners import ThreadPoolTaskRunner

from polydub import cache, config, crash, media, redact, review
from polydub.errors import DubError, InputError, one_line
from polydub.batch import staleness
from polydub.flows import outcome
from polydub.flows.logs import one_line_errors
from polydub.progress import stage_logger
from polydub.job import JobPlan, check_backends, plan_job
from polydub.options import DubOptions
from polydub.preflight import check_job
from polydub.report import (
    AWAITING_REVIEW,
    REJECTED,
    Background,
    JobReport,
    LanguageReport,
    StageResult,
    TranscriptReport,
)
from polydub.storage import objects, reviews, shared_catalog
from polydub.tasks.common import JobContext
from polydub.tasks.deliver import assemble_lang, assemble_multitrack, deliverables
from polydub.tasks.language import (
    Mixdown,
    Speech,
    Translation,
    mix_lang,
    synthesize_lang,
    translate_lang,
)
from polydub.tasks.lipsync import lipsync_langs
from polydub.tasks.quality import check_quality, timeline_name
from polydub.tasks.source import (
    Separation,
    SourceAudio,
    Transcription,
    load_segments,
    prepare_source,
    separate_source,
    transcribe_source,
)

LANGUAGE_WORKERS = 4  # languages in flight at once; each mostly waits on ffmpeg / TTS


@flow(name="dub-video", flow_run_name=outcome.run_name, task_runner=ThreadPoolTaskRunner(max_workers=LANGUAGE_WORKERS * 3),
      persist_result=True, result_serializer="json", on_cancellation=[outcome.record_cancelled],
      on_crashed=[outcome.record_crashed])
def dub_video(input: str, langs: list[str], options: DubOptions = DubOptions()):
    """Dub a video (or audio file) into several languages. The run ends Completed when every
    language was delivered, `Partial` (a failed state) when some were, Failed when none
    were or the input or options were refused; its result is the job report, also written
    as NAME.report.json beside the deliverables.

    Args:
        input: Path of the video or audio file to dub, as the worker sees it.
        langs: Target languages, ISO 639-1 codes such as es, fr, de, pt-br.
        options: How to dub; every field has a default.
    """
    redact.install()  # this run's logs, ours and Prefect's, carry no secrets
    one_line_errors()
    run = outcome.current_run()
    try:
        options = outcome.over_deployment(options, run)
        plan = plan_job(input, langs, options, outputs_root=config.outputs_dir() if run.deployment else None)
        resumed = review.continuing.get()
        if resumed is not None:  # `dub approve`: the approved scripts are this job's approved translations
            plan.translations.update(resumed.translations)
        check_backends(plan)
        check_job([plan])  # --out, cache and catalog usable; nothing of the user's overwritten
    except InputError as exc:  # refused before any work: recorded, and the run fails with the CLI's line
        return outcome.rejected(input, langs, options, str(exc), run)
    return outcome.final_state(outcome.made(run_job(plan, run)))


@task(name="voice-language", task_run_name="language[{lang}]", cache_policy=NONE, persist_result=False)
def voice_language(ctx: JobContext, plan: JobPlan, source: StageResult[SourceAudio],
                   transcript: StageResult[Transcription], background: StageResult[Separation],
                   lang: str) -> tuple[StageResult[Translation], StageResult[Speech], StageResult[Mixdown]]:
    """One language's chain: translate, synthesize, fit and mix (each its own task run)."""
    translation = translate_lang(ctx, plan, transcript, lang)
    speech = synthesize_lang(ctx, plan, source, transcript, translation, lang)
    return translation, speech, mix_lang(ctx, plan, source, transcript, translation, speech, lang, background)


def run_job(plan: JobPlan, run: outcome.RunInfo | None = None) -> JobReport:
    """Run a validated job to the end; return its report (whatever happened to each language)."""
    run = run or outcome.RunInfo()
    started = time.perf_counter()
    with contextlib.ExitStack() as scratch:
        store = objects.storage_url()  # the cache in a bucket: this machine keeps only the job's scratch
        root = scratch.enter_context(cache.scratch(config.cache_dir(), "job")) if store else config.cache_dir()
        return _run_open_job(plan, run, started, JobContext(0, config.database_url(), str(root), store))


def _run_open_job(plan: JobPlan, run: outcome.RunInfo, started: float, ctx: JobContext) -> JobReport:
    job, report = open_job(plan, run, ctx)
    stopped: outcome.Stopped | None = None
    heartbeat = crash.start_heartbeat(job.cat, job.id)
    try:
        dub_languages(plan, job, report, waits_in_form=run.suspendable)
    except Exception as exc:
        report.fail(one_line(exc))
    except Pause:  # suspended for a person's review: the job waits, as its report says
        raise
    except BaseException as exc:  # cancelled from Prefect (SIGTERM from the worker), Ctrl-C
        crash.stop_stages()
        stopped = outcome.interruption(exc, run)
        report.error = stopped.reason
        raise
    finally:
        heartbeat.stop()
        close_job(plan, job, report, stopped, time.perf_counter() - started)
    return report


@dataclass
class OpenJob:
    """A job's catalog row and what its steps share."""

    id: int
    cat: object  # the Catalog
    ctx: JobContext
    duration: float  # s, the source's


def open_job(plan: JobPlan, run: outcome.RunInfo, ctx: JobContext) -> tuple[OpenJob, JobReport]:
    """Record the source and the job in the catalog (closing jobs left behind by dead
    processes first); its report, every language failed until delivered. `ctx`: where its
    stages keep their results (its job id is filled in here)."""
    cat = shared_catalog(ctx.db_url)
    crash.reap(cat)  # jobs left 'running' by a process that is gone: interrupted, flow runs Crashed
    info = media.probe(plan.input)
    source_hash = cache.file_hash(plan.input)
    source_id = cat.upsert_source(plan.source, source_hash, info.duration, info.fps, info.has_video)
    job_id = waiting_job(cat, run)
    if job_id is not None:  # a job that waited for review goes on under its own id
        cat.resume_job(job_id, run.flow_run_id)
    else:
        job_id = cat.create_job(source_id, plan.langs, plan.to_dict(), plan.out_dir, plan.options.consent,
                                input_path=plan.source, flow_run_id=run.flow_run_id, deployment=run.deployment)
    if run.deployment:  # deployment runs: a folder of its own per job under the outputs root
        plan.out_dir = objects.join(plan.out_dir, f"job-{job_id}")
        cat.set_out_dir(job_id, plan.out_dir)
    report = JobReport(job=job_id, input=plan.source, source_hash=source_hash, duration=info.duration,
                       out_dir=plan.out_dir, flow_run=run.ui_url,
                       languages={lang: LanguageReport() for lang in plan.langs})
    return OpenJob(job_id, cat, dataclasses.replace(ctx, job_id=job_id), info.duration), report


def waiting_job(cat, run: outcome.RunInfo) -> int | None:
    """The job this run continues after review: the one `dub approve` goes on with, or
    this flow run's own job when its run was resumed from a suspended review."""
    resumed = review.continuing.get()
    if resumed is not None:
        return resumed.job_id
    if run.flow_run_id and run.suspendable:
        job_id = cat.job_for_flow_run(run.flow_run_id)
        if job_id is not None and cat.show_job(job_id)["status"] == AWAITING_REVIEW:
            return job_id
    return None


def dub_languages(plan: JobPlan, job: OpenJob, report: JobReport, waits_in_form: bool = False) -> None:
    """The work: the source's stages once, each language's chain (after its review, when
    it waits for one), lip-sync for all, then the deliverables; the report filled in as
    each step ends. `waits_in_form`: a deployment run waits for each review suspended, in
    its form, and goes on with the decisions; otherwise the job ends awaiting review."""
    progress = outcome.ProgressArtifact.of_job(plan)
    source, transcript, background = source_stages(job.ctx, plan, report)
    resumed = review.continuing.get()
    rejected = dict(resumed.rejected) if resumed is not None else {}
    to_review = [lang for lang in plan.langs if lang not in rejected
                 and review.needs_review(plan.options, lang, plan.translations)]
    offered = {lang: translate_lang.submit(job.ctx, plan, transcript, lang) for lang in to_review}
    voiced = [lang for lang in plan.langs if lang not in rejected and lang not in offered]

    def start(langs: list[str]) -> dict:
        return {lang: voice_language.submit(job.ctx, plan, source, transcript, background, lang) for lang in langs}

    later = waits_in_form and bool(offered)  # suspending stops the process: nothing else may be running
    chains = {} if later else start(voiced)
    known = [lang for lang, future in offered.items() if not offer_for_review(job, transcript, future, lang, report)]
    if later:
        approved, decided_against = decide_in_forms(plan, job, report)
        rejected.update(decided_against)
        chains = start([*voiced, *known, *approved])
    else:
        chains.update(start(known))
    for lang, why in rejected.items():
        report.languages[lang] = LanguageReport(status=REJECTED, error=why)
    mixed: dict[str, tuple[StageResult, StageResult, StageResult]] = {}
    for lang, future in chains.items():
        try:
            mixed[lang] = future.result()
        except Exception as exc:
            report.languages[lang].error = one_line(exc)
        progress.advance(lang, "mixed" if lang in mixed else "failed", 1 if lang in mixed else 0)
    videos = lipsync_stage(job.ctx, plan, source, mixed, report)
    assembled = deliver_languages(plan, job, source, mixed, videos, report, progress,
                                  shared={"transcribe": transcript.licence, "separate": background.licence})
    measure_languages(plan, job, source, transcript, mixed, videos, assembled, report)
    progress.finish(delivered_summary(report))
    for lang in review_results(plan, job, report, waits_in_form):  # rejected by a person: not shipped
        assembled.pop(lang, None)
    if assembled and not report.awaiting_review:  # the multi-track file waits for every approved language
        report.multitrack = assemble_multitrack(job.ctx, plan, source, transcript, assembled)
        job.cat.add_output(job.id, None, "multitrack", report.multitrack, job.duration)


def review_results(plan: JobPlan, job: OpenJob, report: JobReport, waits_in_form: bool) -> list[str]:
    """The final review of each delivered language that needs one (`review: final|both`,
    or `auto` and flagged by its QA report): offered with its files and flags, then, once
    decided, done (approved) or withdrawn (rejected: its files are removed from the
    output folder, nothing unapproved ships). A deployment run waits for each in its form;
    otherwise the language waits. Returns the languages rejected."""
    decided = {r.lang: r for r in reviews.of_job(job.cat, job.id)
               if r.kind == reviews.FINAL and r.status != reviews.AWAITING}
    for lang in list(report.delivered):
        entry = report.languages[lang]
        if lang in decided or not review.needs_final_review(plan.options, entry.qa):
            continue
        detail = {"outputs": dict(entry.outputs), "qa_flags": list((entry.qa or {}).get("flags") or []),
                  "timeline": entry.timeline}
        reviews.offer(job.cat, job.id, lang, [], kind=reviews.FINAL, detail=detail)
        entry.status = AWAITING_REVIEW  # what the job is while the run waits
        if waits_in_form:
            from polydub.flows.review import decide_result_in_form

            decide_result_in_form(job.cat, job.id, lang, stage_logger())
            entry.status = "done"  # decided: a rejection is withdrawn below
    decided = {r.lang: r for r in reviews.of_job(job.cat, job.id) if r.kind == reviews.FINAL}
    rejected = [lang for lang, r in decided.items() if r.status == reviews.REJECTED and lang in report.languages]
    for lang in rejected:
        for path in job.cat.withdraw_outputs(job.id, lang):  # this job's own files of it: not shipped
            objects.remove(path)
        report.languages[lang] = LanguageReport(status=REJECTED, error=review.rejection(decided[lang]))
    return rejected


def offer_for_review(job: OpenJob, transcript: StageResult[Transcription], translating, lang: str,
                     report: JobReport) -> bool:
    """Offer `lang`'s translated lines for review: the language waits, not voiced. False
    when there is nothing to review: every line came from the brand's translation memory,
    which people approved, edited or imported (or the translation failed: the report says)."""
    try:
        translation = translating.result()
    except Exception as exc:
        report.languages[lang].error = one_line(exc)
        return True
    if translation.output.backend == review.FROM_MEMORY:
        return False
    reviews.offer(job.cat, job.id, lang, review.offered_lines(load_segments(transcript), load_segments(translation)))
    report.languages[lang] = LanguageReport(status=AWAITING_REVIEW)
    return True


def decide_in_forms(plan: JobPlan, job: OpenJob, report: JobReport) -> tuple[list[str], dict[str, str]]:
    """Each language awaiting review decided in the run's form (the run suspends until it
    is, holding no worker); the approved ones become approved translations of the plan.
    Returns the approved languages and {rejected language: why}."""
    from polydub.flows.review import decide_in_form

    logger = stage_logger()
    for lang in report.awaiting_review:
        decide_in_form(job.cat, job.id, lang, logger)
    approved, rejected = review.decided_scripts(job.cat, job.id, plan.name)
    waited = report.awaiting_review
    plan.translations.update({lang: path for lang, path in approved.items() if lang in waited})
    for lang in waited:
        report.languages[lang] = LanguageReport()
    return [lang for lang in waited if lang in approved], {lang: why for lang, why in rejected.items() if lang in waited}


def source_stages(ctx: JobContext, plan: JobPlan, report: JobReport) -> tuple[
        StageResult[SourceAudio], StageResult[Transcription], StageResult[Separation]]:
    """Decode and measure the source, then separate its background alongside speech
    recognition. Separation is best effort: the band-cut still makes a dub."""
    source = prepare_source(ctx, plan, report.source_hash)
    report.source_loudness_lufs = source.output.loudness_lufs
    report.source_true_peak_db = source.output.true_peak_db
    separating = separate_source.submit(ctx, plan, source)
    transcript = transcribe_source(ctx, plan, source, report.source_hash)
    try:
        background = separating.result()
    except Exception as exc:  # the report says why
        background = StageResult("separate", None, "", status="failed", reason=f"separation failed: "
                                 f"{one_line(exc)}; the voice is band-cut under the dub")
    report.background = Background.of(background)
    report.source_lang = transcript.output.language
    report.transcript = TranscriptReport.of(transcript)
    return source, transcript, background


def lipsync_stage(ctx: JobContext, plan: JobPlan, source: StageResult[SourceAudio],
                  mixed: dict[str, tuple[StageResult, StageResult, StageResult]],
                  report: JobReport) -> dict[str, StageResult]:
    """Lip-sync every mixed language at once. When it fails: with `--lipsync on` no
    language is delivered without it (they leave `mixed`); with auto the dub is delivered
    with the original picture and the report says why."""
    if not mixed:
        return {}
    try:
        if handed_to_gpu(ctx, plan):
            from polydub.flows.lipsync import sync_on_gpu

            return sync_on_gpu(ctx, plan, source, {lang: r[2] for lang, r in mixed.items()})
        return lipsync_langs(ctx, plan, source, {lang: r[2] for lang, r in mixed.items()})
    except Exception as exc:
        if plan.options.lipsync == "on":
            for lang in list(mixed):
                report.languages[lang].error = one_line(exc)
                del mixed[lang]
            return {}
        return {lang: StageResult("lipsync", lang, "", status="failed", reason=one_line(exc)) for lang in mixed}


def handed_to_gpu(ctx: JobContext, plan: JobPlan) -> bool:
    """Whether this job's lip-sync runs on the GPU pool's `lipsync` deployment: asked for
    (DUB_LIPSYNC_DEPLOYMENT), with a video, lip-sync not off, and a shared store."""
    return bool(config.lipsync_deployment() and ctx.store and plan.has_video and plan.options.lipsync != "off")


def delivered_summary(report: JobReport) -> str:
    """"2 of 3 languages delivered; awaiting review de; failed it": the progress bar's last word."""
    done, waiting = report.delivered, report.awaiting_review
    failed = [lang for lang in report.languages if lang not in done and lang not in waiting]
    return (f"{len(done)} of {len(report.languages)} languages delivered"
            + (f"; awaiting review {', '.join(waiting)}" if waiting else "")
            + (f"; failed {', '.join(failed)}" if failed else ""))


def deliver_languages(plan: JobPlan, job: OpenJob, source: StageResult[SourceAudio],
                      mixed: dict[str, tuple[StageResult, StageResult, StageResult]], videos: dict[str, StageResult],
                      report: JobReport, progress: outcome.ProgressArtifact,
                      shared: dict[str, str | None]) -> dict[str, StageResult]:
    """Assemble each mixed language's files into the output folder, record them in the
    catalog and the report; the assemblies of the delivered languages, in job order.
    `shared`: licences of the per-video stages' models by stage."""
    delivering = {lang: assemble_lang.submit(job.ctx, plan, source, r[0], r[2], videos.get(lang), lang)
                  for lang, r in mixed.items()}
    assembled: dict[str, StageResult] = {}
    for lang, future in delivering.items():
        try:
            assembled[lang] = future.result()
        except Exception as exc:
            report.languages[lang].error = one_line(exc)
            continue
        outputs = deliverables(plan, assembled[lang])
        translation, speech, mixdown = mixed[lang]
        report.languages[lang] = LanguageReport.delivered(outputs, translation, speech, mixdown, videos.get(lang),
                                                          shared)
        progress.advance(lang, "delivered")
        for kind, path in outputs.items():
            job.cat.add_output(job.id, lang, {"mp4": "video", "m4a": "audio"}.get(kind, kind), path,
                               job.duration if kind in ("mp4", "m4a") else None)
    return {lang: assembled[lang] for lang in plan.langs if lang in assembled}


def measure_languages(plan: JobPlan, job: OpenJob, source: StageResult[SourceAudio],
                      transcript: StageResult[Transcription],
                      mixed: dict[str, tuple[StageResult, StageResult, StageResult]], videos: dict[str, StageResult],
                      assembled: dict[str, StageResult], report: JobReport) -> None:
    """Each delivered language's QA report and timeline picture, in the report and the
    catalog. Best effort: a measurement that fails never takes back a delivery."""
    checks = {lang: check_quality.submit(job.ctx, plan, source, transcript, mixed[lang][2], videos.get(lang),
                                         assembled[lang], lang) for lang in assembled}
    for lang, future in checks.items():
        entry = report.languages[lang]
        try:
            measured = future.result()
        except Exception as exc:
            entry.qa = {"why": f"not measured: {one_line(exc)}"}
            continue
        entry.qa = measured.output.report
        entry.timeline = objects.join(plan.out_dir, timeline_name(plan, lang))
        job.cat.add_output(job.id, lang, "timeline", entry.timeline)


def close_job(plan: JobPlan, job: OpenJob, report: JobReport, stopped: outcome.Stopped | None,
              seconds: float) -> None:
    """However the job ended: its status, NAME.report.json, the catalog's record and the
    Prefect artifacts. Ctrl-C leaves the job and its stages interrupted, not failed."""
    if crash.interrupted_at():
        stopped = outcome.Stopped("interrupted", crash.CTRL_C_REASON)
        crash.record_interrupt(job.cat, job.id)
    report.status = stopped.status if stopped else report.languages_status()
    report.seconds = round(seconds, 3)
    report.stages = job.cat.show_job(job.id)["stages"]
    try:
        write_report(plan, report, job)
    except (OSError, DubError) as exc:  # output folder full or gone: the catalog still gets the truth
        report.error = one_line(exc)
    reason = stopped.reason if stopped else (outcome.failures(report) or report.error)
    job.cat.finish_job(job.id, report.status, error=None if report.status == "done" else reason)
    if plan.options.review != "none":  # catalog items whose review this job waited for
        staleness.settle_reviewed(job.cat, job.id, report)
    outcome.publish(report, plan)


def write_report(plan: JobPlan, report: JobReport, job: OpenJob) -> None:
    """NAME.report.json beside the deliverables, and in the catalog's outputs."""
    path = objects.join(plan.out_dir, f"{plan.name}.report.json")
    objects.write_text(path, json.dumps(report.to_json(), ensure_ascii=False, indent=1, default=str))
    report.report = path
    job.cat.add_output(job.id, None, "report", path)
