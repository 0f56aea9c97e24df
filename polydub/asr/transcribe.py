"""Speech to a `Transcript`: the chosen backend's lines and words, trimmed to speech."""

from __future__ import annotations

import re

import numpy as np

from polydub.asr.locate import FASTER_WHISPER, AsrModel
from polydub.asr.result import Transcript
from polydub.asr.vad import VadSettings, speech_regions, split_at_pauses, trim_to_speech
from polydub.segments import Segment

# Whisper writes these for music it cannot transcribe: not a line to dub
NON_SPEECH = re.compile(r"^[\s♪♫\*\[\]\(\)]*(music|applause|laughter|silence)?[\s♪♫\*\[\]\(\)\.]*$", re.I)


def backend_module(model: AsrModel):
    """The module that runs `model` (each has load_model, transcribe, language_probabilities)."""
    if model.backend == FASTER_WHISPER:
        from polydub.asr import faster

        return faster
    from polydub.asr import openai

    return openai


def load(model: AsrModel, device: str | None = None):
    return backend_module(model).load_model(model.path, device)


def transcribe(model: AsrModel, audio: np.ndarray, language: str | None = None,
               vad: VadSettings | None = VadSettings(), loaded=None) -> Transcript:
    """Transcribe 16 kHz mono float32 [samples]; with `vad`, lines are split at pauses and
    trimmed to speech.

    `loaded` is the backend's model object when the caller has it (`load(model)`).
    """
    backend = backend_module(model)
    lines, detected, probability = backend.transcribe(loaded or load(model), audio, language)
    lines = [ln for ln in lines if ln.end > ln.start and not NON_SPEECH.match(ln.text)]
    dropped = 0
    if vad is not None:
        regions = speech_regions(audio, vad)
        lines, dropped = trim_to_speech(split_at_pauses(lines, regions), regions)
    return Transcript(
        segments=[Segment(ln.start, ln.end, ln.text) for ln in lines],
        words=[w for ln in lines for w in ln.words],
        language=language or detected or "und", language_probability=1.0 if language else probability,
        backend=model.backend, model_version=model.version, dropped=dropped,
        vad=vad.key() if vad is not None else None)
