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


def storage_location() -> str:
    """DUB_STORAGE_URL: where the stage cache and deliverables live. A local folder (the
    default: DUB_HOME) or an object store URL (`s3://bucket/prefix`, `gs://`, `az://`);
    `file:///x` is the folder /x."""
    text = os.environ.get("DUB_STORAGE_URL", "").strip()
    if text.lower().startswith("file://"):
        text = text[len("file://"):]
    return text or str(home())


def _storage_folder() -> Path | None:
    """The local folder DUB_STORAGE_URL names, or None for an object store."""
    location = storage_location()
    head, sep, _ = location.partition("://")
    return None if sep and head.isalnum() else Path(location).expanduser()


def cache_dir() -> Path:
    """Content-addressed stage outputs: DUB_CACHE_DIR, else STORAGE/cache. With storage in a
    bucket, the cache is the bucket's and this folder holds only running jobs' scratch."""
    if os.environ.get("DUB_CACHE_DIR"):
        return Path(os.environ["DUB_CACHE_DIR"]).expanduser()
    return (_storage_folder() or home()) / "cache"


def database_url() -> str:
    """The catalog: a SQLite file by default, any SQLAlchemy URL by `DUB_DATABASE_URL`."""
    url = os.environ.get("DUB_DATABASE_URL")
    return url or f"sqlite:///{home() / 'catalog.db'}"


def use_database(url: str | None) -> None:
    """`--db URL`: this process and the flows it runs use that catalog (set in the
    environment: the catalog is configuration, never a flow parameter)."""
    if url:
        os.environ["DUB_DATABASE_URL"] = url


def outputs_dir() -> str:
    """Where deployment runs deliver (one folder per job); a form's `out` is relative to it:
    DUB_OUTPUTS_DIR, else STORAGE/outputs (a folder, or a URL in the bucket)."""
    if os.environ.get("DUB_OUTPUTS_DIR"):
        text = os.environ["DUB_OUTPUTS_DIR"].strip()
        return text if "://" in text and not text.lower().startswith("file://") else \
            str(Path(text.removeprefix("file://")).expanduser())
    folder = _storage_folder()
    return str(folder / "outputs") if folder else storage_location().rstrip("/") + "/outputs"


USER_UMASK_ENV = "DUB_USER_UMASK"  # the umask `dub` was started with (it then works under 077)


def user_umask() -> int:
    """The umask of the person who started `dub` (DUB_USER_UMASK, which `dub` sets before
    it narrows its own to 077 and its worker processes inherit), else this process's."""
    text = os.environ.get(USER_UMASK_ENV, "").strip()
    try:
        if text:
            return int(text, 8) & 0o777
        with open("/proc/self/status", encoding="ascii") as status:  # read without changing it
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    return 0o022


def commercial() -> bool:
    """`DUB_COMMERCIAL=1`: jobs that do not say `--commercial` themselves use only models
    whose licence allows commercial use."""
    return os.environ.get("DUB_COMMERCIAL", "").strip().lower() in ("1", "true", "yes", "on")


def prefect_setting(name: str) -> tuple[str | None, str]:
    """A Prefect setting this process is given, and where: the environment variable `name`,
    else the active Prefect profile (as `prefect config set NAME=...` writes it). (None, "")
    when neither says.

    Read without importing Prefect, which freezes its settings at import."""
    value = os.environ.get(name)
    if value:
        return value, f"the {name} environment variable"
    import tomllib

    prefect_home = Path(os.environ.get("PREFECT_HOME", Path.home() / ".prefect")).expanduser()
    profiles_path = Path(os.environ.get("PREFECT_PROFILES_PATH", prefect_home / "profiles.toml")).expanduser()
    try:
        profiles = tomllib.loads(profiles_path.read_text())
    except (OSError, ValueError):
        return None, ""
    profile = os.environ.get("PREFECT_PROFILE") or profiles.get("active") or "ephemeral"
    value = profiles.get("profiles", {}).get(profile, {}).get(name)
    return (str(value), f"Prefect profile {profile!r} ({profiles_path})") if value else (None, "")


def prefect_api_url() -> tuple[str | None, str]:
    """The Prefect API this process is told to use, and where that was said."""
    return prefect_setting("PREFECT_API_URL")


MAX_DOWNLOAD_MB = 2048.0  # a feature film in high quality; an ad is a few tens of MB


def max_download_bytes() -> int:
    """Largest file a manifest may name by URL: DUB_MAX_DOWNLOAD_MB (default 2048)."""
    text = os.environ.get("DUB_MAX_DOWNLOAD_MB", "").strip()
    try:
        mb = float(text) if text else MAX_DOWNLOAD_MB
    except ValueError:
        mb = float("nan")
    if not 0 < mb < float("inf"):  # NaN fails both
        from polydub.errors import InputError

        raise InputError(f"DUB_MAX_DOWNLOAD_MB must be a positive number of megabytes, not {text!r}")
    return int(mb * 1024 * 1024)


def translate_timeout() -> float:
    """Seconds one request to a translation service may take: DUB_TRANSLATE_TIMEOUT (default 60)."""
    return float(os.environ.get("DUB_TRANSLATE_TIMEOUT", 60))


HEARTBEAT_INTERVAL_S = 15.0  # how often a running job says it is alive
HEARTBEAT_TIMEOUT_S = 120.0  # silence after which a job on another host counts as interrupted


def heartbeat_timeout() -> float:
    """Seconds without a heartbeat before `dub list` / `dub show` call a job of another
    host interrupted: DUB_HEARTBEAT_TIMEOUT (default 120; a shared PostgreSQL catalog)."""
    return float(os.environ.get("DUB_HEARTBEAT_TIMEOUT", HEARTBEAT_TIMEOUT_S))


RUN_HEARTBEAT_S = 60  # a flow run tells Prefect it is alive this often (Prefect's least: 30)
RUN_SILENT_S = 300  # the server marks Crashed a run silent this long (its process is gone)
WORKER_DRAIN_S = 60.0  # a stopping worker lets its runs finish this long, then cancels them


def _seconds(name: str, default: float, least: float) -> float:
    text = os.environ.get(name, "").strip()
    try:
        value = float(text) if text else default
    except ValueError:
        value = float("nan")
    if not least <= value < float("inf"):  # NaN fails both
        from polydub.errors import InputError

        raise InputError(f"{name} must be a number of seconds, at least {least:g}, not {text!r}")
    return value


def run_heartbeat_s() -> int:
    """Seconds between a flow run's heartbeats to Prefect: DUB_RUN_HEARTBEAT (default 60, at least 30)."""
    return int(_seconds("DUB_RUN_HEARTBEAT", RUN_HEARTBEAT_S, 30))


def run_silent_s() -> int:
    """Seconds without a heartbeat after which the Prefect server marks a run Crashed:
    DUB_RUN_SILENT (default 300; at least a heartbeat and 15 s more, so that a heartbeat a
    little late never crashes a live run)."""
    least = run_heartbeat_s() + 15
    return int(_seconds("DUB_RUN_SILENT", max(RUN_SILENT_S, least), least))


def worker_drain_s() -> float:
    """Seconds a stopping `dub worker` (SIGTERM, Ctrl-C) lets its runs finish before it
    cancels them: DUB_WORKER_DRAIN (default 60; keep it under the service manager's stop
    timeout: systemd's TimeoutStopSec, docker stop -t)."""
    return _seconds("DUB_WORKER_DRAIN", WORKER_DRAIN_S, 0)


def diarizer() -> str:
    """Who-speaks-when for transcripts without speaker labels (`DUB_DIARIZER`): `auto` (a
    pyannote pipeline when pyannote.audio and `MODELS/pyannote-diarization/` are both here),
    `off`, `pyannote[:DIR]`, or `MODULE:FACTORY` for a backend of your own."""
    return os.environ.get("DUB_DIARIZER", "auto").strip() or "auto"


def lipsync_compile() -> bool:
    """`DUB_LIPSYNC_COMPILE=1`: torch.compile the lip-sync UNet and VAE (worth it on a GPU for
    long videos; the first chunk of each shape pays the compilation)."""
    return os.environ.get("DUB_LIPSYNC_COMPILE", "0").lower() not in ("", "0", "false", "no")


def lipsync_cuda_graphs() -> bool:
    """`DUB_LIPSYNC_CUDA_GRAPHS=1`: replay the UNet's passes from CUDA graphs on a CUDA device
    (one launch instead of thousands per pass). Off until measured on a GPU
    (bench/gpu_session.sh compares both)."""
    return os.environ.get("DUB_LIPSYNC_CUDA_GRAPHS", "0").lower() not in ("", "0", "false", "no")


def lipsync_max_batch() -> int | None:
    """`DUB_LIPSYNC_BATCH=N`: at most N UNet batch items per call (2 per language with guidance);
    unset: all languages in one call, halved when the device runs out of memory."""
    value = os.environ.get("DUB_LIPSYNC_BATCH")
    return int(value) if value else None


def lipsync_chunks() -> int:
    """`DUB_LIPSYNC_CHUNKS=N`: 16-frame chunks denoised together in one UNet batch; 0 (the
    default) picks enough for about three languages' worth of batch items."""
    return int(os.environ.get("DUB_LIPSYNC_CHUNKS", "0") or 0)


# ----------------------------------------------------------------- lip-sync and the rest
# Read here so that every DUB_* variable has one place; checks live with their users.


def lipsync_version() -> str:
    """The LatentSync version the flow uses: DUB_LIPSYNC_VERSION, else 1.5 (256 px, ~8 GB)."""
    return os.environ.get("DUB_LIPSYNC_VERSION", "1.5")


def lipsync_device() -> str:
    """DUB_LIPSYNC_DEVICE if set (`cpu` runs the stage on the CPU, slowly), else cuda."""
    return os.environ.get("DUB_LIPSYNC_DEVICE") or "cuda"


def lipsync_face() -> str:
    """DUB_LIPSYNC_FACE: which face to sync when several are visible (checked by its user)."""
    return os.environ.get("DUB_LIPSYNC_FACE", "largest")


def lipsync_deep_cache() -> str:
    """DUB_LIPSYNC_DEEP_CACHE: run the full UNet every Nth step (0: every step)."""
    return os.environ.get("DUB_LIPSYNC_DEEP_CACHE", "0")


def lipsync_deployment() -> str | None:
    """DUB_LIPSYNC_DEPLOYMENT: the Prefect deployment (FLOW/NAME, e.g. `lipsync/lipsync-gpu`) a
    CPU worker hands lip-sync to; it needs DUB_STORAGE_URL in a bucket. Unset: in-process."""
    return os.environ.get("DUB_LIPSYNC_DEPLOYMENT", "").strip() or None


def lipsync_timeout_s() -> float:
    """DUB_LIPSYNC_TIMEOUT: seconds a CPU flow waits for the GPU deployment's run (default 3 h:
    queued behind other jobs' lip-sync, then a long video)."""
    return _seconds("DUB_LIPSYNC_TIMEOUT", 3 * 3600.0, 1)


def gpu_limit() -> bool:
    """DUB_GPU_LIMIT=0 turns off the machine's `polydub-gpu-...` Prefect concurrency limit."""
    return os.environ.get("DUB_GPU_LIMIT", "1") != "0"


def translate_retries(default: int) -> str:
    """DUB_TRANSLATE_RETRIES: attempts after the first, per batch sent to a translator."""
    return os.environ.get("DUB_TRANSLATE_RETRIES", str(default))


def prefect_server_mode() -> str:
    """DUB_PREFECT_SERVER: `keep` (one local server, kept) or `ephemeral` (Prefect's own)."""
    return os.environ.get("DUB_PREFECT_SERVER", "keep")


def asr_vad() -> bool:
    """Trim recognised lines to speech with Silero VAD (`DUB_ASR_VAD=off` keeps Whisper's times)."""
    value = os.environ.get("DUB_ASR_VAD", "on").strip().lower()
    if value not in ("on", "off"):
        from polydub.errors import InputError

        raise InputError(f"DUB_ASR_VAD must be on or off, not {value!r}")
    return value == "on"
