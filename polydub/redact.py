"""Keep secrets out of everything polydub prints or stores.

Provider keys travel in request URLs (DeepL's `auth_key`, LibreTranslate's `api_key`) and
so end up in exception texts; catalog URLs may hold a password. `redact` masks URL
passwords, secret query parameters, the values of environment variables named as secrets
and the password of any URL held in the environment (the catalog's, Prefect's database's); `install` applies it to every log record of the process (polydub's and
Prefect's, which forwards records to its server), messages and tracebacks alike.
"""

from __future__ import annotations

import logging
import os
import re
import time
import traceback

MASK = "***"
MIN_SECRET_CHARS = 6  # shorter values would mask ordinary words
SECRET_ENV = re.compile(r"(KEY|TOKEN|SECRET|PASSWORD|PASSWD|APPKEY|APPID|CLIENT_ID|CREDENTIALS?)$", re.I)
SECRET_PARAMS = ("auth_key", "api_key", "apikey", "key", "token", "access_token", "secret", "secret_key",
                 "password", "passwd", "appkey", "client_secret", "signature", "sig")
_USERINFO = re.compile(r"(?P<scheme>[a-z][a-z0-9+.\-]*://)(?P<user>[^:/@\s]*):(?P<pw>[^@/\s]+)@", re.I)
_PARAM = re.compile(r"(?P<name>(?<![\w-])(?:%s))=(?P<value>[^&\s'\"#)]+)" % "|".join(SECRET_PARAMS), re.I)


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
            values |= {m.group("pw") for m in _USERINFO.finditer(value) if len(m.group("pw")) >= 3}
    _known = (now, sorted(values, key=len, reverse=True))
    return _known[1]


def redact(text: str) -> str:
    """`text` with URL passwords, secret query values and known secret values masked."""
    if not text:
        return text
    text = _USERINFO.sub(lambda m: f"{m['scheme']}{m['user']}:{MASK}@", text)
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
