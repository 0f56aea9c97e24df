"""Secrets are masked in error texts and in log records (messages and tracebacks)."""

from __future__ import annotations

import io
import logging

import pytest

from polydub import redact
from polydub.errors import StageError


@pytest.fixture
def fresh_env(monkeypatch):
    monkeypatch.setattr(redact, "_known", (float("-inf"), []))  # read the environment again
    return monkeypatch


@pytest.mark.parametrize("text, kept", [
    ("postgresql://dubber:hunter2pw@db.example.com:5432/catalog", "postgresql://***@db.example.com:5432/catalog"),
    ("https://ghp_t0k3nvalue@git.example/x.mp4", "https://***@git.example/x.mp4"),  # a token as the user name
    ("http://u:p@ss:w@rd@127.0.0.1:8/x.mp4?a=b@c", "http://***@127.0.0.1:8/x.mp4?a=b@c"),  # an @ in the password
    ("GET https://api-free.deepl.com/v2/translate?auth_key=abc123:fx&text=Hi", "?auth_key=***&text=***"),
    ("POST http://127.0.0.1:5000/translate?q=Hi&api_key=s3cr3t&format=text", "?q=***&api_key=***&format=text"),
    # the script sent to a translator stays out of errors (seen in a Partial run's message)
    ("Max retries exceeded with url: /translate?q=Hello%2C+and+welcome+to+ou (Caused by",
     "url: /translate?q=*** (Caused by"),
    ("https://x.test/a?key=AIzaSyD-123&token=t0k3n", "?key=***&token=***"),
    ("no secret here: cache_key=abc, monkey=3", "no secret here: cache_key=abc, monkey=3"),
])
def test_urls_are_masked(text, kept, fresh_env):
    assert kept in redact.redact(text)


SIGNED = [  # query parameters of signed URLs: S3, GCS, Azure SAS, CloudFront, and made-up names
    ("X-Amz-Signature", "SECRET1"), ("X-Amz-Credential", "SECRET2"), ("X-Amz-Security-Token", "SECRET3"),
    ("X-Goog-Signature", "SECRET4"), ("x-goog-credential", "SECRET5"), ("sig", "SECRET6"), ("Key-Pair-Id", "SECRET7"),
    ("Signature", "SECRET8"), ("my_Secret_thing", "SECRET9"), ("userPassword", "SECRET10"), ("apiKEY", "SECRET11"),
    ("X%2DAmz%2DSignature", "SECRET12"),
]


def test_every_secret_query_parameter_of_a_signed_url_is_masked(fresh_env):
    query = "&".join(f"{name}={value}" for name, value in SIGNED)
    url = f"https://bucket.s3.amazonaws.com/ads/spot.mp4?X-Amz-Date=20261204T000000Z&{query}&X-Amz-Expires=900"
    shown = redact.redact(f"{url}: download failed: HTTP 403 Forbidden")
    assert not any(value in shown for _, value in SIGNED), shown
    assert "X-Amz-Date=20261204T000000Z&" in shown and "&X-Amz-Expires=900: download failed" in shown
    assert "X-Amz-Signature=***&X-Amz-Credential=***&" in shown
    assert redact.redact("https://x.test/a.mp4#access_token=SECRET13&x=1") == "https://x.test/a.mp4#access_token=***&x=1"
    assert redact.redact("https://x.test/a.mp4?token=SECRET14: gone") == "https://x.test/a.mp4?token=***: gone"


def test_secret_environment_values_are_masked_wherever_they_appear(fresh_env):
    fresh_env.setenv("DEEPL_API_KEY", "f63c02c5-f056-key:fx")
    fresh_env.setenv("DUB_DATABASE_URL", "postgresql://u:pw-in-url@h/db")
    fresh_env.setenv("DUB_LANGS", "es,fr")  # not a secret's name: left alone
    text = "AuthorizationException: f63c02c5-f056-key:fx --> bad key; login pw-in-url; es,fr"
    assert redact.redact(text) == "AuthorizationException: *** --> bad key; login ***; es,fr"
    assert str(StageError(text)) == redact.redact(text)  # errors are masked when made


def test_passwords_of_urls_in_any_setting_are_masked(fresh_env):
    """Not only the catalog's URL: Prefect's database, a store's endpoint, any URL setting."""
    fresh_env.setenv("PREFECT_API_DATABASE_CONNECTION_URL", "postgresql+asyncpg://prefect:pf-pass-9@db/prefect")
    fresh_env.setenv("SOME_ENDPOINT", "https://svc:endpoint-pw@store.example/bucket")
    text = "could not connect with pf-pass-9 or endpoint-pw"
    assert redact.redact(text) == "could not connect with *** or ***"


def test_log_records_are_masked_message_and_traceback(fresh_env):
    fresh_env.setenv("MICROSOFT_API_KEY", "ms-planted-secret-77")
    redact.install()
    stream = io.StringIO()
    log = logging.getLogger("polydub.test_redact")
    log.addHandler(logging.StreamHandler(stream))
    log.propagate = False
    try:
        raise ConnectionError("Max retries exceeded with url: /translate?api_key=plain-in-url&q=x")
    except ConnectionError:
        log.exception("request with %s failed", "ms-planted-secret-77")
    text = stream.getvalue()
    assert "Traceback" in text and "api_key=***" in text and "request with *** failed" in text
    assert "ms-planted-secret-77" not in text and "plain-in-url" not in text
