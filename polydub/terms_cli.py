"""`dub tm` and `dub glossary`: the catalog's translation memory and glossaries per brand.

    dub tm import acme.tmx --brand Acme
    dub tm export acme-fr.csv --brand Acme --target-lang fr
    dub glossary import acme.tsv --brand Acme --lang es
    dub glossary list

Memory files are CSV (columns brand, source_lang, target_lang, source, target, origin) or
TMX 1.4, told apart by suffix. A TMX file is read with no DOCTYPE allowed, so no entity
can be declared, expanded or fetched.
"""

from __future__ import annotations

import csv
import io
import json
import os
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Iterable, Optional
from xml.parsers import expat

import typer

from polydub import languages, limits
from polydub.errors import InputError

tm_app = typer.Typer(help="Translation memory in the catalog: import and export CSV or TMX.", no_args_is_help=True)
glossary_app = typer.Typer(help="Glossaries per brand and language in the catalog.", no_args_is_help=True)

CSV_COLUMNS = ("brand", "source_lang", "target_lang", "source", "target", "origin")
TMX_CODES = {"bpt", "ept", "it", "ph", "ut"}  # inline markup holding another format's codes, not text
GLOSSARY_SUFFIXES = (".tsv", ".txt", ".csv", ".json")
DB_HELP = "Catalog URL (default DUB_DATABASE_URL or ~/.polydub/catalog.db)."


def _origins() -> tuple[str, ...]:
    from polydub.storage.models import TM_ORIGINS  # the catalog's modules load only when used

    return TM_ORIGINS


def _catalog(db: str | None):
    from polydub.storage import Catalog

    return Catalog(db)


def _brand(value: str | None, where: str = "--brand") -> str:
    """A brand as `dub --brand` accepts it ('' for none)."""
    if not value:
        return ""
    from polydub.options import make_options

    try:
        return make_options(brand=value).brand
    except InputError as exc:
        raise InputError(f"{where}: brand {value[:60]!r} is not accepted ({str(exc).split(': ', 1)[-1]})") from None


def _lang(value: str | None, where: str) -> str | None:
    if not value:
        return None
    try:
        return languages.normalize(value)
    except InputError as exc:
        raise InputError(f"{where}: {exc}") from None


def _read_bounded(path: Path, limit: int, what: str) -> bytes:
    """The bytes of `path`, refusing files over `limit`."""
    try:
        size = path.stat().st_size
        if size > limit:
            raise InputError(f"{path}: {size / 1e6:.1f} MB; a {what} file may have at most {limit / 1e6:.0f} MB")
        return path.read_bytes()
    except OSError as exc:
        raise InputError(f"{path}: cannot read {what} ({exc.strerror or exc})") from None


def _write_atomic(path: Path, write) -> int:
    """`write(handle)` into a temporary file renamed over `path` when complete; its return value."""
    part = path.with_name(path.name + ".part")
    try:
        with open(part, "w", encoding="utf-8", newline="") as handle:
            n = write(handle)
        os.replace(part, path)
    except OSError as exc:
        part.unlink(missing_ok=True)
        raise InputError(f"{path}: cannot write ({exc.strerror or exc})") from None
    return n


# ----------------------------------------------------------------------- tm import


@tm_app.command("import")
def tm_import(
    file: Path = typer.Argument(..., help="A .csv or .tmx file."),
    brand: Optional[str] = typer.Option(None, "--brand", help="Brand of every line (default: the file's, else none)."),
    source_lang: Optional[str] = typer.Option(None, "--source-lang", help="Source language of lines that do not "
                                              "say; lines in other source languages are skipped."),
    target_lang: Optional[str] = typer.Option(None, "--target-lang", help="Target language of lines that do not "
                                              "say; lines in other target languages are skipped."),
    origin: Optional[str] = typer.Option(None, "--origin", help="imported | edited | approved (default: the "
                                         "file's, else imported)."),
    db: Optional[str] = typer.Option(None, "--db", help=DB_HELP),
) -> None:
    """Add a file's lines to the translation memory; a line already there takes the file's translation."""
    if origin is not None and origin not in _origins():
        raise InputError(f"--origin must be one of {', '.join(_origins())}, not {origin!r}")
    fixed = {k: v for k, v in dict(brand=_brand(brand) if brand is not None else None,
                                    source_lang=_lang(source_lang, "--source-lang"),
                                    target_lang=_lang(target_lang, "--target-lang"), origin=origin).items()
             if v is not None}
    suffix = file.suffix.lower()
    if suffix not in (".csv", ".tmx"):
        raise InputError(f"{file}: give a .csv or .tmx file")
    data = _read_bounded(file, limits.MAX_TM_FILE_BYTES, "translation memory")
    entries, skipped = (read_tmx if suffix == ".tmx" else read_csv)(file, data, fixed)
    written = store(_catalog(db), entries, note=file.name)
    print(f"imported {written} {'entry' if written == 1 else 'entries'} ({_what(entries)})"
          + (f"; {skipped} skipped (a text missing, or in other languages)" if skipped else ""))


def store(cat, entries: list[dict], note: str) -> int:
    """Remember `entries` grouped by brand, language pair and origin; lines written."""
    from polydub.storage import terms

    groups: dict[tuple, dict[str, str]] = {}
    for e in entries:
        groups.setdefault((e["brand"], e["source_lang"], e["target_lang"], e["origin"]), {})[e["source"]] = e["target"]
    return sum(terms.remember(cat, brand, src, tgt, pairs, origin, note=note)
               for (brand, src, tgt, origin), pairs in groups.items())


def _what(entries: list[dict]) -> str:
    """'es->fr, brand Acme' for the summary line."""
    pairs = sorted({f"{e['source_lang']}->{e['target_lang']}" for e in entries})
    brands = sorted({e["brand"] for e in entries})
    named = ("no brand" if brands == [""] else f"brand {brands[0]}" if len(brands) == 1
             else "brands " + ", ".join(b or "(none)" for b in brands))
    return ", ".join(pairs + ([named] if entries else ["nothing to import"]))


def entry(path: Path, line: int, values: dict, brands: dict[str, str]) -> dict | None:
    """One checked memory entry from a file's row (None when a text is missing)."""
    where = f"{path}:{line}"
    source, target = " ".join((values.get("source") or "").split()), (values.get("target") or "").strip()
    if not source or not target:
        return None
    for text in (source, target):
        if len(text) > limits.MAX_CUE_CHARS:
            raise InputError(f"{where}: a line of {len(text)} characters; at most {limits.MAX_CUE_CHARS}")
    origin = values.get("origin") or "imported"
    if origin not in _origins():
        raise InputError(f"{where}: origin must be one of {', '.join(_origins())}, not {origin!r}")
    brand = values.get("brand") or ""
    if brand not in brands:
        brands[brand] = _brand(brand, where)
    langs = {}
    for key, flag in (("source_lang", "--source-lang"), ("target_lang", "--target-lang")):
        if not values.get(key):
            raise InputError(f"{where}: no {key}; give {flag}")
        langs[key] = _lang(values[key], where)
    return dict(brand=brands[brand], source=source, target=target, origin=origin, **langs)


def _add(entries: list[dict], found: dict | None, where: str) -> None:
    if found is not None:
        if len(entries) >= limits.MAX_TM_ENTRIES:
            raise InputError(f"{where}: more than {limits.MAX_TM_ENTRIES} entries; split the file")
        entries.append(found)


# -------------------------------------------------------------------------------- CSV


def read_csv(path: Path, data: bytes, fixed: dict) -> tuple[list[dict], int]:
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
            values = {k: (row.get(k) or "").strip() if k not in ("source", "target") else row.get(k) or ""
                      for k in CSV_COLUMNS}
            if not _wanted(values, fixed):
                skipped += 1
                continue
            found = entry(path, reader.line_num, {**values, **fixed}, brands)
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


def write_csv(handle, entries: Iterable[dict]) -> int:
    writer = csv.writer(handle)
    writer.writerow(CSV_COLUMNS)
    n = 0
    for e in entries:
        writer.writerow([e[c] for c in CSV_COLUMNS])
        n += 1
    return n


# -------------------------------------------------------------------------------- TMX


def parse_xml(path: Path, data: bytes) -> tuple[ET.Element, dict[int, int]]:
    """The element tree of `data` and the line each element starts on (by id). Any DOCTYPE
    is refused: no entity can be declared, so none is expanded or fetched."""
    parser = expat.ParserCreate()
    builder, lines, depth = ET.TreeBuilder(), {}, [0]

    def refuse(*_args):
        raise InputError(f"{path}:{parser.CurrentLineNumber}: DOCTYPE and ENTITY declarations are refused "
                         "(a TMX file needs neither)")

    def start(name, attrs):
        depth[0] += 1
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


def read_tmx(path: Path, data: bytes, fixed: dict) -> tuple[list[dict], int]:
    """Entries of a TMX file: per <tu>, its source <tuv> paired with each other one;
    `fixed` values replace the file's (and --target-lang takes only that language)."""
    root, lines = parse_xml(path, data)
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
            found = entry(path, line, row, brands)
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


def _same_language(code: str, wanted: str) -> bool:
    """es-ES is es: a file's regional tag matches the bare code (and the other way round)."""
    a, b = code.strip().lower().replace("_", "-"), wanted.strip().lower().replace("_", "-")
    return bool(a) and (a == b or a.split("-")[0] == b.split("-")[0])


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


def write_tmx(handle, entries: Iterable[dict], srclang: str | None) -> int:
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


# ----------------------------------------------------------------------- tm export


@tm_app.command("export")
def tm_export(
    file: Path = typer.Argument(..., help="A .csv or .tmx file to write."),
    brand: Optional[str] = typer.Option(None, "--brand", help="Only this brand's lines."),
    source_lang: Optional[str] = typer.Option(None, "--source-lang", help="Only lines in this source language."),
    target_lang: Optional[str] = typer.Option(None, "--target-lang", help="Only lines into this language."),
    db: Optional[str] = typer.Option(None, "--db", help=DB_HELP),
) -> None:
    """Write the translation memory (or part of it) to a CSV or TMX file."""
    from polydub.storage import terms

    suffix = file.suffix.lower()
    if suffix not in (".csv", ".tmx"):
        raise InputError(f"{file}: give a .csv or .tmx file")
    src, tgt = _lang(source_lang, "--source-lang"), _lang(target_lang, "--target-lang")
    entries = terms.memory_entries(_catalog(db), _brand(brand) if brand is not None else None, src, tgt)
    n = _write_atomic(file, lambda h: write_tmx(h, entries, src) if suffix == ".tmx" else write_csv(h, entries))
    print(f"exported {n} entries to {file}")


# ----------------------------------------------------------------------- glossaries


def _shown(brand: str) -> str:
    return f"brand {brand}" if brand else "no brand"


@glossary_app.command("import")
def glossary_import(
    file: Path = typer.Argument(..., help="A .tsv/.txt (term TAB translation), .csv or .json glossary."),
    brand: Optional[str] = typer.Option(None, "--brand", help="Brand (default: none, for jobs without --brand)."),
    lang: str = typer.Option(..., "--lang", help="Target language of the translations."),
    replace: bool = typer.Option(False, "--replace", help="Remove the glossary's terms the file does not have."),
    db: Optional[str] = typer.Option(None, "--db", help=DB_HELP),
) -> None:
    """Add a glossary file's terms to a brand's glossary for one language."""
    from polydub.storage import terms
    from polydub.translate.glossary import load_glossary

    brand, code = _brand(brand), _lang(lang, "--lang")
    _read_bounded(file, limits.MAX_GLOSSARY_FILE_BYTES, "glossary")
    found = load_glossary(file)
    total = terms.set_glossary(_catalog(db), brand, code, found, replace=replace)
    print(f"imported {len(found)} terms ({code}, {_shown(brand)}); the glossary has {total}")


@glossary_app.command("export")
def glossary_export(
    file: Path = typer.Argument(..., help="A .tsv, .txt, .csv or .json file to write."),
    brand: Optional[str] = typer.Option(None, "--brand", help="Brand (default: none)."),
    lang: str = typer.Option(..., "--lang", help="Target language."),
    db: Optional[str] = typer.Option(None, "--db", help=DB_HELP),
) -> None:
    """Write a brand's glossary for one language in a format `--glossary` and import read."""
    from polydub.storage import terms

    brand, code = _brand(brand), _lang(lang, "--lang")
    if file.suffix.lower() not in GLOSSARY_SUFFIXES:
        raise InputError(f"{file}: give a {', '.join(GLOSSARY_SUFFIXES)} file")
    found = terms.glossary_terms(_catalog(db), brand, code)
    if not found:
        raise InputError(f"no glossary {code} of {_shown(brand)} in the catalog (see dub glossary list)")
    _write_atomic(file, lambda h: write_glossary(h, found, file.suffix.lower()))
    print(f"exported {len(found)} terms ({code}, {_shown(brand)}) to {file}")


def write_glossary(handle, found: dict[str, str], suffix: str) -> int:
    if suffix == ".json":
        handle.write(json.dumps(found, ensure_ascii=False, indent=1) + "\n")
        return len(found)
    writer = csv.writer(handle, delimiter="," if suffix == ".csv" else "\t", lineterminator="\n")
    writer.writerow(("term", "translation"))
    writer.writerows(found.items())
    return len(found)


@glossary_app.command("list")
def glossary_list(as_json: bool = typer.Option(False, "--json"),
                  db: Optional[str] = typer.Option(None, "--db", help=DB_HELP)) -> None:
    """Every glossary in the catalog: brand, language, number of terms."""
    from polydub.storage import terms

    rows = [{"brand": b, "lang": lang, "terms": n} for b, lang, n in terms.glossaries(_catalog(db))]
    if as_json:
        print(json.dumps(rows, ensure_ascii=False))
        return
    for row in rows:
        print(f"{row['brand'] or '(no brand)':30} {row['lang']:6} {row['terms']} terms")
    if not rows:
        print("no glossaries (dub glossary import FILE --brand B --lang xx)")
