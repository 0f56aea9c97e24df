"""The lip-sync stage: once per video for all languages, on the GPU.

Face tracking is cached per source video; each language's synced video is cached on its
own key, so adding a language syncs only that language.
"""

from __future__ import annotations

import os
import re
import shutil
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from prefect import task
from prefect.cache_policies import NONE

from polydub import cache, config, licences
from polydub.errors import StageError, one_line
from polydub.job import JobPlan
from polydub.lipsync import lipsync_decision
from polydub.lipsync.weights import weights_fingerprint
from polydub.progress import emit, stage_logger
from polydub.report import StageResult
from polydub.storage import bucket_cache, shared_catalog
from polydub.storage.catalog import this_machine
from polydub.tasks.common import JobContext, cache_record, output_from, skip_stage
from polydub.tasks.language import MIXED, Mixdown
from polydub.tasks.source import SourceAudio

LIPSYNC_STEPS = 20  # denoising steps per frame chunk
GPU_LIMIT = "polydub-gpu"  # Prefect global concurrency limits "polydub-gpu-MACHINE": one lip-sync per GPU
GPU_LIMIT_NAME_CHARS = 100
VIDEO = "video.mp4"


@dataclass
class LipSynced:
    """A language's video with the face synced to its dub (`file` in the folder)."""

    file: str
    frames: int | None = None
    face_frames: int | None = None  # frames in which a face was found and synced
    track: str | None = None  # how the face track was had: computed or cached


def gpu_limit_name() -> str:
    """This machine's Prefect global concurrency limit: "polydub-gpu-HOST-KEY". One per
    machine, sized by its own GPUs: a fleet-wide limit sized by the first GPU machine would
    let two one-GPU machines lip-sync one at a time."""
    host, _, key = this_machine().partition("#")
    return re.sub(r"[^A-Za-z0-9._-]+", "-", f"{GPU_LIMIT}-{host}-{key}")[:GPU_LIMIT_NAME_CHARS]


def _gpu_slot():
    """Hold one slot of this machine's Prefect global concurrency limit (`gpu_limit_name`).

    Created on first use with one slot per visible GPU (`prefect gcl update` changes it);
    DUB_GPU_LIMIT=0 runs without it.
    """
    from contextlib import nullcontext

    from prefect.client.orchestration import get_client
    from prefect.concurrency.sync import concurrency
    from prefect.exceptions import ObjectNotFound

    if not config.gpu_limit():
        return nullcontext()
    import torch

    name = gpu_limit_name()
    with get_client(sync_client=True) as client:
        try:
            client.read_global_concurrency_limit_by_name(name)
        except ObjectNotFound:
            client.upsert_global_concurrency_limit_by_name(name, max(1, torch.cuda.device_count()))
    return concurrency(name, occupy=1, strict=True)


MODEL_LOADS = {"loaded": 0, "reused": 0}  # this process's count: a long-lived GPU worker loads once


def loaded_models(models_dir: str, version: str, device: str, weights: str):
    """The lip-sync models, loaded once per process and kept (keyed by the weights' fingerprint,
    so new weights load anew): a GPU worker that syncs video after video in one process pays
    the load once. One set is kept; the GPU slot makes its use one at a time."""
    with _MODELS_LOCK:
        key = (models_dir, version, device, weights)
        if _MODELS.get("key") == key:
            MODEL_LOADS["reused"] += 1
            stage_logger().info("lipsync: models already loaded in this process (%s)", version)
            return _MODELS["models"]
        from polydub.lipsync import stage as lipsync

        _MODELS.clear()  # the old set goes before the new one loads: one set in memory
        started = time.perf_counter()
        models = lipsync.LipSyncModels.load(models_dir, version=version, device=device)
        _MODELS.update(key=key, models=models)
        MODEL_LOADS["loaded"] += 1
        stage_logger().info("lipsync: models loaded in %.1f s (%s)", time.perf_counter() - started, version)
        return models


_MODELS: dict = {}
_MODELS_LOCK = threading.Lock()


@task(name="lipsync", task_run_name="lipsync[all languages]", cache_policy=NONE, persist_result=False)
def lipsync_langs(ctx: JobContext, plan: JobPlan, source: StageResult[SourceAudio],
                  mixes: dict[str, StageResult[Mixdown]]) -> dict[str, StageResult[LipSynced]]:
    """Lip-synced video per language, or 'skipped' results with the reason."""
    run, reason = lipsync_decision(plan.options.lipsync, plan.has_video)
    if not run:
        if plan.options.lipsync == "on":
            raise StageError(f"lip-sync cannot run: {reason}")
        return {lang: skip_stage(ctx, "lipsync", lang, reason) for lang in mixes}

    from polydub.lipsync import stage as lipsync

    version = lipsync.default_version()
    deep_cache = int(config.lipsync_deep_cache())  # full UNet every Nth step
    # DUB_LIPSYNC_STEPS: denoising steps, 20 unless set (the tests' tiny random models need 2)
    steps = int(os.environ.get("DUB_LIPSYNC_STEPS") or LIPSYNC_STEPS)
    prefer = lipsync.face_choice()  # which face when several are visible
    root = Path(ctx.cache_root)
    weights = weights_fingerprint(config.models_dir(), version)
    # impl: bumped when the stage makes other pixels from the same inputs (2: reference anchor groups,
    # 3: the reference's paste-back)
    keys = {lang: cache.stage_key("lipsync", source=Path(source.folder).name, mix=Path(m.folder).name,
                                  version=version, weights=weights, deep_cache=deep_cache, face=prefer, impl=3,
                                  **({"steps": steps} if steps != LIPSYNC_STEPS else {}))
            for lang, m in mixes.items()}
    cat = shared_catalog(ctx.db_url)
    licence = licences.LIPSYNC.label
    runs = {lang: cat.start_stage(ctx.job_id, "lipsync", lang, keys[lang], "latentsync", version, licence=licence)
            for lang in mixes}
    results: dict[str, StageResult[LipSynced]] = {}
    checked = {lang: cache.inspect("lipsync", keys[lang], root) for lang in mixes}  # (record, damage)
    store = bucket_cache.store_at(ctx.store) if ctx.store else None
    try:
        for lang in mixes:  # the cache in a bucket: a synced video made on any GPU machine is reused here
            if store is not None and checked[lang][0] is None:
                found = bucket_cache.reuse(store, "lipsync", keys[lang], root)
                if found[1]:
                    bucket_cache.discard(store, "lipsync", keys[lang])
                checked[lang] = (found[0], found[1] or checked[lang][1])
    except Exception as exc:  # the store failed on the way: nothing is marked done
        for lang in mixes:
            cat.finish_stage(runs[lang], "failed", error=one_line(exc), backend="latentsync")
        raise StageError(f"lipsync: {one_line(exc)}") from exc
    missing = [lang for lang in mixes if checked[lang][0] is None]
    for lang in mixes:
        if lang not in missing:
            cat.finish_stage(runs[lang], "cached", backend="latentsync", model_version=version)
            emit("lipsync", lang, "cached")
            results[lang] = StageResult("lipsync", lang, str(cache.stage_dir("lipsync", keys[lang], root)),
                                        output_from(LipSynced, checked[lang][0]), "cached", "latentsync", version,
                                        licence)
    if not missing:
        return results
    for lang in missing:
        emit("lipsync", lang, "running")
    started = time.perf_counter()
    try:
        with cache.scratch(root, "lipsync") as work, _gpu_slot():
            models = loaded_models(str(config.models_dir()), version, lipsync.lipsync_device(), weights)
            outs = {lang: Path(work) / f"{lang}.mp4" for lang in missing}
            info = lipsync.lipsync_video(
                Path(plan.input), {lang: Path(mixes[lang].file(MIXED)) for lang in missing}, outs,
                models, track_cache=root / "facetrack" / f"{Path(source.folder).name}-{prefer}.npz",
                num_steps=steps, deep_cache=deep_cache, prefer_face=prefer)
            seconds = round(time.perf_counter() - started, 3)
            for lang in missing:
                made = LipSynced(VIDEO, info.get("frames"), info.get("face_frames"), info.get("track"))
                # a damaged result is replaced by building(), and the report says so
                result = StageResult("lipsync", lang, str(cache.stage_dir("lipsync", keys[lang], root)), made,
                                     "done", "latentsync", version, licence, seconds, rebuilt=checked[lang][1])
                record = cache_record(result)
                with cache.building("lipsync", keys[lang], root) as folder:
                    shutil.move(str(outs[lang]), folder / VIDEO)
                    cache.finish(folder, record)
                if store is not None:  # shared once whole; a failed upload fails the stage
                    bucket_cache.publish(store, "lipsync", keys[lang], Path(result.folder))
                detail = {k: v for k, v in record.items() if k not in ("file", cache.MANIFEST)}
                cat.finish_stage(runs[lang], "done", detail=detail,
                                 backend="latentsync", model_version=version)
                emit("lipsync", lang, "done", f"face track {made.track}")
                results[lang] = result
    except Exception as exc:
        if cache.is_disk_full(exc, root):
            exc = cache.disk_full(root)
        for lang in missing:
            if lang not in results:
                cat.finish_stage(runs[lang], "failed", error=one_line(exc), backend="latentsync")
                emit("lipsync", lang, "failed", one_line(exc))
        raise StageError(f"lipsync: {one_line(exc)}") from exc
    return results
