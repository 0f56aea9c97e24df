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


def lipsync_compile() -> bool:
    """`DUB_LIPSYNC_COMPILE=1`: torch.compile the lip-sync UNet and VAE (worth it on a GPU for
    long videos; the first chunk of each shape pays the compilation)."""
    return os.environ.get("DUB_LIPSYNC_COMPILE", "0").lower() not in ("", "0", "false", "no")


def lipsync_max_batch() -> int | None:
    """`DUB_LIPSYNC_BATCH=N`: at most N UNet batch items per call (2 per language with guidance);
    unset: all languages in one call, halved when the device runs out of memory."""
    value = os.environ.get("DUB_LIPSYNC_BATCH")
    return int(value) if value else None


def lipsync_chunks() -> int:
    """`DUB_LIPSYNC_CHUNKS=N`: 16-frame chunks denoised together in one UNet batch; 0 (the
    default) picks enough for about three languages' worth of batch items."""
    return int(os.environ.get("DUB_LIPSYNC_CHUNKS", "0") or 0)
