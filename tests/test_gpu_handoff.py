"""CPU workers hand lip-sync to GPU workers: a real Prefect server, both process work pools,
a CPU worker and a "GPU" worker (lip-sync on the CPU with tiny random models), each started
in a folder of its own with its own DUB_HOME and cache. They share only the bucket (a real
S3 API server on loopback), the catalog (the machine's PostgreSQL) and the Prefect server.

Two `dub-video` runs at once on the CPU pool (es, fr) each prepare a mixed track, hand lip-sync to the
`lipsync-gpu` deployment on the GPU pool and assemble from the synced video they get back
through the bucket; the deliverables land in the bucket with the face regenerated, and the
GPU worker, one process, loads the lip-sync models for the first run only. Then a third
machine hands a catalog whose input is in the bucket to the workers (`dub catalog
--via-deployment`) and reads it done with `dub status`.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.databases import Databases, postgres_unreachable
from tests.prefect_stack import _stop, prefect_stack
from tests.services import s3_server
from tests.test_dub_lipsync import LINE, SECONDS, frames_of
from tests.test_object_storage import KEY_ID, SECRET, bucket_fs

pytestmark = [pytest.mark.slow, pytest.mark.postgres]
BUCKET = "polydub-fleet"
RUN_TIMEOUT_S = 400


def make_clip(folder: Path) -> Path:
    """A 3-second clip of the example with its English transcript and approved es and fr scripts."""
    from tests.conftest import EXAMPLE

    video = folder / "promo.mp4"
    subprocess.run(["ffmpeg", "-v", "error", "-i", str(EXAMPLE), "-t", str(SECONDS), "-c:v", "libx264", "-crf", "16",
                    "-c:a", "aac", "-metadata:s:a:0", "language=eng", str(video)], check=True, timeout=120)
    for lang in ("en", "es", "fr"):
        (folder / f"promo.{lang}.srt").write_text(f"1\n00:00:00,500 --> 00:00:02,800\n{LINE[lang]}\n",
                                                  encoding="utf-8")
    return video


def test_a_cpu_worker_hands_lipsync_to_a_gpu_worker_through_the_bucket(tmp_path_factory, tiny_models_dir):
    if reason := postgres_unreachable():
        pytest.skip(f"PostgreSQL at 127.0.0.1:5432 is unreachable: {reason}")
    root = tmp_path_factory.mktemp("fleet")
    clip = make_clip(tmp_path_factory.mktemp("clip"))
    dbs = Databases("postgresql", None)
    db = dbs.new_url()
    try:
        with s3_server() as endpoint:
            fs = bucket_fs(endpoint)
            fs.mkdir(BUCKET)
            for f in clip.parent.iterdir():
                fs.put_file(str(f), f"{BUCKET}/in/{f.name}")
            shared = {"AWS_ENDPOINT_URL": endpoint, "AWS_ACCESS_KEY_ID": KEY_ID, "AWS_SECRET_ACCESS_KEY": SECRET,
                      "AWS_DEFAULT_REGION": "us-east-1", "DUB_STORAGE_URL": f"s3://{BUCKET}/store",
                      "DUB_OUTPUTS_DIR": f"s3://{BUCKET}/outputs", "DUB_DATABASE_URL": db,
                      "DUB_LIPSYNC_DEVICE": "cpu", "DUB_LIPSYNC_STEPS": "2", "DUB_GPU_LIMIT": "1"}
            cpu_home, gpu_home = root / "cpu", root / "gpu"
            cpu = {**shared, "DUB_HOME": str(cpu_home), "DUB_CACHE_DIR": str(cpu_home / "cache"),
                   "DUB_LIPSYNC_DEPLOYMENT": "lipsync/lipsync-gpu"}  # no lip-sync weights on this one
            with prefect_stack(root / "stack", worker_env=cpu) as stack:
                gpu_home.mkdir()
                gpu = {**stack["env"], **shared, "DUB_HOME": str(gpu_home), "DUB_CACHE_DIR": str(gpu_home / "cache"),
                       "DUB_MODELS_DIR": str(tiny_models_dir)}
                gpu.pop("DUB_LIPSYNC_DEPLOYMENT")  # the stack's environment is the CPU worker's
                gpu_worker = subprocess.Popen([sys.executable, "-m", "polydub.cli", "worker", "--pool", "polydub-gpu"],
                                              env=gpu, cwd=gpu_home, stdout=open(root / "gpu-worker.log", "wb"),
                                              stderr=subprocess.STDOUT, start_new_session=True)
                office = None
                try:  # two jobs at once: the GPU worker syncs one video, then the other
                    both = run_dubs(stack, f"s3://{BUCKET}/in/promo.mp4", ["es", "fr"])
                    # then a third machine hands the workers a catalog (after: fewer writers at once
                    # on the test server's SQLite database)
                    office = start_catalog(stack, shared, root / "office", f"s3://{BUCKET}/in/promo.mp4")
                    catalog = catalog_handed_to_the_workers(*office)
                finally:
                    _stop(gpu_worker)
                    if office is not None:
                        _stop(office[0])
                logs = (root / "gpu-worker.log").read_text(errors="replace")
                assert "ended abnormally" not in logs, logs[-3000:]  # no lipsync run crashed in the worker
                run = both["runs"][0]
                assert [r["state"] for r in both["runs"]] == ["COMPLETED"] * 2, (
                    both["runs"], logs[-3000:], (root / "stack" / "worker.log").read_text()[-3000:])
                gpu_runs = both["lipsync_runs"]
                assert [(r["pool"], r["state"]) for r in gpu_runs] == [("polydub-gpu", "COMPLETED")] * 2
                # one GPU worker process: the first video loads the models, the second finds them loaded
                first_log, second_log = (r["log"] for r in sorted(gpu_runs, key=lambda r: r["started"]))
                assert "lipsync: models loaded in" in first_log, first_log
                assert "models already loaded in this process" in second_log, second_log
                assert "models loaded in" not in second_log
            assert [(r["item"], r["language"], r["status"]) for r in catalog["rows"]] == [("promo", "es", "dubbed")]
            assert catalog["rows"][0]["output"].startswith(f"s3://{BUCKET}/outputs/ads/promo/job-")
            assert fs.exists(catalog["rows"][0]["output"].removeprefix("s3://"))
            report = run["report"]
            es = report["languages"]["es"]
            assert es["status"] == "done" and es["backends"]["lipsync"] == "done", es
            url = es["outputs"]["mp4"]
            assert url.startswith(f"s3://{BUCKET}/outputs/promo/job-")
            fs.get_file(url.removeprefix("s3://"), str(root / "es.mp4"))
            source, synced = frames_of(clip), frames_of(root / "es.mp4")
            assert synced.shape == source.shape
            diff = np.abs(synced - source).max(axis=-1)
            assert diff[:, :60, :60].mean() < 3  # far from the face: only re-encoding noise
            assert (diff > 40).mean(axis=0).max() > 0.5  # the lower face regenerated
            # each side kept only its scratch: no stage result outside the bucket
            for home in (cpu_home, gpu_home):
                cache = home / "cache"
                assert not [p for p in cache.iterdir() if p.name not in ("downloads",) and not p.name.endswith(".lock")]
            assert fs.find(f"{BUCKET}/store/cache/lipsync")
    finally:
        dbs.drop_all()


def start_catalog(stack: dict, shared: dict, office: Path, url: str) -> tuple[subprocess.Popen, Path, dict]:
    """Start `dub catalog ads.csv --via-deployment dub-video` on a third machine (a folder and
    DUB_HOME of its own) for a manifest whose input is in the bucket, lip-sync off."""
    office.mkdir()
    (office / "ads.csv").write_text(f"id,input,langs\npromo,{url},es\n")
    env = {**stack["env"], **shared, "DUB_HOME": str(office), "DUB_CACHE_DIR": str(office / "cache")}
    env.pop("DUB_LIPSYNC_DEPLOYMENT")
    proc = subprocess.Popen([sys.executable, "-m", "polydub.cli", "catalog", "ads.csv", "--via-deployment",
                             "dub-video", "--lipsync", "off", "--voice", "espeak", "--json"], env=env, cwd=office,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    return proc, office, env


def catalog_handed_to_the_workers(proc: subprocess.Popen, office: Path, env: dict) -> dict:
    """The catalog's JSON table once it ends, after `dub status` there reads the item done."""
    out, err = proc.communicate(timeout=RUN_TIMEOUT_S)
    assert proc.returncode == 0, err[-3000:]
    status = subprocess.run([sys.executable, "-m", "polydub.cli", "status", "ads.csv", "--json"], env=env,
                            cwd=office, capture_output=True, text=True, timeout=120)
    (cells,) = json.loads(status.stdout).values()
    assert [(c["item"], c["lang"], c["state"]) for c in cells] == [("promo", "es", "done")], cells
    return json.loads(out)


def run_dubs(stack: dict, url: str, langs: list[str]) -> list[dict]:
    """Start one dub-video run per language on the CPU pool through the API, all at once, and
    wait for them; each one's end state and report, and every lip-sync run (pool, state,
    start, log text)."""
    script = f"""
import json, time
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId
from prefect.deployments import run_deployment
started = [run_deployment("dub-video/dub-video", parameters={{"input": {url!r}, "langs": [lang],
           "options": {{"lipsync": "on", "voice": "espeak"}}}}, timeout=0) for lang in {langs!r}]
deadline = time.monotonic() + {RUN_TIMEOUT_S}
with get_client(sync_client=True) as client:
    while True:
        runs = [client.read_flow_run(r.id) for r in started]
        if all(r.state.is_final() for r in runs) or time.monotonic() > deadline:
            break
        time.sleep(1)
    syncs = [r for r in client.read_flow_runs(limit=50) if r.name.startswith("lipsync-job-")]
    logs = {{r.id: "\\n".join(l.message for l in client.read_logs(
        log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[r.id])), limit=200)) for r in syncs}}
out = []
for run in runs:
    try:
        report = run.state.result(raise_on_failure=False)
    except Exception as exc:
        report = str(exc)
    out.append({{"state": run.state.type.value, "message": run.state.message, "report": report}})
print(json.dumps({{"runs": out, "lipsync_runs": [{{"pool": r.work_pool_name, "state": r.state.type.value,
                   "log": logs[r.id], "started": str(r.start_time)}} for r in syncs]}}, default=str))
"""
    done = subprocess.run([sys.executable, "-c", script], env=stack["env"], capture_output=True, text=True,
                          timeout=RUN_TIMEOUT_S + 60)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])
