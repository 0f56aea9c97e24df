"""The catalog on a real SQLite file and on the local PostgreSQL server."""

from __future__ import annotations

import hashlib
import json
import socket
import shutil
import subprocess
import sys
import textwrap
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta, timezone

import pytest
import sqlalchemy as sa
from alembic.script import ScriptDirectory

from polydub.errors import InputError
from polydub.storage import Catalog
from polydub.storage.catalog import MIGRATIONS_DIR, this_machine
from tests.databases import databases  # noqa: F401 - the fixture

TABLES = {"sources", "jobs", "outputs", "stage_runs", "alembic_version"}
SUBPROCESS_TIMEOUT_S = 60


@pytest.fixture(scope="module")
def catalog_url(databases):
    return databases.new_url()


@pytest.fixture(scope="module")
def catalog(catalog_url):
    opened = Catalog(catalog_url)
    yield opened
    opened.close()


def raw_engine(url: str) -> sa.Engine:
    """An engine of our own, to look at what the catalog wrote."""
    return sa.create_engine(url.replace("postgresql://", "postgresql+psycopg://", 1))


def count_rows(url: str) -> dict[str, int]:
    engine = raw_engine(url)
    with engine.connect() as connection:
        counts = {table: connection.execute(sa.text(f"SELECT COUNT(*) FROM {table}")).scalar_one() for table in TABLES}
    engine.dispose()
    return counts


def new_hash() -> str:
    return uuid.uuid4().hex * 2  # 64 hex digits, like a sha256


def utc(iso: str) -> datetime:
    value = datetime.fromisoformat(iso)
    assert value.utcoffset() == timedelta(0), iso
    return value


def run_python(code: str, *args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(code), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def finish(process: subprocess.Popen) -> str:
    out, err = process.communicate(timeout=SUBPROCESS_TIMEOUT_S)
    assert process.returncode == 0, err
    return out


def test_migrations_create_the_tables(catalog, catalog_url):
    engine = raw_engine(catalog_url)
    inspector = sa.inspect(engine)
    assert TABLES <= set(inspector.get_table_names())
    job_columns = {column["name"] for column in inspector.get_columns("jobs")}
    assert {"source_id", "langs", "params", "out_dir", "status", "consent", "created_at", "finished_at"} <= job_columns
    stage_columns = {column["name"] for column in inspector.get_columns("stage_runs")}
    assert {"stage", "lang", "status", "cache_key", "backend", "model_version", "seconds", "error", "detail"} <= stage_columns
    unique = [set(c["column_names"]) for c in inspector.get_unique_constraints("sources")]
    assert {"content_hash"} in unique
    head = ScriptDirectory(str(MIGRATIONS_DIR)).get_current_head()
    with engine.connect() as connection:
        versions = connection.execute(sa.text("SELECT version_num FROM alembic_version")).scalars().all()
        if engine.dialect.name == "sqlite":
            assert connection.exec_driver_sql("PRAGMA journal_mode").scalar_one() == "wal"
    engine.dispose()
    assert versions == [head]


def test_the_head_revision_the_catalog_checks_is_the_newest_migration():
    from polydub.storage.catalog import HEAD_REVISION

    assert HEAD_REVISION == ScriptDirectory(str(MIGRATIONS_DIR)).get_current_head()


def test_reopening_does_not_migrate_or_duplicate(catalog, catalog_url):
    catalog.upsert_source("/videos/reopen.mp4", new_hash(), 12.0, 25.0, True)
    before = count_rows(catalog_url)
    for _ in range(2):
        Catalog(catalog_url).close()
    after = count_rows(catalog_url)
    assert after == before
    assert after["alembic_version"] == 1


@pytest.mark.slow
def test_processes_opening_a_new_catalog_together_migrate_once(databases):
    url = databases.new_url()
    content_hash = new_hash()
    code = """
        import sys
        from polydub.storage import Catalog
        print(Catalog(sys.argv[1]).upsert_source("/videos/race.mp4", sys.argv[2], 3.0, None, False))
    """
    processes = [run_python(code, url, content_hash) for _ in range(3)]
    ids = {finish(process).strip() for process in processes}
    assert len(ids) == 1
    counts = count_rows(url)
    assert counts["alembic_version"] == 1
    assert counts["sources"] == 1


def test_upsert_source_is_idempotent_on_content_hash(catalog, catalog_url):
    content_hash = new_hash()
    first = catalog.upsert_source("/videos/ad.mp4", content_hash, 30.0, 29.97, True)
    again = catalog.upsert_source("/archive/ad-copy.mp4", content_hash, 30.0, 29.97, True)
    other = catalog.upsert_source("/videos/ad.mp4", new_hash(), 30.0, 29.97, True)
    assert again == first
    assert other != first
    engine = raw_engine(catalog_url)
    with engine.connect() as connection:
        rows = connection.execute(
            sa.text("SELECT id, path FROM sources WHERE content_hash = :h"), {"h": content_hash}
        ).all()
    engine.dispose()
    assert [tuple(row) for row in rows] == [(first, "/videos/ad.mp4")]  # where it was seen first


def test_each_job_keeps_its_own_input_path_and_flow_run(catalog):
    """The same bytes under two names: each job shows the path it was given."""
    content_hash = new_hash()
    first = catalog.upsert_source("/videos/ad.mp4", content_hash, 30.0, 25.0, True)
    job_a = catalog.create_job(first, ["es"], {}, "/out/a", input_path="/videos/ad.mp4",
                               flow_run_id="0b8c1a2e-0000-4000-8000-000000000001", deployment="dub-video/dub-video")
    again = catalog.upsert_source("/archive/ad-copy.mp4", content_hash, 30.0, 25.0, True)
    job_b = catalog.create_job(again, ["fr"], {}, "/out/b", input_path="/archive/ad-copy.mp4")
    assert catalog.show_job(job_a)["input"] == "/videos/ad.mp4"
    assert catalog.show_job(job_b)["input"] == "/archive/ad-copy.mp4"
    assert catalog.show_job(job_a)["deployment"] == "dub-video/dub-video"
    assert catalog.job_for_flow_run("0b8c1a2e-0000-4000-8000-000000000001") == job_a
    listed = {j["id"]: j["source"] for j in catalog.list_jobs(limit=1000, input="ad")}
    assert listed[job_a] == "/videos/ad.mp4" and listed[job_b] == "/archive/ad-copy.mp4"


def test_a_refused_job_is_recorded_with_its_reason(catalog):
    job = catalog.create_job(None, ["es"], {"input": "/missing.mp4"}, "", input_path="/missing.mp4",
                             status="rejected", error="/missing.mp4: no such file")
    shown = catalog.show_job(job)
    assert shown["status"] == "rejected" and shown["error"] == "/missing.mp4: no such file"
    assert shown["source"] is None and shown["finished_at"] is not None
    assert [j["id"] for j in catalog.list_jobs(limit=1000, status="rejected")] == [job]
    assert job not in [j["id"] for j in catalog.list_jobs(limit=1000, status="done")]


def test_a_whole_job_reads_back(catalog):
    content_hash = new_hash()
    source_id = catalog.upsert_source("/videos/talk.mp4", content_hash, 42.5, 25.0, True)
    consent = "voice and likeness: Ana Ruiz, signed release 2025-03-01, ads in es/fr"
    params = {"review": False, "max_speedup": 1.25}
    job_id = catalog.create_job(source_id, ["es", "fr"], params, "/out/talk", consent=consent)

    planned = [  # stage, lang, cache key, final status, error
        ("probe", None, "k-probe", "done", None),
        ("transcribe", None, "k-asr", "cached", None),
        ("translate", "es", "k-tr-es", "done", None),
        ("translate", "fr", "k-tr-fr", "failed", "translation service rate-limited"),
        ("synthesize", "es", "k-tts-es", "done", None),
        ("lipsync", "es", None, "skipped", None),
    ]
    for stage, lang, key, status, error in planned:
        run_id = catalog.start_stage(job_id, stage, lang, key, backend="espeak" if stage == "synthesize" else None)
        if stage == "transcribe":
            time.sleep(0.05)
        catalog.finish_stage(
            run_id, status, error=error, detail={"lines": 12},
            model_version="espeak-ng 1.51" if stage == "synthesize" else None,
        )
    outputs = [("es", "video"), ("es", "srt"), ("es", "vtt"), (None, "multitrack"), (None, "report")]
    for lang, kind in outputs:
        catalog.add_output(job_id, lang, kind, f"/out/talk/talk.{lang or 'all'}.{kind}", 42.5 if kind == "video" else None)
    catalog.finish_job(job_id, "partial")
    later_job = catalog.create_job(source_id, ["de"], {}, "/out/talk-de")

    shown = catalog.show_job(job_id)
    json.dumps(shown)  # what `dub show --json` prints
    assert shown["id"] == job_id
    assert shown["status"] == "partial"
    assert shown["consent"] == consent
    assert shown["langs"] == ["es", "fr"]
    assert shown["params"] == params
    assert shown["out_dir"] == "/out/talk"
    assert utc(shown["finished_at"]) >= utc(shown["created_at"])
    assert shown["source"]["path"] == "/videos/talk.mp4"
    assert shown["source"]["content_hash"] == content_hash
    assert shown["source"]["duration"] == 42.5 and shown["source"]["fps"] == 25.0 and shown["source"]["has_video"] is True

    stages = shown["stages"]
    assert [(s["stage"], s["lang"], s["cache_key"], s["status"], s["error"]) for s in stages] == planned
    for stage in stages:
        assert stage["seconds"] >= 0
        assert utc(stage["started_at"]) >= utc(shown["created_at"])
    assert stages[1]["seconds"] >= 0.05  # transcribe slept that long between start and finish
    synthesize = stages[4]
    assert (synthesize["backend"], synthesize["model_version"]) == ("espeak", "espeak-ng 1.51")
    assert [(o["lang"], o["kind"]) for o in shown["outputs"]] == outputs
    assert shown["outputs"][0]["duration"] == 42.5

    listed = catalog.list_jobs()
    json.dumps(listed)
    assert [job["id"] for job in listed[:2]] == [later_job, job_id]  # newest first
    assert listed[1]["source"] == "/videos/talk.mp4"
    assert listed[1]["status"] == "partial" and listed[0]["status"] == "running"
    assert listed[1]["n_outputs"] == len(outputs) and listed[0]["n_outputs"] == 0
    assert listed[1]["langs"] == ["es", "fr"]
    assert listed[0]["finished_at"] is None
    assert utc(listed[0]["created_at"]) >= utc(listed[1]["created_at"])
    assert len(catalog.list_jobs(limit=1)) == 1


def test_a_deliverable_is_recorded_with_its_size_and_digest(catalog, tmp_path):
    job_id = catalog.create_job(None, ["es"], {}, str(tmp_path))
    video = tmp_path / "talk.es.mp4"
    video.write_bytes(b"not really a video, but bytes all the same")
    catalog.add_output(job_id, "es", "video", str(video), 3.0)
    catalog.add_output(job_id, None, "report", str(tmp_path / "gone.report.json"))  # unreadable: no digest
    recorded = catalog.show_job(job_id)["outputs"]
    assert recorded[0]["size"] == video.stat().st_size
    assert recorded[0]["sha256"] == hashlib.sha256(video.read_bytes()).hexdigest()
    assert (recorded[1]["size"], recorded[1]["sha256"]) == (None, None)


def test_threads_record_stages_at_once(catalog):
    source_id = catalog.upsert_source("/videos/many.mp4", new_hash(), 20.0, 30.0, True)
    langs = [f"l{i}" for i in range(8)]
    job_id = catalog.create_job(source_id, langs, {}, "/out/many")

    def dub_language(lang: str) -> list[int]:
        run_ids = []
        for stage in ("translate", "synthesize", "mix", "lipsync", "assemble"):
            run_id = catalog.start_stage(job_id, stage, lang, f"{stage}-{lang}")
            catalog.finish_stage(run_id, "done", detail={"lang": lang}, backend=f"{stage}-backend")
            run_ids.append(run_id)
        catalog.add_output(job_id, lang, "video", f"/out/many/many.{lang}.mp4", 20.0)
        return run_ids

    with ThreadPoolExecutor(max_workers=len(langs)) as pool:
        run_ids = [run_id for ids in pool.map(dub_language, langs) for run_id in ids]
    catalog.finish_job(job_id, "done")

    shown = catalog.show_job(job_id)
    assert len(set(run_ids)) == len(langs) * 5
    assert sorted(s["id"] for s in shown["stages"]) == sorted(run_ids)
    assert all(s["status"] == "done" and s["seconds"] >= 0 for s in shown["stages"])
    assert all(s["backend"] == f"{s['stage']}-backend" for s in shown["stages"])
    assert sorted(o["lang"] for o in shown["outputs"]) == langs
    assert shown["status"] == "done"


def test_mark_interrupted_closes_rows_of_dead_processes(catalog, catalog_url):
    source_id = catalog.upsert_source("/videos/crash.mp4", new_hash(), 8.0, 24.0, True)
    live_job = catalog.create_job(source_id, ["es"], {}, "/out/live")
    live_run = catalog.start_stage(live_job, "transcribe", None, "k-live")
    crashing = """
        import os, sys
        from polydub.storage import Catalog
        catalog = Catalog(sys.argv[1])
        job = catalog.create_job(int(sys.argv[2]), ["fr"], {}, "/out/crashed")
        run = catalog.start_stage(job, "lipsync", "fr", "k-crash")
        print(job, run, flush=True)
        os._exit(9)  # dies mid-stage, like a killed worker
    """
    process = run_python(crashing, catalog_url, str(source_id))
    out, err = process.communicate(timeout=SUBPROCESS_TIMEOUT_S)
    assert process.returncode == 9, err
    dead_job, dead_run = map(int, out.split())
    assert catalog.show_job(dead_job)["stages"][0]["status"] == "running"

    [changed] = catalog.mark_interrupted()
    assert changed["id"] == dead_job and changed["flow_run_id"] is None
    assert catalog.mark_interrupted() == []

    dead = catalog.show_job(dead_job)
    assert dead["status"] == "interrupted" and dead["finished_at"] is not None
    assert dead["error"].startswith("interrupted: its process (") and dead["error"].endswith(") is gone")
    assert dead["owner"].split(":")[0] == this_machine() and this_machine().startswith(socket.gethostname() + "#")
    [stage] = dead["stages"]
    assert (stage["id"], stage["status"], stage["error"]) == (dead_run, "interrupted", dead["error"])
    assert stage["finished_at"] is not None
    live = catalog.show_job(live_job)
    assert live["status"] == "running"
    assert [s["status"] for s in live["stages"]] == ["running"]  # this process is alive

    # A row held by another host's worker cannot be judged from here: left alone.
    remote_run = catalog.start_stage(live_job, "lipsync", "es", "k-remote")
    engine = raw_engine(catalog_url)
    with engine.begin() as connection:
        connection.execute(
            sa.text("UPDATE stage_runs SET owner = 'gpu-worker-7:4242:99' WHERE id = :id"), {"id": remote_run}
        )
    engine.dispose()
    assert catalog.mark_interrupted() == []

    catalog.finish_stage(live_run, "done")
    catalog.finish_stage(remote_run, "done")
    catalog.finish_job(live_job, "done")
    assert [s["status"] for s in catalog.show_job(live_job)["stages"]] == ["done", "done"]


def test_a_live_job_in_another_container_with_the_same_hostname_is_not_reaped(catalog, catalog_url):
    """Two containers often share a hostname and their pids overlap: a job whose process
    runs in another pid namespace is judged by its heartbeat, never by a pid looked up here."""
    if shutil.which("unshare") is None or subprocess.run(
            ["unshare", "--pid", "--fork", "--mount-proc", "true"], capture_output=True, timeout=30).returncode:
        pytest.skip("cannot make a pid namespace here (unshare needs CAP_SYS_ADMIN)")
    source_id = catalog.upsert_source("/videos/container.mp4", new_hash(), 8.0, 24.0, True)
    elsewhere = """
        import os, sys
        from polydub.storage import Catalog
        catalog = Catalog(sys.argv[1])
        job = catalog.create_job(int(sys.argv[2]), ["es"], {}, "/out/container")
        print(job, os.getpid(), flush=True)
        sys.stdin.read()  # at work until the test closes its input
    """
    process = subprocess.Popen(["unshare", "--pid", "--fork", "--mount-proc", sys.executable, "-c",
                                textwrap.dedent(elsewhere), catalog_url, str(source_id)],
                               stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        job, pid = map(int, process.stdout.readline().split())
        owner = catalog.show_job(job)["owner"]
        assert pid < 10 and owner.split(":")[:2] == [owner.split(":")[0], str(pid)]  # pid 1-2 in its namespace
        assert owner.split(":")[0] != this_machine() and owner.startswith(socket.gethostname() + "#")
        assert catalog.mark_interrupted() == []  # no pid of ours is asked about it
        assert catalog.show_job(job)["status"] == "running"
    finally:
        process.communicate("", timeout=SUBPROCESS_TIMEOUT_S)
    [reaped] = catalog.mark_interrupted(heartbeat_timeout=0.0)  # its heartbeat says the rest
    assert reaped["id"] == job and "no heartbeat from" in reaped["error"]


def test_a_silent_job_of_another_host_is_interrupted_after_the_heartbeat_timeout(catalog, catalog_url):
    """A shared catalog: a worker on another host cannot be asked whether it lives; its
    heartbeat says so, and a job silent for longer than the timeout reads interrupted."""
    source_id = catalog.upsert_source("/videos/remote.mp4", new_hash(), 8.0, 24.0, True)
    quiet, beating = (catalog.create_job(source_id, ["es"], {}, f"/out/{n}") for n in ("quiet", "beating"))
    run = catalog.start_stage(quiet, "lipsync", "es", "k-quiet")
    engine = raw_engine(catalog_url)
    with engine.begin() as connection:
        connection.execute(sa.text("UPDATE jobs SET owner = 'gpu-worker-9:77:5', heartbeat_at = :old "
                                   "WHERE id IN (:a, :b)"),
                           {"old": datetime.now(timezone.utc) - timedelta(seconds=600), "a": quiet, "b": beating})
        connection.execute(sa.text("UPDATE stage_runs SET owner = 'gpu-worker-9:77:5' WHERE id = :id"), {"id": run})
    engine.dispose()
    catalog.heartbeat(beating)  # this one's process is still at work
    assert catalog.mark_interrupted() == []  # no timeout: other hosts are left alone
    assert [j["id"] for j in catalog.mark_interrupted(heartbeat_timeout=120)] == [quiet]
    job = catalog.show_job(quiet)
    assert job["status"] == "interrupted" and job["error"].startswith("interrupted: no heartbeat from gpu-worker-9 pid 77")
    assert [s["status"] for s in job["stages"]] == ["interrupted"]
    assert catalog.show_job(beating)["status"] == "running"
    catalog.finish_job(beating, "done")


def test_show_job_of_a_missing_id(catalog):
    with pytest.raises(InputError, match=r"^no job 987654 in the catalog$"):
        catalog.show_job(987654)


def test_bad_statuses_and_kinds_are_refused(catalog):
    source_id = catalog.upsert_source("/videos/bad.mp4", new_hash(), 1.0, None, False)
    job_id = catalog.create_job(source_id, ["es"], {}, "/out/bad")
    run_id = catalog.start_stage(job_id, "mix", "es", None)
    with pytest.raises(ValueError, match="stage status"):
        catalog.finish_stage(run_id, "ok")
    with pytest.raises(ValueError, match="output kind"):
        catalog.add_output(job_id, "es", "gif", "/out/bad/x.gif")
    with pytest.raises(ValueError, match="job status"):
        catalog.finish_job(job_id, "running")
    with pytest.raises(ValueError, match="JSON"):
        catalog.finish_stage(run_id, "done", detail={"when": object()})
    with pytest.raises(InputError, match="^no source 987654 in the catalog$"):
        catalog.create_job(987654, ["es"], {}, "/out/none")
    assert catalog.show_job(job_id)["stages"][0]["status"] == "running"
    catalog.finish_stage(run_id, "failed", error="ffmpeg exited 1", detail={"stderr": "x" * 100_000})
    catalog.finish_job(job_id, "failed")
    [stage] = catalog.show_job(job_id)["stages"]
    assert stage["status"] == "failed" and stage["error"] == "ffmpeg exited 1"
    assert "exceeds" in stage["detail"]["omitted"]  # a huge detail is noted, never stored or fatal


def bad_urls(tmp_path):
    not_a_database = tmp_path / "notes.db"
    not_a_database.write_bytes(b"these are not the bytes of a SQLite database" * 100)
    a_file = tmp_path / "a-file"
    a_file.write_text("x")
    return {
        "postgresql://postgres:s3cret@127.0.0.1:1/catalog": "refused",
        "nosuchdb://catalog": "nosuchdb",
        "not a url": "not a database URL",
        f"sqlite:///{not_a_database}": "not a database",
        f"sqlite:///{a_file}/catalog.db": "a-file",
        f"sqlite:///{tmp_path}": "a folder, not a database file",
    }


def test_bad_urls_are_input_errors(tmp_path):
    for url, reason in bad_urls(tmp_path).items():
        with pytest.raises(InputError) as raised:
            Catalog(url)
        message = str(raised.value)
        assert "\n" not in message
        assert message.startswith("cannot open catalog "), message
        assert reason.lower() in message.lower(), message
        assert "s3cret" not in message


def test_default_catalog_lives_under_dub_home(tmp_path, monkeypatch):
    home = tmp_path / "home" / "nested"
    monkeypatch.setenv("DUB_HOME", str(home))
    monkeypatch.delenv("DUB_DATABASE_URL", raising=False)
    catalog = Catalog()
    source_id = catalog.upsert_source("/videos/x.mp4", new_hash(), 1.0, None, False)
    catalog.close()
    assert (home / "catalog.db").is_file()
    assert count_rows(f"sqlite:///{home / 'catalog.db'}")["sources"] == 1 == source_id


def test_every_entry_point_refuses_an_unusable_catalog_before_any_work(tmp_path):
    """`dub INPUT`, `dub list`, `dub status` and `dub catalog` all refuse a catalog they
    cannot open with the same line, exit 2, before Prefect is reached or anything made."""
    from tests import inprocess
    from tests.conftest import EXAMPLE

    video = tmp_path / "spot" / EXAMPLE.name
    video.parent.mkdir()
    for f in EXAMPLE.parent.glob(f"{EXAMPLE.stem}.*"):
        shutil.copy(f, video.parent / f.name)
    manifest = tmp_path / "ads.csv"
    manifest.write_text(f"id,input,langs\nspot,{video},es\n")
    out = tmp_path / "out"
    for url, reason in bad_urls(tmp_path).items():
        for args in ([str(video), "--langs", "es", "--voice", "espeak", "--out", str(out)], ["list"],
                     ["status", str(manifest)], ["catalog", str(manifest), "--out", str(out)]):
            result = inprocess.dub(*args, "--db", url)
            lines = result.stderr.strip().splitlines()
            assert result.returncode == 2, (args, url, result.stderr)
            assert len(lines) == 1 and lines[0].startswith("dub: error: cannot open catalog "), (args, result.stderr)
            assert reason.lower() in lines[0].lower() and "s3cret" not in result.stderr + result.stdout
            assert not out.exists(), args  # nothing made


def test_a_catalog_made_before_reviews_upgrades_with_its_rows(databases):
    """A catalog at revision 0004 with a job, an output and a delivery in it opens at the
    newest revision with every row kept, and takes the new states (reviews, 'awaiting
    review', 'timeline' outputs, 'rejected' deliveries)."""
    from alembic import command

    from polydub.storage import deliveries, reviews
    from polydub.storage.catalog import alembic_config, open_engine

    url = databases.new_url()
    engine = open_engine(url)
    config = alembic_config()
    with engine.connect() as connection, connection.begin():
        config.attributes["connection"] = connection
        command.upgrade(config, "0004")
        connection.execute(sa.text("INSERT INTO jobs (langs, params, out_dir, status, created_at) "
                                   "VALUES ('[\"es\"]', '{}', '/o', 'done', CURRENT_TIMESTAMP)"))
        job = connection.execute(sa.text("SELECT id FROM jobs")).scalar_one()
        connection.execute(sa.text("INSERT INTO outputs (job_id, lang, kind, path, created_at) "
                                   "VALUES (:j, 'es', 'video', '/o/a.es.mp4', CURRENT_TIMESTAMP)"), {"j": job})
        connection.execute(sa.text("INSERT INTO deliveries (manifest, item, lang, status, updated_at) "
                                   "VALUES ('m', 'a', 'es', 'done', CURRENT_TIMESTAMP)"))
    engine.dispose()

    cat = Catalog(url)
    shown = cat.show_job(job)
    assert shown["status"] == "done" and [o["path"] for o in shown["outputs"]] == ["/o/a.es.mp4"]
    assert [(r.item, r.status) for r in deliveries.records(cat, "m")] == [("a", "done")]
    cat.add_output(job, "es", "timeline", "/o/a.es.timeline.png")
    reviews.offer(cat, job, "es", [], kind=reviews.FINAL, detail={"outputs": {}})
    cat.finish_job(job, "awaiting review")
    deliveries.finish(cat, "m", "a", "es", "rejected", error="no")
    assert cat.show_job(job)["status"] == "awaiting review"
    assert [r.kind for r in reviews.of_job(cat, job)] == ["final"]
    cat.close()
