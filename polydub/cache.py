"""Content-addressed stage outputs.

Each stage run is keyed by a hash of what determines its result (input content hashes,
parameters, backend and model versions). Its files live in `cache_dir()/STAGE/KEY/`.
A run builds into a temporary folder and renames it into place only when complete, so a
crash never leaves a half-written result that looks done.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import uuid
from pathlib import Path
from typing import Iterator

from polydub import config

_DONE = "done.json"
HASH_CHUNK = 1 << 20


def file_hash(path: str | Path) -> str:
    """sha256 of a file's content (hex)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(HASH_CHUNK), b""):
            h.update(block)
    return h.hexdigest()


def stage_key(stage: str, **parts) -> str:
    """A stable key for a stage run from JSON-serializable parts."""
    blob = json.dumps({"stage": stage, **parts}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:32]


def stage_dir(stage: str, key: str, root: Path | None = None) -> Path:
    return Path(root or config.cache_dir()) / stage / key


def lookup(stage: str, key: str, root: Path | None = None) -> dict | None:
    """The metadata of a completed run, or None."""
    done = stage_dir(stage, key, root) / _DONE
    if not done.exists():
        return None
    try:
        return json.loads(done.read_text())
    except (OSError, ValueError):
        return None  # unreadable marker: treat as not done and rebuild


@contextlib.contextmanager
def exclusive(stage: str, key: str, root: Path | None = None) -> Iterator[None]:
    """Hold the key's lock: one builder at a time per key, across threads and processes.

    (flock locks belong to an open file, so two threads that each open the lock file
    exclude each other as two processes do.)
    """
    lock = stage_dir(stage, key, root).with_suffix(".lock")
    lock.parent.mkdir(parents=True, exist_ok=True)
    with open(lock, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@contextlib.contextmanager
def building(stage: str, key: str, root: Path | None = None) -> Iterator[Path]:
    """Yield a private work folder; on success it becomes the stage's folder.

    The caller writes its files into the folder and calls `finish(folder, meta)` last.
    If the body raises, the folder is removed and nothing is published.
    """
    final = stage_dir(stage, key, root)
    final.parent.mkdir(parents=True, exist_ok=True)
    work = final.parent / f".tmp-{key}-{uuid.uuid4().hex[:8]}"
    work.mkdir()
    try:
        yield work
        if not (work / _DONE).exists():
            raise RuntimeError(f"stage {stage} did not finish its output")
        if (final / _DONE).exists():
            return  # someone else finished it meanwhile: keep theirs, readers may be using it
        if final.exists():
            shutil.rmtree(final)  # an incomplete folder without a marker
        os.replace(work, final)
    finally:
        if work.exists():
            shutil.rmtree(work, ignore_errors=True)


def finish(folder: Path, meta: dict) -> dict:
    """Write the completion marker with the run's metadata (file names relative to folder)."""
    (folder / _DONE).write_text(json.dumps(meta, indent=1, default=str))
    return meta


def place(src: str | Path, dest: Path) -> Path:
    """Put a finished file at `dest` atomically: a hard link when the filesystem allows
    (instant, no extra space), else a copy. Never a half-written `dest`."""
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    if dest.exists() and os.path.samefile(src, dest):
        return dest  # already there
    tmp = dest.with_name(f".{dest.name}.{os.getpid()}.{uuid.uuid4().hex[:6]}.part")
    try:
        os.link(src, tmp)
    except OSError:
        shutil.copyfile(src, tmp)
    os.replace(tmp, dest)
    return dest
