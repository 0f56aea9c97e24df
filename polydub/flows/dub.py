"""The `dub_video` flow: one source video into one dubbed deliverable per language.

The flow only orchestrates: per-video stages once, per-language stages concurrently,
lip-sync once for all languages, then the deliverables and the report.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from prefect import flow, task
from prefect.cache_policies import NONE
from prefect.task_runners import ThreadPoolTaskRunner

from polydub import cache, config, crash, media
from polydub.errors import DubError, InputError
from polydub.flows import outcome
from polydub.flows.logs import quiet_console_tracebacks
from polydub.job import JobPlan, check_backends, plan_job
from polydub.options import DubOptions
from polydub.preflight import check_job
from polydub.tasks.common import JobContext, StageResult, catalog, one_line
from polydub.tasks.deliver import assemble_lang, assemble_multitrack, deliverables
from polydub.tasks.language import Mixdown, Speech, Translation, mix_lang, synthesize_lang, translate_lang
from polydub.tasks.lipsync import lipsync_langs
from polydub.tasks.source import Separation, SourceAudio, Transcription, prepare_source, separate_source, transcribe_source

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
    quiet_console_tracebacks()
    run = outcome.current_run()
    try:
        plan = plan_job(input, langs, options, outputs_root=config.outputs_dir() if run.deployment else None)
        check_backends(plan)
        check_job([plan])  # --out, cache and catalog usable; nothing of the user's overwritten
    except InputError as exc:  # refused before any work: recorded, and the run fails with the CLI's line
        return outcome.rejected(input, langs, options, str(exc), run)
    return outcome.final_state(run_job(plan, run))


@task(name="voice-language", task_run_name="language[{lang}]", cache_policy=NONE, persist_result=False)
def voice_language(ctx: JobContext, plan: JobPlan, source: StageResult[SourceAudio],
                   transcript: StageResult[Transcription], background: StageResult[Separation],
                   lang: str) -> tuple[StageResult[Translation], StageResult[Speech], StageResult[Mixdown]]:
    """One language's chain: translate, synthesize, fit and mix (each its own task run)."""
    translation = translate_lang(ctx, plan, transcript, lang)
    speech = synthesize_lang(ctx, plan, source, transcript, translation, lang)
    return translation, speech, mix_lang(ctx, plan, source, transcript, translation, speech, lang, background)


def run_job(plan: JobPlan, run: outcome.RunInfo | None = None) -> dict:
    """Run a validated job to the end; return its report (whatever happened to each language)."""
    run = run or outcome.RunInfo()
    started = time.perf_counter()
    db_url = config.database_url()
    cat = catalog(db_url)
    crash.reap(cat)  # jobs left 'running' by a process that is gone: interrupted, flow runs Crashed
    info = media.probe(plan.input)
    source_hash = cache.file_hash(plan.input)
    source_id = cat.upsert_source(plan.input, source_hash, info.duration, info.fps, info.has_video)
    job_id = cat.create_job(source_id, plan.langs, plan.to_dict(), plan.out_dir, plan.consent,
                            input_path=plan.input, flow_run_id=run.flow_run_id, deployment=run.deployment)
    if run.deployment:  # deployment runs: a folder of its own per job under the outputs root
        plan.out_dir = str(Path(plan.out_dir) / f"job-{job_id}")
        cat.set_out_dir(job_id, plan.out_dir)
    ctx = JobContext(job_id, db_url, str(config.cache_dir()))
    progress = outcome.Progress.of_job(plan)
    stopped: outcome.Stopped | None = None
    heartbeat = crash.start_heartbeat(cat, job_id)
    langs: dict[str, dict] = {lang: {"status": "failed", "stages": {}} for lang in plan.langs}
    report = {"job": job_id, "input": plan.input, "source_hash": source_hash, "duration": info.duration,
              "out_dir": plan.out_dir, "flow_run": run.ui_url, "languages": langs}
    try:
        source = prepare_source(ctx, plan, source_hash)
        report["source_loudness_lufs"] = source.output.loudness_lufs
        report["source_true_peak_db"] = source.output.true_peak_db
        separating = separate_source.submit(ctx, plan, source)  # alongside speech recognition
        transcript = transcribe_source(ctx, plan, source, source_hash)
        try:
            background = separating.result()
        except Exception as exc:  # best effort: the band-cut still makes a dub, and the report says why
            background = StageResult("separate", None, "", status="failed", reason=f"separation failed: "
                                     f"{one_line(exc)}; the voice is band-cut under the dub")
        report["background"] = {"method": "demucs" if background.status in ("done", "cached") else "band-cut",
                                "status": background.status, "model": background.model_version,
                                "licence": background.licence, "reason": background.reason or background.note or None}
        shared = {"transcribe": transcript.licence, "separate": background.licence}
        report["source_lang"] = transcript.output.language
        report["transcript"] = {"backend": transcript.backend, "status": transcript.status,
                                "segments": transcript.output.segments, "diarizer": transcript.output.diarizer,
                                "licence": transcript.licence}

        chains = {lang: voice_language.submit(ctx, plan, source, transcript, background, lang)
                  for lang in plan.langs}
        mixed: dict[str, tuple[StageResult, StageResult, StageResult]] = {}
        for lang, future in chains.items():
            try:
                mixed[lang] = future.result()
            except Exception as exc:
                langs[lang]["error"] = one_line(exc)
            progress.advance(lang, "mixed" if lang in mixed else "failed", 1 if lang in mixed else 2)

        videos: dict[str, StageResult] = {}
        if mixed:
            try:
                videos = lipsync_langs(ctx, plan, source, {lang: r[2] for lang, r in mixed.items()})
            except Exception as exc:
                if plan.lipsync == "on":  # asked for: no language is delivered without it
                    for lang in mixed:
                        langs[lang]["error"] = one_line(exc)
                    mixed = {}
                else:  # auto: best effort; the dub is still delivered, and the report says why
                    videos = {lang: StageResult("lipsync", lang, "", status="failed", reason=one_line(exc))
                              for lang in mixed}

        delivered = {lang: assemble_lang.submit(ctx, plan, source, r[0], r[2], videos.get(lang), lang)
                     for lang, r in mixed.items()}
        assembled: dict[str, StageResult] = {}
        for lang, future in delivered.items():
            try:
                assembled[lang] = future.result()
            except Exception as exc:
                langs[lang]["error"] = one_line(exc)
                continue
            outputs = deliverables(plan, assembled[lang])
            translation, speech, mix = mixed[lang]
            langs[lang].update(_language_report(outputs, translation, speech, mix, videos.get(lang), shared))
            progress.advance(lang, "delivered")
            for kind, path in outputs.items():
                cat.add_output(job_id, lang, {"mp4": "video", "m4a": "audio"}.get(kind, kind), path,
                               info.duration if kind in ("mp4", "m4a") else None)
        done = [lang for lang in plan.langs if langs[lang]["status"] == "done"]
        if done:
            multitrack = assemble_multitrack(ctx, plan, source, transcript, {lang: assembled[lang] for lang in done})
            report["multitrack"] = multitrack
            cat.add_output(job_id, None, "multitrack", multitrack, info.duration)
    except Exception as exc:
        report["error"] = one_line(exc)
        for entry in langs.values():
            entry.setdefault("error", one_line(exc))
    except BaseException as exc:  # cancelled from Prefect (SIGTERM from the worker), Ctrl-C
        stopped = outcome.interruption(exc, run)
        report["error"] = stopped.reason
        raise
    finally:
        heartbeat.stop()
        if crash.interrupted_at():  # Ctrl-C: the job and its stages read interrupted, not failed
            stopped = outcome.Stopped("interrupted", crash.CTRL_C_REASON)
            crash.record_interrupt(cat, job_id)
        status = stopped.status if stopped else _job_status(langs)
        report["status"] = status
        report["seconds"] = round(time.perf_counter() - started, 3)
        report["stages"] = cat.show_job(job_id)["stages"]
        try:
            _write_report(plan, report, cat, job_id)
        except (OSError, DubError) as exc:  # output folder full or gone: the catalog still gets the truth
            report["error"] = one_line(exc)
        reason = stopped.reason if stopped else (outcome.failures(report) or report.get("error"))
        cat.finish_job(job_id, status, error=None if status == "done" else reason)
        outcome.publish(report, plan)
    return report


def _job_status(langs: dict[str, dict]) -> str:
    done = sum(entry["status"] == "done" for entry in langs.values())
    return "done" if done == len(langs) else ("partial" if done else "failed")


def _language_report(outputs: dict[str, str], translation: StageResult, speech: StageResult,
                     mix: StageResult, video: StageResult | None, shared: dict[str, str | None]) -> dict:
    """One language's entry; `shared`: licences of the per-video stages' models by stage."""
    lines = json.loads(Path(mix.file("lines.json")).read_text())
    for line, clip in zip(lines, speech.output.clips):  # who says each line, in which voice
        line.update(speaker=clip.speaker, voice=clip.voice)
    made_by = {**shared, **{r.stage: r.licence for r in (translation, speech, video)
                            if r is not None and r.status in ("done", "cached")}}
    stages = {r.stage: {"status": r.status, "seconds": r.seconds}
              for r in (translation, speech, mix, video) if r is not None}
    return {
        "status": "done",
        "outputs": outputs,
        "backends": {
            "translate": translation.backend,
            "voice": speech.backend, "voice_model": speech.model_version,
            "voice_reason": speech.output.reason,
            "lipsync": video.status if video else "skipped",
            "lipsync_reason": video.reason if video else None,
            "background": mix.output.background, "background_reason": mix.output.background_reason,
        },
        "speakers": speech.output.speakers,  # speaker -> voice, backend, reason
        "licences": {stage: licence for stage, licence in made_by.items() if licence},
        "segments": len(lines),
        "loudness_lufs": mix.output.loudness,  # measured on the mix
        "true_peak_db": mix.output.true_peak_db,
        "loudness_target_lufs": mix.output.target_lufs,
        "true_peak_target_db": mix.output.target_true_peak_db,
        "sped_up": sum(line["speed"] > 1.0 for line in lines),
        "overflowing": sum(line["overflow"] > 0 for line in lines),
        "lines": lines,
        "stages": stages,
    }


def _write_report(plan: JobPlan, report: dict, cat, job_id: int) -> None:
    path = Path(plan.out_dir) / f"{plan.name}.report.json"
    cache.write_text(path, json.dumps(report, ensure_ascii=False, indent=1, default=str))
    report["report"] = str(path)
    cat.add_output(job_id, None, "report", str(path))
