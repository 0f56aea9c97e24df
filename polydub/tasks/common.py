"""What every stage task shares: the job context, catalog recording and the stage cache."""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from polydub import cache, crash, licences, redact
from polydub.errors import DubError, StageError
from polydub.licences import Licence
from polydub.flows.logs import stage_logger
from polydub.progress import emit


@dataclass(frozen=True)
class JobContext:
    """Passed to every task: small, serializable."""

    job_id: int
    db_url: str
    cache_root: str


@dataclass
class StageResult:
    """A completed stage: its folder in the cache and the metadata it wrote."""

    stage: str
    lang: str | None
    folder: str
    meta: dict = field(default_factory=dict)
    status: str = "done"  # done | cached | skipped (| failed: a best-effort stage that did not work)

    def file(self, name: str) -> str:
        return str(Path(self.folder) / name)


_catalogs: dict[str, object] = {}
_catalog_lock = threading.Lock()


def catalog(url: str):
    """One Catalog (engine and connection pool) per database URL per process."""
    from polydub.storage import Catalog

    with _catalog_lock:
        if url not in _catalogs:
            _catalogs[url] = Catalog(url)
        return _catalogs[url]


redact.install()  # task and flow logs, ours and Prefect's, carry no secrets


def one_line(exc: BaseException) -> str:
    """The first line of an error, secrets masked: what the catalog, report and screen show."""
    text = redact.redact(str(exc)).strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:500]


def run_stage(ctx: JobContext, stage: str, lang: str | None, key: str,
              build: Callable[[Path], dict], backend: str | None = None,
              model_version: str | None = None, licence: Licence | None = None) -> StageResult:
    """Run `build` into a fresh cache folder unless a completed run with `key` exists.

    `build(folder)` writes its files and returns small metadata (JSON); it may set
    'backend' and 'model_version' when only the run knows them. The catalog gets a
    stage row either way: 'cached' for a hit, 'done' or 'failed' for a run, with the
    licence of the model that made the output (`licence`, else looked up from the
    backend); the result's meta carries it as 'licence' (a label) for the report.
    """
    cat = catalog(ctx.db_url)
    root = Path(ctx.cache_root)
    licence = licence or licences.of_stage(stage, backend, model_version)
    label = licence.label if licence else None
    run_id = cat.start_stage(ctx.job_id, stage, lang, key, backend, model_version, licence=label)
    # Languages run in threads and jobs in processes: whoever holds the key's lock builds,
    # the others wait and then find it cached.
    with cache.exclusive(stage, key, root):
        hit, damaged = cache.inspect(stage, key, root)
        if damaged:  # never reuse what no longer matches its record: rebuild it, and say so
            cache.discard(cache.stage_dir(stage, key, root))
        if hit is not None:
            cat.finish_stage(run_id, "cached", detail=_detail(hit), backend=hit.get("backend", backend),
                             model_version=hit.get("model_version", model_version))
            emit(stage, lang, "cached")
            _log(stage, lang, "cached", 0.0, hit.get("backend", backend), hit.get("reason"))
            return StageResult(stage, lang, str(cache.stage_dir(stage, key, root)), {**hit, "licence": label},
                               "cached")
        emit(stage, lang, "running")
        started = time.perf_counter()
        try:
            with cache.building(stage, key, root) as work:
                meta = build(work) or {}
                meta.setdefault("backend", backend)
                meta.setdefault("model_version", model_version)
                meta["seconds"] = round(time.perf_counter() - started, 3)
                if damaged:
                    meta["rebuilt"] = damaged
                    meta["note"] = "; ".join(filter(None, [meta.get("note"), f"rebuilt: {damaged}"]))
                cache.finish(work, meta)
        except BaseException as exc:
            if isinstance(exc, Exception) and cache.is_disk_full(exc, root):
                exc = cache.disk_full(root)  # one line naming the folder; nothing was published
            status, error = "failed", one_line(exc)
            if crash.interrupted_at():  # Ctrl-C reaches ffmpeg and espeak-ng too: they fail on it
                status, error = "interrupted", f"{crash.CTRL_C_REASON}; {error}"
            cat.finish_stage(run_id, status, error=error, backend=backend, model_version=model_version)
            emit(stage, lang, "failed", one_line(exc))
            stage_logger().error("%s: failed after %.1f s: %s", _label(stage, lang), time.perf_counter() - started,
                                 one_line(exc))  # the traceback reaches Prefect's log with the task's failure
            if isinstance(exc, cache.DiskFull):
                raise exc from None
            if isinstance(exc, DubError) or not isinstance(exc, Exception):
                raise
            raise StageError(f"{stage}{' ' + lang if lang else ''}: {one_line(exc)}") from exc
    cat.finish_stage(run_id, "done", detail=_detail(meta), backend=meta.get("backend"),
                     model_version=meta.get("model_version"))
    emit(stage, lang, "done", meta.get("note", ""))
    _log(stage, lang, "done", meta["seconds"], meta.get("backend"), meta.get("reason") or meta.get("note"))
    return StageResult(stage, lang, str(cache.stage_dir(stage, key, root)), {**meta, "licence": label}, "done")


def _label(stage: str, lang: str | None) -> str:
    return f"{stage}[{lang}]" if lang else stage


def _log(stage: str, lang: str | None, status: str, seconds: float, backend: str | None, why: str | None) -> None:
    """One line per stage and language, as the Prefect UI's log shows it."""
    text = f"{_label(stage, lang)}: {status} in {seconds:.1f} s" + (f" ({backend})" if backend else "")
    stage_logger().info(text + (f": {why}" if why else ""))


def skip_stage(ctx: JobContext, stage: str, lang: str | None, reason: str) -> StageResult:
    """Record a stage that did not run, with why."""
    cat = catalog(ctx.db_url)
    run_id = cat.start_stage(ctx.job_id, stage, lang, None, None, None)
    cat.finish_stage(run_id, "skipped", error=None, detail={"reason": reason})
    emit(stage, lang, "skipped", reason)
    stage_logger().info("%s: skipped: %s", _label(stage, lang), reason)
    return StageResult(stage, lang, "", {"reason": reason}, "skipped")


def _detail(meta: dict) -> dict:
    """The part of a stage's metadata worth a catalog column: small scalars only."""
    small = {k: v for k, v in meta.items() if isinstance(v, (str, int, float, bool)) or v is None}
    return json.loads(json.dumps(small))
