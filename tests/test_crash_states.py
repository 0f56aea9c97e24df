"""Jobs that stop without finishing: Ctrl-C, a killed process, a Prefect flow run left
RUNNING. The catalog, `dub list` / `dub show` and Prefect must all say 'interrupted' /
Crashed, never 'running' for good nor 'failed' with a signal number."""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from polydub.crash import CTRL_C_REASON
from tests import inprocess
from tests.conftest import EXAMPLE
from tests.held import start_held
from tests.prefect_stack import free_port, seed_database


def dub(*args: str) -> subprocess.CompletedProcess:
    return inprocess.dub(*args)  # reads of the catalog: the process is not what is tested here


def one_pass_job(folder: Path) -> list[str]:
    """The example with approved es/fr translations, and a stage cache of its own (every
    stage runs); the `dub` arguments to run it."""
    clip = folder / "job.mp4"
    shutil.copy(EXAMPLE, clip)
    for lang in ("en", "es", "fr"):
        shutil.copy(EXAMPLE.with_suffix(f".{lang}.srt"), folder / f"job.{lang}.srt")
    return [str(clip), "--langs", "es,fr", "--voice", "espeak", "--out", str(folder / "out"),
            "--db", f"sqlite:///{folder / 'c.db'}"]


@pytest.mark.slow
def test_ctrl_c_records_the_job_and_its_stages_as_interrupted(prefect_api, tmp_path):
    args = one_pass_job(tmp_path)
    db = args[-1]
    proc = start_held(args, "mix", tmp_path / "held", env={"DUB_CACHE_DIR": str(tmp_path / "cache")},
                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # caught mixing
    os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C in a terminal does: the whole group
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr
    assert stderr.strip().splitlines()[-1] == "dub: interrupted"
    assert "Traceback" not in stderr

    job = json.loads(dub("show", "1", "--db", db, "--json").stdout)
    assert (job["status"], job["error"]) == ("interrupted", CTRL_C_REASON)
    assert job["heartbeat_at"] is not None  # the job said it was alive while it ran
    statuses = {s["status"] for s in job["stages"]}
    assert "running" not in statuses and "failed" not in statuses, job["stages"]
    # A stage caught mid-work reads interrupted, unless its thread, between two child
    # processes when the signal came, got to finish it (then it is done, and cached whole).
    assert statuses <= {"done", "interrupted", "skipped"}, job["stages"]
    assert all(s["stage"] == "separate" for s in job["stages"] if s["status"] == "skipped")  # no weights here
    assert all(s["error"].startswith(CTRL_C_REASON) for s in job["stages"] if s["status"] == "interrupted")
    [row] = json.loads(dub("list", "--db", db, "--json").stdout)
    assert row["status"] == "interrupted"

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.sorting import FlowRunSort

    with get_client(sync_client=True) as client:
        [run] = client.read_flow_runs(sort=FlowRunSort.START_TIME_DESC, limit=1)
    assert run.state.type.value in ("CRASHED", "CANCELLED"), run.state


CRASHING_JOB = """
    import os, sys
    from polydub.storage import Catalog
    catalog = Catalog(sys.argv[1])
    source = catalog.upsert_source("/videos/ad.mp4", "ab" * 32, 10.0, 25.0, True)
    job = catalog.create_job(source, ["es"], {}, "/out/ad")
    catalog.start_stage(job, "synthesize", "es", "k")
    print(job, flush=True)
    os._exit(9)  # killed mid-stage
"""


@pytest.mark.slow
def test_a_dead_jobs_flow_run_is_set_to_crashed_by_dub_list(prefect_api, tmp_path):
    from prefect import flow
    from prefect.client.orchestration import get_client
    from prefect.states import Running

    @flow(name="dub-video-crash-test")
    def placeholder():
        pass

    db = f"sqlite:///{tmp_path / 'c.db'}"
    with get_client(sync_client=True) as client:
        run = client.create_flow_run(placeholder, state=Running())
    code = textwrap.dedent(CRASHING_JOB)
    result = subprocess.run([sys.executable, "-c", code, db], capture_output=True, text=True, timeout=60)
    assert result.returncode == 9, result.stderr
    job_id = int(result.stdout)
    with sqlite3.connect(tmp_path / "c.db") as conn:
        conn.execute("update jobs set flow_run_id = ? where id = ?", (str(run.id), job_id))

    listed = dub("list", "--db", db, "--json")
    assert listed.returncode == 0, listed.stderr
    [row] = json.loads(listed.stdout)
    assert row["status"] == "interrupted" and "is gone" in row["error"]
    with get_client(sync_client=True) as client:
        state = client.read_flow_run(run.id).state
    assert state.type.value == "CRASHED" and state.message == row["error"]
    shown = dub("show", str(job_id), "--db", db)
    assert shown.returncode == 0 and f"job {job_id}: interrupted" in shown.stdout


@pytest.mark.slow  # the session's Prefect server
def test_a_run_prefect_missed_is_settled_once_then_remembered(prefect_api, tmp_path, monkeypatch):
    """`dub list` tells Prefect how a run ended that it missed; a run it has seen ended is
    not asked about again, so a catalog read with nothing new costs no Prefect client."""
    from datetime import timedelta

    from prefect import flow
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings
    from prefect.states import Running

    from polydub import crash
    from polydub.storage import Catalog

    @flow(name="dub-video-settle-test")
    def placeholder():
        pass

    monkeypatch.setenv("DUB_HOME", str(tmp_path / "home"))
    monkeypatch.setattr(crash, "SETTLE_AFTER", timedelta(0))
    cat = Catalog(f"sqlite:///{tmp_path / 'c.db'}")
    source = cat.upsert_source("/videos/ad.mp4", "0" * 64, 10.0, 25.0, True)

    def job_with_a_run() -> tuple[int, str]:
        with get_client(sync_client=True) as client:
            run = client.create_flow_run(placeholder, state=Running())
        return cat.create_job(source, ["es"], {}, str(tmp_path / "out"), None, flow_run_id=str(run.id)), str(run.id)

    (first, first_run), (second, _) = job_with_a_run(), job_with_a_run()
    cat.finish_job(first, "done")
    assert crash.settle_flow_runs(cat) == []
    with get_client(sync_client=True) as client:
        state = client.read_flow_run(first_run).state
    assert state.type.value == "COMPLETED" and "recorded when the Prefect server answered again" in state.message

    gone = f"http://127.0.0.1:{free_port()}/api"  # no server there now
    monkeypatch.setenv("PREFECT_API_URL", gone)
    with temporary_settings({PREFECT_API_URL: gone}):
        assert crash.settle_flow_runs(cat) == []  # nothing new: Prefect is not asked
        cat.finish_job(second, "failed", error="es: failed")
        [note] = crash.settle_flow_runs(cat)  # something new: asked, and the answer missed is said
    assert note.startswith("flow runs not given their final states")
    cat.close()


@pytest.mark.slow
def test_losing_the_prefect_server_mid_run_does_not_fail_a_finished_dub(tmp_path):
    """dub's own kept server, stopped while the job works: every language is still
    delivered and recorded, dub exits 0 and says what Prefect could not record."""
    args = one_pass_job(tmp_path)
    seed_database(tmp_path / "home" / "prefect")  # as a kept server that ran before left it
    env = {"DUB_HOME": str(tmp_path / "home"), "DUB_CACHE_DIR": str(tmp_path / "cache"),
           "PREFECT_API_URL": None,  # dub's own server, not the tests'
           "PREFECT_CLIENT_MAX_RETRIES": "1"}  # Prefect's default 5, with backoff, waits a minute more
    held = tmp_path / "held"
    proc = start_held([*args, "--json"], "mix", held, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                      text=True)
    try:
        stopped = subprocess.run([sys.executable, "-m", "polydub.cli", "server", "stop"], capture_output=True,
                                 text=True, timeout=60,
                                 env={k: v for k, v in {**os.environ, **env}.items() if v is not None})
        assert stopped.stdout.strip() == "stopped"
        held.unlink()  # the job goes on without its server
        stdout, stderr = proc.communicate(timeout=300)
    finally:
        proc.kill()
    assert proc.returncode == 0, stderr
    assert "dub: warning: the flow run's final state is not in Prefect" in stderr and "Traceback" not in stderr
    assert "EventsWorker" not in stderr and "Error logging to API" not in stderr  # Prefect's failed sends
    report = json.loads(stdout)
    assert report["status"] == "done" and "not_recorded" in report
    assert (tmp_path / "out" / "job.es.mp4").exists() and (tmp_path / "out" / "job.fr.mp4").exists()
    [row] = json.loads(dub("list", "--db", args[-1], "--json").stdout)
    assert row["status"] == "done" and row["n_outputs"] == 10  # 2 x (mp4, srt, vtt, timeline), multi-track, report
    # When the server is back, `dub list` tells it how the run ended (test_a_run_prefect_missed_is_settled_once...).


@pytest.mark.slow
def test_losing_the_prefect_server_mid_catalog_keeps_what_ran_and_starts_nothing_more(tmp_path):
    """`dub catalog`, one item at a time, its kept server stopped while the first item
    works: that item is delivered and recorded, the others are left as they were (not
    failed) for the next run, and the run ends with one warning and exit 1 in seconds."""
    clip = tmp_path / "a.mp4"
    one_pass_job(tmp_path)
    for name in ("a", "b", "c"):
        shutil.copy(tmp_path / "job.mp4", tmp_path / f"{name}.mp4")
        for lang in ("en", "es", "fr"):
            shutil.copy(tmp_path / f"job.{lang}.srt", tmp_path / f"{name}.{lang}.srt")
    (tmp_path / "ads.json").write_text(json.dumps({
        "defaults": {"langs": ["es", "fr"], "voice": "espeak", "lipsync": "off"},
        "items": [{"id": name, "input": f"{name}.mp4"} for name in ("a", "b", "c")]}))
    seed_database(tmp_path / "home" / "prefect")
    env = {"DUB_HOME": str(tmp_path / "home"), "DUB_CACHE_DIR": str(tmp_path / "cache"),
           "PREFECT_API_URL": None, "PREFECT_CLIENT_MAX_RETRIES": "1"}
    db = f"sqlite:///{tmp_path / 'c.db'}"
    held = tmp_path / "held"
    proc = start_held(["catalog", str(tmp_path / "ads.json"), "--out", str(tmp_path / "out"), "--db", db,
                       "--concurrency", "1", "--json"], "mix", held, env=env, stdout=subprocess.PIPE,
                      stderr=subprocess.PIPE, text=True)
    try:
        stopped = subprocess.run([sys.executable, "-m", "polydub.cli", "server", "stop"], capture_output=True,
                                 text=True, timeout=60,
                                 env={k: v for k, v in {**os.environ, **env}.items() if v is not None})
        assert stopped.stdout.strip() == "stopped"
        held.unlink()
        stdout, stderr = proc.communicate(timeout=300)
    finally:
        proc.kill()
    assert proc.returncode == 1, stderr
    assert stderr.strip().splitlines() == [
        "dub: warning: the flow run's final state is not in Prefect (ConnectError: [Errno 111] Connection refused)"]
    report = json.loads(stdout)
    rows = {(r["item"], r["language"]): r for r in report["rows"]}
    assert [rows[("a", lang)]["status"] for lang in ("es", "fr")] == ["dubbed", "dubbed"]
    assert (tmp_path / "out" / "a" / "a.es.mp4").exists() and clip.exists()
    for item in ("b", "c"):
        for lang in ("es", "fr"):
            assert rows[(item, lang)]["status"] == "not started"
            assert rows[(item, lang)]["error"] == "the Prefect server stopped answering (run `dub catalog` again)"
    status = dub("status", str(tmp_path / "ads.json"), "--db", db, "--json")
    (listed,) = json.loads(status.stdout).values()
    cells = {(c["item"], c["lang"]): c["state"] for c in listed}
    assert cells == {("a", "es"): "done", ("a", "fr"): "done", ("b", "es"): "missing", ("b", "fr"): "missing",
                     ("c", "es"): "missing", ("c", "fr"): "missing"}
    [job] = json.loads(dub("list", "--db", db, "--json").stdout)
    assert job["status"] == "done"
