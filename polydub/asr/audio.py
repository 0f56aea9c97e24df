"""Speech audio as Whisper and Silero VAD take it: 16 kHz mono float32."""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np

from polydub.errors import StageError

ASR_SAMPLE_RATE = 16_000  # whisper's and Silero VAD's input rate
DECODE_TIMEOUT_S = 120


def load_audio(path: str | Path, seconds: float | None = None) -> np.ndarray:
    """Decode the first audio stream (at most `seconds` of it): float32 [samples] at 16 kHz."""
    limit = ["-t", f"{seconds:.3f}"] if seconds else []
    args = ["ffmpeg", "-hide_banner", "-nostdin", "-loglevel", "error", "-i", str(path), *limit,
            "-map", "0:a:0", "-vn", "-ac", "1", "-ar", str(ASR_SAMPLE_RATE), "-f", "f32le", "-"]
    try:
        proc = subprocess.run(args, capture_output=True, timeout=DECODE_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        raise StageError(f"decoding {Path(path).name} for speech recognition timed out") from None
    if proc.returncode != 0:
        lines = proc.stderr.decode(errors="replace").strip().splitlines()
        raise StageError(f"decoding {Path(path).name} failed: {lines[-1] if lines else proc.returncode}")
    return np.frombuffer(proc.stdout, dtype=np.float32).copy()
