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
