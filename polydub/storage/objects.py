"""Object storage: a bucket (any fsspec URL: `s3://`, `gs://`, `az://`) that every machine reaches.

A `Store` is a folder in a bucket. Its transfers retry with backoff (a store that refuses
access or lacks the object fails at once), then fail with one line naming what was moved;
it publishes atomically: an object is written under a temporary key and copied to its
name, so a reader never sees part of one. Credentials come only from each store's own
configuration (for S3 the `AWS_*` variables, `AWS_ENDPOINT_URL` included, profiles,
instance roles): a URL that carries a user name or password is refused, and every error
text is redacted.
"""

from __future__ import annotations

import hashlib
import os
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, TypeVar

from polydub import cache
from polydub.errors import InputError, StageError, one_line

SCHEMES = ("s3", "s3a", "gs", "gcs", "az", "abfs", "abfss")  # object stores; file:// is a local folder
RETRIES = 4  # attempts after the first, for a transfer that fails on the way (DUB_STORAGE_RETRIES)
BACKOFF_S = 0.5  # the first wait; doubled each time (0.5, 1, 2, 4 s)
CONNECT_TIMEOUT_S = 10.0
READ_TIMEOUT_S = 60.0
CHUNK = 1 << 20
TMP = ".tmp-"  # temporary keys: a publish in flight (`dub cache gc` removes old ones)
T = TypeVar("T")


class StorageError(StageError):
    """A transfer that still failed after its retries: the job (or its language) fails."""


def scheme_of(text: str) -> str | None:
    """'s3' for `s3://bucket/x`, 'file' for `file:///x`, None for a local path."""
    head, sep, _ = str(text).strip().partition("://")
    return head.lower() if sep and head.isalnum() else None


def is_remote(text: str | Path | None) -> bool:
    """Whether `text` names an object store (not a local path, not `file://`)."""
    return text is not None and scheme_of(str(text)) in SCHEMES


def local_path(text: str) -> str:
    """A local path from `file:///x` or a plain path."""
    return str(text)[len("file://"):] if scheme_of(str(text)) == "file" else str(text)


def check_url(url: str, what: str) -> str:
    """The URL without a trailing slash; `InputError` for one with a user name or password
    (credentials come from the store's own configuration) or no bucket."""
    scheme = scheme_of(url)
    if scheme not in SCHEMES:
        raise InputError(f"{what} {url}: not an object store URL ({', '.join(s + '://' for s in SCHEMES)})")
    rest = str(url).strip().split("://", 1)[1]
    bucket = rest.split("/", 1)[0]
    if "@" in bucket or "?" in rest or "#" in rest:
        raise InputError(f"{what} {scheme}://...: credentials or parameters in the URL are not accepted; "
                         f"give them in the store's own configuration (for S3: AWS_* variables or a profile)")
    if not bucket:
        raise InputError(f"{what} {url}: no bucket in the URL")
    return f"{scheme}://{rest.rstrip('/')}"


def join(base: str, *names: str) -> str:
    """`base/name/...` for a URL or a local folder."""
    if is_remote(base):
        return "/".join([base.rstrip("/"), *(n.strip("/") for n in names)])
    return os.path.join(base, *names)


def name_of(location: str) -> str:
    """The last part of a URL or path: its file name."""
    return str(location).rstrip("/").rsplit("/", 1)[-1]


def _filesystem(scheme: str):
    import fsspec

    options: dict = {"use_listings_cache": False, "skip_instance_cache": True}
    if scheme in ("s3", "s3a"):  # a dead endpoint answers quickly; retries are ours
        options["config_kwargs"] = {"connect_timeout": CONNECT_TIMEOUT_S, "read_timeout": READ_TIMEOUT_S,
                                    "retries": {"max_attempts": 1}}
    fs = fsspec.filesystem(scheme, **options)
    if hasattr(fs, "retries"):  # s3fs retries 5 times on its own; ours wrap every transfer once
        fs.retries = 1
    return fs


def _permanent(exc: BaseException) -> bool:
    """A refusal that retrying will not change: no such object or bucket, access refused."""
    return isinstance(exc, (FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError, InputError)) \
        or "NoCredentials" in type(exc).__name__


@dataclass
class Entry:
    """An object in a store: its path relative to the store, size and age."""

    name: str
    size: int
    modified: float  # unix time, 0 when the store does not say


class Store:
    """A folder in an object store: `Store("s3://bucket/polydub")`."""

    def __init__(self, url: str, what: str = "storage (DUB_STORAGE_URL)"):
        self.url = check_url(url, what)
        self.what = what
        self.scheme = scheme_of(self.url)
        self.root = self.url.split("://", 1)[1]
        self._fs = None

    def __repr__(self) -> str:
        return f"Store({self.url!r})"

    @property
    def fs(self):
        if self._fs is None:
            self._fs = _filesystem(self.scheme)
        return self._fs

    def path(self, name: str = "") -> str:
        return f"{self.root}/{name.strip('/')}" if name else self.root

    def location(self, name: str) -> str:
        """The URL of `name` in this store."""
        return f"{self.scheme}://{self.path(name)}"

    def retrying(self, what: str, action: Callable[[], T]) -> T:
        """`action()`, tried again with backoff when it fails on the way; `StorageError`
        "storage: WHAT: why" when it still fails, or at once when the store refuses."""
        wait, retries = BACKOFF_S, retries_allowed()
        for attempt in range(retries + 1):
            try:
                return action()
            except Exception as exc:  # botocore, aiohttp and OS errors all come through here
                if _permanent(exc) or attempt == retries:
                    if isinstance(exc, (FileNotFoundError,)):
                        raise
                    raise StorageError(f"storage: {what}: {reason(exc)}") from exc
                time.sleep(wait)
                wait *= 2
        raise AssertionError("unreachable")

    # ------------------------------------------------------------------ reading
    def exists(self, name: str) -> bool:
        return self.retrying(f"looking for {self.location(name)}", lambda: self.fs.exists(self.path(name)))

    def info(self, name: str) -> Entry | None:
        """Size and age of an object, None when there is none."""
        try:
            info = self.retrying(f"looking for {self.location(name)}", lambda: self.fs.info(self.path(name)))
        except FileNotFoundError:
            return None
        if info.get("type") != "file":
            return None
        return Entry(name, int(info.get("size") or 0), _mtime(info))

    def read(self, name: str, limit: int) -> bytes | None:
        """An object's bytes (at most `limit`: a larger one is `StorageError`), None when absent."""
        def fetch() -> bytes:
            with self.fs.open(self.path(name), "rb") as handle:
                return handle.read(limit + 1)
        try:
            data = self.retrying(f"reading {self.location(name)}", fetch)
        except FileNotFoundError:
            return None
        if len(data) > limit:
            raise StorageError(f"storage: {self.location(name)}: larger than {limit} bytes")
        return data

    def get(self, name: str, dest: Path, limit: int | None = None) -> tuple[int, str]:
        """Download an object to `dest` (written as `dest.part`, renamed when whole); its
        (size, sha256). At most `limit` bytes are read: a larger object is `InputError`.
        FileNotFoundError when it is not there."""
        dest = Path(dest)
        part = dest.with_name(f".{dest.name}.{uuid.uuid4().hex[:8]}.part")

        def fetch() -> tuple[int, str]:
            digest, size = hashlib.sha256(), 0
            try:
                with self.fs.open(self.path(name), "rb", block_size=CHUNK) as source, open(part, "wb") as out:
                    for block in iter(lambda: source.read(CHUNK), b""):
                        size += len(block)
                        if limit is not None and size > limit:
                            raise InputError(f"{self.location(name)}: larger than {limit / 1e6:.0f} MB")
                        digest.update(block)
                        out.write(block)
                os.replace(part, dest)
            finally:
                part.unlink(missing_ok=True)
            return size, digest.hexdigest()

        dest.parent.mkdir(parents=True, exist_ok=True)
        return self.retrying(f"downloading {self.location(name)}", fetch)

    def digest(self, name: str) -> tuple[int, str]:
        """(size, sha256) of an object, read through without keeping it."""
        def measure() -> tuple[int, str]:
            digest, size = hashlib.sha256(), 0
            with self.fs.open(self.path(name), "rb", block_size=CHUNK) as source:
                for block in iter(lambda: source.read(CHUNK), b""):
                    size += len(block)
                    digest.update(block)
            return size, digest.hexdigest()
        return self.retrying(f"reading {self.location(name)}", measure)

    def listing(self, prefix: str = "") -> Iterator[Entry]:
        """Every object under `prefix`, recursively, with names relative to the store."""
        base = self.path(prefix)
        try:
            found = self.retrying(f"listing {self.location(prefix)}", lambda: self.fs.find(base, detail=True))
        except FileNotFoundError:
            return
        for path, info in sorted(found.items()):
            if info.get("type", "file") == "file":
                yield Entry(path[len(self.root) + 1:], int(info.get("size") or 0), _mtime(info))

    def names_in(self, folder: str) -> list[str]:
        """File names directly in `folder` (not recursive)."""
        base = self.path(folder)
        try:
            found = self.retrying(f"listing {self.location(folder)}", lambda: self.fs.ls(base, detail=True))
        except FileNotFoundError:
            return []
        return sorted(name_of(info["name"]) for info in found if info.get("type") == "file")

    # ------------------------------------------------------------------ writing
    def put(self, src: str | Path, name: str) -> None:
        """Publish a local file as `name`: uploaded under a temporary key, then copied to its
        name, so no reader sees part of it."""
        tmp = self._tmp_name(name)

        def upload() -> None:
            self.fs.put_file(str(src), self.path(tmp))
            self.fs.copy(self.path(tmp), self.path(name))
        try:
            self.retrying(f"uploading {self.location(name)}", upload)
        finally:
            self._forget(tmp)

    def put_bytes(self, data: bytes, name: str) -> None:
        """Publish small content as `name`, atomically as `put` does."""
        tmp = self._tmp_name(name)

        def upload() -> None:
            self.fs.pipe_file(self.path(tmp), data)
            self.fs.copy(self.path(tmp), self.path(name))
        try:
            self.retrying(f"uploading {self.location(name)}", upload)
        finally:
            self._forget(tmp)

    def remove(self, *names: str) -> None:
        """Remove objects (those already gone are fine)."""
        for name in names:
            try:
                self.retrying(f"removing {self.location(name)}", lambda n=name: self.fs.rm_file(self.path(n)))
            except FileNotFoundError:
                pass

    def _tmp_name(self, name: str) -> str:
        folder, _, base = name.strip("/").rpartition("/")
        return f"{folder}/{TMP}{uuid.uuid4().hex[:12]}-{base}" if folder else f"{TMP}{uuid.uuid4().hex[:12]}-{base}"

    def _forget(self, tmp: str) -> None:
        try:
            self.fs.rm_file(self.path(tmp))
        except Exception:  # noqa: BLE001 - left for `dub cache gc`; the publish itself succeeded or says why
            pass

    # ------------------------------------------------------------------ checks
    def check(self) -> None:
        """Reach the store and write (and remove) a probe object, before any work:
        `InputError` "WHAT URL: why" otherwise (unreachable, no bucket, access refused)."""
        probe = f"{TMP}check-{uuid.uuid4().hex[:12]}"

        def write_and_remove() -> None:
            self.fs.pipe_file(self.path(probe), b"polydub")
            self.fs.rm_file(self.path(probe))
        try:
            write_and_remove()
        except Exception as exc:  # noqa: BLE001 - any failure is the one line
            raise InputError(f"{self.what} {self.url}: {reason(exc)}") from None


def retries_allowed() -> int:
    """DUB_STORAGE_RETRIES: attempts after the first for a transfer that fails (default 4)."""
    import os

    text = os.environ.get("DUB_STORAGE_RETRIES", "").strip()
    if not text:
        return RETRIES
    if not text.isdigit():
        raise InputError(f"DUB_STORAGE_RETRIES must be a whole number of attempts, not {text!r}")
    return int(text)


def _mtime(info: dict) -> float:
    stamp = info.get("LastModified") or info.get("mtime") or info.get("last_modified")
    if hasattr(stamp, "timestamp"):
        return stamp.timestamp()
    try:
        return float(stamp)
    except (TypeError, ValueError):
        return 0.0


def reason(exc: BaseException) -> str:
    """Why a store refused, in a few words."""
    if isinstance(exc, FileNotFoundError):
        return f"not found ({one_line(exc)})"
    if isinstance(exc, PermissionError):
        return f"access refused ({one_line(exc)})"
    name = type(exc).__name__
    if "EndpointConnection" in name or "ConnectTimeout" in name or isinstance(exc, ConnectionError):
        return f"unreachable ({one_line(exc)})"
    if "NoCredentials" in name:
        return "no credentials (for S3: AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, a profile or an instance role)"
    return one_line(exc)


def storage_url() -> str | None:
    """DUB_STORAGE_URL when it names an object store (checked), else None: a local folder."""
    from polydub import config

    url = config.storage_location()
    return check_url(url, "DUB_STORAGE_URL") if is_remote(url) else None


def shared_store() -> Store | None:
    """The store DUB_STORAGE_URL names, or None when storage is a local folder."""
    url = storage_url()
    return Store(url) if url else None


# ---------------------------------------------------------------------- deliverables by location
# A deliverable's location is a local path or a URL; these put it there as `cache.place` does
# on disk (a copy, whole or not at all).


def _split(url: str) -> tuple[Store, str]:
    """The store of a URL's bucket and the object's name in it."""
    url = check_url(url, "--out")
    scheme, rest = url.split("://", 1)
    bucket, _, name = rest.partition("/")
    return Store(f"{scheme}://{bucket}", "--out"), name


def place(src: str | Path, dest: str) -> str:
    """Put a copy of the local file `src` at `dest` (a path: `cache.place`, readable as the
    user's umask says; a URL: uploaded, then copied to its name)."""
    if not is_remote(dest):
        return str(cache.place(src, Path(dest), shared=True))
    store, name = _split(dest)
    size, digest = Path(src).stat().st_size, cache.file_hash(src)
    store.put(src, name)
    _remember(dest, size, digest)
    return dest


def write_text(dest: str, text: str) -> str:
    """Write a small text file at `dest` (a path or a URL), whole or not at all."""
    if not is_remote(dest):
        return str(cache.write_text(Path(dest), text, shared=True))
    store, name = _split(dest)
    data = text.encode("utf-8")
    store.put_bytes(data, name)
    _remember(dest, len(data), hashlib.sha256(data).hexdigest())
    return dest


# What this process just published, by URL: the catalog records a deliverable's size and
# sha256 from what was uploaded instead of reading the object back (bounded: oldest out first).
_PUBLISHED: dict[str, tuple[int, str]] = {}
PUBLISHED_KEPT = 10_000


def _remember(location: str, size: int, digest: str) -> None:
    _PUBLISHED.pop(location, None)
    _PUBLISHED[location] = (size, digest)
    while len(_PUBLISHED) > PUBLISHED_KEPT:
        _PUBLISHED.pop(next(iter(_PUBLISHED)))



def remove(dest: str) -> None:
    """Remove a delivered file (a path or a URL); one already gone is fine."""
    if not is_remote(dest):
        Path(dest).unlink(missing_ok=True)
        return
    store, name = _split(dest)
    store.remove(name)


MAX_REPORT_BYTES = 64 << 20  # a job report; larger is not ours


def read_text(location: str) -> str:
    """A small delivered text file (a job report) from a path or a URL; OSError when absent."""
    if not is_remote(location):
        return Path(location).read_text(encoding="utf-8")
    store, name = _split(location)
    data = store.read(name, MAX_REPORT_BYTES)
    if data is None:
        raise FileNotFoundError(location)
    return data.decode("utf-8")


def exists(location: str) -> bool:
    """Whether a delivered object is there (False when the store cannot say)."""
    store, name = _split(location)
    try:
        return store.info(name) is not None
    except (OSError, StageError, InputError):
        return False


def digest_of(location: str, just_published: bool = False) -> tuple[int | None, str | None]:
    """(bytes, sha256) of a delivered object read through now; (None, None) when it cannot be.
    `just_published`: of what this process uploaded there, when it did (not read back)."""
    if just_published and location in _PUBLISHED:
        return _PUBLISHED[location]
    store, name = _split(location)
    try:
        return store.digest(name)
    except (OSError, StageError, InputError):
        return None, None


def present(folder: str, names: list[str]) -> list[str]:
    """Which of `names` are already in the store folder `folder` (a URL)."""
    store, prefix = _split(folder)
    there = set(store.names_in(prefix))
    return [name for name in names if name in there]


def check_writable(folder: str, what: str = "--out") -> None:
    """Write (and remove) a probe object in the store folder `folder`: `InputError` one line
    when the store is unreachable or refuses."""
    url = check_url(folder, what)
    Store(url, what).check()
