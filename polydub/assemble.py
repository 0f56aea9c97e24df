"""Deliverables: per-language MP4 (or M4A) and the multi-track Matroska file.

The video stream is copied, not re-encoded, unless lip-sync produced a new one or the
source codec cannot live in MP4. Every file says it is AI-dubbed in its metadata.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from polydub import languages
from polydub.media import ffmpeg

AUDIO_BITRATE = "192k"
AI_NOTICE = "AI-dubbed by polydub: the speech in this file was translated and synthesized by machine"
# Codecs MP4 can carry as they are; anything else is re-encoded to H.264.
MP4_VIDEO_CODECS = {"h264", "hevc", "mpeg4", "av1", "vp9", "mjpeg", "mpeg2video"}


@dataclass(frozen=True)
class AudioTrack:
    path: str
    lang: str | None  # None: language unknown ('und')
    title: str
    stream: str = "0:a:0"  # which stream of `path` to take


@dataclass(frozen=True)
class SubtitleTrack:
    path: str
    lang: str | None
    title: str


def _tag(lang: str | None, mkv: bool) -> str:
    return languages.iso639_2(lang, bibliographic=mkv) if lang else "und"


def _notice_args(lang: str | None, watermarks: list[str] | tuple[str, ...] = ()) -> list[str]:
    """The file's notice: AI-dubbed, and any watermark a voice put in its speech (declared,
    never removed)."""
    comment = AI_NOTICE + "".join(f"; audio watermark: {mark}" for mark in watermarks)
    args = ["-metadata", f"comment={comment}", "-metadata", "description=AI-dubbed",
            "-metadata", "encoded_by=polydub"]
    if watermarks:
        args += ["-metadata", f"audio_watermark={'; '.join(watermarks)}"]
    if lang:
        args += ["-metadata", f"language={_tag(lang, False)}"]
    return args


def dubbed_file(video: str | None, audio: str, subtitles: str | None, lang: str, out: Path,
                video_codec: str | None = None, reencode: bool = False, watermarks: list[str] = ()) -> Path:
    """One language's deliverable: MP4 (video + dub + subtitles) or M4A for audio-only input."""
    args: list[str] = []
    if video:
        args += ["-i", video]
    args += ["-i", audio]
    if subtitles:
        args += ["-i", subtitles]
    n_in = 1 if video else 0
    maps = (["-map", "0:v:0"] if video else []) + ["-map", f"{n_in}:a:0"]
    if subtitles:
        maps += ["-map", f"{n_in + 1}:0"]
    codecs: list[str] = []
    if video:
        copy = not reencode and (video_codec in MP4_VIDEO_CODECS)
        codecs += ["-c:v", "copy"] if copy else ["-c:v", "libx264", "-crf", "18", "-preset", "medium",
                                                 "-pix_fmt", "yuv420p"]
    codecs += ["-c:a", "aac", "-b:a", AUDIO_BITRATE]
    if subtitles:
        codecs += ["-c:s", "mov_text", "-metadata:s:s:0", f"language={_tag(lang, False)}"]
    tags = ["-metadata:s:a:0", f"language={_tag(lang, False)}",
            "-metadata:s:a:0", f"title={languages.name(lang)} (AI dub)"]
    ffmpeg(*args, *maps, *codecs, *tags, *_notice_args(lang, watermarks), "-movflags", "+faststart+use_metadata_tags",
           str(out), what=f"assembling {out.name}")
    return out


def multitrack_file(video: str | None, audio: list[AudioTrack], subtitles: list[SubtitleTrack],
                    out: Path, watermarks: list[str] = ()) -> Path:
    """One Matroska file holding every audio and subtitle track, each language-tagged.

    Every stream is copied: the original as it is, each dub as the AAC track of its
    language's deliverable, so adding a language re-encodes nothing. The first audio track
    (the original) is the default.
    """
    inputs: list[str] = []
    maps: list[str] = []
    meta: list[str] = []
    n = 0
    if video:
        inputs += ["-i", video]
        maps += ["-map", "0:v:0"]
        n = 1
    for i, track in enumerate(audio):
        inputs += ["-i", track.path]
        maps += ["-map", f"{n}:{track.stream.split(':', 1)[1]}"]
        meta += [f"-metadata:s:a:{i}", f"language={_tag(track.lang, True)}",
                 f"-metadata:s:a:{i}", f"title={track.title}",
                 f"-disposition:a:{i}", "default" if i == 0 else "0"]
        n += 1
    for i, track in enumerate(subtitles):
        inputs += ["-i", track.path]
        maps += ["-map", f"{n}:0"]
        meta += [f"-metadata:s:s:{i}", f"language={_tag(track.lang, True)}",
                 f"-metadata:s:s:{i}", f"title={track.title}",
                 f"-disposition:s:{i}", "0"]
        n += 1
    codecs = (["-c:v", "copy"] if video else []) + ["-c:a", "copy", "-c:s", "srt"]
    # bitexact: no random segment id or muxing date, so a rebuilt file equals the first one
    ffmpeg(*inputs, *maps, *codecs, *meta, *_notice_args(None, watermarks), "-fflags", "+bitexact", str(out),
           what=f"assembling {out.name}")
    return out
