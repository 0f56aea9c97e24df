"""ffmpeg and ffprobe: probing inputs and running commands with a timeout.

Every call takes an argument list and a timeout (a blocking ffmpeg cannot be interrupted
by a Prefect task timeout), and turns failures into one-line errors.
"""

from __future__ import annotations

import json
import re
import subprocess
import threading
from collections import OrderedDict
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

from polydub import limits
from polydub.errors import InputError, StageError

FFMPEG_TIMEOUT = 1800  # seconds; a 60 s ad mixes in a few seconds, a feature in minutes
PROBE_TIMEOUT = 60
PROBES_KEPT = 256  # probes remembered per process: a job plans, checks and runs on the same file
SAMPLE_RATE = 48_000  # working rate for every audio track we build


@dataclass(frozen=True)
class MediaInfo:
    """What the pipeline needs to know of an input file."""

    path: str
    duration: float  # seconds, of the container
    has_video: bool
    audio_duration: float  # seconds, of the first audio stream
    fps: float | None = None  # of the first video stream
    width: int | None = None
    height: int | None = None
    rotation: int = 0
    video_codec: str | None = None
    audio_codec: str | None = None
    audio_channels: int = 0
    audio_language: str | None = None  # the first audio stream's language tag, if any
    frames: int | None = None


def file_arg(path: str | Path) -> str:
    """A path as ffmpeg and ffprobe must get it: absolute, so that a name starting with
    `-` is never read as an option (and `file:` so that `x:y.mp4` is not a protocol)."""
    return "file:" + str(Path(path).absolute())


def _run(args: list[str], timeout: float, what: str) -> subprocess.CompletedProcess:
    try:
        proc = subprocess.run(args, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise StageError(f"{what} timed out after {timeout:.0f} s") from None
    except FileNotFoundError:
        raise StageError(f"{args[0]} is not installed (see README: set-up)") from None
    if proc.returncode != 0:
        lines = [ln for ln in proc.stderr.strip().splitlines() if ln.strip()]
        raise StageError(f"{what} failed: {lines[-1] if lines else 'exit %d' % proc.returncode}")
    return proc


def run(args: list[str], timeout: float = FFMPEG_TIMEOUT, what: str = "ffmpeg") -> str:
    """Run a command; return stdout; raise `StageError` with the last stderr line on failure."""
    return _run(args, timeout, what).stdout


def _files(args: tuple[str, ...], output: bool) -> list[str]:
    """`args` with every input (after `-i`) and, with `output`, the last argument (the
    output file) as `file_arg` paths; `-` (a pipe) stays as it is."""
    out = list(args)
    for i, arg in enumerate(out):
        is_input = i > 0 and out[i - 1] == "-i"
        if (is_input or (output and i == len(out) - 1)) and arg != "-" and not arg.startswith("file:"):
            out[i] = file_arg(arg)
    return out


def ffmpeg(*args: str, timeout: float = FFMPEG_TIMEOUT, what: str = "ffmpeg") -> str:
    """Run ffmpeg on `args` (inputs after `-i`, the output file last)."""
    return run(["ffmpeg", "-hide_banner", "-nostdin", "-loglevel", "error", "-y", *_files(args, output=True)],
               timeout=timeout, what=what)


def ffmpeg_log(*args: str, timeout: float = FFMPEG_TIMEOUT, what: str = "ffmpeg", output: bool = False) -> str:
    """Run ffmpeg for what it prints (measurements go to stderr); return stderr. `output`:
    the last argument is a file it writes (measured on the way, not read again)."""
    cmd = ["ffmpeg", "-hide_banner", "-nostdin", "-nostats", "-loglevel", "info", *(["-y"] if output else []),
           *_files(args, output=output)]
    return _run(cmd, timeout, what).stderr


def _rate(text: str | None) -> float | None:
    try:
        value = float(Fraction(text)) if text else 0.0
    except (ValueError, ZeroDivisionError):
        return None
    return value or None


_probed: OrderedDict[tuple, MediaInfo] = OrderedDict()  # by (path as given, `unchanged`)
_probed_lock = threading.Lock()


def unchanged(path: Path, st) -> tuple[str, int, int]:
    """What tells a file unchanged within a process, cheaply: its real path, size and mtime."""
    return str(path.resolve()), st.st_size, st.st_mtime_ns


def probe(path: str | Path) -> MediaInfo:
    """Probe a file; raise `InputError` saying what is wrong with it.

    Remembered per process for an unchanged file (same size and modification time): the
    command line, the flow's own checks and the job each ask about the same input."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: no such file")
    if path.is_dir():
        raise InputError(f"{path}: is a directory, not a media file")
    limits.refuse_special(path, "media input")  # a FIFO or /dev/zero: ffprobe would wait or read on
    st = path.stat()
    if st.st_size == 0:
        raise InputError(f"{path}: file is empty (zero length)")
    key = (str(path), *unchanged(path, st))
    with _probed_lock:
        if key in _probed:
            _probed.move_to_end(key)
            return _probed[key]
    info = _probe(path)
    with _probed_lock:
        _probed[key] = info
        while len(_probed) > PROBES_KEPT:
            _probed.popitem(last=False)
    return info


def _probe(path: Path) -> MediaInfo:
    try:
        proc = subprocess.run(
            ["ffprobe", "-v", "error", "-print_format", "json", "-show_format", "-show_streams", file_arg(path)],
            capture_output=True, text=True, timeout=PROBE_TIMEOUT,
        )
    except subprocess.TimeoutExpired:
        raise InputError(f"{path}: ffprobe timed out; the file may be corrupt") from None
    except FileNotFoundError:
        raise InputError("ffprobe is not installed (see README: set-up)") from None
    info = json.loads(proc.stdout or "{}") if proc.returncode == 0 else {}
    streams = info.get("streams") or []
    if proc.returncode != 0 or not streams:
        reason = (proc.stderr.strip().splitlines() or ["no streams"])[-1]
        raise InputError(f"{path}: not a media file ffmpeg can read ({reason.split(': ')[-1]})")
    videos = [s for s in streams if s.get("codec_type") == "video"
              and not (s.get("disposition") or {}).get("attached_pic")]
    audios = [s for s in streams if s.get("codec_type") == "audio"]
    if not audios:
        raise InputError(f"{path}: has no audio stream, so there is no speech to dub")
    fmt = info.get("format") or {}
    duration = float(fmt.get("duration") or 0) or float(audios[0].get("duration") or 0)
    a = audios[0]
    audio_duration = float(a.get("duration") or 0) or duration
    if duration <= 0 or audio_duration <= 0:
        raise InputError(f"{path}: has zero duration")
    v = videos[0] if videos else {}
    rotation = 0
    for side in v.get("side_data_list") or []:
        if "rotation" in side:
            rotation = int(side["rotation"])
    rotation = rotation or int((v.get("tags") or {}).get("rotate", 0) or 0)
    frames = v.get("nb_frames")
    return MediaInfo(
        path=str(path),
        duration=duration,
        has_video=bool(videos),
        audio_duration=audio_duration,
        fps=_rate(v.get("avg_frame_rate")) or _rate(v.get("r_frame_rate")) if videos else None,
        width=v.get("width"), height=v.get("height"), rotation=rotation,
        video_codec=v.get("codec_name"), audio_codec=a.get("codec_name"),
        audio_channels=int(a.get("channels") or 0),
        audio_language=(a.get("tags") or {}).get("language"),
        frames=int(frames) if frames and str(frames).isdigit() else None,
    )


_decoded_ok: set[tuple[str, int, int]] = set()  # `unchanged` of the files already checked in this process


def check_decodes(path: str | Path, info: MediaInfo) -> None:
    """Decode the whole audio stream once; a truncated or corrupt file fails here, before work.

    Remembered per process for an unchanged file: `dub` validates, then the flow plans again.
    """
    fingerprint = unchanged(Path(path), Path(path).stat())
    if fingerprint in _decoded_ok:
        return
    try:
        proc = subprocess.run(
            ["ffmpeg", "-hide_banner", "-nostdin", "-v", "error", "-i", file_arg(path), "-map", "0:a:0",
             "-f", "null", "-"],
            capture_output=True, text=True, timeout=PROBE_TIMEOUT + info.duration / 20,  # long films too
        )
    except subprocess.TimeoutExpired:
        raise InputError(f"{path}: decoding timed out; the file may be corrupt") from None
    # ffmpeg exits 0 on a partial file; its messages are what tell. Drop "[mov @ 0x..]" prefixes.
    errors = [re.sub(r"^\[[^\]]*\]\s*", "", ln) for ln in proc.stderr.splitlines() if ln.strip()]
    if proc.returncode != 0 or any("nvalid data" in e or "runcat" in e or "partial file" in e
                                   or "moov atom not found" in e for e in errors):
        raise InputError(f"{path}: truncated or corrupt ({errors[-1] if errors else 'decode failed'})")
    _decoded_ok.add(fingerprint)


def extract_audio(path: str | Path, out: str | Path, sample_rate: int = SAMPLE_RATE,
                  channels: int = 1, seconds: float | None = None) -> Path:
    """Decode the first audio stream to a PCM WAV at `sample_rate`.

    With `seconds`, the WAV holds exactly round(seconds * sample_rate) samples (padded with
    silence or trimmed): decoders can return a little more or less than the container's
    timing says (e.g. priming samples of joined AAC segments), and the dub must match the
    duration players show.
    """
    out = Path(out)
    fit = []
    if seconds is not None:
        n = round(seconds * sample_rate)
        # resampled first: apad and atrim count samples at the rate they receive, and -ar
        # alone would resample only after them (a 22.05 kHz source came out 2.2x too long)
        fit = ["-af", f"aresample={sample_rate},apad=whole_len={n},atrim=end_sample={n}"]
    ffmpeg("-i", str(path), "-map", "0:a:0", "-vn", "-ac", str(channels), "-ar", str(sample_rate), *fit,
           "-c:a", "pcm_s16le", str(out), what="audio extraction")
    return out
