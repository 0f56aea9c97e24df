"""The stage cache, inputs and deliverables in a bucket: a real S3 API server on loopback
(moto_server), reached through a relay the tests can cut, and machines that share nothing
but the bucket and the catalog (each dub has a DUB_HOME of its own).

What a user checks: the deliverables in the bucket (played with ffprobe), the catalog
naming URLs, a second machine doing no stage work, a tampered cached object rebuilt, one
line before any work when the store cannot be used, a job failed with nothing marked done
when the network goes mid-job, and the credentials written nowhere.
"""

from __future__ import annotations

import json
import threading
import time

import pytest

from tests import inprocess
from tests.conftest import EXAMPLE
from tests.held import start_held
from tests.probe import ffprobe
from tests.services import Cuttable, free_port, s3_server

pytestmark = pytest.mark.slow

BUCKET = "polydub-media"
KEY_ID, SECRET = "AKIDPOLYDUBTEST01", "s3cr3t-polydub-storage-test-value"
SIDECARS = ("talking_head.en.srt", "talking_head.es.srt")  # the transcript and the approved es script


@pytest.fixture(scope="module")
def s3():
    """(endpoint through the relay, the relay, the environment every machine gets)."""
    with s3_server() as endpoint:
        relay = Cuttable(int(endpoint.rsplit(":", 1)[1]))
        env = {"AWS_ENDPOINT_URL": relay.url, "AWS_ACCESS_KEY_ID": KEY_ID, "AWS_SECRET_ACCESS_KEY": SECRET,
               "AWS_DEFAULT_REGION": "us-east-1"}
        fs = bucket_fs(endpoint)
        fs.mkdir(BUCKET)
        for name in (EXAMPLE.name, *SIDECARS):
            fs.put_file(str(EXAMPLE.parent / name), f"{BUCKET}/in/{name}")
        yield endpoint, relay, env
        relay.close()


def bucket_fs(endpoint: str):
    """The bucket as the test itself sees it (directly, not through the relay)."""
    import s3fs

    return s3fs.S3FileSystem(endpoint_url=endpoint, key=KEY_ID, secret=SECRET, use_listings_cache=False,
                             skip_instance_cache=True)


@pytest.fixture(scope="module")
def fleet(s3, tmp_path_factory, prefect_api):
    """A catalog every machine reaches, and a way to run `dub` as machine NAME."""
    _, _, env = s3
    root = tmp_path_factory.mktemp("fleet")
    db = f"sqlite:///{root / 'catalog.db'}"

    def dub(machine: str, *args, store: str = f"s3://{BUCKET}/store", **extra):
        home = root / machine
        home.mkdir(exist_ok=True)
        return inprocess.dub(*args, env={**env, "DUB_HOME": str(home), "DUB_STORAGE_URL": store,
                                         "DUB_DATABASE_URL": db, "DUB_CACHE_DIR": None, **extra}, cwd=home)
    dub.root, dub.db = root, db
    return dub


def source_url() -> str:
    return f"s3://{BUCKET}/in/{EXAMPLE.name}"


@pytest.fixture(scope="module")
def first(fleet, s3):
    result = fleet("a", source_url(), "--langs", "es", "--out", f"s3://{BUCKET}/out/ad/", "--lipsync", "off",
                   "--json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_a_dub_reads_its_input_and_sidecars_from_the_bucket_and_delivers_into_it(first, s3, fleet, tmp_path):
    endpoint, _, _ = s3
    fs = bucket_fs(endpoint)
    names = sorted(p.rsplit("/", 1)[1] for p in fs.find(f"{BUCKET}/out/ad"))
    assert names == ["talking_head.dubbed.mkv", "talking_head.es.mp4", "talking_head.es.srt",
                     "talking_head.es.timeline.png", "talking_head.es.vtt", "talking_head.report.json"]
    fs.get_file(f"{BUCKET}/out/ad/talking_head.es.mp4", str(tmp_path / "es.mp4"))
    info = ffprobe(tmp_path / "es.mp4")
    assert abs(float(info["format"]["duration"]) - float(ffprobe(EXAMPLE)["format"]["duration"])) < 0.1
    audio = [s for s in info["streams"] if s["codec_type"] == "audio"]
    assert audio[0]["tags"]["language"] == "spa"
    # the approved es script beside the input in the bucket was used, word for word
    delivered = fs.cat_file(f"{BUCKET}/out/ad/talking_head.es.srt").decode()
    approved = (EXAMPLE.parent / "talking_head.es.srt").read_text()
    assert [line for line in approved.splitlines() if line[:1].isalpha()][0] in delivered
    assert first["input"] == source_url() and first["out_dir"] == f"s3://{BUCKET}/out/ad"
    assert first["languages"]["es"]["outputs"]["mp4"] == f"s3://{BUCKET}/out/ad/talking_head.es.mp4"
    report = json.loads(fs.cat_file(f"{BUCKET}/out/ad/talking_head.report.json"))
    assert report["job"] == first["job"] and report["languages"]["es"]["status"] == "done"
    # the stage cache is the bucket's; this machine kept only the input's copy (no stage folder)
    assert fs.find(f"{BUCKET}/store/cache/mix")
    local = fleet.root / "a" / "cache"
    assert sorted(p.name for p in local.iterdir()) == ["downloads"]


def entry_file(fs, stage: str, name: str) -> str:
    """The one object called `name` among the bucket's cached entries of `stage`."""
    (found,) = [p for p in fs.find(f"{BUCKET}/store/cache/{stage}") if p.endswith(f"/{name}")]
    return found


def flip_a_byte(fs, key: str) -> None:
    """Same size, another byte: only a digest sees it."""
    data = bytearray(fs.cat_file(key))
    data[len(data) // 2] ^= 0xFF
    fs.pipe_file(key, bytes(data))


def stages_of(fleet, machine: str, result) -> dict:
    shown = json.loads(fleet(machine, "show", str(json.loads(result.stdout)["job"]), "--json").stdout)
    return {(s["stage"], s["lang"]): s for s in shown["stages"] if s["status"] != "skipped"}


def test_any_machine_reads_the_catalog_and_a_second_one_does_no_stage_work_but_rebuilds_what_was_damaged(
        first, fleet, s3):
    shown = fleet("c", "show", str(first["job"]), "--json")
    assert shown.returncode == 0, shown.stderr
    job = json.loads(shown.stdout)
    assert job["input"] == source_url()
    assert f"s3://{BUCKET}/out/ad/talking_head.es.mp4" in [o["path"] for o in job["outputs"]]
    listed = json.loads(fleet("c", "list", "--json").stdout)
    assert first["job"] in [j["id"] for j in listed]

    endpoint, relay, _ = s3
    fs = bucket_fs(endpoint)
    relay.reset()
    second = fleet("b", source_url(), "--langs", "es", "--out", f"s3://{BUCKET}/out/ad2/", "--lipsync", "off",
                   "--json")
    assert second.returncode == 0, second.stderr
    ran = stages_of(fleet, "b", second)
    assert ran and {key: s["status"] for key, s in ran.items()} == {key: "cached" for key in ran}
    # it brought what it delivered and the input, not every cached file it reused
    brought = relay.received
    delivered = fs.du(f"{BUCKET}/out/ad2", total=True)
    source = fs.du(f"{BUCKET}/in", total=True)
    store = fs.du(f"{BUCKET}/store/cache", total=True)
    assert brought < delivered + source + (1 << 20) < store, (brought, delivered, source, store)

    flip_a_byte(fs, entry_file(fs, "mix", "dub.wav"))  # read by no stage of a cached job
    vtt = entry_file(fs, "assemble", "subtitles.vtt")
    fs.pipe_file(vtt, fs.cat_file(vtt)[:-10])  # cut short: seen by size when reused
    verify = fleet("b", "cache", "verify")
    assert verify.returncode == 1 and "dub.wav: content changed" in verify.stdout, verify.stdout
    assert "subtitles.vtt" in verify.stdout

    third = fleet("b", source_url(), "--langs", "es", "--out", f"s3://{BUCKET}/out/ad3/", "--lipsync", "off",
                  "--json")
    assert third.returncode == 0, third.stderr
    ran = stages_of(fleet, "b", third)
    assemble = ran.pop(("assemble", "es"))
    assert assemble["status"] == "done" and "subtitles.vtt: " in assemble["detail"]["rebuilt"], assemble
    assert {key: s["status"] for key, s in ran.items()} == {key: "cached" for key in ran}
    assert fs.exists(f"{BUCKET}/out/ad3/talking_head.es.vtt")
    fixed = fleet("b", "cache", "verify", "--fix")  # the mix's track: never read, still damaged
    assert fixed.returncode == 0 and "removed:" in fixed.stdout and "dub.wav: content changed" in fixed.stdout
    assert fleet("b", "cache", "verify").returncode == 0


def test_a_cached_file_changed_in_the_bucket_fails_the_job_that_reads_it(
        first, fleet, s3):
    endpoint, _, _ = s3
    fs = bucket_fs(endpoint)
    flip_a_byte(fs, entry_file(fs, "assemble", "dubbed.mp4"))  # the es MP4, read when it is delivered
    args = (source_url(), "--langs", "es", "--out", f"s3://{BUCKET}/out/ad4/", "--lipsync", "off", "--json")
    failed = fleet("c", *args)
    assert failed.returncode == 1, failed.stderr
    report = json.loads(failed.stdout)
    assert "dubbed.mp4 of the cached result changed in the store" in report["languages"]["es"]["error"]
    shown = json.loads(fleet("c", "show", str(report["job"]), "--json").stdout)
    assert shown["status"] == "failed" and not [o for o in shown["outputs"] if o["lang"] == "es"]
    assert not fs.exists(f"{BUCKET}/out/ad4/talking_head.es.mp4")
    assert not [p for p in fs.find(f"{BUCKET}/store/cache/assemble") if p.endswith("dubbed.mp4")]
    # the next run rebuilds it: the catalog's run below (same input and options)


def test_cache_gc_removes_what_died_in_the_bucket_and_keeps_every_entry(first, fleet, s3):
    endpoint, _, _ = s3
    fs = bucket_fs(endpoint)
    fs.pipe_file(f"{BUCKET}/store/cache/mix/.tmp-0123456789ab-dub.wav", b"half an upload")
    fs.pipe_file(f"{BUCKET}/store/cache/mix/0000/r-dead/dub.wav", b"a build that died before its record")
    swept = fleet("a", "cache", "gc", "--older-than", "0")
    assert swept.returncode == 0, swept.stderr
    assert "2 leftovers removed" in swept.stdout, swept.stdout
    assert not fs.exists(f"{BUCKET}/store/cache/mix/0000/r-dead/dub.wav")
    checked = fleet("a", "cache", "verify")
    assert checked.returncode == 0 and " 0 damaged" in checked.stdout


def test_a_store_that_cannot_be_used_is_one_line_before_any_work(fleet, s3, tmp_path):
    dead = f"http://127.0.0.1:{free_port()}"
    cases = [
        ({"AWS_ENDPOINT_URL": dead}, f"s3://{BUCKET}/store", "unreachable"),
        ({}, "s3://no-such-bucket/store", "not found"),
    ]
    for extra, store, why in cases:
        result = fleet("e", str(EXAMPLE), "--langs", "es", "--out", str(tmp_path / "out"), store=store, **extra)
        line = result.stderr.strip()
        assert result.returncode == 2 and "\n" not in line and why in line and "DUB_STORAGE_URL" in line, line
        assert not (tmp_path / "out").exists()
    missing = fleet("e", f"s3://{BUCKET}/in/nothing.mp4", "--langs", "es", "--out", str(tmp_path / "out"))
    assert missing.returncode == 2 and "no such object" in missing.stderr, missing.stderr
    keyed = fleet("e", f"s3://{KEY_ID}:{SECRET}@{BUCKET}/in/{EXAMPLE.name}", "--langs", "es",
                  "--out", str(tmp_path / "out"))
    assert keyed.returncode == 2 and "credentials or parameters in the URL are not accepted" in keyed.stderr
    assert SECRET not in keyed.stderr and KEY_ID not in keyed.stderr


def test_a_deliverable_never_replaces_an_object_polydub_did_not_deliver(fleet, s3):
    endpoint, _, _ = s3
    fs = bucket_fs(endpoint)
    fs.pipe_file(f"{BUCKET}/out/theirs/talking_head.es.mp4", b"someone else's cut")
    result = fleet("a", source_url(), "--langs", "es", "--out", f"s3://{BUCKET}/out/theirs/", "--lipsync", "off")
    assert result.returncode == 2 and "talking_head.es.mp4 is already there and polydub did not deliver it" \
        in result.stderr, result.stderr
    assert fs.cat_file(f"{BUCKET}/out/theirs/talking_head.es.mp4") == b"someone else's cut"


def test_a_transfer_that_fails_for_a_moment_is_retried(s3):
    from polydub.storage.objects import Store

    _, relay, env = s3
    with pytest.MonkeyPatch.context() as patch:
        for name, value in env.items():
            patch.setenv(name, value)
        store = Store(f"s3://{BUCKET}/retry")
        relay.cut()
        threading.Timer(1.0, relay.mend).start()  # back within the retries' backoff
        started = time.monotonic()
        store.put_bytes(b"whole", "object.txt")
        assert time.monotonic() - started >= 0.5
        assert store.read("object.txt", 100) == b"whole"
    relay.mend()


def test_a_network_cut_mid_job_fails_it_with_nothing_marked_done(fleet, s3, tmp_path):
    endpoint, relay, env = s3
    home = fleet.root / "f"
    home.mkdir()
    store = f"s3://{BUCKET}/store-cut"  # a store of its own: nothing cached, every stage runs
    flag = tmp_path / "held"
    proc = start_held([source_url(), "--langs", "es", "--out", f"s3://{BUCKET}/out/cut/", "--lipsync", "off"],
                      "mix", flag, env={**env, "DUB_HOME": str(home), "DUB_STORAGE_URL": store,
                                        "DUB_DATABASE_URL": fleet.db, "DUB_CACHE_DIR": None,
                                        "DUB_STORAGE_RETRIES": "0"}, cwd=home,  # fail at once
                      stderr=__import__("subprocess").PIPE, text=True)
    try:
        relay.cut()
        flag.unlink()
        _, err = proc.communicate(timeout=240)
    finally:
        relay.mend()
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 1, err
    listed = json.loads(fleet("f", "list", "--json").stdout)
    job = json.loads(fleet("f", "show", str(max(j["id"] for j in listed)), "--json").stdout)
    assert job["status"] == "failed"
    mix = next(s for s in job["stages"] if s["stage"] == "mix")
    assert mix["status"] == "failed" and "storage:" in mix["error"], mix
    assert not [o for o in job["outputs"] if o["lang"] == "es"]
    fs = bucket_fs(endpoint)
    assert not [p for p in fs.find(f"{BUCKET}/store-cut/cache/mix") if p.endswith("done.json")]
    assert not fs.exists(f"{BUCKET}/out/cut/talking_head.es.mp4")
    assert "Traceback" not in err


def test_a_catalog_of_bucket_inputs_delivers_into_the_bucket_and_reads_done_from_another_machine(
        first, fleet, s3, tmp_path):
    endpoint, _, _ = s3
    manifest = tmp_path / "ads.csv"
    manifest.write_text(f"id,input,langs\nspring,{source_url()},es\n")
    out = f"s3://{BUCKET}/out/catalog"
    ran = fleet("g", "catalog", str(manifest), "--out", out + "/", "--voice", "espeak", "--lipsync", "off", "--json")
    assert ran.returncode == 0, ran.stderr
    rows = json.loads(ran.stdout)["rows"]
    assert [(r["item"], r["language"], r["status"]) for r in rows] == [("spring", "es", "dubbed")], rows
    # the es assembly removed from the bucket by the test above (its MP4 changed there) is rebuilt
    job = json.loads(fleet("g", "show", str(rows[0]["job"]), "--json").stdout)
    assert [s["status"] for s in job["stages"] if s["stage"] == "assemble" and s["lang"] == "es"] == ["done"]
    assert bucket_fs(endpoint).exists(f"{BUCKET}/out/catalog/spring/talking_head.es.mp4")
    status = fleet("h", "status", str(manifest), "--json")
    assert status.returncode == 0, status.stderr
    (cells,) = json.loads(status.stdout).values()  # one manifest: its cells
    assert [(c["item"], c["lang"], c["state"]) for c in cells] == [("spring", "es", "done")], cells
    exported = fleet("h", "export", str(manifest), "--out", str(tmp_path / "delivered.json"))
    assert exported.returncode == 0, exported.stderr
    (row,) = json.loads((tmp_path / "delivered.json").read_text())
    assert row["file"] == f"{out}/spring/talking_head.es.mp4" and len(row["sha256"]) == 64


def test_lipsync_handed_to_a_pool_nobody_serves_fails_in_one_line_and_cancels_its_run(first, fleet, prefect_api):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.exceptions import ObjectAlreadyExists

    from polydub.flows.lipsync import lipsync_video

    with get_client(sync_client=True) as client:
        try:
            client.create_work_pool(WorkPoolCreate(name="polydub-gpu-unserved", type="process"))
        except ObjectAlreadyExists:
            pass
        unserved = client.create_deployment(flow_id=client.create_flow(lipsync_video), name="unserved",
                                            work_pool_name="polydub-gpu-unserved",
                                            entrypoint="polydub.flows.lipsync:lipsync_video")
    result = fleet("i", source_url(), "--langs", "es", "--out", f"s3://{BUCKET}/out/unserved/", "--lipsync", "on",
                   "--json", DUB_LIPSYNC_DEPLOYMENT="lipsync/unserved", DUB_LIPSYNC_TIMEOUT="1")
    assert result.returncode == 1, result.stderr
    report = json.loads(result.stdout)
    error = report["languages"]["es"]["error"]
    assert "did not end within DUB_LIPSYNC_TIMEOUT (1 s" in error and "polydub-gpu" in error, error
    assert not report["languages"]["es"].get("outputs")
    with get_client(sync_client=True) as client:
        runs = [r for r in client.read_flow_runs(limit=200) if r.deployment_id == unserved]
    assert [(r.parameters["job_id"], r.state.type.value) for r in runs] == [(report["job"], "CANCELLED")]


def test_lipsync_on_gpu_workers_without_a_bucket_or_with_a_bad_timeout_is_refused_before_any_work(tmp_path):
    handed = {"DUB_LIPSYNC_DEPLOYMENT": "lipsync/lipsync-gpu", "DUB_STORAGE_URL": str(tmp_path / "store"),
              "DUB_HOME": str(tmp_path / "home")}
    line = inprocess.refused(EXAMPLE, "--langs", "es", "--lipsync", "on", out=tmp_path / "out", env=handed)
    assert line == ("dub: error: DUB_LIPSYNC_DEPLOYMENT=lipsync/lipsync-gpu: lip-sync on GPU workers needs "
                    "DUB_STORAGE_URL to name a bucket both sides reach"), line
    line = inprocess.refused(EXAMPLE, "--langs", "es", out=tmp_path / "out",
                             env={**handed, "DUB_STORAGE_URL": f"s3://{BUCKET}/store", "DUB_LIPSYNC_TIMEOUT": "soon"})
    assert "DUB_LIPSYNC_TIMEOUT must be a number of seconds" in line, line


def test_the_credentials_are_written_nowhere(first, fleet, s3, prefect_api):
    """After every dub above: not in any file of any machine's home, the catalog, the bucket's
    objects, nor the flow runs' parameters and logs on the Prefect server."""
    endpoint, _, _ = s3
    for path in fleet.root.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            assert SECRET.encode() not in data and KEY_ID.encode() not in data, path
    fs = bucket_fs(endpoint)
    for key in fs.find(BUCKET):
        data = fs.cat_file(key)
        assert SECRET.encode() not in data and KEY_ID.encode() not in data, key

    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(limit=200)
        logs = client.read_logs(limit=200)
    text = json.dumps([r.parameters for r in runs], default=str) + json.dumps([l.message for l in logs])
    assert SECRET not in text and KEY_ID not in text
