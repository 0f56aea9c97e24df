"""Catalog benchmark: how fast `dub catalog` localizes a catalog of short clips, where the
time goes, what an item costs when there is nothing left to compute, and how fast
`dub status` answers on a catalog of 10,000 items x 5 languages.

Parts (`--parts`, each runnable alone), everything isolated in a temporary folder
(DUB_HOME, caches, catalogs, Prefect):

- dub: N clips of about 2 s, each unique (cut from the bundled example at its own offset
  and volume, re-encoded) so that the stage cache shares no work between items, each with
  an approved English transcript and approved translations whose text names the item (the
  voice's line cache is keyed on text); espeak-ng, lip-sync off: fully offline. Baseline,
  in the same run: `dub run` on the first K clips (several inputs, sequential: the way
  before catalogs), cold. Then `dub catalog --concurrency 2` cold (where the time goes,
  from the catalog's rows), warm (a new catalog over the same cache: every stage a cache
  hit, so what is left is the fixed cost per item) and an unchanged re-run (nothing due).
- workers: the same catalog through `--via-deployment dub-video` on a real Prefect server
  with W `dub worker`s (one run at a time each) sharing a new catalog and cache, cold.
- status: a synthetic catalog of 10,000 items x 5 languages, every delivery recorded done
  with the current recipe, 1 % of the inputs then changed (stale), on SQLite and on the
  machine's PostgreSQL: `dub status MANIFEST` as a command, the same in this process split
  into its parts, `dub status` without a manifest and `dub status --only stale`.

    python bench/catalog.py [--items 200] [--langs es,fr,de] [--workers 2] [--baseline 12]
        [--status-items 10000] [--status-langs 5] [--parts dub,workers,status] [--keep]

Prints markdown tables. Nothing is asserted: timings depend on the machine and its load.
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import csv
import hashlib
import io
import json
import os
import pstats
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.pipeline import stop_server  # noqa: E402 - the kept server, stopped and waited for

EXAMPLE = ROOT / "examples" / "talking_head.mp4"
EXAMPLE_S = 10.0  # the bundled example's length
CLIP_S = 2.0
CUE = (0.2, 1.8)  # the clip's one line, seconds
# One line per language, {n} the item's number: every item's text (and so its speech) differs.
LINES = {
    "en": "Offer {n} saves you time.",
    "es": "La oferta {n} te ahorra tiempo.",
    "fr": "L'offre {n} vous fait gagner du temps.",
    "de": "Angebot {n} spart Ihnen Zeit.",
    "it": "L'offerta {n} ti fa risparmiare tempo.",
    "pt": "A oferta {n} poupa-lhe tempo.",
    "nl": "Aanbod {n} bespaart je tijd.",
}
STATUS_LANGS = ("es", "fr", "de", "it", "pt", "nl", "pl", "sv", "da", "fi")
STALE_EVERY = 100  # one input in this many is changed after it was delivered: 1 % stale
REPEATS = 3  # timed runs after the first, of which the median is reported
PG_ADMIN_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
PG_URL = "postgresql://postgres@127.0.0.1:5432/{name}"
RUN_TIMEOUT_S = 3600  # one catalog command; 200 items take minutes
QUICK_TIMEOUT_S = 300
CLIP_WORKERS = 2  # ffmpeg cuts at once
INSERT_CHUNK = 2000  # delivery rows per INSERT
STAGE_ORDER = ("probe", "transcribe", "separate", "translate", "synthesize", "mix", "lipsync", "assemble",
               "multitrack")
PROFILE_TOP = 15


# --- small helpers ---------------------------------------------------------------------

def dub(*args: str) -> list[str]:
    return [sys.executable, "-m", "polydub.cli", *args]


def timed(args: list[str], env: dict[str, str], timeout: float = QUICK_TIMEOUT_S,
          expect: int | None = 0) -> tuple[float, subprocess.CompletedProcess]:
    """Run a command; its wall seconds and result. Stops the benchmark on an unexpected exit."""
    started = time.perf_counter()
    proc = subprocess.run(args, env=env, capture_output=True, text=True, timeout=timeout, cwd=ROOT, check=False)
    seconds = time.perf_counter() - started
    if expect is not None and proc.returncode != expect:
        tail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-20:])
        raise SystemExit(f"{' '.join(args[2:])[:300]}: exit {proc.returncode}, expected {expect}\n{tail}")
    return seconds, proc


def utc(text: str | None) -> datetime | None:
    """A catalog timestamp (SQLite keeps UTC without an offset) as an aware datetime."""
    if text is None:
        return None
    when = datetime.fromisoformat(str(text))
    return when if when.tzinfo else when.replace(tzinfo=timezone.utc)


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def table(title: str, header: tuple[str, ...], rows: list[tuple]) -> None:
    """A markdown table; floats with 2 decimals (3 under 1)."""
    def cell(value) -> str:
        if isinstance(value, float):
            return "" if value != value else (f"{value:.3f}" if abs(value) < 1 else f"{value:.2f}")
        return str(value)

    print(f"\n**{title}**\n")
    print("| " + " | ".join(header) + " |")
    print("|" + "|".join("---" for _ in header) + "|")
    for row in rows:
        print("| " + " | ".join(cell(v) for v in row) + " |")
    sys.stdout.flush()


def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def isolated_env(folder: Path) -> dict[str, str]:
    """A DUB_HOME of its own (catalog, kept Prefect server, models), no team server."""
    env = {k: v for k, v in os.environ.items() if k not in ("PREFECT_API_URL", "DUB_PREFECT_SERVER",
                                                                "DUB_DATABASE_URL", "DUB_CACHE_DIR")}
    home = folder / "home"
    env.update({"DUB_HOME": str(home), "DUB_MODELS_DIR": str(home / "models"),
                "PREFECT_HOME": str(folder / "prefect-client"), "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
                "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))})
    return env


def fresh(env: dict[str, str], folder: Path) -> dict[str, str]:
    """The environment with a new, empty cache and catalog in `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    return {**env, "DUB_CACHE_DIR": str(folder / "cache"), "DUB_DATABASE_URL": f"sqlite:///{folder / 'catalog.db'}"}


# --- the clips -------------------------------------------------------------------------

def srt_time(seconds: float) -> str:
    ms = round(seconds * 1000)
    return f"{ms // 3_600_000:02d}:{ms // 60_000 % 60:02d}:{ms // 1000 % 60:02d},{ms % 1000:03d}"


def write_srt(path: Path, text: str) -> None:
    start, end = CUE
    path.write_text(f"1\n{srt_time(start)} --> {srt_time(end)}\n{text}\n", encoding="utf-8")


def make_clips(folder: Path, count: int, langs: list[str]) -> tuple[Path, list[Path]]:
    """`count` unique clips with their approved scripts, and a CSV manifest naming them."""
    from polydub.cache import file_hash

    videos = folder / "videos"
    videos.mkdir(parents=True)

    def cut(n: int) -> Path:
        offset = round((n * 0.37) % (EXAMPLE_S - CLIP_S - 0.1), 3)  # its own piece of the example
        volume = round(0.55 + 0.45 * ((n * 37) % 101) / 101, 4)  # and its own loudness
        video = videos / f"ad-{n:04d}.mp4"
        subprocess.run(["ffmpeg", "-v", "error", "-y", "-ss", str(offset), "-t", str(CLIP_S), "-i", str(EXAMPLE),
                        "-af", f"volume={volume}", "-c:v", "libx264", "-preset", "ultrafast", "-c:a", "aac",
                        str(video)], check=True, timeout=120)
        for lang in ("en", *langs):
            write_srt(video.with_name(f"{video.stem}.{lang}.srt"), LINES[lang].format(n=n))
        return video

    with ThreadPoolExecutor(CLIP_WORKERS) as pool:
        clips = list(pool.map(cut, range(1, count + 1)))
    hashes = {file_hash(c) for c in clips}
    if len(hashes) != len(clips):
        raise SystemExit(f"only {len(hashes)} of {len(clips)} clips are distinct")
    manifest = folder / "ads.csv"
    with manifest.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["id", "input", "langs", "voice", "lipsync"])
        for clip in clips:
            writer.writerow([clip.stem, f"videos/{clip.name}", ",".join(langs), "espeak", "off"])
    return manifest, clips


# --- reading what a run did from its catalog -------------------------------------------

def catalog_rows(db: Path) -> tuple[list[dict], list[dict]]:
    """(jobs, stage runs) of a SQLite catalog."""
    with sqlite3.connect(db) as conn:
        conn.row_factory = sqlite3.Row
        jobs = [dict(r) for r in conn.execute("SELECT id, status, created_at, finished_at, flow_run_id FROM jobs")]
        runs = [dict(r) for r in conn.execute("SELECT job_id, stage, lang, status, seconds, started_at, finished_at "
                                              "FROM stage_runs")]
    for row in jobs + runs:
        for key in ("created_at", "finished_at", "started_at"):
            if key in row:
                row[key] = utc(row[key])
    return jobs, runs


def stage_name(run: dict) -> str:
    return "multitrack" if run["stage"] == "assemble" and run["lang"] is None else run["stage"]


def covered(intervals: list[tuple[datetime, datetime]]) -> float:
    """Seconds covered by the union of intervals."""
    total, end = 0.0, None
    for start, stop in sorted(intervals):
        if end is None or start > end:
            total += (stop - start).total_seconds()
            end = stop
        elif stop > end:
            total += (stop - end).total_seconds()
            end = stop
    return total


def breakdown(db: Path, started: datetime, wall: float, slots: int, runs: dict | None = None) -> dict:
    """Where a catalog run's time went, from its catalog (and, given `runs`: flow run id ->
    the `dub_video` run's (created, start, end) from Prefect, each item's run around its job).

    planning: the command's start to the first job row; dubbing: the first job row to the
    last job's end; slots: items dubbed at once (concurrency or workers)."""
    jobs, stage_runs = catalog_rows(db)
    jobs = [j for j in jobs if j["finished_at"]]
    if not jobs:
        return {"jobs": 0}
    first = min(j["created_at"] for j in jobs)
    last = max(j["finished_at"] for j in jobs)
    durations = [(j["finished_at"] - j["created_at"]).total_seconds() for j in jobs]
    by_job: dict[int, list] = {}
    for r in stage_runs:
        if r["started_at"] and r["finished_at"]:
            by_job.setdefault(r["job_id"], []).append((r["started_at"], r["finished_at"]))
    in_stages = [covered(by_job.get(j["id"], [])) for j in jobs]
    stages: dict[str, float] = {}
    statuses: dict[str, int] = {}
    for r in stage_runs:
        stages[stage_name(r)] = stages.get(stage_name(r), 0.0) + (r["seconds"] or 0.0)
        statuses[r["status"]] = statuses.get(r["status"], 0) + 1
    n = len(jobs)
    found = {"jobs": n, "planning": (first - started).total_seconds(), "dubbing": (last - first).total_seconds(),
             "after": wall - (last - started).total_seconds(), "job_mean": sum(durations) / n,
             "in_stages_mean": sum(in_stages) / n, "stages": stages, "statuses": statuses,
             "jobs_by_run": {j["flow_run_id"]: j for j in jobs}}
    timed_runs = [(runs[j["flow_run_id"]], j) for j in jobs if runs and runs.get(j["flow_run_id"], (0, None))[1]]
    if timed_runs:
        k = len(timed_runs)
        span = (max(r[2] for r, _ in timed_runs) - min(r[1] for r, _ in timed_runs)).total_seconds()
        found.update({
            "created_to_start": sum((r[1] - r[0]).total_seconds() for r, _ in timed_runs) / k,
            "before_job": sum((j["created_at"] - r[1]).total_seconds() for r, j in timed_runs) / k,
            "after_job": sum((r[2] - j["finished_at"]).total_seconds() for r, j in timed_runs) / k,
            "run_mean": sum((r[2] - r[1]).total_seconds() for r, _ in timed_runs) / k,
            "between_runs": (slots * span - sum((r[2] - r[1]).total_seconds() for r, _ in timed_runs)) / k,
            "runs_span": span,
        })
    return found


def flow_run_times(api: str, ids: list[str], since: datetime) -> tuple[dict[str, tuple], dict[str, tuple]]:
    """({flow run id: (created, start, end)}, {flow run id: its `dub-item` task run's (start, end)})
    as the Prefect server recorded them. In process each item's `dub_video` run is a subflow
    run by a `dub-item` task named `item[ID]`; the subflow is named after its input (here
    the item's id)."""
    from uuid import UUID

    from prefect.client.orchestration import SyncPrefectClient
    from prefect.client.schemas.filters import (
        FlowRunFilter,
        FlowRunFilterId,
        TaskRunFilter,
        TaskRunFilterName,
        TaskRunFilterStartTime,
    )

    runs, names = {}, {}
    with SyncPrefectClient(api) as client:
        for start in range(0, len(ids), 200):
            chunk = [UUID(i) for i in ids[start:start + 200] if i]
            for run in client.read_flow_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=chunk)),
                                             limit=len(chunk)):
                runs[str(run.id)] = (run.created, run.start_time, run.end_time)
                names[run.name.split(" ")[0]] = str(run.id)
        tasks, offset = [], 0
        while True:
            page = client.read_task_runs(task_run_filter=TaskRunFilter(
                name=TaskRunFilterName(like_="item["), start_time=TaskRunFilterStartTime(after_=since)),
                limit=200, offset=offset)
            tasks += page
            offset += len(page)
            if len(page) < 200:
                break
    parents = {names[t.name[len("item["):-1]]: (t.start_time, t.end_time)
               for t in tasks if t.name.startswith("item[") and t.name[len("item["):-1] in names}
    return runs, parents


def with_runs(db: Path, started: datetime, wall: float, slots: int, api: str) -> dict:
    """`breakdown` with each item's `dub_video` run and its `dub-item` task from the Prefect server."""
    jobs, _ = catalog_rows(db)
    runs, parents = flow_run_times(api, [j["flow_run_id"] for j in jobs], started)
    found = breakdown(db, started, wall, slots, runs)
    pairs = [(parents[i], runs[i]) for i in runs if i in parents and parents[i][1] and runs[i][2]]
    if pairs:
        k = len(pairs)
        span = (max(t[1] for t, _ in pairs) - min(t[0] for t, _ in pairs)).total_seconds()
        found.update({
            "task_to_run": sum((r[0] - t[0]).total_seconds() for t, r in pairs) / k,
            "task_to_run_max": max((r[0] - t[0]).total_seconds() for t, r in pairs),
            "run_to_task_end": sum((t[1] - r[2]).total_seconds() for t, r in pairs) / k,
            "task_mean": sum((t[1] - t[0]).total_seconds() for t, _ in pairs) / k,
            "between_tasks": (slots * span - sum((t[1] - t[0]).total_seconds() for t, _ in pairs)) / k,
        })
    return found


def run_rows(b: dict, slots: int, what_before: str) -> list[tuple]:
    """(part, seconds, s per item, share, what) rows of an item's `dub_video` run (and, in
    process, of the `dub-item` task that runs it as a subflow)."""
    if "run_mean" not in b:
        return []
    rows = []
    if "task_mean" in b:
        rows += [("item task (`dub-item` task run), mean", "", b["task_mean"], "100%", "its start to its end"),
                 ("  task start to the subflow's creation", "", b["task_to_run"],
                  f"{b['task_to_run'] / b['task_mean']:.0%}",
                  f"Prefect: the subflow's tracking task and flow run created (longest {b['task_to_run_max']:.1f} s)")]
    whole = b.get("task_mean", b["run_mean"])
    if "task_mean" in b:
        rows.append(("  subflow created to started", "", b["created_to_start"],
                     f"{b['created_to_start'] / whole:.0%}", "Prefect"))
    rows += [
        ("  item run (`dub_video` flow run), mean", "", b["run_mean"], f"{b['run_mean'] / whole:.0%}",
         "its start to its end"),
        ("    start to the job row", "", b["before_job"], f"{b['before_job'] / whole:.0%}", what_before),
        ("    the job (job row to its end)", "", b["job_mean"], f"{b['job_mean'] / whole:.0%}", ""),
        ("      of which inside a stage", "", b["in_stages_mean"], f"{b['in_stages_mean'] / whole:.0%}",
         "union of the job's stage runs (languages overlap)"),
        ("    the job's end to the run's end", "", b["after_job"], f"{b['after_job'] / whole:.0%}",
         "report, artifacts, the run's result"),
    ]
    if "task_mean" in b:
        rows += [("  the subflow's end to the task's end", "", b["run_to_task_end"],
                  f"{b['run_to_task_end'] / whole:.0%}", "Prefect: the subflow's heartbeat thread joined, its state"),
                 ("slot time between item tasks, per item", "", b["between_tasks"], "",
                  f"{slots} x (last task end - first task start) - sum of tasks, / items: the catalog loop "
                  "(submitting, polling), idle slots at the end")]
    else:
        rows.append(("slot time between item runs, per item", "", b["between_runs"], "",
                     f"{slots} x (last run end - first run start) - sum of runs, / items: pick-up, a process per run, "
                     "imports, loading the flow; idle workers at the end"))
    return rows


def statuses_text(counts: dict[str, int]) -> str:
    return ", ".join(f"{k} {v}" for k, v in sorted(counts.items()))


# --- part: dub (baseline, in-process cold / warm / unchanged) --------------------------

def catalog_run(manifest: Path, env: dict[str, str], out: Path | None, *extra: str) -> tuple[float, datetime, dict]:
    """`dub catalog MANIFEST --json ...`: wall seconds, when it started (UTC), its report."""
    args = dub("catalog", str(manifest), "--json", *(["--out", str(out)] if out else []), *extra)
    started = datetime.now(timezone.utc)
    seconds, proc = timed(args, env, timeout=RUN_TIMEOUT_S, expect=None)
    try:
        report = json.loads(proc.stdout)
    except json.JSONDecodeError:  # the whole run failed: say so in the table, go on with the rest
        error = " ".join(proc.stderr.strip().splitlines()[-1:])[:400]
        say(f"dub catalog: exit {proc.returncode}, no report: {error}")
        report = {"counts": {}, "error": f"exit {proc.returncode}, no report: {error}"}
    return seconds, started, report


def counts_text(report: dict) -> str:
    counts = ", ".join(f"{n} {s}" for s, n in sorted(report["counts"].items()))
    return f"FAILED: {report['error']}" if report.get("error") else counts


def kept_server(env: dict[str, str]) -> str:
    return json.loads((Path(env["DUB_HOME"]) / "prefect" / "server.json").read_text())["url"]


def stage_rows(b: dict, n: int, langs: int) -> list[tuple]:
    total = sum(b["stages"].values()) or 1.0
    rows = []
    for stage in sorted(b["stages"], key=lambda s: STAGE_ORDER.index(s) if s in STAGE_ORDER else 99):
        per = "per video" if stage in ("probe", "transcribe", "separate", "multitrack") else f"{langs} languages"
        rows.append((f"stage {stage}, summed", b["stages"][stage], b["stages"][stage] / n,
                     f"{b['stages'][stage] / total:.0%} of stages", per))
    return rows


def part_dub(args, folder: Path, manifest: Path, clips: list[Path], env: dict[str, str]) -> dict:
    n, k, c = len(clips), min(args.baseline, len(clips)), args.concurrency
    say(f"starting the kept Prefect server in {folder / 'home'} ...")
    timed(dub("server", "start"), env)
    api = kept_server(env)
    python_s = min(timed([sys.executable, "-c", "pass"], env)[0] for _ in range(2))
    import_s = min(timed([sys.executable, "-c", "import polydub.flows.batch"], env)[0] for _ in range(2))

    say(f"baseline: dub run on {k} clips, sequential, cold ...")
    base_env = fresh(env, folder / "baseline")
    base_s, proc = timed(dub("run", *map(str, clips[:k]), "--langs", ",".join(args.langs), "--voice", "espeak",
                             "--lipsync", "off", "--out", str(folder / "baseline" / "out"), "--json"),
                         base_env, timeout=RUN_TIMEOUT_S)
    reports = json.loads(proc.stdout)
    reports = reports if isinstance(reports, list) else [reports]
    base_done = sum(r["status"] == "done" for r in reports)
    base_rate = 60 * k / base_s
    base_jobs = catalog_rows(folder / "baseline" / "catalog.db")[0]
    base_job = sum((j["finished_at"] - j["created_at"]).total_seconds() for j in base_jobs) / len(base_jobs)

    say(f"dub catalog: {n} items, cold, --concurrency {c} ...")
    cold_env = fresh(env, folder / "cold")
    cold_s, cold_t0, cold = catalog_run(manifest, cold_env, folder / "cold" / "out", "--concurrency", str(c))
    cold_b = with_runs(folder / "cold" / "catalog.db", cold_t0, cold_s, c, api)
    cold_rate = 60 * n / cold_s

    say("dub catalog: warm (a new catalog, the same cache) ...")
    warm_env = {**fresh(env, folder / "warm"), "DUB_CACHE_DIR": cold_env["DUB_CACHE_DIR"]}
    warm_s, warm_t0, warm = catalog_run(manifest, warm_env, folder / "warm" / "out", "--concurrency", str(c))
    warm_b = with_runs(folder / "warm" / "catalog.db", warm_t0, warm_s, c, api)

    say("dub catalog: unchanged re-run (nothing due) ...")
    again_s, _, again = catalog_run(manifest, warm_env, folder / "warm" / "out", "--concurrency", str(c))
    again_jobs = len(catalog_rows(folder / "warm" / "catalog.db")[0]) - warm_b["jobs"]

    title = (f"dub catalog: {n} clips of {CLIP_S:.0f} s x {len(args.langs)} languages ({','.join(args.langs)}), "
             f"espeak-ng, lip-sync off, --concurrency {c}; {os.cpu_count()} CPUs, load average "
             f"{os.getloadavg()[0]:.1f} at the end")
    table(title, ("run", "items", "wall s", "items/min", "ratio", "note"), [
        (f"baseline: `dub run` {k} inputs, sequential, cold", k, base_s, base_rate, 1.0,
         f"{base_done} of {k} done; job {base_job:.2f} s each"),
        ("`dub catalog`, cold", n, cold_s, cold_rate, cold_rate / base_rate, counts_text(cold)),
        ("`dub catalog`, warm (new catalog, same cache)", n, warm_s, 60 * n / warm_s, (60 * n / warm_s) / base_rate,
         counts_text(warm)),
        ("`dub catalog`, unchanged re-run", n, again_s, "", "", f"{counts_text(again)}; {again_jobs} jobs"),
    ])
    before = "per-item checks (probe, decode check, sidecars, backends), probe, source hash and row"
    table(f"where the time goes: `dub catalog`, cold, {n} items (stage runs: {statuses_text(cold_b['statuses'])})",
          ("part", "seconds", "s per item", "share", "what"), [
              ("wall", cold_s, cold_s / n, "100%", f"{cold_b['jobs']} jobs"),
              ("planning: start to the first job row", cold_b["planning"], "", f"{cold_b['planning'] / cold_s:.0%}",
               "interpreter, imports, server check, manifest, probing and checking every item, claims, first run"),
              ("dubbing: first job row to the last job's end", cold_b["dubbing"], cold_b["dubbing"] / n,
               f"{cold_b['dubbing'] / cold_s:.0%}", f"{c} items at a time"),
              ("after: the last job's end to exit", cold_b["after"], "", f"{cold_b['after'] / cold_s:.0%}",
               "the last run's end, deliveries, the table"),
              *run_rows(cold_b, c, before),
              *stage_rows(cold_b, n, len(args.langs)),
          ])
    table(f"fixed cost per item: `dub catalog`, warm, {n} items (stage runs: {statuses_text(warm_b['statuses'])})",
          ("part", "seconds", "s per item", "share", "what"), [
              ("python -c pass", python_s, "", "", "interpreter start, best of 2"),
              ("import polydub.flows.batch", import_s, "", "", "Prefect and the flows, best of 2"),
              ("wall", warm_s, warm_s / n, "100%", "every stage a cache hit"),
              ("planning: start to the first job row", warm_b["planning"], "", f"{warm_b['planning'] / warm_s:.0%}",
               "as cold: nothing of it is cached"),
              ("wall per item, without planning", "", (warm_s - warm_b["planning"]) / n, "", f"{c} at a time"),
              ("slot time per item", "", c * (warm_s - warm_b["planning"]) / n, "",
               f"{c} x the above: what one item occupies"),
              *run_rows(warm_b, c, before),
              ("cached stages, summed per item", "", sum(warm_b["stages"].values()) / n, "",
               "lookups, size + sha256 checks, copies (languages overlap)"),
              ("unchanged re-run, whole catalog", again_s, "", "", f"{n} items, nothing due"),
          ])
    return {"cold_rate": cold_rate, "cold_s": cold_s, "base_rate": base_rate}


# --- part: two workers -----------------------------------------------------------------

def flow_runs(api: str, tag: str) -> list:
    from prefect.client.orchestration import SyncPrefectClient
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterTags

    found, offset = [], 0
    with SyncPrefectClient(api) as client:
        while True:
            page = client.read_flow_runs(flow_run_filter=FlowRunFilter(tags=FlowRunFilterTags(all_=[tag])),
                                         limit=200, offset=offset)
            found += page
            offset += len(page)
            if len(page) < 200:
                return found


def part_workers(args, folder: Path, manifest: Path, n: int, in_process: dict | None) -> None:
    from tests.prefect_stack import prefect_stack

    root = folder / "stack"
    root.mkdir()
    with contextlib.ExitStack() as stack_of:
        server_db, why = "SQLite", ""
        if args.prefect_db == "postgresql":  # a team's server; SQLite's write lock answers 503 under load
            url, why = stack_of.enter_context(postgres_database())
            if url:
                server_db = "PostgreSQL"
                stack_of.enter_context(environment(
                    PREFECT_API_DATABASE_CONNECTION_URL=url.replace("postgresql://", "postgresql+asyncpg://", 1)))
        say(f"Prefect server ({server_db}), pools, deploy --all, {args.workers} workers ...")
        measured = workers_run(args, root, manifest, n, prefect_stack)
    workers_table(args, n, in_process, server_db, why, *measured)


@contextlib.contextmanager
def environment(**values: str):
    """Variables set in this process (and so in what it starts) for a while."""
    before = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in before.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def workers_run(args, root: Path, manifest: Path, n: int, prefect_stack) -> tuple:
    """Set up the stack, run the catalog through it; (set-up s, wall s, start, report, runs, breakdown)."""
    t0 = time.perf_counter()
    with prefect_stack(root, workers=args.workers, limit=1) as stack:
        setup_s = time.perf_counter() - t0
        env = {**stack["env"], "PREFECT_LOGGING_LEVEL": "WARNING",
               "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
        say(f"dub catalog --via-deployment dub-video: {n} items, cold ...")
        wall, started, report = catalog_run(manifest, env, None, "--via-deployment", "dub-video")
        # the catalog flow tags each run with its manifest's key
        runs = flow_runs(stack["api"], f"catalog:{hashlib.sha256(str(manifest.resolve()).encode()).hexdigest()[:12]}")
        b = breakdown(root / "catalog.db", started, wall, args.workers,
                      {str(r.id): (r.created, r.start_time, r.end_time) for r in runs})
    return setup_s, wall, started, report, runs, b


def workers_table(args, n: int, in_process: dict | None, server_db: str, why: str, setup_s: float, wall: float,
                  started: datetime, report: dict, runs: list, b: dict) -> None:
    created = sorted(r.created for r in runs)
    states: dict[str, int] = {}
    for r in runs:
        name = r.state.name if r.state else "?"
        states[name] = states.get(name, 0) + 1
    rate = 60 * n / wall
    nan = float("nan")
    rows = [
        ("set-up: server, pools, deploy --all, workers", setup_s, "", "",
         f"Prefect server on {server_db}{f' ({why})' if why else ''}; not counted below"),
        ("wall", wall, wall / n, rate, f"{counts_text(report)}; runs {statuses_text(states)}"),
        ("start to the first run created", (created[0] - started).total_seconds() if created else nan, "", "",
         "interpreter, imports, manifest, planning (no probing), claims"),
        ("first to last run created", (created[-1] - created[0]).total_seconds() if created else nan, "", "",
         f"{len(runs)} runs created at once"),
        ("start to the first job row", b.get("planning", nan), "", "", ""),
    ]
    rows += [(part, sec, per, "", what) for part, sec, per, _, what in
             run_rows(b, args.workers, "checks (probe, decode check, sidecars, backends), probe, source hash and row")]
    rows.append(("run created to started, mean", "", b.get("created_to_start", nan), "",
                 "mostly waiting in the queue for a free worker"))
    rows += [("stage " + r[0].split(" ", 1)[1], r[1], r[2], "", r[4]) for r in stage_rows(b, n, len(args.langs))]
    if in_process:
        rows.append(("ratio to in-process (items/min)", rate / in_process["cold_rate"], "", "",
                     f"in-process: {in_process['cold_rate']:.1f} items/min, --concurrency {args.concurrency}"))
    table(f"through {args.workers} workers (`--via-deployment dub-video`, one run at a time each), {n} items x "
          f"{len(args.langs)} languages, cold (stage runs: {statuses_text(b.get('statuses', {}))})",
          ("measure", "seconds", "s per item", "items/min", "note"), rows)


# --- part: status on a synthetic catalog -----------------------------------------------

def synthetic_catalog(folder: Path, items: int, langs: list[str]) -> tuple[Path, Path]:
    """`items` tiny distinct inputs (never probed by `dub status`), a CSV manifest, and a
    delivered file for every item x language. Returns (manifest, outputs folder)."""
    videos, out = folder / "videos", folder / "out"
    videos.mkdir(parents=True)
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["id", "input", "langs", "voice", "lipsync"])
    for n in range(1, items + 1):
        name = f"spot-{n:05d}"
        (videos / f"{name}.mp4").write_bytes(f"not a video: item {n}\n".encode())
        writer.writerow([name, f"videos/{name}.mp4", ",".join(langs), "espeak", "off"])
        (out / name).mkdir(parents=True)
        for lang in langs:
            (out / name / f"{name}.{lang}.mp4").write_bytes(b"")
    manifest = folder / "spots.csv"
    manifest.write_text(buffer.getvalue())
    return manifest, out


def delivery_rows(url: str, manifest: Path, out: Path) -> list[dict]:
    """A done delivery for every item x language, fingerprinted with its current recipe."""
    from polydub.batch import staleness
    from polydub.batch.manifest import load_manifest
    from polydub.storage import Catalog
    from polydub.storage.tables import utcnow

    cat = Catalog(url)
    loaded = load_manifest(manifest)
    judge = staleness.Recipes(cat)
    recipes = judge.for_items(loaded.items)
    now = utcnow()
    rows = []
    for item in loaded.items:
        for lang in item.langs:
            recipe = recipes[(item.id, lang)]
            rows.append({"manifest": loaded.key, "item": item.id, "lang": lang, "status": "done",
                         "fingerprint": judge.fingerprints[(item.id, lang)], "recipe": recipe,
                         "path": str(out / item.id / f"{item.id}.{lang}.mp4"), "duration": CLIP_S,
                         "sha256": "0" * 64, "updated_at": now, "delivered_at": now})
    cat.close()
    return rows


def fill(url: str, rows: list[dict]) -> float:
    """Bulk-insert the deliveries into a new catalog; forget its file digests (so the
    first `dub status` hashes every input, as on a catalog it has never seen). Seconds."""
    from sqlalchemy import delete, insert

    from polydub.storage import Catalog
    from polydub.storage.tables import Delivery, FileDigest

    started = time.perf_counter()
    cat = Catalog(url)
    with cat.writing() as session:
        for start in range(0, len(rows), INSERT_CHUNK):
            session.execute(insert(Delivery), rows[start:start + INSERT_CHUNK])
        session.execute(delete(FileDigest))
    cat.close()
    return time.perf_counter() - started


def in_process_status(url: str, manifest: Path) -> dict[str, float]:
    """`dub status MANIFEST`'s work in this process, part by part (what `staleness.assess`
    does, with its digests timed inside the recipes)."""
    from polydub.batch import staleness
    from polydub.batch.manifest import load_manifest
    from polydub.storage import Catalog, deliveries

    spent = {"digests": 0.0}
    real = deliveries.digests

    def counted(cat, paths):
        t = time.perf_counter()
        try:
            return real(cat, paths)
        finally:
            spent["digests"] += time.perf_counter() - t

    t = time.perf_counter()
    cat = Catalog(url)
    spent["open catalog"] = time.perf_counter() - t
    t = time.perf_counter()
    loaded = load_manifest(manifest)
    spent["load manifest"] = time.perf_counter() - t
    deliveries.digests = counted  # staleness calls it through the module
    try:
        t = time.perf_counter()
        judge = staleness.Recipes(cat)
        recipes = judge.for_items(loaded.items)
        spent["recipes"] = time.perf_counter() - t - spent["digests"]
    finally:
        deliveries.digests = real
    t = time.perf_counter()
    recorded = {(r.item, r.lang): r for r in deliveries.records(cat, loaded.key)}
    spent["read deliveries"] = time.perf_counter() - t
    t = time.perf_counter()
    cells = {(item.id, lang): staleness.cell(item.id, lang, recorded.get((item.id, lang)),
                                             judge.fingerprints[(item.id, lang)])
             for item in loaded.items for lang in item.langs}
    spent["cells"] = time.perf_counter() - t
    t = time.perf_counter()
    stale = [key for key, c in cells.items() if c.state == "stale"]
    for key, old in deliveries.recipes_of(cat, loaded.key, stale).items():
        cells[key].why = staleness.what_changed(old, recipes[key])
    spent["why stale"] = time.perf_counter() - t
    spent["stale cells"] = len(stale)
    cat.close()
    return spent


def status_profile(url: str, manifest: Path) -> str:
    """cProfile of `dub status MANIFEST`'s command function in this process: the top costs."""
    from polydub.cli.batch import status_cmd

    profile = cProfile.Profile()
    with contextlib.redirect_stdout(io.StringIO()):
        profile.runcall(status_cmd, manifest=manifest, only=None, langs=None, voice=None, lipsync=None,
                        translator=None, brand=None, settings=None, db=url, as_json=False)
    text = io.StringIO()
    stats = pstats.Stats(profile, stream=text)
    stats.sort_stats("cumulative").print_stats(PROFILE_TOP)
    stats.sort_stats("tottime").print_stats(PROFILE_TOP)
    return text.getvalue()


@contextlib.contextmanager
def postgres_database():
    """A new database on the machine's PostgreSQL, dropped afterwards; None if unreachable."""
    import sqlalchemy as sa

    try:
        admin = sa.create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT", connect_args={"connect_timeout": 3})
        name = f"polydub_bench_{uuid.uuid4().hex[:12]}"
        with admin.connect() as conn:
            conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    except Exception as exc:  # noqa: BLE001 - no server: the part says so and goes on
        yield None, str(exc).splitlines()[0]
        return
    try:
        yield PG_URL.format(name=name), ""
    finally:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.dispose()


def measure_status(url: str, manifest: Path, env: dict[str, str]) -> dict[str, list[float]]:
    """Each measure: the first run, then REPEATS more."""
    times: dict[str, list[float]] = {}
    commands = {"a": ("status", str(manifest)), "c": ("status",), "d": ("status", str(manifest), "--only", "stale")}
    for key in ("a", "b", "c", "d"):
        for _ in range(1 + REPEATS):
            if key == "b":
                parts = in_process_status(url, manifest)
                times.setdefault("b", []).append(sum(v for k, v in parts.items() if k != "stale cells"))
                for part, seconds in parts.items():
                    times.setdefault(f"b:{part}", []).append(seconds)
            else:
                seconds, _ = timed(dub(*commands[key], "--db", url), env)
                times.setdefault(key, []).append(seconds)
    return times


def part_status(args, folder: Path, env: dict[str, str]) -> None:
    items, langs = args.status_items, list(STATUS_LANGS[:args.status_langs])
    cells = items * len(langs)
    say(f"status: {items} inputs, {cells} delivered files, manifest ...")
    t0 = time.perf_counter()
    manifest, out = synthetic_catalog(folder / "status", items, langs)
    files_s = time.perf_counter() - t0
    sqlite_url = f"sqlite:///{folder / 'status' / 'catalog.db'}"
    t0 = time.perf_counter()
    rows = delivery_rows(f"sqlite:///{folder / 'status' / 'recipes.db'}", manifest, out)
    recipes_s = time.perf_counter() - t0
    results: dict[str, dict] = {}
    setup = [("inputs, delivered files, manifest", files_s), ("recipes and fingerprints", recipes_s)]
    with postgres_database() as (pg_url, why):
        databases = [("SQLite", sqlite_url)] + ([("PostgreSQL", pg_url)] if pg_url else [])
        for name, url in databases:
            setup.append((f"{name}: insert {len(rows)} deliveries", fill(url, rows)))
        for n in range(1, items + 1, STALE_EVERY):  # 1 % of the inputs change after delivery
            with (folder / "status" / "videos" / f"spot-{n:05d}.mp4").open("ab") as f:
                f.write(b"re-edited\n")
        for name, url in databases:
            say(f"status: timing on {name} ...")
            results[name] = measure_status(url, manifest, {**env, "DUB_CACHE_DIR": str(folder / "status" / "cache")})
            results[name]["profile"] = status_profile(url, manifest) if median(results[name]["a"][1:]) > 1 else ""
    python_s = min(timed([sys.executable, "-c", "pass"], env)[0] for _ in range(2))
    import_s = min(timed([sys.executable, "-c", "import polydub.cli, polydub.cli.batch, polydub.batch.staleness, "
                          "polydub.batch.manifest, polydub.storage"], env)[0] for _ in range(2))

    header = ["measure"]
    for name in results:
        header += [f"{name} first", f"{name} median of {REPEATS}"]
    labels = [("a", "(a) `dub status MANIFEST`, command (first: cold digests)"),
              ("b", "(b) the same in this process"),
              ("b:open catalog", "  open the catalog"), ("b:load manifest", "  load manifest"),
              ("b:digests", "  digests (size + mtime; rehash changed)"), ("b:recipes", "  recipes"),
              ("b:read deliveries", "  read deliveries"), ("b:cells", "  cells (fingerprints, file checks)"),
              ("b:why stale", "  why stale (recorded recipes of stale cells)"),
              ("c", "(c) `dub status`, no manifest"), ("d", "(d) `dub status MANIFEST --only stale`")]
    out_rows = []
    for key, label in labels:
        row = [label]
        for times in results.values():
            row += [times[key][0], median(times[key][1:])]
        out_rows.append(tuple(row))
    stale = [int(t["b:stale cells"][-1]) for t in results.values()]
    table(f"`dub status`: {items} items x {len(langs)} languages = {cells} deliveries, "
          f"{stale[0] if stale else '?'} stale; {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}",
          tuple(header), out_rows)
    table("status set-up and start-up (not in the times above)", ("measure", "seconds"),
          [*setup, ("python -c pass, best of 2", python_s), ("import the CLI and catalog modules, best of 2", import_s)])
    if why:
        print(f"\nPostgreSQL at 127.0.0.1:5432 skipped: {why}")
    for name, times in results.items():
        if times["profile"]:
            print(f"\n`dub status MANIFEST` on {name} took over 1 s; cProfile of the command in this process:\n")
            print("```\n" + times["profile"].strip() + "\n```")


# --- main ------------------------------------------------------------------------------

def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--items", type=int, default=200, help="clips in the catalog")
    parser.add_argument("--langs", default="es,fr,de", help=f"of {', '.join(l for l in LINES if l != 'en')}")
    parser.add_argument("--workers", type=int, default=2, help="dub workers for the workers part")
    parser.add_argument("--concurrency", type=int, default=2, help="items at once in process")
    parser.add_argument("--baseline", type=int, default=12, help="clips dubbed by `dub run` for the baseline")
    parser.add_argument("--status-items", type=int, default=10_000)
    parser.add_argument("--status-langs", type=int, default=5, help=f"at most {len(STATUS_LANGS)}")
    parser.add_argument("--parts", default="dub,workers,status", help="of dub, workers, status")
    parser.add_argument("--prefect-db", choices=("postgresql", "sqlite"), default="postgresql",
                        help="the workers' Prefect server's database (PostgreSQL: a new one on 127.0.0.1:5432, "
                             "SQLite if unreachable)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder")
    args = parser.parse_args()
    args.langs = [lang.strip() for lang in args.langs.split(",") if lang.strip()]
    parts = {p.strip() for p in args.parts.split(",") if p.strip()}
    if parts - {"dub", "workers", "status"} or not parts:
        parser.error("--parts takes dub, workers and/or status")
    if not args.langs or any(lang not in LINES or lang == "en" for lang in args.langs):
        parser.error(f"--langs takes {', '.join(l for l in LINES if l != 'en')}")
    if not 1 <= args.status_langs <= len(STATUS_LANGS) or args.items < 1 or args.status_items < 1:
        parser.error(f"--items and --status-items at least 1; --status-langs 1 to {len(STATUS_LANGS)}")

    folder = Path(tempfile.mkdtemp(prefix="polydub-bench-catalog-"))
    env = isolated_env(folder)
    started = time.perf_counter()
    server_up = False
    try:
        in_process = None
        if parts & {"dub", "workers"}:
            say(f"cutting {args.items} clips ...")
            manifest, clips = make_clips(folder / "ads", args.items, args.langs)
            if "dub" in parts:
                server_up = True
                try:
                    in_process = part_dub(args, folder, manifest, clips, env)
                finally:  # an idle Prefect server still takes CPU from what follows
                    stop_server(env)
                    server_up = False
            if "workers" in parts:
                part_workers(args, folder, manifest, len(clips), in_process)
        if "status" in parts:
            part_status(args, folder, env)
    finally:
        if server_up:
            stop_server(env)
        if args.keep:
            say(f"kept {folder}")
        else:
            shutil.rmtree(folder, ignore_errors=True)
        say(f"benchmark took {time.perf_counter() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
