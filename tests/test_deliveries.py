"""Deliveries and claims in the catalog, on SQLite and on the machine's PostgreSQL."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from datetime import timedelta

import pytest
import sqlalchemy as sa

from polydub.storage import Catalog, deliveries
from polydub.storage.catalog import this_machine
from polydub.storage.tables import utcnow
from tests.databases import databases  # noqa: F401 - the fixture

SUBPROCESS_TIMEOUT_S = 120


@pytest.fixture()
def cat(databases):
    opened = Catalog(databases.new_url())
    yield opened
    opened.close()


def test_a_claim_is_all_or_nothing_and_released_with_results(cat):
    assert deliveries.claim(cat, "m", "spot-a", ["es", "fr"], owner=_live_owner())
    assert not deliveries.claim(cat, "m", "spot-a", ["fr", "de"], owner="elsewhere:1:1"), \
        "a live runner holds fr: nothing of spot-a may be taken"
    rows = {(r.item, r.lang): r for r in deliveries.records(cat, "m")}
    assert set(rows) == {("spot-a", "es"), ("spot-a", "fr")}  # de was not created by the refused claim
    assert all(r.status == "queued" and r.held for r in rows.values())
    deliveries.finish(cat, "m", "spot-a", "es", "done", fingerprint="f" * 64, recipe={"source": "x"}, job_id=None,
                      path="/out/spot-a.es.mp4", duration=2.0, sha256="a" * 64)
    deliveries.finish(cat, "m", "spot-a", "fr", "failed", error="translate fr: service down")
    rows = {r.lang: r for r in deliveries.records(cat, "m")}
    assert (rows["es"].status, rows["es"].owner, rows["es"].path) == ("done", None, "/out/spot-a.es.mp4")
    assert (rows["fr"].status, rows["fr"].error) == ("failed", "translate fr: service down")
    assert deliveries.claim(cat, "m", "spot-a", ["es", "fr"], owner="elsewhere:1:1")


def test_a_dead_runner_s_claim_is_taken_over(cat):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True,
                          timeout=SUBPROCESS_TIMEOUT_S).stdout.strip()
    import socket

    gone = f"{this_machine()}:{dead}:1"  # a pid of this machine that no longer runs
    assert deliveries.claim(cat, "m", "spot-b", ["es"], owner=gone)
    assert deliveries.claim(cat, "m", "spot-b", ["es"], owner=_live_owner())


def test_a_silent_runner_of_another_host_is_taken_over_after_the_timeout(cat, monkeypatch):
    assert deliveries.claim(cat, "m", "spot-c", ["es"], owner="other-host:42:7")
    assert not deliveries.claim(cat, "m", "spot-c", ["es"], owner=_live_owner())
    engine = sa.create_engine(cat.url.replace("postgresql://", "postgresql+psycopg://", 1))
    with engine.begin() as connection:
        connection.execute(sa.text("UPDATE deliveries SET heartbeat_at = :t"), {"t": utcnow() - timedelta(minutes=10)})
    engine.dispose()
    monkeypatch.setenv("DUB_HEARTBEAT_TIMEOUT", "120")
    assert deliveries.claim(cat, "m", "spot-c", ["es"], owner=_live_owner())


def test_release_returns_rows_to_what_they_were(cat):
    owner = _live_owner()
    deliveries.finish(cat, "m", "spot-d", "es", "done", fingerprint="f" * 64, path="/x.mp4", sha256="b" * 64)
    deliveries.finish(cat, "m", "spot-d", "de", "failed", error="translate de: HTTP 503")
    assert deliveries.claim(cat, "m", "spot-d", ["es", "fr", "de"], owner=owner)
    deliveries.release(cat, "m", "spot-d", ["es", "fr", "de"], owner=owner)
    rows = {r.lang: r for r in deliveries.records(cat, "m") if r.item == "spot-d"}
    assert (rows["es"].status, rows["es"].path) == ("done", "/x.mp4")
    assert (rows["de"].status, rows["de"].error) == ("failed", "translate de: HTTP 503")
    assert "fr" not in rows  # never dubbed, as before the claim
    assert not rows["es"].held and not rows["de"].held


@pytest.mark.slow
def test_runners_claiming_at_once_each_get_an_item_once(cat):
    """Four processes race to claim the same 30 items: every item is held by exactly one.
    They start claiming together, and stay alive until all are done (a claim whose holder
    has exited is rightly taken over)."""
    code = textwrap.dedent("""
        import sys
        from polydub.storage import Catalog, deliveries
        cat = Catalog(sys.argv[1])
        print("ready", flush=True)
        sys.stdin.readline()  # go
        won = [f"item-{n}" for n in range(30) if deliveries.claim(cat, "race", f"item-{n}", ["es", "fr"])]
        print(",".join(won), flush=True)
        sys.stdin.read()  # until every runner has claimed
    """)
    runners = [subprocess.Popen([sys.executable, "-c", code, cat.url], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, env=os.environ.copy()) for _ in range(4)]
    try:
        for runner in runners:
            assert runner.stdout.readline().strip() == "ready", runner.stderr.read()
        for runner in runners:
            runner.stdin.write("go\n")
            runner.stdin.flush()
        won = []
        for runner in runners:
            won += [w for w in runner.stdout.readline().strip().split(",") if w]
        owners = {(r.item, r.owner) for r in deliveries.records(cat, "race")}
        for runner in runners:
            runner.stdin.close()
            assert runner.wait(timeout=SUBPROCESS_TIMEOUT_S) == 0, runner.stderr.read()
    finally:
        for runner in runners:
            runner.kill()
    assert sorted(won) == sorted(f"item-{n}" for n in range(30))
    assert len(owners) == 30  # both languages of an item held by the same runner


def test_digests_rehash_only_changed_files(cat, tmp_path):
    a, b = tmp_path / "a.srt", tmp_path / "b.srt"
    a.write_text("one")
    b.write_text("two")
    first = deliveries.digests(cat, [a, b, tmp_path / "missing.srt"])
    assert first[str(tmp_path / "missing.srt")] is None
    engine = sa.create_engine(cat.url.replace("postgresql://", "postgresql+psycopg://", 1))
    with engine.begin() as connection:  # a planted digest proves the second call did not rehash a
        connection.execute(sa.text("UPDATE file_digests SET sha256 = :h WHERE path = :p"),
                           {"h": "0" * 64, "p": str(a)})
    engine.dispose()
    time.sleep(0.01)
    b.write_text("three")  # size changes: rehashed
    second = deliveries.digests(cat, [a, b])
    assert second[str(a)] == "0" * 64
    assert second[str(b)] != first[str(b)]


def _live_owner() -> str:
    from polydub.storage.catalog import process_owner

    return process_owner()


def test_a_manifest_s_last_run_options_are_remembered(cat):
    assert deliveries.defaults_of(cat, "/ads.csv") is None
    deliveries.remember_defaults(cat, "/ads.csv", ["es", "fr"], {"voice": "espeak"})
    deliveries.remember_defaults(cat, "/ads.csv", None, {"voice": "espeak", "lipsync": "off"})
    assert deliveries.defaults_of(cat, "/ads.csv") == (None, {"voice": "espeak", "lipsync": "off"})


def test_runners_starting_together_both_remember_their_options(cat):
    """Two runners of a new manifest start at once: neither fails on the other's row."""
    import threading

    manifests = [f"/ads-{n}.csv" for n in range(20)]
    failures: list[BaseException] = []

    def runner(voice: str, ready: threading.Barrier) -> None:
        for manifest in manifests:
            ready.wait()
            try:
                deliveries.remember_defaults(cat, manifest, ["es"], {"voice": voice})
            except BaseException as exc:  # noqa: BLE001 - reported below
                failures.append(exc)

    ready = threading.Barrier(4)
    threads = [threading.Thread(target=runner, args=(f"espeak:v{n}", ready)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=SUBPROCESS_TIMEOUT_S)
    assert not failures, failures[0]
    for manifest in manifests:
        langs, options = deliveries.defaults_of(cat, manifest)
        assert langs == ["es"] and options["voice"].startswith("espeak:v")
