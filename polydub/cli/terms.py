"""`dub tm` and `dub glossary`: the catalog's translation memory and glossaries per brand.

    dub tm import acme.tmx --brand Acme
    dub tm export acme-fr.csv --brand Acme --target-lang fr
    dub glossary import acme.tsv --brand Acme --lang es
    dub glossary list

The files are read and written by polydub/translate/tm_files.py (CSV and TMX) and
polydub/translate/glossary.py; the catalog is polydub/storage/terms.py.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from polydub.errors import InputError
from polydub.translate import tm_files
from polydub.translate.glossary import FILE_SUFFIXES, load_glossary, write_glossary
from polydub.translate.tm_files import checked_brand, checked_lang

tm_app = typer.Typer(help="Translation memory in the catalog: import and export CSV or TMX.", no_args_is_help=True)
glossary_app = typer.Typer(help="Glossaries per brand and language in the catalog.", no_args_is_help=True)

DB_HELP = "Catalog URL (default DUB_DATABASE_URL or ~/.polydub/catalog.db)."


def _catalog(db: str | None):
    from polydub.storage import Catalog  # the catalog's modules load only when used

    return Catalog(db)


# ------------------------------------------------------------------------------ tm


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
    from polydub.storage import terms

    if origin is not None and origin not in tm_files.origins():
        raise InputError(f"--origin must be one of {', '.join(tm_files.origins())}, not {origin!r}")
    fixed = {k: v for k, v in dict(brand=checked_brand(brand) if brand is not None else None,
                                    source_lang=checked_lang(source_lang, "--source-lang"),
                                    target_lang=checked_lang(target_lang, "--target-lang"), origin=origin).items()
             if v is not None}
    entries, skipped = tm_files.read_memory_file(file, fixed)
    written = terms.remember_entries(_catalog(db), entries, note=file.name)
    print(f"imported {written} {'entry' if written == 1 else 'entries'} ({_what(entries)})"
          + (f"; {skipped} skipped (a text missing, or in other languages)" if skipped else ""))


def _what(entries: list[dict]) -> str:
    """'es->fr, brand Acme' for the summary line."""
    pairs = sorted({f"{e['source_lang']}->{e['target_lang']}" for e in entries})
    brands = sorted({e["brand"] for e in entries})
    named = ("no brand" if brands == [""] else f"brand {brands[0]}" if len(brands) == 1
             else "brands " + ", ".join(b or "(none)" for b in brands))
    return ", ".join(pairs + ([named] if entries else ["nothing to import"]))


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

    tm_files.memory_format(file)  # refused before the catalog is opened
    src, tgt = checked_lang(source_lang, "--source-lang"), checked_lang(target_lang, "--target-lang")
    entries = terms.memory_entries(_catalog(db), checked_brand(brand) if brand is not None else None, src, tgt)
    n = tm_files.write_memory_file(file, entries, src)
    print(f"exported {n} entries to {file}")


# ----------------------------------------------------------------------- glossaries


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

    brand, code = checked_brand(brand), checked_lang(lang, "--lang")
    found = load_glossary(file)  # a regular file within the glossary bounds
    total = terms.set_glossary(_catalog(db), brand, code, found, replace=replace)
    print(f"imported {len(found)} terms ({code}, {terms.shown_brand(brand)}); the glossary has {total}")


@glossary_app.command("export")
def glossary_export(
    file: Path = typer.Argument(..., help="A .tsv, .txt, .csv or .json file to write."),
    brand: Optional[str] = typer.Option(None, "--brand", help="Brand (default: none)."),
    lang: str = typer.Option(..., "--lang", help="Target language."),
    db: Optional[str] = typer.Option(None, "--db", help=DB_HELP),
) -> None:
    """Write a brand's glossary for one language in a format `--glossary` and import read."""
    from polydub.storage import terms

    brand, code = checked_brand(brand), checked_lang(lang, "--lang")
    if file.suffix.lower() not in FILE_SUFFIXES:
        raise InputError(f"{file}: give a {', '.join(FILE_SUFFIXES)} file")
    found = terms.glossary_terms(_catalog(db), brand, code)
    if not found:
        raise InputError(f"no glossary {code} of {terms.shown_brand(brand)} in the catalog (see dub glossary list)")
    write_glossary(file, found)
    print(f"exported {len(found)} terms ({code}, {terms.shown_brand(brand)}) to {file}")


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
