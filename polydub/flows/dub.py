"""The `dub_video` flow: one source video into one dubbed deliverable per language.

The flow only orchestrates: per-video stages once, per-language stages concurrently,
lip-sync once for all languages, then the deliverables and the report.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from prefect import flow
from prefect.task_runners import ThreadPoolTaskRunner

from polydub import cache, config, media
from polydub.asr.locate import DEFAULT_MODEL as DEFAULT_ASR_MODEL
from polydub.job import DEFAULT_LOUDNESS, DEFAULT_MAX_SPEED, JobPlan, plan_job
from polydub.tasks.common import JobContext, StageResult, catalog, one_line
from polydub.tasks.deliver import assemble_lang, assemble_multitrack, deliverables
from polydub.tasks.language import mix_lang, synthesize_lang, translate_lang
from polydub.tasks.lipsync import lipsync_langs
from polydub.tasks.source import prepare_source, transcribe_source

LANGUAGE_WORKERS = 4  # languages in flight at once; each mostly waits on ffmpeg / TTS


@flow(name="dub-video", task_runner=ThreadPoolTaskRunner(max_workers=LANGUAGE_WORKERS * 3))
def dub_video(input: str, langs: list[str], out: str | None = None, source_lang: str | None = None,
              transcript: str | None = None, translations: str | None = None, voice: str = "auto",
              lipsync: str = "auto", translator: str = "google", asr_model: str = DEFAULT_ASR_MODEL,
              glossary: str | None = None, max_speed: float = DEFAULT_MAX_SPEED,
              loudness: float = DEFAULT_LOUDNESS, consent: str | None = None,
              db: str | None = None) -> dict:
    """Dub a video (or audio file) into several languages; return the job report, which is
    also written as NAME.report.json beside the deliverables.

    Args:
        input: Path of the video or audio file to dub, as the worker sees it.
        langs: Target languages, ISO 639-1 codes such as es, fr, de, pt-br.
        out: Output folder (default ./dubbed/NAME/).
        source_lang: Language spoken in the input (default: detected or from the sidecar name).
        transcript: Approved transcript (SRT/VTT); skips speech recognition.
        translations: Folder of approved translations NAME.<lang>.srt.
        voice: auto | espeak | espeak:VOICE | coqui:MODEL_OR_PATH.
        lipsync: auto | on | off (auto runs it when a GPU and the weights are present).
        translator: google | deepl | microsoft | mymemory | libre | ... | local:MODEL.
        asr_model: Whisper model name, openai-whisper .pt checkpoint or CTranslate2 model folder.
        glossary: Glossary file (TSV/CSV/JSON), or a folder of <lang>.tsv files.
        max_speed: Cap on speeding up a line to fit its slot (pitch preserved).
        loudness: Integrated loudness target of the dubbed tracks, LUFS (EBU R128).
        consent: The consent under which the voice is cloned and the lips changed (recorded).
        db: Catalog URL (default DUB_DATABASE_URL or a SQLite file in DUB_HOME).
    """
    plan = plan_job(input, langs, out, source_lang, transcript, translations, voice, lipsync,
                    translator, asr_model, glossary, max_speed, loudness, consent)
    return run_job(plan, db)


def run_job(plan: JobPlan, db: str | None = None) -> dict:
    started = time.perf_counter()
    db_url = db or config.database_url()
    cat = catalog(db_url)
    cat.mark_interrupted()  # rows left 'running' by a process that died on this machine
    info = media.probe(plan.input)
    source_hash = cache.file_hash(plan.input)
    source_id = cat.upsert_source(plan.input, source_hash, info.duration, info.fps, info.has_video)
    job_id = cat.create_job(source_id, plan.langs, plan.to_dict(), plan.out_dir, plan.consent)
    ctx = JobContext(job_id, db_url, str(config.cache_dir()))
    langs: dict[str, dict] = {lang: {"status": "failed", "stages": {}} for lang in plan.langs}
    report = {"job": job_id, "input": plan.input, "source_hash": source_hash, "duration": info.duration,
              "out_dir": plan.out_dir, "languages": langs}
    try:
        source = prepare_source(ctx, plan, source_hash)
        transcript = transcribe_source(ctx, plan, source, source_hash)
        report["source_lang"] = transcript.meta.get("language")
        report["transcript"] = {"backend": transcript.meta.get("backend"), "status": transcript.status,
                                "segments": transcript.meta.get("segments")}

        chains = {}
        for lang in plan.langs:
            t = translate_lang.submit(ctx, plan, transcript, lang)
            s = synthesize_lang.submit(ctx, plan, source, transcript, t, lang)
            m = mix_lang.submit(ctx, plan, source, transcript, t, s, lang)
            chains[lang] = (t, s, m)
        mixed: dict[str, tuple[StageResult, StageResult, StageResult]] = {}
        for lang, futures in chains.items():
            try:
                mixed[lang] = tuple(f.result() for f in futures)
            except Exception as exc:
                langs[lang]["error"] = one_line(exc)

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
                    videos = {lang: StageResult("lipsync", lang, "", {"reason": one_line(exc)}, "failed")
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
            langs[lang].update(_language_report(outputs, translation, speech, mix, videos.get(lang)))
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
    finally:
        status = _job_status(langs)
        report["status"] = status
        report["seconds"] = round(time.perf_counter() - started, 3)
        report["stages"] = cat.show_job(job_id)["stages"]
        _write_report(plan, report, cat, job_id)
        cat.finish_job(job_id, status)
    return report


def _job_status(langs: dict[str, dict]) -> str:
    done = sum(entry["status"] == "done" for entry in langs.values())
    return "done" if done == len(langs) else ("partial" if done else "failed")


def _language_report(outputs: dict[str, str], translation: StageResult, speech: StageResult,
                     mix: StageResult, video: StageResult | None) -> dict:
    lines = json.loads(Path(mix.file("lines.json")).read_text())
    stages = {r.stage: {"status": r.status, "seconds": r.meta.get("seconds", 0.0)}
              for r in (translation, speech, mix, video) if r is not None}
    return {
        "status": "done",
        "outputs": outputs,
        "backends": {
            "translate": translation.meta.get("backend"),
            "voice": speech.meta.get("backend"), "voice_model": speech.meta.get("model_version"),
            "voice_reason": speech.meta.get("reason"),
            "lipsync": video.status if video else "skipped",
            "lipsync_reason": (video.meta.get("reason") if video else None),
        },
        "segments": len(lines),
        "loudness_lufs": mix.meta.get("loudness"),
        "sped_up": sum(line["speed"] > 1.0 for line in lines),
        "overflowing": sum(line["overflow"] > 0 for line in lines),
        "lines": lines,
        "stages": stages,
    }


def _write_report(plan: JobPlan, report: dict, cat, job_id: int) -> None:
    out = Path(plan.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{plan.name}.report.json"
    tmp = path.with_name(f".{path.name}.part")
    tmp.write_text(json.dumps(report, ensure_ascii=False, indent=1, default=str))
    tmp.replace(path)
    report["report"] = str(path)
    cat.add_output(job_id, None, "report", str(path))
