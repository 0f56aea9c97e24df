"""Silero VAD: where speech is, to split lines at pauses, trim each line to its speech
and drop lines of music.

Whisper's segment and word times drift into neighbouring music or silence (a line's start
can come 0.4 s early when music precedes it, or 0.2 s late), and it may return several
sentences as one segment; Silero VAD's onsets are within ~20 ms. A line is split where
its words fall into separate stretches of speech after a sentence ends (or after a
long pause); each line's start and end then move to the edges of the speech it
overlaps, unless that speech also belongs to the neighbouring line (then Whisper's
boundary stays).
"""

from __future__ import annotations

import threading
from dataclasses import asdict, dataclass

import numpy as np

from polydub.asr.audio import ASR_SAMPLE_RATE
from polydub.asr.result import Line, Word
from polydub.loading import load_once

MIN_SPEECH_IN_LINE_S = 0.15  # a line overlapping less speech than this is music/noise: dropped
MAX_MOVE_S = 1.0  # a boundary moves at most this far to reach the speech edge
MIN_PAUSE_S = 0.2  # a silence this long after a sentence ends starts a new line
LONG_PAUSE_S = 1.0  # ... and this long, anywhere (mid-sentence splits hurt translation)
SENTENCE_END = tuple(".?!;:…。！？；：")
_RUNNING = threading.Lock()  # the Silero model keeps state between windows: one caller at a time


@dataclass(frozen=True)
class VadSettings:
    """Silero VAD parameters (part of the transcribe cache key)."""

    threshold: float = 0.5
    min_speech_ms: int = 250
    min_silence_ms: int = 100
    speech_pad_ms: int = 30

    def key(self) -> dict:
        from importlib.metadata import version

        return {**asdict(self), "silero_vad": version("silero-vad"),
                "min_line_speech_s": MIN_SPEECH_IN_LINE_S, "max_move_s": MAX_MOVE_S,
                "pauses_s": [MIN_PAUSE_S, LONG_PAUSE_S]}


def _silero():
    """The silero_vad module, imported without its side effect: importing it sets torch to
    one thread for the whole process (slowing every later torch stage)."""
    import torch

    threads = torch.get_num_threads()
    import silero_vad

    torch.set_num_threads(threads)
    return silero_vad


def _load_vad():
    """The Silero model bundled in the silero-vad package (offline; TorchScript)."""
    return _silero().load_silero_vad()


def speech_regions(audio: np.ndarray, settings: VadSettings = VadSettings()) -> list[tuple[float, float]]:
    """16 kHz mono float32 [samples] -> (start, end) seconds of each stretch of speech."""
    import torch

    get_speech_timestamps = _silero().get_speech_timestamps
    model = load_once(("silero-vad",), _load_vad)
    with _RUNNING, torch.no_grad():
        stamps = get_speech_timestamps(
            torch.from_numpy(np.ascontiguousarray(audio, dtype=np.float32)), model,
            threshold=settings.threshold, sampling_rate=ASR_SAMPLE_RATE,
            min_speech_duration_ms=settings.min_speech_ms, min_silence_duration_ms=settings.min_silence_ms,
            speech_pad_ms=settings.speech_pad_ms)
        model.reset_states()
    return [(s["start"] / ASR_SAMPLE_RATE, s["end"] / ASR_SAMPLE_RATE) for s in stamps]


def _overlap(a0: float, a1: float, b0: float, b1: float) -> float:
    return max(0.0, min(a1, b1) - max(a0, b0))


def _region_of(word: Word, regions: list[tuple[float, float]]) -> int:
    """Index of the stretch of speech nearest the word's middle."""
    mid = (word.start + word.end) / 2
    return min(range(len(regions)), key=lambda i: max(regions[i][0] - mid, mid - regions[i][1], 0.0))


def split_at_pauses(lines: list[Line], regions: list[tuple[float, float]]) -> list[Line]:
    """Split lines whose words lie in separate stretches of speech (see the module doc)."""
    if not regions:
        return lines
    out = []
    for ln in lines:
        if len(ln.words) < 2:
            out.append(ln)
            continue
        sep = " " if " " in ln.text else ""  # languages written without spaces stay so
        where = [_region_of(w, regions) for w in ln.words]
        group = [ln.words[0]]
        for prev, word, a, b in zip(ln.words, ln.words[1:], where, where[1:]):
            pause = regions[b][0] - regions[a][1] if b > a else 0.0
            if pause >= LONG_PAUSE_S or (pause >= MIN_PAUSE_S and prev.text.endswith(SENTENCE_END)):
                out.append(Line(group[0].start, group[-1].end, sep.join(w.text for w in group), tuple(group)))
                group = []
            group.append(word)
        if len(group) == len(ln.words):
            out.append(ln)  # not split: keep Whisper's span and text as they are
        else:
            out.append(Line(group[0].start, group[-1].end, sep.join(w.text for w in group), tuple(group)))
    return out


def trim_to_speech(lines: list[Line], regions: list[tuple[float, float]]) -> tuple[list[Line], int]:
    """Move each line's edges to the speech it covers; drop lines with (almost) none.

    Returns the kept lines (words clipped into their line) and how many were dropped.
    """
    spoken = [ln for ln in lines
              if sum(_overlap(ln.start, ln.end, r0, r1) for r0, r1 in regions) >= MIN_SPEECH_IN_LINE_S]
    kept = []
    for i, ln in enumerate(spoken):
        inside = [(r0, r1) for r0, r1 in regions if _overlap(ln.start, ln.end, r0, r1) > 0]
        before = kept[-1].end if kept else 0.0
        after = spoken[i + 1].start if i + 1 < len(spoken) else float("inf")
        start, end = ln.start, ln.end
        onset, offset = inside[0][0], inside[-1][1]
        if onset >= before and abs(onset - start) <= MAX_MOVE_S:
            start = onset  # the speech starts after the previous line: its onset is this line's
        if offset <= after and abs(offset - end) <= MAX_MOVE_S:
            end = offset
        start, end = round(start, 3), round(max(end, start + 0.01), 3)
        words = tuple(Word(min(max(w.start, start), end), min(max(w.end, start), end), w.text, w.probability)
                      for w in ln.words)
        kept.append(Line(start, end, ln.text, words))
    return kept, len(lines) - len(spoken)
