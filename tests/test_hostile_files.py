"""Hostile files given to `dub`: refused in one line, in seconds and bounded memory, never
read without end or waited on. A YAML alias bomb as a manifest; /dev/zero behind a symlink
and a FIFO as a glossary, a translation memory, a manifest and a subtitle sidecar. Real
files, the real command in this process; time and memory measured by the process itself."""

from __future__ import annotations

import os
import resource
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from tests import inprocess
from tests.conftest import EXAMPLE

SECONDS = 10  # a refusal takes well under a second; this allows a loaded machine
MAX_GROWTH_KB = 200 * 1024  # ru_maxrss growth (KB on Linux); the bomb took 677 MB unbounded


def bomb(levels: int = 9) -> str:
    """A manifest whose langs are nine nested aliases of nine: a few hundred bytes that
    expand to 9**9 values ("billion laughs")."""
    anchors = ['&l0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    anchors += [f"&l{n} [{', '.join([f'*l{n - 1}'] * 9)}]" for n in range(1, levels)]
    return f"items:\n- id: spot\n  input: spot.mp4\n  langs: [{', '.join(anchors)}]\n"


def refused(result: subprocess.CompletedProcess) -> str:
    """The one line a refusal prints (exit 2, no traceback)."""
    assert result.returncode == 2, (result.returncode, result.stdout, result.stderr[-2000:])
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("dub: error: "), result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    return lines[0]


def measured(*args) -> tuple[subprocess.CompletedProcess, float, int]:
    """`dub ARGS` in this process: (result, seconds, growth of the peak resident set in KB)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    started = time.monotonic()
    result = inprocess.dub(*args)
    return result, time.monotonic() - started, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - peak


def hostile(kind: str, path: Path) -> Path:
    """`path` made a symlink to /dev/zero (size 0 by stat, endless to read) or a FIFO
    (no writer: reading it waits forever)."""
    if kind == "zero":
        path.symlink_to("/dev/zero")
    else:
        os.mkfifo(path)
    return path


KINDS = ["zero", "fifo"]


# --------------------------------------------------------------------- alias bombs


@pytest.mark.timeout(60)
@pytest.mark.parametrize("command", ["status", "catalog"])
def test_a_yaml_alias_bomb_is_refused_in_one_line_fast(tmp_path, command):
    manifest = tmp_path / "ads.yaml"
    manifest.write_text(bomb())
    assert len(manifest.read_bytes()) < 600
    extra = ["--out", str(tmp_path / "out")] if command == "catalog" else []
    result, seconds, growth = measured(command, manifest, *extra, "--db", f"sqlite:///{tmp_path / 'c.db'}")
    line = refused(result)
    assert "ads.yaml" in line and "aliases expand to more than" in line, line
    assert seconds < SECONDS and growth < MAX_GROWTH_KB, (seconds, growth)
    assert not (tmp_path / "out").exists()


def test_a_smaller_bomb_is_reported_with_its_value_cut_short(tmp_path):
    """Under the bound (9**5 values) the manifest is read; the bad langs value is quoted
    at a readable length, not rendered whole."""
    manifest = tmp_path / "ads.yaml"
    manifest.write_text(bomb(levels=5))
    result, seconds, _ = measured("status", manifest, "--db", f"sqlite:///{tmp_path / 'c.db'}")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    langs = [line for line in result.stderr.splitlines() if "field langs" in line]
    assert len(langs) == 1 and len(langs[0]) < 400 and "is not a language code" in langs[0], result.stderr
    assert seconds < SECONDS


def test_a_voice_map_alias_bomb_is_refused(tmp_path):
    from polydub.errors import InputError
    from polydub.tts.cast import load_voice_map

    (tmp_path / "voices.yaml").write_text(bomb().replace("items:\n- id: spot\n  input: spot.mp4\n  langs", "Ana"))
    started = time.monotonic()
    with pytest.raises(InputError, match="aliases expand to more than"):
        load_voice_map(tmp_path / "voices.yaml")
    assert time.monotonic() - started < SECONDS


# ------------------------------------------------------------- devices and FIFOs


@pytest.mark.timeout(30)
@pytest.mark.parametrize("kind", KINDS)
def test_glossary_import_of_a_special_file_is_refused(tmp_path, kind):
    path = hostile(kind, tmp_path / "terms.tsv")
    db = tmp_path / "c.db"
    result, seconds, growth = measured("glossary", "import", path, "--lang", "es", "--db", f"sqlite:///{db}")
    assert refused(result).startswith(f"dub: error: {path}: not a regular file")
    assert seconds < SECONDS and growth < MAX_GROWTH_KB, (seconds, growth)


@pytest.mark.timeout(30)
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("name", ["memory.tmx", "memory.csv"])
def test_tm_import_of_a_special_file_is_refused(tmp_path, kind, name):
    path = hostile(kind, tmp_path / name)
    result, seconds, growth = measured("tm", "import", path, "--db", f"sqlite:///{tmp_path / 'c.db'}")
    assert refused(result).startswith(f"dub: error: {path}: not a regular file")
    assert seconds < SECONDS and growth < MAX_GROWTH_KB, (seconds, growth)


@pytest.mark.timeout(30)
@pytest.mark.parametrize("kind", KINDS)
def test_a_special_file_as_manifest_is_refused_by_status(tmp_path, kind):
    path = hostile(kind, tmp_path / "ads.yaml")
    result, seconds, growth = measured("status", path, "--db", f"sqlite:///{tmp_path / 'c.db'}")
    line = refused(result)
    assert "ads.yaml: not a regular file" in line, line
    assert seconds < SECONDS and growth < MAX_GROWTH_KB, (seconds, growth)


@pytest.mark.timeout(30)
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("sidecar", ["clip.en.srt", "clip.es.srt"])  # the transcript, an approved translation
def test_a_special_subtitle_sidecar_is_refused_before_work(tmp_path, kind, sidecar):
    video = tmp_path / "clip.mp4"
    shutil.copy(EXAMPLE, video)
    if sidecar != "clip.en.srt":
        shutil.copy(EXAMPLE.with_suffix(".en.srt"), tmp_path / "clip.en.srt")
    path = hostile(kind, tmp_path / sidecar)
    out = tmp_path / "out"
    result, seconds, growth = measured(video, "--langs", "es", "--out", out, "--db", f"sqlite:///{tmp_path / 'c.db'}")
    assert refused(result).startswith(f"dub: error: {path}: not a regular file")
    assert seconds < SECONDS * 3 and growth < MAX_GROWTH_KB, (seconds, growth)  # (the video is probed first)
    assert not out.exists()


@pytest.mark.timeout(30)
@pytest.mark.parametrize("kind", KINDS)
def test_a_special_glossary_for_a_dub_is_refused_not_skipped(tmp_path, kind):
    video = tmp_path / "clip.mp4"
    shutil.copy(EXAMPLE, video)
    shutil.copy(EXAMPLE.with_suffix(".en.srt"), tmp_path / "clip.en.srt")  # es is translated, so glossed
    path = hostile(kind, tmp_path / "terms.tsv")
    out = tmp_path / "out"
    result, seconds, _ = measured(video, "--langs", "es", "--glossary", path, "--out", out,
                                  "--db", f"sqlite:///{tmp_path / 'c.db'}")
    assert refused(result).startswith(f"dub: error: {path}: not a regular file")
    assert seconds < SECONDS * 3 and not out.exists()


# ------------------------------------------------------------ element floods, NULs


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_a_tmx_of_empty_elements_is_refused_by_count_not_only_bytes(tmp_path):
    """A few MB of <a/> would be millions of elements (gigabytes as a tree): refused at
    limits.MAX_XML_ELEMENTS, in bounded time and memory."""
    from polydub import limits

    path = tmp_path / "flood.tmx"
    path.write_text('<tmx version="1.4"><header srclang="en"/><body>' + "<a/>" * (limits.MAX_XML_ELEMENTS + 10)
                    + "</body></tmx>")
    assert path.stat().st_size < limits.MAX_TM_FILE_BYTES
    result, seconds, growth = measured("tm", "import", path, "--db", f"sqlite:///{tmp_path / 'c.db'}")
    line = refused(result)
    assert line.startswith(f"dub: error: {path}:1: more than {limits.MAX_XML_ELEMENTS:,} elements"), line
    assert seconds < 60 and growth < 2 * MAX_GROWTH_KB, (seconds, growth)


def test_a_nul_in_a_glossary_term_is_refused(tmp_path):
    db = f"sqlite:///{tmp_path / 'c.db'}"
    (tmp_path / "terms.tsv").write_text("Acme\x00Cloud\tAcme\n")
    line = refused(inprocess.dub("glossary", "import", tmp_path / "terms.tsv", "--lang", "es", "--db", db))
    assert line == f"dub: error: {tmp_path / 'terms.tsv'}: term 'Acme\\x00Cloud' holds a NUL character", line
    (tmp_path / "terms.json").write_text('{"Acme": "A\\u0000"}')
    line = refused(inprocess.dub("glossary", "import", tmp_path / "terms.json", "--lang", "es", "--db", db))
    assert line.endswith("terms.json: term 'Acme' holds a NUL character"), line
    assert "no glossaries" in inprocess.dub("glossary", "list", "--db", db).stdout


def test_a_nul_in_a_tm_line_is_refused(tmp_path):
    path = tmp_path / "memory.csv"
    path.write_text("source_lang,target_lang,source,target\nen,es,Hello.,Hola\x00.\n")
    line = refused(inprocess.dub("tm", "import", path, "--db", f"sqlite:///{tmp_path / 'c.db'}"))
    assert line == f"dub: error: {path}:2: a line holds a NUL character", line


def test_a_nul_in_a_subtitle_cue_is_refused_before_work(tmp_path):
    video = tmp_path / "clip.mp4"
    shutil.copy(EXAMPLE, video)
    shutil.copy(EXAMPLE.with_suffix(".en.srt"), tmp_path / "clip.en.srt")
    (tmp_path / "clip.es.srt").write_text("1\n00:00:00,500 --> 00:00:02,000\nHola.\n\n"
                                          "2\n00:00:02,500 --> 00:00:04,000\nAdi\x00os.\n")
    out = tmp_path / "out"
    line = refused(inprocess.dub(video, "--langs", "es", "--out", out, "--db", f"sqlite:///{tmp_path / 'c.db'}"))
    assert line.startswith(f"dub: error: {tmp_path / 'clip.es.srt'}") and "cue 2 holds a NUL character" in line
    assert not out.exists()


@pytest.mark.timeout(30)
@pytest.mark.parametrize("kind", KINDS)
def test_a_special_file_as_the_input_is_refused(tmp_path, kind):
    path = hostile(kind, tmp_path / "clip.mp4")
    result, seconds, _ = measured(path, "--langs", "es", "--out", tmp_path / "out",
                                  "--db", f"sqlite:///{tmp_path / 'c.db'}")
    assert refused(result).startswith(f"dub: error: {path}: not a regular file")
    assert seconds < SECONDS and not (tmp_path / "out").exists()


@pytest.mark.timeout(30)
@pytest.mark.parametrize("option, name", [("--transcript", "script.srt"), ("--voices", "voices.yaml")])
def test_a_fifo_named_by_an_option_is_refused(tmp_path, option, name):
    video = tmp_path / "clip.mp4"
    shutil.copy(EXAMPLE, video)
    shutil.copy(EXAMPLE.with_suffix(".en.srt"), tmp_path / "clip.en.srt")
    path = hostile("fifo", tmp_path / name)
    result, seconds, _ = measured(video, "--langs", "es", option, path, "--voice", "espeak", "--out", tmp_path / "out",
                                  "--db", f"sqlite:///{tmp_path / 'c.db'}")
    assert f"{path}: not a regular file" in refused(result)
    assert seconds < SECONDS * 3 and not (tmp_path / "out").exists()
