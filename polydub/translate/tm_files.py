"""Translation memory files: CSV and TMX, read into checked entries and written back.

An entry is a dict with brand, source_lang, target_lang, source, target and origin (the
shape `storage.terms.memory_entries` yields). CSV has those columns in a header row; TMX
is 1.4 (1.1's `lang` is read too), one <tu> per source line with a <tuv> per language,
brand and origin as <prop type="x-brand"> and <prop type="x-origin">. The suffix tells
them apart.

Bounds (polydub/limits.py): a file of at most MAX_TM_FILE_BYTES, at most MAX_TM_ENTRIES
entries, MAX_CUE_CHARS per line, XML nested at most MAX_XML_DEPTH deep and at most
MAX_XML_ELEMENTS elements (the tree's memory grows with them, not with the bytes). A TMX file comes
from other tools and other companies, so any DOCTYPE is refused: with no declaration no
entity can be expanded (a few hundred bytes can expand to gigabytes) or fetched (an
external entity reads local files or URLs), and a TMX file needs none.
"""

from __future__ import annotations

import csv
import io
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Iterable
from xml.parsers import expat

from polydub import cache, languages, limits, spreadsheet
from polydub.errors import InputError

MEMORY_SUFFIXES = (".csv", ".tmx")
CSV_COLUMNS = ("brand", "source_lang", "target_lang", "source", "target", "origin")
TMX_CODES = {"bpt", "ept", "it", "ph", "ut"}  # inline markup holding another format's codes, not text


def read_memory_file(path: Path, fixed: dict) -> tuple[list[dict], int]:
    """(entries, lines skipped) of a .csv or .tmx file; `fixed` (brand, source_lang,
    target_lang, origin) replaces the file's values, and lines in languages other than
    fixed ones are skipped. Bad input: `InputError` naming the file and line."""
    suffix = memory_format(path)
    data = limits.read_bounded(path, limits.MAX_TM_FILE_BYTES, "translation memory")
    return (_read_tmx if suffix == ".tmx" else _read_csv)(path, data, fixed)


def write_memory_file(path: Path, entries: Iterable[dict], srclang: str | None) -> int:
    """Write `entries` (streamed) to a .csv or .tmx file, whole or not at all; how many.
    `srclang` is the TMX header's source language (None: several)."""
    suffix = memory_format(path)
    try:
        with cache.writing_text(path, shared=True) as handle:
            return _write_tmx(handle, entries, srclang) if suffix == ".tmx" else _write_csv(handle, entries)
    except OSError as exc:
        raise InputError(f"{path}: cannot write ({exc.strerror or exc})") from None


def memory_format(path: Path) -> str:
    """'.csv' or '.tmx', from the name; `InputError` for any other."""
    suffix = path.suffix.lower()
    if suffix not in MEMORY_SUFFIXES:
        raise InputError(f"{path}: give a .csv or .tmx file")
    return suffix


def origins() -> tuple[str, ...]:
    from polydub.storage.tables import TM_ORIGINS  # the catalog's modules load only when used

    return TM_ORIGINS


def checked_brand(value: str | None, where: str = "--brand") -> str:
    """A brand as `dub --brand` accepts it ('' for none)."""
    if not value:
        return ""
    from polydub.options import make_options

    try:
        return make_options(brand=value).brand
    except InputError as exc:
        raise InputError(f"{where}: brand {value[:60]!r} is not accepted ({str(exc).split(': ', 1)[-1]})") from None


def checked_lang(value: str | None, where: str) -> str | None:
    """A normalized language code (None for none); `InputError` naming `where`."""
    if not value:
        return None
    try:
        return languages.normalize(value)
    except InputError as exc:
        raise InputError(f"{where}: {exc}") from None


# ---------------------------------------------------------------------------- entries


def _entry(path: Path, line: int, values: dict, brands: dict[str, str]) -> dict | None:
    """One checked memory entry from a file's row (None when a text is missing)."""
    where = f"{path}:{line}"
    source, target = " ".join((values.get("source") or "").split()), (values.get("target") or "").strip()
    if not source or not target:
        return None
    for text in (source, target):
        if "\0" in text:  # no speech; stored, it breaks the catalog's text
            raise InputError(f"{where}: a line holds a NUL character")
        if len(text) > limits.MAX_CUE_CHARS:
            raise InputError(f"{where}: a line of {len(text)} characters; at most {limits.MAX_CUE_CHARS}")
    origin = values.get("origin") or "imported"
    if origin not in origins():
        raise InputError(f"{where}: origin must be one of {', '.join(origins())}, not {origin!r}")
    brand = values.get("brand") or ""
    if brand not in brands:
        brands[brand] = checked_brand(brand, where)
    langs = {}
    for key, flag in (("source_lang", "--source-lang"), ("target_lang", "--target-lang")):
        if not values.get(key):
            raise InputError(f"{where}: no {key}; give {flag}")
        langs[key] = checked_lang(values[key], where)
    return dict(brand=brands[brand], source=source, target=target, origin=origin, **langs)


def _add(entries: list[dict], found: dict | None, where: str) -> None:
    if found is not None:
        if len(entries) >= limits.MAX_TM_ENTRIES:
            raise InputError(f"{where}: more than {limits.MAX_TM_ENTRIES} entries; split the file")
        entries.append(found)


def _same_language(code: str, wanted: str) -> bool:
    """es-ES is es: a file's regional tag matches the bare code (and the other way round)."""
    a, b = code.strip().lower().replace("_", "-"), wanted.strip().lower().replace("_", "-")
    return bool(a) and (a == b or a.split("-")[0] == b.split("-")[0])


# -------------------------------------------------------------------------------- CSV


def _read_csv(path: Path, data: bytes, fixed: dict) -> tuple[list[dict], int]:
    """Entries of a CSV file with a header row; `fixed` values replace the file's columns."""
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise InputError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    reader = csv.DictReader(io.StringIO(text, newline=""))
    entries, skipped, brands = [], 0, {}
    try:
        header = [(h or "").strip().lower() for h in reader.fieldnames or []]
        reader.fieldnames = header
        missing = [c for c in CSV_COLUMNS if c not in header and c not in fixed and c not in ("brand", "origin")]
        if missing:
            raise InputError(f"{path}:1: no {' or '.join(missing)} column (the header needs "
                             f"{', '.join(CSV_COLUMNS)}; languages may be given as --source-lang, --target-lang)")
        for row in reader:
            cells = {k: spreadsheet.plain_cell(row.get(k) or "") for k in CSV_COLUMNS}  # as exported
            values = {k: v.strip() if k not in ("source", "target") else v for k, v in cells.items()}
            if not _wanted(values, fixed):
                skipped += 1
                continue
            found = _entry(path, reader.line_num, {**values, **fixed}, brands)
            skipped += found is None
            _add(entries, found, f"{path}:{reader.line_num}")
    except csv.Error as exc:
        raise InputError(f"{path}:{reader.line_num}: not valid CSV ({exc})") from None
    return entries, skipped


def _wanted(row: dict, fixed: dict) -> bool:
    """Whether a row's languages are those of --source-lang / --target-lang (which then
    only fill in rows that name none)."""
    return all(not row[key] or key not in fixed or _same_language(row[key], fixed[key])
               for key in ("source_lang", "target_lang"))


def _write_csv(handle, entries: Iterable[dict]) -> int:
    writer = spreadsheet.writer(handle)  # no cell a spreadsheet runs as a formula
    writer.writerow(CSV_COLUMNS)
    n = 0
    for e in entries:
        writer.writerow([e[c] for c in CSV_COLUMNS])
        n += 1
    return n


# -------------------------------------------------------------------------------- TMX


def _parse_xml(path: Path, data: bytes) -> tuple[ET.Element, dict[int, int]]:
    """The element tree of `data` and the line each element starts on (by id). Any DOCTYPE
    is refused: no entity can be declared, so none is expanded or fetched."""
    parser = expat.ParserCreate()
    builder, lines, depth, count = ET.TreeBuilder(), {}, [0], [0]

    def refuse(*_args):
        raise InputError(f"{path}:{parser.CurrentLineNumber}: DOCTYPE and ENTITY declarations are refused "
                         "(a TMX file needs neither)")

    def start(name, attrs):
        depth[0] += 1
        count[0] += 1  # bytes alone do not bound the tree: 63 MB of <a/> is 16 million elements
        if count[0] > limits.MAX_XML_ELEMENTS:
            raise InputError(f"{path}:{parser.CurrentLineNumber}: more than {limits.MAX_XML_ELEMENTS:,} "
                             "elements; split the file")
        if depth[0] > limits.MAX_XML_DEPTH:
            raise InputError(f"{path}:{parser.CurrentLineNumber}: elements nested more than "
                             f"{limits.MAX_XML_DEPTH} deep")
        lines[id(builder.start(name, attrs))] = parser.CurrentLineNumber

    def end(name):
        depth[0] -= 1
        builder.end(name)

    parser.StartDoctypeDeclHandler = parser.EntityDeclHandler = refuse
    parser.ExternalEntityRefHandler = refuse
    parser.SetParamEntityParsing(expat.XML_PARAM_ENTITY_PARSING_NEVER)
    parser.StartElementHandler, parser.EndElementHandler = start, end
    parser.CharacterDataHandler, parser.buffer_text = builder.data, True
    try:
        parser.Parse(data, True)
    except expat.ExpatError as exc:
        raise InputError(f"{path}:{exc.lineno}: not valid XML ({expat.ErrorString(exc.code)})") from None
    return builder.close(), lines


def _read_tmx(path: Path, data: bytes, fixed: dict) -> tuple[list[dict], int]:
    """Entries of a TMX file: per <tu>, its source <tuv> paired with each other one;
    `fixed` values replace the file's (and --target-lang takes only that language)."""
    root, lines = _parse_xml(path, data)
    body = root.find("body")
    if root.tag != "tmx" or body is None:
        raise InputError(f"{path}:1: not a TMX file (expected <tmx> with a <body>)")
    header = root.find("header")
    srclang = header.get("srclang") if header is not None else None
    entries, skipped, brands = [], 0, {}
    for tu in body.iter("tu"):
        where = f"{path}:{lines[id(tu)]}"
        source_lang = fixed.get("source_lang") or tu.get("srclang") or srclang
        if not source_lang or source_lang == "*all*":
            raise InputError(f"{where}: no source language (srclang); give --source-lang")
        props = {p.get("type"): (p.text or "").strip() for p in tu.findall("prop")}
        values = {"brand": props.get("x-brand", ""), "origin": props.get("x-origin") or "imported", **fixed}
        tuvs = [(_tuv_lang(t), _seg_text(t.find("seg")), lines[id(t)]) for t in tu.findall("tuv")]
        source = next((t for t in tuvs if _same_language(t[0], source_lang)), None)
        targets = _targets([t for t in tuvs if t is not source], fixed.get("target_lang"))
        if source is None or not targets:
            skipped += 1
            continue
        for lang, text, line in targets:
            row = dict(values, source_lang=source_lang, target_lang=fixed.get("target_lang") or lang,
                       source=source[1], target=text)
            found = _entry(path, line, row, brands)
            skipped += found is None
            _add(entries, found, where)
    return entries, skipped


def _targets(tuvs: list[tuple], wanted: str | None) -> list[tuple]:
    """The <tuv>s to import: all, or those in the wanted language (pt-BR over pt-PT for pt-br)."""
    if not wanted:
        return tuvs
    exact = [t for t in tuvs if t[0].strip().lower().replace("_", "-") == wanted]
    return exact or [t for t in tuvs if _same_language(t[0], wanted)][:1]


def _tuv_lang(tuv: ET.Element) -> str:
    return tuv.get("xml:lang") or tuv.get("lang") or ""  # TMX 1.1 says lang


def _seg_text(seg: ET.Element | None) -> str:
    """The text of a <seg>: inline highlights kept, other formats' codes left out."""
    if seg is None:
        return ""
    parts = [seg.text or ""]
    for child in seg:
        if child.tag not in TMX_CODES:
            parts.append(_seg_text(child))
        parts.append(child.tail or "")
    return "".join(parts)


def _write_tmx(handle, entries: Iterable[dict], srclang: str | None) -> int:
    """TMX 1.4, one <tu> (with its srclang, brand and origin) per entry, written as it goes."""
    from polydub import __version__

    header = ET.Element("header", {"creationtool": "polydub", "creationtoolversion": str(__version__),
                                   "segtype": "sentence", "o-tmf": "polydub", "adminlang": "en",
                                   "srclang": srclang or "*all*", "datatype": "plaintext"})
    handle.write('<?xml version="1.0" encoding="UTF-8"?>\n<tmx version="1.4">\n  ')
    handle.write(ET.tostring(header, encoding="unicode") + "\n  <body>\n")
    n = 0
    for e in entries:
        handle.write("    " + ET.tostring(_tu(e), encoding="unicode") + "\n")
        n += 1
    handle.write("  </body>\n</tmx>\n")
    return n


def _tu(e: dict) -> ET.Element:
    tu = ET.Element("tu", {"srclang": e["source_lang"]})
    if e["brand"]:
        ET.SubElement(tu, "prop", {"type": "x-brand"}).text = e["brand"]
    ET.SubElement(tu, "prop", {"type": "x-origin"}).text = e["origin"]
    for lang, text in ((e["source_lang"], e["source"]), (e["target_lang"], e["target"])):
        ET.SubElement(ET.SubElement(tu, "tuv", {"xml:lang": lang}), "seg").text = text
    return tu
