"""Deliverables: per-language files, the multi-track file, publishing into the output folder."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from prefect import task
from prefect.cache_policies import NONE

from polydub import assemble, cache, languages
from polydub.job import JobPlan
from polydub.report import StageResult
from polydub.segments import clip_to, write_subtitles
from polydub.storage import objects
from polydub.tasks.common import JobContext, run_stage
from polydub.tasks.language import MIXED, Mixdown, Translation
from polydub.tasks.lipsync import LipSynced
from polydub.tasks.source import SourceAudio, Transcription, load_segments


@dataclass
class Assembly:
    """A language's files in the folder: the dubbed MP4 (M4A), its SRT and VTT."""

    files: list[str]
    lipsynced: bool
    watermarks: list[str] = field(default_factory=list)  # declared in the file's metadata


@dataclass
class Multitrack:
    file: str
    tracks: int  # audio tracks: the original and every dub


def _key(result: StageResult | None) -> str | None:
    return Path(result.folder).name if result and result.folder else None


# Cached files are named for what they are, not for the input, so that the same content
# under another name (a copy, a renamed file) reuses them; publishing gives them the name.
DUBBED, SRT, VTT = "dubbed", "subtitles.srt", "subtitles.vtt"


def deliverables(plan: JobPlan, result: StageResult[Assembly]) -> dict[str, str]:
    """Where a language's files are published: {'mp4' or 'm4a', 'srt', 'vtt': path}."""
    name = f"{plan.name}.{result.lang}"
    return {Path(f).suffix.lstrip("."): objects.join(plan.out_dir, f"{name}{Path(f).suffix}")
            for f in result.output.files}


@task(name="assemble", task_run_name="assemble[{lang}]", cache_policy=NONE, persist_result=False)
def assemble_lang(ctx: JobContext, plan: JobPlan, source: StageResult[SourceAudio],
                  translation: StageResult[Translation], mixed: StageResult[Mixdown],
                  video: StageResult[LipSynced] | None, lang: str) -> StageResult[Assembly]:
    """Build one language's MP4 (M4A for audio-only input) with subtitles; publish all three files."""
    dubbed = DUBBED + (".mp4" if plan.has_video else ".m4a")
    lipsynced = video is not None and video.status in ("done", "cached")

    def build(folder: Path) -> Assembly:
        segments = clip_to(load_segments(translation), source.output.duration)  # never outlast the source
        write_subtitles(segments, folder / SRT)
        write_subtitles(segments, folder / VTT)
        picture = None
        if plan.has_video:
            picture = video.file(video.output.file) if lipsynced else plan.input
        subtitles = str(folder / SRT) if segments else None  # no lines (music only): no track
        assemble.dubbed_file(picture, mixed.file(MIXED), subtitles, lang, folder / dubbed,
                             video_codec="h264" if lipsynced else source.output.video_codec,
                             watermarks=mixed.output.watermarks)
        return Assembly([dubbed, SRT, VTT], bool(lipsynced), list(mixed.output.watermarks))

    key = cache.stage_key("assemble", source=_key(source), translation=_key(translation),
                          mix=_key(mixed), video=_key(video) if lipsynced else None, lang=lang, version=3)
    result = run_stage(ctx, "assemble", lang, key, build, Assembly, backend="ffmpeg")
    for f, dest in zip(result.output.files, deliverables(plan, result).values()):
        objects.place(result.file(f), dest)
    return result


@task(name="assemble-multitrack", task_run_name="assemble[multitrack]", cache_policy=NONE, persist_result=False)
def assemble_multitrack(ctx: JobContext, plan: JobPlan, source: StageResult[SourceAudio],
                        transcript: StageResult[Transcription], delivered: dict[str, StageResult[Assembly]]) -> str:
    """One file with the original and every dub, each audio and subtitle track language-tagged.

    `delivered` maps each delivered language to its assemble result, whose encoded track
    and subtitles are copied in as they are.
    """
    ext = ".dubbed.mkv" if plan.has_video else ".dubbed.mka"
    filename = f"multitrack{ext}"
    src_lang = transcript.output.language or plan.options.source_lang
    src_lang = src_lang if src_lang and src_lang in languages.LANGUAGES else None

    def build(folder: Path) -> Multitrack:
        audio = [assemble.AudioTrack(plan.input, src_lang, "Original")]
        subs = []
        original = clip_to(load_segments(transcript), source.output.duration)
        if original:
            write_subtitles(original, folder / "transcript.srt")
            subs.append(assemble.SubtitleTrack(str(folder / "transcript.srt"), src_lang, "Original"))
        for lang, result in delivered.items():
            dubbed, srt = (result.file(f) for f in result.output.files[:2])
            audio.append(assemble.AudioTrack(dubbed, lang, f"{languages.name(lang)} (AI dub)"))
            if Path(srt).read_text(encoding="utf-8").strip():  # an empty SRT is no track
                subs.append(assemble.SubtitleTrack(srt, lang, languages.name(lang)))
        marks = sorted({mark for result in delivered.values() for mark in result.output.watermarks})
        assemble.multitrack_file(plan.input if plan.has_video else None, audio, subs, folder / filename, marks)
        return Multitrack(filename, len(audio))

    key = cache.stage_key("multitrack", source=_key(source), transcript=_key(transcript),
                          parts={lang: _key(r) for lang, r in delivered.items()}, version=3)
    result = run_stage(ctx, "assemble", None, key, build, Multitrack, backend="ffmpeg")
    return objects.place(result.file(filename), objects.join(plan.out_dir, f"{plan.name}{ext}"))
