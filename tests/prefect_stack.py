"""A real Prefect setup as the README's "Running from the Prefect UI" makes it: a server
process on a free port, a profile pointing at it (no PREFECT_API_URL in the environment),
both work pools, `prefect deploy --all` from the project root and `dub worker`. Used by
the integration test and by bench/deployment.py."""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import tempfile
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Iterator

REPO = Path(__file__).resolve().parents[1]
START_TIMEOUT_S = 180
MIGRATE_TIMEOUT_S = 300


def migrated_database() -> Path:
    """A Prefect server database already at this Prefect's latest migration, made once per
    machine, user and Prefect version and shared by parallel test processes; copy it, never
    open it. Migrating a new database is two thirds of a server's start (10 of 15 s), paid
    here once instead of by every server the tests start."""
    import prefect

    template = Path(tempfile.gettempdir()) / f"polydub-tests-prefect-{prefect.__version__}-{os.getuid()}.db"
    with open(f"{template}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # the first test process migrates, the others wait
        if not template.exists():
            work = Path(tempfile.mkdtemp(prefix="polydub-prefect-migrate-"))
            try:
                env = {**os.environ, "PREFECT_HOME": str(work), "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
                       "PREFECT_SERVER_DATABASE_CONNECTION_URL": f"sqlite+aiosqlite:///{work / 'prefect.db'}"}
                subprocess.run([sys.executable, "-m", "prefect", "server", "database", "upgrade", "-y"], env=env,
                               check=True, capture_output=True, timeout=MIGRATE_TIMEOUT_S)
                os.replace(work / "prefect.db", template)  # whole or absent
            finally:
                shutil.rmtree(work, ignore_errors=True)
    return template


def seed_database(prefect_home: Path) -> None:
    """Give a Prefect home the migrated database, as a server that ran there before left it."""
    prefect_home.mkdir(parents=True, exist_ok=True)
    shutil.copy(migrated_database(), prefect_home / "prefect.db")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=2) as resp:
            return resp.status == 200
    except OSError:
        return False


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is not None:
        return
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)


@contextlib.contextmanager
def prefect_stack(root: Path, worker_env: dict[str, str] | None = None, workers: int = 1,
                  limit: int | None = None, auth: str | None = None) -> Iterator[dict]:
    """Yield {'api', 'auth', 'env', 'root', 'worker', 'workers'}; everything is stopped afterwards.
    `limit`: flow runs at once per worker (`dub worker --limit`; default: no limit, 0).
    `auth`: the server requires Prefect's API authentication with this string
    (PREFECT_SERVER_API_AUTH_STRING), which the clients' profile gives (PREFECT_API_AUTH_STRING)."""
    port = free_port()
    api = f"http://127.0.0.1:{port}/api"
    base = {k: v for k, v in os.environ.items() if k not in ("PREFECT_API_URL", "DUB_DATABASE_URL")}
    seed_database(root / "server-home")
    server_env = {**base, "PREFECT_HOME": str(root / "server-home"), "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
                  "PREFECT_UI_API_URL": api,  # the UI in a browser talks to this server
                  **({"PREFECT_SERVER_API_AUTH_STRING": auth} if auth else {})}
    server = subprocess.Popen([sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1",
                               "--port", str(port)], env=server_env, stdout=subprocess.DEVNULL,
                              stderr=open(root / "server.log", "wb"), start_new_session=True)
    procs = [server]
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while not healthy(api):
            if server.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError((root / "server.log").read_text()[-2000:])
            time.sleep(0.5)
        # Prefect's own way of pointing at a server: a profile, no PREFECT_API_URL in the environment.
        home = root / "client-home"
        home.mkdir(exist_ok=True)
        auth_line = f'PREFECT_API_AUTH_STRING = "{auth}"\n' if auth else ""
        (home / "profiles.toml").write_text(f'active = "team"\n[profiles.team]\nPREFECT_API_URL = "{api}"\n{auth_line}')
        env = {**base, "PREFECT_HOME": str(home), "DUB_HOME": str(root / "dub-home"),
               "DUB_OUTPUTS_DIR": str(root / "outputs"), "DUB_CACHE_DIR": str(root / "cache"),
               "DUB_DATABASE_URL": f"sqlite:///{root / 'catalog.db'}",
               "PREFECT_LOGGING_LEVEL": "INFO", **(worker_env or {})}  # INFO: a worker's default

        def prefect(*args: str) -> None:
            done = subprocess.run([sys.executable, "-m", "prefect", *args], env=env, cwd=REPO, capture_output=True,
                                  text=True, timeout=180)
            if done.returncode != 0:
                raise RuntimeError(f"prefect {' '.join(args)}: {done.stdout}{done.stderr}")

        prefect("work-pool", "create", "polydub-cpu", "--type", "process")
        prefect("work-pool", "create", "polydub-gpu", "--type", "process")
        prefect("deploy", "--all")
        started = []
        for i in range(workers):
            started.append(subprocess.Popen(
                [sys.executable, "-m", "polydub.cli", "worker", "--pool", "polydub-cpu",
                 "--limit", str(limit or 0)], env=env, cwd=root,
                stdout=open(root / f"worker{i or ''}.log", "wb"), stderr=subprocess.STDOUT, start_new_session=True))
        procs += started
        yield {"api": api, "auth": auth, "env": env, "root": root, "worker": started[0], "workers": started}
    finally:
        for proc in reversed(procs):
            _stop(proc)
