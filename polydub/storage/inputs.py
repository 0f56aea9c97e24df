"""A user's files named by object-store URL: brought to this machine before planning.

An input `s3://bucket/in/ad.mp4` lands in `CACHE/downloads/store-HASH/ad.mp4` (HASH: of its
folder's URL) with the subtitle sidecars beside it in the bucket (`ad.srt`, `ad.es.srt`), so
they are found exactly as on disk. A copy is fetched again when the object's size or time
changed; sidecars always are (they are small), and one gone from the bucket goes here too.
Every read is bounded: DUB_MAX_DOWNLOAD_MB for media, the subtitle limit for the rest. A
store that cannot be reached, refuses or lacks the object is one line (exit status 2).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from polydub import cache, config
from polydub.errors import InputError
from polydub.sidecars import SUBTITLE_SUFFIXES
from polydub.storage.objects import Store, StorageError, check_url, is_remote, reason

STAMPS = ".stamps.json"  # name -> [size, modified] of each copy, as the store said
MAX_TEXT_BYTES = 16 << 20  # a transcript, glossary or voice map; larger is not one


def _folder_of(url: str, what: str) -> tuple[Store, str, Path]:
    """The store of the URL's folder, the object's name, and its local folder."""
    url = check_url(url, what)
    parent, _, name = url.rpartition("/")
    if "/" not in parent.split("://", 1)[1] and not name:
        raise InputError(f"{what} {url}: no object named")
    local = config.cache_dir() / cache.DOWNLOADS / f"store-{hashlib.sha256(parent.encode()).hexdigest()[:24]}"
    return Store(parent, what), name, local


def _refused(what: str, url: str, exc: Exception) -> InputError:
    """One line for a file the store would not give: what, the URL, why."""
    if isinstance(exc, InputError):
        return exc
    shown = f"{what} {url}".strip()
    if isinstance(exc, FileNotFoundError):
        return InputError(f"{shown}: no such object")
    cause = exc.__cause__ if isinstance(exc, StorageError) and exc.__cause__ else exc
    return InputError(f"{shown}: {reason(cause)}")


def _fetched(store: Store, name: str, local: Path, limit: int, stamps: dict) -> Path:
    """`local/name`, downloaded unless the copy there has the object's size and time."""
    info = store.info(name)
    if info is None:
        raise FileNotFoundError(name)
    dest = local / name
    if stamps.get(name) != [info.size, info.modified] or not dest.is_file() or dest.stat().st_size != info.size:
        if info.size > limit:
            raise InputError(f"{store.location(name)}: {info.size / 1e6:.0f} MB, more than the "
                             f"{limit / 1e6:.0f} MB accepted")
        store.get(name, dest, limit)
        stamps[name] = [info.size, info.modified]
    return dest


def _stamps(local: Path) -> dict:
    try:
        data = json.loads((local / STAMPS).read_text())
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def fetch_input(url: str, what: str = "input") -> Path:
    """The local copy of a media input named by URL, with its subtitle sidecars beside it."""
    store, name, local = _folder_of(url, what)
    stem = Path(name).stem
    try:
        with cache.exclusive(cache.DOWNLOADS, local.name):
            stamps = _stamps(local)  # (the folder is made by the first download: a refusal leaves nothing)
            path = _fetched(store, name, local, config.max_download_bytes(), stamps)
            there = [n for n in store.names_in("") if n.startswith(stem + ".") and n != name
                     and Path(n).suffix.lower() in SUBTITLE_SUFFIXES]
            for old in local.glob(f"{stem}.*"):  # a sidecar removed from the bucket is not used
                if old.name != name and old.suffix.lower() in SUBTITLE_SUFFIXES and old.name not in there:
                    old.unlink(missing_ok=True)
            for sidecar in there:
                stamps.pop(sidecar, None)  # small: fetched every time, so an edit is never missed
                _fetched(store, sidecar, local, MAX_TEXT_BYTES, stamps)
            cache.write_text(local / STAMPS, json.dumps(stamps))
    except (InputError, StorageError, FileNotFoundError, PermissionError) as exc:
        raise _refused(what, url, exc) from None
    return path


def fetch_file(url: str, what: str) -> Path:
    """The local copy of a small file named by URL (a transcript, glossary, voice map)."""
    store, name, local = _folder_of(url, what)
    try:
        with cache.exclusive(cache.DOWNLOADS, local.name):
            stamps = _stamps(local)
            stamps.pop(name, None)
            path = _fetched(store, name, local, MAX_TEXT_BYTES, stamps)
            cache.write_text(local / STAMPS, json.dumps(stamps))
    except (InputError, StorageError, FileNotFoundError, PermissionError) as exc:
        raise _refused(what, url, exc) from None
    return path


def fetch_folder(url: str, what: str, suffixes: tuple[str, ...]) -> Path:
    """A local copy of the files directly in a store folder whose names end in `suffixes`
    (approved translations, glossaries); only those, so the copy is exactly the folder's."""
    url = check_url(url, what)
    local = config.cache_dir() / cache.DOWNLOADS / f"store-{hashlib.sha256(url.encode()).hexdigest()[:24]}"
    store = Store(url, what)
    try:
        with cache.exclusive(cache.DOWNLOADS, local.name):
            names = [n for n in store.names_in("") if Path(n).suffix.lower() in suffixes]
            if not names and next(iter(store.listing("")), None) is None:
                raise InputError(f"{what} {url}: no such folder")
            local.mkdir(parents=True, exist_ok=True)
            for old in local.iterdir():
                if old.name not in names and old.name != STAMPS:
                    old.unlink(missing_ok=True)
            for name in names:
                _fetched(store, name, local, MAX_TEXT_BYTES, {})
    except (InputError, StorageError, FileNotFoundError, PermissionError) as exc:
        raise _refused(what, url, exc) from None
    return local


def localize(value: str | None, what: str, folder_suffixes: tuple[str, ...] | None = None) -> str | None:
    """`value` as a local path: a URL is fetched (a folder when `folder_suffixes` is given
    and the URL ends with '/' or names no object), anything else returned as it is."""
    if not value or not is_remote(value):
        return value
    if folder_suffixes is not None:
        if value.endswith("/") or not _is_object(value, what):
            return str(fetch_folder(value, what, folder_suffixes))
    return str(fetch_file(value, what))


def _is_object(url: str, what: str) -> bool:
    store, name, _ = _folder_of(url, what)
    try:
        return store.info(name) is not None
    except (StorageError, PermissionError) as exc:
        raise _refused(what, url, exc) from None
