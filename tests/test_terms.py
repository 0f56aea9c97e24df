"""Translation memory and glossaries per brand in the catalog: storage on SQLite and
PostgreSQL, `dub tm` and `dub glossary` through the real command, and dubs that reuse an
approved translation without asking any translator or apply a brand's glossary."""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
from pathlib import Path
from xml.sax.saxutils import escape

import pytest

from polydub.errors import InputError
from polydub.segments import Segment, read_subtitles
from polydub.storage import Catalog, terms
from polydub.storage.tables import GlossaryTerm
from polydub.translate.memory import pair_in_time
from tests import inprocess
from tests.services import libre_echo
from tests.conftest import EXAMPLE, scratch_dir
from tests.databases import databases  # noqa: F401 - the fixture

CACHE = scratch_dir("terms-cache-")  # dubs here do every stage themselves
CLIP_SECONDS = 6  # the example's first two lines


def dub(*args: str, env: dict | None = None, timeout: int = 600) -> subprocess.CompletedProcess:
    return inprocess.dub(*args, env={"DUB_CACHE_DIR": CACHE, **(env or {})})  # the process is not tested here


def one_line_error(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 2, (result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("dub: error: "), result.stderr
    return lines[0]


@pytest.fixture()
def cat(databases):
    opened = Catalog(databases.new_url())
    yield opened
    opened.close()


def rows(cat) -> list[tuple]:
    return sorted((e["brand"], e["source_lang"], e["target_lang"], e["source"], e["target"], e["origin"])
                  for e in terms.memory_entries(cat))


# ------------------------------------------------------------------------- storage


def test_a_brands_own_lines_win_over_unbranded_ones(cat):
    terms.remember(cat, "", "en", "es", {"Hello there.": "Hola (general).", "Thanks.": "Gracias."}, "imported")
    terms.remember(cat, "Acme", "en", "es", {"Hello there.": "Hola, amigos de Acme."}, "approved", note="a.es.srt")
    terms.remember(cat, "Other", "en", "es", {"Thanks.": "Mil gracias."}, "approved")
    lines = ["Hello there.", "  Hello   there. ", "Thanks.", "Never seen."]
    assert terms.recall(cat, "Acme", "en", "es", lines) == {
        "Hello there.": "Hola, amigos de Acme.", "  Hello   there. ": "Hola, amigos de Acme.", "Thanks.": "Gracias."}
    assert terms.recall(cat, None, "en", "es", lines[:1]) == {"Hello there.": "Hola (general)."}
    assert terms.recall(cat, "Acme", "en", "fr", lines) == {}  # another language pair
    assert terms.recall(cat, "Acme", "en", "es", ["hello there."]) == {}  # case is kept


def test_a_newer_translation_of_a_line_replaces_the_older(cat):
    terms.remember(cat, "Acme", "en", "es", {"Try it today.": "Pruébalo hoy."}, "approved", note="v1.srt")
    assert terms.remember(cat, "Acme", "en", "es", {"Try it  today. ": "Pruébelo hoy."}, "edited") == 1
    assert rows(cat) == [("Acme", "en", "es", "Try it today.", "Pruébelo hoy.", "edited")]
    # A cached re-run of an old approved job adds missing lines but undoes no edit.
    terms.remember(cat, "Acme", "en", "es", {"Try it today.": "Pruébalo hoy.", "New.": "Nuevo."}, "approved",
                   keep_existing=True)
    assert rows(cat) == [("Acme", "en", "es", "New.", "Nuevo.", "approved"),
                         ("Acme", "en", "es", "Try it today.", "Pruébelo hoy.", "edited")]
    with pytest.raises(InputError, match="origin must be one of"):
        terms.remember(cat, "Acme", "en", "es", {"a": "b"}, "guessed")


def test_recall_of_many_lines_reads_them_in_chunks(cat):
    pairs = {f"Line number {i}.": f"Línea número {i}." for i in range(terms.IN_CHUNK * 2 + 7)}
    assert terms.remember(cat, "Acme", "en", "es", pairs, "imported") == len(pairs)
    assert terms.recall(cat, "Acme", "en", "es", list(pairs) + ["unknown"]) == pairs


def test_glossary_is_set_replaced_listed_and_digested(cat):
    assert terms.glossary_digest(cat, "Acme", "es") is None
    assert terms.set_glossary(cat, "Acme", "es", {"Acme Cloud": "", "product": "artículo"}) == 2
    first = terms.glossary_digest(cat, "Acme", "es")
    assert first == terms.digest_of({"Acme Cloud": "", "product": "artículo"})
    assert terms.set_glossary(cat, "Acme", "es", {"product": "artículo"}) == 2  # unchanged: same digest
    assert terms.glossary_digest(cat, "Acme", "es") == first
    # Same number of terms, one swapped for another: a new digest.
    assert terms.set_glossary(cat, "Acme", "es", {"Acme Cloud": "", "widget": "chisme"}, replace=True) == 2
    assert terms.glossary_terms(cat, "Acme", "es") == {"Acme Cloud": "", "widget": "chisme"}
    assert terms.glossary_digest(cat, "Acme", "es") == terms.digest_of({"Acme Cloud": "", "widget": "chisme"})
    terms.set_glossary(cat, None, "fr", {"widget": "machin"})
    assert terms.glossaries(cat) == [("", "fr", 1), ("Acme", "es", 2)]
    with pytest.raises(InputError, match="longer than"):
        terms.set_glossary(cat, "Acme", "es", {"x" * 300: "y"})
    assert terms.glossary_terms(cat, "Acme", "es") == {"Acme Cloud": "", "widget": "chisme"}


def test_a_brands_oversized_catalog_glossary_stops_the_job_at_planning(cat, tmp_path, monkeypatch):
    from polydub.job import plan_job

    with cat.writing() as session:  # written by something other than `dub glossary import`
        session.add(GlossaryTerm(brand="Acme", lang="es", term="t" * 250, translation="x"))
    video = tmp_path / "spot.mp4"
    shutil.copy(EXAMPLE, video)
    shutil.copy(EXAMPLE.with_suffix(".en.srt"), tmp_path / "spot.en.srt")
    monkeypatch.setenv("DUB_DATABASE_URL", cat.url)
    with pytest.raises(InputError, match="catalog glossary es of brand Acme: a term is longer than 200"):
        plan_job(video, "es", check_decode=False, brand="Acme")
    assert plan_job(video, "es", check_decode=False, brand="Other").options.brand == "Other"


def test_approved_lines_pair_with_the_one_source_line_they_overlap():
    source = [Segment(0.5, 2.8, "Hello."), Segment(3.2, 5.6, "It saves time."), Segment(6.0, 9.2, "Try it."),
              Segment(10.0, 11.0, "Bye.")]
    approved = [Segment(0.5, 2.8, "Hola."), Segment(3.3, 5.0, "Ahorra"), Segment(5.0, 5.6, "tiempo."),
                Segment(6.0, 9.25, "Pruébalo."), Segment(12.0, 13.0, "Sin pareja.")]
    # line 2 was split in two (ambiguous), line 4 has no counterpart: both left out
    assert pair_in_time(source, approved) == {"Hello.": "Hola.", "Try it.": "Pruébalo."}


# ------------------------------------------------------------------- dub tm / glossary


def memory_with_entries(url: str) -> Catalog:
    cat = Catalog(url)
    terms.remember(cat, "Acme", "en", "es", {"Hello, and welcome.": "Hola y bienvenidos.",
                                             'Say "yes", twice.': 'Di "sí", dos veces.'}, "approved")
    terms.remember(cat, "", "en", "fr", {"Thanks & <goodbye>.": "Merci & <au revoir>."}, "edited")
    terms.remember(cat, "Acme", "de", "es", {"Hallo.": "Hola.\nDos líneas."}, "imported")
    return cat


@pytest.mark.parametrize("suffix", [".tmx", ".csv"])
def test_memory_round_trips_through_a_file(databases, tmp_path, suffix):
    source = memory_with_entries(databases.new_url())
    url = databases.new_url()
    exported = tmp_path / f"memory{suffix}"
    result = dub("tm", "export", str(exported), "--db", source.url)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"exported 4 entries to {exported}"
    result = dub("tm", "import", str(exported), "--db", url)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "imported 4 entries (de->es, en->es, en->fr, brands (none), Acme)"
    fresh = Catalog(url)
    assert rows(fresh) == rows(source)
    part = tmp_path / f"acme-es{suffix}"
    assert dub("tm", "export", str(part), "--brand", "Acme", "--source-lang", "en", "--db", url).returncode == 0
    assert dub("tm", "import", str(part), "--db", databases.new_url()).stdout.strip() == \
        "imported 2 entries (en->es, brand Acme)"
    source.close()
    fresh.close()


def test_a_tmx_from_another_tool_imports_its_language_pair(databases, tmp_path):
    tmx = tmp_path / "vendor.tmx"
    tmx.write_text(
        '<?xml version="1.0" encoding="UTF-8"?>\n<tmx version="1.4">\n'
        '<header creationtool="x" creationtoolversion="1" segtype="sentence" o-tmf="x" adminlang="en-US" '
        'srclang="en-US" datatype="plaintext"/>\n<body>\n'
        '<tu><tuv xml:lang="en-US"><seg>Press <bpt i="1">&lt;b&gt;</bpt>Start<ept i="1">&lt;/b&gt;</ept> now.</seg>'
        '</tuv><tuv xml:lang="es-ES"><seg>Pulsa <bpt i="1">&lt;b&gt;</bpt>Inicio<ept i="1">&lt;/b&gt;</ept> ya.'
        '</seg></tuv><tuv xml:lang="fr-FR"><seg>Appuyez sur Démarrer.</seg></tuv></tu>\n'
        '<tu><tuv xml:lang="en-US"><seg>Untranslated.</seg></tuv></tu>\n</body>\n</tmx>\n', encoding="utf-8")
    url = databases.new_url()
    result = dub("tm", "import", str(tmx), "--target-lang", "es", "--brand", "Acme", "--db", url)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "imported 1 entry (en-us->es, brand Acme); 1 skipped " \
                                    "(a text missing, or in other languages)"
    cat = Catalog(url)
    assert rows(cat) == [("Acme", "en-us", "es", "Press Start now.", "Pulsa Inicio ya.", "imported")]
    cat.close()


HOSTILE = {
    "entity expansion": '<?xml version="1.0"?>\n<!DOCTYPE tmx [\n <!ENTITY a "aaaaaaaaaa">\n'
                        ' <!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;">\n]>\n<tmx version="1.4"><header srclang="en"/>'
                        '<body><tu><tuv xml:lang="en"><seg>&b;</seg></tuv><tuv xml:lang="es"><seg>x</seg></tuv>'
                        '</tu></body></tmx>\n',
    "external entity": '<?xml version="1.0"?>\n<!DOCTYPE tmx [<!ENTITY secret SYSTEM "file:///etc/passwd">]>\n'
                       '<tmx version="1.4"><header srclang="en"/><body><tu><tuv xml:lang="en"><seg>&secret;</seg>'
                       '</tuv><tuv xml:lang="es"><seg>x</seg></tuv></tu></body></tmx>\n',
    "undeclared entity": '<?xml version="1.0"?>\n<tmx version="1.4"><header srclang="en"/><body>\n'
                         '<tu><tuv xml:lang="en"><seg>&secret;</seg></tuv></tu></body></tmx>\n',
    "deep nesting": '<tmx version="1.4"><header srclang="en"/><body>\n<tu><tuv xml:lang="en"><seg>'
                    + "<hi>" * 5000 + "x" + "</hi>" * 5000 + "</seg></tuv></tu></body></tmx>\n",
}


@pytest.mark.parametrize("case, expected", [
    ("entity expansion", "hostile.tmx:2: DOCTYPE and ENTITY declarations are refused"),
    ("external entity", "hostile.tmx:2: DOCTYPE and ENTITY declarations are refused"),
    ("undeclared entity", "hostile.tmx:3: not valid XML (undefined entity)"),
    ("deep nesting", "hostile.tmx:2: elements nested more than 32 deep"),
])
def test_a_hostile_tmx_is_refused_in_one_line(databases, tmp_path, case, expected):
    url = databases.new_url()
    hostile = tmp_path / "hostile.tmx"
    hostile.write_text(HOSTILE[case], encoding="utf-8")
    line = one_line_error(dub("tm", "import", str(hostile), "--db", url))
    assert line.startswith(f"dub: error: {hostile.parent}/{expected}"), line
    cat = Catalog(url)
    assert rows(cat) == []
    cat.close()


def test_bad_memory_files_are_refused_naming_the_line(databases, tmp_path):
    url = databases.new_url()
    bad = tmp_path / "memory.csv"
    bad.write_text("source_lang,target_lang,source,target\nen,es,Hello.,Hola.\nen,xx,Bye.,Adiós.\n", encoding="utf-8")
    assert one_line_error(dub("tm", "import", str(bad), "--db", url)).endswith(
        f"{bad}:3: unknown language code 'xx' (use ISO 639-1, e.g. es, fr, de, pt-br)")
    bad.write_text("source,target\nHello.,Hola.\n", encoding="utf-8")
    refused = one_line_error(dub("tm", "import", str(bad), "--db", url))
    assert f"{bad}:1: no source_lang or target_lang column" in refused
    result = dub("tm", "import", str(bad), "--source-lang", "en", "--target-lang", "es", "--origin", "edited",
                 "--db", url)
    assert result.stdout.strip() == "imported 1 entry (en->es, no brand)", result.stderr
    assert "--origin must be one of approved, edited, imported" in one_line_error(
        dub("tm", "import", str(bad), "--origin", "guessed", "--db", url))
    assert "give a .csv or .tmx file" in one_line_error(dub("tm", "import", str(tmp_path / "m.xlsx"), "--db", url))
    cat = Catalog(url)
    assert rows(cat) == [("", "en", "es", "Hello.", "Hola.", "edited")]
    cat.close()


FORMULAS = ['=HYPERLINK("http://x")', "@SUM(A1:A9)", "+1+2", "-2+3", "'=already quoted", "\tTabbed."]


def formula_free(path: Path, delimiter: str = ",") -> list[list[str]]:
    """A CSV's rows, each cell checked to be one no spreadsheet runs as a formula."""
    with path.open(newline="", encoding="utf-8") as handle:
        found = list(csv.reader(handle, delimiter=delimiter))
    for cell in (c for row in found for c in row):
        assert not cell.startswith(("=", "+", "-", "@", "\t", "\r")), cell
    return found


def test_tm_export_to_csv_neutralizes_formulas_and_imports_back(databases, tmp_path):
    url = databases.new_url()
    tmx = tmp_path / "vendor.tmx"
    tus = "".join(f'<tu><tuv xml:lang="en"><seg>{escape(f) if n == 0 else f"Line {n}."}</seg></tuv>'
                  f'<tuv xml:lang="es"><seg>{escape(f)}</seg></tuv></tu>' for n, f in enumerate(FORMULAS))
    tmx.write_text(f'<tmx version="1.4"><header srclang="en"/><body>{tus}</body></tmx>', encoding="utf-8")
    assert dub("tm", "import", str(tmx), "--db", url).returncode == 0
    exported = tmp_path / "memory.csv"
    result = dub("tm", "export", str(exported), "--db", url)
    assert result.returncode == 0, result.stderr
    found = formula_free(exported)
    targets = {row[3]: row[4] for row in found[1:]}
    assert targets["'=HYPERLINK(\"http://x\")"] == "'=HYPERLINK(\"http://x\")"  # source and target cells
    assert targets["Line 1."] == "'@SUM(A1:A9)" and targets["Line 4."] == "''=already quoted"
    again = databases.new_url()
    assert dub("tm", "import", str(exported), "--db", again).returncode == 0
    before, after = Catalog(url), Catalog(again)
    assert rows(after) == rows(before) and any(r[4] == "@SUM(A1:A9)" for r in rows(after))
    before.close()
    after.close()


@pytest.mark.parametrize("suffix, delimiter", [(".csv", ","), (".tsv", "\t")])
def test_glossary_export_neutralizes_formulas_and_imports_back(databases, tmp_path, suffix, delimiter):
    url = databases.new_url()
    (tmp_path / "terms.json").write_text(json.dumps({"Acme": '=HYPERLINK("http://x")', "@home": "+34 casa",
                                                     "kit": "'-quoted"}), encoding="utf-8")
    assert dub("glossary", "import", str(tmp_path / "terms.json"), "--lang", "es", "--db", url).returncode == 0
    exported = tmp_path / f"out{suffix}"
    assert dub("glossary", "export", str(exported), "--lang", "es", "--db", url).returncode == 0
    assert dict(formula_free(exported, delimiter)[1:]) == {
        "Acme": "'=HYPERLINK(\"http://x\")", "'@home": "'+34 casa", "kit": "''-quoted"}
    again = databases.new_url()
    result = dub("glossary", "import", str(exported), "--lang", "es", "--db", again)
    assert result.returncode == 0, result.stderr
    cat = Catalog(again)
    assert terms.glossary_terms(cat, "", "es") == {"Acme": '=HYPERLINK("http://x")', "@home": "+34 casa",
                                                   "kit": "'-quoted"}
    cat.close()


def test_glossary_import_list_and_export(databases, tmp_path):
    url = databases.new_url()
    tsv = tmp_path / "acme.tsv"
    tsv.write_text("term\ttranslation\nAcme Cloud\t\nproduct\tartículo\n", encoding="utf-8")
    result = dub("glossary", "import", str(tsv), "--brand", "Acme", "--lang", "es", "--db", url)
    assert result.stdout.strip() == "imported 2 terms (es, brand Acme); the glossary has 2", result.stderr
    (tmp_path / "more.json").write_text(json.dumps({"widget": "chisme"}), encoding="utf-8")
    result = dub("glossary", "import", str(tmp_path / "more.json"), "--brand", "Acme", "--lang", "es", "--db", url)
    assert result.stdout.strip() == "imported 1 terms (es, brand Acme); the glossary has 3", result.stderr
    listed = dub("glossary", "list", "--json", "--db", url)
    assert json.loads(listed.stdout) == [{"brand": "Acme", "lang": "es", "terms": 3}]
    for suffix in (".csv", ".json", ".tsv"):
        exported = tmp_path / f"out{suffix}"
        result = dub("glossary", "export", str(exported), "--brand", "Acme", "--lang", "es", "--db", url)
        assert result.returncode == 0, result.stderr
        from polydub.translate.glossary import load_glossary

        assert load_glossary(exported) == {"Acme Cloud": "", "product": "artículo", "widget": "chisme"}
    result = dub("glossary", "import", str(tmp_path / "more.json"), "--brand", "Acme", "--lang", "es", "--replace",
                 "--db", url)
    assert result.stdout.strip().endswith("the glossary has 1")
    assert "no glossary fr of brand Acme" in one_line_error(
        dub("glossary", "export", str(tmp_path / "x.tsv"), "--brand", "Acme", "--lang", "fr", "--db", url))
    assert "--brand: brand 'Ac<me>' is not accepted" in one_line_error(
        dub("glossary", "import", str(tsv), "--brand", "Ac<me>", "--lang", "es", "--db", url))


# ---------------------------------------------------------------- whole dubs


@pytest.fixture()
def libre():
    with libre_echo() as echo:
        yield echo


def cut_clip(src: Path, out: Path, *video_filter: str) -> Path:
    """The example's first seconds as a video of its own (a filter makes other bytes)."""
    subprocess.run(["ffmpeg", "-v", "error", "-i", str(src), "-t", str(CLIP_SECONDS), *video_filter,
                    "-c:v", "libx264", "-c:a", "aac", str(out)], check=True, timeout=120)
    return out


def write_cues(path: Path, cues: list[Segment]) -> None:
    from polydub.segments import write_subtitles

    write_subtitles(cues, path)


def first_lines(lang: str) -> list[Segment]:
    return [s for s in read_subtitles(EXAMPLE.with_suffix(f".{lang}.srt")) if s.end <= CLIP_SECONDS]


def stage_runs(job: int, db: str) -> dict:
    shown = json.loads(dub("show", str(job), "--db", db, "--json").stdout)
    return {(s["stage"], s["lang"]): s for s in shown["stages"]}


@pytest.mark.slow
def test_an_approved_translation_is_reused_for_another_video_without_any_request(prefect_api, tmp_path, libre):
    english, spanish = first_lines("en"), first_lines("es")
    assert len(english) == 2
    db = f"sqlite:///{tmp_path / 'catalog.db'}"
    first = cut_clip(EXAMPLE, tmp_path / "spot_a.mp4")
    write_cues(tmp_path / "spot_a.en.srt", english)
    write_cues(tmp_path / "spot_a.es.srt", spanish)  # approved
    result = dub(str(first), "--langs", "es", "--brand", "Acme", "--voice", "espeak", "--lipsync", "off",
                 "--out", str(tmp_path / "out_a"), "--db", db)
    assert result.returncode == 0, result.stderr
    exported = tmp_path / "memory.csv"
    assert dub("tm", "export", str(exported), "--db", db).returncode == 0
    with open(exported, newline="", encoding="utf-8") as handle:
        remembered = [(r["brand"], r["source"], r["target"], r["origin"]) for r in csv.DictReader(handle)]
    assert sorted(remembered) == sorted(("Acme", en.text, es.text, "approved") for en, es in zip(english, spanish))

    other = tmp_path / "other"
    other.mkdir()
    second = cut_clip(EXAMPLE, other / "spot_b.mp4", "-vf", "scale=160:160")  # another video, the same lines
    write_cues(other / "spot_b.en.srt", english)
    result = dub(str(second), "--langs", "es", "--brand", "Acme", "--translator", "libre", "--voice", "espeak",
                 "--lipsync", "off", "--out", str(tmp_path / "out_b"), "--db", db, "--json",
                 env={"LIBRE_URL": libre.url, "LIBRE_API_KEY": "key", "DUB_TRANSLATE_RETRIES": "0"})
    assert result.returncode == 0, result.stderr
    assert libre.texts == []  # not one request
    report = json.loads(result.stdout)
    assert report["languages"]["es"]["status"] == "done"
    assert report["languages"]["es"]["backends"]["translate"] == "translation memory"
    delivered = read_subtitles(tmp_path / "out_b" / "spot_b.es.srt")
    assert [s.text for s in delivered] == [s.text for s in spanish]
    translate = stage_runs(report["job"], db)[("translate", "es")]
    assert translate["status"] == "done"
    assert translate["detail"]["from_catalog_memory"] == 2 and translate["detail"]["sent"] == 0

    # A reviewer's edit in the memory is a new translation: that video is translated again.
    edit = tmp_path / "edit.csv"
    edit.write_text(f"source,target\n{english[1].text},Le ahorra tiempo cada día.\n", encoding="utf-8")
    result = dub("tm", "import", str(edit), "--brand", "Acme", "--source-lang", "en", "--target-lang", "es",
                 "--origin", "edited", "--db", db)
    assert result.stdout.strip() == "imported 1 entry (en->es, brand Acme)", result.stderr
    result = dub(str(second), "--langs", "es", "--brand", "Acme", "--translator", "libre", "--voice", "espeak",
                 "--lipsync", "off", "--out", str(tmp_path / "out_b"), "--db", db, "--json",
                 env={"LIBRE_URL": libre.url, "LIBRE_API_KEY": "key", "DUB_TRANSLATE_RETRIES": "0"})
    assert result.returncode == 0, result.stderr
    assert libre.texts == []
    assert stage_runs(json.loads(result.stdout)["job"], db)[("translate", "es")]["status"] == "done"
    delivered = read_subtitles(tmp_path / "out_b" / "spot_b.es.srt")
    assert [s.text for s in delivered] == [spanish[0].text, "Le ahorra tiempo cada día."]


@pytest.mark.slow
def test_a_brand_glossary_in_the_catalog_reaches_the_translator(prefect_api, tmp_path, libre):
    english = first_lines("en")
    assert "product" in english[0].text
    db = f"sqlite:///{tmp_path / 'catalog.db'}"
    glossary = tmp_path / "acme.tsv"
    glossary.write_text("product\tartículo Acme\n", encoding="utf-8")
    assert dub("glossary", "import", str(glossary), "--brand", "Acme", "--lang", "es", "--db", db).returncode == 0
    other = tmp_path / "other.tsv"
    other.write_text("time\ttiempo ajeno\n", encoding="utf-8")  # another brand's: not applied
    assert dub("glossary", "import", str(other), "--brand", "Other", "--lang", "es", "--db", db).returncode == 0
    video = cut_clip(EXAMPLE, tmp_path / "spot.mp4")
    write_cues(tmp_path / "spot.en.srt", english)
    result = dub(str(video), "--langs", "es", "--brand", "Acme", "--translator", "libre", "--voice", "espeak",
                 "--lipsync", "off", "--out", str(tmp_path / "out"), "--db", db,
                 env={"LIBRE_URL": libre.url, "LIBRE_API_KEY": "key"})
    assert result.returncode == 0, result.stderr
    sent = "\n".join(libre.texts)
    assert "\u27e60\u27e7" in sent and "product" not in sent  # the term travelled as a placeholder
    delivered = [s.text for s in read_subtitles(tmp_path / "out" / "spot.es.srt")]
    assert delivered == [english[0].text.replace("product", "artículo Acme"), english[1].text]

    # Changing the glossary translates again, with the new term.
    glossary.write_text("product\tproducto estrella\n", encoding="utf-8")
    assert dub("glossary", "import", str(glossary), "--brand", "Acme", "--lang", "es", "--db", db).returncode == 0
    result = dub(str(video), "--langs", "es", "--brand", "Acme", "--translator", "libre", "--voice", "espeak",
                 "--lipsync", "off", "--out", str(tmp_path / "out"), "--db", db, "--json",
                 env={"LIBRE_URL": libre.url, "LIBRE_API_KEY": "key"})
    assert result.returncode == 0, result.stderr
    assert stage_runs(json.loads(result.stdout)["job"], db)[("translate", "es")]["status"] == "done"
    assert read_subtitles(tmp_path / "out" / "spot.es.srt")[0].text == \
        english[0].text.replace("product", "producto estrella")


def test_neutralized_cells_read_back_as_written():
    """`plain_cell` undoes `safe_cell` for any text, quotes before a formula character too."""
    from polydub.spreadsheet import plain_cell, safe_cell

    texts = ["", "plain", "'quoted", "=1+1", "'=1", "''@x", "-", "+", "\t", "\rx", "a=b", "'", "''"]
    for text in texts:
        assert plain_cell(safe_cell(text)) == text, text
    assert [safe_cell(t) for t in ("=1+1", "'=1", "a=b", 3, None)] == ["'=1+1", "''=1", "a=b", 3, None]
