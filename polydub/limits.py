"""Bounds on what a job may ask for, checked before any work starts.

A subtitle line is spoken by a voice and mixed into a track as long as the source, so an
unbounded line (or thousands of them) means hours of audio and gigabytes of memory. Every
bound is named here once (`segments.check_cues` applies the cue bounds); `check_glossary`
raises `InputError` naming the file, `read_bounded` reads a file no larger than its bound.
"""

from __future__ import annotations

from pathlib import Path

from polydub.errors import InputError

MAX_SUBTITLE_BYTES = 10 * 1024 * 1024  # a 3-hour film's SRT is ~200 KB
MAX_CUES = 20_000  # a 3-hour film has 2,000-3,000 cues
MAX_CUE_CHARS = 2_000  # a long paragraph; one cue is spoken as one clip
MAX_CHARS_PER_SECOND = 50.0  # fast speech is ~20; beyond this no voice can say it in time
CPS_SLACK_CHARS = 20  # short cues ("OK!") may be denser than the rate says
TRANSLATION_GROWTH = 4  # a translated line may be this many times its source line (plus a cue)
MAX_GLOSSARY_TERMS = 10_000
MAX_TERM_CHARS = 200
MAX_GLOSSARY_FILE_BYTES = 4 * 1024 * 1024  # 10,000 terms of 200 characters each way
MAX_TM_FILE_BYTES = 64 * 1024 * 1024  # a translation memory file (CSV or TMX) to import
MAX_TM_ENTRIES = 100_000  # lines per import; a brand's whole ad catalog has far fewer
MAX_XML_DEPTH = 32  # element nesting in a TMX file (tmx/body/tu/tuv/seg and inline markup)


def check_glossary(path: str | Path, glossary: dict[str, str]) -> None:
    """Refuse glossaries too large to apply to every line, or with over-long terms."""
    if len(glossary) > MAX_GLOSSARY_TERMS:
        raise InputError(f"{path}: {len(glossary)} terms; at most {MAX_GLOSSARY_TERMS} are accepted")
    for term, translation in glossary.items():
        if len(term) > MAX_TERM_CHARS or len(translation) > MAX_TERM_CHARS:
            raise InputError(f"{path}: term {term[:40]!r}... is longer than {MAX_TERM_CHARS} characters")


def read_bounded(path: Path, limit: int, what: str) -> bytes:
    """The bytes of `path`, refusing files over `limit` (a `what` file, for the message)."""
    try:
        size = path.stat().st_size
        if size > limit:
            raise InputError(f"{path}: {size / 1e6:.1f} MB; a {what} file may have at most {limit / 1e6:.0f} MB")
        return path.read_bytes()
    except OSError as exc:
        raise InputError(f"{path}: cannot read {what} ({exc.strerror or exc})") from None
