"""What every stage task shares: the job context, catalog recording and the stage cache."""

from __future__ import annotations

import json
import os
import threading
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Callable

from polydub import cache, crash, licences
from polydub.errors import DubError, StageError, one_line
from polydub.licences import Licence
from polydub.progress import emit, stage_logger
from polydub.report import Out, StageResult
from polydub.storage import bucket_cache, shared_catalog


@dataclass(frozen=True)
class JobContext:
    """Passed to every task: small, serializable."""

    job_id: int
    db_url: str
    cache_root: str  # local: the cache, or the job's scratch when the cache is in a store
    store: str | None = None  # DUB_STORAGE_URL when it is an object store: the shared cache


def output_from(kind: type[Out] | None, stored: dict) -> Out | None:
    """A stage's output from its cache record: the fields `kind` has. TypeError when the
    record lacks one that has no default."""
    if kind is None:
        return None
    names = {f.name for f in fields(kind)}
    return kind(**{k: v for k, v in stored.items() if k in names})


def run_stage(ctx: JobContext, stage: str, lang: str | None, key: str,
              build: Callable[[Path], Out | None], output: type[Out] | None = None, backend: str | None = None,
              model_version: str | None = None, licence: Licence | None = None) -> StageResult[Out]:
    """Run `build` into a fresh cache folder unless a completed run with `key` exists.

    `build(folder)` writes its files and returns what it made: an `output` instance (a
    small dataclass, kept as JSON beside the files), or None for a stage whose files say it
    all. An output's `backend` field, where it has one, names the backend when only the
    run knows it. The catalog gets a stage row either way: 'cached' for a hit, 'done' or
    'failed' for a run, with the licence of the model that made the output (`licence`,
    else looked up from the backend).
    """
    cat = shared_catalog(ctx.db_url)
    root = Path(ctx.cache_root)
    licence = licence or licences.of_stage(stage, backend, model_version)
    label = licence.label if licence else None
    run_id = cat.start_stage(ctx.job_id, stage, lang, key, backend, model_version, licence=label)
    folder = str(cache.stage_dir(stage, key, root))
    # Languages run in threads and jobs in processes: whoever holds the key's lock builds,
    # the others wait and then find it cached.
    store = bucket_cache.store_at(ctx.store) if ctx.store else None
    with cache.exclusive(stage, key, root):
        hit, damaged = cache.inspect(stage, key, root)
        if hit is None and store is not None:  # another job, maybe on another machine, made it
            if damaged:
                cache.discard(Path(folder))
            try:
                hit, in_store = bucket_cache.reuse(store, stage, key, root)  # files brought when read
                if in_store:  # never reused: removed from the store, rebuilt and published anew
                    bucket_cache.discard(store, stage, key)
            except Exception as exc:  # the store failed on the way: this stage fails, nothing marked done
                cat.finish_stage(run_id, "failed", error=one_line(exc), backend=backend, model_version=model_version)
                emit(stage, lang, "failed", one_line(exc))
                if isinstance(exc, DubError):
                    raise
                raise StageError(f"{stage}{' ' + lang if lang else ''}: {one_line(exc)}") from exc
            damaged = in_store or damaged
        made = None
        if hit is not None:
            try:
                made = output_from(output, hit)
            except TypeError:  # written by another version of the stage: make it again
                hit, damaged = None, "record without this stage's fields"
        if damaged:  # never reuse what no longer matches its record: rebuild it, and say so
            cache.discard(Path(folder))
        if hit is not None:
            result = StageResult(stage, lang, folder, made, "cached", hit.get("backend", backend),
                                 hit.get("model_version", model_version), label)
            hit.pop("rebuilt", None)  # entries written before the rebuild note left the record
            cat.finish_stage(run_id, "cached", detail=_detail(hit), backend=result.backend,
                             model_version=result.model_version)
            emit(stage, lang, "cached")
            _log(stage, lang, "cached", 0.0, result.backend, None)
            return result
        emit(stage, lang, "running")
        started = time.perf_counter()
        try:
            with cache.building(stage, key, root) as work:
                made = build(work)
                _held_for_tests(stage, lang)
                result = StageResult(stage, lang, folder, made, "done", getattr(made, "backend", None) or backend,
                                     model_version, label, round(time.perf_counter() - started, 3), rebuilt=damaged)
                cache.finish(work, cache_record(result))
            if store is not None:  # shared only once whole; a failed upload fails the stage
                bucket_cache.publish(store, stage, key, Path(folder))
        except BaseException as exc:
            if isinstance(exc, Exception) and cache.is_disk_full(exc, root):
                exc = cache.disk_full(root)  # one line naming the folder; nothing was published
            status, error = "failed", one_line(exc)
            if crash.stopping():  # Ctrl-C or a cancelled run reaches ffmpeg and espeak-ng too: they fail on it
                status, error = "interrupted", f"{crash.stop_reason()}; {error}"
            cat.finish_stage(run_id, status, error=error, backend=backend, model_version=model_version)
            emit(stage, lang, "failed", one_line(exc))
            stage_logger().error("%s: failed after %.1f s: %s", _label(stage, lang), time.perf_counter() - started,
                                 one_line(exc))  # the traceback reaches Prefect's log with the task's failure
            if isinstance(exc, cache.DiskFull):
                raise exc from None
            if isinstance(exc, DubError) or not isinstance(exc, Exception):
                raise
            raise StageError(f"{stage}{' ' + lang if lang else ''}: {one_line(exc)}") from exc
    rebuilt = {"rebuilt": result.rebuilt} if result.rebuilt else {}  # this run's news, not the entry's
    cat.finish_stage(run_id, "done", detail=_detail({**cache_record(result), **rebuilt}), backend=result.backend,
                     model_version=result.model_version)
    emit(stage, lang, "done", result.note)
    _log(stage, lang, "done", result.seconds, result.backend, result.note)
    return result


def _held_for_tests(stage: str, lang: str | None) -> None:
    """For tests only: DUB_TEST_HOLD=STAGE:FILE stops each run of STAGE with its files built but
    not yet published (the catalog says running) and writes FILE; the stage goes on once
    FILE is removed (and later runs no longer stop), or fails once the job is stopping (Ctrl-C, a cancelled run). A test so stops a job exactly there
    (to kill it, fill its disk, stop its server) instead of racing a long clip."""
    held, _, flag = os.environ.get("DUB_TEST_HOLD", "").partition(":")
    if held != stage or not flag or _hold_released.is_set():
        return
    Path(flag).write_text(f"{stage} {lang or ''}\n")
    while Path(flag).exists() and not _hold_released.is_set():
        if crash.stopping():
            raise StageError(f"{stage}: stopped while held (DUB_TEST_HOLD)")
        time.sleep(0.05)
    _hold_released.set()


# Once FILE is removed the hold is over for this process: a language reaching the stage
# later (its chain slower than the one that wrote FILE) must not hold again, unseen.
_hold_released = threading.Event()


def cache_record(result: StageResult) -> dict:
    """What the cache keeps of a run beside its files (flat: the output's fields and how it
    was made)."""
    made = asdict(result.output) if result.output is not None else {}
    return {**made, "backend": result.backend, "model_version": result.model_version, "seconds": result.seconds}


def _label(stage: str, lang: str | None) -> str:
    return f"{stage}[{lang}]" if lang else stage


def _log(stage: str, lang: str | None, status: str, seconds: float, backend: str | None, why: str | None) -> None:
    """One line per stage and language, as the Prefect UI's log shows it."""
    text = f"{_label(stage, lang)}: {status} in {seconds:.1f} s" + (f" ({backend})" if backend else "")
    stage_logger().info(text + (f": {why}" if why else ""))


def skip_stage(ctx: JobContext, stage: str, lang: str | None, reason: str) -> StageResult:
    """Record a stage that did not run, with why."""
    cat = shared_catalog(ctx.db_url)
    run_id = cat.start_stage(ctx.job_id, stage, lang, None, None, None)
    cat.finish_stage(run_id, "skipped", error=None, detail={"reason": reason})
    emit(stage, lang, "skipped", reason)
    stage_logger().info("%s: skipped: %s", _label(stage, lang), reason)
    return StageResult(stage, lang, "", status="skipped", reason=reason)


def _detail(meta: dict) -> dict:
    """The part of a stage's metadata worth a catalog column: small scalars only."""
    small = {k: v for k, v in meta.items() if isinstance(v, (str, int, float, bool)) or v is None}
    return json.loads(json.dumps(small))
