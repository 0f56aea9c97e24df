"""Frames in and out of ffmpeg through rawvideo pipes, one RGB uint8 frame (H, W, 3) at a time.

Nothing here holds more than a few frames (`prefetch` and `BackgroundWriter` keep a short queue
so decoding and encoding overlap the lip-sync); every ffmpeg process has a watchdog that kills it
after `timeout` seconds (a blocking pipe read cannot time out by itself).
"""

from __future__ import annotations

import json
import subprocess
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from queue import Full, Queue

import numpy as np

from polydub.errors import InputError, StageError

FPS = 25  # the rate the lip-sync models were trained at
PROBE_TIMEOUT = 60  # seconds
PIPE_TIMEOUT = 4 * 3600  # seconds for a whole pass over a video (lip-sync is slow on small GPUs)
ENCODE_ARGS = ("-c:v", "libx264", "-preset", "medium", "-crf", "18", "-pix_fmt", "yuv420p")
LOSSLESS_ARGS = ("-c:v", "ffv1")  # for checking pixels exactly (use a .mkv)
FFMPEG = ("ffmpeg", "-hide_banner", "-nostdin", "-loglevel", "error", "-y")


def frame_size(path: str | Path) -> tuple[int, int]:
    """(width, height) of the first video stream as decoded (display rotation applied)."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: no such video file")
    args = ["ffprobe", "-v", "error", "-select_streams", "v:0", "-print_format", "json",
            "-show_streams", str(path)]
    try:
        proc = subprocess.run(args, capture_output=True, text=True, timeout=PROBE_TIMEOUT, check=False)
    except subprocess.TimeoutExpired:
        raise InputError(f"{path}: ffprobe timed out; the file may be corrupt") from None
    streams = (json.loads(proc.stdout or "{}").get("streams") or []) if proc.returncode == 0 else []
    if not streams or not streams[0].get("width"):
        raise InputError(f"{path}: has no video stream to lip-sync")
    s = streams[0]
    rotation = int((s.get("tags") or {}).get("rotate", 0) or 0)
    for side in s.get("side_data_list") or []:
        rotation = int(side.get("rotation", rotation) or rotation)
    w, h = int(s["width"]), int(s["height"])
    return (h, w) if rotation % 180 else (w, h)


class _Watchdog:
    """Kill a process once `timeout` seconds have passed."""

    def __init__(self, proc: subprocess.Popen, timeout: float):
        self.fired = False

        def kill() -> None:
            self.fired = True
            proc.kill()

        self._timer = threading.Timer(timeout, kill)
        self._timer.daemon = True
        self._timer.start()

    def cancel(self) -> None:
        self._timer.cancel()


def _stderr_tail(proc: subprocess.Popen) -> str:
    text = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
    lines = [ln for ln in text.strip().splitlines() if ln.strip()]
    return lines[-1] if lines else f"exit {proc.returncode}"


def read_frames(path: str | Path, fps: float = FPS, timeout: float = PIPE_TIMEOUT) -> Iterator[np.ndarray]:
    """Decode the first video stream at `fps` (frames dropped or repeated) as RGB frames."""
    w, h = frame_size(path)
    args = [*FFMPEG, "-i", str(path), "-map", "0:v:0", "-vf", f"fps={fps}",
            "-f", "rawvideo", "-pix_fmt", "rgb24", "-"]
    proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    watchdog = _Watchdog(proc, timeout)
    size = w * h * 3
    try:
        while True:
            data = proc.stdout.read(size)
            if len(data) < size:
                break
            yield np.frombuffer(data, np.uint8).reshape(h, w, 3)
        proc.wait()
        if watchdog.fired:
            raise StageError(f"decoding {Path(path).name} timed out after {timeout:.0f} s")
        if proc.returncode != 0:
            raise StageError(f"decoding {Path(path).name} failed: {_stderr_tail(proc)}")
    finally:
        watchdog.cancel()
        if proc.poll() is None:  # the caller stopped early
            proc.kill()
            proc.wait()
        proc.stdout.close()
        proc.stderr.close()


class FrameWriter:
    """Encode RGB frames (H, W, 3) to a video file at `fps` through an ffmpeg pipe."""

    def __init__(self, path: str | Path, width: int, height: int, fps: float = FPS,
                 codec_args: Sequence[str] = ENCODE_ARGS, timeout: float = PIPE_TIMEOUT):
        self.path, self.size = Path(path), (height, width, 3)
        pad = []
        if "yuv420p" in codec_args and (width % 2 or height % 2):
            pad = ["-vf", "pad=ceil(iw/2)*2:ceil(ih/2)*2"]  # 4:2:0 needs even sizes
        args = [*FFMPEG, "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{width}x{height}",
                "-r", str(fps), "-i", "-", *pad, *codec_args, "-an", str(self.path)]
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._proc = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                      stderr=subprocess.PIPE)
        self._watchdog = _Watchdog(self._proc, timeout)
        self._timeout = timeout
        self.frames = 0

    def write(self, frame: np.ndarray) -> None:
        if frame.shape != self.size or frame.dtype != np.uint8:
            raise StageError(f"frame {frame.shape} {frame.dtype} does not fit a {self.size} uint8 video")
        try:
            self._proc.stdin.write(np.ascontiguousarray(frame).tobytes())
        except BrokenPipeError:
            self._proc.wait()
            raise StageError(f"encoding {self.path.name} failed: {_stderr_tail(self._proc)}") from None
        self.frames += 1

    def close(self) -> Path:
        """Finish the file; raise `StageError` if ffmpeg failed."""
        try:
            self._proc.stdin.close()
        except BrokenPipeError:
            pass
        self._proc.wait()
        self._watchdog.cancel()
        if self._watchdog.fired:
            raise StageError(f"encoding {self.path.name} timed out after {self._timeout:.0f} s")
        if self._proc.returncode != 0:
            raise StageError(f"encoding {self.path.name} failed: {_stderr_tail(self._proc)}")
        self._proc.stderr.close()
        return self.path

    def abort(self) -> None:
        """Stop encoding and remove the partial file."""
        self._watchdog.cancel()
        if self._proc.poll() is None:
            self._proc.kill()
        self._proc.wait()
        for f in (self._proc.stdin, self._proc.stderr):
            try:
                f.close()
            except BrokenPipeError:
                pass
        self.path.unlink(missing_ok=True)

    def __enter__(self) -> FrameWriter:
        return self

    def __exit__(self, exc_type, *exc) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


_DONE = object()


def prefetch(items: Iterator, depth: int) -> Iterator:
    """Yield what `items` yields, produced ahead by a thread (up to `depth` items), so decoding
    overlaps the caller's work. Errors reach the caller; stopping early stops the producer."""
    queue: Queue = Queue(maxsize=max(depth, 1))
    stop = threading.Event()

    def produce() -> None:
        try:
            for item in items:
                while not stop.is_set():
                    try:
                        queue.put(item, timeout=0.1)
                        break
                    except Full:
                        continue
                if stop.is_set():
                    break
            result = _DONE
        except BaseException as exc:  # handed to the consumer
            result = exc
        finally:
            close = getattr(items, "close", None)
            if close is not None:
                close()
        while not stop.is_set():
            try:
                queue.put(result, timeout=0.1)
                return
            except Full:
                continue

    thread = threading.Thread(target=produce, daemon=True)
    thread.start()
    try:
        while True:
            item = queue.get()
            if item is _DONE:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        thread.join()


class BackgroundWriter:
    """A FrameWriter fed by a thread: `write` queues frames (up to `depth`) and returns, so
    encoding overlaps the caller's work. `close` finishes and raises what the encoder raised."""

    def __init__(self, writer: FrameWriter, depth: int = 32):
        self.writer = writer
        self._queue: Queue = Queue(maxsize=depth)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            frame = self._queue.get()
            if frame is _DONE:
                return
            if self._error is None:
                try:
                    self.writer.write(frame)
                except BaseException as exc:  # reported by write/close
                    self._error = exc

    def write(self, frame: np.ndarray) -> None:
        if self._error is not None:
            raise self._error
        self._queue.put(frame)

    def close(self) -> Path:
        self._queue.put(_DONE)
        self._thread.join()
        if self._error is not None:
            self.writer.abort()
            raise self._error
        return self.writer.close()

    def abort(self) -> None:
        self._error = self._error or StageError(f"encoding {self.writer.path.name} aborted")
        self.writer.abort()  # kills ffmpeg first, so a write blocked on its pipe returns
        if self._thread.is_alive():
            self._queue.put(_DONE)
            self._thread.join()
