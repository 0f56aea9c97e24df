"""Inputs a manifest names by URL: downloaded once into the cache, named by their content.

A download lands in `cache_dir()/downloads/SHA256/NAME` (NAME: the URL's file name, so
deliverables are named as the user knows the file; SHA256: of the content). A small index
(`downloads/index.json`, sha256 of the URL -> file and the URL with its secrets masked) lets
later loads find it without the network; a signed URL's signature is never written down. One
process downloads a URL at a time (a lock per URL); the others wait and find it done.
Bytes arrive in a `.part` file that is removed on any failure and renamed when complete.
A whole download ends by its deadline, however slowly the server sends: its sockets are shut
when the time is up, so no read (of the headers or the body) waits past it.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import re
import socket
import ssl
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from pathlib import Path

from polydub import cache, config
from polydub.errors import DubError, InputError
from polydub.redact import redact

SCHEMES = ("http", "https")
READ_TIMEOUT_S = 60.0  # connecting, and the longest wait for the next bytes
DEADLINE_S = 3600.0  # a whole download, headers included, on the wall clock; 2 GB at 1 MB/s is 35 minutes
CHUNK = 1 << 20
NAME_MAX = 100  # characters of the file name kept from the URL
DEFAULT_NAME = "download"  # for a URL whose path ends without a file name
INDEX = "index.json"
MAX_INDEX_BYTES = 64 << 20  # ~300,000 URLs; a larger file is not ours, and read as empty
_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*):")
_REFUSED = ("file", "ftp", "ftps", "sftp", "s3", "gs", "az", "data", "smb")  # schemes without //
_DIGEST = re.compile(r"[0-9a-f]{64}")  # an index key: the sha256 of a URL


def scheme_of(text: str) -> str | None:
    """The URL scheme `text` is written with (lower case), or None for a local path. A name
    like `x:y.mp4` is a local file; `scheme://...` and `file:`, `s3:`... are URLs."""
    m = _SCHEME.match(text.strip())
    if not m:
        return None
    scheme = m.group(1).lower()
    return scheme if text.strip()[m.end():].startswith("//") or scheme in _REFUSED else None


def is_url(text: str) -> bool:
    return scheme_of(text) is not None


def check_url(url: str) -> None:
    """Refuse any scheme but http and https, and a URL with a user name or password."""
    scheme = scheme_of(url)
    if scheme not in SCHEMES:
        raise InputError(f"{url}: {scheme}: URLs are not accepted (http or https, or a local file)")
    parts = urllib.parse.urlsplit(url.strip())
    if "@" in parts.netloc:  # urllib would take user:password for the host and say it is unknown
        raise InputError(f"{url}: a user name or password in the URL is not accepted; give a signed URL "
                         f"or download the file first")
    if not parts.hostname:
        raise InputError(f"{url}: no host in the URL")


def url_key(url: str) -> str:
    """The index key of a URL: its sha256, so that no secret in it is written down."""
    return hashlib.sha256(url.strip().encode()).hexdigest()


def downloads_dir() -> Path:
    return config.cache_dir() / cache.DOWNLOADS


def read_index() -> dict[str, dict]:
    """url_key(URL) -> {"file": "SHA256/NAME", "size": bytes, "url": the URL, secrets masked};
    empty when missing or unreadable. An index written before was keyed by the URL itself:
    its entries are re-keyed (and their URLs masked) here, and so on disk at the next write."""
    path = downloads_dir() / INDEX
    try:
        if path.stat().st_size > MAX_INDEX_BYTES:
            return {}
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    index: dict[str, dict] = {}
    for key, entry in (data.items() if isinstance(data, dict) else ()):
        if _DIGEST.fullmatch(key):
            index[key] = entry
        elif isinstance(entry, dict):  # written before: keyed by the URL itself
            index[url_key(key)] = {**entry, "url": redact(key)}
    return index


def cached(url: str, index: dict[str, dict] | None = None) -> Path | None:
    """The download of `url` if the index has it and the file is still there, whole
    (its recorded size); no network."""
    entry = (read_index() if index is None else index).get(url_key(url))
    try:
        path = downloads_dir() / entry["file"]
        if ".." not in Path(entry["file"]).parts and path.stat().st_size == entry["size"]:
            return path
    except (TypeError, KeyError, OSError):
        pass
    return None


def fetch(url: str, index: dict[str, dict] | None = None) -> Path:
    """The local copy of `url`, downloaded now unless the index has it. `InputError` with
    the reason (scheme, HTTP status, unreachable, too large, timed out, incomplete)."""
    url = url.strip()
    check_url(url)
    hit = cached(url, index)
    if hit:
        return hit
    key = url_key(url)[:32]
    with cache.exclusive(cache.DOWNLOADS, key):
        hit = cached(url)  # another process may have finished it while we waited
        if hit:
            return hit
        path = _download(url)
        _remember(url, path)
        return path


def file_name(url: str) -> str:
    """A safe file name from the URL's path (its suffix kept), else `download`."""
    raw = urllib.parse.unquote(urllib.parse.urlsplit(url).path.rsplit("/", 1)[-1])
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", raw).lstrip("._-")
    stem, dot, suffix = name.rpartition(".")
    if not dot or not re.fullmatch(r"[A-Za-z0-9]{1,10}", suffix):
        stem, suffix = name, ""
    stem = stem[:NAME_MAX] or DEFAULT_NAME
    return f"{stem}.{suffix}" if suffix else stem


class _HttpOnly(urllib.request.HTTPRedirectHandler):
    """Follow redirects to http and https only (urllib would also follow one to ftp)."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        scheme = urllib.parse.urlsplit(newurl).scheme.lower()
        if scheme not in SCHEMES:
            raise InputError(f"{req.full_url}: redirected to a {scheme}: URL; only http and https are followed")
        return super().redirect_request(req, fp, code, msg, headers, newurl)


class _Deadline:
    """The end of one download on the wall clock. Its connections' sockets are shut when the
    time is up, so a read blocked on a server that sends a byte now and then (which resets a
    socket's own timeout each time) returns at once."""

    def __init__(self, seconds: float):
        self.end = time.monotonic() + seconds
        self.expired = False
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        self._timer = threading.Timer(seconds, self._expire)
        self._timer.daemon = True

    def __enter__(self) -> "_Deadline":
        self._timer.start()
        return self

    def __exit__(self, *exc) -> None:
        self._timer.cancel()

    def passed(self) -> bool:
        return self.expired or time.monotonic() > self.end

    def watch(self, sock: socket.socket) -> None:
        with self._lock:
            self._sockets.append(sock)
            if self.expired:  # connected just as the time ran out
                self._shut(sock)

    def _expire(self) -> None:
        with self._lock:
            self.expired = True
            for sock in self._sockets:
                self._shut(sock)

    @staticmethod
    def _shut(sock: socket.socket) -> None:
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass  # closed already


def _opener(deadline: _Deadline) -> urllib.request.OpenerDirector:
    """urllib's opener, each connection it makes (redirects too) watched by `deadline`."""

    class Plain(http.client.HTTPConnection):
        def connect(self) -> None:
            super().connect()
            deadline.watch(self.sock)

    class Secure(http.client.HTTPSConnection):
        def connect(self) -> None:
            super().connect()
            deadline.watch(self.sock)

    class PlainHandler(urllib.request.HTTPHandler):
        def http_open(self, req):
            return self.do_open(Plain, req)

    class SecureHandler(urllib.request.HTTPSHandler):
        def https_open(self, req):
            return self.do_open(Secure, req, context=ssl.create_default_context())

    return urllib.request.build_opener(_HttpOnly, PlainHandler, SecureHandler)


def _download(url: str) -> Path:
    folder = downloads_dir()
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / f".{uuid.uuid4().hex[:12]}{cache.PART_SUFFIX}"
    deadline = _Deadline(DEADLINE_S)
    too_slow = f"{url}: download took longer than {DEADLINE_S:g} s"
    try:
        with deadline:
            size, digest = _receive(url, tmp, deadline, too_slow)
        if size == 0:
            raise InputError(f"{url}: the server sent an empty file")
        dest = folder / digest / file_name(url)
        if dest.is_file() and dest.stat().st_size == size:
            tmp.unlink()  # the same content under the same name, from another URL
        else:
            dest.parent.mkdir(exist_ok=True)
            os.replace(tmp, dest)
        return dest
    except (OSError, http.client.HTTPException) as exc:
        if deadline.expired:  # a read cut short by the deadline
            raise InputError(too_slow) from None
        raise _failure(url, exc, folder) from None
    finally:
        tmp.unlink(missing_ok=True)


def _receive(url: str, tmp: Path, deadline: _Deadline, too_slow: str) -> tuple[int, str]:
    """Download `url` into `tmp`: (bytes, sha256). The deadline is checked after every read,
    which returns whatever has arrived (not a whole CHUNK: a trickle would hide in it)."""
    limit = config.max_download_bytes()
    too_large = f"{url}: larger than the download limit of {limit / (1 << 20):g} MB (DUB_MAX_DOWNLOAD_MB)"
    request = urllib.request.Request(url, headers={"User-Agent": "polydub"})
    digest, size = hashlib.sha256(), 0
    with _opener(deadline).open(request, timeout=min(READ_TIMEOUT_S, DEADLINE_S)) as response, \
            open(tmp, "wb") as out:
        declared = response.headers.get("Content-Length")
        declared = int(declared) if declared and declared.strip().isdigit() else None
        if declared is not None and declared > limit:
            raise InputError(too_large)
        while block := response.read1(CHUNK):
            if deadline.passed():
                raise InputError(too_slow)
            size += len(block)
            if size > limit:  # a server that does not say how much it sends
                raise InputError(too_large)
            digest.update(block)
            out.write(block)
    if deadline.passed():  # the connection was shut by the deadline: not the server's end
        raise InputError(too_slow)
    if declared is not None and size < declared:
        raise InputError(f"{url}: download incomplete: the server closed the connection after "
                         f"{size} of {declared} bytes")
    return size, digest.hexdigest()


def _failure(url: str, exc: Exception, folder: Path) -> DubError:
    """The one line saying why a download failed."""
    if isinstance(exc, urllib.error.HTTPError):
        return InputError(f"{url}: download failed: HTTP {exc.code} {exc.reason}")
    if isinstance(exc, urllib.error.URLError):
        reason = exc.reason
        if isinstance(reason, (TimeoutError, socket.timeout)):
            return InputError(f"{url}: no answer within {READ_TIMEOUT_S:g} s")
        text = getattr(reason, "strerror", None) or str(reason)
        return InputError(f"{url}: could not download ({text})")
    if isinstance(exc, (TimeoutError, socket.timeout)):
        return InputError(f"{url}: download stalled: no data for {READ_TIMEOUT_S:g} s")
    if isinstance(exc, http.client.IncompleteRead):
        return InputError(f"{url}: download incomplete: the server closed the connection early")
    if isinstance(exc, http.client.HTTPException):
        return InputError(f"{url}: download failed ({type(exc).__name__}: {exc})")
    if cache.is_disk_full(exc, folder):  # reset connections, TLS failures, and our own disk
        return cache.disk_full(folder)
    return InputError(f"{url}: download failed ({getattr(exc, 'strerror', None) or exc})")


def _remember(url: str, path: Path) -> None:
    """Add `url` to the index (read, changed and replaced under the index's lock), keyed by
    its digest and shown with its secrets masked."""
    folder = downloads_dir()
    with cache.exclusive(cache.DOWNLOADS, "index"):
        index = read_index()
        index[url_key(url)] = {"file": path.relative_to(folder).as_posix(), "size": path.stat().st_size,
                               "url": redact(url)}
        cache.write_text(folder / INDEX, json.dumps(index, indent=0, sort_keys=True))
