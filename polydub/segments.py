"""Timed lines of speech and their subtitle files (SRT, WebVTT), with who speaks them.

Speaker labels are read from WebVTT voice spans (`<v Ana>Hola</v>`) and from SRT lines that
start with `[Ana]` or `Ana:` (see `_speaker_prefix`); the label is kept on the segment and
taken out of the text, which is what is spoken and translated.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from pathlib import Path

from polydub import limits
from polydub.errors import InputError


@dataclass(frozen=True)
class Segment:
    """One line of speech: `start`/`end` in seconds of the source timeline."""

    start: float
    end: float
    text: str
    speaker: str | None = None  # who says it, when the script or a diarizer says so

    @property
    def duration(self) -> float:
        return self.end - self.start


def segments_to_dicts(segments: list[Segment]) -> list[dict]:
    # `speaker` only when known: unlabeled segments serialize (and hash) as they always did
    rows = []
    for s in segments:
        row = {"start": s.start, "end": s.end, "text": s.text}
        if s.speaker is not None:
            row["speaker"] = s.speaker
        rows.append(row)
    return rows


def segments_from_dicts(rows: list[dict]) -> list[Segment]:
    return [Segment(float(r["start"]), float(r["end"]), str(r["text"]), r.get("speaker")) for r in rows]


def speakers_of(segments: list[Segment]) -> list[str]:
    """The named speakers in order of first appearance."""
    return list(dict.fromkeys(s.speaker for s in segments if s.speaker is not None))


def label_from(segments: list[Segment], labeled: list[Segment]) -> list[Segment]:
    """`segments` with each unlabeled one given the speaker of the `labeled` segment (or
    diarization turn) it overlaps most in time, else the nearest one; own labels are kept."""
    turns = [t for t in labeled if t.speaker is not None]
    if not turns:
        return list(segments)
    out = []
    for s in segments:
        if s.speaker is None:
            mid = (s.start + s.end) / 2
            best = max(turns, key=lambda t: (min(s.end, t.end) - max(s.start, t.start),
                                             -abs((t.start + t.end) / 2 - mid)))
            s = replace(s, speaker=best.speaker)
        out.append(s)
    return out


_TIME = re.compile(r"(?:(\d+):)?(\d{1,2}):(\d{2})[,.](\d{1,3})")


def _parse_time(text: str) -> float:
    m = _TIME.fullmatch(text.strip())
    if not m:
        raise ValueError(f"bad timestamp {text!r}")
    h, mi, s, ms = m.groups()
    return int(h or 0) * 3600 + int(mi) * 60 + int(s) + int(ms.ljust(3, "0")) / 1000


def _format_time(seconds: float, sep: str) -> str:
    ms = max(0, round(seconds * 1000))
    h, ms = divmod(ms, 3_600_000)
    m, ms = divmod(ms, 60_000)
    s, ms = divmod(ms, 1000)
    return f"{h:02d}:{m:02d}:{s:02d}{sep}{ms:03d}"


def format_time(seconds: float) -> str:
    """`HH:MM:SS,mmm`, as an SRT shows a time: how errors name a cue."""
    return _format_time(seconds, ",")


# A WebVTT voice span: `<v Ana>`, `<v.loud Ana>`; the annotation after the space is the name.
_VOICE = re.compile(r"<v(?:\.[^\s>]*)*\s+([^>]+)>")
_TAG = re.compile(r"<[^>]+>")
# A speaker name in an SRT line: 1-3 words, the first a capitalized word ("Ana", "ANA",
# "Dr. Lee", "Mary-Jane", "Speaker 2"), at most NAME_MAX characters. Lower-case words are
# left alone: "[laughs]" is a sound, "note: ..." is text.
NAME_MAX = 32
_NAME = r"[^\W\d_][\w'’.-]*(?: [^\W_][\w'’.-]*){0,2}"
_BRACKET = re.compile(rf"\[({_NAME})\]\s*(\S.*)")
_COLON = re.compile(rf"({_NAME}):\s+(\S.*)")
# "Name: text" reads as a label only in a script that labels most of its lines: a colon
# after a capitalized word is ordinary in text ("Note: ...", "Warning: ..."), but a script
# that names its speakers names them on most lines. "[Name] text" is never ordinary text.
COLON_SHARE = 0.5
COLON_MIN = 2


def _is_name(name: str) -> bool:
    return len(name) <= NAME_MAX and name[0].isupper()


def _speaker_prefix(line: str, colons: bool) -> tuple[str | None, str]:
    """(speaker, rest) of a cue's first line: `[Ana] Hola` or, when `colons`, `Ana: Hola`."""
    for pattern in (_BRACKET, _COLON) if colons else (_BRACKET,):
        m = pattern.fullmatch(line.strip())
        if m and _is_name(m.group(1)):
            return m.group(1), m.group(2)
    return None, line


def parse_subtitles(text: str) -> list[Segment]:
    """Parse SRT or WebVTT text into segments sorted by start time, with their speakers; a
    malformed timing line is a ValueError naming its cue (counted in file order)."""
    cues = []  # (start, end, voice-span name or None, first line, the other lines), tags removed
    blocks = re.split(r"\r?\n\s*\r?\n", text.replace("\ufeff", "").strip())
    n = 0
    for block in blocks:
        lines = [ln for ln in block.splitlines() if ln.strip()]
        idx = next((i for i, ln in enumerate(lines) if "-->" in ln), None)
        if idx is None:
            continue  # WEBVTT header, NOTE or STYLE block
        n += 1
        left, right = lines[idx].split("-->", 1)
        if not right.split():
            raise ValueError(f"cue {n} has no end time: {lines[idx].strip()!r}")
        try:
            start, end = _parse_time(left), _parse_time(right.split()[0])
        except ValueError as exc:
            raise ValueError(f"cue {n}: {exc}") from None
        if end < start:
            raise ValueError(f"cue {n} ends before it starts: {lines[idx].strip()!r}")
        body = [ln.strip() for ln in lines[idx + 1:]]
        if any("\0" in ln for ln in body):  # a NUL is no speech, and stored it breaks the catalog's text
            raise ValueError(f"cue {n} holds a NUL character")
        voice = _VOICE.search(" ".join(body))  # one speaker per cue: the first voice span's
        body = [_TAG.sub("", ln).strip() for ln in body]
        body = [ln for ln in body if ln]
        if body:
            cues.append((start, end, voice.group(1).strip() if voice else None, body[0], body[1:]))
    colon_labels = sum(voice is None and _speaker_prefix(first, True)[0] is not None
                       for _, _, voice, first, _ in cues)
    colons = colon_labels >= max(COLON_MIN, COLON_SHARE * len(cues))
    segments = []
    for start, end, voice, first, rest in cues:
        speaker = voice
        if speaker is None:
            speaker, first = _speaker_prefix(first, colons)
        segments.append(Segment(start, end, " ".join([first, *rest]).strip(), speaker))
    return sorted(segments, key=lambda s: s.start)


def clip_to(segments: list[Segment], duration: float) -> list[Segment]:
    """The segments that start before `duration` (seconds), their ends clipped to it: a
    subtitle track must not outlast the picture and lengthen the file."""
    return [replace(s, end=min(s.end, duration)) for s in segments if s.start < duration]


def check_cues(path: str | Path, segments: list[Segment], duration: float) -> None:
    """Refuse too many cues, over-long or unspeakably fast cues, and cues that start at or
    after the end of the source (`duration`, seconds), within the bounds of `limits`. Cues
    that start inside the source but end after it are kept; their end is clipped when the
    deliverables are made."""
    if len(segments) > limits.MAX_CUES:
        raise InputError(f"{path}: {len(segments)} cues; at most {limits.MAX_CUES} are accepted")
    for n, seg in enumerate(segments, 1):
        cue = f"{path}: cue {n} ({format_time(seg.start)})"
        chars = len(seg.text)
        if chars > limits.MAX_CUE_CHARS:
            raise InputError(f"{cue} has {chars} characters; at most {limits.MAX_CUE_CHARS} per cue")
        if chars > limits.MAX_CHARS_PER_SECOND * seg.duration + limits.CPS_SLACK_CHARS:
            rate = chars / max(seg.duration, 1e-3)
            raise InputError(f"{cue} has {chars} characters in {seg.duration:.3f} s ({rate:.0f} per second; "
                             f"speech is at most {limits.MAX_CHARS_PER_SECOND:.0f}); check its end time")
        if seg.start >= duration:
            raise InputError(f"{cue} starts after the end of the source ({duration:.3f} s)")


def read_subtitles(path: str | Path) -> list[Segment]:
    """Read an SRT/VTT file; a malformed file is an `InputError` naming it."""
    path = Path(path)
    data = limits.read_bounded(path, limits.MAX_SUBTITLE_BYTES, "subtitle")  # a regular file, bounded
    try:
        return parse_subtitles(data.decode("utf-8-sig"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise InputError(f"{path}: not a readable SRT/VTT subtitle file ({exc})") from None


def to_srt(segments: list[Segment]) -> str:
    """SRT; a speaker as `Name: ` before the line, as dialogue subtitles write it (read back
    as a label because every labeled line carries one)."""
    cues = [
        f"{i}\n{_format_time(s.start, ',')} --> {_format_time(s.end, ',')}\n"
        f"{s.speaker + ': ' if s.speaker else ''}{s.text}\n"
        for i, s in enumerate(segments, 1)
    ]
    return "\n".join(cues)


def to_vtt(segments: list[Segment]) -> str:
    """WebVTT; a speaker as a voice span, `<v Name>text</v>`."""
    cues = [
        f"{_format_time(s.start, '.')} --> {_format_time(s.end, '.')}\n"
        f"{f'<v {s.speaker}>{s.text}</v>' if s.speaker else s.text}\n"
        for s in segments
    ]
    return "WEBVTT\n\n" + "\n".join(cues)


def write_subtitles(segments: list[Segment], path: str | Path) -> Path:
    """Write `.srt` or `.vtt` according to the suffix."""
    path = Path(path)
    text = to_vtt(segments) if path.suffix.lower() == ".vtt" else to_srt(segments)
    path.write_text(text, encoding="utf-8")
    return path
