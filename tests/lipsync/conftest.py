"""Shared fixtures for the lip-sync tests: a tiny random-weight whisper (its checkpoint and the
tiny LatentSync models are built once per run in tests/conftest.py) and a short face clip."""

from __future__ import annotations

import subprocess
from pathlib import Path

import cv2
import numpy as np
import pytest
import skimage.data
import whisper
from whisper.model import Whisper

CLIP_SIZE = 256  # pixels, square
CLIP_FRAMES = 50  # 2 s at 25 fps
BLACK_FRAMES = range(20, 24)  # no face here: must pass through unchanged


@pytest.fixture(scope="session")
def tiny_whisper(tiny_whisper_path) -> Whisper:
    return whisper.load_model(str(tiny_whisper_path), device="cpu")


def astronaut_frames(n: int = CLIP_FRAMES, size: int = CLIP_SIZE) -> np.ndarray:
    """(n, size, size, 3) uint8: the astronaut's head drifting gently, black at BLACK_FRAMES."""
    photo = skimage.data.astronaut()[:300, 70:370]  # head and shoulders
    base = cv2.resize(photo, (size + 24, size + 24), interpolation=cv2.INTER_AREA)
    frames = np.zeros((n, size, size, 3), np.uint8)
    for i in range(n):
        dx = int(round(12 + 8 * np.sin(2 * np.pi * i / n)))
        dy = int(round(12 + 6 * np.cos(2 * np.pi * i / n)))
        if i not in BLACK_FRAMES:
            frames[i] = base[dy: dy + size, dx: dx + size]
    return frames


def encode_frames(frames: np.ndarray, path: Path, fps: int = 25) -> Path:
    """Write frames losslessly (FFV1 in Matroska) with ffmpeg."""
    _, h, w, _ = frames.shape
    subprocess.run(["ffmpeg", "-hide_banner", "-loglevel", "error", "-y", "-f", "rawvideo",
                    "-pix_fmt", "rgb24", "-s", f"{w}x{h}", "-r", str(fps), "-i", "-",
                    "-c:v", "ffv1", str(path)], input=frames.tobytes(), check=True, timeout=60)
    return path


def decode_frames(path: Path) -> np.ndarray:
    """All frames of a video as (n, h, w, 3) uint8, read with ffprobe + ffmpeg."""
    size = subprocess.run(["ffprobe", "-v", "error", "-select_streams", "v:0", "-show_entries",
                           "stream=width,height", "-of", "csv=p=0", str(path)],
                          capture_output=True, text=True, check=True, timeout=60).stdout
    w, h = (int(v) for v in size.strip().split(",")[:2])
    raw = subprocess.run(["ffmpeg", "-v", "error", "-i", str(path), "-f", "rawvideo",
                          "-pix_fmt", "rgb24", "-"], capture_output=True, check=True, timeout=60).stdout
    return np.frombuffer(raw, np.uint8).reshape(-1, h, w, 3)


@pytest.fixture(scope="session")
def astronaut_clip(tmp_path_factory) -> tuple[Path, np.ndarray]:
    """A 2 s, 25 fps, 256x256 lossless clip of the astronaut, with 4 black frames; and its frames."""
    frames = astronaut_frames()
    return encode_frames(frames, tmp_path_factory.mktemp("clip") / "astronaut.mkv"), frames

