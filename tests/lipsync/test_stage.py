"""The lip-sync stage end to end on CPU: tiny random-weight UNet/VAE/whisper, real ffmpeg and Face Mesh."""

from __future__ import annotations

import subprocess
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from polydub.errors import InputError
from polydub.lipsync import face, warp
from polydub.lipsync.stage import LipSyncModels, can_run, lipsync_video
from polydub.lipsync.video import LOSSLESS_ARGS
from tests.lipsync.conftest import (
    BLACK_FRAMES,
    CLIP_FRAMES,
    CLIP_SIZE,
    decode_frames,
    encode_frames,
)
from tests.tiny_models import TINY_UNET

pytestmark = pytest.mark.slow  # stage runs on the CPU

RES = 64
LANGS = {"es": 220, "fr": 330, "de": 440}  # a tone per language (Hz)


def tone(path: Path, freq: int, seconds: float = 2.0) -> Path:
    subprocess.run(["ffmpeg", "-hide_banner", "-loglevel", "error", "-y", "-f", "lavfi", "-i",
                    f"sine=frequency={freq}:duration={seconds}", "-ar", "48000", str(path)],
                   check=True, timeout=60)
    return path


def fps_of(path: Path) -> str:
    return subprocess.run(["ffprobe", "-v", "error", "-select_streams", "v:0", "-show_entries",
                           "stream=r_frame_rate", "-of", "csv=p=0", str(path)],
                          capture_output=True, text=True, check=True, timeout=60).stdout.strip()


def in_frame(matrix: np.ndarray, u: float, v: float) -> tuple[int, int]:
    """Frame pixel (x, y) of the aligned-face point (u, v)."""
    x, y = cv2.transform(np.array([[[u, v]]]), cv2.invertAffineTransform(matrix))[0, 0]
    return int(round(x)), int(round(y))


@pytest.fixture(scope="module")
def models(tiny_models_dir) -> LipSyncModels:
    return LipSyncModels.load(tiny_models_dir, "1.5", device="cpu", unet_config=TINY_UNET)


@pytest.fixture(scope="module")
def run(tmp_path_factory, astronaut_clip, models):
    """One stage run for three languages, counting the face detection passes; then es and fr
    each alone (the same settings), what each language's file must hold."""
    clip, frames = astronaut_clip
    tmp = tmp_path_factory.mktemp("stage")
    audio = {lang: tone(tmp / f"{lang}.wav", f) for lang, f in LANGS.items()}
    outs = {lang: tmp / f"out.{lang}.mkv" for lang in reversed(LANGS)}  # not in the audio's order
    passes = []
    real_track_face = face.track_face

    def counting_track_face(*args, **kwargs):
        passes.append(1)
        return real_track_face(*args, **kwargs)

    settings = dict(res=RES, num_steps=2, codec_args=LOSSLESS_ARGS, chunks_per_batch=2)  # 16+4 | 16+10 frames
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(face, "track_face", counting_track_face)
        result = lipsync_video(clip, audio, outs, models, tmp / "track.npz", **settings)
        mtime = (tmp / "track.npz").stat().st_mtime_ns
        alone = {lang: tmp / f"again.{lang}.mkv" for lang in ("es", "fr")}
        again = lipsync_video(clip, {"es": audio["es"]}, {"es": alone["es"]}, models, tmp / "track.npz", **settings)
        lipsync_video(clip, {"fr": audio["fr"]}, {"fr": alone["fr"]}, models, tmp / "track.npz", **settings)
    return dict(result=result, again=again, passes=len(passes), frames=frames, outs=outs, tmp=tmp, alone=alone,
                track=face.FaceTrack.load(tmp / "track.npz"), mtime=mtime)


def test_same_frames_size_and_fps_out(run):
    assert run["result"]["frames"] == CLIP_FRAMES
    assert run["result"]["face_frames"] == CLIP_FRAMES - len(BLACK_FRAMES)
    for lang, path in run["outs"].items():
        assert run["result"]["outputs"][lang] == str(path)
        assert decode_frames(path).shape == (CLIP_FRAMES, CLIP_SIZE, CLIP_SIZE, 3)
        assert fps_of(path) == "25/1"
        assert not list(run["tmp"].glob("*partial*"))


def test_only_the_lower_face_changes(run):
    track, source = run["track"], run["frames"]
    h, w = source.shape[1:3]
    ys, xs = np.mgrid[:h, :w]
    for lang, path in run["outs"].items():
        out = decode_frames(path)
        for i in (0, 17, 30, 49):
            m = track.matrices[i]
            u, v = np.einsum("ij,jhw->ihw", m, np.stack([xs, ys, np.ones_like(xs)]))
            # the reference's blend reaches a pixel past the crop on its right and lower edges
            mu, mv = 2 * np.abs(m[:, :2]).sum(1)  # two frame pixels in aligned units
            outside = (u < -1 - mu) | (u > RES + mu) | (v < -1 - mv) | (v > RES + mv)
            assert np.array_equal(out[i][outside], source[i][outside]), (lang, i)
            diff = np.abs(out[i].astype(int) - source[i])
            mx, my = in_frame(m, RES * 0.5, RES * 0.72)  # the mouth
            assert diff[my - 3: my + 4, mx - 3: mx + 4].mean() > 15, (lang, i)
            # above the mask the face is only warped there and back, as if it were unchanged
            frame = torch.from_numpy(source[i][None].copy())
            unchanged = warp.paste_faces(frame, warp.align_faces(frame, m[None], RES), m[None])[0].numpy()
            ex, ey = in_frame(m, RES * 0.3, RES * 0.2)  # an eye
            eye = np.s_[ey - 3: ey + 4, ex - 3: ex + 4]
            assert np.abs(out[i][eye].astype(int) - unchanged[eye]).max() <= 1, (lang, i)


def test_each_language_is_in_its_own_file(run):
    """Each language's file holds that language's mouth: what the language gives alone, and
    not another's (es and fr alone pin every language: no mix-up of three leaves both in place)."""
    outs = {lang: decode_frames(path).astype(int) for lang, path in run["outs"].items()}
    assert not np.array_equal(outs["es"][0], outs["fr"][0])
    for lang, path in run["alone"].items():
        alone = decode_frames(path).astype(int)
        diffs = {other: np.abs(out - alone).mean() for other, out in outs.items()}
        # batch size may move a pixel value by one here and there; another language's mouth is far off
        assert all(diffs[other] > 10 * diffs[lang] for other in outs if other != lang), (lang, diffs)


def test_frames_without_a_face_pass_through(run):
    assert not run["track"].has_face[list(BLACK_FRAMES)].any()
    for path in run["outs"].values():
        out = decode_frames(path)
        for i in BLACK_FRAMES:
            assert np.array_equal(out[i], run["frames"][i])


def test_faces_are_tracked_once_for_all_languages(run):
    assert run["passes"] == 1
    assert run["result"]["track"] == "computed" and run["again"]["track"] == "reused"
    assert (run["tmp"] / "track.npz").stat().st_mtime_ns == run["mtime"]
    assert decode_frames(run["alone"]["es"]).shape[0] == CLIP_FRAMES


def test_other_frame_rates_are_resampled_to_25(tmp_path, models):
    clip = encode_frames(np.zeros((36, 64, 96, 3), np.uint8), tmp_path / "blank30.mkv", fps=30)  # 1.2 s
    result = lipsync_video(clip, {"es": tone(tmp_path / "es.wav", 220, 1.2)}, {"es": tmp_path / "es.mkv"},
                           models, tmp_path / "track.npz", res=RES, num_steps=1, codec_args=LOSSLESS_ARGS)
    assert result["frames"] == 30 and result["face_frames"] == 0
    out = decode_frames(tmp_path / "es.mkv")
    assert out.shape == (30, 64, 96, 3) and not out.any()
    assert fps_of(tmp_path / "es.mkv") == "25/1"


def test_bad_input_is_one_line(tmp_path, astronaut_clip, models):
    clip, _ = astronaut_clip
    with pytest.raises(InputError, match="no dubbed audio for es"):
        lipsync_video(clip, {"es": tmp_path / "none.wav"}, {"es": tmp_path / "es.mkv"}, models,
                      tmp_path / "track.npz", res=RES)
    with pytest.raises(InputError, match="languages differ"):
        lipsync_video(clip, {"es": tmp_path / "none.wav"}, {"fr": tmp_path / "fr.mkv"}, models,
                      tmp_path / "track.npz", res=RES)
    with pytest.raises(InputError, match="no such video"):
        lipsync_video(tmp_path / "missing.mp4", {"es": tone(tmp_path / "es.wav", 220)},
                      {"es": tmp_path / "es.mkv"}, models, tmp_path / "track.npz", res=RES)


def test_missing_weights_are_named(tmp_path):
    with pytest.raises(InputError, match=r"latentsync-1.6/latentsync_unet.pt.*sd-vae-ft-mse"):
        LipSyncModels.load(tmp_path, "1.6", device="cpu")
    ok, reason = can_run(tmp_path)
    assert not ok
    if torch.cuda.is_available():
        assert reason.startswith("weights missing: ") and "tiny.pt" in reason
    else:
        assert reason.startswith("no CUDA device")


def test_cpu_can_be_chosen_explicitly(tiny_models_dir, monkeypatch):
    monkeypatch.setenv("DUB_LIPSYNC_DEVICE", "cpu")
    ok, reason = can_run(tiny_models_dir)
    assert ok and reason == "LatentSync 1.5 on cpu"


def test_models_load_from_a_models_dir(models):
    assert models.res == 64 and models.mask.shape == (1, 1, 64, 64)  # from polydub.json
    assert models.mask.min() == 0 and models.mask.max() == 1
    assert models.whisper.dims.n_audio_state == 384
