"""Per-video stages, shared by every language: prepare the source audio, transcribe."""

from __future__ import annotations

import json
from pathlib import Path

from prefect import task
from prefect.cache_policies import NONE

from polydub import cache, config, media
from polydub.job import JobPlan
from polydub.segments import (
    Segment,
    read_subtitles,
    segments_from_dicts,
    segments_to_dicts,
    write_subtitles,
)
from polydub.tasks.common import JobContext, StageResult, run_stage
from polydub.asr.audio import ASR_SAMPLE_RATE

SOURCE_AUDIO = "source.wav"  # 48 kHz, the source's channels (at most 2): mixing base
ASR_AUDIO = "asr.wav"  # 16 kHz mono: speech recognition, VAD and lip-sync features
SEGMENTS = "segments.json"
WORDS = "words.json"  # recognised words with their times (speech recognition only)


def load_segments(result: StageResult) -> list[Segment]:
    return segments_from_dicts(json.loads(Path(result.file(SEGMENTS)).read_text()))


def save_segments(segments: list[Segment], folder: Path, srt_name: str | None = None) -> None:
    (folder / SEGMENTS).write_text(json.dumps(segments_to_dicts(segments), ensure_ascii=False, indent=1))
    if srt_name:
        write_subtitles(segments, folder / srt_name)


@task(name="prepare-source", cache_policy=NONE)
def prepare_source(ctx: JobContext, plan: JobPlan, source_hash: str) -> StageResult:
    """Probe the input and decode its audio once: a 48 kHz mix base and a 16 kHz ASR copy."""

    def build(folder: Path) -> dict:
        info = media.probe(plan.input)
        channels = max(1, min(2, info.audio_channels))
        media.extract_audio(plan.input, folder / SOURCE_AUDIO, channels=channels, seconds=info.audio_duration)
        media.extract_audio(plan.input, folder / ASR_AUDIO, sample_rate=ASR_SAMPLE_RATE,
                            seconds=info.audio_duration)
        import soundfile

        frames = soundfile.info(str(folder / SOURCE_AUDIO)).frames
        return {"duration": info.duration, "audio_duration": frames / media.SAMPLE_RATE,
                "samples": frames, "channels": channels, "has_video": info.has_video,
                "fps": info.fps, "width": info.width, "height": info.height,
                "video_codec": info.video_codec, "backend": "ffmpeg"}

    key = cache.stage_key("probe", source=source_hash, rate=media.SAMPLE_RATE, version=3)
    return run_stage(ctx, "probe", None, key, build, backend="ffmpeg")


@task(name="transcribe", cache_policy=NONE)
def transcribe_source(ctx: JobContext, plan: JobPlan, source: StageResult, source_hash: str) -> StageResult:
    """Timed source-language segments: the approved transcript if there is one, else speech
    recognition (faster-whisper or openai-whisper), its lines trimmed to speech by Silero VAD."""
    if plan.transcript:
        transcript_hash = cache.file_hash(plan.transcript)

        def build(folder: Path) -> dict:
            segments = read_subtitles(plan.transcript)
            save_segments(segments, folder, "transcript.srt")
            return {"language": plan.source_lang, "segments": len(segments),
                    "note": f"approved transcript {Path(plan.transcript).name}"}

        key = cache.stage_key("transcribe", transcript=transcript_hash, lang=plan.source_lang)
        return run_stage(ctx, "transcribe", None, key, build, backend="approved transcript",
                         model_version=Path(plan.transcript).name)

    from polydub import asr

    model = asr.locate_model(plan.asr_model)
    version = model.version
    vad = asr.VadSettings() if config.asr_vad() else None

    def build(folder: Path) -> dict:
        import soundfile

        audio, _ = soundfile.read(source.file(ASR_AUDIO), dtype="float32")
        result = asr.transcribe(model, audio, plan.source_lang, vad)
        save_segments(result.segments, folder, "transcript.srt")
        (folder / WORDS).write_text(json.dumps(result.words_to_dicts(), ensure_ascii=False))
        return {"language": result.language, "language_probability": round(result.language_probability, 3),
                "segments": len(result.segments), "words": len(result.words),
                "dropped_without_speech": result.dropped, "backend": result.backend}

    key = cache.stage_key("transcribe", source=source_hash, backend=model.backend, model=version,
                          lang=plan.source_lang, vad=vad.key() if vad else None)
    return run_stage(ctx, "transcribe", None, key, build, backend=model.backend, model_version=version)
