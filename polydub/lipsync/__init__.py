"""Lip-sync: a LatentSync 1.5/1.6-compatible implementation.

`unet` (the model), `pipeline` (the denoising loop), `audio` (whisper features),
`face` (tracking, alignment, paste-back), `stage` (a whole video, all languages).
Importing this package is cheap; the heavy modules load on use.
"""

from __future__ import annotations

from pathlib import Path


def lipsync_decision(mode: str, has_video: bool, models_dir: Path | None = None) -> tuple[bool, str]:
    """Whether the lip-sync stage runs for a job, and why (or why not)."""
    from polydub import config

    if mode == "off":
        return False, "off (--lipsync off)"
    if not has_video:
        return False, "audio-only input"
    from polydub.lipsync.weights import default_version, face_choice, missing_weights

    face_choice()  # a bad DUB_LIPSYNC_FACE is bad usage, found before any work
    missing = missing_weights(models_dir or config.models_dir(), default_version())
    if missing:  # decided without importing torch (seconds) when the weights are absent
        return False, "weights missing: " + ", ".join(missing)
    try:
        from polydub.lipsync.stage import can_run
    except ImportError as exc:  # the stage's own dependencies are missing
        return False, f"lip-sync unavailable ({exc})"
    return can_run(models_dir or config.models_dir())
