"""The reference clip XTTS clones a voice from: the source speaker's own lines, cut from the
source audio and joined."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np
import soundfile as sf

from polydub.errors import StageError
from polydub.media import extract_audio
from polydub.segments import Segment

REFERENCE_RATE = 22_050  # XTTS loads references at this rate
MIN_PIECE = 0.5  # seconds; shorter lines are mostly breath and edges
FADE = 0.01  # seconds of fade at each join, so joins do not click
MAX_SECONDS = 15.0  # XTTS conditions on at most a few 6 s chunks; more only costs time


def cut_reference(source_wav: Path, segments: list[Segment], out_wav: Path,
                  seconds: float = 12.0) -> Path:
    """Join the longest speech segments of `source_wav` (in source order) into a mono WAV at
    22050 Hz of `seconds` (capped at 15 s), or of all the speech when there is less."""
    seconds = min(seconds, MAX_SECONDS)
    with tempfile.TemporaryDirectory() as tmp:
        decoded = extract_audio(source_wav, Path(tmp) / "source.wav", sample_rate=REFERENCE_RATE)
        audio, sr = sf.read(decoded, dtype="float32", always_2d=False)
    total = len(audio) / sr
    spans = [(max(0.0, s.start), min(total, s.end)) for s in segments if s.text.strip()]
    spans = [(a, b) for a, b in spans if b - a >= MIN_PIECE] or [(a, b) for a, b in spans if b > a]
    if not spans:
        raise StageError(f"{source_wav}: no speech segments to take the speaker's voice from")

    chosen, budget = [], seconds
    for a, b in sorted(spans, key=lambda s: s[0] - s[1]):  # longest first
        if budget <= 0:
            break
        take = min(b - a, budget)
        chosen.append((a, a + take))
        budget -= take
    fade = np.linspace(0.0, 1.0, round(FADE * sr), dtype=np.float32)
    pieces = []
    for a, b in sorted(chosen):
        piece = audio[round(a * sr):round(b * sr)].copy()
        if len(piece) > 2 * len(fade):
            piece[:len(fade)] *= fade
            piece[-len(fade):] *= fade[::-1]
        pieces.append(piece)

    out_wav = Path(out_wav)
    out_wav.parent.mkdir(parents=True, exist_ok=True)
    fd, part = tempfile.mkstemp(suffix=".wav", dir=out_wav.parent)
    os.close(fd)
    try:
        sf.write(part, np.concatenate(pieces), REFERENCE_RATE, subtype="PCM_16")
        os.replace(part, out_wav)
    finally:
        Path(part).unlink(missing_ok=True)
    return out_wav
