"""What speech recognition returns: timed lines, their words, the spoken language."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from polydub.segments import Segment


@dataclass(frozen=True)
class Word:
    """One recognised word; `start`/`end` in seconds of the source timeline."""

    start: float
    end: float
    text: str
    probability: float


@dataclass(frozen=True)
class Line:
    """A line as a backend returns it, before VAD trimming: its span, text and words."""

    start: float
    end: float
    text: str
    words: tuple[Word, ...] = ()


@dataclass
class Transcript:
    """The transcribe stage's result.

    segments: the lines, trimmed to speech; words: every kept word, in time order;
    language / language_probability: the spoken language as the model heard it (an
    English-only model always says 'en', 1.0); dropped: lines with no speech (music, noise).
    """

    segments: list[Segment]
    words: list[Word]
    language: str
    language_probability: float
    backend: str
    model_version: str
    dropped: int = 0
    vad: dict | None = field(default=None)

    def words_to_dicts(self) -> list[dict]:
        return [asdict(w) for w in self.words]
