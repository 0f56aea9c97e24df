"""Per-language stages: translate, synthesize, fit and mix."""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from pathlib import Path

from prefect import task
from prefect.cache_policies import NONE

from polydub import cache, config, languages, licences
from polydub.errors import InputError
from polydub.job import JobPlan
from polydub.media import SAMPLE_RATE
from polydub.report import StageResult, speed_up
from polydub.review import FROM_MEMORY
from polydub.segments import label_from, read_subtitles, speakers_of
from polydub.storage import shared_catalog
from polydub.tasks.common import JobContext, run_stage
from polydub.tasks.source import (
    ASR_AUDIO,
    BACKGROUND,
    SEGMENTS,
    SOURCE_AUDIO,
    SUBTITLE_PARSER,
    Separation,
    SourceAudio,
    Transcription,
    load_segments,
    save_segments,
)
from polydub.translate.glossary import glossary_for

DUB_TRACK = "dub.wav"  # the placed, fitted voice alone
MIXED = "mixed.wav"  # voice over the ducked background, loudness-normalized
REFERENCE = "reference.wav"


@dataclass
class Translation:
    """The translated lines (SEGMENTS in the folder) on the source timeline."""

    segments: int
    note: str = ""
    backend: str | None = None  # "translation memory" when no translator was asked
    sent: int | None = None  # lines sent to the translator
    from_catalog_memory: int | None = None


@dataclass
class Clip:
    """One line's voice: `file` in the stage's folder."""

    file: str
    duration: float  # s
    speaker: str | None
    voice: str
    rate: float = 1.0  # how much faster than its own pace the voice was asked to speak it


@dataclass
class Speech:
    """One clip per translated line, and who voiced what."""

    clips: list[Clip]
    reason: str  # why these voices (this job's reasons, even when the clips are reused)
    speakers: dict[str, dict]  # speaker -> {"voice", "backend", "reason"}
    synthesized: int = 0
    reused: int = 0
    damaged_clips: int = 0
    note: str = ""
    watermarks: list[str] = field(default_factory=list)  # what the voices mark their speech with (Perth)

    def __post_init__(self):
        self.clips = [c if isinstance(c, Clip) else Clip(**c) for c in self.clips]  # from the cache's JSON


@dataclass
class Mixdown:
    """The fitted voice over the background (MIXED in the folder), and how it was made."""

    lines: int
    sped_up: int
    overflowing: int
    background: str  # demucs | band-cut
    background_reason: str
    target_lufs: float
    target_true_peak_db: float
    loudness: float  # LUFS, measured on the mix
    true_peak_db: float | None  # None: silent
    watermarks: list[str] = field(default_factory=list)  # the speech's, carried into the mix


def _segments_hash(result: StageResult[Transcription] | StageResult[Translation]) -> str:
    return cache.file_hash(result.file(SEGMENTS))


@task(name="translate", task_run_name="translate[{lang}]", cache_policy=NONE, persist_result=False)
def translate_lang(ctx: JobContext, plan: JobPlan, transcript: StageResult[Transcription],
                   lang: str) -> StageResult[Translation]:
    """Translated segments on the source timeline: approved lines as they are (and then
    remembered in the catalog), else the catalog's memory, else a provider."""
    approved = plan.translations.get(lang)
    if approved:
        source_lines = load_segments(transcript)
        labeled = bool(speakers_of(source_lines))

        def build_approved(folder: Path) -> Translation:
            # the speakers of the source lines they overlap; the file's own labels win
            segments = label_from(read_subtitles(approved), source_lines)
            save_segments(segments, folder)
            return Translation(len(segments), f"approved {Path(approved).name}")

        key = cache.stage_key("translate", approved=cache.file_hash(approved), lang=lang, subtitles=SUBTITLE_PARSER,
                              **({"speakers": _segments_hash(transcript)} if labeled else {}))
        result = run_stage(ctx, "translate", lang, key, build_approved, Translation, backend="approved translation",
                           model_version=Path(approved).name)
        _remember_approved(ctx, plan, transcript, result, lang)
        return result
    return _translate(ctx, plan, transcript, lang)


def _remember_approved(ctx: JobContext, plan: JobPlan, transcript: StageResult[Transcription],
                       result: StageResult[Translation], lang: str) -> None:
    """Put an approved translation's lines in the catalog's memory, paired with the source
    lines they overlap. A cached run adds only lines the memory lacks: re-running an old
    job is no new approval and must not undo later edits."""
    from polydub.storage import terms
    from polydub.translate.memory import pair_in_time

    source_lang = _source_code(transcript, plan)
    if source_lang is None:
        return  # nothing to key the lines by
    approved = plan.translations[lang]
    pairs = pair_in_time(load_segments(transcript), load_segments(result))
    terms.remember(shared_catalog(ctx.db_url), plan.options.brand, source_lang, lang, pairs, "approved",
                   note=Path(approved).name, keep_existing=result.status == "cached")


def _source_code(transcript: StageResult[Transcription], plan: JobPlan) -> str | None:
    """The source language as the catalog's memory keys it; None when not known."""
    try:
        return languages.normalize(transcript.output.language or plan.options.source_lang or "")
    except InputError:
        return None


def _translate(ctx: JobContext, plan: JobPlan, transcript: StageResult[Transcription],
               lang: str) -> StageResult[Translation]:
    """Lines the catalog's memory holds as they are; the rest through the file memory and
    the provider, with the brand's glossary merged under the file glossary."""
    from polydub import translate
    from polydub.storage import terms
    from polydub.translate.memory import TranslationMemory, translate_with_memory

    translator = translate.make_translator(plan.options.translator)
    source_lang = transcript.output.language or plan.options.source_lang or "auto"
    glossary_file = glossary_for(plan.options.glossary, lang)
    cat = shared_catalog(ctx.db_url)
    stored = terms.glossary_terms(cat, plan.options.brand, lang)
    glossary = {**stored, **(translate.load_glossary(glossary_file) if glossary_file else {})} or None
    lines = load_segments(transcript)
    code = _source_code(transcript, plan)
    hits = terms.recall(cat, plan.options.brand, code, lang, [s.text for s in lines]) if code else {}

    who = dict(source=source_lang, lang=lang, translator=translator.name, version=translator.version,
               glossary=cache.file_hash(glossary_file) if glossary_file else None,
               **({"catalog_glossary": terms.digest_of(stored)} if stored else {}))
    memory = TranslationMemory(Path(ctx.cache_root) / "memory" / f"{cache.stage_key('memory', **who)}.json")

    def build(folder: Path) -> Translation:
        rest = [s for s in lines if s.text not in hits]
        done, sent = translate_with_memory(rest, source_lang, lang, translator, glossary, memory) if rest else ([], 0)
        fresh = iter(done)
        segments = [replace(s, text=hits[s.text]) if s.text in hits else next(fresh) for s in lines]
        save_segments(segments, folder)
        known = len(lines) - len(rest)
        return Translation(len(segments), f"{known} line(s) from the catalog's translation memory, {sent} sent, "
                                          "the rest translated before",
                           backend=FROM_MEMORY if lines and not rest else None,  # no translator asked
                           sent=sent, from_catalog_memory=known)

    key = cache.stage_key("translate", segments=_segments_hash(transcript), **who,
                          **({"catalog_memory": terms.digest_of(hits)} if hits else {}))
    return run_stage(ctx, "translate", lang, key, build, Translation, backend=translator.name,
                     model_version=translator.version)


def _reference_clip(ctx: JobContext, source: StageResult[SourceAudio], transcript: StageResult[Transcription],
                    speaker: str | None = None) -> StageResult[None]:
    """A clip of one source speaker for voice cloning, cut once per video and speaker: from
    their own lines, or from every line when the script does not say who speaks."""
    from polydub.tts import cut_reference

    lines = load_segments(transcript)
    own = [s for s in lines if s.speaker == speaker] if speaker is not None else []

    def build(folder: Path) -> None:
        cut_reference(Path(source.file(ASR_AUDIO)), own or lines, folder / REFERENCE)

    key = cache.stage_key("reference", source=Path(source.folder).name, segments=_segments_hash(transcript),
                          **({"speaker": speaker} if own else {}))
    return run_stage(ctx, "reference", None, key, build, backend="ffmpeg")


def sf_duration(path: Path) -> float:
    import soundfile

    return soundfile.info(str(path)).duration


def _may_clone(voice: str, lang: str, commercial: bool = False) -> bool:
    """Whether the voice could clone the speaker (and so needs a reference clip)."""
    from polydub.tts import auto_cloner

    if voice.startswith("coqui") or voice == "chatterbox":
        return True
    return voice == "auto" and auto_cloner(lang, config.models_dir(), commercial) is not None


UNNAMED = "(unnamed)"  # the report's name for lines no script or diarizer labeled


@dataclass
class Casting:
    """The voice of one speaker in one language, and why."""

    voice: object  # a polydub.tts.Voice
    reason: str
    key: dict  # what the voice's clips depend on: part of every line's cache key


def cast_voices(ctx: JobContext, plan: JobPlan, source: StageResult[SourceAudio],
                transcript: StageResult[Transcription], translation: StageResult[Translation],
                lang: str) -> dict[str | None, Casting]:
    """Speaker (None: unlabeled lines) -> voice, in the order speakers first speak."""
    from polydub.tts import EspeakVoice, KokoroVoice, select_voice
    from polydub.tts.cast import espeak_variant, load_voice_map
    from polydub.tts.kokoro import voice_for as kokoro_voice_for

    source_lines, lines = load_segments(transcript), load_segments(translation)
    named = list(dict.fromkeys(speakers_of(source_lines) + speakers_of(lines)))
    cast_order = named + ([None] if any(s.speaker is None for s in lines) or not lines else [])
    voice_map = load_voice_map(plan.options.voices) if plan.options.voices else None
    cast: dict[str | None, Casting] = {}
    for speaker in cast_order:
        mapped = voice_map.spec_for(speaker, lang) if voice_map and speaker is not None else None
        spec = mapped or plan.options.voice
        reference = None
        if _may_clone(spec, lang, plan.options.commercial) and source_lines:
            reference = Path(_reference_clip(ctx, source, transcript, speaker).file(REFERENCE))
        voice, reason = select_voice(spec, lang, config.models_dir(), reference, commercial=plan.options.commercial)
        if mapped:
            reason = f"--voices {Path(voice_map.path).name}: {reason}"
        elif isinstance(voice, EspeakVoice) and speaker is not None:
            varied = espeak_variant(voice.voice, named.index(speaker), len(named))
            if varied != voice.voice:
                voice = EspeakVoice(varied, voice.rate)
                reason += f"; speaker {named.index(speaker) + 1} of {len(named)}: variant {varied}"
        elif isinstance(voice, KokoroVoice) and speaker is not None and len(named) > 1 and ":" not in spec:
            own = kokoro_voice_for(lang, named.index(speaker))  # a voice each, female and male in turn
            if own != voice.voice:
                voice = KokoroVoice(voice.model_dir, lang, own)
            reason += f"; speaker {named.index(speaker) + 1} of {len(named)}: voice {own}"
        cast[speaker] = Casting(voice, reason, dict(lang=lang, voice=voice.model, trim=1,
                                                    reference=cache.file_hash(reference) if reference else None))
    return cast


@task(name="synthesize", task_run_name="synthesize[{lang}]", cache_policy=NONE, persist_result=False)
def synthesize_lang(ctx: JobContext, plan: JobPlan, source: StageResult[SourceAudio],
                    transcript: StageResult[Transcription], translation: StageResult[Translation],
                    lang: str) -> StageResult[Speech]:
    """One WAV per translated line, in its speaker's voice. A voice that can speak faster
    (espeak-ng, Kokoro, XTTS) says a line that would overflow its slot faster at the source, up to the
    speed cap, so that the mix stretches fewer lines (each clip's `rate` says how much)."""
    from polydub.audio import fit
    from polydub.tts.trim import trim_silence

    cast = cast_voices(ctx, plan, source, transcript, translation, lang)
    root = Path(ctx.cache_root)  # one clip per distinct line and voice, shared across jobs
    backends = "+".join(sorted({c.voice.backend for c in cast.values()}))
    if len(cast) == 1:
        reason, model = next(iter(cast.values())).reason, next(iter(cast.values())).voice.model
    else:
        reason = " | ".join(f"{speaker or UNNAMED}: {c.reason}" for speaker, c in cast.items())
        model = "; ".join(f"{speaker or UNNAMED}: {c.voice.model}" for speaker, c in cast.items())[:256]

    segments = load_segments(translation)
    total = source.output.samples / SAMPLE_RATE
    faster_voices = any(c.voice.sets_pace for c in cast.values())
    counts = {"spoken": 0, "damaged": 0}

    def voice_line(voice, casting: Casting, text: str, out: Path) -> float:
        """`text` in `voice` into `out` (from the line cache when it holds it); its duration."""
        line = cache.stage_key("line", text=text, **{**casting.key, "voice": voice.model})
        found, removed = cache.reuse_line(line, out, root)  # an edited script re-voices only its edits
        counts["damaged"] += removed
        if not found:
            voice.synthesize(text, lang, out)
            trim_silence(out)
            cache.keep_line(line, out, root)
            counts["spoken"] += 1
        return sf_duration(out)

    def build(folder: Path) -> Speech:
        clips = []
        for i, segment in enumerate(segments):
            casting = cast[segment.speaker]
            out = folder / f"line{i:04d}.wav"
            clips.append(Clip(out.name, voice_line(casting.voice, casting, segment.text, out), segment.speaker,
                              casting.voice.model))
        if faster_voices:  # fit at the source: a line that would be stretched is first spoken faster
            fits = fit.plan_fits(segments, [c.duration for c in clips], total, max_speed=plan.options.max_speed)
            for i, (segment, line_fit) in enumerate(zip(segments, fits)):
                casting = cast[segment.speaker]
                if line_fit.speed <= 1.0 + fit.EPS or not casting.voice.sets_pace:
                    continue
                faster = casting.voice.faster(line_fit.speed)
                out = folder / f"line{i:04d}.faster.wav"
                duration = voice_line(faster, casting, segment.text, out)
                if duration < clips[i].duration:
                    out.replace(folder / clips[i].file)
                    clips[i] = replace(clips[i], duration=duration, voice=faster.model, rate=round(line_fit.speed, 3))
                else:
                    out.unlink()
        spoken = counts["spoken"]
        return Speech(clips, reason, speakers, spoken, max(0, len(clips) - spoken), counts["damaged"],
                      f"{backends}: {reason}")

    speakers = {speaker or UNNAMED: {"voice": c.voice.model, "backend": c.voice.backend, "reason": c.reason}
                for speaker, c in cast.items()}
    # One unlabeled voice keys the stage as it always did; a cast keys it by every voice.
    voices = (next(iter(cast.values())).key if list(cast) == [None]
              else {"cast": {speaker or UNNAMED: c.key for speaker, c in cast.items()}})
    # Fitting at the source depends on the lines' slots (the source's length) and the cap.
    fitting = {"fit": {"max_speed": plan.options.max_speed, "total": round(total, 3)}} if faster_voices else {}
    key = cache.stage_key("synthesize", segments=_segments_hash(translation), **voices, **fitting)
    result = run_stage(ctx, "synthesize", lang, key, build, Speech, backend=backends, model_version=model,
                       licence=licences.of_cast([licences.of_voice(c.voice.backend, getattr(c.voice, "xtts", False))
                                                 for c in cast.values()]))
    # Why this job chose its voices, even when another job's identical clips are reused.
    marks = sorted({c.voice.watermark for c in cast.values() if getattr(c.voice, "watermark", None)})
    result.output = replace(result.output, reason=reason, speakers=speakers, watermarks=marks)
    return result


@task(name="fit-and-mix", task_run_name="mix[{lang}]", cache_policy=NONE, persist_result=False)
def mix_lang(ctx: JobContext, plan: JobPlan, source: StageResult[SourceAudio],
             transcript: StageResult[Transcription], translation: StageResult[Translation],
             speech: StageResult[Speech], lang: str,
             background: StageResult[Separation] | None = None) -> StageResult[Mixdown]:
    """Place every line at its source start (sped up only as needed) and mix over the
    background: the separated one when separation ran, else the band-cut source. The mix
    is normalized to the source's loudness and true peak, or to `--loudness`."""
    from polydub.audio import fit, mix

    separated = background is not None and background.status in ("done", "cached")
    method = "demucs" if separated else "band-cut"
    why = (background.reason if background is not None and not separated else None) \
        or ("separated by " + str(background.model_version) if separated else "no separation ran")
    peak = source.output.true_peak_db  # None: a silent source
    level = mix.Loudness(source.output.loudness_lufs, mix.SILENCE if peak is None else peak)
    target = mix.delivery_target(level, plan.options.loudness)

    def build(folder: Path) -> Mixdown:
        segments = load_segments(translation)
        clips = speech.output.clips
        total = source.output.samples / SAMPLE_RATE
        fits = fit.plan_fits(segments, [c.duration for c in clips], total, max_speed=plan.options.max_speed,
                             spoken_faster=[c.rate for c in clips])  # the cap holds for both steps together
        lines = fit.render_dub_track([Path(speech.file(c.file)) for c in clips], fits,
                                     source.output.samples, folder / DUB_TRACK)
        measured = mix.mix(Path(source.file(SOURCE_AUDIO)), folder / DUB_TRACK, load_segments(transcript),
                           folder / MIXED, target=target, source_level=level,
                           background_wav=Path(background.file(BACKGROUND)) if separated else None).level
        report = []
        for segment, f, line, clip in zip(segments, fits, lines, clips):
            report.append({"start": round(f.start, 3), "end": round(segment.end, 3), "text": segment.text,
                           "clip": round(f.clip, 3), "slot": round(f.slot, 3), "source_speed": clip.rate,
                           "speed": round(f.speed, 3), "overflow": round(f.overflow, 3),
                           "truncated": line.get("truncated", 0.0)})
        (folder / "lines.json").write_text(json.dumps(report, ensure_ascii=False, indent=1))
        return Mixdown(len(report), sum(speed_up(r) > 1.0 for r in report), sum(r["overflow"] > 0 for r in report),
                       method, why, target.lufs, target.true_peak_db, round(measured.lufs, 2),
                       round(measured.true_peak_db, 2) if measured.true_peak_db > mix.SILENCE else None,
                       list(speech.output.watermarks))

    key = cache.stage_key("mix", source=Path(source.folder).name, transcript=_segments_hash(transcript),
                          translation=_segments_hash(translation), speech=Path(speech.folder).name,
                          max_speed=plan.options.max_speed, loudness=target.lufs, true_peak=target.true_peak_db,
                          background=Path(background.folder).name if separated else "band-cut", version=3)
    return run_stage(ctx, "mix", lang, key, build, Mixdown, backend="ffmpeg")
