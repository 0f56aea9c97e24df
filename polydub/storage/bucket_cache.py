"""The stage cache in an object store, trusted as the local one is.

An entry is `cache/STAGE/KEY/done.json` (the run's record and every file's size and
sha256, as `cache.finish` writes it, plus `run`) and its files under `cache/STAGE/KEY/RUN/`.
Files are uploaded first and the record last, under a fresh RUN, so an entry appears whole
or not at all, and two machines that build the same key never mix their files. A reader
reuses an entry after one listing has shown every file at its recorded size, and brings a
file into the job's local scratch only when it is read, checked against its sha256 (an ETag
is not a digest); an entry that no longer matches is removed from the store and rebuilt.
"""

from __future__ import annotations

import json
import os
import shutil
import time
import uuid
from functools import lru_cache
from pathlib import Path, PurePosixPath

from polydub import cache
from polydub.errors import InputError
from polydub.storage.objects import TMP, Store

CACHE = "cache"
MARKER = "done.json"
MAX_MARKER_BYTES = 16 << 20  # a record lists a stage's files; megabytes would not be ours


@lru_cache(maxsize=8)
def store_at(url: str) -> Store:
    """One Store per URL in a process (its connection pool is reused by every stage)."""
    return Store(url)


def _entry(stage: str, key: str) -> str:
    return f"{CACHE}/{stage}/{key}"


def _record(store: Store, stage: str, key: str) -> tuple[dict | None, str | None]:
    """(record, None), (None, why) for a garbled one, or (None, None) where there is none."""
    raw = store.read(f"{_entry(stage, key)}/{MARKER}", MAX_MARKER_BYTES)
    if raw is None:
        return None, None
    try:
        meta = json.loads(raw)
        files, run = meta[cache.MANIFEST], meta["run"]
        if not isinstance(files, dict) or not isinstance(run, str) or "/" in run:
            raise ValueError
        for name, want in files.items():
            if PurePosixPath(name).is_absolute() or ".." in PurePosixPath(name).parts:
                raise ValueError
            int(want["size"]), str(want["sha256"])
    except (ValueError, KeyError, TypeError):
        return None, "garbled record in the store"
    return meta, None


def reuse(store: Store, stage: str, key: str, root: Path) -> tuple[dict | None, str | None]:
    """Reuse a finished entry of the store without bringing its files: its record goes into
    `root/STAGE/KEY` with a note of where the files are, after one listing has shown every
    file there at its recorded size. Each file is brought, and its sha256 checked, when a
    later stage first reads it (`bring`, through `StageResult.file`): a job whose
    deliverables are cached moves only those. (metadata, None), (None, why) for an entry
    that no longer matches its record, or (None, None) when the store has none."""
    meta, why = _record(store, stage, key)
    if meta is None:
        return None, why
    run = f"{_entry(stage, key)}/{meta['run']}"
    there = {entry.name[len(run) + 1:]: entry.size for entry in store.listing(run)}
    for name, want in meta[cache.MANIFEST].items():
        if name not in there:
            return None, f"{name}: missing in the store"
        if there[name] != want["size"]:
            return None, f"{name}: {there[name]} bytes in the store, {want['size']} recorded"
    final = cache.stage_dir(stage, key, root)
    final.parent.mkdir(parents=True, exist_ok=True)
    work = final.parent / f"{cache.TMP_PREFIX}{key}-reuse-{uuid.uuid4().hex[:8]}"
    work.mkdir()
    try:
        local = {k: v for k, v in meta.items() if k != "run"}
        (work / MARKER).write_text(json.dumps(local, indent=1, default=str))
        (work / cache.IN_STORE).write_text(json.dumps({"store": store.url, "stage": stage, "key": key,
                                                       "run": meta["run"]}))
        cache.discard(final)
        os.replace(work, final)
        return local, None
    finally:
        shutil.rmtree(work, ignore_errors=True)


def bring(folder: Path, name: str) -> None:
    """Bring one file of an entry reused from the store (see `reuse`) into its folder, checked
    against the sha256 in its record. StageError when it no longer matches: the entry is
    removed from the store (the next run rebuilds it) and from here. Nothing to do for a
    folder that is not such an entry."""
    import fcntl

    from polydub.errors import StageError

    note = Path(folder) / cache.IN_STORE
    try:
        where = json.loads(note.read_text())
        want = json.loads((Path(folder) / MARKER).read_text())[cache.MANIFEST][name]
    except (OSError, ValueError, KeyError, TypeError):
        return  # not an entry in the store, or not one of its files: the reader says what is missing
    dest = Path(folder) / name
    with open(Path(folder) / ".bring.lock", "a") as lock:  # threads and processes: one download per file
        fcntl.flock(lock, fcntl.LOCK_EX)
        if dest.exists():
            return
        store = store_at(where["store"])
        got = Path(folder) / f".{Path(name).name}.{uuid.uuid4().hex[:8]}.bring"
        got.parent.mkdir(parents=True, exist_ok=True)
        try:
            size, digest = store.get(f"{_entry(where['stage'], where['key'])}/{where['run']}/{name}", got,
                                     limit=want["size"])
            if (size, digest) != (want["size"], want["sha256"]):
                discard(store, where["stage"], where["key"])
                cache.discard(Path(folder))
                raise StageError(f"{where['stage']}: {name} of the cached result changed in the store (its "
                                 f"sha256 no longer matches); the entry was removed and the next run rebuilds it")
            dest.parent.mkdir(parents=True, exist_ok=True)
            os.replace(got, dest)
        except FileNotFoundError:
            discard(store, where["stage"], where["key"])
            raise StageError(f"{where['stage']}: {name} of the cached result is gone from the store; the entry "
                             f"was removed and the next run rebuilds it") from None
        except InputError:
            discard(store, where["stage"], where["key"])
            raise StageError(f"{where['stage']}: {name} of the cached result is larger in the store than "
                             f"recorded; the entry was removed and the next run rebuilds it") from None
        finally:
            got.unlink(missing_ok=True)


def publish(store: Store, stage: str, key: str, folder: Path) -> None:
    """Upload a finished local entry: its files under a fresh run, then its record."""
    meta = json.loads((Path(folder) / MARKER).read_text())
    run = f"r-{uuid.uuid4().hex[:12]}"
    for name in meta[cache.MANIFEST]:
        store.put(Path(folder) / name, f"{_entry(stage, key)}/{run}/{name}")
    store.put_bytes(json.dumps({**meta, "run": run}, indent=1, default=str).encode(),
                    f"{_entry(stage, key)}/{MARKER}")


def discard(store: Store, stage: str, key: str) -> None:
    """Remove an entry from the store: its record first (no reader trusts it after), then
    its files."""
    prefix = _entry(stage, key)
    store.remove(f"{prefix}/{MARKER}")
    store.remove(*(entry.name for entry in store.listing(prefix)))


def verify(store: Store, fix: bool = False) -> tuple[int, list[cache.Problem]]:
    """Read every entry's files through and compare each with its record. Returns (entries
    checked, problems); with `fix`, damaged entries are removed (rebuilt when next needed)."""
    checked, problems = 0, []
    for stage, key in _entries(store):
        checked += 1
        meta, why = _record(store, stage, key)
        for name, want in (meta or {}).get(cache.MANIFEST, {}).items():
            try:
                size, digest = store.digest(f"{_entry(stage, key)}/{meta['run']}/{name}")
            except FileNotFoundError:
                why = f"{name}: missing"
                break
            if size != want["size"]:
                why = f"{name}: {size} bytes, {want['size']} recorded"
                break
            if digest != want["sha256"]:
                why = f"{name}: content changed"
                break
        if why:
            problems.append(cache.Problem(store.location(_entry(stage, key)), why))
            if fix:
                discard(store, stage, key)
    return checked, problems


def _entries(store: Store) -> list[tuple[str, str]]:
    found = []
    for entry in store.listing(CACHE):
        parts = entry.name.split("/")
        if len(parts) == 4 and parts[3] == MARKER:
            found.append((parts[1], parts[2]))
    return found


def sweep(store: Store, older_than: float = cache.SWEEP_AGE) -> cache.Sweep:
    """Remove what no reader will use: temporary keys of publishes that died, and the files
    of runs no record names (a rebuilt entry's old run, a build that died before its
    record), untouched for `older_than` seconds."""
    now, result = time.time(), cache.Sweep()
    objects = list(store.listing(""))
    named = {}
    for stage, key in _entries(store):
        meta, _ = _record(store, stage, key)
        named[(stage, key)] = meta["run"] if meta else None
    for entry in objects:
        parts = entry.name.split("/")
        leftover = any(part.startswith(TMP) for part in parts)
        if not leftover and len(parts) >= 5 and parts[0] == CACHE:
            leftover = named.get((parts[1], parts[2])) != parts[3]
        if leftover and entry.modified and now - entry.modified >= older_than:
            store.remove(entry.name)
            result.removed.append(store.location(entry.name))
            result.bytes += entry.size
    return result
