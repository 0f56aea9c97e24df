"""The stage cache: one builder per key, no half-written result, nobody's result removed
from under a reader; every reuse checked against the sizes and digests recorded when the
result was published, and nothing outside the cache sharing storage with it."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from polydub import cache
from polydub.tasks.common import JobContext, run_stage


def test_concurrent_builders_of_one_key_build_once(tmp_path):
    built, seen, errors = [], [], []

    def worker():
        try:
            with cache.exclusive("stage", "k", tmp_path):
                if cache.lookup("stage", "k", tmp_path) is None:
                    with cache.building("stage", "k", tmp_path) as work:
                        time.sleep(0.2)  # slow enough for the others to pile up
                        (work / "out.txt").write_text("result")
                        cache.finish(work, {"file": "out.txt"})
                    built.append(1)
            seen.append((cache.stage_dir("stage", "k", tmp_path) / "out.txt").read_text())
        except Exception as exc:  # noqa: BLE001 - reported by the assert below
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len(built) == 1 and seen == ["result"] * 4


def test_a_failed_build_publishes_nothing(tmp_path):
    with pytest.raises(RuntimeError):
        with cache.building("stage", "k", tmp_path) as work:
            (work / "half.txt").write_text("half")
            raise RuntimeError("crash")
    assert cache.lookup("stage", "k", tmp_path) is None
    assert not any(p.name.startswith(".tmp") for p in (tmp_path / "stage").iterdir())


def test_a_finished_result_is_never_replaced(tmp_path):
    with cache.building("stage", "k", tmp_path) as work:
        (work / "out.txt").write_text("first")
        cache.finish(work, {})
    with cache.building("stage", "k", tmp_path) as work:  # a second builder that did not look
        (work / "out.txt").write_text("second")
        cache.finish(work, {})
    assert (Path(cache.stage_dir("stage", "k", tmp_path)) / "out.txt").read_text() == "first"


# --- Trust: every reuse is checked against the sizes and digests recorded at publication.

@contextlib.contextmanager
def small_disk(path: Path, size: str):
    """A real size-limited tmpfs at `path` (we run as root); skipped where mounting is not allowed."""
    path.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                             capture_output=True, text=True, timeout=30)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a size-limited tmpfs here: {mounted.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], capture_output=True, timeout=30)


@pytest.fixture()
def job(tmp_path):
    from polydub.storage import Catalog

    db = f"sqlite:///{tmp_path / 'c.db'}"
    cat = Catalog(db)
    source = cat.upsert_source(str(tmp_path / "in.mp4"), "0" * 64, 1.0, None, False)
    return JobContext(cat.create_job(source, ["es"], {}, str(tmp_path / "out")), db, str(tmp_path / "cache"))


def build_two_files(folder: Path) -> None:
    (folder / "a.bin").write_bytes(b"a" * 1000)
    (folder / "b.txt").write_text("line one\n")


def stage_row(ctx: JobContext) -> dict:
    from polydub.storage import Catalog

    return Catalog(ctx.db_url).show_job(ctx.job_id)["stages"][-1]


def flip_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("harm, reason", [
    (lambda d: flip_byte(d / "a.bin"), "a.bin: content changed"),
    (lambda d: (d / "a.bin").write_bytes(b"a" * 10), "a.bin: 10 bytes, 1000 recorded"),
    (lambda d: (d / "b.txt").unlink(), "b.txt: missing"),
    (lambda d: (d / "done.json").write_text("{garbage"), "unreadable completion marker"),
    (lambda d: (d / "done.json").write_text("{}"), "no recorded sizes and digests"),
    (lambda d: (d / "done.json").write_text('{"manifest": {"a.bin": 3}}'), "garbled completion marker"),
])
def test_a_damaged_entry_is_rebuilt_and_the_catalog_says_why(job, harm, reason):
    first = run_stage(job, "mix", "es", "k1", build_two_files)
    folder = Path(first.folder)
    assert first.status == "done" and sorted(cache.lookup("mix", "k1", Path(job.cache_root))["manifest"]) == \
        ["a.bin", "b.txt"]
    assert run_stage(job, "mix", "es", "k1", build_two_files).status == "cached"
    harm(folder)
    again = run_stage(job, "mix", "es", "k1", build_two_files)
    assert again.status == "done" and again.rebuilt.startswith(reason) and again.note.startswith("rebuilt: ")
    assert (folder / "a.bin").read_bytes() == b"a" * 1000 and (folder / "b.txt").read_text() == "line one\n"
    assert stage_row(job)["status"] == "done" and stage_row(job)["detail"]["rebuilt"].startswith(reason)
    assert run_stage(job, "mix", "es", "k1", build_two_files).status == "cached"  # healed
    assert not [p for p in folder.parent.iterdir() if p.name.startswith(".tmp-")]


@dataclass
class Counted:
    """A stage output as a later version of a stage might define it."""

    files: int
    lines: int


def test_a_record_without_the_stage_s_fields_is_rebuilt_and_typed(job):
    def build(folder: Path) -> Counted:
        build_two_files(folder)
        return Counted(files=2, lines=1)

    run_stage(job, "mix", "es", "k1", build_two_files)  # an older stage: nothing recorded beside the files
    again = run_stage(job, "mix", "es", "k1", build, Counted)
    assert again.status == "done" and again.rebuilt == "record without this stage's fields"
    assert again.output == Counted(2, 1) and stage_row(job)["detail"]["lines"] == 1
    cached = run_stage(job, "mix", "es", "k1", build, Counted)
    assert cached.status == "cached" and cached.output == Counted(2, 1) and cached.seconds == 0.0


def test_placed_files_share_nothing_with_the_cache(tmp_path):
    cached, delivered = tmp_path / "cache.mp4", tmp_path / "out" / "ad.es.mp4"
    cached.write_bytes(b"original" * 1000)
    cache.place(cached, delivered)
    assert delivered.read_bytes() == cached.read_bytes()
    assert os.stat(cached).st_nlink == 1 and not os.path.samefile(cached, delivered)
    with open(cached, "r+b") as f:  # damage in place: the delivered copy is untouched
        f.write(b"DAMAGED!")
    with open(delivered, "r+b") as f:  # and an edit of the deliverable leaves the cache alone
        f.write(b"edited")
    assert delivered.read_bytes()[:8] == b"editedal" and cached.read_bytes()[:8] == b"DAMAGED!"
    assert sorted(p.name for p in delivered.parent.iterdir()) == ["ad.es.mp4"]  # no temporary left


def test_on_a_copy_on_write_file_system_a_placed_file_is_a_clone(tmp_path):
    """btrfs (loop-mounted): the copy shares the cache's blocks until either is written."""
    if not shutil.which("mkfs.btrfs"):
        pytest.skip("mkfs.btrfs is not installed (btrfs-progs)")
    image, disk = tmp_path / "btrfs.img", tmp_path / "btrfs"
    with open(image, "wb") as f:
        f.truncate(128 << 20)  # about the smallest btrfs
    subprocess.run(["mkfs.btrfs", "-q", str(image)], check=True, capture_output=True, timeout=60)
    disk.mkdir()
    mounted = subprocess.run(["mount", "-o", "loop", str(image), str(disk)], capture_output=True, text=True,
                             timeout=60)
    if mounted.returncode != 0:
        pytest.skip(f"cannot loop-mount a btrfs image here: {mounted.stderr.strip()}")
    try:
        cached, delivered = disk / "cache.mp4", disk / "out" / "ad.es.mp4"
        cached.write_bytes(os.urandom(1 << 20))
        original = cached.read_bytes()
        cache.place(cached, delivered)
        extents = subprocess.run(["filefrag", "-v", str(delivered)], capture_output=True, text=True, timeout=60)
        assert "shared" in extents.stdout, extents.stdout
        with open(cached, "r+b") as f:
            f.write(b"DAMAGED!")
        assert delivered.read_bytes() == original
    finally:
        subprocess.run(["umount", str(disk)], capture_output=True, timeout=60)


def test_a_delivered_hard_link_from_before_is_replaced_by_a_copy(tmp_path):
    cached, delivered = tmp_path / "cache.srt", tmp_path / "ad.es.srt"
    cached.write_text("cached")
    os.link(cached, delivered)  # what earlier versions delivered
    cache.place(cached, delivered)
    delivered.write_text("edited")
    assert cached.read_text() == "cached"


def test_a_damaged_shared_line_clip_is_dropped_not_reused(tmp_path):
    clip = tmp_path / "said.wav"
    clip.write_bytes(b"RIFF" + bytes(range(256)) * 10)
    kept = cache.keep_line("line1", clip, tmp_path)
    assert cache.reuse_line("line1", tmp_path / "copy.wav", tmp_path) == (True, 0)
    assert (tmp_path / "copy.wav").read_bytes() == clip.read_bytes()
    flip_byte(kept)
    assert cache.reuse_line("line1", tmp_path / "again.wav", tmp_path) == (False, 1)
    assert not kept.exists() and not (tmp_path / "again.wav").exists()


def test_verify_reports_every_damaged_entry_and_fix_removes_them(tmp_path):
    for key in ("k1", "k2"):
        with cache.building("mix", key, tmp_path) as work:
            build_two_files(work)
            cache.finish(work, {})
    clip = tmp_path / "c.wav"
    clip.write_bytes(b"clip")
    flip_byte(cache.keep_line("l", clip, tmp_path))
    flip_byte(cache.stage_dir("mix", "k2", tmp_path) / "a.bin")
    checked, problems = cache.verify_all(tmp_path)
    assert checked == 3 and [Path(p.path).name for p in problems] == ["k2", f"{cache.file_hash(clip)}.wav"]
    cache.verify_all(tmp_path, fix=True)
    assert cache.verify_all(tmp_path) == (1, [])  # k1 alone is left
    assert cache.lookup("mix", "k1", tmp_path) is not None and cache.lookup("mix", "k2", tmp_path) is None


def test_sweep_removes_abandoned_leftovers_but_not_a_live_build(tmp_path):
    stage = tmp_path / "mix"
    dead, part = stage / ".tmp-dead-0000", tmp_path / "lines" / ".dub-0000.part"
    dead.mkdir(parents=True)
    (dead / "half.wav").write_bytes(b"x" * 5000)
    part.parent.mkdir()
    part.write_bytes(b"y" * 100)
    memory = tmp_path / "memory" / "abc.part"  # the translation memory's partial write
    memory.parent.mkdir()
    memory.write_bytes(b"m")
    out = tmp_path.with_name(f"{tmp_path.name}-out")  # a job's output folder: only our hidden partial copies go
    out.mkdir()
    (out / ".dub-1234.part").write_bytes(b"z" * 10)
    (out / "users.part").write_bytes(b"mine")
    old = time.time() - 2 * cache.SWEEP_AGE
    for p in (dead / "half.wav", dead, part, memory, out / ".dub-1234.part", out / "users.part"):
        os.utime(p, (old, old))
    with cache.building("mix", "live", tmp_path) as live:
        os.utime(live, (old, old))  # old, but its builder holds it
        swept = cache.sweep(tmp_path, extra=(out,))
        assert live.exists()
        cache.finish(live, {})
    assert sorted(swept.removed) == sorted(map(str, [dead, part, memory, out / ".dub-1234.part"]))
    assert swept.bytes == 5111 and (out / "users.part").exists()
    young = stage / ".tmp-young-0000"
    young.mkdir()
    assert cache.sweep(tmp_path).removed == [] and young.exists()


def test_disk_full_while_building_is_one_line_and_publishes_nothing(job, tmp_path):
    with small_disk(Path(job.cache_root), "1m"):
        def build(folder: Path) -> None:
            (folder / "big.wav").write_bytes(b"\0" * (2 << 20))

        with pytest.raises(cache.DiskFull, match=f"^disk full: no space left in {job.cache_root}$"):
            run_stage(job, "mix", "es", "k", build)
        assert cache.lookup("mix", "k", Path(job.cache_root)) is None
        assert [p.name for p in (Path(job.cache_root) / "mix").iterdir()] == ["k.lock"]  # no .tmp-
        row = stage_row(job)
        assert row["status"] == "failed" and row["error"] == f"disk full: no space left in {job.cache_root}"

        def build_like_libsndfile(folder: Path) -> None:
            """Fill the disk, then fail as a library does that hides the errno."""
            with open(folder / "filler", "wb") as f:
                with contextlib.suppress(OSError):
                    f.write(b"\0" * (2 << 20))
            raise RuntimeError("System error.")

        with pytest.raises(cache.DiskFull, match=f"^disk full: no space left in {job.cache_root}$"):
            run_stage(job, "mix", "es", "k2", build_like_libsndfile)


def test_disk_full_while_delivering_names_the_folder_and_leaves_no_part(tmp_path):
    source = tmp_path / "dubbed.mp4"
    source.write_bytes(b"\1" * (2 << 20))
    out = tmp_path / "out"
    with small_disk(out, "1m"):
        with pytest.raises(cache.DiskFull, match=f"no space left in {out}$"):
            cache.place(source, out / "ad.es.mp4")
        assert list(out.iterdir()) == []
