"""Real HTTP services on a free local port, for the parts of a dub that talk to one."""

from __future__ import annotations

import contextlib
import http.server
import json
import threading
from typing import Iterator
from urllib.parse import parse_qs, urlparse


class _Down(http.server.BaseHTTPRequestHandler):
    def do_POST(self):  # noqa: N802 - http.server's naming
        self.send_response(503)
        self.end_headers()

    do_GET = do_POST

    def log_message(self, *args):
        pass


@contextlib.contextmanager
def translation_service_down() -> Iterator[str]:
    """A self-hosted LibreTranslate that is down: every request gets 503. Yields its URL."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Down)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()


class LibreEcho:
    """A LibreTranslate-compatible service that sends back the text it got, and counts."""

    def __init__(self):
        self.texts: list[str] = []
        echo = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - http.server's naming
                length = int(self.headers.get("Content-Length") or 0)
                query = {**parse_qs(urlparse(self.path).query), **parse_qs(self.rfile.read(length).decode())}
                text = query.get("q", [""])[0]
                echo.texts.append(text)
                body = json.dumps({"translatedText": text}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@contextlib.contextmanager
def libre_echo() -> Iterator[LibreEcho]:
    """A LibreTranslate that translates by sending the text back; `.url`, `.texts` (what it got)."""
    echo = LibreEcho()
    try:
        yield echo
    finally:
        echo.server.shutdown()


def free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


S3_READY_S = 60.0


@contextlib.contextmanager
def s3_server() -> Iterator[str]:
    """A real S3 API server on loopback (moto's `moto_server`), started for the caller and
    stopped afterwards. Yields its endpoint URL; its state lives in its process only."""
    import os
    import subprocess
    import sys
    import time
    import urllib.request

    port = free_port()
    server = subprocess.Popen([os.path.join(os.path.dirname(sys.executable), "moto_server"), "-H", "127.0.0.1",
                               "-p", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + S3_READY_S
    try:
        while True:
            try:
                urllib.request.urlopen(f"{url}/moto-api/", timeout=2).close()
                break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("moto_server did not start") from None
                time.sleep(0.1)
        yield url
    finally:
        server.terminate()
        server.wait(timeout=30)


class Cuttable:
    """A TCP relay to `port` on loopback that a test can cut (every open connection closed,
    new ones refused) and mend: a network that fails in the middle of a job. It counts what
    it passes: `sent` (to the server: requests and uploads), `received` (from it) and
    `connections`; a byte is counted before it is passed on, so once the client has exited,
    every byte it moved is counted."""

    def __init__(self, port: int):
        import socket

        self.sent = self.received = self.connections = 0
        self.counts = threading.Lock()
        self.target = port
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.up = threading.Event()
        self.up.set()
        self.open: set = set()
        self.lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _accept(self) -> None:
        import socket

        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            if not self.up.is_set():
                client.close()
                continue
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target), timeout=10)
            except OSError:
                client.close()
                continue
            with self.lock:
                self.open |= {client, upstream}
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    def reset(self) -> None:
        with self.counts:
            self.sent = self.received = self.connections = 0

    def _pipe(self, source, sink) -> None:
        outbound = source.getsockname()[1] == self.port  # accepted from the client: its requests
        source.settimeout(None)  # a connection idle in the client's pool is not cut by the relay
        with self.counts:
            self.connections += outbound
        try:
            while data := source.recv(1 << 16):
                with self.counts:
                    if outbound:
                        self.sent += len(data)
                    else:
                        self.received += len(data)
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for s in (source, sink):
                _close(s)

    def cut(self) -> None:
        self.up.clear()
        with self.lock:
            for s in self.open:
                _close(s)
            self.open.clear()

    def mend(self) -> None:
        self.up.set()

    def close(self) -> None:
        self.cut()
        self.listener.close()


def _close(sock) -> None:
    """Shut a socket both ways (waking a thread blocked reading it), then close it."""
    import socket

    for step in (lambda: sock.shutdown(socket.SHUT_RDWR), sock.close):
        try:
            step()
        except OSError:
            pass
