"""Writing a voice's line: a mono 16-bit WAV, whole or absent; and what names the model
that spoke it (its package's version, its weights' fingerprint) in cache keys and the report."""

from __future__ import annotations

import hashlib
import os
import tempfile
from importlib import metadata
from pathlib import Path
from typing import Callable

import numpy as np
import soundfile as sf

from polydub.errors import StageError

SILENCE_SECONDS = 0.1  # what an empty line becomes


def write_silence(out_wav: Path, sample_rate: int, seconds: float = SILENCE_SECONDS) -> Path:
    sf.write(out_wav, np.zeros(round(seconds * sample_rate), dtype=np.int16), sample_rate, subtype="PCM_16")
    return out_wav


def write_line(out_wav: Path, sample_rate: int, text: str, speak: Callable[[str], np.ndarray], who: str) -> Path:
    """Write `speak(text)` (samples in [-1, 1], shape (n,)) as a mono 16-bit WAV at `out_wav`;
    an empty line is a short silence. Written beside the target and renamed, so a crash never
    leaves a half-written line. `who` names the voice when it says nothing."""
    out_wav = Path(out_wav)
    out_wav.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(suffix=".wav", dir=out_wav.parent)
    os.close(fd)
    try:
        if not text.strip():
            write_silence(Path(tmp), sample_rate)
        else:
            wav = speak(text.strip())
            if wav.size == 0:
                raise StageError(f"{who} produced no audio for {text[:40]!r}")
            sf.write(tmp, (np.clip(wav, -1.0, 1.0) * 32767).astype(np.int16), sample_rate, subtype="PCM_16")
        os.replace(tmp, out_wav)
    finally:
        Path(tmp).unlink(missing_ok=True)
    return out_wav


def fingerprint(path: Path) -> str:
    """Changes when a weights file is replaced, so cached speech is not reused for new weights."""
    st = Path(path).stat()
    return hashlib.sha1(f"{st.st_size}-{st.st_mtime_ns}".encode()).hexdigest()[:8]


def package_version(distribution: str) -> str:
    """The installed version of the package whose code runs a voice, or 'unknown'."""
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return "unknown"
