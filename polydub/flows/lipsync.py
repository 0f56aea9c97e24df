"""Lip-sync on GPU workers, fed by CPU workers: the `lipsync` flow and the hand-off to it.

A CPU worker's `dub_video` prepares everything up to each language's mixed track, whose
results are in the shared store (DUB_STORAGE_URL in a bucket). With DUB_LIPSYNC_DEPLOYMENT
naming the `lipsync` deployment (on the `polydub-gpu` pool), `sync_on_gpu` runs it with the
URL of the video and the cache keys of the source and of each language's mix, and waits.
The GPU worker brings those from the store, syncs every language at once (one lip-sync per
GPU: the `polydub-gpu` limit), records its stage runs in the job's catalog rows and
publishes the synced videos to the store; the CPU flow then reads their keys from the
catalog and brings them back to assemble. The catalog and the bucket are the hand-off:
nothing large travels through Prefect.
"""

from __future__ import annotations

import time
from pathlib import Path

from prefect import flow

from polydub import cache, config
from polydub.errors import InputError, StageError, one_line
from polydub.job import JobPlan
from polydub.options import DubOptions
from polydub.report import StageResult
from polydub.storage import bucket_cache, objects, shared_catalog

INPUTS = "inputs"  # store folder: a local input's copy for the GPU side, named by its sha256
DONE = ("done", "cached")
HANDOFF_POLL_S = 1.0  # how often the CPU flow asks whether its GPU run ended (Prefect's default: 5 s)


@flow(name="lipsync", flow_run_name="lipsync-job-{job_id}", persist_result=False)
def lipsync_video(job_id: int, video: str, source_key: str, mixes: dict[str, str], lipsync: str = "on") -> dict:
    """Lip-sync a job's video to each language's mixed track, on this (GPU) worker.

    Args:
        job_id: The catalog job this belongs to (its stage runs are recorded there).
        video: URL of the source video in the object store.
        source_key: Cache key of the job's `probe` stage (names the face track).
        mixes: Language -> cache key of its `mix` stage, in the shared store.
        lipsync: `on` (fail when lip-sync cannot run here) or `auto` (skip, saying why).
    """
    from polydub.flows.logs import one_line_errors
    from polydub.redact import install
    from polydub.storage.inputs import fetch_input
    from polydub.tasks.common import JobContext
    from polydub.tasks.lipsync import lipsync_langs

    install()
    one_line_errors()
    store_url = objects.storage_url()
    if store_url is None:
        raise InputError("the lipsync deployment needs DUB_STORAGE_URL to name a bucket both sides reach")
    store = bucket_cache.store_at(store_url)
    with cache.scratch(config.cache_dir(), "lipsync-job") as root:
        ctx = JobContext(job_id, config.database_url(), str(root), store_url)
        local = fetch_input(video, "video")
        mixed = {}
        for lang, key in mixes.items():
            meta, why = bucket_cache.reuse(store, "mix", key, root)  # the track is brought when read
            if meta is None:
                raise StageError(f"lipsync {lang}: its mixed track is not in the store ({why or 'absent'})")
            mixed[lang] = StageResult("mix", lang, str(cache.stage_dir("mix", key, root)), None, "cached")
        source = StageResult("probe", None, str(cache.stage_dir("probe", source_key, root)), None, "cached")
        plan = JobPlan(input=str(local), name=Path(local).stem, out_dir="", langs=list(mixes),
                       options=DubOptions(lipsync=lipsync), input_url=video)
        results = lipsync_langs(ctx, plan, source, mixed)
    return {lang: {"status": r.status, "reason": r.reason} for lang, r in results.items()}


def video_url(plan: JobPlan, store: objects.Store) -> str:
    """Where the GPU side finds the video: its own URL, or a copy in the store named by its content."""
    if plan.input_url:
        return plan.input_url
    digest = cache.file_hash(plan.input)
    name = f"{INPUTS}/{digest}/{Path(plan.input).name}"
    if store.info(name) is None:
        store.put(plan.input, name)
    return store.location(name)


def sync_on_gpu(ctx, plan: JobPlan, source: StageResult, mixes: dict[str, StageResult]) -> dict[str, StageResult]:
    """Run the `lipsync` deployment for this job's languages and wait; the synced videos,
    brought from the store into this job's scratch. StageError when the GPU run fails."""
    from prefect.deployments import run_deployment

    from polydub.progress import emit, stage_logger
    from polydub.tasks.common import output_from
    from polydub.tasks.lipsync import LipSynced

    store = bucket_cache.store_at(ctx.store)
    name = config.lipsync_deployment()
    for lang in mixes:
        emit("lipsync", lang, "running")
    started = time.perf_counter()
    parameters = {"job_id": ctx.job_id, "video": video_url(plan, store), "source_key": Path(source.folder).name,
                  "mixes": {lang: Path(m.folder).name for lang, m in mixes.items()},
                  "lipsync": plan.options.lipsync}
    stage_logger().info("lipsync: handed to %s", name)
    try:
        run = run_deployment(name, parameters=parameters, timeout=config.lipsync_timeout_s(),
                             poll_interval=HANDOFF_POLL_S, tags=["polydub", "lipsync"], as_subflow=True)
    except Exception as exc:  # noqa: BLE001 - no such deployment, the API gone: the stage fails
        raise StageError(f"lipsync: handing to {name} failed: {one_line(exc)}") from exc
    state = run.state
    if state is not None and not state.is_final():  # DUB_LIPSYNC_TIMEOUT passed: not left queued or running
        _cancel(run.id, f"the dub waited DUB_LIPSYNC_TIMEOUT={config.lipsync_timeout_s():g} s for it")
        raise StageError(f"lipsync: the GPU run {run.name} did not end within DUB_LIPSYNC_TIMEOUT "
                         f"({config.lipsync_timeout_s():g} s; it was {state.name}): is a worker polling polydub-gpu?")
    if state is None or not state.is_completed():
        why = (state.message if state else None) or (state.name if state else "no state")
        raise StageError(f"lipsync: the GPU run {run.name} ended {state.name if state else 'unknown'}: {why}")
    stage_logger().info("lipsync: the GPU run %s ended after %.1f s", run.name, time.perf_counter() - started)
    rows = {}
    for row in shared_catalog(ctx.db_url).show_job(ctx.job_id)["stages"]:
        if row["stage"] == "lipsync" and row["lang"] in mixes:
            rows[row["lang"]] = row  # the latest of each language: its GPU run's
    results = {}
    for lang in mixes:
        row = rows.get(lang)
        if row is None or row["status"] not in DONE:
            reason = (row or {}).get("error") or ((row or {}).get("detail") or {}).get("reason") or "not synced"
            results[lang] = StageResult("lipsync", lang, "", status="skipped", reason=reason)
            emit("lipsync", lang, "skipped", reason)
            continue
        meta, why = bucket_cache.reuse(store, "lipsync", row["cache_key"], Path(ctx.cache_root))
        if meta is None:
            raise StageError(f"lipsync {lang}: the synced video is not in the store ({why or 'absent'})")
        results[lang] = StageResult("lipsync", lang, str(cache.stage_dir("lipsync", row["cache_key"],
                                                                           Path(ctx.cache_root))),
                                    output_from(LipSynced, meta), row["status"], "latentsync",
                                    row.get("model_version"), row.get("licence"))
        emit("lipsync", lang, row["status"])
    return results


def _cancel(run_id, why: str) -> None:
    """Cancel a GPU run the dub no longer waits for (best effort: the dub fails either way)."""
    from prefect.client.orchestration import get_client
    from prefect.states import Cancelled, Cancelling

    try:
        with get_client(sync_client=True) as client:
            state = client.read_flow_run(run_id).state
            ending = Cancelling if state is not None and state.is_running() else Cancelled
            client.set_flow_run_state(run_id, ending(message=why), force=True)
    except Exception:  # noqa: BLE001 - the stage's error says what happened
        pass
