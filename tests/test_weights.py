"""Model registry and resumable downloads, against a real HTTP server on localhost."""

from __future__ import annotations

import hashlib
import json
import os
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from polydub import weights as registry
from polydub.errors import InputError, StageError
from polydub.weights import ModelFile, ModelSpec


class RangeServer:
    """Serves files from a folder with HTTP Range support, recording each request's
    path and Range header. `ignore_range` answers 200 with the whole file; `stall_s`
    waits before answering."""

    def __init__(self, root: Path):
        self.root = root
        self.requests: list[tuple[str, str | None]] = []
        self.ignore_range = False
        self.stall_s = 0.0
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                rng = self.headers.get("Range")
                server.requests.append((self.path, rng))
                time.sleep(server.stall_s)
                path = server.root / self.path.lstrip("/")
                if not path.is_file():
                    self.send_error(404, "Not Found")
                    return
                data = path.read_bytes()
                m = re.fullmatch(r"bytes=(\d+)-", rng or "")
                if m and not server.ignore_range:
                    start = int(m.group(1))
                    if start >= len(data):
                        self.send_response(416)
                        self.send_header("Content-Range", f"bytes */{len(data)}")
                        self.send_header("Content-Length", "0")
                        self.end_headers()
                        return
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                    data = data[start:]
                else:
                    self.send_response(200)
                try:
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (the stalled-server test)

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server(tmp_path):
    root = tmp_path / "remote"
    root.mkdir()
    srv = RangeServer(root)
    yield srv
    srv.close()


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture
def tiny_model(server, monkeypatch):
    """A two-file model on the local server: a checkpoint with a known sha256 and a
    config without one."""
    weights = os.urandom(3 * registry.CHUNK_BYTES + 12345)
    cfg = json.dumps({"dim": 16}).encode()
    (server.root / "ckpt").mkdir()
    (server.root / "ckpt" / "unet.pt").write_bytes(weights)
    (server.root / "config.json").write_bytes(cfg)
    spec = ModelSpec("tiny-test", "a test model", (
        ModelFile(f"{server.url}/ckpt/unet.pt", "ckpt/unet.pt", sha256=sha(weights)),
        ModelFile(f"{server.url}/config.json", "config.json", sha256=None),
    ))
    monkeypatch.setitem(registry.REGISTRY, spec.name, spec)
    return spec, weights, cfg


def test_pull_downloads_verifies_and_writes_a_manifest(tiny_model, tmp_path):
    spec, weights, cfg = tiny_model
    seen = []
    root = registry.pull("tiny-test", tmp_path / "models", progress=lambda *a: seen.append(a))
    assert root == tmp_path / "models" / "tiny-test"
    assert (root / "ckpt" / "unet.pt").read_bytes() == weights
    assert (root / "config.json").read_bytes() == cfg
    manifest = json.loads((root / "manifest.json").read_text())
    assert manifest["files"]["ckpt/unet.pt"]["sha256"] == sha(weights)
    assert manifest["files"]["config.json"]["sha256"] == sha(cfg)
    assert seen[-1] == ("config.json", len(cfg), len(cfg))
    assert ("ckpt/unet.pt", len(weights), len(weights)) in seen
    assert not list(root.rglob("*.part"))
    assert registry.is_present("tiny-test", tmp_path / "models")
    row = next(r for r in registry.list_models(tmp_path / "models") if r["name"] == "tiny-test")
    assert row["present"] and row["size"] == len(weights) + len(cfg)
    assert row["path"] == str(root)


def test_second_pull_downloads_nothing(tiny_model, server, tmp_path):
    registry.pull("tiny-test", tmp_path)
    before = len(server.requests)
    registry.pull("tiny-test", tmp_path)
    assert len(server.requests) == before


def test_pull_resumes_a_partial_download_with_a_range_request(tiny_model, server, tmp_path):
    spec, weights, _ = tiny_model
    root = tmp_path / "tiny-test"
    (root / "ckpt").mkdir(parents=True)
    cut = len(weights) // 3
    (root / "ckpt" / "unet.pt.part").write_bytes(weights[:cut])
    assert not registry.is_present("tiny-test", tmp_path)
    registry.pull("tiny-test", tmp_path)
    assert ("/ckpt/unet.pt", f"bytes={cut}-") in server.requests
    assert sha((root / "ckpt" / "unet.pt").read_bytes()) == spec.files[0].sha256
    assert not (root / "ckpt" / "unet.pt.part").exists()


def test_complete_part_file_is_finished_without_refetching(tiny_model, server, tmp_path):
    _, weights, _ = tiny_model
    (tmp_path / "tiny-test" / "ckpt").mkdir(parents=True)
    (tmp_path / "tiny-test" / "ckpt" / "unet.pt.part").write_bytes(weights)
    registry.pull("tiny-test", tmp_path)  # the server answers 416 for a range past the end
    assert (tmp_path / "tiny-test" / "ckpt" / "unet.pt").read_bytes() == weights


def test_server_ignoring_range_restarts_from_zero(tiny_model, server, tmp_path):
    _, weights, _ = tiny_model
    server.ignore_range = True
    (tmp_path / "tiny-test" / "ckpt").mkdir(parents=True)
    (tmp_path / "tiny-test" / "ckpt" / "unet.pt.part").write_bytes(weights[:1000])
    registry.pull("tiny-test", tmp_path)
    assert (tmp_path / "tiny-test" / "ckpt" / "unet.pt").read_bytes() == weights


def test_checksum_mismatch_leaves_no_file(server, tmp_path, monkeypatch):
    (server.root / "bad.pt").write_bytes(b"not the weights you are looking for")
    spec = ModelSpec("bad-test", "", (ModelFile(f"{server.url}/bad.pt", "bad.pt", sha256="0" * 64),))
    monkeypatch.setitem(registry.REGISTRY, spec.name, spec)
    with pytest.raises(StageError, match="bad.pt failed its sha256 check") as err:
        registry.pull("bad-test", tmp_path)
    assert "\n" not in str(err.value)
    assert not (tmp_path / "bad-test" / "bad.pt").exists()
    assert not (tmp_path / "bad-test" / "bad.pt.part").exists()
    assert not registry.is_present("bad-test", tmp_path)


def test_a_published_sha256_prefix_is_checked_like_demucs_does(server, tmp_path, monkeypatch):
    """Demucs publishes only the first 8 hex digits of each checkpoint's sha256 (in its
    file name): a file that matches them is kept, one that does not is removed."""
    data = b"a separation checkpoint"
    (server.root / "good.th").write_bytes(data)
    for name, prefix in (("prefix-ok", sha(data)[:8]), ("prefix-bad", "0" * 8)):
        monkeypatch.setitem(registry.REGISTRY, name, ModelSpec(name, "", (
            ModelFile(f"{server.url}/good.th", "good.th", sha256=prefix),)))
    assert (registry.pull("prefix-ok", tmp_path) / "good.th").read_bytes() == data
    with pytest.raises(StageError, match="failed its sha256 check"):
        registry.pull("prefix-bad", tmp_path)
    assert not registry.is_present("prefix-bad", tmp_path)


def test_http_error_is_one_line(server, tmp_path, monkeypatch):
    spec = ModelSpec("gone-test", "", (ModelFile(f"{server.url}/missing.pt", "missing.pt"),))
    monkeypatch.setitem(registry.REGISTRY, spec.name, spec)
    with pytest.raises(StageError, match=r"gone-test: downloading missing.pt failed: HTTP 404") as err:
        registry.pull("gone-test", tmp_path)
    assert "\n" not in str(err.value)
    assert len(server.requests) == 1  # a 404 is not retried


def test_stalled_server_times_out(server, tmp_path, monkeypatch):
    (server.root / "slow.pt").write_bytes(b"x" * 100)
    spec = ModelSpec("slow-test", "", (ModelFile(f"{server.url}/slow.pt", "slow.pt"),))
    monkeypatch.setitem(registry.REGISTRY, spec.name, spec)
    monkeypatch.setattr(registry, "TIMEOUT_S", 0.2)
    server.stall_s = 1.0
    started = time.monotonic()
    with pytest.raises(StageError, match="downloading slow.pt failed.*timed out"):
        registry.pull("slow-test", tmp_path)
    assert time.monotonic() - started < 0.2 * registry.DOWNLOAD_ATTEMPTS + 2
    assert len(server.requests) == registry.DOWNLOAD_ATTEMPTS


def test_unknown_model_is_an_input_error(tmp_path):
    with pytest.raises(InputError, match="unknown model 'whisper-huge'.*whisper-tiny"):
        registry.pull("whisper-huge", tmp_path)
    with pytest.raises(InputError):
        registry.model_dir("nope", tmp_path)


def test_registry_matches_upstream_locations(tmp_path):
    import whisper

    expected = {"latentsync-1.5", "latentsync-1.6", "sd-vae-ft-mse", "xtts-v2", "htdemucs", "whisper-tiny",
                "whisper-base", "whisper-small", "whisper-medium", "whisper-large-v3"}
    assert expected <= set(registry.REGISTRY)
    for size in ("tiny", "base", "small", "medium", "large-v3"):
        (file,) = registry.REGISTRY[f"whisper-{size}"].files
        assert file.url == whisper._MODELS[size]
        assert file.sha256 == whisper._MODELS[size].split("/")[-2] and len(file.sha256) == 64
        assert file.path == f"{size}.pt"
    latentsync = registry.REGISTRY["latentsync-1.5"].files
    assert [f.path for f in latentsync] == ["latentsync_unet.pt", "whisper/tiny.pt"]
    assert latentsync[0].url == "https://huggingface.co/ByteDance/LatentSync-1.5/resolve/main/latentsync_unet.pt"
    (demucs,) = registry.REGISTRY["htdemucs"].files  # as demucs.pretrained would fetch "htdemucs"
    assert demucs.url == "https://dl.fbaipublicfiles.com/demucs/hybrid_transformer/955717e8-8726e21a.th"
    assert demucs.path == "955717e8-8726e21a.th" and demucs.sha256 == "8726e21a"
    xtts = {f.path for f in registry.REGISTRY["xtts-v2"].files}
    assert xtts == {"config.json", "model.pth", "vocab.json", "speakers_xtts.pth", "dvae.pth", "mel_stats.pth"}
    rows = registry.list_models(tmp_path)
    assert {r["name"] for r in rows} == set(registry.REGISTRY)
    assert not any(r["present"] for r in rows) and all(r["size"] == 0 for r in rows)


def test_verify_loads_present_models_strictly(tmp_path):
    """A whisper checkpoint and a LatentSync folder laid out as `pull` leaves them: the first
    loads; a UNet whose keys do not match the published config is reported, not hidden."""
    import shutil

    from polydub.weights import verify_all
    from tests.tiny_models import build_demucs, build_lipsync_models, build_whisper

    build_whisper(tmp_path / "whisper-tiny" / "tiny.pt")
    build_demucs(tmp_path / "htdemucs", name="955717e8-8726e21a.th")
    build_lipsync_models(tmp_path / "lip")
    shutil.move(str(tmp_path / "lip" / "latentsync-1.5"), tmp_path / "latentsync-1.5")
    rows = {r["name"]: r for r in verify_all(tmp_path)}
    assert rows["whisper-tiny"]["ok"], rows
    assert rows["htdemucs"]["ok"] and "stems drums, bass, other, vocals, 44100 Hz" in rows["htdemucs"]["message"]
    assert not rows["latentsync-1.5"]["ok"]
    assert "does not match the LatentSync UNet config" in rows["latentsync-1.5"]["message"]
    assert "sd-vae-ft-mse" not in rows  # not present: not verified


@pytest.mark.slow  # two processes that import torch
def test_tiny_models_from_the_command_line_land_where_pull_puts_the_real_ones(tmp_path):
    """`python tests/tiny_models.py NAME DIR`: anyone can check the wiring offline; what it
    writes loads through the same code as a pulled model."""
    import subprocess
    import sys

    from polydub.weights import verify_all
    from tests.conftest import REPO

    def tiny(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, str(REPO / "tests" / "tiny_models.py"), *args], capture_output=True,
                              text=True, timeout=300, cwd=tmp_path)

    for name in ("whisper-tiny", "htdemucs"):
        made = tiny(name, str(tmp_path / "models"))
        assert made.returncode == 0, made.stderr
        assert made.stdout.startswith(f"{name}: tiny random weights in {tmp_path / 'models' / name}")
    rows = {r["name"]: r for r in verify_all(tmp_path / "models")}
    assert rows["whisper-tiny"]["ok"] and rows["htdemucs"]["ok"], rows
    again = tiny("whisper-tiny", str(tmp_path / "models"))
    assert again.returncode == 2 and "exists; choose an empty folder" in again.stderr
    unknown = tiny("gpt-5", str(tmp_path / "x"))
    assert unknown.returncode == 2 and unknown.stderr.startswith("usage: python tests/tiny_models.py NAME DIR")
    assert not (tmp_path / "x").exists()
