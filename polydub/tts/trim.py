"""Trim the silence voices put around a line, so that it does not eat into the line's slot."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import soundfile as sf

SILENCE_DBFS = -45.0  # below this a 10 ms frame counts as silence
FRAME_SECONDS = 0.010
KEEP_SECONDS = 0.015  # margin left either side of the speech, so consonants are not clipped


def trim_silence(wav: Path) -> float:
    """Trim leading/trailing silence of a mono WAV in place; return its new duration (s).

    A line that is silent throughout is left as it is.
    """
    audio, rate = sf.read(str(wav), dtype="float32", always_2d=True)
    mono = audio.mean(axis=1)
    frame = max(1, int(rate * FRAME_SECONDS))
    n = len(mono) // frame
    if n == 0:
        return len(mono) / rate
    rms = np.sqrt(np.mean(mono[: n * frame].reshape(n, frame) ** 2, axis=1) + 1e-12)
    loud = np.flatnonzero(20 * np.log10(rms) > SILENCE_DBFS)
    if loud.size == 0:
        return len(mono) / rate
    keep = int(rate * KEEP_SECONDS)
    start = max(0, loud[0] * frame - keep)
    end = min(len(mono), (loud[-1] + 1) * frame + keep)
    if start > 0 or end < len(mono):
        info = sf.info(str(wav))
        sf.write(str(wav), audio[start:end], rate, subtype=info.subtype)
    return (end - start) / rate
