"""The spoken language, heard from the first 30 s: it tells which of several subtitle
sidecars is the transcript (and so which language the source is in)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from polydub.asr.audio import ASR_SAMPLE_RATE, load_audio
from polydub.asr.locate import AsrModel, locate_model
from polydub.asr.transcribe import backend_module, load
from polydub.asr.vad import speech_regions
from polydub.asr.wer import word_error_rate
from polydub.errors import InputError
from polydub.segments import read_subtitles

LISTEN_S = 30.0  # Whisper's window: one encoder pass
MIN_LANGUAGE_PROBABILITY = 0.5  # below this the model is guessing
MAX_MATCH_WER = 0.5  # an English-only model's words must match the sidecar's this well


def _speech_only(audio: np.ndarray) -> np.ndarray:
    """The speech stretches of `audio` joined (music and silence would blur detection)."""
    regions = speech_regions(audio)
    parts = [audio[int(a * ASR_SAMPLE_RATE):int(b * ASR_SAMPLE_RATE)] for a, b in regions]
    return np.concatenate(parts) if parts else audio[:0]


def _script_text(path: Path, seconds: float) -> str:
    return " ".join(s.text for s in read_subtitles(path) if s.start < seconds)


def settle_transcript(input: str | Path, candidates: dict[str, Path], asr_model: str) -> tuple[str | None, str]:
    """Which of `candidates` (language code -> sidecar) is in the spoken language.

    Returns (code, why) or (None, why not). A multilingual model detects the language; an
    English-only one transcribes and the sidecar whose words match is the transcript.
    """
    try:
        model = locate_model(asr_model)
    except InputError as exc:
        return None, f"no speech model to listen with: {exc}"
    try:
        return _listen(input, candidates, model)
    except Exception as exc:  # noqa: BLE001 - a model that does not load cannot settle it
        text = str(exc).strip().splitlines()
        return None, f"listening failed: {text[0] if text else type(exc).__name__}"


def _listen(input: str | Path, candidates: dict[str, Path], model: AsrModel) -> tuple[str | None, str]:
    speech = _speech_only(load_audio(input, LISTEN_S))
    if len(speech) < ASR_SAMPLE_RATE // 2:
        return None, f"no speech in the first {LISTEN_S:.0f} s"
    backend = backend_module(model)
    loaded = load(model)
    if backend.is_multilingual(loaded):
        probs = backend.language_probabilities(loaded, speech)
        heard = max(probs, key=probs.get)
        matches = [code for code in candidates if code.split("-")[0] == heard]
        if probs[heard] < MIN_LANGUAGE_PROBABILITY:
            return None, f"the language is unclear (best guess {heard}, p={probs[heard]:.2f})"
        if len(matches) != 1:
            which = "no sidecar is" if not matches else f"{len(matches)} sidecars are"
            return None, f"the speech is in {heard} (p={probs[heard]:.2f}) and {which}"
        return matches[0], f"the speech is in {heard} (p={probs[heard]:.2f})"
    lines, _, _ = backend.transcribe(loaded, speech, "en")
    heard_text = " ".join(ln.text for ln in lines)
    rates = {code: word_error_rate(_script_text(path, LISTEN_S), heard_text) for code, path in candidates.items()}
    best = min(rates, key=rates.get)
    if rates[best] > MAX_MATCH_WER:
        return None, f"the speech matches no sidecar's words (best {best}, word error rate {rates[best]:.2f})"
    return best, f"the speech matches {candidates[best].name} (word error rate {rates[best]:.2f})"
