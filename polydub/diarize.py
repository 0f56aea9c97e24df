"""Diarization: who speaks when, for a transcript that does not say.

Runs only when the transcript has no speaker labels and a backend is configured
(`DUB_DIARIZER`, see `config.diarizer`); none ships with polydub. A backend hears the
16 kHz mono source and returns turns; each transcript line takes the speaker of the turn
it overlaps most. Speakers are named "Speaker 1", "Speaker 2", ... in the order they first
speak, so `--voices` can name them and the same video always gets the same names.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, replace
from importlib import metadata
from pathlib import Path
from typing import Protocol

from polydub import config
from polydub.errors import InputError
from polydub.loading import load_once
from polydub.segments import Segment, label_from

PYANNOTE_DIR = "pyannote-diarization"  # under the models directory: a pipeline's config.yaml and weights
SPEAKER_NAME = "Speaker {}"


@dataclass(frozen=True)
class Turn:
    """`speaker` talks from `start` to `end` (seconds of the source)."""

    start: float
    end: float
    speaker: str


class Diarizer(Protocol):
    name: str  # 'pyannote', ...: the catalog's backend
    version: str  # identity and version, for cache keys

    def diarize(self, wav: Path) -> list[Turn]:
        """Turns of speech in a 16 kHz mono WAV."""
        ...


class PyannoteDiarizer:
    """A pyannote.audio pipeline from a local directory (never downloaded here)."""

    name = "pyannote"

    def __init__(self, pipeline_dir: Path):
        self.config = Path(pipeline_dir) / "config.yaml"
        self.version = f"pyannote.audio {metadata.version('pyannote.audio')} {self.config.resolve()}"

    def diarize(self, wav: Path) -> list[Turn]:
        from pyannote.audio import Pipeline

        pipeline = load_once(("pyannote", str(self.config)), lambda: Pipeline.from_pretrained(str(self.config)))
        found = pipeline(str(wav))
        annotation = getattr(found, "speaker_diarization", found)  # pyannote 4 wraps the annotation
        return [Turn(float(t.start), float(t.end), str(label))
                for t, _, label in annotation.itertracks(yield_label=True)]


def _pyannote(pipeline_dir: Path, required: bool) -> Diarizer | None:
    try:
        metadata.version("pyannote.audio")
    except metadata.PackageNotFoundError:
        if required:
            raise InputError("DUB_DIARIZER=pyannote: pyannote.audio is not installed") from None
        return None
    if not (pipeline_dir / "config.yaml").is_file():
        if required:
            raise InputError(f"DUB_DIARIZER=pyannote: no pipeline config.yaml in {pipeline_dir}")
        return None
    return PyannoteDiarizer(pipeline_dir)


def find_diarizer(spec: str | None = None) -> Diarizer | None:
    """The configured backend, or None (`auto` with nothing installed, or `off`); `InputError`
    for a backend that is asked for and cannot be used."""
    spec = spec or config.diarizer()
    default_dir = config.models_dir() / PYANNOTE_DIR
    if spec == "off":
        return None
    if spec == "auto":
        return _pyannote(default_dir, required=False)
    if spec == "pyannote" or spec.startswith("pyannote:"):
        given = spec.partition(":")[2]
        return _pyannote(Path(given).expanduser() if given else default_dir, required=True)
    module, _, factory = spec.partition(":")
    if not module or not factory:
        raise InputError(f"DUB_DIARIZER={spec}: use auto, off, pyannote[:DIR] or MODULE:FACTORY")
    try:
        backend = getattr(importlib.import_module(module), factory)()
    except Exception as exc:  # noqa: BLE001 - whatever a backend's import or setup raises
        raise InputError(f"DUB_DIARIZER={spec}: cannot load it ({type(exc).__name__}: {exc})") from None
    if not callable(getattr(backend, "diarize", None)) or not getattr(backend, "version", None):
        raise InputError(f"DUB_DIARIZER={spec}: not a diarizer (needs name, version and diarize(wav))")
    return backend


def label_segments(segments: list[Segment], turns: list[Turn]) -> list[Segment]:
    """`segments` labeled by the turns they overlap; speakers renamed in order of first speech."""
    labeled = label_from(segments, [Segment(t.start, t.end, "", t.speaker) for t in turns if t.end > t.start])
    names: dict[str, str] = {}
    for s in sorted(labeled, key=lambda s: s.start):
        names.setdefault(s.speaker, SPEAKER_NAME.format(len(names) + 1))
    return [replace(s, speaker=names[s.speaker]) for s in labeled]
