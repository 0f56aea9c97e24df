"""The whole job through the real `dub` command, Prefect, ffmpeg, espeak-ng and the catalog.

One dub of the bundled example is shared by the checks a user would make on its outputs;
then an unchanged re-run (up to date: no flow run), a forced one (all cached), damaged
deliverables made again, and one more language (only that language's stages run).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from polydub.segments import read_subtitles
from tests import inprocess
from tests.conftest import EXAMPLE, scratch_dir
from tests.held import start_held
from tests.probe import ffprobe
from tests.services import translation_service_down

LANGS = ["es", "fr", "de"]
FRAME = 1 / 25  # the example's frame duration, seconds
pytestmark = pytest.mark.slow


# A stage cache of this module's own: other modules dub the same example, and the first
# run here must do every stage itself.
CACHE = scratch_dir("flow-cache-")
NOT_RUN = ("lipsync", "separate")  # skipped here: no GPU, no separation weights


def dub(*args: str) -> subprocess.CompletedProcess:
    """`dub` in this process (what is checked is what it makes and records)."""
    return inprocess.dub(*args, env={"DUB_CACHE_DIR": CACHE})



def video_md5(path: Path) -> str:
    """MD5 of the video stream's packets: equal only if the stream was copied, not re-encoded."""
    return subprocess.run(["ffmpeg", "-v", "error", "-i", str(path), "-map", "0:v:0", "-c", "copy", "-f", "md5",
                           "-"], capture_output=True, text=True, timeout=60, check=True).stdout.strip()


def stages(job: int, db: str) -> list[dict]:
    result = dub("show", str(job), "--db", db, "--json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)["stages"]


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    """The example and its sidecars in a folder of their own."""
    d = tmp_path_factory.mktemp("job")
    for f in EXAMPLE.parent.glob(f"{EXAMPLE.stem}.*"):
        shutil.copy(f, d / f.name)
    return d


@pytest.fixture(scope="module")
def first_run(prefect_api, workdir, tmp_path_factory):
    out = workdir / "out"
    db = f"sqlite:///{workdir / 'catalog.db'}"
    result = dub(str(workdir / EXAMPLE.name), "--langs", ",".join(LANGS), "--out", str(out), "--db", db,
                 "--json")  # as the README's example runs it: --voice auto
    assert result.returncode == 0, result.stderr
    return result, json.loads(result.stdout), out, db


def test_every_language_is_delivered_as_long_as_the_source(first_run):
    _, report, out, _ = first_run
    source = ffprobe(EXAMPLE)
    src_duration = float(source["format"]["duration"])
    for lang, tag in zip(LANGS, ["spa", "fra", "deu"]):
        info = ffprobe(out / f"talking_head.{lang}.mp4")
        kinds = [s["codec_type"] for s in info["streams"]]
        assert kinds == ["video", "audio", "subtitle"]
        audio = info["streams"][1]
        assert audio["codec_name"] == "aac" and audio["tags"]["language"] == tag
        assert info["streams"][2]["tags"]["language"] == tag
        assert abs(float(info["format"]["duration"]) - src_duration) <= FRAME
        assert abs(float(audio["duration"]) - src_duration) <= FRAME
        assert "AI-dubbed" in info["format"]["tags"]["comment"]
        assert report["languages"][lang]["status"] == "done"


def test_a_run_that_ended_in_prefect_is_not_asked_about_again(first_run):
    """The command line saw Prefect accept the run's final state: `dub list` will not ask."""
    from polydub import crash
    from polydub.storage import Catalog

    _, _, _, db = first_run
    cat = Catalog(db)
    try:
        [job] = cat.list_jobs()
        assert job["flow_run_id"] in crash._settled_runs(cat)
    finally:
        cat.close()


def test_video_stream_is_copied_not_reencoded(first_run):
    _, _, out, _ = first_run
    original = video_md5(EXAMPLE)
    for lang in LANGS:
        assert video_md5(out / f"talking_head.{lang}.mp4") == original


def test_subtitles_are_the_approved_translations(first_run, workdir):
    _, _, out, _ = first_run
    for lang in LANGS:
        approved = read_subtitles(workdir / f"talking_head.{lang}.srt")
        for ext in ("srt", "vtt"):
            got = read_subtitles(out / f"talking_head.{lang}.{ext}")
            assert [s.text for s in got] == [s.text for s in approved]
            assert [round(s.start, 3) for s in got] == [round(s.start, 3) for s in approved]


def test_multitrack_file_holds_every_track_language_tagged(first_run):
    _, report, out, _ = first_run
    info = ffprobe(out / "talking_head.dubbed.mkv")
    audio = [s for s in info["streams"] if s["codec_type"] == "audio"]
    subs = [s for s in info["streams"] if s["codec_type"] == "subtitle"]
    assert [s["tags"]["language"] for s in audio] == ["eng", "spa", "fre", "ger"]
    assert [s["tags"]["language"] for s in subs] == ["eng", "spa", "fre", "ger"]
    assert audio[0]["disposition"]["default"] == 1
    assert abs(float(info["format"]["duration"]) - float(ffprobe(EXAMPLE)["format"]["duration"])) <= FRAME
    assert report["multitrack"].endswith("talking_head.dubbed.mkv")


def test_report_places_every_line_at_its_source_start(first_run, workdir):
    _, _, out, _ = first_run
    report = json.loads((out / "talking_head.report.json").read_text())
    transcript = read_subtitles(workdir / "talking_head.en.srt")
    for lang in LANGS:
        entry = report["languages"][lang]
        assert entry["backends"]["voice"] == "espeak"
        why = entry["backends"]["voice_reason"]  # each better voice that is missing, named
        assert why.startswith("auto: no Chatterbox weights")
        assert ("; Kokoro does not speak 'de'; " if lang == "de" else "; no Kokoro weights in ") in why
        assert entry["backends"]["translate"] == "approved translation"
        assert entry["backends"]["lipsync"] == "skipped" and entry["backends"]["lipsync_reason"]
        assert abs(entry["loudness_lufs"] - report["source_loudness_lufs"]) <= 1.0  # matches the source, measured
        lines = entry["lines"]
        assert len(lines) == len(transcript)
        for line, source in zip(lines, transcript):
            assert abs(line["start"] - source.start) <= 0.010
            assert 1.0 <= line["speed"] <= 1.3


def test_catalog_records_source_job_stages_and_outputs(first_run):
    _, report, out, db = first_run
    runs = stages(report["job"], db)
    by_stage = {}
    for run in runs:
        by_stage.setdefault(run["stage"], []).append(run)
    assert {r["status"] for r in by_stage["probe"] + by_stage["transcribe"]} == {"done"}
    for stage in ("translate", "synthesize", "mix", "assemble"):
        assert {r["lang"] for r in by_stage[stage]} >= set(LANGS)
        assert {r["status"] for r in by_stage[stage]} == {"done"}
    assert {r["status"] for r in by_stage["lipsync"]} == {"skipped"}
    assert by_stage["transcribe"][0]["backend"] == "approved transcript"
    listing = json.loads(dub("list", "--db", db, "--json").stdout)
    assert listing[0]["id"] == report["job"] and listing[0]["status"] == "done"
    shown = json.loads(dub("show", str(report["job"]), "--db", db, "--json").stdout)
    kinds = sorted(o["kind"] for o in shown["outputs"])
    assert kinds.count("video") == 3 and kinds.count("srt") == 3 and kinds.count("vtt") == 3
    assert "multitrack" in kinds and "report" in kinds


def jobs(db: str) -> list[int]:
    result = dub("list", "--db", db, "--json")
    assert result.returncode == 0, result.stderr
    return sorted(job["id"] for job in json.loads(result.stdout))


def delivered_files(out: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}


def test_an_unchanged_rerun_is_up_to_date_without_a_flow_run(first_run, workdir):
    """Nothing changed: the catalog says so before Prefect is even imported; no job, no run,
    every file as it was. `--force` runs the flow anyway: every stage from the cache."""
    _, first, out, db = first_run
    before, known = delivered_files(out), jobs(db)
    args = [str(workdir / EXAMPLE.name), "--langs", ",".join(LANGS), "--out", str(out), "--db", db]
    probe = ("import sys; from polydub.cli import main; rc = main(sys.argv[1:]); "
             "print('PREFECT', any(m == 'prefect' or m.startswith('prefect.') for m in sys.modules)); sys.exit(rc)")
    result = subprocess.run([sys.executable, "-c", probe, *args], capture_output=True, text=True, timeout=300,
                            env={**os.environ, "DUB_CACHE_DIR": CACHE})
    assert result.returncode == 0, result.stderr
    assert "up to date: job %d" % first["job"] in " ".join((result.stdout + result.stderr).split())
    assert "PREFECT False" in result.stdout
    as_json = dub(*args, "--json")
    assert as_json.returncode == 0, as_json.stderr
    report = json.loads(as_json.stdout)
    assert report["up_to_date"] is True and report["job"] == first["job"] and report["status"] == "done"
    assert jobs(db) == known and delivered_files(out) == before

    forced = dub(*args, "--force", "--json")
    assert forced.returncode == 0, forced.stderr
    report = json.loads(forced.stdout)
    assert report["job"] not in known and "up_to_date" not in report
    statuses = {(r["stage"], r["lang"]): r["status"] for r in stages(report["job"], db)}
    assert all(s == ("skipped" if stage in NOT_RUN else "cached") for (stage, _), s in statuses.items()), statuses
    assert {n: b for n, b in delivered_files(out).items() if n.endswith(".mp4")} == \
        {n: b for n, b in before.items() if n.endswith(".mp4")}


def test_a_damaged_or_missing_deliverable_is_made_again(first_run, workdir):
    _, _, out, db = first_run
    before, known = delivered_files(out), jobs(db)
    (out / "talking_head.fr.srt").write_text("1\n00:00:00,000 --> 00:00:01,000\nedited by hand\n", encoding="utf-8")
    (out / "talking_head.dubbed.mkv").unlink()
    args = [str(workdir / EXAMPLE.name), "--langs", ",".join(LANGS), "--out", str(out), "--db", db, "--json"]
    result = dub(*args)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert "up_to_date" not in report and report["job"] not in known
    assert (out / "talking_head.fr.srt").read_bytes() == before["talking_head.fr.srt"]
    assert (out / "talking_head.dubbed.mkv").is_file()
    again = json.loads(dub(*args).stdout)  # and now it is up to date again
    assert again["up_to_date"] is True and again["job"] == report["job"]


def test_a_changed_option_or_language_list_is_not_up_to_date(first_run, workdir):
    _, _, out, db = first_run
    known = jobs(db)
    args = [str(workdir / EXAMPLE.name), "--out", str(out), "--db", db, "--json"]
    slower = json.loads(dub(*args, "--langs", ",".join(LANGS), "--max-speed", "1.2").stdout)
    fewer = json.loads(dub(*args, "--langs", "es").stdout)  # the multi-track file would change
    for report in (slower, fewer):
        assert "up_to_date" not in report and report["job"] not in known and report["status"] == "done"


def test_adding_a_language_runs_only_that_language(first_run, workdir, tmp_path):
    _, _, out, db = first_run
    translations = tmp_path / "approved"
    translations.mkdir()
    (translations / "talking_head.it.srt").write_text(
        "1\n00:00:00,500 --> 00:00:02,800\nCiao e benvenuti al nostro nuovo prodotto.\n\n"
        "2\n00:00:03,200 --> 00:00:05,600\nTi fa risparmiare tempo ogni giorno.\n\n"
        "3\n00:00:06,000 --> 00:00:09,200\nProvalo oggi e dicci cosa ne pensi.\n", encoding="utf-8")
    result = dub(str(workdir / EXAMPLE.name), "--langs", ",".join(LANGS + ["it"]), "--out", str(out),
                 "--db", db, "--translations", str(translations), "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    for run in stages(report["job"], db):
        if run["stage"] in NOT_RUN:
            assert run["status"] == "skipped"
        elif run["lang"] == "it" or run["stage"] == "assemble" and run["lang"] is None:
            assert run["status"] == "done", run  # the new language, and the multi-track file
        else:
            assert run["status"] == "cached", run
    info = ffprobe(out / "talking_head.it.mp4")
    assert info["streams"][1]["tags"]["language"] == "ita"
    mkv = ffprobe(out / "talking_head.dubbed.mkv")
    assert [s["tags"]["language"] for s in mkv["streams"] if s["codec_type"] == "audio"] == \
        ["eng", "spa", "fre", "ger", "ita"]


@pytest.fixture()
def failing_translation_service():
    """A self-hosted LibreTranslate that is down: every request gets 503."""
    with translation_service_down() as url:
        yield url


def test_a_failing_language_does_not_stop_the_others(prefect_api, tmp_path, failing_translation_service,
                                                     monkeypatch):
    video = tmp_path / "spot.mp4"
    shutil.copy(EXAMPLE, video)
    shutil.copy(EXAMPLE.with_suffix(".en.srt"), tmp_path / "spot.en.srt")
    shutil.copy(EXAMPLE.with_suffix(".fr.srt"), tmp_path / "spot.fr.srt")  # French is approved
    monkeypatch.setenv("LIBRE_API_KEY", "key")
    monkeypatch.setenv("LIBRE_URL", failing_translation_service)
    monkeypatch.setenv("DUB_TRANSLATE_RETRIES", "1")
    monkeypatch.delenv("PREFECT_LOGGING_LEVEL")  # as a user runs it (the tests' own default is quieter)
    out, db = tmp_path / "out", f"sqlite:///{tmp_path / 'c.db'}"
    result = dub(str(video), "--langs", "es,fr", "--translator", "libre", "--voice", "espeak", "--out", str(out),
                 "--db", db, "--json")
    assert result.returncode == 1, result.stderr
    report = json.loads(result.stdout)
    assert report["status"] == "partial"
    assert report["languages"]["fr"]["status"] == "done" and (out / "spot.fr.mp4").exists()
    assert report["languages"]["es"]["status"] == "failed"
    assert "libre" in report["languages"]["es"]["error"] and "2 attempts" in report["languages"]["es"]["error"]
    assert not (out / "spot.es.mp4").exists()
    mkv = ffprobe(out / "spot.dubbed.mkv")
    assert [s["tags"]["language"] for s in mkv["streams"] if s["codec_type"] == "audio"] == ["eng", "fre"]
    runs = stages(report["job"], db)
    failed = [r for r in runs if r["status"] == "failed"]
    assert [(r["stage"], r["lang"]) for r in failed] == [("translate", "es")]
    assert "libre" in failed[0]["error"]
    assert not any(r["lang"] == "es" and r["status"] == "done" for r in runs)

    # The run's log in the Prefect UI: each stage's line (a command-line run too), the failure
    # in one line: no provider traceback, no script text from the request's URL.
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId

    import sqlite3
    with sqlite3.connect(tmp_path / "c.db") as conn:
        [(flow_run_id,)] = conn.execute("SELECT flow_run_id FROM jobs WHERE id = ?", (report["job"],)).fetchall()
    with get_client(sync_client=True) as client:
        deadline, logs = time.monotonic() + 30, []
        while time.monotonic() < deadline and not any(m.startswith("Finished in state Partial(") for m in logs):
            time.sleep(0.5)  # the server stores logs as its messaging delivers them
            logs = [entry.message for entry in client.read_logs(
                LogFilter(flow_run_id=LogFilterFlowRunId(any_=[flow_run_id])), limit=200)]
    assert any(m.startswith("translate[fr]: ") for m in logs) and any(m.startswith("mix[fr]: ") for m in logs), logs
    assert any(m.startswith("translate[es]: failed") and "libre" in m for m in logs), logs
    assert not any("Traceback" in m for m in logs), [m for m in logs if "Traceback" in m][0]
    script = next(s.text for s in read_subtitles(EXAMPLE.with_suffix(".en.srt")))
    assert not any(script.split()[0] + "%2C" in m or script[:20] in m for m in logs)
    tracebacks = (Path(os.environ["DUB_HOME"]) / "logs" / "tracebacks.log").read_text()
    assert "Traceback" in tracebacks and "StageError: translation to es with libre" in tracebacks


def test_other_frame_rates_channel_layouts_and_rotation_are_accepted(prefect_api, tmp_path):
    """30 fps, 5.1 audio, a rotated picture: the dub keeps the picture as it was (copied,
    still rotated) and its track is as long as the source."""
    encoded, video = tmp_path / "encoded.mp4", tmp_path / "phone.mp4"
    subprocess.run(["ffmpeg", "-v", "error", "-i", str(EXAMPLE), "-t", "6", "-r", "30", "-c:v", "libx264",
                    "-af", "aformat=channel_layouts=5.1", "-ac", "6", "-c:a", "aac", str(encoded)],
                   check=True, timeout=120)
    subprocess.run(["ffmpeg", "-v", "error", "-i", str(encoded), "-c", "copy", "-metadata:s:v:0", "rotate=90",
                    str(video)], check=True, timeout=120)  # a phone's portrait recording
    (tmp_path / "phone.en.srt").write_text("1\n00:00:00,500 --> 00:00:02,800\nHello there.\n")
    (tmp_path / "phone.de.srt").write_text("1\n00:00:00,500 --> 00:00:02,800\nHallo zusammen.\n")
    out = tmp_path / "out"
    result = dub(str(video), "--langs", "de", "--voice", "espeak", "--out", str(out),
                 "--db", f"sqlite:///{tmp_path / 'c.db'}")
    assert result.returncode == 0, result.stderr
    src, dubbed = ffprobe(video), ffprobe(out / "phone.de.mp4")
    assert abs(float(dubbed["format"]["duration"]) - float(src["format"]["duration"])) <= 1 / 30
    assert video_md5(out / "phone.de.mp4") == video_md5(video)
    assert dubbed["streams"][0]["r_frame_rate"] == "30/1"
    assert src["streams"][1]["channels"] == 6
    rotation = [d.get("rotation") for d in dubbed["streams"][0].get("side_data_list", [])]
    assert rotation == [d.get("rotation") for d in src["streams"][0].get("side_data_list", [])] == [90]


def test_several_inputs_in_one_command(prefect_api, tmp_path):
    """A batch: each input gets its own folder; a copy of a dubbed file reuses every stage."""
    for name in ("spot_a", "spot_b"):
        shutil.copy(EXAMPLE, tmp_path / f"{name}.mp4")
        for lang in ("en", "es"):
            shutil.copy(EXAMPLE.with_suffix(f".{lang}.srt"), tmp_path / f"{name}.{lang}.srt")
    out, db = tmp_path / "out", f"sqlite:///{tmp_path / 'c.db'}"
    result = dub(str(tmp_path / "spot_a.mp4"), str(tmp_path / "spot_b.mp4"), "--langs", "es", "--out", str(out),
                 "--db", db, "--json")
    assert result.returncode == 0, result.stderr
    first, second = json.loads(result.stdout)
    assert (out / "spot_a" / "spot_a.es.mp4").exists() and (out / "spot_b" / "spot_b.es.mp4").exists()
    assert {r["status"] for r in stages(second["job"], db) if r["stage"] not in NOT_RUN} == {"cached"}


def test_a_killed_run_loses_nothing_and_resumes(prefect_api, tmp_path):
    """Kill `dub` in the middle of a job (held in mixing, its synthesis done): what finished
    stays cached, nothing half-done is marked done, `dub list` and `dub show` show the dead
    job interrupted, and the next run completes it."""
    import signal

    clip = tmp_path / "long.mp4"
    shutil.copy(EXAMPLE, clip)
    for lang in ("en", "es", "fr"):
        shutil.copy(EXAMPLE.with_suffix(f".{lang}.srt"), tmp_path / f"long.{lang}.srt")
    out, db_file, cache_dir = tmp_path / "out", tmp_path / "c.db", tmp_path / "cache"  # every stage runs
    db = f"sqlite:///{db_file}"
    args = [str(clip), "--langs", "es,fr", "--out", str(out), "--db", db]
    proc = start_held(args, "mix", tmp_path / "held", env={"DUB_CACHE_DIR": str(cache_dir)})
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    assert not (out / "long.es.mp4").exists() or (out / "long.es.mp4").stat().st_size > 0
    [listed] = json.loads(dub("list", "--db", db, "--json").stdout)
    assert listed["status"] == "interrupted" and listed["error"].endswith("is gone")
    shown = dub("show", "1", "--db", db)
    assert shown.returncode == 0 and shown.stdout.startswith("job 1: interrupted")

    result = inprocess.dub(*args, "--json", env={"DUB_CACHE_DIR": str(cache_dir)})
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    again = {(r["stage"], r["lang"]): r["status"] for r in stages(report["job"], db)}
    assert again[("probe", None)] == "cached" and again[("transcribe", None)] == "cached"
    assert "cached" in {again[("synthesize", "es")], again[("synthesize", "fr")]}
    assert "done" in {again[("mix", "es")], again[("mix", "fr")]}  # the held mix was not published
    killed = json.loads(dub("show", "1", "--db", db, "--json").stdout)
    assert killed["status"] == "interrupted" and killed["error"] == listed["error"]
    assert all(s["status"] in ("done", "interrupted", "skipped") for s in killed["stages"])
    assert any(s["stage"] == "mix" and s["status"] == "interrupted" for s in killed["stages"])
    assert all(s["error"] == listed["error"] for s in killed["stages"] if s["status"] == "interrupted")
    for lang in ("es", "fr"):
        assert abs(float(ffprobe(out / f"long.{lang}.mp4")["format"]["duration"]) -
                   float(ffprobe(clip)["format"]["duration"])) <= FRAME


def test_a_codec_mp4_cannot_carry_is_reencoded_for_the_mp4_only(prefect_api, tmp_path):
    video = tmp_path / "master.mkv"  # lossless FFV1 + FLAC, as an editor's export might be
    subprocess.run(["ffmpeg", "-v", "error", "-i", str(EXAMPLE), "-t", "4", "-vf", "scale=160:160", "-c:v", "ffv1",
                    "-c:a", "flac", "-metadata:s:a:0", "language=eng", str(video)], check=True, timeout=120)
    (tmp_path / "master.en.srt").write_text("1\n00:00:00,500 --> 00:00:02,800\nHello there.\n")
    (tmp_path / "master.es.srt").write_text("1\n00:00:00,500 --> 00:00:02,800\nHola a todos.\n")
    out = tmp_path / "out"
    result = dub(str(video), "--langs", "es", "--out", str(out), "--db", f"sqlite:///{tmp_path / 'c.db'}")
    assert result.returncode == 0, result.stderr
    mp4, mkv = ffprobe(out / "master.es.mp4"), ffprobe(out / "master.dubbed.mkv")
    assert mp4["streams"][0]["codec_name"] == "h264"
    assert abs(float(mp4["format"]["duration"]) - float(ffprobe(video)["format"]["duration"])) <= FRAME
    assert [s["codec_name"] for s in mkv["streams"][:3]] == ["ffv1", "flac", "aac"]  # copied as they are


def test_review_loop_edit_a_delivered_subtitle_and_dub_again(first_run, workdir, tmp_path):
    """A reviewer edits the delivered NAME.es.srt; `--translations` on the output folder makes it
    the approved script: only Spanish is redone, and its files carry the edit."""
    _, _, out, db = first_run
    review = tmp_path / "review"
    review.mkdir()
    edited = (out / "talking_head.es.srt").read_text(encoding="utf-8").replace(
        "Te ahorra tiempo todos los días.", "Le ahorra tiempo cada día.")
    (review / "talking_head.es.srt").write_text(edited, encoding="utf-8")
    video = tmp_path / "talking_head.mp4"
    shutil.copy(EXAMPLE, video)
    shutil.copy(workdir / "talking_head.en.srt", tmp_path / "talking_head.en.srt")
    for lang in LANGS:  # the original approved translations stay beside the video
        shutil.copy(workdir / f"talking_head.{lang}.srt", tmp_path / f"talking_head.{lang}.srt")
    result = dub(str(video), "--langs", ",".join(LANGS), "--out", str(out), "--db", db,
                 "--translations", str(review), "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    redone = {(r["stage"], r["lang"]) for r in stages(report["job"], db) if r["status"] == "done"}
    assert {("translate", "es"), ("synthesize", "es"), ("mix", "es"), ("assemble", "es")} <= redone
    assert not any(lang in ("fr", "de") for _, lang in redone)
    synth = [r for r in stages(report["job"], db) if (r["stage"], r["lang"]) == ("synthesize", "es")][0]
    assert synth["detail"]["synthesized"] == 1 and synth["detail"]["reused"] == 2  # only the edited line
    assert "Le ahorra tiempo cada día." in (out / "talking_head.es.vtt").read_text(encoding="utf-8")


def test_a_line_too_long_for_its_slot_is_spoken_faster_before_it_is_stretched(prefect_api, tmp_path):
    """espeak-ng can set its pace: a line that would overflow its slot is synthesized faster
    at the source (up to the speed cap) before any time-stretch; the report gives each
    line's factor from each step."""
    from polydub.tts.espeak import EspeakVoice
    from polydub.tts.trim import trim_silence
    import soundfile as sf

    video = tmp_path / "ad.mp4"
    shutil.copy(EXAMPLE, video)
    shutil.copy(EXAMPLE.with_suffix(".en.srt"), tmp_path / "ad.en.srt")
    long = "Questo nuovo prodotto vi fa risparmiare tempo prezioso ogni giorno."
    (tmp_path / "ad.it.srt").write_text(f"1\n00:00:00,500 --> 00:00:02,800\n{long}\n\n"
                                        "2\n00:00:03,200 --> 00:00:05,600\nCiao.\n\n"
                                        "3\n00:00:06,000 --> 00:00:09,200\nProvatelo oggi.\n")
    natural = tmp_path / "natural.wav"  # the line at espeak-ng's own pace, as the stage trims it
    EspeakVoice("it").synthesize(long, "it", natural)
    trim_silence(natural)
    own_pace = sf.info(natural).duration
    result = dub(str(video), "--langs", "it", "--voice", "espeak", "--out", str(tmp_path / "out"),
                 "--db", f"sqlite:///{tmp_path / 'c.db'}", "--json")
    assert result.returncode == 0, result.stderr
    first, *others = json.loads(result.stdout)["languages"]["it"]["lines"]
    assert own_pace > first["slot"] * 1.05, (own_pace, first)  # the line as written would need stretching
    assert first["source_speed"] > 1.0 and "wpm" in first["voice"], first
    assert first["clip"] < own_pace - 0.1  # spoken faster at the source
    assert first["speed"] < min(own_pace / first["slot"], 1.3)  # and stretched less (if at all) than it would be
    assert first["source_speed"] * first["speed"] <= 1.3 + 1e-3  # --max-speed caps both steps together
    assert [line["source_speed"] for line in others] == [1.0, 1.0]  # lines that fit keep their pace
