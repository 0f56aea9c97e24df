"""A local Prefect server that `dub` starts once and keeps, so each run skips Prefect's
temporary-server start-up (11-20 s per process) and costs about a second and a half.

Order of preference: the API Prefect's own settings name (`PREFECT_API_URL` in the
environment or the active profile: a team's server), which must answer; else the server
this machine's `dub` started earlier, if it still answers; else start one now. Set
`DUB_PREFECT_SERVER=ephemeral` to use Prefect's temporary per-process server instead.
"""

from __future__ import annotations

import fcntl
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from polydub import cache, config
from polydub.errors import DubError

START_TIMEOUT = 120  # seconds; a first start creates Prefect's database
HEALTH_TIMEOUT = 2


def _state_dir(write: bool = True) -> Path:
    """The kept server's folder under DUB_HOME; for `write`, made and found writable (one
    line, not a traceback, on a read-only DUB_HOME)."""
    path = config.home() / "prefect"
    if write:
        cache.check_writable(path, "the local Prefect server's folder (DUB_HOME)")
    return path


def _read(state: Path) -> dict | None:
    """What server.json says, or None when it is missing, unreadable or not ours."""
    try:
        info = json.loads(state.read_text())
    except (OSError, ValueError):
        return None
    return info if isinstance(info, dict) and isinstance(info.get("url"), str) else None


def healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=HEALTH_TIMEOUT) as resp:
            return resp.status == 200
    except (OSError, ValueError):
        return False


def check_access(url: str) -> None:
    """A server protected by Prefect's API authentication (`PREFECT_SERVER_API_AUTH_STRING`)
    answers its health check to anyone and refuses everything else to a client without its
    auth string: ask it something real, and say so in one line before any work."""
    import base64
    import urllib.error

    auth, where = config.prefect_setting("PREFECT_API_AUTH_STRING")
    headers = {"Content-Type": "application/json"}
    if auth:
        headers["Authorization"] = "Basic " + base64.b64encode(auth.encode("utf-8")).decode("ascii")
    request = urllib.request.Request(f"{url}/flows/filter", data=b'{"limit": 1}', headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=HEALTH_TIMEOUT * 5):
            return
    except urllib.error.HTTPError as exc:
        if exc.code not in (401, 403):
            return  # answered: access is not what failed
    except (OSError, ValueError):
        return  # it answered its health check a moment ago; Prefect's own client says what fails next
    if auth:
        raise DubError(f"the Prefect API at {url} refuses the auth string in {where.removeprefix('the ')} "
                       "(it must equal the server's PREFECT_SERVER_API_AUTH_STRING)")
    raise DubError(f"the Prefect API at {url} requires API authentication: set PREFECT_API_AUTH_STRING "
                   "(environment or Prefect profile) to the server's PREFECT_SERVER_API_AUTH_STRING")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def status() -> dict | None:
    """The kept server's {'url', 'pid'} if it answers, else None."""
    info = _read(_state_dir(write=False) / "server.json")
    return info if info and healthy(info["url"]) else None


def server_environment() -> dict[str, str]:
    """This process's environment less what the kept server must not hold: it outlives this
    `dub` and serves every later one, so none of polydub's settings (a one-off `--db` URL with
    its password travels as DUB_DATABASE_URL), no translator key and no other secret."""
    from polydub.redact import SECRET_ENV

    return {name: value for name, value in os.environ.items()
            if not name.startswith("DUB_") and not SECRET_ENV.search(name) and name != "PREFECT_API_URL"}


def start() -> dict:
    """Start (or find) the kept server; return {'url', 'pid', 'started': bool}."""
    folder = _state_dir()
    with open(folder / "server.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # two `dub` runs at once start one server
        info = status()
        if info:
            return {**info, "started": False}
        port = _free_port()
        url = f"http://127.0.0.1:{port}/api"
        env = {**server_environment(), "PREFECT_HOME": str(folder), "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
               "PREFECT_SERVER_API_HOST": "127.0.0.1", "PREFECT_SERVER_API_PORT": str(port)}
        with open(folder / "server.log", "ab") as log:
            proc = subprocess.Popen(
                [sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1", "--port", str(port)],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
                start_new_session=True)  # outlives this `dub`
        deadline = time.monotonic() + START_TIMEOUT
        while not healthy(url):
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                raise DubError(f"the local Prefect server did not start; see {folder / 'server.log'}")
            time.sleep(0.5)
        info = {"url": url, "pid": proc.pid}
        (folder / "server.json").write_text(json.dumps(info))
        return {**info, "started": True}


def stop() -> bool:
    """Stop the kept server; True if one was running. Stopped first, then forgotten: a
    server.json that cannot be removed (a read-only DUB_HOME) leaves no server behind."""
    state = _state_dir(write=False) / "server.json"
    info = _read(state)
    if info is None:
        return False
    try:
        os.killpg(int(info["pid"]), signal.SIGTERM)
        stopped = True
    except (ProcessLookupError, PermissionError, KeyError, TypeError, ValueError):
        stopped = False
    try:
        state.unlink(missing_ok=True)
    except OSError as exc:
        done = f"stopped the local Prefect server (pid {info['pid']}), but" if stopped else "no server was running;"
        raise DubError(f"{done} cannot remove {state} ({cache.os_reason(exc)})") from None
    return stopped


def ensure_api() -> str:
    """Make this process talk to a Prefect API; return how ('external', 'kept', 'ephemeral').

    Must run before `prefect` is imported: Prefect reads PREFECT_API_URL at import.
    """
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    url, where = config.prefect_api_url()
    if url:
        if not healthy(url.rstrip("/")):
            raise DubError(f"the Prefect API at {url} (set by {where}) does not answer; "
                           f"start that server, or change the setting")
        check_access(url.rstrip("/"))
        return "external"
    if config.prefect_server_mode() == "ephemeral":
        return "ephemeral"
    info = start()
    os.environ["PREFECT_API_URL"] = info["url"]
    return "started" if info["started"] else "kept"


def flow_run_url(flow_run_id: str) -> str | None:
    """The Prefect UI address of a flow run, from PREFECT_UI_URL or the API address
    (a local server serves its UI beside its API)."""
    ui = os.environ.get("PREFECT_UI_URL")
    if not ui:
        api, _ = config.prefect_api_url()
        if not api:
            info = status()
            api = info["url"] if info else None
        if not api or "api.prefect.cloud" in api:
            return None
        ui = api.rstrip("/").removesuffix("/api")
    return f"{ui.rstrip('/')}/runs/flow-run/{flow_run_id}"


def run_settings() -> None:
    """How this process's flow runs (and a worker's) talk to Prefect. Before Prefect is imported.

    - Heartbeats every DUB_RUN_HEARTBEAT seconds: the server's automation (`dub worker`)
      marks Crashed a run silent for DUB_RUN_SILENT.
    - Flow results (job reports) under DUB_HOME in an owner-only folder, not in Prefect's
      world-readable default.
    """
    os.environ["PREFECT_FLOWS_HEARTBEAT_FREQUENCY"] = str(config.run_heartbeat_s())
    if os.environ.get("PREFECT_LOCAL_STORAGE_PATH"):
        return
    folder = config.home() / "results"
    folder.mkdir(parents=True, exist_ok=True)
    folder.chmod(0o700)
    os.environ["PREFECT_LOCAL_STORAGE_PATH"] = str(folder)
