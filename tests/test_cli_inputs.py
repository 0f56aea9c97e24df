"""Bad usage and bad input: exit status 2, one line naming the problem, nothing produced.

These run `dub`'s main in the test process; one test runs the real command to show that
refusals come before Prefect (or any model library) is imported.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests import inprocess
from tests.conftest import EXAMPLE


def dub(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """`dub` in this process: the exit status and the one line are what is checked (that the
    real command refuses before Prefect is imported: test_refusals_come_before_prefect_is_imported)."""
    return inprocess.dub(*args, cwd=cwd)


@pytest.fixture(scope="module")
def bad_files(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("bad")
    files = {}
    files["not_media"] = d / "notes.mp4"
    files["not_media"].write_text("this is not a video\n" * 50)
    files["empty"] = d / "empty.mp4"
    files["empty"].write_bytes(b"")
    files["truncated"] = d / "truncated.mp4"
    files["truncated"].write_bytes(EXAMPLE.read_bytes()[:100_000])
    files["no_audio"] = d / "silent_film.mp4"
    subprocess.run(["ffmpeg", "-v", "error", "-i", str(EXAMPLE), "-an", "-c", "copy", str(files["no_audio"])],
                   check=True, timeout=60)
    files["folder"] = d
    return files


@pytest.mark.parametrize("case, expected", [
    ("missing", "no such file"),
    ("not_media", "not a media file"),
    ("empty", "empty (zero length)"),
    ("truncated", "truncated or corrupt"),
    ("no_audio", "has no audio stream"),
    ("folder", "is a directory"),
])
def test_bad_input_file_exits_2_with_one_line(bad_files, tmp_path, case, expected):
    path = bad_files.get(case, tmp_path / "nope.mp4")
    out = tmp_path / "out"
    result = dub(str(path), "--langs", "es", "--out", str(out))
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("dub: error: "), result.stderr
    assert expected in lines[0]
    assert "Traceback" not in result.stderr
    assert not out.exists()  # nothing started


@pytest.mark.parametrize("args, expected", [
    (["--langs", "es,xx"], "unknown language code 'xx'"),
    (["--langs", ""], "at least one language"),
    (["--langs", "es", "--lipsync", "maybe"], "--lipsync must be one of"),
    (["--langs", "es", "--max-speed", "5"], "--max-speed"),
    (["--langs", "es", "--voice", "festival"], "festival"),
    (["--langs", "es", "--transcript", "/nonexistent.srt"], "no such file"),
    (["--langs", "es", "--lipsync", "on"], "--lipsync on"),
    (["--langs", "it", "--translator", "nosuchprovider"], "nosuchprovider"),
    (["--bogus-flag"], "bogus-flag"),
    (["--langs", "es,tl", "--voice", "espeak"], "no voice for"),
])
def test_bad_usage_exits_2_before_any_work(tmp_path, args, expected):
    out = tmp_path / "out"
    result = dub(str(EXAMPLE), *args, "--out", str(out))
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and expected in lines[0], result.stderr
    assert not out.exists()


def test_bad_lipsync_setting_is_bad_usage(tmp_path, monkeypatch):
    monkeypatch.setenv("DUB_LIPSYNC_FACE", "tallest")
    result = dub(str(EXAMPLE), "--langs", "es", "--out", str(tmp_path / "out"))
    assert result.returncode == 2
    assert "DUB_LIPSYNC_FACE must be one of largest, left, right, center" in result.stderr


def test_malformed_sidecar_is_named(tmp_path):
    video = tmp_path / "clip.mp4"
    shutil.copy(EXAMPLE, video)
    (tmp_path / "clip.en.srt").write_text("1\n00:00:01,000 --> 00:00:xx,000\nHello\n")
    result = dub(str(video), "--langs", "es", "--out", str(tmp_path / "out"))
    assert result.returncode == 2
    assert "clip.en.srt" in result.stderr and "subtitle" in result.stderr


def test_show_unknown_job_exits_2(tmp_path):
    result = dub("show", "424242", "--db", f"sqlite:///{tmp_path / 'c.db'}")
    assert result.returncode == 2
    assert result.stderr.strip() == "dub: error: no job 424242 in the catalog"



def test_a_catalog_that_fails_under_a_command_is_one_line(tmp_path):
    """A catalog changed under polydub (here a column dropped by hand) fails the command in
    one line naming the catalog's complaint, exit 1, never a traceback."""
    import sqlite3

    db = f"sqlite:///{tmp_path / 'c.db'}"
    assert dub("list", "--db", db).returncode == 0  # made, at the newest revision
    with sqlite3.connect(tmp_path / "c.db") as conn:
        conn.execute("ALTER TABLE jobs DROP COLUMN deployment")
    result = dub("list", "--db", db)
    assert result.returncode == 1
    assert result.stderr.strip() == "dub: error: the catalog: no such column: jobs.deployment"

REFUSALS_IN_ONE_PROCESS = """
import json, sys
from polydub.cli import main
codes = [main(args) for args in json.loads(sys.argv[1])]
print(json.dumps({"codes": codes, "imported": sorted(m for m in ("prefect", "torch", "whisper") if m in sys.modules)}))
"""


@pytest.mark.slow
def test_refusals_come_before_prefect_is_imported(bad_files, tmp_path):
    """Bad usage, a bad input file, a hostile sidecar and a translation service out of reach
    (a worker without network: no minute of retries), refused by the real command: exit 2,
    one line each, and neither Prefect nor a model library was ever imported."""
    video = tmp_path / "clip.mp4"
    video.write_bytes(EXAMPLE.read_bytes())
    (tmp_path / "clip.es.srt").write_text("1\n00:00:01,000 --> 00:00:02,000\n" + "x" * 200 + "\n")
    cases = [[str(EXAMPLE), "--langs", "es,xx", "--out", str(tmp_path / "o1")],
             [str(bad_files["truncated"]), "--langs", "es", "--out", str(tmp_path / "o2")],
             [str(video), "--langs", "es", "--out", str(tmp_path / "o3")],
             [str(EXAMPLE), "--langs", "es,it", "--translator", "libre", "--out", str(tmp_path / "o4")]]  # no it.srt
    offline = {**os.environ, "LIBRE_API_KEY": "k", "LIBRE_URL": "http://translate.invalid:5000/"}  # never resolves
    result = subprocess.run([sys.executable, "-c", REFUSALS_IN_ONE_PROCESS, json.dumps(cases)], capture_output=True,
                            text=True, timeout=120, env=offline)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {"codes": [2, 2, 2, 2], "imported": []}
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 4 and all(line.startswith("dub: error: ") for line in lines), result.stderr
    assert "unknown language code 'xx'" in lines[0] and "truncated or corrupt" in lines[1] and "clip.es.srt" in lines[2]
    assert lines[3].startswith("dub: error: the libre translator's service (translate.invalid) cannot be reached "
                               "from this machine"), lines[3]
    assert not any((tmp_path / f"o{n}").exists() for n in (1, 2, 3, 4))


@pytest.mark.slow
@pytest.mark.parametrize("command", [["worker", "--pool", "polydub-cpu"], [str(EXAMPLE), "--langs", "es"]])
def test_an_unreachable_prefect_api_from_the_profile_is_one_line(tmp_path, command):
    """`prefect config set PREFECT_API_URL=...` then the server is down: no private server."""
    home = tmp_path / "prefect-home"
    home.mkdir()
    (home / "profiles.toml").write_text('active = "team"\n[profiles.team]\n'
                                        'PREFECT_API_URL = "http://127.0.0.1:9/api"\n')
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    env.update(PREFECT_HOME=str(home), DUB_HOME=str(tmp_path / "dub-home"))
    result = subprocess.run([sys.executable, "-m", "polydub.cli", *command], env=env, capture_output=True, text=True,
                            timeout=120, cwd=tmp_path)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        f"dub: error: the Prefect API at http://127.0.0.1:9/api (set by Prefect profile 'team' "
        f"({home / 'profiles.toml'})) does not answer; start that server, or change the setting"]
    assert not (tmp_path / "dub-home" / "prefect" / "server.json").exists()  # no private server started


def test_an_out_folder_name_no_file_system_takes_is_refused_before_work(tmp_path):
    """A 300-byte folder name in --out (here or deeper): refused in one line, exit 2, before
    any work; nothing made in its parent. A catalog path so named is refused as a catalog."""
    video = tmp_path / "spot" / EXAMPLE.name
    video.parent.mkdir()
    for f in EXAMPLE.parent.glob(f"{EXAMPLE.stem}.*"):
        shutil.copy(f, video.parent / f.name)
    long_name = "x" * 300
    for out in (tmp_path / long_name, tmp_path / long_name / "dubs"):
        result = dub(str(video), "--langs", "es", "--voice", "espeak", "--out", str(out))
        lines = result.stderr.strip().splitlines()
        assert result.returncode == 2 and len(lines) == 1, result.stderr
        assert lines[0].startswith("dub: error: --out ") and "is too long (300 bytes, at most 255)" in lines[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["spot"]
    listed = dub("list", "--db", f"sqlite:///{tmp_path / long_name / 'c.db'}")
    assert listed.returncode == 2 and listed.stderr.startswith("dub: error: cannot open catalog ")
    assert "Traceback" not in listed.stderr and "file name too long" in listed.stderr.lower()


def one_line(result: subprocess.CompletedProcess, code: int = 2) -> str:
    """The one error line of a refused command (no traceback, nothing else on stderr)."""
    assert result.returncode == code, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("dub: error: ") and "Traceback" not in result.stderr, result.stderr
    return lines[0].removeprefix("dub: error: ")


@pytest.mark.parametrize("since", ["99999999999d", "999999999999999999999999m", "800000d"])
def test_a_since_too_long_ago_is_one_line(tmp_path, since):
    result = dub("list", "--since", since, "--db", f"sqlite:///{tmp_path / 'c.db'}")
    assert one_line(result) == f"--since {since!r}: too long ago; give 30m, 6h, 2d or an ISO date such as 2026-11-28"


def test_an_export_out_that_cannot_be_written_is_refused_before_any_work(tmp_path):
    manifest = tmp_path / "ads.csv"
    manifest.write_text(f"id,input,langs\na,{EXAMPLE},es\n")
    blocker = tmp_path / "file"
    blocker.write_text("mine")
    db = f"sqlite:///{tmp_path / 'c.db'}"
    for out, problem in [("/proc/x.csv", "--out /proc/x.csv: cannot write in /proc (no such file or directory)"),
                         (f"{blocker}/x.csv", f"--out {blocker}/x.csv: {blocker} is a file, not a folder"),
                         (f"{blocker}/deeper/x.json", f"--out {blocker}/deeper/x.json: {blocker} is a file, not a folder")]:
        assert one_line(dub("export", str(manifest), "--out", out, "--db", db)) == problem
    assert blocker.read_text() == "mine" and not (tmp_path / "c.db").exists()  # refused before the catalog


def test_a_nul_byte_in_a_path_option_is_one_line(tmp_path):
    for flag in ("--out", "--transcript", "--glossary"):
        assert one_line(dub(str(EXAMPLE), "--langs", "es", flag, f"{tmp_path}/a\0b")) == \
            f"{flag}: a NUL byte is not allowed"
    manifest = tmp_path / "ads.csv"
    manifest.write_text(f"id,input,langs\na,{EXAMPLE},es\n")
    line = one_line(dub("status", str(manifest), "--set", "glossary=g\0.tsv", "--db", f"sqlite:///{tmp_path / 'c.db'}"))
    assert line == "--glossary: a NUL byte is not allowed"


def test_a_worker_takes_one_run_per_core_or_per_gpu_by_default():
    """`dub worker` without --limit: as many flow runs at once as the machine has cores
    (polydub-cpu) or GPUs, at least one (polydub-gpu); more would only queue for them."""
    import torch

    from polydub.cli import worker_limit

    assert worker_limit("polydub-cpu") == len(os.sched_getaffinity(0))
    assert worker_limit("polydub-gpu") == max(1, torch.cuda.device_count())
