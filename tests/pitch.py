"""The pitch of speech, for tests that tell voices apart, and a two-voice diarizer built on
it: the tests' own diarization backend (`DUB_DIARIZER=tests.pitch:PitchDiarizer`).

Pitch is the fundamental frequency from the autocorrelation of short frames: robust
enough for espeak-ng's steady voices, whose male and female variants sit an octave apart.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import soundfile as sf

from polydub.diarize import Turn

FRAME = 0.04  # seconds per analysis frame: a few periods of the lowest pitch
HOP = 0.01
F0_RANGE = (60.0, 400.0)  # Hz: adult speech
VOICED = 0.5  # normalized autocorrelation peak above which a frame is voiced
QUIET = 0.1  # frames below this fraction of the loudest frame's RMS are silence
WINDOW = 0.25  # seconds per diarization decision


def f0_frames(audio: np.ndarray, sr: int) -> np.ndarray:
    """(frames,) pitch in Hz of each HOP, NaN where the frame is silent or unvoiced."""
    if audio.ndim > 1:
        audio = audio.mean(axis=1)
    n, hop = round(FRAME * sr), round(HOP * sr)
    starts = range(0, max(0, len(audio) - n), hop)
    frames = np.stack([audio[i:i + n] for i in starts]) if len(starts) else np.zeros((0, n))
    frames = frames - frames.mean(axis=1, keepdims=True)
    rms = np.sqrt((frames ** 2).mean(axis=1))
    lo, hi = round(sr / F0_RANGE[1]), round(sr / F0_RANGE[0])
    spectrum = np.fft.rfft(frames, 2 * n, axis=1)
    corr = np.fft.irfft(np.abs(spectrum) ** 2, axis=1)[:, :n]
    lag = lo + np.argmax(corr[:, lo:hi], axis=1)
    peak = corr[np.arange(len(lag)), lag] / np.maximum(corr[:, 0], 1e-12)
    f0 = sr / lag.astype(float)
    loud = rms > QUIET * (rms.max() if len(rms) else 0.0)
    return np.where(loud & (peak > VOICED), f0, np.nan)


def median_f0(audio: np.ndarray, sr: int, spans: list[tuple[float, float]] | None = None) -> float:
    """Median pitch over the voiced frames of `audio` (within `spans`, seconds, if given)."""
    f0 = f0_frames(audio, sr)
    if spans is not None:
        t = np.arange(len(f0)) * HOP + FRAME / 2
        inside = np.zeros(len(f0), bool)
        for a, b in spans:
            inside |= (t >= a) & (t < b)
        f0 = f0[inside]
    return float(np.nanmedian(f0)) if np.isfinite(f0).any() else float("nan")


class PitchDiarizer:
    """Two speakers told apart by pitch: each WINDOW of voiced speech is 'low' or 'high'
    against the geometric middle of the lowest and highest windows; runs become turns."""

    name = "pitch"
    version = "tests.pitch 1"

    def diarize(self, wav: Path) -> list[Turn]:
        audio, sr = sf.read(str(wav), dtype="float32")
        f0 = f0_frames(audio, sr)
        per = round(WINDOW / HOP)
        windows = [(i * HOP, np.nanmedian(f0[i:i + per])) for i in range(0, len(f0), per)
                   if np.isfinite(f0[i:i + per]).sum() >= per // 4]
        if not windows:
            return []
        pitches = np.array([p for _, p in windows])
        middle = np.sqrt(np.percentile(pitches, 10) * np.percentile(pitches, 90))
        turns: list[Turn] = []
        for start, pitch in windows:
            speaker = "high" if pitch > middle else "low"
            if turns and turns[-1].speaker == speaker and start - turns[-1].end < 2 * WINDOW:
                turns[-1] = Turn(turns[-1].start, start + WINDOW, speaker)
            else:
                turns.append(Turn(start, start + WINDOW, speaker))
        return turns
