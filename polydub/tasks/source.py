"""Per-video stages, shared by every language: prepare the source audio, separate its
background from its voice, transcribe."""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path

from prefect import task
from prefect.cache_policies import NONE

from polydub import cache, config, media
from polydub.asr.audio import ASR_SAMPLE_RATE
from polydub.job import JobPlan
from polydub.report import StageResult
from polydub.segments import (
    Segment,
    read_subtitles,
    segments_from_dicts,
    segments_to_dicts,
    speakers_of,
    write_subtitles,
)
from polydub.tasks.common import JobContext, run_stage, skip_stage

SOURCE_AUDIO = "source.wav"  # 48 kHz, the source's channels (at most 2): mixing base
ASR_AUDIO = "asr.wav"  # 16 kHz mono: speech recognition, VAD and lip-sync features
SEGMENTS = "segments.json"
SUBTITLE_PARSER = 2  # in the keys of approved scripts: 2 reads speaker labels out of the text
BACKGROUND = "background.wav"  # the source without its voice (separated), SOURCE_AUDIO's format
WORDS = "words.json"  # recognised words with their times (speech recognition only)


@dataclass
class SourceAudio:
    """What probing the input found, and the level of its audio (the dubs match it)."""

    duration: float  # s, the container's
    audio_duration: float  # s, of the decoded audio
    loudness_lufs: float
    true_peak_db: float | None  # None: a silent source
    samples: int  # at media.SAMPLE_RATE
    channels: int
    has_video: bool
    fps: float | None = None
    width: int | None = None
    height: int | None = None
    video_codec: str | None = None


@dataclass
class Separation:
    note: str


@dataclass
class Transcription:
    """The source's timed lines (SEGMENTS in the folder) and where they came from."""

    language: str | None
    segments: int
    note: str = ""
    backend: str | None = None  # recognition: the library that ran, known once it has
    language_probability: float | None = None
    words: int | None = None
    dropped_without_speech: int | None = None
    diarizer: str | None = None  # set when a diarizer labeled the lines
    speakers: int | None = None


@dataclass
class Diarization:
    speakers: int
    note: str


def load_segments(result: StageResult) -> list[Segment]:
    return segments_from_dicts(json.loads(Path(result.file(SEGMENTS)).read_text()))


def save_segments(segments: list[Segment], folder: Path, srt_name: str | None = None) -> None:
    (folder / SEGMENTS).write_text(json.dumps(segments_to_dicts(segments), ensure_ascii=False, indent=1))
    if srt_name:
        write_subtitles(segments, folder / srt_name)


@task(name="prepare-source", task_run_name="probe", cache_policy=NONE, persist_result=False)
def prepare_source(ctx: JobContext, plan: JobPlan, source_hash: str) -> StageResult[SourceAudio]:
    """Probe the input and decode its audio once: a 48 kHz mix base and a 16 kHz ASR copy."""

    def build(folder: Path) -> SourceAudio:
        info = media.probe(plan.input)
        channels = max(1, min(2, info.audio_channels))
        media.extract_audio(plan.input, folder / SOURCE_AUDIO, channels=channels, seconds=info.audio_duration)
        media.extract_audio(plan.input, folder / ASR_AUDIO, sample_rate=ASR_SAMPLE_RATE,
                            seconds=info.audio_duration)
        import soundfile

        from polydub.audio.mix import measure

        frames = soundfile.info(str(folder / SOURCE_AUDIO)).frames
        level = measure(folder / SOURCE_AUDIO)  # once per video: what the dubs match by default
        return SourceAudio(info.duration, frames / media.SAMPLE_RATE, level.lufs,
                           level.true_peak_db if level.true_peak_db > float("-inf") else None,
                           frames, channels, info.has_video, info.fps, info.width, info.height, info.video_codec)

    key = cache.stage_key("probe", source=source_hash, rate=media.SAMPLE_RATE, version=3)
    return run_stage(ctx, "probe", None, key, build, SourceAudio, backend="ffmpeg")


def separation_model(plan: JobPlan) -> tuple[Path | None, str | None]:
    """The separation checkpoint this job uses, or (None, why the voice is band-cut instead)."""
    from polydub import licences
    from polydub.audio import separate

    checkpoint = separate.locate()
    if checkpoint is None:
        where = config.models_dir() / separate.MODEL_DIR
        return None, f"no separation model in {where}; the voice is band-cut under the dub (dub models pull htdemucs)"
    licence = licences.of_separator(checkpoint)
    if plan.options.commercial and licence.commercial is False:
        return None, (f"{checkpoint.name}: {licence.name}, not used with --commercial; "
                      "the voice is band-cut under the dub")
    return checkpoint, None


@task(name="separate", task_run_name="separate", cache_policy=NONE, persist_result=False)
def separate_source(ctx: JobContext, plan: JobPlan, source: StageResult[SourceAudio]) -> StageResult[Separation]:
    """The source's background without its voice (Demucs), when a separation model is in
    the models directory; else skipped, and the mix band-cuts the voice instead."""
    from polydub.audio import separate

    checkpoint, band_cut = separation_model(plan)
    if checkpoint is None:
        return skip_stage(ctx, "separate", None, band_cut)
    version = separate.model_version(checkpoint)

    def build(folder: Path) -> Separation:
        separate.separate(separate.load(checkpoint), Path(source.file(SOURCE_AUDIO)), folder / BACKGROUND)
        return Separation(f"{checkpoint.name}: background separated from the voice")

    key = cache.stage_key("separate", source=Path(source.folder).name, model=version)
    return run_stage(ctx, "separate", None, key, build, Separation, backend="demucs", model_version=version)


@task(name="transcribe", task_run_name="transcribe", cache_policy=NONE, persist_result=False)
def transcribe_source(ctx: JobContext, plan: JobPlan, source: StageResult[SourceAudio],
                      source_hash: str) -> StageResult[Transcription]:
    """Timed source-language segments: the approved transcript if there is one, else speech
    recognition (faster-whisper or openai-whisper), its lines trimmed to speech by Silero VAD."""
    if plan.options.transcript:
        transcript_hash = cache.file_hash(plan.options.transcript)

        def build(folder: Path) -> Transcription:
            segments = read_subtitles(plan.options.transcript)
            save_segments(segments, folder, "transcript.srt")
            return Transcription(plan.options.source_lang, len(segments), f"approved transcript {Path(plan.options.transcript).name}")

        key = cache.stage_key("transcribe", transcript=transcript_hash, lang=plan.options.source_lang,
                              subtitles=SUBTITLE_PARSER)
        return label_speakers(ctx, source, run_stage(ctx, "transcribe", None, key, build, Transcription,
                                                     backend="approved transcript",
                                                     model_version=Path(plan.options.transcript).name))

    from polydub import asr

    model = asr.locate_model(plan.options.asr_model)
    version = model.version
    vad = asr.VadSettings() if config.asr_vad() else None

    def build(folder: Path) -> Transcription:
        import soundfile

        audio, _ = soundfile.read(source.file(ASR_AUDIO), dtype="float32")
        result = asr.transcribe(model, audio, plan.options.source_lang, vad)
        save_segments(result.segments, folder, "transcript.srt")
        (folder / WORDS).write_text(json.dumps(result.words_to_dicts(), ensure_ascii=False))
        return Transcription(result.language, len(result.segments), backend=result.backend,
                             language_probability=round(result.language_probability, 3), words=len(result.words),
                             dropped_without_speech=result.dropped)

    key = cache.stage_key("transcribe", source=source_hash, backend=model.backend, model=version,
                          lang=plan.options.source_lang, vad=vad.key() if vad else None)
    return label_speakers(ctx, source, run_stage(ctx, "transcribe", None, key, build, Transcription,
                                                 backend=model.backend, model_version=version))


def label_speakers(ctx: JobContext, source: StageResult[SourceAudio],
                   transcript: StageResult[Transcription]) -> StageResult[Transcription]:
    """The transcript with speakers from a diarization backend, when it names none and one is
    configured; else the transcript as it is."""
    from polydub import diarize

    segments = load_segments(transcript)
    diarizer = diarize.find_diarizer() if segments and not speakers_of(segments) else None
    if diarizer is None:
        return transcript

    def build(folder: Path) -> Diarization:
        labeled = diarize.label_segments(segments, diarizer.diarize(Path(source.file(ASR_AUDIO))))
        save_segments(labeled, folder, "transcript.srt")
        return Diarization(len(speakers_of(labeled)), f"{len(speakers_of(labeled))} speaker(s)")

    key = cache.stage_key("diarize", source=Path(source.folder).name, segments=cache.file_hash(
        transcript.file(SEGMENTS)), diarizer=diarizer.version)
    result = run_stage(ctx, "diarize", None, key, build, Diarization, backend=diarizer.name,
                       model_version=diarizer.version)
    # downstream reads the labeled lines; what the transcript was is still its own stage's
    return replace(transcript, folder=result.folder,
                   output=replace(transcript.output, diarizer=diarizer.name, speakers=result.output.speakers))
