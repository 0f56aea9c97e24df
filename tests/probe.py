"""What ffprobe says of a file: the user's own way of checking a deliverable."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path


def ffprobe(path: Path) -> dict:
    """Format and streams of `path`, as ffprobe reports them."""
    out = subprocess.run(["ffprobe", "-v", "error", "-print_format", "json", "-show_format", "-show_streams",
                          str(path)], capture_output=True, text=True, timeout=60, check=True)
    return json.loads(out.stdout)


def ffprobe_samples(path: Path) -> int:
    """Length of the first audio stream in samples (its duration_ts)."""
    audio = [s for s in ffprobe(path)["streams"] if s["codec_type"] == "audio"]
    return int(audio[0]["duration_ts"])
