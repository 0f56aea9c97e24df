"""What handing lip-sync to a GPU worker costs: the set-up of tests/test_gpu_handoff.py, timed.

A real Prefect server with both process work pools and `prefect deploy --all`, a CPU worker
(`dub worker --pool polydub-cpu`, DUB_LIPSYNC_DEPLOYMENT=lipsync/lipsync-gpu, no lip-sync
weights) and a "GPU" worker (`dub worker --pool polydub-gpu`, lip-sync on the CPU with tiny
random models), each in a folder of its own with its own DUB_HOME and cache; they share a
real S3 API server on loopback (moto_server: the input, the stage store and the
deliverables), the catalog (a new database on the machine's PostgreSQL, dropped at the end;
a SQLite file when PostgreSQL is unreachable, said so) and the Prefect server.

The 3 s clip of the test is dubbed with `--lipsync on --voice espeak` (DUB_LIPSYNC_DEVICE=cpu,
DUB_LIPSYNC_STEPS=2 on both sides) by two `dub-video` deployment runs, one after the other:
es, then fr (which finds the models loaded in the GPU worker's process). For each, from the
Prefect API (flow runs' start and end times, log times) and the catalog (`dub show N --json`):

  request -> GPU run started   the CPU flow's "lipsync: handed to" log to the lipsync flow
                               run's start
  request -> first frame       to the lipsync stage's start in its catalog row (written by
                               the GPU side) or the "models loaded / already loaded" log,
                               whichever is later (the table says which)
  GPU run end -> CPU resumes   the lipsync flow run's end to the CPU flow's "the GPU run ...
                               ended" log
  hand-off total               "handed to" to "ended": the whole lip-sync as the CPU sees it

The baseline, in the same run: the same clip into es with the lip-sync stage in the job's
own process (`dub CLIP --langs es --lipsync on --voice espeak --out .. --json`, the tiny
models, its own DUB_HOME, catalog and kept Prefect server, no bucket, no
DUB_LIPSYNC_DEPLOYMENT); its lipsync stage's seconds from `dub show N --json`. The ratio is
hand-off total / that. Nothing is asserted.

    python bench/handoff.py [--keep]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.pipeline import dub, dub_run, isolated_env, keep_or_remove, stop_server, timed  # noqa: E402 - the CLI, isolated
from tests.databases import Databases, postgres_unreachable  # noqa: E402
from tests.prefect_stack import _stop, prefect_stack  # noqa: E402
from tests.services import s3_server  # noqa: E402

BUCKET = "polydub-handoff"
LANGS = ("es", "fr")  # one job after the other: the second finds the models loaded
RUN_TIMEOUT_S = 600  # one dub-video run, hand-off included
LOG_WAIT_S = 30.0  # logs reach the API in batches: how long to wait for the ones needed
LIPSYNC_ENV = {"DUB_LIPSYNC_DEVICE": "cpu", "DUB_LIPSYNC_STEPS": "2", "DUB_GPU_LIMIT": "1"}
FINAL = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}
HANDED, ENDED = "lipsync: handed to", "lipsync: the GPU run"
LOADED, REUSED = "lipsync: models loaded in", "lipsync: models already loaded in this process"
CLIP_NOTE = "3 s clip (tests/test_gpu_handoff.py's) into es then fr"


def test_helpers():
    """The test's clip and bucket helpers. Importing the test module imports tests/conftest.py,
    which sets test-wide variables in os.environ and makes a scratch folder at import: the
    environment is put back at once, and the folder is returned to be removed at the end."""
    saved = dict(os.environ)
    try:
        from tests import conftest
        from tests.test_gpu_handoff import make_clip
        from tests.test_object_storage import KEY_ID, SECRET, bucket_fs
    finally:
        os.environ.clear()
        os.environ.update(saved)
    return make_clip, bucket_fs, {"AWS_ACCESS_KEY_ID": KEY_ID, "AWS_SECRET_ACCESS_KEY": SECRET,
                                  "AWS_DEFAULT_REGION": "us-east-1"}, conftest._ROOT


def when(value) -> datetime:
    """A catalog ISO time or a Prefect datetime, as an aware datetime (SQLite keeps UTC without an offset)."""
    moment = datetime.fromisoformat(value) if isinstance(value, str) else value
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


def seconds(start, end) -> float:
    return (when(end) - when(start)).total_seconds()


def show_job(job: int, env: dict[str, str]) -> dict:
    return json.loads(timed(dub("show", str(job), "--json"), env)[1].stdout)


def lipsync_row(shown: dict, lang: str) -> dict:
    rows = [r for r in shown["stages"] if r["stage"] == "lipsync" and r["lang"] == lang]
    if not rows:
        raise SystemExit(f"job {shown.get('id')}: no lipsync stage row for {lang}")
    return rows[-1]  # the latest: the one that ran


def stage_seconds(row: dict) -> float:
    return row["seconds"] if row.get("seconds") is not None else seconds(row["started_at"], row["finished_at"])


# --- the baseline: lip-sync in the job's own process -------------------------------------

def baseline(folder: Path, clip: Path, models: Path, db: str) -> float:
    """`dub CLIP --langs es --lipsync on --voice espeak`, lip-sync local; its lipsync stage seconds."""
    env = isolated_env(folder)
    for var in ("DUB_STORAGE_URL", "DUB_LIPSYNC_DEPLOYMENT", "DUB_OUTPUTS_DIR", "AWS_ENDPOINT_URL"):
        env.pop(var, None)
    env.update({**LIPSYNC_ENV, "DUB_MODELS_DIR": str(models), "DUB_DATABASE_URL": db})
    try:
        timed(dub("server", "start"), env)  # its kept server, up before the run
        _, report = dub_run(clip, [LANGS[0]], folder / "out", env, None, "--lipsync", "on")
        row = lipsync_row(show_job(report["job"], env), LANGS[0])
    finally:
        stop_server(env)
    if row["status"] != "done":
        raise SystemExit(f"baseline: its lipsync stage is {row['status']}: {row.get('error')}")
    return stage_seconds(row)


# --- the hand-off ---------------------------------------------------------------------------

def all_logs(client, flow_run_id) -> list:
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId
    from prefect.client.schemas.sorting import LogSort

    logs, page = [], 200
    while True:
        got = client.read_logs(log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[flow_run_id])),
                               limit=page, offset=len(logs), sort=LogSort.TIMESTAMP_ASC)
        logs += got
        if len(got) < page:
            return logs


def first_log(logs: list, *starts: str):
    return next((log for log in logs if log.message.startswith(starts)), None)


def logs_with(client, flow_run_id, *needed: tuple[str, ...]) -> list:
    """The run's logs once each group of `needed` prefixes has a line (or LOG_WAIT_S passed)."""
    deadline = time.monotonic() + LOG_WAIT_S
    while True:
        logs = all_logs(client, flow_run_id)
        if all(first_log(logs, *group) for group in needed) or time.monotonic() > deadline:
            return logs
        time.sleep(1)


def hand_off(client, url: str, lang: str, seen: set, env: dict[str, str], diagnose) -> dict:
    """One dub-video run on the CPU pool, waited for; its hand-off times."""
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterName

    deployment = client.read_deployment_by_name("dub-video/dub-video")
    run = client.create_flow_run_from_deployment(
        deployment.id, parameters={"input": url, "langs": [lang], "options": {"lipsync": "on", "voice": "espeak"}})
    deadline = time.monotonic() + RUN_TIMEOUT_S
    while True:
        run = client.read_flow_run(run.id)
        if run.state and run.state.type.value in FINAL:
            break
        if time.monotonic() > deadline:
            raise SystemExit(f"{lang}: run {run.name} not done in {RUN_TIMEOUT_S} s\n{diagnose()}")
        time.sleep(0.5)
    if run.state.type.value != "COMPLETED":
        raise SystemExit(f"{lang}: run {run.name} ended {run.state.name}: {run.state.message}\n{diagnose()}")
    named = FlowRunFilter(name=FlowRunFilterName(like_="lipsync-job-"))
    syncs = [r for r in client.read_flow_runs(flow_run_filter=named) if r.id not in seen]
    if len(syncs) != 1:
        raise SystemExit(f"{lang}: expected one new lipsync run, found {[r.name for r in syncs]}")
    sync = syncs[0]
    seen.add(sync.id)
    if sync.state.type.value != "COMPLETED" or sync.work_pool_name != "polydub-gpu":
        raise SystemExit(f"{lang}: lipsync run {sync.name} on {sync.work_pool_name}: {sync.state.name}")
    cpu_logs = logs_with(client, run.id, (HANDED,), (ENDED,))
    gpu_logs = logs_with(client, sync.id, (LOADED, REUSED))
    handed, ended = first_log(cpu_logs, HANDED), first_log(cpu_logs, ENDED)
    models = first_log(gpu_logs, LOADED, REUSED)
    if not (handed and ended and models):
        raise SystemExit(f"{lang}: logs missing (handed to: {bool(handed)}, ended: {bool(ended)}, "
                         f"models: {bool(models)})\n{diagnose()}")
    row = lipsync_row(show_job(sync.parameters["job_id"], env), lang)
    first, via = ((row["started_at"], "stage row") if when(row["started_at"]) >= when(models.timestamp)
                  else (models.timestamp, "models log"))
    return {
        "lang": lang,
        "models": "loaded in " + models.message[len(LOADED):].split("(")[0].strip()
                  if models.message.startswith(LOADED) else "already loaded",
        "to_gpu_start": seconds(handed.timestamp, sync.start_time),
        "to_first_frame": seconds(handed.timestamp, first),
        "via": via,
        "gpu_stage": stage_seconds(row),
        "to_resume": seconds(sync.end_time, ended.timestamp),
        "total": seconds(handed.timestamp, ended.timestamp),
        "job": seconds(run.start_time, run.end_time),
    }


def run_handoff(folder: Path, clip: Path, models: Path, db: str, make_fs, s3_env: dict[str, str]) -> list[dict]:
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with s3_server() as endpoint:
        fs = make_fs(endpoint)
        fs.mkdir(BUCKET)
        for f in clip.parent.iterdir():
            fs.put_file(str(f), f"{BUCKET}/in/{f.name}")
        shared = {**s3_env, **LIPSYNC_ENV, "AWS_ENDPOINT_URL": endpoint, "DUB_STORAGE_URL": f"s3://{BUCKET}/store",
                  "DUB_OUTPUTS_DIR": f"s3://{BUCKET}/outputs", "DUB_DATABASE_URL": db}
        cpu_home, gpu_home = folder / "cpu", folder / "gpu"
        (cpu_home / "models").mkdir(parents=True)  # no lip-sync weights on the CPU side
        gpu_home.mkdir()
        cpu = {**shared, "DUB_HOME": str(cpu_home), "DUB_CACHE_DIR": str(cpu_home / "cache"),
               "DUB_MODELS_DIR": str(cpu_home / "models"), "DUB_LIPSYNC_DEPLOYMENT": "lipsync/lipsync-gpu"}
        print("starting the Prefect server, pools, deployments and the CPU worker ...", file=sys.stderr)
        with prefect_stack(folder / "stack", worker_env=cpu) as stack:
            gpu = {**stack["env"], **shared, "DUB_HOME": str(gpu_home), "DUB_CACHE_DIR": str(gpu_home / "cache"),
                   "DUB_MODELS_DIR": str(models)}
            gpu.pop("DUB_LIPSYNC_DEPLOYMENT", None)
            gpu_log = folder / "gpu-worker.log"
            with open(gpu_log, "wb") as out:
                gpu_worker = subprocess.Popen([sys.executable, "-m", "polydub.cli", "worker", "--pool", "polydub-gpu"],
                                              env=gpu, cwd=gpu_home, stdout=out, stderr=subprocess.STDOUT,
                                              start_new_session=True)

            def diagnose() -> str:
                tails = [(name, path.read_text(errors="replace")[-2500:])
                         for name, path in (("CPU worker", folder / "stack" / "worker.log"), ("GPU worker", gpu_log))
                         if path.exists()]
                return "\n".join(f"--- {name} log, tail:\n{text}" for name, text in tails)

            results, seen = [], set()
            try:
                with temporary_settings(updates={PREFECT_API_URL: stack["api"]}), \
                        get_client(sync_client=True) as client:
                    for lang in LANGS:
                        print(f"hand-off job {lang} ...", file=sys.stderr)
                        results.append(hand_off(client, f"s3://{BUCKET}/in/{clip.name}", lang, seen,
                                                stack["env"], diagnose))
            finally:
                _stop(gpu_worker)
            if "Traceback" in gpu_log.read_text(errors="replace"):
                print(f"note: the GPU worker's log holds a traceback\n{diagnose()}", file=sys.stderr)
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder")
    opts = parser.parse_args()

    make_clip, make_fs, s3_env, tests_scratch = test_helpers()
    folder = Path(tempfile.mkdtemp(prefix="polydub-bench-handoff-"))
    load_before = os.getloadavg()[0]
    dbs, catalog = None, "PostgreSQL (127.0.0.1:5432, new databases, dropped at the end)"
    try:
        from tests.tiny_models import build_lipsync_models

        (folder / "clip").mkdir()
        clip = make_clip(folder / "clip")
        models = build_lipsync_models(folder / "models")
        if reason := postgres_unreachable():
            catalog = f"SQLite files (PostgreSQL at 127.0.0.1:5432 is unreachable: {reason})"
            print(f"note: {catalog}", file=sys.stderr)
            urls = [f"sqlite:///{folder / f'{name}.db'}" for name in ("baseline", "handoff")]
        else:
            dbs = Databases("postgresql", None)
            urls = [dbs.new_url(), dbs.new_url()]

        print("baseline: lip-sync in the job's own process ...", file=sys.stderr)
        base = baseline(folder / "baseline", clip, models, urls[0])
        jobs = run_handoff(folder / "handoff", clip, models, urls[1], make_fs, s3_env)

        print(f"lip-sync handed to a GPU worker vs in the job's process: {CLIP_NOTE}, --lipsync on, "
              f"espeak-ng, tiny random LatentSync on the CPU, 2 steps; catalog on {catalog}; "
              f"{os.cpu_count()} CPUs, load average {load_before:.1f} before, {os.getloadavg()[0]:.1f} after")
        print()
        print("| job | models in the GPU worker | request → GPU run started s | request → first frame s "
              "| first frame from | lipsync stage s | GPU run end → CPU resumes s | lip-sync seen from the CPU s "
              "| / baseline | dub-video run s |")
        print("|---|---|---:|---:|---|---:|---:|---:|---:|---:|")
        for r in jobs:
            print(f"| hand-off, {r['lang']} | {r['models']} | {r['to_gpu_start']:.2f} | {r['to_first_frame']:.2f} "
                  f"| {r['via']} | {r['gpu_stage']:.2f} | {r['to_resume']:.2f} | {r['total']:.2f} "
                  f"| {r['total'] / base:.2f} | {r['job']:.2f} |")
        print(f"| baseline, {LANGS[0]} (in process) | loaded by the stage |  |  |  | {base:.2f} |  | {base:.2f} "
              f"| 1.00 |  |")
        print()
        print("Request: the CPU flow's \"lipsync: handed to\" log. First frame: the later of the lipsync stage's "
              "start in the catalog and the \"models loaded\" log. Lip-sync seen from the CPU: \"handed to\" to "
              "\"the GPU run ... ended\"; / baseline divides it by the baseline's lipsync stage seconds (catalog). "
              "lipsync stage s: the stage's own catalog seconds, written by the GPU side for the hand-off.")
    finally:
        if dbs is not None:
            dbs.drop_all()
        shutil.rmtree(tests_scratch, ignore_errors=True)
        keep_or_remove(folder, opts.keep)
    return 0


if __name__ == "__main__":
    sys.exit(main())
