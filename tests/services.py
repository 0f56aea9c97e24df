"""Real HTTP services on a free local port, for the parts of a dub that talk to one."""

from __future__ import annotations

import contextlib
import http.server
import threading
from typing import Iterator


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
