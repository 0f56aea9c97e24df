"""Keep secrets out of everything polydub prints or stores.

Provider keys travel in request URLs (DeepL's `auth_key`, LibreTranslate's `api_key`) and
so end up in exception texts; signed URLs (S3's `X-Amz-Signature`, GCS's `X-Goog-Credential`)
are their own key; catalog URLs may hold a password. `redact` masks the whole user part of a
URL (`user:password@`), every query parameter whose name holds a secret's word, `key=`-style
secrets in free text, the values of environment variables named as secrets and the password
of any URL held in the environment (the catalog's, Prefect's database's); `install` applies it
to every log record of the process (polydub's and Prefect's, which forwards records to its
server), messages and tracebacks alike.
"""

from __future__ import annotations

import logging
import os
import re
import time
import traceback
import urllib.parse

MASK = "***"
MIN_SECRET_CHARS = 6  # shorter values would mask ordinary words
SECRET_ENV = re.compile(r"(KEY|TOKEN|SECRET|PASSWORD|PASSWD|APPKEY|APPID|CLIENT_ID|CREDENTIALS?|AUTH_STRING|ACCESS_KEY_ID|CONNECTION_STRING)$", re.I)
# A URL query parameter whose name (any case) contains one of these is a secret.
SECRET_WORDS = ("signature", "credential", "token", "key", "sig", "secret", "password", "passwd")
# A URL query parameter with one of these names carries the script a translation service is
# asked to translate (LibreTranslate's and Google's `q`, DeepL's `text`): an ad's unreleased
# copy, kept out of errors and logs like a secret.
CONTENT_PARAMS = ("q", "text", "source_text", "contents")
# Outside a URL query only these names count (`cache_key=` in a message is not a secret).
SECRET_PARAMS = ("auth_key", "api_key", "apikey", "key", "token", "access_token", "secret", "secret_key",
                 "password", "passwd", "appkey", "client_secret", "signature", "sig")
# A value runs to the next separator; a colon or full stop just before a space is the message's.
_VALUE = r"(?P<value>[^&;#\s'\"<>)]+?)(?=[:,.]?(?:[&;#\s'\"<>)]|$))"
# userinfo runs to the last @ before the host: a password may hold an unescaped @
_USERINFO = re.compile(r"(?P<scheme>[a-z][a-z0-9+.\-]*://)(?P<info>[^/?#\s]+)@", re.I)
_PASSWORD = re.compile(r"[a-z][a-z0-9+.\-]*://[^:/@\s]*:(?P<pw>[^@/\s]+)@", re.I)  # of URLs in the environment
_QUERY = re.compile(r"(?P<lead>[?&;#])(?P<name>[^=&;#?\s'\"<>()]+)=" + _VALUE)
_PARAM = re.compile(r"(?P<name>(?<![\w-])(?:%s))=" % "|".join(SECRET_PARAMS) + _VALUE, re.I)


ENV_REFRESH_S = 1.0  # the environment is read again at most this often (it rarely changes)
_known: tuple[float, list[str]] = (float("-inf"), [])


def secret_values() -> list[str]:
    """Values of environment variables that name a secret (DEEPL_API_KEY, ...) and passwords
    of URLs held in any variable (DUB_DATABASE_URL, ...), longest first."""
    global _known
    now = time.monotonic()
    if now - _known[0] < ENV_REFRESH_S:
        return _known[1]
    values = {v for k, v in os.environ.items() if SECRET_ENV.search(k) and len(v) >= MIN_SECRET_CHARS}
    for value in os.environ.values():
        if "@" in value:
            values |= {m.group("pw") for m in _PASSWORD.finditer(value) if len(m.group("pw")) >= 3}
    _known = (now, sorted(values, key=len, reverse=True))
    return _known[1]


def is_secret_param(name: str) -> bool:
    """Whether a query parameter's name (URL-encoded or not, any case) says it holds a secret."""
    plain = urllib.parse.unquote(name).lower()
    return any(word in plain for word in SECRET_WORDS)


def _query_param(m: re.Match) -> str:
    hidden = is_secret_param(m["name"]) or urllib.parse.unquote(m["name"]).lower() in CONTENT_PARAMS
    return f"{m['lead']}{m['name']}={MASK}" if hidden else m[0]


def redact(text: str) -> str:
    """`text` with the user part of URLs, secret query values, script text sent in a query
and known secret values masked."""
    if not text:
        return text
    text = _USERINFO.sub(lambda m: f"{m['scheme']}{MASK}@", text)
    text = _QUERY.sub(_query_param, text)
    text = _PARAM.sub(lambda m: f"{m['name']}={MASK}", text)
    for value in secret_values():
        text = text.replace(value, MASK)
    return text


def redact_record(record: logging.LogRecord) -> None:
    """Mask a record's message and traceback in place, before any handler formats or ships it."""
    try:
        message = record.getMessage()
    except Exception:  # noqa: BLE001 - a bad format string is the logger's problem
        return
    record.msg, record.args = redact(message), ()
    if record.exc_info and not record.exc_text:
        record.exc_text = "".join(traceback.format_exception(*record.exc_info)).rstrip("\n")
    if record.exc_text:
        record.exc_text = redact(record.exc_text)


_installed = False


def install() -> None:
    """Redact every log record made in this process from now on (idempotent)."""
    global _installed
    if _installed:
        return
    previous = logging.getLogRecordFactory()

    def factory(*args, **kwargs) -> logging.LogRecord:
        record = previous(*args, **kwargs)
        redact_record(record)
        return record

    logging.setLogRecordFactory(factory)
    _installed = True
