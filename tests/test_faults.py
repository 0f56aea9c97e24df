"""Fault injection, done for real: bad output locations, a user's files in the way, damaged
and deleted cache entries, edits of delivered files, SIGKILL at each stage, disks that fill
up mid-run (size-limited tmpfs; skipped, saying why, where mounting is not allowed).

The first group fails before any work and needs no Prefect; the whole-flow group is `slow`.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from polydub import cache
from tests import inprocess
from tests.conftest import EXAMPLE
from tests.held import start_held
from tests.test_cache import flip_byte, small_disk

LANGS = "es,fr"
# Where a kill is tried: every stage publishes through the same run_stage and cache.building,
# so one per kind of work is enough: the whole-source decode, the concurrent per-language
# voices, the deliverables placed in --out.
KILLED_AT = ("probe", "synthesize", "assemble")


def dub(*args: str, cache_dir: Path | None = None, timeout: int = 300) -> subprocess.CompletedProcess:
    env = dict(os.environ, COLUMNS="200", **({"DUB_CACHE_DIR": str(cache_dir)} if cache_dir else {}))
    return subprocess.run([sys.executable, "-m", "polydub.cli", *args], capture_output=True, text=True,
                          timeout=timeout, env=env)


def run(*args: str, cache_dir: Path | None = None) -> subprocess.CompletedProcess:
    """`dub` in this process, for the whole-flow tests (what they check is files and records)."""
    return inprocess.dub(*args, env={"COLUMNS": "200", **({"DUB_CACHE_DIR": str(cache_dir)} if cache_dir else {})})


def one_line_error(result: subprocess.CompletedProcess, code: int = 2) -> str:
    assert result.returncode == code, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("dub: error: ") and "Traceback" not in result.stderr, result.stderr
    return lines[0]


@pytest.fixture()
def spot(tmp_path) -> Path:
    """The example and its approved transcript and translations, in a folder of their own."""
    folder = tmp_path / "spot"
    folder.mkdir()
    for f in EXAMPLE.parent.glob(f"{EXAMPLE.stem}.*"):
        shutil.copy(f, folder / f.name)
    return folder / EXAMPLE.name


# --- Checked before any work: exit 2, one line, nothing written.

@pytest.mark.slow
def test_out_that_is_a_file_is_refused(spot, tmp_path):
    taken = tmp_path / "taken"
    taken.write_text("mine")
    assert one_line_error(dub(str(spot), "--langs", LANGS, "--out", str(taken))).endswith(
        f"--out {taken}: exists as a file")
    assert "is a file, not a folder" in one_line_error(dub(str(spot), "--langs", LANGS, "--out", str(taken / "x")))
    assert taken.read_text() == "mine"


@pytest.mark.slow
def test_out_in_the_inputs_folder_never_replaces_an_approved_translation(spot):
    approved = spot.with_suffix(".es.srt")
    before = approved.read_bytes()
    line = one_line_error(dub(str(spot), "--langs", LANGS, "--out", str(spot.parent)))
    assert f"talking_head.es.srt would replace the approved es translation ({approved})" in line
    assert approved.read_bytes() == before and not spot.with_suffix(".es.mp4").exists()


@pytest.mark.slow
def test_a_file_of_the_users_at_a_deliverables_name_is_never_replaced(spot, tmp_path):
    """Files polydub did not deliver are refused before any work; what it delivered there
    (recorded in the catalog) it may replace, for one out folder and one catalog."""
    out, db = tmp_path / "out", f"sqlite:///{tmp_path / 'c.db'}"
    out.mkdir()
    for name in ("talking_head.report.json", "talking_head.es.mp4"):
        (out / name).write_text("the user's own file")
        line = one_line_error(dub(str(spot), "--langs", LANGS, "--voice", "espeak", "--out", str(out), "--db", db))
        assert line.endswith(f"--out {out}: {name} is already there and polydub did not deliver it; "
                             f"move it or choose another output folder"), line
        assert (out / name).read_text() == "the user's own file" and sorted(os.listdir(out)) == [name]
        (out / name).unlink()
    assert run(str(spot), "--langs", LANGS, "--voice", "espeak", "--out", str(out), "--db", db).returncode == 0
    (out / "talking_head.fr.srt").write_text("edited after delivery")  # polydub's own file: may be replaced
    again = run(str(spot), "--langs", LANGS, "--voice", "espeak", "--out", str(out), "--db", db)
    assert again.returncode == 0, again.stderr
    assert (out / "talking_head.fr.srt").read_text() != "edited after delivery"  # restored, as delivered
    other = run(str(spot), "--langs", LANGS, "--voice", "espeak", "--out", str(out),
                "--db", f"sqlite:///{tmp_path / 'other.db'}")  # a catalog that never delivered there
    assert other.returncode == 2 and "polydub did not deliver it" in other.stderr


@pytest.mark.slow
def test_out_on_a_read_only_disk_is_refused(spot, tmp_path):
    ro = tmp_path / "ro"
    with small_disk(ro, "1m"):
        subprocess.run(["mount", "-o", "remount,ro", str(ro)], check=True, timeout=30)
        line = one_line_error(dub(str(spot), "--langs", LANGS, "--out", str(ro / "dubs")))
        assert line.endswith(f"--out {ro / 'dubs'}: cannot write in {ro} (read-only file system)")
        line = one_line_error(dub(str(spot), "--langs", LANGS, "--out", str(tmp_path / "o"),
                                  "--db", f"sqlite:///{ro / 'c.db'}"))
        assert line.endswith(f"cannot open catalog sqlite:///{ro / 'c.db'}: cannot write in {ro} (read-only file system)")


@pytest.mark.slow
@pytest.mark.parametrize("where", ["out", "cache"])
def test_a_disk_too_small_for_the_job_is_refused_before_work(spot, tmp_path, where):
    small = tmp_path / "small"
    with small_disk(small, "256k"):
        if where == "out":
            result = dub(str(spot), "--langs", LANGS, "--out", str(small))
        else:
            result = dub(str(spot), "--langs", LANGS, "--out", str(tmp_path / "o"), cache_dir=small / "cache")
        line = one_line_error(result)
        assert f"not enough free space in {small}: this job needs about" in line
        assert os.listdir(small) in ([], ["cache"])


@pytest.mark.slow
def test_cache_location_that_is_a_file_is_refused(spot, tmp_path):
    blocker = tmp_path / "cache"
    blocker.write_text("")
    line = one_line_error(dub(str(spot), "--langs", LANGS, "--out", str(tmp_path / "o"), cache_dir=blocker))
    assert line.endswith(f"cache folder (DUB_CACHE_DIR) {blocker}: exists as a file")


@pytest.mark.slow
def test_a_name_too_long_for_the_file_system_is_refused(tmp_path):
    video = tmp_path / ("n" * 245 + ".mp4")  # fits; NAME.dubbed.mkv would not (255 bytes at most)
    shutil.copy(EXAMPLE, video)
    approved = tmp_path / "approved"
    approved.mkdir()
    for lang in ("en", "es"):
        shutil.copy(EXAMPLE.with_suffix(f".{lang}.srt"), approved / f"{lang}.srt")
    line = one_line_error(dub(str(video), "--langs", "es", "--transcript", str(approved / "en.srt"),
                              "--translations", str(approved), "--out", str(tmp_path / "o")))
    assert "is too long for this file system" in line and "rename the input" in line
    assert not (tmp_path / "o").exists()


def test_a_dub_home_under_a_file_is_one_line_for_server_and_cache_commands(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("mine")
    env = {"DUB_HOME": str(blocker / "home"), "DUB_CACHE_DIR": str(blocker / "cache")}
    assert one_line_error(inprocess.dub("server", "start", env=env)) == (
        f"dub: error: the local Prefect server's folder (DUB_HOME) {blocker / 'home' / 'prefect'}: "
        "cannot write in it (not a directory)")
    assert one_line_error(inprocess.dub("cache", "verify", env=env)) == (
        f"dub: error: cache folder (DUB_CACHE_DIR) {blocker / 'cache'}: cannot write in it (not a directory)")
    stopped = inprocess.dub("server", "stop", env=env)  # nothing can have been started there
    assert stopped.returncode == 0 and stopped.stdout.strip() == "no server was running" and not stopped.stderr
    assert blocker.read_text() == "mine"


def test_a_read_only_dub_home_is_one_line_and_stop_still_stops_the_server(tmp_path):
    """On a read-only disk: start and verify refuse in one line; stop stops the kept server
    (here a real process in a session of its own, as the server is) and says what it could
    not remove."""
    home = tmp_path / "home"
    with small_disk(home, "1m"):
        (home / "cache" / "probe" / ("0" * 16)).mkdir(parents=True)  # an entry verify would lock
        (home / "prefect").mkdir()
        server = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"], start_new_session=True)
        try:
            state = home / "prefect" / "server.json"
            state.write_text(json.dumps({"url": "http://127.0.0.1:9/api", "pid": server.pid}))
            subprocess.run(["mount", "-o", "remount,ro", str(home)], check=True, timeout=30)
            env = {"DUB_HOME": str(home), "DUB_CACHE_DIR": str(home / "cache")}
            assert one_line_error(inprocess.dub("server", "start", env=env)) == (
                f"dub: error: the local Prefect server's folder (DUB_HOME) {home / 'prefect'}: cannot write in it "
                "(read-only file system)")
            assert one_line_error(inprocess.dub("cache", "verify", env=env)) == (
                f"dub: error: cache folder (DUB_CACHE_DIR) {home / 'cache'}: cannot write in it (read-only file system)")
            assert one_line_error(inprocess.dub("server", "stop", env=env), code=1) == (
                f"dub: error: stopped the local Prefect server (pid {server.pid}), but cannot remove {state} "
                "(read-only file system)")
            assert server.wait(timeout=10) == -signal.SIGTERM
        finally:
            server.kill()
            server.wait(timeout=10)


# --- Whole flows: what a damaged cache, a kill or a full disk do to what is delivered.

def deliverables(out: Path) -> dict[str, bytes]:
    """Every delivered file but the report (which holds job numbers and times)."""
    return {p.name: p.read_bytes() for p in sorted(out.iterdir()) if p.is_file() and not p.name.endswith(".json")}


def job_rows(db: Path) -> list[tuple]:
    with sqlite3.connect(db, timeout=5) as conn:
        return conn.execute("select id, status, error from jobs order by id").fetchall()


def stage_runs(db: Path, job: int) -> dict[tuple[str, str | None], dict]:
    with sqlite3.connect(db, timeout=5) as conn:
        rows = conn.execute("select stage, lang, status, detail from stage_runs where job_id = ?", (job,)).fetchall()
    return {(s, lang): {"status": st, **json.loads(d or "{}")} for s, lang, st, d in rows}


@pytest.fixture(scope="module")
def reference(prefect_api, tmp_path_factory) -> dict[str, bytes]:
    """What an uninterrupted run into an empty cache delivers."""
    root = tmp_path_factory.mktemp("reference")
    for f in EXAMPLE.parent.glob(f"{EXAMPLE.stem}.*"):
        shutil.copy(f, root / f.name)
    result = run(str(root / EXAMPLE.name), "--langs", LANGS, "--out", str(root / "out"),
                 "--db", f"sqlite:///{root / 'c.db'}", cache_dir=root / "cache")
    assert result.returncode == 0, result.stderr
    return deliverables(root / "out")


@pytest.mark.slow
def test_damaged_cache_is_rebuilt_and_nothing_delivered_is_touched(reference, spot, tmp_path):
    cache_dir, db = tmp_path / "cache", tmp_path / "c.db"
    first, second = tmp_path / "out1", tmp_path / "out2"
    args = [str(spot), "--langs", LANGS, "--db", f"sqlite:///{db}"]
    assert run(*args, "--out", str(first), cache_dir=cache_dir).returncode == 0
    assert deliverables(first) == reference

    # Damage every kind of entry: changed bytes, a truncated file, a deleted file, a garbled
    # marker, a deleted line file and every shared line clip; and edit a delivered subtitle.
    dubbed = sorted((cache_dir / "assemble").glob("*/dubbed.mp4"))
    assert len(dubbed) == 2
    flip_byte(dubbed[0])
    with open(dubbed[1], "r+b") as f:
        f.truncate(1000)
    (next((cache_dir / "probe").glob("*/asr.wav"))).unlink()
    next((cache_dir / "transcribe").glob("*/done.json")).write_text("{not json")
    next((cache_dir / "synthesize").glob("*/line0001.wav")).unlink()
    for clip in (cache_dir / "lines").glob("*/*.wav"):
        flip_byte(clip)
    edited = first / "talking_head.es.srt"
    edited.write_text(edited.read_text(encoding="utf-8") + "\n4\n00:00:09,000 --> 00:00:09,500\nedit\n",
                      encoding="utf-8")
    untouched = {k: v for k, v in reference.items() if k != "talking_head.es.srt"}
    assert {k: v for k, v in deliverables(first).items() if k != "talking_head.es.srt"} == untouched

    check = run("cache", "verify", cache_dir=cache_dir)
    assert check.returncode == 1 and check.stdout.count("damaged: ") >= 6, check.stdout

    result = run(*args, "--out", str(second), cache_dir=cache_dir)
    assert result.returncode == 0, result.stderr
    assert "  video transcribe: cached result was damaged (unreadable completion marker); rebuilt\n" in result.stderr
    assert deliverables(second) == reference  # the edit of an earlier delivery does not leak
    runs = stage_runs(db, job_rows(db)[-1][0])
    shown = run("show", str(job_rows(db)[-1][0]), "--db", f"sqlite:///{db}")
    assert "rebuilt: unreadable completion marker" in shown.stdout, shown.stdout
    assert runs[("probe", None)]["rebuilt"] == "asr.wav: missing"
    assert runs[("transcribe", None)]["rebuilt"] == "unreadable completion marker"
    rebuilt = sorted(r["rebuilt"] for r in (runs[("assemble", "es")], runs[("assemble", "fr")]))
    assert rebuilt[0].startswith("dubbed.mp4: 1000 bytes, ") and rebuilt[1] == "dubbed.mp4: content changed"
    synth = [r for (stage, _), r in runs.items() if stage == "synthesize" and "rebuilt" in r]
    assert len(synth) == 1 and synth[0]["rebuilt"] == "line0001.wav: missing"
    assert synth[0]["damaged_clips"] == synth[0]["synthesized"] == 3  # no damaged clip was reused
    # The other language's clips were not needed (its synthesis was intact): verify finds them.
    check = run("cache", "verify", cache_dir=cache_dir)
    assert check.returncode == 1 and check.stdout.count("damaged: ") == 3, check.stdout
    assert run("cache", "verify", "--fix", cache_dir=cache_dir).returncode == 0
    assert run("cache", "verify", cache_dir=cache_dir).returncode == 0
    # A later job that merely reuses the rebuilt entries has nothing to say about damage.
    later = run(*args, "--out", str(tmp_path / "out3"), cache_dir=cache_dir)
    assert later.returncode == 0 and "was damaged" not in later.stderr, later.stderr
    shown = run("show", str(job_rows(db)[-1][0]), "--db", f"sqlite:///{db}")
    assert "rebuilt:" not in shown.stdout and not any("rebuilt" in r for r in stage_runs(db, job_rows(db)[-1][0]).values())


@pytest.mark.slow
def test_sigkill_at_each_stage_then_a_rerun_delivers_the_same_bytes(reference, spot, tmp_path):
    cache_dir, db, out = tmp_path / "cache", tmp_path / "c.db", tmp_path / "out"
    args = [str(spot), "--langs", LANGS, "--out", str(out), "--db", f"sqlite:///{db}"]
    for stage in KILLED_AT:  # each run resumes from the last and is killed one stage further on
        proc = start_held(args, stage, tmp_path / f"held-{stage}", env={"DUB_CACHE_DIR": str(cache_dir)})
        try:
            assert list((cache_dir / stage).glob(".tmp-*")), stage  # killed with the stage half-published
        finally:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
        for folder in (cache_dir / stage).iterdir():  # whatever is published is whole
            if not folder.name.startswith(".") and folder.is_dir():
                assert cache.damage(folder)[1] is None, folder

    result = run(*args, cache_dir=cache_dir)
    assert result.returncode == 0, result.stderr
    assert deliverables(out) == reference
    assert not [p for p in out.iterdir() if p.name.endswith(".part")]
    statuses = [status for _, status, _ in job_rows(db)]
    assert statuses[-1] == "done" and all(s != "running" for s in statuses)

    swept = run("cache", "gc", "--older-than", "0", cache_dir=cache_dir)
    assert swept.returncode == 0, swept.stderr
    left = [p for p in cache_dir.rglob(".tmp-*")] + [p for p in cache_dir.rglob("*.part")]
    assert left == [], left
    assert run("cache", "verify", cache_dir=cache_dir).returncode == 0


def fill(folder: Path) -> None:
    """Write until the disk is full."""
    with open(folder / "filler", "wb") as f:
        try:
            while True:
                f.write(b"\0" * (1 << 20))
                f.flush()
        except OSError:
            pass
    try:
        os.truncate(folder / "filler", os.stat(folder / "filler").st_size)
    except OSError:
        pass


@pytest.mark.slow
@pytest.mark.parametrize("where", ["out", "cache"])
def test_a_disk_that_fills_mid_run_fails_the_job_with_one_reason(reference, spot, tmp_path, where):
    disk, db = tmp_path / "disk", tmp_path / "c.db"
    with small_disk(disk, "96m"):
        out = disk / "out" if where == "out" else tmp_path / "out"
        cache_dir = disk / "cache" if where == "cache" else tmp_path / "cache"
        args = [str(spot), "--langs", LANGS, "--out", str(out), "--db", f"sqlite:///{db}"]
        held = tmp_path / "held"
        proc = start_held(args, "probe", held, env={"DUB_CACHE_DIR": str(cache_dir)}, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True)
        try:
            fill(disk)  # past the checks before work: the disk fills while the job runs
            held.unlink()
            _, stderr = proc.communicate(timeout=300)
        finally:
            if proc.poll() is None:
                proc.kill()
        assert proc.returncode == 1, stderr
        folder = out if where == "out" else cache_dir
        for lang in LANGS.split(","):  # the summary's line for each language names the folder
            assert f"{lang}: failed: disk full: no space left in {folder}\n" in stderr, stderr
        (_, status, error), = job_rows(db)
        assert status == "failed"  # the job's reason lists each language and why
        assert error == "; ".join(f"{lang}: disk full: no space left in {folder}" for lang in LANGS.split(","))
        assert not list(disk.rglob("*.part")) and not list(disk.rglob(".tmp-*"))
        if where == "out":  # nothing half-delivered: what is there is whole
            for name, data in deliverables(out).items():
                assert data == reference[name], name
        assert run("cache", "verify", cache_dir=cache_dir).returncode == 0  # published entries are whole
