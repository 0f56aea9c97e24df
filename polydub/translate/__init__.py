"""Translate timed lines: online services (deep-translator) or a local model, one interface.

Lines travel to a translator in batches kept under its request size limit, so a video
costs a handful of requests rather than one per line (free services block clients that
send one request per line). Rate limits and dropped connections are retried with
exponential backoff; a batch that comes back with the wrong number of lines is redone in
halves, down to single lines. The glossary is applied around every translator.
"""

from __future__ import annotations

import logging
import random
import time
from dataclasses import replace
from pathlib import Path
from typing import Protocol, runtime_checkable

from polydub import config, languages, limits
from polydub.errors import DubError, InputError, StageError
from polydub.segments import Segment, read_subtitles
from polydub.translate import glossary as gl
from polydub.translate.glossary import load_glossary
from polydub.translate.local import LocalTranslator, make_local
from polydub.translate.providers import PROVIDERS, ProviderTranslator, make_provider

__all__ = ["Translator", "make_translator", "load_glossary", "translate_segments",
           "align_approved", "PROVIDERS", "LocalTranslator", "ProviderTranslator"]

log = logging.getLogger(__name__)

RETRIES = 5              # attempts after the first, per batch
BACKOFF_S = 2.0          # first wait; doubles each retry
BACKOFF_MAX_S = 60.0
_HTTP_TRANSIENT = {408, 425, 429, 500, 502, 503, 504}
sleep = time.sleep       # how backoff waits; replaceable where waiting is not wanted


@runtime_checkable
class Translator(Protocol):
    name: str      # 'google', 'deepl', 'local:opus-mt-en-es', ...
    version: str   # for cache keys: library version + model id/revision

    def translate_batch(self, texts: list[str], source: str, target: str) -> list[str]:
        """Translations of `texts`; one per line when all goes well."""
        ...


def make_translator(spec: str = "google", models_dir: Path | None = None) -> Translator:
    """`'google'`, `'deepl'`, ... (keys from the environment) or `'local:PATH_OR_NAME'` for
    a transformers translation model. `InputError` for an unknown provider, a missing key
    or a missing model folder."""
    spec = (spec or "").strip()
    if spec.lower().startswith("local:"):
        return make_local(spec[len("local:"):], models_dir)
    return make_provider(spec)


def translate_segments(segments: list[Segment], source: str, target: str, translator: Translator,
                       glossary: dict[str, str] | None = None, max_chars: int = 4500) -> list[Segment]:
    """The same segments (same times) with translated text. `max_chars` bounds one request
    (lowered further to the translator's own `max_chars` when it has one)."""
    source, target = languages.normalize(source), languages.normalize(target)
    glossary = glossary or {}
    pattern = gl.term_pattern(glossary)
    masked, replacements = [], []
    for seg in segments:
        m, r = gl.protect(" ".join(seg.text.split()), glossary, pattern)
        masked.append(m)
        replacements.append(r)
    texts = [gl.restore(m, r) or m for m, r in zip(masked, replacements)]
    todo = [i for i, m in enumerate(masked) if gl.has_words(m)] if source != target else []
    limit = min(max_chars, getattr(translator, "max_chars", max_chars))
    done = _translate_lines([masked[i] for i in todo], source, target, translator, limit)

    lost = []  # lines whose placeholders the translator dropped or mangled
    for i, out in zip(todo, done):
        restored = gl.restore(out, replacements[i])
        if restored is None:
            lost.append(i)
        else:
            texts[i] = restored
    if lost:
        # Translate the stretches between the terms on their own and put the terms back
        # between them: the terms are then in the line whatever the translator does.
        log.warning("%s dropped glossary placeholders in %d line(s); translating around the terms",
                    translator.name, len(lost))
        pieces = {i: gl.split_at_terms(" ".join(segments[i].text.split()), pattern) for i in lost}
        wanted = [p for i in lost for p in pieces[i] if gl.has_words(p)]
        translated = iter(_translate_lines([p.strip() for p in wanted], source, target, translator, limit))
        for i in lost:
            parts = [next(translated) if gl.has_words(p) else "" for p in pieces[i]]
            texts[i] = gl.join_at_terms(pieces[i], parts, replacements[i])
    for n, (seg, text) in enumerate(zip(segments, texts), 1):
        if len(text) > limits.MAX_CUE_CHARS + limits.TRANSLATION_GROWTH * len(seg.text):
            raise StageError(f"{translator.name} returned {len(text)} characters for line {n} "
                             f"({len(seg.text)} sent); not voicing it")
    return [replace(s, text=t) for s, t in zip(segments, texts)]  # times and speaker kept


def _translate_lines(lines: list[str], source: str, target: str, translator: Translator,
                     limit: int) -> list[str]:
    """Translate `lines` in as few requests as the size limit allows."""
    out: list[str] = []
    for chunk in _chunks(lines, limit):
        out.extend(_translate_chunk(chunk, source, target, translator))
    return out


def _chunks(lines: list[str], limit: int) -> list[list[str]]:
    """Consecutive runs of lines whose joined length (with separators) stays under `limit`;
    a longer line travels alone."""
    chunks, current, size = [], [], 0
    for line in lines:
        if current and size + 1 + len(line) > limit:
            chunks.append(current)
            current, size = [], 0
        size += len(line) + (1 if current else 0)
        current.append(line)
    if current:
        chunks.append(current)
    return chunks


def _translate_chunk(chunk: list[str], source: str, target: str, translator: Translator) -> list[str]:
    out = _with_retries(translator, chunk, source, target)
    if len(out) == len(chunk):
        return out
    if len(chunk) == 1:
        if not out:
            raise StageError(f"{translator.name} returned nothing for a line in {source} -> {target}")
        return [" ".join(out)]  # the service broke one line in two
    log.warning("%s returned %d lines for %d; retrying in smaller batches",
                translator.name, len(out), len(chunk))
    half = len(chunk) // 2
    return (_translate_chunk(chunk[:half], source, target, translator)
            + _translate_chunk(chunk[half:], source, target, translator))


def _retries() -> int:
    """Attempts after the first: DUB_TRANSLATE_RETRIES, else RETRIES."""
    try:
        return max(0, int(config.translate_retries(RETRIES)))
    except ValueError:
        return RETRIES


def _with_retries(translator: Translator, texts: list[str], source: str, target: str) -> list[str]:
    retries = _retries()
    for attempt in range(retries + 1):
        try:
            return [str(t).strip() for t in translator.translate_batch(texts, source, target)]
        except DubError:
            raise
        except Exception as exc:
            if not _transient(exc):
                raise StageError(f"translation to {target} with {translator.name} failed: "
                                 f"{_describe(exc)}") from exc
            if attempt == retries:
                raise StageError(
                    f"translation to {target} with {translator.name} still failing after "
                    f"{retries + 1} attempts ({_describe(exc)}); try again later or use another provider"
                ) from exc
            # Full-size waits with jitter so that parallel languages do not retry in lockstep.
            delay = min(BACKOFF_MAX_S, BACKOFF_S * 2**attempt) * random.uniform(0.5, 1.0)
            log.warning("%s: %s; retrying in %.1f s", translator.name, _describe(exc), delay)
            sleep(delay)
    raise AssertionError("unreachable")


def _transient(exc: Exception) -> bool:
    """Rate limits, timeouts, dropped connections, 429 and 5xx answers."""
    import requests
    from deep_translator import exceptions as dt

    if isinstance(exc, (dt.TooManyRequests, dt.RequestError, requests.Timeout,
                        requests.ConnectionError, TimeoutError, ConnectionError)):
        return True
    if isinstance(exc, dt.ServerException):
        return str(exc) in {"ERR_TOO_MANY_REQUESTS", "ERR_INTERNAL_SERVER_ERROR",
                            "ERR_SERVICE_NOT_AVAIBLE", "API server error"}
    response = getattr(exc, "response", None)
    status = getattr(response, "status_code", None) or getattr(exc, "status_code", None)
    return status in _HTTP_TRANSIENT


def _describe(exc: Exception) -> str:
    first = next((ln.strip() for ln in str(exc).splitlines() if ln.strip()), "")
    return f"{type(exc).__name__}: {first[:120]}" if first else type(exc).__name__


def align_approved(path: str | Path, source_segments: list[Segment]) -> list[Segment]:
    """An approved translation. An SRT/VTT file keeps its own times; a plain text file has
    one line per source segment and takes the source times."""
    path = Path(path)
    if path.suffix.lower() in {".srt", ".vtt"}:
        return read_subtitles(path)
    data = limits.read_bounded(path, limits.MAX_SUBTITLE_BYTES, "approved translation")
    try:
        lines = [ln.strip() for ln in data.decode("utf-8-sig").splitlines() if ln.strip()]
    except UnicodeDecodeError as exc:
        raise InputError(f"{path}: cannot read approved translation ({exc})") from None
    if len(lines) != len(source_segments):
        raise InputError(f"{path}: {len(lines)} lines for {len(source_segments)} source lines "
                         "(a text file needs one line per source line; use SRT for other timings)")
    return [replace(s, text=t) for s, t in zip(source_segments, lines)]
