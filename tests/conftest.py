"""Test-wide settings: every test runs with its own polydub home, cache and Prefect home.

Environment variables are set at import, before anything imports Prefect (which reads
its settings at import time).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import tempfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "examples" / "talking_head.mp4"
# `python -m polydub.cli` in a subprocess runs this checkout's code from any folder, not
# whatever copy the environment installed.
os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))

_ROOT = Path(tempfile.mkdtemp(prefix="polydub-tests-"))
os.environ["DUB_HOME"] = str(_ROOT / "home")
os.environ["DUB_CACHE_DIR"] = str(_ROOT / "cache")
os.environ["DUB_MODELS_DIR"] = str(_ROOT / "models")
os.environ["PREFECT_HOME"] = str(_ROOT / "prefect")
os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
os.environ["PREFECT_LOGGING_LEVEL"] = "WARNING"
# Several test processes share the cores (./dev runs one more than there are): OpenMP's
# threads must sleep when they wait, not spin, or one process's torch starves another's
# (a 1-second synthesis took 37 s). Set before anything loads torch; subprocesses inherit it.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ["DUB_GPU_LIMIT"] = "0"
os.environ.pop("PREFECT_API_URL", None)
os.environ.pop("DUB_DATABASE_URL", None)
# Parallel test workers inherit COLUMNS=80, which rich would fix as the width of `dub`'s
# consoles at import; tests that read a table pass the width they need per call.
os.environ.pop("COLUMNS", None)



def scratch_dir(prefix: str) -> str:
    """A new folder under this session's root, removed with it at the end."""
    return tempfile.mkdtemp(prefix=prefix, dir=_ROOT)


def dub_two_speaker_ad(folder: Path, models: Path, first_line_es: str) -> tuple[Path, dict, dict]:
    """`dub ad.mp4 --langs es --commercial` (voice auto) in `folder`, with only the weights in
    `models`, of an ad where Ana and Ben speak (see `two_speaker_ad`): the video, the job
    report and the catalog's row for its Spanish synthesize stage."""
    import json

    from tests import inprocess

    video, db = two_speaker_ad(folder, first_line_es), f"sqlite:///{folder / 'c.db'}"
    result = inprocess.dub(video, "--langs", "es", "--commercial", "--out", folder / "out", "--db", db, "--json",
                           env={"DUB_MODELS_DIR": str(models)})
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    shown = json.loads(inprocess.dub("show", str(report["job"]), "--db", db, "--json").stdout)
    return video, report, next(s for s in shown["stages"] if s["stage"] == "synthesize")


def two_speaker_ad(folder: Path, first_line_es: str) -> Path:
    """The example as `folder/ad.mp4` with a script of two speakers, Ana and Ben, and its
    approved Spanish translation whose first line is `first_line_es`."""
    import shutil

    video = folder / "ad.mp4"
    shutil.copy(EXAMPLE, video)
    cues = ("00:00:00.500 --> 00:00:02.800", "00:00:03.200 --> 00:00:05.600", "00:00:06.000 --> 00:00:09.200")
    for lang, lines in (("en", ("Welcome to our product launch.", "Hello.", "Try it today.")),
                        ("es", (first_line_es, "Hola.", "Pruébelo hoy."))):
        body = "".join(f"{cue}\n<v {who}>{text}\n\n" for cue, who, text in zip(cues, ("Ana", "Ben", "Ana"), lines))
        (folder / f"ad.{lang}.vtt").write_text("WEBVTT\n\n" + body)
    return video


def _postgres_answers() -> bool:
    """Something listens on the local PostgreSQL port (whether or not Python can talk to it)."""
    try:
        socket.create_connection(("127.0.0.1", 5432), timeout=2).close()
    except OSError:
        return False
    return True


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """DUB_REQUIRE_POSTGRES=1 (CI sets it): a `postgres` test that skips while PostgreSQL
    answers on 127.0.0.1:5432 fails instead (say, a database driver that did not install)."""
    report = (yield).get_result()
    if (report.skipped and not hasattr(report, "wasxfail") and item.get_closest_marker("postgres")
            and os.environ.get("DUB_REQUIRE_POSTGRES") == "1" and _postgres_answers()):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        report.outcome = "failed"
        report.longrepr = (f"skipped although PostgreSQL answers on 127.0.0.1:5432 "
                           f"(DUB_REQUIRE_POSTGRES=1): {reason}")


# The longest modules first, in the order of their measured time (`--durations=0`, summed
# per module, 2026-12-06), so that parallel test processes (`./dev test` runs one per core
# and one more) end together: a long module picked up last would run alone at the end.
LONGEST_FIRST = ("test_prefect_server.py", "test_object_storage.py", "test_dub_flow.py", "test_faults.py",
                 "test_crash_states.py", "test_catalog_flow.py", "test_gpu_handoff.py", "test_terms.py",
                 "test_speakers.py", "test_review.py", "test_dub_lipsync.py", "test_qa.py", "test_dub_backends.py",
                 "test_stage.py", "test_chatterbox.py", "test_asr.py", "test_kokoro.py", "test_manifest.py",
                 "test_audio_flow.py", "test_secrets.py")


def pytest_collection_modifyitems(items):
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: modules stay whole


def _stop_kept_servers(folders) -> None:
    """Stop every kept Prefect server that a `dub` in this session started (DUB_HOME/prefect/
    server.json under these folders): each holds a CPU share until stopped."""
    import json
    import signal

    for folder in folders:
        for state in Path(folder).rglob("prefect/server.json"):
            try:
                os.killpg(json.loads(state.read_text())["pid"], signal.SIGTERM)
            except (OSError, ValueError, KeyError, TypeError):
                pass


def pytest_sessionfinish(session, exitstatus):
    """Leave nothing behind: kept servers, the session's homes, caches and Prefect database."""
    factory = getattr(session.config, "_tmp_path_factory", None)
    _stop_kept_servers([_ROOT, *([factory.getbasetemp()] if factory else [])])
    shutil.rmtree(_ROOT, ignore_errors=True)




# The session server's background services that no test of it reads (schedules, late runs,
# automations, task-run and event records): each costs CPU for every dub the tests run.
# tests/prefect_stack.py's server, which the UI test reads, keeps them all.
HARNESS_SERVICES_OFF = {f"PREFECT_SERVER_SERVICES_{name}_ENABLED": "false" for name in (
    "SCHEDULER", "LATE_RUNS", "FOREMAN", "PAUSE_EXPIRATIONS", "REPOSSESSOR", "CLEANUP_RECONCILER",
    "CANCELLATION_CLEANUP", "TRIGGERS", "DB_VACUUM", "EVENT_LOGGER", "TASK_RUN_RECORDER", "EVENT_PERSISTER")}


@pytest.fixture(scope="session")
def prefect_api() -> str:
    """A Prefect server for the whole session: Prefect's test harness, started on a copy of
    an already migrated database (5 s instead of 15)."""
    from unittest import mock

    from prefect.settings import PREFECT_API_URL
    from prefect.testing.utilities import prefect_test_harness

    from tests.prefect_stack import seed_database

    def seeded_mkdtemp() -> str:  # the harness's database folder, holding a migrated database
        folder = Path(tempfile.mkdtemp(prefix="polydub-prefect-harness-"))  # the harness removes it at exit
        seed_database(folder)
        shutil.move(folder / "prefect.db", folder / "prefect-test.db")
        return str(folder)

    with contextlib.ExitStack() as harness:
        with mock.patch.dict(os.environ, HARNESS_SERVICES_OFF):  # the server process's environment only
            harness.enter_context(mock.patch("prefect.testing.utilities.mkdtemp", seeded_mkdtemp))
            harness.enter_context(prefect_test_harness(server_startup_timeout=180))
        url = PREFECT_API_URL.value()
        os.environ["PREFECT_API_URL"] = url  # for `dub` subprocesses: the kept-server path
        yield url
        os.environ.pop("PREFECT_API_URL", None)


@pytest.fixture(scope="session")
def example() -> Path:
    return EXAMPLE


# Tiny random-weight models, built once per test run and shared read-only (a test that
# damages one works on its own copy).

@pytest.fixture(scope="session")
def tiny_whisper_path(tmp_path_factory) -> Path:
    """A whisper checkpoint with random weights, saved as openai-whisper saves its own."""
    from tests.tiny_models import build_whisper

    return build_whisper(tmp_path_factory.mktemp("whisper") / "tiny.pt")


@pytest.fixture(scope="session")
def tiny_models_dir(tmp_path_factory) -> Path:
    """A models directory laid out as `dub models pull` writes it, holding tiny random
    LatentSync weights."""
    from tests.tiny_models import build_lipsync_models

    return build_lipsync_models(tmp_path_factory.mktemp("models"))


@pytest.fixture(scope="session")
def tiny_marian(tmp_path_factory) -> Path:
    from tests.tiny_models import build_tiny_marian

    return build_tiny_marian(tmp_path_factory.mktemp("marian"))


@pytest.fixture(scope="session")
def tiny_vits(tmp_path_factory) -> Path:
    from tests.tiny_models import build_vits

    return build_vits(tmp_path_factory.mktemp("vits"))

