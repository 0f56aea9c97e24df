"""Jobs that stop without finishing: Ctrl-C, a killed process, a Prefect flow run left
RUNNING. The catalog, `dub list` / `dub show` and Prefect must all say 'interrupted' /
Crashed, never 'running' for good nor 'failed' with a signal number."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from polydub.crash import CTRL_C_REASON
from polydub.segments import read_subtitles
from tests.conftest import EXAMPLE



def dub(*args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "polydub.cli", *args], capture_output=True, text=True,
                          timeout=timeout)


def long_job(folder: Path, repeats: int) -> list[str]:
    """The example looped `repeats` times (a job long enough to be caught in the middle;
    each test its own count, so that no test finds another's stages cached), with
    approved es/fr translations; the `dub` arguments to run it."""
    clip = folder / "long.mp4"
    subprocess.run(["ffmpeg", "-v", "error", "-stream_loop", str(repeats - 1), "-i", str(EXAMPLE), "-c", "copy",
                    str(clip)], check=True, timeout=120)
    for lang in ("en", "es", "fr"):
        approved = read_subtitles(EXAMPLE.with_suffix(f".{lang}.srt"))
        cues = [f"{n}\n00:00:{10 * k + s.start:06.3f} --> 00:00:{10 * k + s.end:06.3f}\n{s.text}\n".replace(".", ",", 2)
                for n, (k, s) in enumerate(((k, s) for k in range(repeats) for s in approved), 1)]
        (folder / f"long.{lang}.srt").write_text("\n".join(cues), encoding="utf-8")
    return [str(clip), "--langs", "es,fr", "--voice", "espeak", "--out", str(folder / "out"),
            "--db", f"sqlite:///{folder / 'c.db'}"]


def start_and_wait_for(args: list[str], db_file: Path, stage: str) -> subprocess.Popen:
    """Start `dub` in its own process group (as a terminal runs it); return once `stage`
    is running for some language."""
    proc = subprocess.Popen([sys.executable, "-m", "polydub.cli", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.2)
        try:
            with sqlite3.connect(db_file, timeout=1) as conn:
                if conn.execute("select 1 from stage_runs where stage = ? and status = 'running'",
                                (stage,)).fetchall():
                    return proc
        except sqlite3.OperationalError:
            continue  # not created yet
    proc.kill()
    raise AssertionError(f"the job ended or stalled before {stage}: {proc.communicate()[1][-2000:]}")


@pytest.mark.slow
def test_ctrl_c_records_the_job_and_its_stages_as_interrupted(prefect_api, tmp_path):
    args = long_job(tmp_path, repeats=3)
    db = args[-1]
    proc = start_and_wait_for(args, tmp_path / "c.db", "mix")  # mixing takes seconds: caught in it
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


@pytest.mark.slow
def test_losing_the_prefect_server_mid_run_does_not_fail_a_finished_dub(tmp_path):
    """dub's own kept server, stopped while the job works: every language is still
    delivered and recorded, dub exits 0 and says what Prefect could not record."""
    args = long_job(tmp_path, repeats=2)
    env = {**os.environ, "DUB_HOME": str(tmp_path / "home")}
    env.pop("PREFECT_API_URL", None)
    env["PREFECT_CLIENT_MAX_RETRIES"] = "1"  # Prefect's default 5, with backoff, waits a minute more
    proc = subprocess.Popen([sys.executable, "-m", "polydub.cli", *args, "--json"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)
    try:
        deadline = time.monotonic() + 180
        while not (tmp_path / "c.db").exists() or not sqlite3.connect(tmp_path / "c.db").execute(
                "select 1 from sqlite_master where name = 'stage_runs'").fetchall() or not sqlite3.connect(
                tmp_path / "c.db").execute("select 1 from stage_runs where stage = 'mix'").fetchall():
            assert time.monotonic() < deadline and proc.poll() is None, "the job ended before the server could go"
            time.sleep(0.2)
        stopped = subprocess.run([sys.executable, "-m", "polydub.cli", "server", "stop"], env=env,
                                 capture_output=True, text=True, timeout=60)
        assert stopped.stdout.strip() == "stopped"
        stdout, stderr = proc.communicate(timeout=300)
    finally:
        proc.kill()
    assert proc.returncode == 0, stderr
    assert "dub: warning: the flow run's final state is not in Prefect" in stderr and "Traceback" not in stderr
    assert "EventsWorker" not in stderr and "Error logging to API" not in stderr  # Prefect's failed sends
    report = json.loads(stdout)
    assert report["status"] == "done" and "not_recorded" in report
    assert (tmp_path / "out" / "long.es.mp4").exists() and (tmp_path / "out" / "long.fr.mp4").exists()
    [row] = json.loads(dub("list", "--db", args[-1], "--json").stdout)
    assert row["status"] == "done" and row["n_outputs"] == 8
