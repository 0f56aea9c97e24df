"""Translation memory and glossaries per brand, in the catalog.

A line approved, edited or imported once is reused for every later video of the same
brand and language pair before any translator is asked; a brand's glossary applies to
every translator. Brand '' is no brand: its memory serves every brand that lacks a line,
and its glossary serves jobs without a brand.
"""

from __future__ import annotations

import hashlib
import json
import threading
from datetime import timedelta
from typing import Iterable, Iterator

from sqlalchemy import delete, func, select

from polydub import languages, limits
from polydub.errors import InputError
from polydub.storage.catalog import chunks, upsert_insert
from polydub.storage.tables import TM_ORIGINS, GlossaryTerm, TranslationMemoryEntry, utcnow

NO_BRAND = ""
IN_CHUNK = 500  # keys per IN list: far under SQLite's and PostgreSQL's parameter limits
ROWS_CHUNK = 500  # rows per multi-row INSERT
EXPORT_BATCH = 1000  # rows fetched at a time when exporting

TM = TranslationMemoryEntry

_digests: dict[tuple[str, str, str], tuple[tuple, str | None]] = {}  # (url, brand, lang) -> (stamp, digest)
_digests_lock = threading.Lock()


# ------------------------------------------------------------------ lines and digests


def normalize_line(text: str) -> str:
    """A source line as the memory keys it: whitespace collapsed, stripped, case kept."""
    return " ".join(str(text).split())


def line_key(text: str) -> str:
    """sha256 (hex) of the normalized line."""
    return hashlib.sha256(normalize_line(text).encode()).hexdigest()


def digest_of(pairs: dict[str, str]) -> str | None:
    """sha256 of a mapping's sorted items (terms, or memory hits); None when empty."""
    if not pairs:
        return None
    blob = json.dumps(sorted(pairs.items()), ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()


def _brand(brand: str | None) -> str:
    return (brand or NO_BRAND).strip()


def _insert(cat):
    """The dialect's INSERT, which has ON CONFLICT (SQLite and PostgreSQL)."""
    insert = upsert_insert(cat.dialect)
    if insert is None:
        raise InputError(f"a {cat.dialect} catalog cannot hold translation memory (use SQLite or PostgreSQL)")
    return insert


# ------------------------------------------------------------------ translation memory


def remember(cat, brand: str | None, source_lang: str, target_lang: str, pairs: dict[str, str], origin: str,
             note: str | None = None, keep_existing: bool = False) -> int:
    """Store source line -> translation for a brand and language pair; a line already
    there is replaced (the newest approval, edit or import wins) unless `keep_existing`.
    Returns how many distinct lines were written."""
    if origin not in TM_ORIGINS:
        raise InputError(f"origin must be one of {', '.join(TM_ORIGINS)}, not {origin!r}")
    rows = _memory_rows(_brand(brand), languages.normalize(source_lang), languages.normalize(target_lang),
                        pairs, origin, note)
    if not rows:
        return 0
    insert = _insert(cat)
    with cat.writing() as session:
        for chunk in chunks(rows, ROWS_CHUNK):
            statement = insert(TM).values(chunk)
            keys = [TM.brand, TM.source_lang, TM.target_lang, TM.source_key]
            if keep_existing:
                statement = statement.on_conflict_do_nothing(index_elements=keys)
            else:
                changed = ("source_text", "target_text", "origin", "note", "updated_at")
                statement = statement.on_conflict_do_update(
                    index_elements=keys, set_={c: getattr(statement.excluded, c) for c in changed})
            session.execute(statement)
    return len(rows)


def remember_entries(cat, entries: Iterable[dict], note: str | None = None) -> int:
    """`remember` entries (dicts as `memory_entries` yields them) grouped by brand,
    language pair and origin; how many lines were written."""
    groups: dict[tuple, dict[str, str]] = {}
    for e in entries:
        groups.setdefault((e["brand"], e["source_lang"], e["target_lang"], e["origin"]), {})[e["source"]] = e["target"]
    return sum(remember(cat, brand, src, tgt, pairs, origin, note=note)
               for (brand, src, tgt, origin), pairs in groups.items())


def _memory_rows(brand: str, source_lang: str, target_lang: str, pairs: dict[str, str], origin: str,
                 note: str | None) -> list[dict]:
    """One row per distinct normalized line (the last pair wins): PostgreSQL refuses a
    statement that would update one row twice."""
    now, rows = utcnow(), {}
    for source, target in pairs.items():
        line, text = normalize_line(source), str(target).strip()
        if line and text:
            rows[line_key(line)] = dict(brand=brand, source_lang=source_lang, target_lang=target_lang,
                                        source_key=line_key(line), source_text=line, target_text=text,
                                        origin=origin, note=note, updated_at=now)
    return list(rows.values())


def recall(cat, brand: str | None, source_lang: str, target_lang: str, lines: Iterable[str]) -> dict[str, str]:
    """Remembered translations of `lines` (keyed by the lines as given): the brand's own
    entries win over no-brand ('') entries."""
    brand = _brand(brand)
    by_key: dict[str, list[str]] = {}
    for line in lines:
        if normalize_line(line):
            by_key.setdefault(line_key(line), []).append(line)
    found: dict[str, str] = {}
    source_lang, target_lang = languages.normalize(source_lang), languages.normalize(target_lang)
    with cat.reading() as session:
        for chunk in chunks(list(by_key), IN_CHUNK):
            query = select(TM.source_key, TM.brand, TM.target_text).where(
                TM.source_lang == source_lang, TM.target_lang == target_lang,
                TM.brand.in_({brand, NO_BRAND}), TM.source_key.in_(chunk))
            for key, row_brand, text in session.execute(query):
                if key not in found or row_brand == brand:
                    found[key] = text
    return {line: found[key] for key, same in by_key.items() if key in found for line in same}


def memory_entries(cat, brand: str | None = None, source_lang: str | None = None,
                   target_lang: str | None = None) -> Iterator[dict]:
    """Every memory entry (optionally of one brand / language), for export; streamed."""
    query = select(TM).order_by(TM.brand, TM.source_lang, TM.target_lang, TM.id)
    if brand is not None:
        query = query.where(TM.brand == _brand(brand))
    if source_lang:
        query = query.where(TM.source_lang == languages.normalize(source_lang))
    if target_lang:
        query = query.where(TM.target_lang == languages.normalize(target_lang))
    with cat.reading() as session:
        for entry in session.scalars(query.execution_options(yield_per=EXPORT_BATCH)):
            yield dict(brand=entry.brand, source_lang=entry.source_lang, target_lang=entry.target_lang,
                       source=entry.source_text, target=entry.target_text, origin=entry.origin, note=entry.note)


# ------------------------------------------------------------------------ glossaries


def set_glossary(cat, brand: str | None, lang: str, terms: dict[str, str], replace: bool = False) -> int:
    """Add (or with `replace`, set exactly) a brand's terms for one target language; a term
    already there takes the new translation. Returns how many terms the glossary now has;
    `InputError` (nothing written) when it would break the glossary limits."""
    brand, lang = _brand(brand), languages.normalize(lang)
    cleaned = {normalize_line(t): normalize_line(v or "") for t, v in terms.items() if normalize_line(t)}
    limits.check_glossary(f"glossary {lang} of {shown_brand(brand)}", cleaned)
    insert = _insert(cat)
    where = (GlossaryTerm.brand == brand, GlossaryTerm.lang == lang)
    with cat.writing() as session:
        newest = session.scalar(select(func.max(GlossaryTerm.updated_at)).where(*where))
        # Keep `updated_at` rising even if clocks differ between writers: `glossary_digest`
        # trusts (count, newest) to tell whether the glossary changed.
        now = max(utcnow(), newest + timedelta(microseconds=1)) if newest else utcnow()
        if replace:
            session.execute(delete(GlossaryTerm).where(*where, GlossaryTerm.term.not_in(list(cleaned))))
        for chunk in chunks(list(cleaned.items()), ROWS_CHUNK):
            statement = insert(GlossaryTerm).values(
                [dict(brand=brand, lang=lang, term=t, translation=v, updated_at=now) for t, v in chunk])
            statement = statement.on_conflict_do_update(
                index_elements=[GlossaryTerm.brand, GlossaryTerm.lang, GlossaryTerm.term],
                set_={"translation": statement.excluded.translation, "updated_at": statement.excluded.updated_at},
                where=GlossaryTerm.translation != statement.excluded.translation)  # unchanged terms keep their time
            session.execute(statement)
        total = session.scalar(select(func.count()).select_from(GlossaryTerm).where(*where))
        if total > limits.MAX_GLOSSARY_TERMS:
            raise InputError(f"glossary {lang} of {shown_brand(brand)} would have {total} terms; "
                             f"at most {limits.MAX_GLOSSARY_TERMS} are accepted")
    return int(total)


def shown_brand(brand: str) -> str:
    """'brand Acme', or 'no brand', for messages."""
    return f"brand {brand}" if brand else "no brand"


def glossary_terms(cat, brand: str | None, lang: str) -> dict[str, str]:
    """A brand's terms for one target language: term -> translation ('' keeps the term)."""
    query = select(GlossaryTerm.term, GlossaryTerm.translation).where(
        GlossaryTerm.brand == _brand(brand), GlossaryTerm.lang == languages.normalize(lang)
    ).order_by(GlossaryTerm.term)
    with cat.reading() as session:
        return {term: translation for term, translation in session.execute(query)}


def glossaries(cat) -> list[tuple[str, str, int]]:
    """(brand, lang, number of terms) of every glossary in the catalog."""
    query = select(GlossaryTerm.brand, GlossaryTerm.lang, func.count()).group_by(
        GlossaryTerm.brand, GlossaryTerm.lang).order_by(GlossaryTerm.brand, GlossaryTerm.lang)
    with cat.reading() as session:
        return [(brand, lang, int(n)) for brand, lang, n in session.execute(query)]


def glossary_sizes(cat, brand: str | None, langs: list[str]) -> dict[str, tuple[int, int]]:
    """lang -> (terms, longest term or translation in characters) of a brand's glossaries,
    counted by the database (plan-time checks read no terms)."""
    query = select(GlossaryTerm.lang, func.count(), func.max(func.length(GlossaryTerm.term)),
                   func.max(func.length(GlossaryTerm.translation))).where(
        GlossaryTerm.brand == _brand(brand), GlossaryTerm.lang.in_([languages.normalize(c) for c in langs])
    ).group_by(GlossaryTerm.lang)
    with cat.reading() as session:
        return {lang: (int(n), max(int(a or 0), int(b or 0))) for lang, n, a, b in session.execute(query)}


def memory_digest(cat, brand: str | None, lang: str) -> str | None:
    """What the brand's translation memory into `lang` looks like now, for recipes: a digest
    of its (entries, newest change), None when it has none. Every import, approval or edit
    adds an entry or moves its change time, so any of them makes a translated (not
    approved) delivery stale; one small aggregate query."""
    brand, lang = _brand(brand), languages.normalize(lang)
    with cat.reading() as session:
        count, newest = session.execute(
            select(func.count(), func.max(TranslationMemoryEntry.updated_at))
            .where(TranslationMemoryEntry.brand == brand, TranslationMemoryEntry.target_lang == lang)).one()
    if not count:
        return None
    return hashlib.sha256(f"{count}|{newest.isoformat() if newest else ''}".encode()).hexdigest()


def glossary_digest(cat, brand: str | None, lang: str) -> str | None:
    """`digest_of` the brand's terms for `lang` (None when it has none). One small
    aggregate query per call: the terms are read again only when (count, newest change)
    differs from the last time this process looked."""
    brand, lang = _brand(brand), languages.normalize(lang)
    where = (GlossaryTerm.brand == brand, GlossaryTerm.lang == lang)
    with cat.reading() as session:
        stamp = tuple(session.execute(select(func.count(), func.max(GlossaryTerm.updated_at)).where(*where)).one())
    memo = (str(cat.url), brand, lang)
    with _digests_lock:
        known = _digests.get(memo)
    if known and known[0] == stamp:
        return known[1]
    digest = digest_of(glossary_terms(cat, brand, lang)) if stamp[0] else None
    with _digests_lock:
        _digests[memo] = (stamp, digest)
    return digest
