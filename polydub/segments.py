"""Timed lines of speech and their subtitle files (SRT, WebVTT)."""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from pathlib import Path

from polydub.errors import InputError


@dataclass(frozen=True)
class Segment:
    """One line of speech: `start`/`end` in seconds of the source timeline."""

    start: float
    end: float
    text: str

    @property
    def duration(self) -> float:
        return self.end - self.start


def segments_to_dicts(segments: list[Segment]) -> list[dict]:
    return [asdict(s) for s in segments]


def segments_from_dicts(rows: list[dict]) -> list[Segment]:
    return [Segment(float(r["start"]), float(r["end"]), str(r["text"])) for r in rows]


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


def parse_subtitles(text: str) -> list[Segment]:
    """Parse SRT or WebVTT text into segments sorted by start time; a malformed timing
    line is a ValueError naming its cue (counted in file order)."""
    segments = []
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
        body = " ".join(ln.strip() for ln in lines[idx + 1 :])
        body = re.sub(r"<[^>]+>", "", body).strip()
        if end < start:
            raise ValueError(f"cue {n} ends before it starts: {lines[idx].strip()!r}")
        if body:
            segments.append(Segment(start, end, body))
    return sorted(segments, key=lambda s: s.start)


def clip_to(segments: list[Segment], duration: float) -> list[Segment]:
    """The segments that start before `duration` (seconds), their ends clipped to it: a
    subtitle track must not outlast the picture and lengthen the file."""
    return [Segment(s.start, min(s.end, duration), s.text) for s in segments if s.start < duration]


def read_subtitles(path: str | Path) -> list[Segment]:
    """Read an SRT/VTT file; a malformed file is an `InputError` naming it."""
    from polydub.limits import MAX_SUBTITLE_BYTES

    path = Path(path)
    try:
        if path.stat().st_size > MAX_SUBTITLE_BYTES:
            raise ValueError(f"larger than {MAX_SUBTITLE_BYTES // 2**20} MB")
        return parse_subtitles(path.read_text(encoding="utf-8-sig"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise InputError(f"{path}: not a readable SRT/VTT subtitle file ({exc})") from None


def to_srt(segments: list[Segment]) -> str:
    cues = [
        f"{i}\n{_format_time(s.start, ',')} --> {_format_time(s.end, ',')}\n{s.text}\n"
        for i, s in enumerate(segments, 1)
    ]
    return "\n".join(cues)


def to_vtt(segments: list[Segment]) -> str:
    cues = [
        f"{_format_time(s.start, '.')} --> {_format_time(s.end, '.')}\n{s.text}\n" for s in segments
    ]
    return "WEBVTT\n\n" + "\n".join(cues)


def write_subtitles(segments: list[Segment], path: str | Path) -> Path:
    """Write `.srt` or `.vtt` according to the suffix."""
    path = Path(path)
    text = to_vtt(segments) if path.suffix.lower() == ".vtt" else to_srt(segments)
    path.write_text(text, encoding="utf-8")
    return path
