"""Mixing the dub over the source's background, loudness-normalized (EBU R128).

The background is the source's music and effects without its voice: separated by a
source-separation model when one ran (`audio/separate.py`), else the band-cut fallback, the
source itself with its speech band and level cut inside the source's speech (short fades,
untouched elsewhere; the voice's lows and highs stay faintly audible). The dub is set to
the source's loudness (where the original voice sat), the background is ducked wherever
the dub speaks, the dub is added, and the sum is normalized in two passes (measure, then
one linear gain): by default to the source's own integrated loudness and true peak, so that
switching between the original and dubbed tracks keeps the level; or to a delivery target.
The mix is exactly as long as the source.
"""

from __future__ import annotations

import math
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

from polydub.errors import StageError
from polydub.media import SAMPLE_RATE, ffmpeg, ffmpeg_log
from polydub.segments import Segment

LOUDNESS = -23.0  # LUFS, EBU R128 broadcast target: for a silent source, which has no level to match
TRUE_PEAK = -1.5  # dBTP, ceiling under a delivery target (--loudness)
MATCHED_PEAK_MAX = -1.0  # dBTP: matching the source never goes above R128's maximum
PEAK_RANGE = (-9.0, 0.0)  # dBTP that ffmpeg's loudnorm accepts
LOUDNESS_RANGE = 11.0  # LU
SILENCE = -70.0  # LUFS; R128's absolute gate, what ebur128 reports for silence

SPEECH_BAND = (200.0, 4000.0)  # Hz removed from the source while its speaker talks
SPEECH_CUT_DB = -10.0  # and the level of what remains there
SPEECH_PAD = 0.05  # seconds added around each source line (transcript times are loose)
SPEECH_FADE = 0.05  # seconds of fade into and out of the cut
DUCK = "threshold=0.05:ratio=4:attack=20:release=300"  # background 6-10 dB down under the dub
DUB_GAIN_LIMIT = 24.0  # dB; the dub is matched to the source's loudness within this
BLOCK = 1 << 18  # samples processed at a time


def loudness_scan(true_peak: bool = False) -> str:
    """The ebur128 filter that measures what passes through it (audio unchanged); its
    summary is parsed by `stats_from_log`."""
    return "ebur128=framelog=verbose" + (":peak=true" if true_peak else "")


def stats_from_log(log: str, name: str) -> dict[str, float]:
    """I and thresh (LUFS), LRA (LU) and, when measured, TP (dBTP) from ebur128's summary."""
    summary = log[log.rfind("Summary:"):]
    number = r"\s+(-?[\d.]+|-inf)"
    found = {key: re.search(pattern + number, summary) for key, pattern in
             (("I", "I:"), ("thresh", "I:.*\n\\s*Threshold:"), ("LRA", "LRA:"), ("TP", "Peak:"))}
    if not found["I"]:
        raise StageError(f"measuring loudness of {name} printed no result")
    return {key: float(m.group(1)) for key, m in found.items() if m}


def loudness_stats(wav: Path, true_peak: bool = False) -> dict[str, float]:
    """EBU R128 measurements of `wav`: I and thresh (LUFS), LRA (LU), and TP (dBTP) if asked."""
    log = ffmpeg_log("-i", str(wav), "-map", "0:a:0", "-af", loudness_scan(true_peak), "-f", "null", "-",
                     what=f"measuring loudness of {Path(wav).name}")
    return stats_from_log(log, Path(wav).name)


def measure_loudness(wav: Path) -> float:
    """Integrated loudness of `wav` in LUFS (EBU R128); -70.0 for silence."""
    return max(SILENCE, loudness_stats(wav)["I"])


@dataclass(frozen=True)
class Loudness:
    """A track's integrated loudness (LUFS) and true peak (dBTP)."""

    lufs: float
    true_peak_db: float


@dataclass(frozen=True)
class MixedTrack:
    """A mix's file and its loudness as delivered."""

    path: Path
    level: Loudness


def measure(wav: Path) -> Loudness:
    """Integrated loudness and true peak of `wav` (silence: -70 LUFS, -inf dBTP)."""
    stats = loudness_stats(wav, true_peak=True)
    return Loudness(max(SILENCE, stats["I"]), stats.get("TP", float("-inf")))


def delivery_target(source: Loudness, loudness: float | None) -> Loudness:
    """What a dub is normalized to: `loudness` LUFS under TRUE_PEAK, or by default (None)
    the source's own loudness under its own true peak (at most MATCHED_PEAK_MAX)."""
    if loudness is not None:
        return Loudness(float(loudness), TRUE_PEAK)
    if source.lufs <= SILENCE:
        return Loudness(LOUDNESS, TRUE_PEAK)
    peak = max(PEAK_RANGE[0], min(source.true_peak_db, MATCHED_PEAK_MAX))
    return Loudness(round(source.lufs, 1), round(peak, 1))


def _cut_envelope(speech: list[Segment]) -> tuple[np.ndarray, np.ndarray]:
    """Breakpoints (seconds, 0..1) of how much of the source is cut: 1 inside speech."""
    spans = sorted((s.start - SPEECH_PAD, s.end + SPEECH_PAD) for s in speech if s.end > s.start)
    merged: list[list[float]] = []
    for a, b in spans:
        if merged and a - merged[-1][1] < 2 * SPEECH_FADE:  # fades would overlap: one cut
            merged[-1][1] = max(merged[-1][1], b)
        else:
            merged.append([a, b])
    xp = [t for a, b in merged for t in (a - SPEECH_FADE, a, b, b + SPEECH_FADE)]
    fp = [g for _ in merged for g in (0.0, 1.0, 1.0, 0.0)]
    return np.asarray(xp), np.asarray(fp)


def suppress_speech(source_wav: Path, speech: list[Segment], out_wav: Path) -> Path:
    """Write the source with its speech cut inside `speech`: float WAV, same rate and channels.

    Inside a line the speech band is removed (`_band_stopped`) and the rest lowered by
    SPEECH_CUT_DB; outside, the samples are untouched. Streams in blocks.
    """
    try:
        info = sf.info(str(source_wav))
    except (sf.LibsndfileError, RuntimeError) as exc:
        raise StageError(f"{source_wav}: cannot read the source audio ({exc})") from None
    stopped = Path(out_wav).with_name(f".{Path(out_wav).stem}.band-stopped.wav")
    try:
        _band_stopped(Path(source_wav), stopped, info.samplerate)
        with sf.SoundFile(source_wav) as src, sf.SoundFile(stopped) as kept_src, \
                sf.SoundFile(out_wav, "w", src.samplerate, src.channels, subtype="FLOAT", format="WAV") as dst:
            rate = src.samplerate
            xp, fp = _cut_envelope(speech)
            level = 10 ** (SPEECH_CUT_DB / 20)
            pos = 0
            for block in src.blocks(BLOCK, dtype="float32", always_2d=True):
                kept = kept_src.read(len(block), dtype="float32", always_2d=True)
                if len(kept) < len(block):  # the filter's output is as long as its input; be safe
                    kept = np.pad(kept, ((0, len(block) - len(kept)), (0, 0)))
                t = np.arange(pos, pos + len(block)) / rate
                cut = np.interp(t, xp, fp, left=0.0, right=0.0)[:, None] if len(xp) else 0.0
                dst.write((block * (1 - cut) + cut * level * kept).astype(np.float32))
                pos += len(block)
    finally:
        stopped.unlink(missing_ok=True)
    return Path(out_wav)


def _band_stopped(source_wav: Path, out_wav: Path, rate: int) -> Path:
    """The source without its speech band, float WAV of the same length: its lows below
    SPEECH_BAND (two 2-pole Butterworth low-passes, 24 dB/octave) plus its highs above it
    (as many high-passes), filtered by ffmpeg. scipy.signal would do the same at the cost
    of its import (over a second of CPU per process)."""
    low, high = SPEECH_BAND[0], min(SPEECH_BAND[1], 0.45 * rate)
    graph = (f"asplit=2[a][b];[a]lowpass=f={low:g}:p=2,lowpass=f={low:g}:p=2[lo];"
             f"[b]highpass=f={high:g}:p=2,highpass=f={high:g}:p=2[hi];"
             f"[lo][hi]amix=inputs=2:duration=first:normalize=0[out]")
    ffmpeg("-i", str(source_wav), "-filter_complex", graph, "-map", "[out]", "-c:a", "pcm_f32le", str(out_wav),
           what="band-stopping the source's speech")
    return out_wav


def _exact_length(wav: Path, frames: int, out_wav: Path, gain_db: float = 0.0) -> Path:
    """Copy `wav` to `out_wav` padded with silence or trimmed to exactly `frames` samples,
    `gain_db` applied."""
    scale = np.float32(10 ** (gain_db / 20))
    with sf.SoundFile(wav) as src, sf.SoundFile(out_wav, "w", src.samplerate, src.channels,
                                                subtype="PCM_16", format="WAV") as dst:
        written = 0
        for block in src.blocks(BLOCK, dtype="float32", always_2d=True):
            block = block[: frames - written]
            dst.write(np.clip(block * scale if gain_db else block, -1.0, 1.0))  # 16-bit: clip, not wrap
            written += len(block)
            if written >= frames:
                break
        while written < frames:
            n = min(BLOCK, frames - written)
            dst.write(np.zeros((n, src.channels), np.float32))
            written += n
    return Path(out_wav)


def mix(source_wav: Path, dub_wav: Path, speech: list[Segment], out_wav: Path,
        loudness: float | None = None, sample_rate: int = SAMPLE_RATE,
        background_wav: Path | None = None, target: Loudness | None = None,
        source_level: Loudness | None = None) -> MixedTrack:
    """Mix `dub_wav` over the background of `source_wav` into a 16-bit WAV at `sample_rate`.

    `speech` are the source's own lines (seconds). `background_wav` is the source without
    its voice (separated, same rate and channels as the source); None: the band-cut. The
    output is stereo if the source has two or more channels, else mono, normalized to
    `target` (default: `delivery_target` of the source and `loudness`), and exactly as many
    samples as the source has at `sample_rate`. `source_level`: the source's measurements
    when already known (measured here otherwise). Returns the file and its loudness.

    Normalized in two passes (ebur128 as the mix is written, then one gain; loudnorm's own
    first pass misreads short clips); loudnorm limits dynamically only if the peaks demand it.
    """
    source_wav, dub_wav, out_wav = Path(source_wav), Path(dub_wav), Path(out_wav)
    try:
        info = sf.info(str(source_wav))
    except (sf.LibsndfileError, RuntimeError) as exc:
        raise StageError(f"{source_wav}: cannot read the source audio ({exc})") from None
    if not dub_wav.is_file():
        raise StageError(f"{dub_wav}: dub track is missing")
    frames = round(info.frames * sample_rate / info.samplerate)
    layout = "stereo" if info.channels >= 2 else "mono"

    # Put the dub where the original voice sat relative to the background.
    source = source_level or measure(source_wav)
    target = target or delivery_target(source, loudness)
    src_lufs, dub_lufs = source.lufs, measure_loudness(dub_wav)
    gain = 0.0
    if src_lufs > SILENCE and dub_lufs > SILENCE:
        gain = max(-DUB_GAIN_LIMIT, min(DUB_GAIN_LIMIT, src_lufs - dub_lufs))

    out_wav.parent.mkdir(parents=True, exist_ok=True)
    # Intermediates go beside the output: an hour of stereo float is 1.4 GB each, three of them.
    with tempfile.TemporaryDirectory(prefix=".mix-", dir=out_wav.parent) as tmp:
        background = (Path(background_wav) if background_wav is not None
                      else suppress_speech(source_wav, speech, Path(tmp) / "background.wav"))
        premix = Path(tmp) / "premix.wav"
        upmix = ",pan=stereo|c0=c0|c1=c0" if layout == "stereo" else ""
        graph = (
            f"[0:a]aresample={sample_rate},aformat=sample_fmts=flt:channel_layouts={layout}[bg];"
            f"[1:a]aresample={sample_rate},aformat=sample_fmts=flt:channel_layouts=mono,"
            f"volume={gain:.2f}dB{upmix},asplit=2[key][dub];"
            f"[bg][key]sidechaincompress={DUCK}[ducked];"
            f"[ducked][dub]amix=inputs=2:duration=first:normalize=0[out]"
        )
        # The mix measured as it is written (ebur128 passes the audio through): one pass, not two.
        log = ffmpeg_log("-i", str(background), "-i", str(dub_wav), "-filter_complex",
                         f"{graph};[out]{loudness_scan(true_peak=True)}[measured]", "-map", "[measured]",
                         "-c:a", "pcm_f32le", str(premix), output=True, what="mixing the dub")
        stats = stats_from_log(log, premix.name)
        to_target = target.lufs - stats["I"]  # dB
        if stats["I"] <= SILENCE:  # silence: nothing to normalize
            return MixedTrack(_exact_length(premix, frames, out_wav), Loudness(SILENCE, stats.get("TP", -math.inf)))
        if stats["TP"] + to_target <= target.true_peak_db:
            # One linear gain reaches the target within the peak limit: what loudnorm's linear
            # mode does, without its 192 kHz round trip; loudness and peaks move by the gain.
            level = Loudness(stats["I"] + to_target, stats["TP"] + to_target)
            return MixedTrack(_exact_length(premix, frames, out_wav, gain_db=to_target), level)
        # The peaks demand a limiter: loudnorm's dynamic mode (at 192 kHz), measured again.
        lra = min(50.0, max(LOUDNESS_RANGE, stats["LRA"]))  # keep the mix's own range
        loudnorm = (f"loudnorm=I={target.lufs}:TP={target.true_peak_db}:LRA={lra}:measured_I={stats['I']}"
                    f":measured_TP={stats['TP']}:measured_LRA={stats['LRA']}"
                    f":measured_thresh={stats['thresh']}:linear=true")
        fmt = f"aformat=sample_fmts=flt:channel_layouts={layout}"
        normalized = Path(tmp) / "normalized.wav"
        log = ffmpeg_log("-i", str(premix), "-af",
                         f"{loudnorm},aresample={sample_rate},{fmt},{loudness_scan(true_peak=True)}",
                         "-c:a", "pcm_f32le", str(normalized), output=True, what="normalizing loudness")
        measured = stats_from_log(log, normalized.name)
        level = Loudness(max(SILENCE, measured["I"]), measured.get("TP", -math.inf))
        return MixedTrack(_exact_length(normalized, frames, out_wav), level)
