"""The lip-sync stage inside the flow, on the CPU with tiny random-weight LatentSync models:
the face is tracked once per video, each language's MP4 carries its own synced video."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from tests import inprocess
from tests.conftest import EXAMPLE, scratch_dir

pytestmark = pytest.mark.slow
CACHE = scratch_dir("lipsync-cache-")  # this module's own stage and face-track cache
SECONDS = 3
LINE = {"en": "Hello, and welcome to our new product.", "es": "Hola, y bienvenidos a nuestro nuevo producto.",
        "fr": "Bonjour et bienvenue dans notre nouveau produit.", "de": "Hallo und willkommen bei unserem neuen Produkt."}


def frames_of(path: Path) -> np.ndarray:
    info = json.loads(subprocess.run(["ffprobe", "-v", "error", "-select_streams", "v:0", "-show_entries",
                                      "stream=width,height", "-of", "json", str(path)],
                                     capture_output=True, text=True, timeout=60, check=True).stdout)
    w, h = info["streams"][0]["width"], info["streams"][0]["height"]
    raw = subprocess.run(["ffmpeg", "-v", "error", "-i", str(path), "-f", "rawvideo", "-pix_fmt", "rgb24", "-"],
                         capture_output=True, timeout=120, check=True).stdout
    return np.frombuffer(raw, np.uint8).reshape(-1, h, w, 3).astype(np.int16)


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("lipclip")
    video = d / "promo.mp4"
    subprocess.run(["ffmpeg", "-v", "error", "-i", str(EXAMPLE), "-t", str(SECONDS), "-c:v", "libx264", "-crf", "16",
                    "-c:a", "aac", "-metadata:s:a:0", "language=eng", str(video)], check=True, timeout=120)
    for lang, text in LINE.items():
        (d / f"promo.{lang}.srt").write_text(f"1\n00:00:00,500 --> 00:00:02,800\n{text}\n", encoding="utf-8")
    return video


LIPSYNC_ENV = {"DUB_LIPSYNC_DEVICE": "cpu", "DUB_LIPSYNC_STEPS": "2"}  # tiny random models: 2 steps show as much as 20


def run_dub(clip: Path, langs: str, models: Path, out: Path, db: str) -> dict:
    result = inprocess.dub(clip, "--langs", langs, "--out", out, "--voice", "espeak", "--lipsync", "on", "--db", db,
                           "--json", env={**LIPSYNC_ENV, "DUB_MODELS_DIR": str(models), "DUB_GPU_LIMIT": "1",
                                          "DUB_CACHE_DIR": CACHE})
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


@pytest.fixture(scope="module")
def models(tiny_models_dir) -> Path:
    return tiny_models_dir


@pytest.fixture(scope="module")
def first(prefect_api, clip, models, tmp_path_factory) -> dict:
    """One lip-synced dub into es and fr, shared by the tests that read what it made."""
    folder = tmp_path_factory.mktemp("lipsync-dub")
    report = run_dub(clip, "es,fr", models, folder / "out", f"sqlite:///{folder / 'catalog.db'}")
    return {"report": report, "out": folder / "out"}


def face_tracks() -> list[Path]:
    return list((Path(CACHE) / "facetrack").glob("*.npz"))


def test_lipsync_in_the_flow(first, clip):
    report, out = first["report"], first["out"]
    source = frames_of(clip)
    assert len(source) == SECONDS * 25
    for lang in ("es", "fr"):
        entry = report["languages"][lang]
        assert entry["backends"]["lipsync"] == "done"
        frames = frames_of(out / f"promo.{lang}.mp4")
        assert frames.shape == source.shape  # same frame count and size
        diff = np.abs(frames - source).max(axis=-1)
        # The background far from the face only carries re-encoding noise ...
        assert diff[:, :60, :60].mean() < 3 and diff[:, -60:, -60:].mean() < 3
        # ... while the lower face is regenerated (random weights: visibly different).
        changed = diff > 40
        assert changed.mean(axis=0).max() > 0.5
        ys, xs = np.nonzero(changed.mean(axis=0) > 0.5)
        assert 60 < ys.mean() < 300 and 60 < xs.mean() < 330  # inside the face area of the frame
    es, fr = frames_of(out / "promo.es.mp4"), frames_of(out / "promo.fr.mp4")
    assert np.abs(es - fr).mean() > 0.1  # each language has its own mouth
    assert len(face_tracks()) == 1


def test_one_more_language_reuses_the_face_track(first, clip, models, tmp_path):
    """Its lip-sync reuses the face track; the languages done before are cached."""
    (track,) = face_tracks()
    before = track.stat().st_mtime_ns
    db = f"sqlite:///{tmp_path / 'catalog.db'}"
    again = run_dub(clip, "es,fr,de", models, tmp_path / "out", db)
    shown = json.loads(inprocess.dub("show", again["job"], "--db", db, "--json").stdout)
    lipsync = {s["lang"]: s for s in shown["stages"] if s["stage"] == "lipsync"}
    assert lipsync["es"]["status"] == "cached" and lipsync["fr"]["status"] == "cached"
    assert lipsync["de"]["status"] == "done" and lipsync["de"]["detail"]["track"] == "reused"
    assert face_tracks() == [track] and track.stat().st_mtime_ns == before
    assert len(frames_of(tmp_path / "out" / "promo.de.mp4")) == SECONDS * 25


def test_the_gpu_slot_is_a_prefect_global_concurrency_limit_of_this_machine(first):
    """The lip-sync run made this machine's limit on the test server: one slot (no GPU
    here); another GPU machine gets a limit of its own, sized by its GPUs."""
    import socket

    from prefect.client.orchestration import get_client

    from polydub.storage.catalog import this_machine
    from polydub.tasks.lipsync import gpu_limit_name

    with get_client(sync_client=True) as client:
        [limit] = [gcl for gcl in client.read_global_concurrency_limits() if gcl.name.startswith("polydub-gpu")]
    assert limit.name == gpu_limit_name() == f"polydub-gpu-{socket.gethostname()}-{this_machine().split('#')[1]}"
    assert limit.limit == 1 and limit.active_slots == 0  # released after use


def test_auto_lipsync_that_fails_still_delivers_the_dub(prefect_api, clip, models, tmp_path):
    """--lipsync auto is best effort: a broken checkpoint leaves the video as it was, the
    dub is delivered, and the report and catalog say what failed. With --lipsync on, the
    same failure delivers nothing and exits 1."""
    broken = shutil.copytree(models, tmp_path / "models")
    unet = broken / "latentsync-1.5" / "latentsync_unet.pt"
    unet.write_bytes(unet.read_bytes()[:1000])  # an interrupted download
    env = {**LIPSYNC_ENV, "DUB_MODELS_DIR": str(broken)}
    db = f"sqlite:///{tmp_path / 'catalog.db'}"
    base = [clip, "--langs", "es", "--voice", "espeak", "--db", db, "--json"]
    auto = inprocess.dub(*base, "--out", tmp_path / "auto", env=env)
    assert auto.returncode == 0, auto.stderr
    report = json.loads(auto.stdout)
    entry = report["languages"]["es"]
    assert entry["backends"]["lipsync"] == "failed"
    assert "latentsync_unet.pt" in entry["backends"]["lipsync_reason"]
    assert len(frames_of(tmp_path / "auto" / "promo.es.mp4")) == SECONDS * 25
    runs = {s["stage"]: s for s in json.loads(inprocess.dub("show", report["job"], "--db", db, "--json").stdout)[
        "stages"]}
    assert runs["lipsync"]["status"] == "failed" and "latentsync_unet.pt" in runs["lipsync"]["error"]

    on = inprocess.dub(*base, "--lipsync", "on", "--out", tmp_path / "on", env=env)
    assert on.returncode == 1
    assert json.loads(on.stdout)["languages"]["es"]["status"] == "failed"
    assert not (tmp_path / "on" / "promo.es.mp4").exists()
