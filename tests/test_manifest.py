"""Catalog manifests: CSV, JSON, YAML and watch folders read to the same items; every bad
row reported at once; URL inputs downloaded once from a real HTTP server; plans per item."""

from __future__ import annotations

import http.server
import json
import shutil
import socket
import subprocess
import threading
import time
from collections import Counter
from pathlib import Path

import pytest

from polydub import config
from polydub.batch import download
from polydub.batch.manifest import MAX_ITEMS, ManifestError, load_manifest, plan_items
from polydub.errors import InputError
from polydub.options import make_options
from tests import inprocess
from tests.conftest import EXAMPLE

FIRST_CUES = {  # the example's first line in each language: the 3 s clips hold only it
    "en": "Hello, and welcome to our new product.",
    "es": "Hola, y bienvenidos a nuestro nuevo producto.",
    "fr": "Bonjour et bienvenue dans notre nouveau produit.",
}
MB = 1 << 20
DRIP_S = 0.5  # the slow-drip server's pause between bytes


def srt(text: str) -> str:
    return f"1\n00:00:00,500 --> 00:00:02,800\n{text}\n"


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> Path:
    """A folder of two 3 s ads (stream copies of the example) with their subtitle sidecars."""
    folder = tmp_path_factory.mktemp("clips")
    first = folder / "spot_a.mp4"
    subprocess.run(["ffmpeg", "-v", "error", "-i", str(EXAMPLE), "-t", "3", "-c", "copy", str(first)],
                   check=True, timeout=60)
    shutil.copy(first, folder / "spot_b.mp4")
    for stem in ("spot_a", "spot_b"):
        for lang, text in FIRST_CUES.items():
            (folder / f"{stem}.{lang}.srt").write_text(srt(text))
    return folder


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    """A cache of the test's own, so downloads start from nothing."""
    monkeypatch.setenv("DUB_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache"


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def problems_of(path: Path, **kwargs) -> list[str]:
    with pytest.raises(ManifestError) as caught:
        load_manifest(path, **kwargs)
    error = caught.value
    assert isinstance(error, InputError) and "\n" not in str(error)
    n = len(error.problems)
    assert str(error) == f"{path}: {n} problem{'' if n == 1 else 's'}: {error.problems[0]}"
    return error.problems


def summary(manifest) -> list[tuple]:
    return [(i.id, i.input, i.url, i.langs, i.options.model_dump()) for i in manifest.items]


# ------------------------------------------------------------------------------ formats


def test_csv_json_yaml_and_folder_load_the_same_items(clips, tmp_path):
    sheets = tmp_path / "sheets"
    csv_ = write(sheets / "ads.csv", 'ID,Input,Langs\nspot_a,../clips/spot_a.mp4,"es,fr"\n\n'
                                     'spot_b,../clips/spot_b.mp4,"es, FR"\n')
    json_ = write(sheets / "ads.json", json.dumps([
        {"id": "spot_a", "input": "../clips/spot_a.mp4", "langs": "es,fr"},
        {"id": "spot_b", "input": "../clips/spot_b.mp4", "langs": ["es", "fr"]},
    ]))
    yaml_ = write(sheets / "ads.yaml", "defaults:\n  langs: [es, fr]\nitems:\n"
                                       "  - {id: spot_a, input: ../clips/spot_a.mp4}\n"
                                       "  - id: spot_b\n    input: ../clips/spot_b.mp4\n")
    (tmp_path / "clips").symlink_to(clips)
    expected = [(stem, str(clips / f"{stem}.mp4"), None, ["es", "fr"], make_options().model_dump())
                for stem in ("spot_a", "spot_b")]
    excel = sheets / "excel.csv"  # a spreadsheet's export in a locale that writes ; and a BOM
    excel.write_bytes(b"\xef\xbb\xbfid;input;langs\r\nspot_a;../clips/spot_a.mp4;es,fr\r\n"
                      b"spot_b;../clips/spot_b.mp4;es,fr\r\n")
    assert summary(load_manifest(excel)) == expected
    for path in (csv_, json_, yaml_):
        manifest = load_manifest(path)
        assert summary(manifest) == expected, path
        assert manifest.path == manifest.key == str(path) and manifest.name == "ads"
        assert [i.where for i in manifest.items] == {
            csv_: ["ads.csv row 2", "ads.csv row 4"],  # the blank line is spreadsheet row 3
            json_: ["ads.json item 1 (id spot_a)", "ads.json item 2 (id spot_b)"],
            yaml_: ["ads.yaml item 1 (id spot_a)", "ads.yaml item 2 (id spot_b)"],
        }[path]
    folder = load_manifest(tmp_path / "clips", langs="es,fr")  # the sidecars are not items
    assert summary(folder) == expected
    assert folder.path == str(clips) and folder.name == "clips"
    assert [i.where for i in folder.items] == ["clips/spot_a.mp4", "clips/spot_b.mp4"]


def test_item_wins_over_defaults_over_command_line(clips, tmp_path):
    path = write(tmp_path / "ads.yaml", f"""
defaults:
  max-speed: 1.5
  langs: fr
  Voice: espeak
items:
  - id: a
    input: {clips}/spot_a.mp4
    max_speed: 1.1
    langs: [es]
    commercial: yes
  - id: b
    input: {clips}/spot_b.mp4
    loudness: -14
""")
    cli = make_options(max_speed=1.9, lipsync="off", translator="deepl", voice="espeak:en-us")
    a, b = load_manifest(path, langs="de", options=cli).items
    assert (a.langs, a.options.max_speed, a.options.voice, a.options.lipsync, a.options.translator,
            a.options.commercial, a.options.loudness) == (["es"], 1.1, "espeak", "off", "deepl", True, None)
    assert (b.langs, b.options.max_speed, b.options.loudness, b.options.commercial) == (["fr"], 1.5, -14.0, None)
    assert b.options.model_dump(exclude_unset=True) == {  # what was said, by anyone
        "max_speed": 1.5, "voice": "espeak", "lipsync": "off", "translator": "deepl", "loudness": -14}

    sheet = write(tmp_path / "ads.csv", f"id,input,langs,lipsync\nc,{clips}/spot_a.mp4,,\nd,{clips}/spot_a.mp4,it,on\n")
    c, d = load_manifest(sheet, langs=["de", "es"], options={"lipsync": "off"}).items
    assert (c.langs, c.options.lipsync) == (["de", "es"], "off")  # an empty cell: not set
    assert (d.langs, d.options.lipsync) == (["it"], "on")
    assert load_manifest(sheet, langs="de").items[0].options.lipsync == "auto"  # the model's default


def test_paths_are_relative_to_the_manifest_command_line_paths_to_the_current_folder(clips, tmp_path, monkeypatch):
    write(tmp_path / "scripts" / "a.en.srt", srt(FIRST_CUES["en"]))
    write(tmp_path / "terms.tsv", "Acme\tAcme\n")
    (tmp_path / "approved").mkdir()
    path = write(tmp_path / "sheets" / "ads.csv",
                 f"id,input,langs,transcript,translations\n"
                 f"a,../clips/spot_a.mp4,es,../scripts/a.en.srt,../approved\n"
                 f"b,{clips}/spot_b.mp4,es,,\n")
    (tmp_path / "clips").symlink_to(clips)
    monkeypatch.chdir(tmp_path)
    a, b = load_manifest(path, options={"glossary": "terms.tsv", "transcript": "scripts/a.en.srt"}).items
    assert a.input == str(clips / "spot_a.mp4")  # resolved: the same file has one key
    assert a.options.transcript == str(tmp_path / "scripts" / "a.en.srt")
    assert a.options.translations == str(tmp_path / "approved")
    assert a.options.glossary == b.options.glossary == str(tmp_path / "terms.tsv")
    assert b.options.transcript == str(tmp_path / "scripts" / "a.en.srt")  # the command line's, from here


# ------------------------------------------------------------------------------ problems


def test_every_bad_row_is_reported_at_once_with_its_row_and_column(clips, tmp_path):
    path = write(tmp_path / "sheets" / "ads.csv", "\n".join([
        "id,input,langs,lipsync,max_speed",
        'spot-a,../clips/spot_a.mp4,"es,fr",off,1.2',
        'spot-b,../clips/spot_b.mp4,"es,xx",,',
        ",../clips/spot_a.mp4,es,,",
        "spot a,../clips/spot_a.mp4,es,,",
        "SPOT-A,../clips/spot_a.mp4,es,,",
        "spot-c,../clips/nope.mp4,es,maybe,9",
        "spot-d,ftp://example.com/ad.mp4,es,,",
        "spot-e,file:///tmp/ad.mp4,es,,",
        "spot-f,,,,",
        "spot-g,../clips,es,,,extra",
        "spot-h,../clips/spot_a.mp4,es," + "x" * 5000 + ",",
    ]) + "\n")
    (tmp_path / "clips").symlink_to(clips)
    assert problems_of(path) == [
        "ads.csv row 3, column langs: unknown language code 'xx' (use ISO 639-1, e.g. es, fr, de, pt-br)",
        "ads.csv row 4, column id: no id",
        "ads.csv row 5, column id: 'spot a' cannot name a folder (letters, digits, '.', '_' and '-', "
        "starting with a letter or digit, at most 100 characters)",
        "ads.csv row 6, column id: 'SPOT-A' is also the id of row 2",
        f"ads.csv row 7, column input: {clips}/nope.mp4: no such file",
        "ads.csv row 7, column lipsync: must be one of auto, on, off, not 'maybe'",
        "ads.csv row 7, column max_speed: must be between 1.0 and 2.0, not 9",
        "ads.csv row 8, column input: ftp://example.com/ad.mp4: ftp: URLs are not accepted "
        "(http or https, or a local file)",
        "ads.csv row 9, column input: file:///tmp/ad.mp4: file: URLs are not accepted (http or https, or a local file)",
        "ads.csv row 10, column input: no input",
        "ads.csv row 10, column langs: no languages (give them here, in the defaults, or with --langs)",
        "ads.csv row 11: 6 cells but the header has 5 columns",
        f"ads.csv row 11, column input: {clips}: is a folder, not a media file",
        "ads.csv row 12, column lipsync: longer than 4096 characters",
    ]


def test_json_and_yaml_problems_name_the_item_and_field(clips, tmp_path):
    path = write(tmp_path / "ads.yaml", f"""
defaults:
  langs: [es, no]
  lipsync: sometimes
  input: x.mp4
items:
  - id: spot-a
    input: {clips}/spot_a.mp4
  - id: spot-b
    input: {clips}/spot_b.mp4
    langs: [es, 7]
    max_speed: fast
    source_lang: klingon
    commercial: maybe
  - just a string
  - id: 12
    input: {clips}/spot_a.mp4
    langs: es
    out: elsewhere
    colour: red
""")
    assert problems_of(path) == [
        "ads.yaml defaults, field input: not allowed in defaults (known: langs, source_lang, transcript, "
        "translations, voice, voices, lipsync, translator, asr_model, glossary, brand, max_speed, loudness, review, "
        "commercial, consent)",
        "ads.yaml defaults, field langs: False is not a language code (quote it: 'no', not no)",
        "ads.yaml defaults, field lipsync: must be one of auto, on, off, not 'sometimes'",
        "ads.yaml item 2 (id spot-b), field langs: 7 is not a language code (use ISO 639-1, e.g. es, fr, de, pt-br)",
        "ads.yaml item 2 (id spot-b), field source_lang: unknown language code 'klingon' "
        "(use ISO 639-1, e.g. es, fr, de, pt-br)",
        "ads.yaml item 2 (id spot-b), field max_speed: must be between 1.0 and 2.0, not fast",
        "ads.yaml item 2 (id spot-b), field commercial: Input should be a valid boolean, unable to interpret input",
        "ads.yaml item 3: expected fields (id, input, langs, ...), not str",
        "ads.yaml item 4 (id 12), field out: not allowed per item (the catalog gives each item its own folder)",
        "ads.yaml item 4 (id 12), field colour: unknown field (known: id, input, langs, source_lang, transcript, "
        "translations, voice, voices, lipsync, translator, asr_model, glossary, brand, max_speed, loudness, review, "
        "commercial, consent)",
    ]


def test_paths_the_file_system_refuses_are_row_problems(clips, tmp_path):
    long_name = "a" * 300 + ".mp4"
    path = write(tmp_path / "ads.json", json.dumps([
        {"id": "nul", "input": "spot\0.mp4", "langs": "es"},
        {"id": "long", "input": long_name, "langs": "es"},
        {"id": "ok", "input": str(clips / "spot_a.mp4"), "langs": "es", "transcript": long_name},
    ]))
    assert problems_of(path) == [
        "ads.json item 1 (id nul), field input: contains a NUL character",
        f"ads.json item 2 (id long), field input: {tmp_path / long_name}: File name too long",
    ]
    write(path, json.dumps([{"id": "ok", "input": str(clips / "spot_a.mp4"), "langs": "es",
                             "transcript": long_name}]))
    with pytest.raises(ManifestError) as caught:
        plan_items(load_manifest(path), tmp_path / "out")
    assert caught.value.problems == [f"ads.json item 1 (id ok): {tmp_path / long_name}: File name too long"]


def test_unknown_column_and_out_column_are_refused(clips, tmp_path):
    path = write(tmp_path / "ads.csv", f"id,input,langs,Out,colour,voice\na,{clips}/spot_a.mp4,es,x,red,espeak\n")
    assert problems_of(path) == [
        "ads.csv row 1, column Out: not allowed per item (the catalog gives each item its own folder)",
        "ads.csv row 1, column colour: unknown column (known: id, input, langs, source_lang, transcript, "
        "translations, voice, voices, lipsync, translator, asr_model, glossary, brand, max_speed, loudness, review, "
        "commercial, consent)",
    ]
    dup = write(tmp_path / "dup.csv", f"id,input,langs,Max-Speed,max_speed\na,{clips}/spot_a.mp4,es,1.1,1.2\n")
    assert problems_of(dup) == ["dup.csv row 1, column max_speed: the same column as Max-Speed"]


def test_a_watch_folder_names_files_whose_stem_cannot_be_an_id(clips, tmp_path):
    folder = tmp_path / "inbox"
    folder.mkdir()
    shutil.copy(clips / "spot_a.mp4", folder / "My Ad.mp4")
    shutil.copy(clips / "spot_a.mp4", folder / "ok.MOV")
    (folder / "notes.txt").write_text("not an item")
    (folder / ".partial.mp4").write_text("an upload in progress")
    assert problems_of(folder, langs="es") == [
        "inbox/My Ad.mp4: id 'My Ad' cannot name a folder (letters, digits, '.', '_' and '-', "
        "starting with a letter or digit, at most 100 characters)"]
    assert problems_of(folder) == ["inbox: no languages: a watch folder's items take --langs"]
    (folder / "My Ad.mp4").rename(folder / "my-ad.mp4")
    assert [i.id for i in load_manifest(folder, langs="es").items] == ["my-ad", "ok"]


@pytest.mark.parametrize("name, content, problem", [
    ("ads.csv", "", "ads.csv: no header row (id, input, langs, ...)"),
    ("ads.csv", "id,input,langs\n\n", "ads.csv: no items"),
    ("ads.csv", "Langs,Voice\nes,espeak\n", "ads.csv: no id or input column in the header row (Langs, Voice)"),
    ("ads.csv", b"id,input\n\xff\xfe,x\n", "ads.csv: not UTF-8 text (byte 9)"),
    ("ads.json", '[{"id": "a",}]', "ads.json: not valid JSON (line 1, column 13: Expecting property name "
                                   "enclosed in double quotes)"),
    ("ads.json", '{"items": {"id": "a"}}', "ads.json: expected a list of items, or an object with defaults and items"),
    ("ads.json", "[]", "ads.json: no items"),
    ("ads.yaml", "items: [a, b\n", "ads.yaml: not valid YAML (line 2, column 1: did not find expected ',' or ']')"),
    ("ads.yaml", "# nothing yet\n", "ads.yaml: no items"),
    ("ads.txt", "id,input\n", "{path}: not a manifest (a .csv, .json, .yaml or .yml file, or a folder)"),
    ("missing.csv", None, "{path}: no such file or folder"),
])
def test_unreadable_manifests_are_named(tmp_path, name, content, problem):
    path = tmp_path / name
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif content is not None:
        path.write_text(content)
    assert problems_of(path) == [problem.format(path=path)]


def test_size_and_item_limits(clips, tmp_path, monkeypatch):
    rows = "".join(f"ad-{n},{clips}/spot_a.mp4,es\n" for n in range(MAX_ITEMS))
    path = write(tmp_path / "ads.csv", "id,input,langs\n" + rows)
    started = time.monotonic()
    assert len(load_manifest(path).items) == MAX_ITEMS
    assert time.monotonic() - started < 10  # `dub status` reads the whole manifest every time
    write(path, "id,input,langs\n" + rows + f"one-more,{clips}/spot_a.mp4,es\n")
    assert problems_of(path) == [f"ads.csv: more than {MAX_ITEMS} items; split the manifest"]
    monkeypatch.setattr("polydub.batch.manifest.MAX_MANIFEST_BYTES", MB // 2)
    size = path.stat().st_size / MB  # its rows hold the clips' folder, longer in some test runs
    assert size > 0.55 and problems_of(path) == ["ads.csv: a manifest may be at most 0.5 MB; this one is larger"]


# ------------------------------------------------------------------------------ URL inputs


class Server(http.server.ThreadingHTTPServer):
    """A real HTTP server on 127.0.0.1 serving the clip, and the ways a download goes wrong."""

    daemon_threads = True

    def __init__(self, clip: bytes):
        super().__init__(("127.0.0.1", 0), Handler)
        self.clip, self.hits = clip, Counter()
        self.url = f"http://127.0.0.1:{self.server_address[1]}"


class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802 (http.server's name)
        server: Server = self.server  # type: ignore[assignment]
        server.hits[self.path] += 1
        try:
            self.answer(server)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up, as it should

    def answer(self, server: Server) -> None:
        path = self.path.split("?")[0]
        if path in ("/ads/spot_a.mp4", "/slow/spot_a.mp4", "/download"):
            if path.startswith("/slow"):
                time.sleep(0.5)
            self.send_response(200)
            self.send_header("Content-Length", str(len(server.clip)))
            self.end_headers()
            self.wfile.write(server.clip)
        elif path == "/big.mp4":  # says it is too large
            self.send_response(200)
            self.send_header("Content-Length", str(2 * MB))
            self.end_headers()
            self.wfile.write(b"\0" * 2 * MB)
        elif path == "/endless.mp4":  # does not say, and sends too much
            self.send_response(200)
            self.end_headers()
            for _ in range(8):
                self.wfile.write(b"\0" * (MB // 2))
        elif path == "/short.mp4":  # says more than it sends
            self.send_response(200)
            self.send_header("Content-Length", "100000")
            self.end_headers()
            self.wfile.write(server.clip[:1000])
        elif path == "/forbidden.mp4":  # a signed URL whose signature does not match
            self.send_error(403)
        elif path == "/drip.mp4":  # one byte every DRIP_S, for ever (until the client hangs up)
            self.send_response(200)
            self.send_header("Content-Length", str(len(server.clip)))
            self.end_headers()
            for byte in server.clip:
                self.wfile.write(bytes([byte]))
                self.wfile.flush()
                time.sleep(DRIP_S)
        elif path == "/drip-headers.mp4":  # the headers themselves, a byte every DRIP_S
            for byte in b"HTTP/1.0 200 OK\r\n" + b"X-Slow: " + b"y" * 10_000:
                self.wfile.write(bytes([byte]))
                self.wfile.flush()
                time.sleep(DRIP_S)
        elif path == "/silent.mp4":  # headers, then nothing for a long time
            self.send_response(200)
            self.send_header("Content-Length", str(len(server.clip)))
            self.end_headers()
            self.wfile.flush()
            time.sleep(30)
        elif path == "/to-ftp.mp4":
            self.send_response(302)
            self.send_header("Location", "ftp://127.0.0.1/ad.mp4")
            self.end_headers()
        else:
            self.send_error(404)

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def server(clips):
    httpd = Server((clips / "spot_a.mp4").read_bytes())
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield httpd
    httpd.shutdown()
    httpd.server_close()


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_url_input_is_downloaded_once_into_the_cache(server, cache, clips, tmp_path, monkeypatch):
    url = f"{server.url}/ads/spot_a.mp4?sig=abc123"
    defaults = {"langs": "es", "transcript": str(clips / "spot_a.en.srt"), "translations": str(clips)}
    monkeypatch.setenv("LIBRE_API_KEY", "k")
    monkeypatch.setenv("LIBRE_URL", server.url)  # "download" has no approved translation: a translator this machine reaches
    path = write(tmp_path / "ads.json", json.dumps({"defaults": defaults, "items": [
        {"id": "a", "input": url}, {"id": "b", "input": url},
        {"id": "c", "input": f"{server.url}/download", "translator": "libre"}]}))
    a, b, c = load_manifest(path).items
    content = (clips / "spot_a.mp4").read_bytes()
    assert a.url == b.url == url and c.url == f"{server.url}/download"
    assert a.input == b.input and Path(a.input).read_bytes() == content
    digest = download.hashlib.sha256(content).hexdigest()
    assert Path(a.input) == cache / "downloads" / digest / "spot_a.mp4"  # named as the user knows it
    assert Path(c.input) == cache / "downloads" / digest / "download"
    assert server.hits["/ads/spot_a.mp4?sig=abc123"] == 1
    assert not list((cache / "downloads").glob(".*.part"))

    again = load_manifest(path)  # no request at all: the index knows it
    assert [i.input for i in again.items] == [a.input, b.input, c.input]
    assert sum(server.hits.values()) == 2

    plans = plan_items(again, tmp_path / "out")
    assert plans["a"].input == a.input and plans["a"].out_dir == str(tmp_path / "out" / "a")
    assert plans["a"].name == "spot_a" and plans["a"].translations == {"es": str(clips / "spot_a.es.srt")}

    Path(a.input).write_bytes(content[:1000])  # changed since: downloaded again
    assert Path(load_manifest(path).items[0].input).read_bytes() == content
    assert server.hits["/ads/spot_a.mp4?sig=abc123"] == 2


def test_several_loads_at_once_download_a_url_once(server, cache, tmp_path):
    path = write(tmp_path / "ads.csv", f"id,input,langs\na,{server.url}/slow/spot_a.mp4,es\n")
    results: list = []
    threads = [threading.Thread(target=lambda: results.append(load_manifest(path).items[0].input)) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert len(results) == 3 and len(set(results)) == 1
    assert server.hits["/slow/spot_a.mp4"] == 1


def test_url_failures_are_row_problems_and_leave_nothing(server, cache, tmp_path, monkeypatch):
    monkeypatch.setenv("DUB_MAX_DOWNLOAD_MB", "1")
    port = closed_port()
    path = write(tmp_path / "ads.csv", "\n".join([
        "id,input,langs",
        f"big,{server.url}/big.mp4,es",
        f"endless,{server.url}/endless.mp4,es",
        f"short,{server.url}/short.mp4,es",
        f"gone,{server.url}/gone.mp4,es",
        f"down,http://127.0.0.1:{port}/ad.mp4,es",
        f"ftp,{server.url}/to-ftp.mp4,es",
        "s3,s3://bucket/ad.mp4,es",
        f"secret,{server.url}/gone.mp4?token=hunter22,es",
    ]) + "\n")
    assert problems_of(path) == [
        f"ads.csv row 2, column input: {server.url}/big.mp4: larger than the download limit of 1 MB "
        "(DUB_MAX_DOWNLOAD_MB)",
        f"ads.csv row 3, column input: {server.url}/endless.mp4: larger than the download limit of 1 MB "
        "(DUB_MAX_DOWNLOAD_MB)",
        f"ads.csv row 4, column input: {server.url}/short.mp4: download incomplete: the server closed the "
        "connection after 1000 of 100000 bytes",
        f"ads.csv row 5, column input: {server.url}/gone.mp4: download failed: HTTP 404 Not Found",
        f"ads.csv row 6, column input: http://127.0.0.1:{port}/ad.mp4: could not download (Connection refused)",
        f"ads.csv row 7, column input: {server.url}/to-ftp.mp4: redirected to a ftp: URL; only http and https "
        "are followed",
        # an object store's URL is fetched with the store's own credentials: none here
        "ads.csv row 8, column input: s3://bucket/ad.mp4: no credentials (for S3: AWS_ACCESS_KEY_ID and "
        "AWS_SECRET_ACCESS_KEY, a profile or an instance role)",
        f"ads.csv row 9, column input: {server.url}/gone.mp4?token=***: download failed: HTTP 404 Not Found",
    ]
    assert [p.name for p in (cache / "downloads").iterdir() if not p.name.endswith(".lock")] == []
    assert server.hits["/endless.mp4"] == 1


def test_a_stalled_download_times_out(server, cache, tmp_path, monkeypatch):
    monkeypatch.setattr(download, "READ_TIMEOUT_S", 0.2)
    path = write(tmp_path / "ads.csv", f"id,input,langs\na,{server.url}/slow/spot_a.mp4,es\n")
    assert problems_of(path) == [f"ads.csv row 2, column input: {server.url}/slow/spot_a.mp4: download stalled: no data for 0.2 s"]


SECRETS = ("SECRET1", "SECRET2")
SIGNED = "X-Amz-Signature=SECRET1&X-Amz-Credential=SECRET2"


@pytest.mark.slow
def test_secrets_of_signed_urls_are_never_shown_or_stored(server, cache, tmp_path):
    """A signed URL that fails (404, 403) is named without its signature, on screen and in
    the catalog's error line; one that works is indexed by a digest, its secrets masked."""
    good = f"{server.url}/ads/spot_a.mp4?X-Amz-Date=20261204&{SIGNED}"
    path = write(tmp_path / "ads.csv", "\n".join([
        "id,input,langs",
        f"gone,{server.url}/clip.mp4?{SIGNED},es",
        f"denied,{server.url}/forbidden.mp4?{SIGNED}&X-Goog-Signature=SECRET1&sig=SECRET2,es",
        f"good,{good},es",
    ]) + "\n")
    result = inprocess.dub("status", path, env={"DUB_HOME": str(tmp_path / "home")})
    assert result.returncode == 2 and "Traceback" not in result.stderr
    shown = f"{server.url}/clip.mp4?X-Amz-Signature=***&X-Amz-Credential=***"
    assert result.stderr.splitlines() == [
        f"dub: error: ads.csv row 2, column input: {shown}: download failed: HTTP 404 Not Found",
        f"dub: error: ads.csv row 3, column input: {server.url}/forbidden.mp4?X-Amz-Signature=***&X-Amz-Credential=***"
        "&X-Goog-Signature=***&sig=***: download failed: HTTP 403 Forbidden",
    ]
    index_file = cache / "downloads" / "index.json"
    written = index_file.read_text()
    assert not any(secret in written for secret in SECRETS), written
    entries = list(json.loads(written).values())
    assert entries == [{"file": entries[0]["file"], "size": (cache / "downloads" / entries[0]["file"]).stat().st_size,
                        "url": f"{server.url}/ads/spot_a.mp4?X-Amz-Date=20261204&X-Amz-Signature=***"
                               "&X-Amz-Credential=***"}]
    hits = sum(server.hits.values())
    assert download.cached(good) is not None and download.fetch(good) == download.cached(good)  # no request
    assert sum(server.hits.values()) == hits
    assert not any(secret in p.name for p in cache.rglob("*") for secret in SECRETS)


def test_an_index_keyed_by_urls_is_read_and_rewritten_without_them(server, cache, clips):
    """An index from before held the URLs themselves: still found, and gone at the next write."""
    content = (clips / "spot_a.mp4").read_bytes()
    folder = cache / "downloads" / download.hashlib.sha256(content).hexdigest()
    folder.mkdir(parents=True)
    (folder / "spot_a.mp4").write_bytes(content)
    old = f"{server.url}/ads/spot_a.mp4?token=SECRET1"
    (cache / "downloads" / "index.json").write_text(json.dumps({old: {"file": f"{folder.name}/spot_a.mp4",
                                                                      "size": len(content)}}))
    assert download.fetch(old) == folder / "spot_a.mp4" and sum(server.hits.values()) == 0
    download.fetch(f"{server.url}/download?sig=SECRET2")
    written = (cache / "downloads" / "index.json").read_text()
    assert not any(secret in written for secret in SECRETS) and "token=***" in written and "sig=***" in written
    assert download.fetch(old) == folder / "spot_a.mp4" and sum(server.hits.values()) == 1


def test_a_url_with_a_user_name_or_password_is_refused_in_one_line(cache, tmp_path):
    path = write(tmp_path / "ads.csv", "id,input,langs\na,http://ann:SECRET1@127.0.0.1:9/ad.mp4,es\n"
                                       "b,https://SECRET2@example.com/ad.mp4,es\n")
    assert problems_of(path) == [
        "ads.csv row 2, column input: http://***@127.0.0.1:9/ad.mp4: a user name or password in the URL is not "
        "accepted; give a signed URL or download the file first",
        "ads.csv row 3, column input: https://***@example.com/ad.mp4: a user name or password in the URL is not "
        "accepted; give a signed URL or download the file first",
    ]


@pytest.mark.slow
@pytest.mark.parametrize("what", ["drip.mp4", "drip-headers.mp4", "silent.mp4"])
def test_a_server_that_trickles_is_cut_off_at_the_deadline(server, cache, tmp_path, monkeypatch, what):
    """A byte every half second resets any per-read timeout; the deadline is on the wall
    clock, headers included, and a read blocked on a silent server does not outlast it."""
    monkeypatch.setattr(download, "DEADLINE_S", 3.0)
    path = write(tmp_path / "ads.csv", f"id,input,langs\na,{server.url}/{what},es\n")
    started = time.monotonic()
    result = inprocess.dub("status", path, env={"DUB_HOME": str(tmp_path / "home")})
    took = time.monotonic() - started
    assert result.returncode == 2 and result.stderr.splitlines() == [
        f"dub: error: ads.csv row 2, column input: {server.url}/{what}: download took longer "
        "than 3 s"], result.stderr
    assert took < 6.0, took
    assert [p.name for p in (cache / "downloads").iterdir() if not p.name.endswith(".lock")] == []


def test_download_limit_setting():
    assert config.max_download_bytes() == 2048 * MB


@pytest.mark.parametrize("value", ["0", "-5", "lots", "nan", "inf"])
def test_a_bad_download_limit_is_named(monkeypatch, value):
    monkeypatch.setenv("DUB_MAX_DOWNLOAD_MB", value)
    with pytest.raises(InputError, match="DUB_MAX_DOWNLOAD_MB must be a positive number"):
        config.max_download_bytes()


# ------------------------------------------------------------------------------ planning


def test_plan_items_plans_each_item_in_its_folder_and_collects_every_problem(clips, tmp_path):
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "notes.mp4").write_text("this is not a video\n" * 50)
    shutil.copy(clips / "spot_a.mp4", bad / "broken.mp4")
    (bad / "broken.en.srt").write_text("1\n00:00:00,500 --> \nHello.\n")
    path = write(tmp_path / "ads.csv", "\n".join([
        "id,input,langs,voice",
        f"spot-a,{clips}/spot_a.mp4,\"es,fr\",",
        f"spot-b,{clips}/spot_b.mp4,es,espeak",
        "notes,bad/notes.mp4,es,",
        "broken,bad/broken.mp4,es,",
        f"tagalog,{clips}/spot_b.mp4,tl,espeak",
    ]) + "\n")
    manifest = load_manifest(path)
    with pytest.raises(ManifestError) as caught:
        plan_items(manifest, tmp_path / "out")
    problems = caught.value.problems
    assert [p.split(":")[0] for p in problems] == ["ads.csv row 4", "ads.csv row 5", "ads.csv row 6"]
    assert problems[0].startswith(f"ads.csv row 4: {bad}/notes.mp4: not a media file ffmpeg can read")
    assert problems[1] == (f"ads.csv row 5: {bad}/broken.en.srt: not a readable SRT/VTT subtitle file "
                           "(cue 1 has no end time: '00:00:00,500 -->')")
    assert problems[2].startswith("ads.csv row 6: ") and "no voice for" in problems[2]
    assert str(caught.value).startswith(f"{manifest.path}: 3 problems: ads.csv row 4: ")

    manifest.items = manifest.items[:2]
    plans = plan_items(manifest, tmp_path / "out")
    assert list(plans) == ["spot-a", "spot-b"]
    a, b = plans["spot-a"], plans["spot-b"]
    assert (a.out_dir, b.out_dir) == (str(tmp_path / "out" / "spot-a"), str(tmp_path / "out" / "spot-b"))
    assert (a.langs, a.options.source_lang, a.options.transcript) == (["es", "fr"], "en", str(clips / "spot_a.en.srt"))
    assert a.translations == {"es": str(clips / "spot_a.es.srt"), "fr": str(clips / "spot_a.fr.srt")}
    assert b.options.voice == "espeak" and a.options.voice == "auto"

    outputs = tmp_path / "outputs"
    deployed = plan_items(manifest, "spring", outputs_root=outputs, check=False)
    assert deployed["spot-a"].out_dir == str(outputs / "spring" / "spot-a")
