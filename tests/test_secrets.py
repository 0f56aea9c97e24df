"""Planted secrets never land anywhere: a catalog password in --db and a provider key
that travels in request URLs, searched for in every file the run touched (report,
deliverables, cache, polydub's home, Prefect's home and database, the catalog, stdout,
stderr). The same run checks that what dub writes is readable by its owner only and
that cues running past the end of the source do not lengthen the deliverables."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import sqlalchemy as sa

from tests.conftest import EXAMPLE
from tests.probe import ffprobe
from tests.databases import POSTGRES_ADMIN_URL, postgres_unreachable
from tests.test_provider_faults import Service

PASSWORD = "planted-db-password-5e2a"
KEY = "planted-provider-key-91b7"
FRAME = 1 / 25
pytestmark = [pytest.mark.slow, pytest.mark.postgres]


@pytest.fixture
def secret_catalog():
    """A fresh PostgreSQL database, reached by a URL holding a password (the server
    trusts local connections, so any password opens it)."""
    if reason := postgres_unreachable():
        pytest.skip(f"PostgreSQL unreachable: {reason}")
    name = f"polydub_test_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(POSTGRES_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.exec_driver_sql(f'CREATE DATABASE "{name}"')
    yield f"postgresql://postgres:{PASSWORD}@127.0.0.1:5432/{name}"
    with admin.connect() as connection:
        connection.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    admin.dispose()


def files_holding(root: Path, secrets: list[str]) -> list[str]:
    hits = []
    for path in root.rglob("*"):
        if path.is_file() and not path.is_symlink():
            data = path.read_bytes()
            hits += [f"{path}: {s}" for s in secrets if s.encode() in data]
    return hits


def test_no_secret_anywhere_kept_files_private_deliverables_as_the_umask_says(prefect_api, tmp_path, secret_catalog):
    from prefect.settings import get_current_settings

    video = tmp_path / "spot.mp4"
    shutil.copy(EXAMPLE, video)
    transcript = EXAMPLE.with_suffix(".en.srt").read_text()
    overhang = "\n4\n00:00:09,500 --> 00:00:10,900\nBye!\n"  # ends after the source's 10 s
    (tmp_path / "spot.en.srt").write_text(transcript + overhang)
    (tmp_path / "spot.fr.srt").write_text(EXAMPLE.with_suffix(".fr.srt").read_text() + overhang)
    service = Service([403] * 10)  # refuses the key: the error quotes it, and tracebacks the URL
    home, cache, out = tmp_path / "home", tmp_path / "cache", tmp_path / "out"
    env = {**os.environ, "DUB_HOME": str(home), "DUB_CACHE_DIR": str(cache), "LIBRE_API_KEY": KEY,
           "LIBRE_URL": service.url, "DUB_TRANSLATE_RETRIES": "1", "PREFECT_LOGGING_LEVEL": "INFO"}
    umask = os.umask(0o027)  # the user's: dub's deliverables follow it, what it keeps does not
    try:
        result = subprocess.run([sys.executable, "-m", "polydub.cli", str(video), "--langs", "es,fr",
                                 "--translator", "libre", "--voice", "espeak", "--out", str(out), "--db",
                                 secret_catalog, "--json"], capture_output=True, text=True, timeout=600, env=env)
    finally:
        os.umask(umask)
    service.server.shutdown()
    assert result.returncode == 1, result.stderr
    report = json.loads(result.stdout)
    assert report["languages"]["fr"]["status"] == "done"
    assert "libre" in report["languages"]["es"]["error"]
    assert any(f"api_key={KEY}" in p for p in service.paths)  # the key did travel in the URL

    secrets = [PASSWORD, KEY]
    assert not [s for s in secrets if s in result.stdout or s in result.stderr]
    prefect_db = Path(get_current_settings().server.database.connection_url.get_secret_value().split("///")[-1])
    prefect_home = Path(os.environ["PREFECT_HOME"])
    for root in (tmp_path, prefect_home, prefect_db.parent):
        assert files_holding(root, secrets) == []
    engine = sa.create_engine(secret_catalog.replace("postgresql://", "postgresql+psycopg://"))
    with engine.connect() as connection:
        for table in ("sources", "jobs", "outputs", "stage_runs"):
            dump = " ".join(str(row) for row in connection.exec_driver_sql(f"SELECT * FROM {table}"))
            assert not [s for s in secrets if s in dump], table
    engine.dispose()

    # Owner-only: nothing dub keeps can be read by the group or others; what it delivers is
    # as the user's umask (027) says: the group reads, others do not.
    shared = [str(p) for root in (cache, home) for p in root.rglob("*")
              if stat.S_IMODE(p.lstat().st_mode) & 0o077]
    assert shared == []
    modes = {p.name: stat.S_IMODE(p.lstat().st_mode) for p in [out, *out.rglob("*")]}
    assert modes["out"] == 0o750 and modes["spot.fr.mp4"] == 0o640 and modes["spot.report.json"] == 0o640
    assert set(modes.values()) == {0o750, 0o640}, modes

    # The overhanging cue is clipped: the deliverables are exactly as long as the source.
    length = float(ffprobe(video)["format"]["duration"])
    for deliverable in (out / "spot.fr.mp4", out / "spot.dubbed.mkv"):
        assert abs(float(ffprobe(deliverable)["format"]["duration"]) - length) <= FRAME, deliverable
    assert (out / "spot.fr.srt").read_text().rstrip().endswith("00:00:10,000\nBye!")


def test_the_kept_server_holds_no_catalog_password_or_key(secret_catalog, tmp_path, monkeypatch):
    """A one-off `--db` with a password reaches the job as DUB_DATABASE_URL; the kept Prefect
    server that this `dub` starts outlives it and must not inherit it (nor a translator key)."""
    from polydub import server
    from tests.prefect_stack import seed_database

    seed_database(tmp_path / "home" / "prefect")  # a kept server that ran before: starts in seconds
    monkeypatch.setenv("DUB_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("DUB_DATABASE_URL", secret_catalog)
    monkeypatch.setenv("LIBRE_API_KEY", KEY)
    started = server.start()
    try:
        environ = Path(f"/proc/{started['pid']}/environ").read_bytes()
    finally:
        assert server.stop()
    assert started["started"] and PASSWORD.encode() not in environ and KEY.encode() not in environ
    assert b"PREFECT_HOME=" in environ  # it is the server's environment that was read
