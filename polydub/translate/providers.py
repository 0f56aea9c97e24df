"""Online translation services through deep-translator.

Each service gets many subtitle lines in one request: the lines are joined with newlines,
which every service keeps, and split back afterwards (`translate_segments` checks the
count and retries smaller batches when a service merged or split lines).
"""

from __future__ import annotations

import os
import socket
import threading
import urllib.parse
from dataclasses import dataclass, field
from importlib import metadata

from polydub import config, languages
from polydub.errors import InputError, StageError

SEPARATOR = "\n"
NAME_LOOKUP_S = 5.0  # a service's name that does not resolve by then is out of reach
_REACHED: set[str] = set()  # hosts whose names resolved in this process

# Our code -> other spellings services use (Google still says `iw` for Hebrew).
_ALIASES = {"he": ["iw"], "zh": ["zh-cn", "zh-hans"], "zh-tw": ["zh-hant"], "nb": ["no"],
            "no": ["nb"], "tl": ["fil"], "pt-br": ["pt"]}


@dataclass(frozen=True)
class Provider:
    """A deep-translator class, its request size limit (characters) and where its
    credentials come from: constructor argument -> environment variable."""

    class_name: str
    max_chars: int
    required_env: dict[str, str] = field(default_factory=dict)
    optional_env: dict[str, str] = field(default_factory=dict)
    languages: str | None = None  # name of its language table in deep_translator.constants
    base_url: str | None = None  # key of its address in deep_translator.constants.BASE_URLS


PROVIDERS: dict[str, Provider] = {
    "google": Provider("GoogleTranslator", 5000, languages="GOOGLE_LANGUAGES_TO_CODES", base_url="GOOGLE_TRANSLATE"),
    "deepl": Provider("DeeplTranslator", 5000, {"api_key": "DEEPL_API_KEY"},
                      languages="DEEPL_LANGUAGE_TO_CODE", base_url="DEEPL"),
    "microsoft": Provider("MicrosoftTranslator", 5000, {"api_key": "MICROSOFT_API_KEY"},
                          {"region": "MICROSOFT_REGION"}, base_url="MICROSOFT_TRANSLATE"),
    "mymemory": Provider("MyMemoryTranslator", 500, optional_env={"email": "MYMEMORY_EMAIL"},
                         languages="MY_MEMORY_LANGUAGES_TO_CODES", base_url="MYMEMORY"),
    "libre": Provider("LibreTranslator", 5000, {"api_key": "LIBRE_API_KEY"},
                      {"custom_url": "LIBRE_URL"}, languages="LIBRE_LANGUAGES_TO_CODES", base_url="LIBRE"),
    "papago": Provider("PapagoTranslator", 5000,
                       {"client_id": "PAPAGO_CLIENT_ID", "secret_key": "PAPAGO_SECRET_KEY"},
                       languages="PAPAGO_LANGUAGE_TO_CODE", base_url="PAPAGO_API"),
    "yandex": Provider("YandexTranslator", 5000, {"api_key": "YANDEX_API_KEY"}, base_url="YANDEX"),
    "baidu": Provider("BaiduTranslator", 5000, {"appid": "BAIDU_APPID", "appkey": "BAIDU_APPKEY"},
                      languages="BAIDU_LANGUAGE_TO_CODE", base_url="BAIDU"),
}


def provider_code(code: str, table: dict[str, str] | None) -> str | None:
    """Our language code as a service spells it, or None when it does not offer it.
    Tables map English names to codes (Papago's the other way round)."""
    norm = languages.normalize(code)
    base = norm.split("-")[0]
    wanted = [norm, *_ALIASES.get(norm, []), base, *_ALIASES.get(base, [])]
    if table is None:  # the service lists its languages only online: trust ISO 639-1
        return base
    by_code = {c.lower(): c for pair in table.items() for c in pair}
    for w in wanted:
        if w in by_code:
            return by_code[w]
    by_name = {k.lower(): v for k, v in table.items()}
    if languages.name(base).lower() in by_name:
        return by_name[languages.name(base).lower()]
    # Regional tables (MyMemory: es-ES, en-GB): the main region first.
    regional = [c for c in by_code if c.startswith(base + "-")]
    regional.sort(key=lambda c: c != f"{base}-{base}")
    return by_code[regional[0]] if regional else None


def _library_version() -> str:
    try:
        return metadata.version("deep-translator")
    except metadata.PackageNotFoundError:  # importable without its metadata (vendored)
        import deep_translator

        return deep_translator.__version__


class ProviderTranslator:
    """A deep-translator service behind the `Translator` interface."""

    def __init__(self, name: str, provider: Provider, credentials: dict[str, str]):
        self.name = name
        self.version = f"deep-translator-{_library_version()}"
        self.max_chars = provider.max_chars
        self._provider = provider
        self._credentials = credentials
        self._clients: dict[tuple[str, str], object] = {}

    def client(self, source: str, target: str):
        """The deep-translator object for one language pair (built once; Microsoft's asks
        the service for its language list here)."""
        key = (source, target)
        if key not in self._clients:
            import deep_translator
            from deep_translator import constants

            table = getattr(constants, self._provider.languages) if self._provider.languages else None
            src, tgt = provider_code(source, table), provider_code(target, table)
            for code, ours in ((src, source), (tgt, target)):
                if code is None:
                    raise StageError(f"{self.name} does not translate {languages.name(ours)} ({ours})")
            cls = getattr(deep_translator, self._provider.class_name)
            self._clients[key] = cls(source=src, target=tgt, **self._credentials)
        return self._clients[key]

    def host(self) -> str | None:
        """The name of the machine the service answers on (LIBRE_URL's for libre)."""
        from deep_translator.constants import BASE_URLS

        url = self._credentials.get("custom_url")
        if url is None and self._provider.base_url:
            free = self._credentials.get("use_free_api") and f"{self._provider.base_url}_FREE" in BASE_URLS
            url = BASE_URLS[f"{self._provider.base_url}_FREE" if free else self._provider.base_url]
        return urllib.parse.urlsplit(url).hostname if url else None

    def check_reachable(self) -> None:
        """`InputError` before any work when the service's name does not resolve from here
        (a worker without DNS or network): deep-translator would otherwise retry it for a
        minute per language before the job fails."""
        host = self.host()
        if host is None or host in _REACHED:
            return
        try:
            _with_deadline(lambda: socket.getaddrinfo(host, 443), NAME_LOOKUP_S)
        except (OSError, TimeoutError):
            raise InputError(
                f"the {self.name} translator's service ({host}) cannot be reached from this machine (its "
                f"name does not resolve); give approved translations (NAME.<lang>.srt beside the input, "
                f"--translations), or a translator this machine reaches (--translator local:MODEL, or "
                f"libre with LIBRE_URL)") from None
        _REACHED.add(host)

    def translate_batch(self, texts: list[str], source: str, target: str) -> list[str]:
        """One request for all `texts`; the lines that came back (their count may differ
        when the service merged or split lines)."""
        joined = SEPARATOR.join(" ".join(t.split()) for t in texts)
        client = self.client(source, target)
        out = _with_deadline(lambda: client.translate(joined), config.translate_timeout())
        if isinstance(out, list):  # MyMemory's return_all form
            out = out[0] if out else ""
        return [line.strip() for line in (out or "").split(SEPARATOR) if line.strip()]


def _with_deadline(call, seconds: float):
    """`call()`, or TimeoutError (retried like any dropped connection) when it has not
    answered in `seconds`: deep-translator sends its requests without a timeout, so a
    service that accepts and never answers would hang the job. The waiting thread is
    left behind; it ends with the process."""
    done: dict = {}

    def target() -> None:
        try:
            done["value"] = call()
        except BaseException as exc:  # noqa: BLE001 - handed to the caller
            done["error"] = exc

    thread = threading.Thread(target=target, name="translation-request", daemon=True)
    thread.start()
    thread.join(seconds)
    if thread.is_alive():
        raise TimeoutError(f"no answer within {seconds:.0f} s")
    if "error" in done:
        raise done["error"]
    return done["value"]


def make_provider(name: str) -> ProviderTranslator:
    """A service by name, its credentials read from the environment now so that a missing
    key is an `InputError` before any work."""
    provider = PROVIDERS.get(name.lower())
    if provider is None:
        raise InputError(
            f"unknown translation provider {name!r} (choose from {', '.join(PROVIDERS)}, "
            "or local:PATH_OR_NAME for a translation model)"
        )
    credentials = {}
    for arg, var in provider.required_env.items():
        if not os.environ.get(var):
            raise InputError(f"the {name.lower()} translator needs the {var} environment variable")
        credentials[arg] = os.environ[var]
    for arg, var in provider.optional_env.items():
        if os.environ.get(var):
            credentials[arg] = os.environ[var]
    if name.lower() == "deepl":  # free-tier keys end in ':fx' and use another endpoint
        credentials["use_free_api"] = credentials["api_key"].endswith(":fx")
    if name.lower() == "libre":
        credentials["use_free_api"] = False  # libretranslate.com wants the key
    return ProviderTranslator(name.lower(), provider, credentials)
