"""The openai-whisper backend: OpenAI's PyTorch Whisper, from a `.pt` checkpoint."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from polydub.asr.result import Line, Word
from polydub.loading import load_once

SEED = 0


def load_model(path: Path, device: str | None = None):
    """Load (once per process) a whisper checkpoint saved as {'dims', 'model_state_dict'}."""
    import torch
    import whisper

    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    return load_once(("whisper", str(Path(path).resolve()), device),
                     lambda: whisper.load_model(str(path), device=device))


def is_multilingual(model) -> bool:
    return bool(model.is_multilingual)


def transcribe(model, audio: np.ndarray, language: str | None = None) -> tuple[list[Line], str, float]:
    """16 kHz mono float32 [samples] -> lines with word times, the language, its probability."""
    import torch

    probability = 1.0
    if language is None and model.is_multilingual:
        probs = language_probabilities(model, audio)
        language = max(probs, key=probs.get)
        probability = probs[language]
    # whisper samples when it falls back to a higher temperature: seed it, so that the same
    # audio always gives the same transcript (and the same cache keys downstream).
    with torch.random.fork_rng(devices=[model.device] if model.device.type == "cuda" else []):
        torch.manual_seed(SEED)
        result = model.transcribe(audio, language=language, verbose=None, word_timestamps=True,
                                  fp16=model.device.type == "cuda", condition_on_previous_text=False)
    lines = []
    for s in result["segments"]:
        words = tuple(Word(round(float(w["start"]), 3), round(float(w["end"]), 3), w["word"].strip(),
                           round(float(w.get("probability", 0.0)), 3))
                      for w in s.get("words", []) if w["word"].strip())
        lines.append(Line(round(float(s["start"]), 3), round(float(s["end"]), 3), s["text"].strip(), words))
    return lines, result.get("language") or language or "en", probability


def language_probabilities(model, audio: np.ndarray) -> dict[str, float]:
    """Probability of each language Whisper knows, from the first 30 s of `audio`."""
    import torch
    import whisper

    mel = whisper.log_mel_spectrogram(whisper.pad_or_trim(torch.from_numpy(audio)), model.dims.n_mels)
    _, probs = model.detect_language(mel.to(model.device))
    return {code: float(p) for code, p in probs.items()}
