"""Deployment-run benchmark: what a dub costs when triggered from Prefect (as the UI does)
against the same dub from the command line, on the same server, catalog and cache.

Starts the README's setup in a temporary folder (a Prefect server, both pools,
`prefect deploy --all`, one `dub worker`), then times:

- trigger to done: a deployment run created through the API, until its final state
  (cold: empty cache; cached: the same input again);
- creation to first stage: from the run's creation to its first stage's start in the
  catalog (worker pick-up, process start, imports, validation);
- the baseline: the same dub through `dub` on the command line against the same server.

    python bench/deployment.py [--langs es,fr,de] [--keep]

Nothing is asserted: timings depend on the machine and its load.
"""

from __future__ import annotations

import argparse
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.prefect_stack import prefect_stack  # noqa: E402

EXAMPLE = ROOT / "examples" / "talking_head.mp4"
RUN_TIMEOUT_S = 600
FINAL = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}


def copy_example(folder: Path) -> Path:
    folder.mkdir(parents=True)
    for f in EXAMPLE.parent.glob(f"{EXAMPLE.stem}.*"):
        shutil.copy(f, folder / f.name)
    return folder / EXAMPLE.name


def first_stage_start(catalog: Path, flow_run_id: str) -> datetime:
    with sqlite3.connect(catalog) as db:
        started = db.execute("SELECT MIN(s.started_at) FROM stage_runs s JOIN jobs j ON s.job_id = j.id "
                             "WHERE j.flow_run_id = ?", (flow_run_id,)).fetchone()[0]
    when = datetime.fromisoformat(started)
    return when if when.tzinfo else when.replace(tzinfo=timezone.utc)  # SQLite keeps UTC without an offset


def deployment_run(client, stack: dict, video: Path, langs: list[str]) -> dict:
    deployment = client.read_deployment_by_name("dub-video/dub-video")
    t0 = time.perf_counter()
    run = client.create_flow_run_from_deployment(
        deployment.id, parameters={"input": str(video), "langs": langs, "options": {"voice": "espeak"}})
    while True:
        run = client.read_flow_run(run.id)
        if run.state and run.state.type.value in FINAL:
            break
        if time.perf_counter() - t0 > RUN_TIMEOUT_S:
            raise RuntimeError(f"run {run.name} not done in {RUN_TIMEOUT_S} s")
        time.sleep(0.2)
    done = time.perf_counter() - t0
    first = first_stage_start(stack["root"] / "catalog.db", str(run.id))
    return {"state": run.state.name, "seconds": done, "to_first_stage": first.timestamp() - run.created.timestamp()}


def cli_run(stack: dict, video: Path, langs: list[str]) -> float:
    """The same dub from the command line, with a cache of its own (cold on first use)."""
    env = {**stack["env"], "DUB_CACHE_DIR": str(stack["root"] / "cli-cache")}
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "polydub.cli", str(video), "--langs", ",".join(langs), "--voice", "espeak",
                    "--out", str(video.parent / "out")], env=env, check=True, capture_output=True,
                   timeout=RUN_TIMEOUT_S)
    return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--langs", default="es,fr,de")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder")
    args = parser.parse_args()
    langs = args.langs.split(",")
    root = Path(tempfile.mkdtemp(prefix="polydub-bench-deploy-"))
    from prefect.client.orchestration import SyncPrefectClient

    try:
        t0 = time.perf_counter()
        with prefect_stack(root) as stack, SyncPrefectClient(stack["api"]) as client:
            setup = time.perf_counter() - t0
            cold = deployment_run(client, stack, copy_example(root / "in" / "cold"), langs)
            cached = deployment_run(client, stack, copy_example(root / "in" / "cached"), langs)  # same bytes
            cli_cold = cli_run(stack, copy_example(root / "in" / "cli"), langs)
            cli_cached = cli_run(stack, root / "in" / "cli" / EXAMPLE.name, langs)
        rows = [
            ("setup: server, pools, deploy --all, worker", setup, ""),
            ("deployment run, cold: trigger to done", cold["seconds"], f"{cold['state']}"),
            ("deployment run, cached: trigger to done", cached["seconds"], f"{cached['state']}"),
            ("  creation to first stage (cold)", cold["to_first_stage"], "worker pick-up, process, imports, checks"),
            ("  creation to first stage (cached)", cached["to_first_stage"], ""),
            ("baseline: dub on the command line, same server, cold", cli_cold, "a cache of its own"),
            ("baseline: dub on the command line, cached", cli_cached, ""),
            ("ratio deployment / command line, cold", cold["seconds"] / cli_cold, ""),
            ("ratio deployment / command line, cached", cached["seconds"] / cli_cached, ""),
        ]
        print(f"\n{'measure':72} {'seconds':>8}  note")
        for name, value, note in rows:
            print(f"{name:72} {value:8.2f}  {note}")
    finally:
        if args.keep:
            print(f"kept {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
