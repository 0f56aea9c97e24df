"""The faster-whisper backend: Whisper on CTranslate2 (int8 on CPU, float16 on CUDA)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from polydub.asr.result import Line, Word
from polydub.loading import load_once

BEAM_SIZE = 5
CPU_COMPUTE = "int8"
GPU_COMPUTE = "float16"


def load_model(path: Path, device: str | None = None):
    """Load (once per process) a CTranslate2 Whisper folder as a `WhisperModel`."""
    import ctranslate2
    from faster_whisper import WhisperModel

    device = device or ("cuda" if ctranslate2.get_cuda_device_count() > 0 else "cpu")
    compute = GPU_COMPUTE if device == "cuda" else CPU_COMPUTE
    return load_once(("faster-whisper", str(Path(path).resolve()), device),
                     lambda: WhisperModel(str(path), device=device, compute_type=compute))


def is_multilingual(model) -> bool:
    return bool(model.model.is_multilingual)


def transcribe(model, audio: np.ndarray, language: str | None = None) -> tuple[list[Line], str, float]:
    """16 kHz mono float32 [samples] -> lines with word times, the language, its probability."""
    # Beam search at temperature 0 first; faster-whisper falls back to sampling only on
    # failure, with its own fixed seed, so the same audio gives the same transcript.
    segments, info = model.transcribe(audio, language=language, beam_size=BEAM_SIZE, word_timestamps=True,
                                      condition_on_previous_text=False, vad_filter=False)
    lines = []
    for s in segments:  # a generator: decoding happens here
        words = tuple(Word(round(float(w.start), 3), round(float(w.end), 3), w.word.strip(),
                           round(float(w.probability), 3)) for w in (s.words or []) if w.word.strip())
        lines.append(Line(round(float(s.start), 3), round(float(s.end), 3), s.text.strip(), words))
    return lines, info.language, float(info.language_probability)


def language_probabilities(model, audio: np.ndarray) -> dict[str, float]:
    """Probability of each language Whisper knows, from the first 30 s of `audio`."""
    _, _, probs = model.detect_language(audio)
    return {code: float(p) for code, p in probs}
