"""Glossary: terms that must come out of translation one fixed way, or untouched.

A glossary maps a source term to its forced translation; an empty translation keeps the
term verbatim (brand and product names). Terms are matched case-insensitively as whole
words, swapped for numbered placeholders before text goes to a translator and swapped
back afterwards, so every provider (remote or local) obeys the same glossary.
"""

from __future__ import annotations

import csv
import io
import json
import re
from pathlib import Path

from polydub import cache, limits, spreadsheet
from polydub.errors import InputError

# Brackets no subtitle uses and translators pass through as punctuation.
PLACEHOLDER = "\u27e6{}\u27e7"  # ⟦0⟧
_PLACEHOLDER = re.compile(r"\u27e6\s*(\d+)\s*\u27e7")
_HEADERS = {("term", "translation"), ("source", "target")}
FILE_SUFFIXES = (".tsv", ".txt", ".csv", ".json")  # what `load_glossary` reads and `write_glossary` writes


def load_glossary(path: str | Path) -> dict[str, str]:
    """Read a glossary: TSV/TXT (`term<TAB>translation`), CSV (`term,translation`) or JSON
    (`{"term": "translation"}`). Blank lines and lines starting with `#` are skipped; a
    missing or empty translation means keep the term verbatim."""
    path = Path(path)
    data = limits.read_bounded(path, limits.MAX_GLOSSARY_FILE_BYTES, "glossary")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise InputError(f"{path}: cannot read glossary (not UTF-8 text at byte {exc.start})") from None
    glossary = _from_json(path, text) if path.suffix.lower() == ".json" else _from_table(path, text)
    for term, translation in glossary.items():
        if "\0" in term or "\0" in translation:  # no speech; stored, it breaks the catalog's text
            raise InputError(f"{path}: term {limits.shown(term)} holds a NUL character")
    return glossary


def _from_table(path: Path, text: str) -> dict[str, str]:
    """A TSV or CSV glossary's terms (see `load_glossary`)."""
    delimiter = "," if path.suffix.lower() == ".csv" else "\t"
    glossary: dict[str, str] = {}
    for lineno, row in enumerate(csv.reader(io.StringIO(text), delimiter=delimiter), 1):
        cells = [spreadsheet.plain_cell(c.strip()) for c in row]  # a formula-like term as exported
        if not cells or not any(cells) or cells[0].startswith("#"):
            continue
        if lineno == 1 and tuple(c.lower() for c in cells[:2]) in _HEADERS:
            continue
        if len(cells) > 2 or not cells[0]:
            sep = "a comma" if delimiter == "," else "a tab"
            raise InputError(f"{path}:{lineno}: expected 'term' {sep} 'translation', got {limits.shown(row)}")
        glossary[cells[0]] = cells[1] if len(cells) == 2 else ""
    return glossary


def write_glossary(path: Path, glossary: dict[str, str]) -> int:
    """Write a glossary in the format `load_glossary` reads for the file's suffix, whole or
    not at all; how many terms."""
    suffix = path.suffix.lower()
    try:
        with cache.writing_text(path, shared=True) as handle:
            if suffix == ".json":
                handle.write(json.dumps(glossary, ensure_ascii=False, indent=1) + "\n")
            else:
                writer = spreadsheet.writer(handle, delimiter="," if suffix == ".csv" else "\t", lineterminator="\n")
                writer.writerow(("term", "translation"))
                writer.writerows(glossary.items())
    except OSError as exc:
        raise InputError(f"{path}: cannot write ({exc.strerror or exc})") from None
    return len(glossary)


def glossary_for(glossary: str | None, lang: str) -> Path | None:
    """`--glossary FILE` applies to every language; `--glossary DIR` holds `<lang>.tsv|csv|json`."""
    if not glossary:
        return None
    path = Path(glossary)
    if not path.is_dir():  # a FIFO or device too: refused by name when read, never skipped
        return path
    return next((path / f"{lang}{ext}" for ext in (".tsv", ".csv", ".json") if (path / f"{lang}{ext}").is_file()),
                None)


def _from_json(path: Path, text: str) -> dict[str, str]:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(data, dict) or not all(
        isinstance(k, str) and k.strip() and (v is None or isinstance(v, str)) for k, v in data.items()
    ):
        raise InputError(f'{path}: a JSON glossary must be an object {{"term": "translation"}}')
    return {k.strip(): (v or "").strip() for k, v in data.items()}


def term_pattern(glossary: dict[str, str]) -> re.Pattern | None:
    """One case-insensitive whole-word pattern for all terms, longest first so that
    `Acme Cloud` wins over `Acme`."""
    terms = sorted({t for t in glossary if t.strip()}, key=len, reverse=True)
    if not terms:
        return None
    alternatives = "|".join(re.escape(t) for t in terms)
    return re.compile(rf"(?<!\w)(?:{alternatives})(?!\w)", re.IGNORECASE)


def protect(text: str, glossary: dict[str, str], pattern: re.Pattern | None) -> tuple[str, list[str]]:
    """Swap glossary terms for placeholders. Returns the masked text and, per placeholder
    number, what goes back in its place (the forced translation, or the term as written)."""
    if pattern is None:
        return text, []
    lookup = {k.casefold(): v for k, v in glossary.items()}
    replacements: list[str] = []

    def swap(m: re.Match) -> str:
        replacements.append(lookup.get(m.group(0).casefold()) or m.group(0))
        return PLACEHOLDER.format(len(replacements) - 1)

    return pattern.sub(swap, text), replacements


def restore(text: str, replacements: list[str]) -> str | None:
    """Put the glossary terms back; None when a placeholder was lost or invented."""
    found = {int(n) for n in _PLACEHOLDER.findall(text)}
    if found != set(range(len(replacements))):
        return None
    return _PLACEHOLDER.sub(lambda m: replacements[int(m.group(1))], text)


def split_at_terms(text: str, pattern: re.Pattern | None) -> list[str]:
    """The stretches of `text` between glossary terms (len = number of terms + 1)."""
    return [text] if pattern is None else pattern.split(text)


def join_at_terms(pieces: list[str], translated: list[str], replacements: list[str]) -> str:
    """Rebuild a line from translated stretches and the glossary terms between them,
    keeping a space wherever the source had one."""
    out = []
    for i, (piece, tr) in enumerate(zip(pieces, translated)):
        lead = " " if piece[:1].isspace() else ""
        trail = " " if piece[-1:].isspace() else ""
        out.append(lead + tr.strip() + trail if tr.strip() else piece)
        if i < len(replacements):
            out.append(replacements[i])
    return " ".join("".join(out).split())


def has_words(masked: str) -> bool:
    """Whether anything is left to translate once the placeholders are taken out."""
    return bool(re.search(r"[^\W\d_]", _PLACEHOLDER.sub(" ", masked)))
