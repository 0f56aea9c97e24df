"""A catalog of short ads through the real `dub catalog`, `dub status` and `dub export`
(run in the test process): Prefect, ffmpeg, espeak-ng, and the catalog on SQLite; on the
machine's PostgreSQL what depends on the database: the same catalog read back the same,
and two runners at once (real processes).

Three clips cut from the bundled example, each with its approved English script and
Spanish and French translations, and one item whose translations must come from a
translation service that is down.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import sqlalchemy as sa
import yaml

from polydub.cache import file_hash
from polydub.segments import Segment, read_subtitles, write_subtitles
from tests import inprocess
from tests.conftest import EXAMPLE, scratch_dir
from tests.databases import Databases, postgres_unreachable
from tests.probe import ffprobe
from tests.services import translation_service_down

pytestmark = pytest.mark.slow
CACHE = scratch_dir("catalog-cache-")  # the module's own: its first run does every stage
CLIPS = {"spot-a": (0.0, 3.0), "spot-b": (3.0, 6.0), "spot-c": (6.0, 9.5)}  # seconds of the example
LANGS = ("es", "fr")


def dub(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return inprocess.dub(*args, env={"DUB_CACHE_DIR": CACHE, **(env or {})})


@pytest.fixture(scope="module")
def databases(tmp_path_factory) -> Databases:
    """Fresh SQLite catalogs."""
    return Databases("sqlite", tmp_path_factory.mktemp("catalogs"))


@pytest.fixture(scope="module")
def postgres():
    """Fresh catalogs on the machine's PostgreSQL, dropped at the end."""
    if reason := postgres_unreachable():
        pytest.skip(f"PostgreSQL at 127.0.0.1:5432 is unreachable: {reason}")
    dbs = Databases("postgresql", None)
    yield dbs
    dbs.drop_all()


def cut_clip(folder: Path, name: str, start: float, end: float) -> Path:
    """A clip of the example and its scripts, cues shifted to the clip's own timeline."""
    video = folder / f"{name}.mp4"
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-ss", str(start), "-t", str(end - start), "-i", str(EXAMPLE),
                    "-c:v", "libx264", "-preset", "ultrafast", "-c:a", "aac", str(video)], check=True, timeout=120)
    for lang in ("en", *LANGS):
        cues = [Segment(max(0.0, c.start - start), min(end, c.end) - start, c.text)
                for c in read_subtitles(EXAMPLE.with_suffix(f".{lang}.srt")) if start <= c.start < end]
        write_subtitles(cues, folder / f"{name}.{lang}.srt")
    return video


@pytest.fixture(scope="module")
def ads(tmp_path_factory) -> Path:
    """The clips, and a manifest naming them; spot-d has no approved translations."""
    folder = tmp_path_factory.mktemp("ads")
    (folder / "videos").mkdir()
    for name, (start, end) in CLIPS.items():
        cut_clip(folder / "videos", name, start, end)
    d = folder / "videos" / "spot-d.mp4"
    shutil.copy(folder / "videos" / "spot-a.mp4", d)
    write_subtitles([Segment(0.5, 2.8, "A line no approved script has translated.")],  # not in the memory
                    folder / "videos" / "spot-d.en.srt")
    manifest = {"defaults": {"langs": list(LANGS), "voice": "espeak", "lipsync": "off", "translator": "libre"},
                "items": [{"id": name, "input": f"videos/{name}.mp4"} for name in (*CLIPS, "spot-d")]}
    (folder / "ads.yaml").write_text(yaml.safe_dump(manifest))
    return folder


@pytest.fixture(scope="module")
def down_service():
    """A self-hosted LibreTranslate that is down: every request gets 503."""
    with translation_service_down() as url:
        yield {"LIBRE_URL": url, "LIBRE_API_KEY": "key", "DUB_TRANSLATE_RETRIES": "1"}


def status(ads: Path, db: str, *args: str) -> dict[tuple[str, str], dict]:
    result = dub("status", str(ads / "ads.yaml"), "--db", db, "--json", *args)
    assert result.returncode == 0, result.stderr
    (cells,) = json.loads(result.stdout).values()
    return {(c["item"], c["lang"]): c for c in cells}


def jobs(db: str) -> list[dict]:
    result = dub("list", "--db", db, "--json", "--limit", "1000")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def stage_runs(db: str, job: int) -> list[dict]:
    result = dub("show", str(job), "--db", db, "--json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)["stages"]


@pytest.fixture(scope="module")
def first(prefect_api, ads, down_service, databases):
    """The first run of the catalog, on SQLite."""
    db = databases.new_url()
    # An option given on the command line: later runs, `dub status` and `dub export` given
    # no options judge staleness with it too (were it forgotten, everything would be stale).
    result = dub("catalog", str(ads / "ads.yaml"), "--out", str(ads / "out"), "--set", "max_speed=1.25", "--db", db,
                 "--json", env=down_service)
    return result, db


def test_every_item_is_delivered_and_a_failing_item_does_not_stop_the_others(first, ads):
    result, db = first
    assert result.returncode == 1, result.stderr  # spot-d failed
    report = json.loads(result.stdout)
    rows = {(r["item"], r["language"]): r for r in report["rows"]}
    for name, (start, end) in CLIPS.items():
        for lang in LANGS:
            row = rows[(name, lang)]
            assert row["status"] == "dubbed", row
            video = Path(row["output"])
            assert video == ads / "out" / name / f"{name}.{lang}.mp4"
            assert abs(float(ffprobe(video)["format"]["duration"]) - (end - start)) < 0.1
    for lang in LANGS:
        assert rows[("spot-d", lang)]["status"] == "failed"
        assert "libre" in rows[("spot-d", lang)]["error"]
    assert not list((ads / "out").glob("spot-d/*.mp4"))
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterName

    with get_client(sync_client=True) as client:  # what the Prefect UI shows of the run
        (run,) = [r for r in client.read_flow_runs(flow_run_filter=FlowRunFilter(
            name=FlowRunFilterName(any_=["catalog ads.yaml"]))) if str(r.id) == report["flow_run"]]
    assert (run.state.type.value, run.state.name) == ("FAILED", "Partial")
    assert run.state.message.startswith("ads.yaml: 6 dubbed, 2 failed; spot-d es: ")
    cells = status(ads, db)
    assert {key: c["state"] for key, c in cells.items()} == {
        **{(name, lang): "done" for name in CLIPS for lang in LANGS},
        ("spot-d", "es"): "failed", ("spot-d", "fr"): "failed"}


def test_an_unchanged_catalog_redoes_nothing(first, ads, down_service):
    _, db = first
    before = len(jobs(db))
    result = dub("catalog", str(ads / "ads.yaml"), "--out", str(ads / "out"), "--db", db, "--only-stale", "--json",
                 env=down_service)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert {r["status"] for r in report["rows"] if r["item"] != "spot-d"} == {"up to date"}
    assert len(jobs(db)) == before  # no job, so no stage at all


def test_the_delivery_manifest_lists_each_delivered_file(first, ads):
    _, db = first
    result = dub("export", str(ads / "ads.yaml"), "--out", str(ads / "delivery.csv"), "--db", db)
    assert result.returncode == 0, result.stderr
    rows = list(csv.DictReader((ads / "delivery.csv").open()))
    assert [(r["item"], r["language"]) for r in rows] == [(name, lang) for name in CLIPS for lang in LANGS]
    for row in rows:
        assert row["sha256"] == file_hash(row["file"])
        assert float(row["duration"]) == pytest.approx(CLIPS[row["item"]][1] - CLIPS[row["item"]][0], abs=0.1)
        assert row["job"] and row["date"]
    as_json = ads / "ads.json"  # the same manifest in JSON: the list must not replace it
    as_json.write_text(json.dumps(yaml.safe_load((ads / "ads.yaml").read_text())))
    refused = dub("export", str(as_json), "--out", str(as_json), "--db", db)
    assert refused.returncode == 2 and "would replace the manifest" in refused.stderr, refused.stderr


@pytest.fixture()
def own_catalog(first, ads, down_service, databases, tmp_path) -> tuple[Path, str]:
    """A copy of the clips and manifest, caught up in a catalog of its own (every stage is
    in the stage cache already): for a test that edits its inputs, leaving `ads` as it is."""
    folder = tmp_path / "ads"
    shutil.copytree(ads / "videos", folder / "videos")
    shutil.copy(ads / "ads.yaml", folder / "ads.yaml")
    db = databases.new_url()
    result = dub("catalog", str(folder / "ads.yaml"), "--out", str(folder / "out"), "--set", "max_speed=1.25",
                 "--db", db, "--json", env=down_service)
    assert result.returncode == 1, result.stderr  # spot-d fails, as in `first`
    assert {r["status"] for r in json.loads(result.stdout)["rows"] if r["item"] != "spot-d"} == {"dubbed"}
    return folder, db


def test_a_changed_script_makes_exactly_its_language_stale_and_only_it_is_redone(own_catalog, down_service):
    ads, db = own_catalog
    script = ads / "videos" / "spot-b.es.srt"
    cues = read_subtitles(script)
    write_subtitles([Segment(c.start, c.end, c.text.replace("tiempo", "mucho tiempo")) for c in cues], script)
    cells = status(ads, db)
    stale = {key: c["why"] for key, c in cells.items() if c["state"] == "stale"}
    assert stale == {("spot-b", "es"): "approved translation changed"}
    old = cells[("spot-b", "fr")]

    result = dub("catalog", str(ads / "ads.yaml"), "--out", str(ads / "out"), "--db", db, "--only-stale", "--json",
                 env=down_service)
    assert result.returncode == 0, result.stderr
    rows = {(r["item"], r["language"]): r for r in json.loads(result.stdout)["rows"]}
    assert rows[("spot-b", "es")]["status"] == "dubbed"
    assert {key for key, r in rows.items() if r["status"] == "dubbed"} == {("spot-b", "es")}
    runs = stage_runs(db, rows[("spot-b", "es")]["job"])
    worked = {(r["stage"], r["lang"]) for r in runs if r["status"] == "done"}
    assert ("synthesize", "es") in worked and not any(lang == "fr" for _, lang in worked), worked
    assert "mucho tiempo" in (ads / "out" / "spot-b" / "spot-b.es.srt").read_text()
    mkv = ffprobe(ads / "out" / "spot-b" / "spot-b.dubbed.mkv")  # the multi-track file keeps French
    assert [s["tags"]["language"] for s in mkv["streams"] if s["codec_type"] == "audio"] == ["eng", "spa", "fre"]
    after = status(ads, db)
    assert after[("spot-b", "es")]["state"] == "done"
    assert after[("spot-b", "fr")]["path"] == old["path"]


def test_a_changed_source_makes_its_item_stale(own_catalog):
    ads, db = own_catalog
    video = ads / "videos" / "spot-c.mp4"
    louder = ads / "spot-c.louder.mp4"
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-i", str(video), "-c:v", "copy", "-af", "volume=1.5",
                    str(louder)], check=True, timeout=120)
    os.replace(louder, video)
    cells = status(ads, db, "--only", "stale")
    assert {key: c["why"] for key, c in cells.items()} == {("spot-c", lang): "source changed" for lang in LANGS}


def test_manifest_errors_are_reported_per_row_all_at_once(prefect_api, ads, tmp_path, databases):
    bad = tmp_path / "bad.csv"
    bad.write_text("id,input,langs\n"
                   f"ok,{ads / 'videos' / 'spot-a.mp4'},es\n"
                   "ok,missing.mp4,es\n"
                   f"third,{ads / 'videos' / 'spot-b.mp4'},xx-nope\n")
    result = dub("catalog", str(bad), "--out", str(tmp_path / "out"), "--db", databases.new_url())
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if line.startswith("dub: error:")]
    assert len(lines) >= 3, result.stderr
    assert any("row 3" in line and "id" in line for line in lines), lines
    assert any("row 3" in line and "missing.mp4" in line for line in lines), lines
    assert any("row 4" in line and "langs" in line for line in lines), lines
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "out").exists()


@pytest.mark.postgres
def test_the_catalog_on_postgresql_reads_as_on_sqlite(first, ads, down_service, postgres, tmp_path):
    """The same catalog run into PostgreSQL (its stages cached by now): the same rows,
    states and delivery list as on SQLite."""
    _, sqlite_db = first
    db = postgres.new_url()
    result = dub("catalog", str(ads / "ads.yaml"), "--out", str(tmp_path / "out"), "--set", "max_speed=1.25",
                 "--db", db, "--json", env=down_service)
    assert result.returncode == 1, result.stderr  # spot-d failed
    rows = {(r["item"], r["language"]): r["status"] for r in json.loads(result.stdout)["rows"]}
    assert rows == {**{(name, lang): "dubbed" for name in CLIPS for lang in LANGS},
                    ("spot-d", "es"): "failed", ("spot-d", "fr"): "failed"}
    states = {key: (c["state"], c.get("why")) for key, c in status(ads, db).items()}
    assert states == {key: (c["state"], c.get("why")) for key, c in status(ads, sqlite_db).items()}
    assert len(jobs(db)) == len(jobs(sqlite_db))
    exported = dub("export", str(ads / "ads.yaml"), "--out", str(tmp_path / "delivery.csv"), "--db", db)
    assert exported.returncode == 0, exported.stderr
    listed = list(csv.DictReader((tmp_path / "delivery.csv").open()))
    assert [(r["item"], r["language"]) for r in listed] == [(name, lang) for name in CLIPS for lang in LANGS]
    assert all(r["sha256"] == file_hash(r["file"]) for r in listed)


@pytest.mark.postgres
def test_two_catalog_runs_at_once_on_postgresql_dub_each_item_once(prefect_api, ads, tmp_path_factory, postgres):
    """Two `dub catalog` processes on one PostgreSQL catalog (the SQLite write lock is
    covered in test_deliveries)."""
    url = postgres.new_url()
    folder = tmp_path_factory.mktemp("race")
    manifest = {"defaults": {"langs": list(LANGS), "voice": "espeak", "lipsync": "off"},
                "items": [{"id": name, "input": str(ads / "videos" / f"{name}.mp4")} for name in ("spot-a", "spot-b")]}
    (folder / "race.yaml").write_text(yaml.safe_dump(manifest))
    runners = [subprocess.Popen([sys.executable, "-m", "polydub.cli", "catalog", str(folder / "race.yaml"),
                                 "--out", str(folder / "out"), "--db", url, "--json"],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                env={**os.environ, "DUB_CACHE_DIR": scratch_dir("race-cache-")})
               for _ in range(2)]
    reports = []
    for runner in runners:
        out, err = runner.communicate(timeout=600)
        assert runner.returncode == 0, err
        reports.append(json.loads(out))
    dubbed = [(r["item"], r["language"]) for report in reports for r in report["rows"] if r["status"] == "dubbed"]
    assert sorted(dubbed) == sorted((name, lang) for name in ("spot-a", "spot-b") for lang in LANGS)
    engine = sa.create_engine(url.replace("postgresql://", "postgresql+psycopg://", 1))
    with engine.connect() as connection:
        started = connection.execute(sa.text("SELECT COUNT(*) FROM jobs WHERE status <> 'rejected'")).scalar_one()
        held = connection.execute(sa.text("SELECT COUNT(*) FROM deliveries WHERE owner IS NOT NULL")).scalar_one()
    engine.dispose()
    assert started == 2  # one job per item, whichever runner got it
    assert held == 0
