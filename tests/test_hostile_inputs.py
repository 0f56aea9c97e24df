"""Hostile and broken inputs are refused before any work: exit 2, one line naming the file
and the cue. Real `dub` command; every case fails before Prefect is imported."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from polydub import limits, media
from tests import inprocess
from tests.conftest import EXAMPLE


def dub(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """`dub` in this process: the exit status and the one line are what is checked (that the
    real command refuses before Prefect is imported: test_refusals_come_before_prefect_is_imported)."""
    return inprocess.dub(*args, cwd=cwd)


def cue(n: int, start: str, end: str, text: str) -> str:
    return f"{n}\n{start} --> {end}\n{text}\n"


LONG = "word " * 500  # 2,500 characters
HOSTILE = {
    "long_cue": (cue(1, "00:00:00,500", "00:00:02,000", "Hello.") + "\n"
                 + cue(2, "00:00:01,000", "00:00:09,000", LONG), "cue 2 (00:00:01,000) has 2499 characters"),
    "too_fast": (cue(1, "00:00:01,000", "00:00:02,000", "x" * 200),
                 "cue 1 (00:00:01,000) has 200 characters in 1.000 s"),
    "past_the_end": (cue(1, "00:00:01,000", "00:00:02,000", "Hi.") + "\n"
                     + cue(2, "02:00:00,000", "02:00:03,000", "Bye."), "cue 2 (02:00:00,000) starts after the end"),
    "no_end_time": (cue(1, "00:00:01,000", "", "Hi."), "cue 1 has no end time"),
    "bad_end_time": (cue(1, "00:00:01,000", "00:00:02", "Hi.") + "\n"
                     + cue(2, "00:00:03,000", "soon", "Hi."), "cue 1: bad timestamp"),
    "header_only": ("WEBVTT\n\nNOTE nothing to say\n", "approved translation has no subtitle lines"),
    "too_many": ("\n".join(cue(n, "00:00:01,000", "00:00:01,500", "a") for n in range(limits.MAX_CUES + 1)),
                 f"{limits.MAX_CUES + 1} cues"),
}


@pytest.mark.parametrize("case", HOSTILE)
def test_hostile_approved_translation_is_refused_naming_the_cue(tmp_path, case):
    text, expected = HOSTILE[case]
    video = tmp_path / "clip.mp4"
    shutil.copy(EXAMPLE, video)
    shutil.copy(EXAMPLE.with_suffix(".en.srt"), tmp_path / "clip.en.srt")
    suffix = ".vtt" if text.startswith("WEBVTT") else ".srt"
    (tmp_path / f"clip.es{suffix}").write_text(text)
    out = tmp_path / "out"
    result = dub(str(video), "--langs", "es", "--out", str(out))
    assert result.returncode == 2, result.stderr
    [line] = result.stderr.strip().splitlines()
    assert line.startswith(f"dub: error: {tmp_path / f'clip.es{suffix}'}") and expected in line, line
    assert not out.exists()


def test_hostile_transcript_is_refused_too(tmp_path):
    video = tmp_path / "clip.mp4"
    shutil.copy(EXAMPLE, video)
    (tmp_path / "clip.en.srt").write_text(HOSTILE["past_the_end"][0])
    result = dub(str(video), "--langs", "es", "--out", str(tmp_path / "out"))
    assert result.returncode == 2
    assert "clip.en.srt: cue 2 (02:00:00,000) starts after the end of the source (10.000 s)" in result.stderr


@pytest.mark.parametrize("name, text, expected", [
    ("terms.tsv", "Acme\tAcme\textra\n", "terms.tsv:1: expected 'term' a tab 'translation'"),
    ("terms.json", "[1, 2]", "a JSON glossary must be an object"),
    ("terms.tsv", "x" * 300 + "\t\n", "longer than 200 characters"),
])
def test_malformed_glossary_is_refused_before_work(tmp_path, name, text, expected):
    (tmp_path / name).write_text(text)
    result = dub(str(EXAMPLE), "--langs", "it", "--glossary", str(tmp_path / name), "--out", str(tmp_path / "o"))
    assert result.returncode == 2, result.stderr
    [line] = result.stderr.strip().splitlines()
    assert expected in line and "Traceback" not in result.stderr


def test_glossary_folder_files_are_checked_for_the_languages_used(tmp_path):
    folder = tmp_path / "glossaries"
    folder.mkdir()
    (folder / "it.csv").write_text("Acme,Acme,Acme\n")
    result = dub(str(EXAMPLE), "--langs", "it", "--glossary", str(folder), "--out", str(tmp_path / "o"))
    assert result.returncode == 2 and "it.csv:1" in result.stderr


def test_a_name_starting_with_a_dash_is_a_file_not_an_option(tmp_path, monkeypatch):
    """`-clip.mp4` in the working folder is probed and decoded as a file: the run gets as
    far as its (deliberately broken) sidecar, which it names."""
    shutil.copy(EXAMPLE, tmp_path / "-clip.mp4")
    (tmp_path / "-clip.en.srt").write_text(HOSTILE["no_end_time"][0])
    result = dub("--langs", "es", "--out", "out", "--", "-clip.mp4", cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert "-clip.en.srt" in result.stderr and "cue 1 has no end time" in result.stderr
    monkeypatch.chdir(tmp_path)
    media.extract_audio("-clip.mp4", "-audio.wav", seconds=1.0)
    assert media.probe("-audio.wav").duration == pytest.approx(1.0, abs=0.01)


def test_an_input_is_probed_again_only_when_it_changed(tmp_path, monkeypatch):
    """The command line, the flow's checks and the job each ask about the input: ffprobe
    runs once for an unchanged file, again for a changed one (counted through a wrapper
    in front of the real ffprobe)."""
    calls = tmp_path / "calls.log"
    wrapper = tmp_path / "bin" / "ffprobe"
    wrapper.parent.mkdir()
    wrapper.write_text(f"#!/bin/sh\necho x >> {calls}\nexec {shutil.which('ffprobe')} \"$@\"\n")
    wrapper.chmod(0o755)
    monkeypatch.setenv("PATH", f"{wrapper.parent}:{os.environ['PATH']}")
    clip = tmp_path / "clip.mp4"
    shutil.copy(EXAMPLE, clip)
    first = media.probe(clip)
    assert media.probe(clip) == first and media.probe(str(clip)) == first
    assert calls.read_text().count("x") == 1
    media.extract_audio(EXAMPLE, tmp_path / "cut.wav", seconds=2.0)
    (tmp_path / "cut.wav").replace(clip)  # edited in place: another file under the same name
    assert media.probe(clip).duration == pytest.approx(2.0, abs=0.05) and not media.probe(clip).has_video
    assert calls.read_text().count("x") == 2
