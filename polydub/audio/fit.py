"""Fitting synthesized lines to the source timeline.

`plan_fits` decides, per line, how much time it has and how much it must be sped up;
`render_dub_track` time-stretches each clip (pitch preserved) and writes it at the sample
of its source line's start. Every line is placed from its own start time, never from the
end of the previous one, so timing cannot drift however long the video is.
"""

from __future__ import annotations

import functools
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

from polydub.errors import StageError
from polydub.media import SAMPLE_RATE, ffmpeg, run
from polydub.segments import Segment

MAX_SPEED = 1.3  # beyond this, sped-up speech starts to sound wrong
GAP = 0.05  # seconds of silence kept before the next line
BLOCK = 1 << 20  # samples written at a time (~22 s at 48 kHz)
EPS = 1e-6  # seconds; below this a line fits


@dataclass(frozen=True)
class Fit:
    """How one synthesized line fits its slot on the source timeline (seconds)."""

    index: int  # position of the line in the segment list
    start: float  # where the line starts: its source line's start
    slot: float  # time available: up to the next line's start (minus a gap) or the track's end
    clip: float  # synthesized duration
    speed: float  # 1.0 = untouched; > 1 sped up, at most the cap
    overflow: float  # seconds that still do not fit after speeding up (0.0 if it fits)


def plan_fits(segments: list[Segment], clip_durations: list[float], total: float,
              max_speed: float = MAX_SPEED, gap: float = GAP, spoken_faster: list[float] | None = None) -> list[Fit]:
    """One `Fit` per segment, in the segments' order.

    A line first uses the silence after it (up to the next line's start - `gap`), and is
    sped up only as much as still needed, at most `max_speed` in all: a clip already
    spoken `spoken_faster[i]` times faster at the source is stretched at most
    `max_speed / spoken_faster[i]`; the rest is `overflow`. `total` is the track's
    duration in seconds.
    """
    if len(segments) != len(clip_durations):
        raise StageError(f"fitting needs one synthesized clip per line: "
                         f"{len(segments)} lines, {len(clip_durations)} clips")
    if max_speed < 1.0:
        raise StageError(f"the speed-up cap must be at least 1.0, not {max_speed}")
    order = sorted(range(len(segments)), key=lambda i: segments[i].start)
    fits: list[Fit | None] = [None] * len(segments)
    for k, i in enumerate(order):
        start = max(0.0, segments[i].start)
        end = segments[order[k + 1]].start - gap if k + 1 < len(order) else total
        slot = max(0.0, min(end, total) - start)
        clip = max(0.0, float(clip_durations[i]))
        cap = max(1.0, max_speed / spoken_faster[i]) if spoken_faster else max_speed
        if clip <= slot + EPS:
            speed = 1.0
        else:
            speed = min(clip / slot, cap) if slot > 0 else cap
        overflow = clip / speed - slot
        fits[i] = Fit(i, start, slot, clip, speed, overflow if overflow > EPS else 0.0)
    return fits  # type: ignore[return-value]


@functools.cache
def _has_filter(name: str) -> bool:
    listing = run(["ffmpeg", "-hide_banner", "-filters"], timeout=30, what="ffmpeg -filters")
    return any(line.split()[1:2] == [name] for line in listing.splitlines() if line.strip())


def tempo_filter(speed: float) -> str:
    """ffmpeg filter speeding audio up by `speed` with its pitch kept."""
    if _has_filter("rubberband"):  # phase-vocoder with transient handling: sounds best on speech
        return f"rubberband=tempo={speed:.6f}"
    return f"atempo={speed:.6f}"  # overlap-add; always built into ffmpeg


def load_line(clip: Path, speed: float, sample_rate: int, work: Path) -> np.ndarray:
    """Decode one synthesized clip as mono float32 at `sample_rate`, sped up by `speed`."""
    clip = Path(clip)
    if not clip.is_file():
        raise StageError(f"{clip}: synthesized line is missing")
    filters = ["aformat=channel_layouts=mono", f"aresample={sample_rate}"]
    if speed > 1.0 + EPS:
        filters.append(tempo_filter(speed))
    out = work / f"{clip.stem}.fit.wav"
    ffmpeg("-i", str(clip), "-af", ",".join(filters), "-ar", str(sample_rate), "-ac", "1",
           "-c:a", "pcm_f32le", str(out), what=f"time-stretching {clip.name}")
    samples, _ = sf.read(out, dtype="float32", always_2d=True)
    out.unlink()
    return samples[:, 0]


def render_dub_track(clips: list[Path], fits: list[Fit], total_samples: int, out_wav: Path,
                     sample_rate: int = SAMPLE_RATE) -> list[dict]:
    """Write the dub track: mono float WAV of exactly `total_samples` at `sample_rate`.

    Each clip is sped up by its fit's speed and added at sample round(start * sample_rate).
    Overflowing lines run on into the next slot (never cut); only the track's end cuts,
    and that is reported. Returns one dict per line: index, start, sample, slot, clip,
    speed, overflow, placed (seconds written) and truncated (seconds cut at the end).
    The track is built on disk one clip at a time, so memory stays at one clip; a WAV
    holds up to ~6 h of mono float at 48 kHz.
    """
    if len(clips) != len(fits):
        raise StageError(f"dub track needs one clip per fit: {len(clips)} clips, {len(fits)} fits")
    out_wav = Path(out_wav)
    out_wav.parent.mkdir(parents=True, exist_ok=True)
    report = []
    # Stretched clips are written beside the track, on the disk that holds the job.
    with tempfile.TemporaryDirectory(prefix=".fit-", dir=out_wav.parent) as tmp, \
            sf.SoundFile(out_wav, "w+", sample_rate, 1, subtype="FLOAT", format="WAV") as track:
        zeros = np.zeros(BLOCK, np.float32)
        for pos in range(0, total_samples, BLOCK):
            track.write(zeros[: min(BLOCK, total_samples - pos)])
        for clip, fit in zip(clips, fits):
            line = load_line(Path(clip), fit.speed, sample_rate, Path(tmp))
            at = round(fit.start * sample_rate)  # absolute: no drift from earlier lines
            n = max(0, min(len(line), total_samples - at))
            if n:
                track.seek(at)
                under = track.read(n, dtype="float32")  # an earlier line may still run here
                track.seek(at)
                track.write(under + line[:n])
            report.append({
                "index": fit.index, "start": fit.start, "sample": at, "slot": fit.slot,
                "clip": fit.clip, "speed": fit.speed, "overflow": fit.overflow,
                "placed": n / sample_rate, "truncated": (len(line) - n) / sample_rate,
            })
    return report
