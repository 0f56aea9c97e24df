"""Where polydub keeps things. Every location can be set by an environment variable."""

from __future__ import annotations

import os
from pathlib import Path


def home() -> Path:
    """State shared by runs: the default catalog, the local Prefect server's state."""
    return Path(os.environ.get("DUB_HOME", Path.home() / ".polydub")).expanduser()


def models_dir() -> Path:
    """Model weights (`dub models pull` writes here)."""
    return Path(os.environ.get("DUB_MODELS_DIR", home() / "models")).expanduser()


def cache_dir() -> Path:
    """Content-addressed stage outputs, shared by every job on this machine."""
    return Path(os.environ.get("DUB_CACHE_DIR", home() / "cache")).expanduser()


def database_url() -> str:
    """The catalog: a SQLite file by default, any SQLAlchemy URL by `DUB_DATABASE_URL`."""
    url = os.environ.get("DUB_DATABASE_URL")
    return url or f"sqlite:///{home() / 'catalog.db'}"


def asr_vad() -> bool:
    """Trim recognised lines to speech with Silero VAD (`DUB_ASR_VAD=off` keeps Whisper's times)."""
    value = os.environ.get("DUB_ASR_VAD", "on").strip().lower()
    if value not in ("on", "off"):
        from polydub.errors import InputError

        raise InputError(f"DUB_ASR_VAD must be on or off, not {value!r}")
    return value == "on"
