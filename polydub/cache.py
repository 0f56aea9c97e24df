"""Content-addressed stage outputs, checked before every reuse.

Each stage run is keyed by a hash of what determines its result (input content hashes,
parameters, backend and model versions). Its files live in `cache_dir()/STAGE/KEY/`.
A run builds into a temporary folder and renames it into place only when complete, so a
crash never leaves a half-written result that looks done. The completion marker records
every file's size and sha256; a folder whose files no longer match is discarded and
rebuilt, never reused. Files leave the cache only as copies (a copy-on-write clone where
the filesystem offers one), so nothing outside can change what is cached.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import os
import shutil
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, TextIO

from polydub import config
from polydub.errors import DubError, InputError

_DONE = "done.json"
IN_STORE = ".in-store.json"  # an entry reused from a bucket: its files are brought when read
MANIFEST = "manifest"  # key of the marker: {file name: {"size": bytes, "sha256": hex}}
HASH_CHUNK = 1 << 20
TMP_PREFIX = ".tmp-"  # build and scratch folders; a live one is flock-ed by its builder
PART_SUFFIX = ".part"  # a file being copied into place
LOW_SPACE = 1 << 20  # bytes: a failure with less than this left is reported as a full disk
SWEEP_AGE = 3600.0  # s: abandoned temporary files older than this are removed
FICLONE = 0x40049409  # linux/fs.h: share the source's blocks (btrfs, XFS, bcachefs)
LINES = "lines"  # shared line clips: lines/KEY/SHA256.wav
DOWNLOADS = "downloads"  # inputs a manifest names by URL: downloads/SHA256/NAME
NOT_STAGES = {LINES, "memory", "facetrack", DOWNLOADS}  # cache folders that are not STAGE/KEY/ entries


class DiskFull(DubError):
    """No space left where polydub writes."""


def disk_full(folder: str | Path) -> DiskFull:
    return DiskFull(f"disk full: no space left in {folder}")


def is_disk_full(exc: BaseException, folder: str | Path | None = None) -> bool:
    """ENOSPC raised here, or reported by a tool we ran (ffmpeg says it in words), or any
    failure while `folder`'s disk is full (libsndfile says "System error.", espeak-ng nothing)."""
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    if "No space left on device" in str(exc) or "Disk quota exceeded" in str(exc):
        return True
    try:
        return folder is not None and shutil.disk_usage(folder).free < LOW_SPACE
    except OSError:
        return False


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


def manifest(folder: Path) -> dict[str, dict]:
    """Size and sha256 of every file under `folder` but the marker, by relative name."""
    files = {}
    for path in sorted(folder.rglob("*")):
        if path.is_file() and path.name not in (_DONE, IN_STORE):
            files[path.relative_to(folder).as_posix()] = {"size": path.stat().st_size, "sha256": file_hash(path)}
    return files


def damage(folder: Path, digests: bool = True) -> tuple[dict | None, str | None]:
    """(metadata, None) for an intact finished folder; (None, why) for a damaged one;
    (None, None) where there is nothing. Sizes are always checked, contents when `digests`."""
    done = folder / _DONE
    if not done.exists():
        return None, ("incomplete (no completion marker)" if folder.is_dir() else None)
    try:
        meta = json.loads(done.read_text())
    except (OSError, ValueError):
        return None, "unreadable completion marker"
    files = meta.get(MANIFEST) if isinstance(meta, dict) else None
    if not isinstance(files, dict):
        return None, "no recorded sizes and digests (an older or garbled marker)"
    in_store = (folder / IN_STORE).exists()  # checked in the store when reused; each file again when brought
    for name, want in files.items():
        path = folder / name
        if in_store and not path.exists():
            continue
        try:
            size = path.stat().st_size
            if size != want["size"]:
                return None, f"{name}: {size} bytes, {want['size']} recorded"
            if digests and file_hash(path) != want["sha256"]:
                return None, f"{name}: content changed"
        except FileNotFoundError:
            return None, f"{name}: missing"
        except OSError as exc:
            return None, f"{name}: unreadable ({exc.strerror or exc})"
        except (KeyError, TypeError):
            return None, "garbled completion marker"
    return meta, None


def inspect(stage: str, key: str, root: Path | None = None, digests: bool = True) -> tuple[dict | None, str | None]:
    """`damage()` of a stage run's folder."""
    return damage(stage_dir(stage, key, root), digests)


def lookup(stage: str, key: str, root: Path | None = None) -> dict | None:
    """The metadata of a completed, intact run, or None."""
    return inspect(stage, key, root)[0]


def discard(folder: Path) -> None:
    """Remove a damaged result: renamed aside first (atomic, so nobody sees it half
    removed), then deleted. Readers that hold its files open keep them."""
    aside = folder.parent / f"{TMP_PREFIX}discard-{folder.name}-{uuid.uuid4().hex[:8]}"
    try:
        os.replace(folder, aside)
    except FileNotFoundError:
        return  # nothing there, or removed meanwhile
    shutil.rmtree(aside, ignore_errors=True)


@contextlib.contextmanager
def _held(folder: Path) -> Iterator[None]:
    """flock a folder for as long as it is in use, so `sweep()` can tell it is alive
    (the kernel drops the lock when its process dies, however it dies)."""
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


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
def scratch(root: Path | None = None, label: str = "scratch") -> Iterator[Path]:
    """A private temporary folder in the cache, removed afterwards (and by `sweep()` if
    its process dies)."""
    base = Path(root or config.cache_dir())
    base.mkdir(parents=True, exist_ok=True)
    work = base / f"{TMP_PREFIX}{label}-{uuid.uuid4().hex[:8]}"
    work.mkdir()
    try:
        with _held(work):
            yield work
    finally:
        shutil.rmtree(work, ignore_errors=True)


@contextlib.contextmanager
def building(stage: str, key: str, root: Path | None = None) -> Iterator[Path]:
    """Yield a private work folder; on success it becomes the stage's folder.

    The caller writes its files into the folder and calls `finish(folder, meta)` last.
    If the body raises, the folder is removed and nothing is published.
    """
    final = stage_dir(stage, key, root)
    final.parent.mkdir(parents=True, exist_ok=True)
    work = final.parent / f"{TMP_PREFIX}{key}-{uuid.uuid4().hex[:8]}"
    work.mkdir()
    try:
        with _held(work):
            yield work
            if not (work / _DONE).exists():
                raise RuntimeError(f"stage {stage} did not finish its output")
            if damage(final, digests=False)[0] is not None:
                return  # someone else finished it meanwhile: keep theirs, readers may be using it
            discard(final)  # an incomplete or damaged folder
            os.replace(work, final)
    except Exception as exc:
        base = Path(root or config.cache_dir())
        if not isinstance(exc, DiskFull) and is_disk_full(exc, base):  # checked before the cleanup frees space
            raise disk_full(base) from exc
        raise
    finally:
        if work.exists():
            shutil.rmtree(work, ignore_errors=True)


def finish(folder: Path, meta: dict) -> dict:
    """Write the completion marker: the run's metadata (file names relative to folder) and
    the size and digest of every file, against which each later reuse is checked."""
    meta[MANIFEST] = manifest(folder)
    (folder / _DONE).write_text(json.dumps(meta, indent=1, default=str))
    return meta


@contextlib.contextmanager
def _published(dest: Path, tmp: Path, shared: bool = False) -> Iterator[Path]:
    """Yield `tmp` to write, then rename it to `dest`: whole or not at all. `shared`: a
    deliverable, readable (and its new folders) as the user's umask says; otherwise owner
    only. No space left: `DiskFull` naming the folder, and nothing left behind."""
    try:
        make_folder(dest.parent, shared)
        tmp.parent.mkdir(parents=True, exist_ok=True)
        yield tmp
        if shared:
            os.chmod(tmp, 0o666 & ~config.user_umask())
        os.replace(tmp, dest)
    except BaseException as exc:  # whatever stopped the writer, no temporary file stays
        tmp.unlink(missing_ok=True)
        if isinstance(exc, OSError) and is_disk_full(exc):
            raise disk_full(dest.parent) from exc
        raise


def make_folder(folder: Path, shared: bool = False) -> None:
    """Make `folder` and its missing parents; `shared`: those made get the user's umask
    (an output folder others may read), not this process's owner-only one."""
    missing = [p for p in (folder, *folder.parents) if not p.exists()]
    folder.mkdir(parents=True, exist_ok=True)
    if shared:
        for made in missing:
            made.chmod(0o777 & ~config.user_umask())


def place(src: str | Path, dest: Path, tmp_dir: Path | None = None, shared: bool = False) -> Path:
    """Put a copy of `src` at `dest` atomically: never a half-written `dest`, never a file
    that shares storage with `src` (a copy-on-write clone where the filesystem offers one,
    else a byte copy). The temporary name is short, so any `dest` name that fits can be
    written. `shared`: a deliverable (see `_published`). No space left: `DiskFull` naming
    the folder, and nothing left behind."""
    dest = Path(dest)
    tmp = Path(tmp_dir or dest.parent) / f".dub-{uuid.uuid4().hex[:8]}{PART_SUFFIX}"
    with _published(dest, tmp, shared), open(src, "rb") as source, open(tmp, "wb") as copy:
        try:
            fcntl.ioctl(copy.fileno(), FICLONE, source.fileno())
        except OSError:
            shutil.copyfileobj(source, copy, HASH_CHUNK)
    return dest


@contextlib.contextmanager
def writing_text(dest: Path, shared: bool = False) -> Iterator[TextIO]:
    """An open UTF-8 text file (newlines written as given) that becomes `dest` when the
    block ends, atomically as `place()` writes: for files written as they go. A temporary
    name of its own, so concurrent writers never share one. `shared`: a deliverable or an
    export (see `_published`)."""
    dest = Path(dest)
    with _published(dest, dest.with_name(f".{dest.name}.{uuid.uuid4().hex[:8]}{PART_SUFFIX}"), shared) as tmp, \
            open(tmp, "w", encoding="utf-8", newline="") as handle:
        yield handle


def os_reason(exc: OSError) -> str:
    """Why the OS refused, in a few lower-case words: "read-only file system", "not writable"."""
    if exc.errno in (errno.EACCES, errno.EPERM):
        return "not writable"
    return (os.strerror(exc.errno) if exc.errno else str(exc)).lower()


def check_writable(folder: Path, what: str, shown: Path | None = None, shared: bool = False) -> None:
    """Make `folder` if need be (`shared`: an output folder, see `make_folder`) and write
    (and remove) a probe file in it: permission bits alone say nothing to root or of a
    read-only mount. `InputError` "WHAT SHOWN: cannot write in FOLDER (why)" otherwise."""
    where = "it" if shown is None else folder
    shown = folder if shown is None else shown
    try:
        make_folder(folder, shared)
        fd, name = tempfile.mkstemp(dir=folder, prefix=".dub-check-", suffix=PART_SUFFIX)
        os.close(fd)
        os.unlink(name)
    except OSError as exc:
        if is_disk_full(exc):
            raise InputError(f"{what} {shown}: no space left in {folder}") from None
        raise InputError(f"{what} {shown}: cannot write in {where} ({os_reason(exc)})") from None


def write_text(dest: Path, text: str, shared: bool = False) -> Path:
    """Write a small text file atomically (see `writing_text`)."""
    with writing_text(dest, shared) as handle:
        handle.write(text)
    return Path(dest)


def reuse_line(key: str, out: Path, root: Path | None = None) -> tuple[bool, int]:
    """Copy the intact shared clip kept for `key` to `out`. Returns (found, damaged clips
    removed): clips are named by their sha256, so a changed one is seen and dropped."""
    kept = Path(root or config.cache_dir()) / LINES / key
    removed = 0
    for clip in sorted(kept.glob("*.wav")) if kept.is_dir() else []:
        try:
            intact = file_hash(clip) == clip.stem
        except OSError:
            intact = False
        if intact:
            place(clip, out)
            return True, removed
        clip.unlink(missing_ok=True)
        removed += 1
    return False, removed


def keep_line(key: str, clip: Path, root: Path | None = None) -> Path:
    """Share a clip with later jobs (a copy, named by its content)."""
    lines = Path(root or config.cache_dir()) / LINES
    return place(clip, lines / key / f"{file_hash(clip)}.wav", tmp_dir=lines)


@dataclass
class Sweep:
    """What `sweep()` removed."""

    removed: list[str] = field(default_factory=list)
    bytes: int = 0


def _in_use(folder: Path) -> bool:
    try:
        fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return False
    except BlockingIOError:
        return True
    finally:
        os.close(fd)


def _newest(path: Path) -> float:
    """Latest modification time of a file, or of a folder and what is directly in it."""
    times = [path.lstat().st_mtime]
    if path.is_dir():
        with os.scandir(path) as entries:
            times += [e.stat(follow_symlinks=False).st_mtime for e in entries]
    return max(times)


def _size(path: Path) -> int:
    if path.is_dir():
        return sum(p.lstat().st_size for p in path.rglob("*"))
    return path.lstat().st_size


def sweep(root: Path | None = None, older_than: float = SWEEP_AGE, extra: tuple[Path, ...] = ()) -> Sweep:
    """Remove what killed runs left: `.tmp-*` folders nobody holds and `.part` files,
    untouched for `older_than` seconds. Looks only at the cache root, its stage folders
    and the `extra` folders (an output folder), so it is cheap enough for every run."""
    root = Path(root or config.cache_dir())
    result = Sweep()
    ours = [root]  # in the cache every `*.part` is ours; elsewhere only our hidden ones
    if root.is_dir():
        ours += [p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")]
    now = time.time()
    for folder in [*ours, *extra]:
        try:
            entries = list(folder.iterdir())
        except OSError:
            continue
        for path in entries:
            try:
                partial = path.name.endswith(PART_SUFFIX) and (folder in ours or path.name.startswith("."))
                temporary = (path.name.startswith(TMP_PREFIX) and path.is_dir() and not _in_use(path)) or \
                    (partial and path.is_file())
                if not temporary or now - _newest(path) < older_than:
                    continue
                size = _size(path)
                if path.is_dir():
                    shutil.rmtree(path)
                else:
                    path.unlink()
            except OSError:
                continue  # gone meanwhile, or not ours to remove: leave it
            result.removed.append(str(path))
            result.bytes += size
    return result


@dataclass
class Problem:
    """A damaged cache entry: where, and what is wrong."""

    path: str
    reason: str


def verify_all(root: Path | None = None, fix: bool = False) -> tuple[int, list[Problem]]:
    """Check every finished stage folder and shared line clip in full. Returns (entries
    checked, problems); with `fix`, damaged entries are removed (rebuilt when next needed)."""
    root = Path(root or config.cache_dir())
    check_writable(root, "cache folder (DUB_CACHE_DIR)")  # each entry is checked under its lock, a file
    checked, problems = 0, []
    for stage in sorted(p for p in root.iterdir() if p.is_dir()) if root.is_dir() else []:
        if stage.name.startswith(".") or stage.name in NOT_STAGES:
            continue
        for folder in sorted(p for p in stage.iterdir() if p.is_dir() and not p.name.startswith(".")):
            checked += 1
            with exclusive(stage.name, folder.name, root):
                _, why = damage(folder)
                if why:
                    problems.append(Problem(str(folder), why))
                    if fix:
                        discard(folder)
    for clip in sorted((root / LINES).glob("*/*.wav")):
        checked += 1
        try:
            intact = file_hash(clip) == clip.stem
        except OSError:
            intact = False
        if not intact:
            problems.append(Problem(str(clip), "content changed"))
            if fix:
                clip.unlink(missing_ok=True)
    return checked, problems
