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


def translate_timeout() -> float:
    """Seconds one request to a translation service may take: DUB_TRANSLATE_TIMEOUT (default 60)."""
    return float(os.environ.get("DUB_TRANSLATE_TIMEOUT", 60))


HEARTBEAT_INTERVAL_S = 15.0  # how often a running job says it is alive
HEARTBEAT_TIMEOUT_S = 120.0  # silence after which a job on another host counts as interrupted


def heartbeat_timeout() -> float:
    """Seconds without a heartbeat before `dub list` / `dub show` call a job of another
    host interrupted: DUB_HEARTBEAT_TIMEOUT (default 120; a shared PostgreSQL catalog)."""
    return float(os.environ.get("DUB_HEARTBEAT_TIMEOUT", HEARTBEAT_TIMEOUT_S))
