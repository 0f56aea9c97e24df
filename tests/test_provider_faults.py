"""A translation service that misbehaves, served on 127.0.0.1: rate limits and server
errors are retried, a service that never answers times out, and no error text carries
the key that travels in the request URL."""

from __future__ import annotations

import http.server
import json
import threading
import time

import pytest

from polydub import redact, translate
from polydub.errors import StageError
from polydub.segments import Segment
from polydub.translate import make_translator, translate_segments

KEY = "planted-libre-key-8c1f0d"


class Service:
    """Answers each request with the next scripted action: an HTTP status, 'ok' (a
    translation), 'flood' (5,000 characters for it), 'hang' (accepts and never answers)
    or 'close' (drops the connection)."""

    def __init__(self, script: list):
        self.script, self.paths = list(script), []
        service = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - http.server's naming
                service.paths.append(self.path)
                action = service.script.pop(0) if service.script else "ok"
                if action == "hang":
                    time.sleep(30)
                    return
                if action == "close":
                    self.close_connection = True
                    self.connection.close()
                    return
                text = "HOLA " * 1000 if action == "flood" else "HOLA"
                body = json.dumps({"translatedText": text}).encode() if action in ("ok", "flood") else b"{}"
                self.send_response(200 if action in ("ok", "flood") else action)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/"


@pytest.fixture
def service(monkeypatch):
    made = []

    def start(*script) -> Service:
        made.append(Service(list(script)))
        monkeypatch.setenv("LIBRE_API_KEY", KEY)
        monkeypatch.setenv("LIBRE_URL", made[-1].url)
        # the masking reads the environment at most once a second: make it read the key set just now
        monkeypatch.setattr(redact, "_known", (float("-inf"), []))
        return made[-1]

    monkeypatch.setenv("DUB_TRANSLATE_RETRIES", "2")
    monkeypatch.setenv("DUB_TRANSLATE_TIMEOUT", "1")
    monkeypatch.setattr(translate, "sleep", lambda s: None)  # backoff without the wait
    yield start
    for s in made:
        s.server.shutdown()


LINE = [Segment(0.0, 1.0, "Hello")]


def test_rate_limit_and_server_error_are_retried(service):
    svc = service(429, 503, "ok")
    assert [s.text for s in translate_segments(LINE, "en", "es", make_translator("libre"))] == ["HOLA"]
    assert len(svc.paths) == 3 and f"api_key={KEY}" in svc.paths[0]  # the key travels in the URL


@pytest.mark.slow
def test_a_service_that_never_answers_times_out(service):
    service("hang", "hang", "hang")
    started = time.monotonic()
    with pytest.raises(StageError, match=r"still failing after 3 attempts \(TimeoutError: no answer within 1 s\)"):
        translate_segments(LINE, "en", "es", make_translator("libre"))
    assert time.monotonic() - started < 10


@pytest.mark.parametrize("script", [(403,), ("close", "close", "close")], ids=["refused key", "dropped"])
def test_errors_never_show_the_key(service, script):
    service(*script)
    with pytest.raises(StageError) as caught:
        translate_segments(LINE, "en", "es", make_translator("libre"))
    assert KEY not in str(caught.value) and "libre" in str(caught.value)


def test_a_flood_of_text_for_one_line_is_not_voiced(service):
    service("flood")
    with pytest.raises(StageError, match=r"^libre returned 4999 characters for line 1 \(5 sent\); not voicing it$"):
        translate_segments(LINE, "en", "es", make_translator("libre"))
