"""Per-language stages: translate, synthesize, fit and mix."""

from __future__ import annotations

import json
from pathlib import Path

from prefect import task
from prefect.cache_policies import NONE

from polydub import cache, config, licences
from polydub.job import JobPlan
from polydub.media import SAMPLE_RATE
from polydub.segments import read_subtitles
from polydub.tasks.common import JobContext, StageResult, run_stage
from polydub.tasks.source import (
    ASR_AUDIO,
    BACKGROUND,
    SEGMENTS,
    SOURCE_AUDIO,
    load_segments,
    save_segments,
)

DUB_TRACK = "dub.wav"  # the placed, fitted voice alone
MIXED = "mixed.wav"  # voice over the ducked background, loudness-normalized
REFERENCE = "reference.wav"


def _segments_hash(result: StageResult) -> str:
    return cache.file_hash(result.file(SEGMENTS))


def glossary_for(glossary: str | None, lang: str) -> Path | None:
    """`--glossary FILE` applies to every language; `--glossary DIR` holds `<lang>.tsv|csv|json`."""
    if not glossary:
        return None
    path = Path(glossary)
    if path.is_file():
        return path
    return next((path / f"{lang}{ext}" for ext in (".tsv", ".csv", ".json") if (path / f"{lang}{ext}").is_file()),
                None)


@task(name="translate", task_run_name="translate[{lang}]", cache_policy=NONE, persist_result=False)
def translate_lang(ctx: JobContext, plan: JobPlan, transcript: StageResult, lang: str) -> StageResult:
    """Translated segments on the source timeline: approved lines as they are, else a provider."""
    approved = plan.translations.get(lang)
    if approved:
        def build_approved(folder: Path) -> dict:
            segments = read_subtitles(approved)
            save_segments(segments, folder)
            return {"segments": len(segments), "note": f"approved {Path(approved).name}"}

        key = cache.stage_key("translate", approved=cache.file_hash(approved), lang=lang)
        return run_stage(ctx, "translate", lang, key, build_approved, backend="approved translation",
                         model_version=Path(approved).name)

    from polydub import translate

    translator = translate.make_translator(plan.translator)
    glossary_file = glossary_for(plan.glossary, lang)
    glossary = translate.load_glossary(glossary_file) if glossary_file else None
    source_lang = transcript.meta.get("language") or plan.source_lang or "auto"

    from polydub.translate.memory import TranslationMemory, translate_with_memory

    who = dict(source=source_lang, lang=lang, translator=translator.name, version=translator.version,
               glossary=cache.file_hash(glossary_file) if glossary_file else None)
    memory = TranslationMemory(Path(ctx.cache_root) / "memory" / f"{cache.stage_key('memory', **who)}.json")

    def build(folder: Path) -> dict:
        segments, sent = translate_with_memory(load_segments(transcript), source_lang, lang, translator,
                                               glossary, memory)
        save_segments(segments, folder)
        return {"segments": len(segments), "sent": sent, "note": f"{sent} line(s) sent, rest from memory"}

    key = cache.stage_key("translate", segments=_segments_hash(transcript), **who)
    return run_stage(ctx, "translate", lang, key, build, backend=translator.name,
                     model_version=translator.version)


def _reference_clip(ctx: JobContext, source: StageResult, transcript: StageResult) -> StageResult:
    """A clip of the source speaker for voice cloning, cut once per video."""
    from polydub.tts import cut_reference

    def build(folder: Path) -> dict:
        cut_reference(Path(source.file(ASR_AUDIO)), load_segments(transcript), folder / REFERENCE)
        return {"backend": "ffmpeg"}

    key = cache.stage_key("reference", source=Path(source.folder).name, segments=_segments_hash(transcript))
    return run_stage(ctx, "reference", None, key, build, backend="ffmpeg")


def sf_duration(path: Path) -> float:
    import soundfile

    return soundfile.info(str(path)).duration


def _may_clone(voice: str, commercial: bool = False) -> bool:
    """Whether the voice could clone the speaker (and so needs a reference clip)."""
    from polydub.tts.coqui import XTTS_DIR, checkpoint_in

    if voice.startswith("coqui"):
        return True
    return voice == "auto" and not commercial and checkpoint_in(config.models_dir() / XTTS_DIR) is not None


@task(name="synthesize", task_run_name="synthesize[{lang}]", cache_policy=NONE, persist_result=False)
def synthesize_lang(ctx: JobContext, plan: JobPlan, source: StageResult, transcript: StageResult,
                    translation: StageResult, lang: str) -> StageResult:
    """One WAV per translated line, in the chosen voice."""
    from polydub.tts import select_voice
    from polydub.tts.trim import trim_silence

    reference = None
    if _may_clone(plan.voice, plan.commercial) and load_segments(transcript):
        reference = Path(_reference_clip(ctx, source, transcript).file(REFERENCE))
    voice, reason = select_voice(plan.voice, lang, config.models_dir(), reference, commercial=plan.commercial)

    voice_key = dict(lang=lang, voice=voice.model, trim=1,
                     reference=cache.file_hash(reference) if reference else None)
    lines = Path(ctx.cache_root) / "lines"  # one clip per distinct line and voice, across jobs

    def build(folder: Path) -> dict:
        clips, spoken = [], 0
        for i, segment in enumerate(load_segments(translation)):
            out = folder / f"line{i:04d}.wav"
            kept = lines / f"{cache.stage_key('line', text=segment.text, **voice_key)}.wav"
            if kept.is_file():  # said before in this voice: an edited script re-voices only its edits
                cache.place(kept, out)
            else:
                voice.synthesize(segment.text, lang, out)
                trim_silence(out)
                cache.place(out, kept)
                spoken += 1
            clips.append({"file": out.name, "duration": sf_duration(out)})
        return {"clips": clips, "reason": reason, "synthesized": spoken, "reused": len(clips) - spoken,
                "note": f"{voice.backend}: {reason}"}

    key = cache.stage_key("synthesize", segments=_segments_hash(translation), **voice_key)
    result = run_stage(ctx, "synthesize", lang, key, build, backend=voice.backend, model_version=voice.model,
                       licence=licences.of_voice(voice.backend, getattr(voice, "xtts", False)))
    result.meta.setdefault("reason", reason)
    return result


@task(name="fit-and-mix", task_run_name="mix[{lang}]", cache_policy=NONE, persist_result=False)
def mix_lang(ctx: JobContext, plan: JobPlan, source: StageResult, transcript: StageResult,
             translation: StageResult, speech: StageResult, lang: str,
             background: StageResult | None = None) -> StageResult:
    """Place every line at its source start (sped up only as needed) and mix over the
    background: the separated one when separation ran, else the band-cut source. The mix
    is normalized to the source's loudness and true peak, or to `--loudness`."""
    from polydub import fit, mix

    separated = background is not None and background.status in ("done", "cached")
    method = "demucs" if separated else "band-cut"
    why = (background.meta.get("reason") if background is not None and not separated else None) \
        or ("separated by " + str(background.meta.get("model_version")) if separated else "no separation ran")
    peak = source.meta.get("true_peak_db")  # None: a silent source
    level = mix.Loudness(source.meta["loudness_lufs"], mix.SILENCE if peak is None else peak)
    target = mix.delivery_target(level, plan.loudness)

    def build(folder: Path) -> dict:
        segments = load_segments(translation)
        clips = speech.meta["clips"]
        total = source.meta["samples"] / SAMPLE_RATE
        fits = fit.plan_fits(segments, [c["duration"] for c in clips], total, max_speed=plan.max_speed)
        lines = fit.render_dub_track([Path(speech.folder) / c["file"] for c in clips], fits,
                                     source.meta["samples"], folder / DUB_TRACK)
        mix.mix(Path(source.file(SOURCE_AUDIO)), folder / DUB_TRACK, load_segments(transcript),
                folder / MIXED, target=target, source_level=level,
                background_wav=Path(background.file(BACKGROUND)) if separated else None)
        report = []
        for segment, f, line in zip(segments, fits, lines):
            report.append({"start": round(f.start, 3), "end": round(segment.end, 3), "text": segment.text,
                           "clip": round(f.clip, 3), "slot": round(f.slot, 3), "speed": round(f.speed, 3),
                           "overflow": round(f.overflow, 3), "truncated": line.get("truncated", 0.0)})
        (folder / "lines.json").write_text(json.dumps(report, ensure_ascii=False, indent=1))
        measured = mix.measure(folder / MIXED)  # for the QA report
        return {"lines": len(report), "sped_up": sum(r["speed"] > 1.0 for r in report),
                "overflowing": sum(r["overflow"] > 0 for r in report), "backend": "ffmpeg",
                "background": method, "background_reason": why,
                "target_lufs": target.lufs, "target_true_peak_db": target.true_peak_db,
                "loudness": round(measured.lufs, 2),
                "true_peak_db": round(measured.true_peak_db, 2) if measured.true_peak_db > mix.SILENCE else None}

    key = cache.stage_key("mix", source=Path(source.folder).name, transcript=_segments_hash(transcript),
                          translation=_segments_hash(translation), speech=Path(speech.folder).name,
                          max_speed=plan.max_speed, loudness=target.lufs, true_peak=target.true_peak_db,
                          background=Path(background.folder).name if separated else "band-cut", version=3)
    return run_stage(ctx, "mix", lang, key, build, backend="ffmpeg")
