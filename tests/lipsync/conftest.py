"""Shared fixtures for the lip-sync tests: a tiny random-weight whisper and a short face clip."""

from __future__ import annotations

import subprocess
from dataclasses import asdict
from pathlib import Path

import cv2
import numpy as np
import pytest
import skimage.data
import torch
import whisper
from whisper.model import ModelDimensions, Whisper

CLIP_SIZE = 256  # pixels, square
CLIP_FRAMES = 50  # 2 s at 25 fps
BLACK_FRAMES = range(20, 24)  # no face here: must pass through unchanged
TINY_DIMS = ModelDimensions(n_mels=80, n_audio_ctx=1500, n_audio_state=64, n_audio_head=2,
                            n_audio_layer=4, n_vocab=51865, n_text_ctx=448, n_text_state=64,
                            n_text_head=2, n_text_layer=2)


@pytest.fixture(scope="session")
def tiny_whisper_path(tmp_path_factory) -> Path:
    """A whisper checkpoint with random weights, saved as openai-whisper saves its own."""
    torch.manual_seed(0)
    model = Whisper(TINY_DIMS)
    path = tmp_path_factory.mktemp("whisper") / "tiny.pt"
    torch.save({"dims": asdict(TINY_DIMS), "model_state_dict": model.state_dict()}, path)
    return path


@pytest.fixture(scope="session")
def tiny_whisper(tiny_whisper_path) -> Whisper:
    return whisper.load_model(str(tiny_whisper_path), device="cpu")


def astronaut_frames(n: int = CLIP_FRAMES, size: int = CLIP_SIZE) -> np.ndarray:
    """(n, size, size, 3) uint8: the astronaut's head drifting gently, black at BLACK_FRAMES."""
    photo = skimage.data.astronaut()[:300, 70:370]  # head and shoulders
    base = cv2.resize(photo, (size + 24, size + 24), interpolation=cv2.INTER_AREA)
    frames = np.zeros((n, size, size, 3), np.uint8)
    for i in range(n):
        dx = int(round(12 + 8 * np.sin(2 * np.pi * i / n)))
        dy = int(round(12 + 6 * np.cos(2 * np.pi * i / n)))
        if i not in BLACK_FRAMES:
            frames[i] = base[dy: dy + size, dx: dx + size]
    return frames


def encode_frames(frames: np.ndarray, path: Path, fps: int = 25) -> Path:
    """Write frames losslessly (FFV1 in Matroska) with ffmpeg."""
    _, h, w, _ = frames.shape
    subprocess.run(["ffmpeg", "-hide_banner", "-loglevel", "error", "-y", "-f", "rawvideo",
                    "-pix_fmt", "rgb24", "-s", f"{w}x{h}", "-r", str(fps), "-i", "-",
                    "-c:v", "ffv1", str(path)], input=frames.tobytes(), check=True, timeout=60)
    return path


def decode_frames(path: Path) -> np.ndarray:
    """All frames of a video as (n, h, w, 3) uint8, read with ffprobe + ffmpeg."""
    size = subprocess.run(["ffprobe", "-v", "error", "-select_streams", "v:0", "-show_entries",
                           "stream=width,height", "-of", "csv=p=0", str(path)],
                          capture_output=True, text=True, check=True, timeout=60).stdout
    w, h = (int(v) for v in size.strip().split(",")[:2])
    raw = subprocess.run(["ffmpeg", "-v", "error", "-i", str(path), "-f", "rawvideo",
                          "-pix_fmt", "rgb24", "-"], capture_output=True, check=True, timeout=60).stdout
    return np.frombuffer(raw, np.uint8).reshape(-1, h, w, 3)


@pytest.fixture(scope="session")
def astronaut_clip(tmp_path_factory) -> tuple[Path, np.ndarray]:
    """A 2 s, 25 fps, 256x256 lossless clip of the astronaut, with 4 black frames; and its frames."""
    frames = astronaut_frames()
    return encode_frames(frames, tmp_path_factory.mktemp("clip") / "astronaut.mkv"), frames


TINY_UNET = {
    "in_channels": 13, "out_channels": 4, "block_out_channels": [32, 64], "layers_per_block": 1,
    "down_block_types": ["CrossAttnDownBlock3D", "DownBlock3D"],
    "up_block_types": ["UpBlock3D", "CrossAttnUpBlock3D"],
    "attention_head_dim": 2, "cross_attention_dim": 384, "norm_num_groups": 8, "norm_eps": 1e-5,
    "use_motion_module": True, "motion_module_resolutions": [1, 2],
    "motion_module_kwargs": {"num_attention_heads": 2, "num_transformer_block": 1,
                             "attention_block_types": ["Temporal_Self", "Temporal_Self"],
                             "temporal_position_encoding": True, "temporal_position_encoding_max_len": 24,
                             "temporal_attention_dim_div": 1, "zero_initialize": False},
}
# whisper tiny's audio width (384) and depth (4 blocks -> 5 states -> 10 x 5 = 50 rows per frame),
# which the UNet's cross-attention expects; everything else as small as possible
STAGE_WHISPER_DIMS = ModelDimensions(n_mels=80, n_audio_ctx=1500, n_audio_state=384, n_audio_head=6,
                                     n_audio_layer=4, n_vocab=51865, n_text_ctx=448, n_text_state=64,
                                     n_text_head=2, n_text_layer=1)


@pytest.fixture(scope="session")
def tiny_models_dir(tmp_path_factory) -> Path:
    """A models directory laid out as `dub models pull` writes it, holding tiny random weights."""
    from diffusers import AutoencoderKL

    from polydub.lipsync.unet import LipSyncUNet

    root = tmp_path_factory.mktemp("models")
    version = root / "latentsync-1.5"
    (version / "whisper").mkdir(parents=True)
    torch.manual_seed(0)
    unet = LipSyncUNet.from_config(TINY_UNET)
    torch.save({"global_step": 0, "state_dict": unet.state_dict()}, version / "latentsync_unet.pt")
    audio = Whisper(STAGE_WHISPER_DIMS)
    torch.save({"dims": asdict(STAGE_WHISPER_DIMS), "model_state_dict": audio.state_dict()},
               version / "whisper" / "tiny.pt")
    vae = AutoencoderKL(in_channels=3, out_channels=3, latent_channels=4, layers_per_block=1,
                        down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
                        block_out_channels=(8, 8, 16, 16), norm_num_groups=4)
    vae.save_pretrained(root / "sd-vae-ft-mse")
    return root
