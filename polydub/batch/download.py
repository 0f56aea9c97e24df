"""Inputs a manifest names by URL: downloaded once into the cache, named by their content.

A download lands in `cache_dir()/downloads/SHA256/NAME` (NAME: the URL's file name, so
deliverables are named as the user knows the file; SHA256: of the content). A small index
(`downloads/index.json`, URL -> file) lets later loads find it without the network. One
process downloads a URL at a time (a lock per URL); the others wait and find it done.
Bytes arrive in a `.part` file that is removed on any failure and renamed when complete.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import re
import socket
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from pathlib import Path

from polydub import cache, config
from polydub.errors import InputError

SCHEMES = ("http", "https")
READ_TIMEOUT_S = 60.0  # connecting, and the longest wait for the next bytes
DEADLINE_S = 3600.0  # a whole download; 2 GB at 1 MB/s is 35 minutes
CHUNK = 1 << 20
NAME_MAX = 100  # characters of the file name kept from the URL
DEFAULT_NAME = "download"  # for a URL whose path ends without a file name
INDEX = "index.json"
MAX_INDEX_BYTES = 64 << 20  # ~300,000 URLs; a larger file is not ours, and read as empty
_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*):")
_REFUSED = ("file", "ftp", "ftps", "sftp", "s3", "gs", "az", "data", "smb")  # schemes without //


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
    """Refuse any scheme but http and https."""
    scheme = scheme_of(url)
    if scheme not in SCHEMES:
        raise InputError(f"{url}: {scheme}: URLs are not accepted (http or https, or a local file)")
    if not urllib.parse.urlsplit(url.strip()).hostname:
        raise InputError(f"{url}: no host in the URL")


def downloads_dir() -> Path:
    return config.cache_dir() / cache.DOWNLOADS


def read_index() -> dict[str, dict]:
    """URL -> {"file": "SHA256/NAME", "size": bytes}; empty when missing or unreadable."""
    path = downloads_dir() / INDEX
    try:
        if path.stat().st_size > MAX_INDEX_BYTES:
            return {}
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def cached(url: str, index: dict[str, dict] | None = None) -> Path | None:
    """The download of `url` if the index has it and the file is still there, whole
    (its recorded size); no network."""
    entry = (read_index() if index is None else index).get(url.strip())
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
    key = hashlib.sha256(url.encode()).hexdigest()[:32]
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


def _download(url: str) -> Path:
    folder = downloads_dir()
    folder.mkdir(parents=True, exist_ok=True)
    limit = config.max_download_bytes()
    too_large = f"{url}: larger than the download limit of {limit / (1 << 20):g} MB (DUB_MAX_DOWNLOAD_MB)"
    tmp = folder / f".{uuid.uuid4().hex[:12]}{cache.PART_SUFFIX}"
    opener = urllib.request.build_opener(_HttpOnly)
    request = urllib.request.Request(url, headers={"User-Agent": "polydub"})
    deadline = time.monotonic() + DEADLINE_S
    digest, size = hashlib.sha256(), 0
    try:
        with opener.open(request, timeout=READ_TIMEOUT_S) as response, open(tmp, "wb") as out:
            declared = response.headers.get("Content-Length")
            if declared and declared.strip().isdigit() and int(declared) > limit:
                raise InputError(too_large)
            while block := response.read(CHUNK):
                size += len(block)
                if size > limit:  # a server that does not say how much it sends
                    raise InputError(too_large)
                if time.monotonic() > deadline:
                    raise InputError(f"{url}: download took longer than {DEADLINE_S:.0f} s")
                digest.update(block)
                out.write(block)
        if declared and declared.strip().isdigit() and size < int(declared):
            raise InputError(f"{url}: download incomplete: the server closed the connection after "
                             f"{size} of {int(declared)} bytes")
        if size == 0:
            raise InputError(f"{url}: the server sent an empty file")
        dest = folder / digest.hexdigest() / file_name(url)
        if dest.is_file() and dest.stat().st_size == size:
            tmp.unlink()  # the same content under the same name, from another URL
        else:
            dest.parent.mkdir(exist_ok=True)
            os.replace(tmp, dest)
        return dest
    except urllib.error.HTTPError as exc:
        raise InputError(f"{url}: download failed: HTTP {exc.code} {exc.reason}") from None
    except urllib.error.URLError as exc:
        reason = exc.reason
        if isinstance(reason, (TimeoutError, socket.timeout)):
            raise InputError(f"{url}: no answer within {READ_TIMEOUT_S:g} s") from None
        text = getattr(reason, "strerror", None) or str(reason)
        raise InputError(f"{url}: could not download ({text})") from None
    except (TimeoutError, socket.timeout):
        raise InputError(f"{url}: download stalled: no data for {READ_TIMEOUT_S:g} s") from None
    except http.client.IncompleteRead:
        raise InputError(f"{url}: download incomplete: the server closed the connection early") from None
    except http.client.HTTPException as exc:
        raise InputError(f"{url}: download failed ({type(exc).__name__}: {exc})") from None
    except OSError as exc:  # reset connections, TLS failures, and our own disk
        if cache.is_disk_full(exc, folder):
            raise cache.disk_full(folder) from exc
        raise InputError(f"{url}: download failed ({exc.strerror or exc})") from None
    finally:
        tmp.unlink(missing_ok=True)


def _remember(url: str, path: Path) -> None:
    """Add `url` to the index (read, changed and replaced under the index's lock)."""
    folder = downloads_dir()
    with cache.exclusive(cache.DOWNLOADS, "index"):
        index = read_index()
        index[url] = {"file": path.relative_to(folder).as_posix(), "size": path.stat().st_size}
        cache.write_text(folder / INDEX, json.dumps(index, indent=0, sort_keys=True))
