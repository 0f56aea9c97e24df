"""The denoising loop: languages batched through the UNet, CFG, DeepCache, VAE composite."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from diffusers import AutoencoderKL
from PIL import Image

from polydub.errors import InputError
from polydub.lipsync.pipeline import LipSyncPipeline, load_vae

from .test_unet import tiny_unet

RES = 64
FRAMES = 4
STEPS = 3
ASSETS = Path(__file__).resolve().parents[2] / "polydub" / "lipsync" / "assets"
ALIGNED_FACE = Path(__file__).parent / "data" / "astronaut_aligned_64.png"


def tiny_vae() -> AutoencoderKL:
    torch.manual_seed(0)
    return AutoencoderKL(down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
                         block_out_channels=(8, 8, 8, 8), layers_per_block=1, latent_channels=4,
                         norm_num_groups=4, sample_size=RES).eval()


def training_mask() -> torch.Tensor:
    """mask.png at RES, (1, 1, RES, RES), 1 = keep."""
    image = Image.open(ASSETS / "mask.png").convert("L").resize((RES, RES), Image.NEAREST)
    return torch.from_numpy(np.array(image) / 255.0).float()[None, None]


def aligned_faces() -> torch.Tensor:
    """(FRAMES, 3, RES, RES) in [-1, 1]: an aligned face, slightly brighter each frame."""
    face = torch.from_numpy(np.array(Image.open(ALIGNED_FACE).convert("RGB"))).permute(2, 0, 1).float()
    face = face / 127.5 - 1
    return torch.stack([(face + 0.05 * i).clamp(-1, 1) for i in range(FRAMES)])


def speech(seed: int) -> torch.Tensor:
    return torch.randn(FRAMES, 50, 384, generator=torch.Generator().manual_seed(seed))


class UNetCalls:
    """Counts real UNet calls (batch sizes) and full passes (the mid block runs only then)."""

    def __init__(self, unet):
        self.batches, self.full = [], 0
        unet.register_forward_hook(lambda m, args, out: self.batches.append(args[0].shape[0]))
        unet.mid_block.register_forward_hook(lambda *_: setattr(self, "full", self.full + 1))


@pytest.fixture(scope="module")
def faces():
    return aligned_faces()


def run(faces, audio, **options):
    unet = tiny_unet()
    calls = UNetCalls(unet)
    pipe = LipSyncPipeline(unet, tiny_vae(), training_mask(), num_steps=options.pop("num_steps", STEPS), **options)
    latents = pipe.prepare_faces(faces, generator=torch.Generator().manual_seed(0))
    out = pipe.sync(latents, audio, pipe.initial_noise(RES, RES), faces)
    return out, calls


def test_ddim_timesteps_match_the_reference():
    pipe = LipSyncPipeline(tiny_unet(), tiny_vae(), training_mask())
    assert pipe.timesteps == list(range(951, 0, -50))


@pytest.mark.slow
def test_prepare_faces_shapes_and_mask():
    pipe = LipSyncPipeline(tiny_unet(), tiny_vae(), training_mask())
    faces = aligned_faces()
    latents = pipe.prepare_faces(faces, generator=torch.Generator().manual_seed(0))
    assert latents.masked.shape == latents.reference.shape == (FRAMES, 4, RES // 8, RES // 8)
    assert latents.mask.shape == (1, 1, RES // 8, RES // 8)
    assert set(latents.mask.unique().tolist()) == {0.0, 1.0}  # the mouth region is regenerated
    assert latents.masked.device.type == "cpu"
    assert (latents.masked - latents.reference).abs().mean() > 1e-3
    again = pipe.prepare_faces(faces, generator=torch.Generator().manual_seed(0))
    assert torch.equal(again.reference, latents.reference)
    noise = pipe.initial_noise(RES, RES)
    assert noise.shape == (1, 4, 1, RES // 8, RES // 8)
    assert torch.equal(noise, pipe.initial_noise(RES, RES, seed=1247))
    with pytest.raises(ValueError, match="audio for es must be"):
        pipe.sync(latents, {"es": speech(1)[:2]}, noise, faces)
    with pytest.raises(ValueError, match="noise must be"):
        pipe.sync(latents, {"es": speech(1)}, pipe.initial_noise(RES // 8, RES // 8), faces)


@pytest.mark.slow
def test_languages_share_one_unet_call_per_step(faces):
    audio = {"es": speech(1), "fr": speech(2), "de": speech(1)}  # de speaks like es
    out, calls = run(faces, audio)
    assert calls.batches == [6] * STEPS  # 3 languages x (unconditional, conditional)
    mask = training_mask()[0, 0].bool()
    for language, frames in out.items():
        assert frames.shape == (FRAMES, 3, RES, RES) and frames.device.type == "cpu"
        assert frames.min() >= -1 and frames.max() <= 1
        assert torch.equal(frames[:, :, mask], faces[:, :, mask])  # kept pixels are the input's
        assert (frames[:, :, ~mask] - faces[:, :, ~mask]).abs().mean() > 0.05  # the mouth is redrawn
    assert (out["es"] - out["fr"]).abs().max() > 1e-3  # the audio steers the mouth
    torch.testing.assert_close(out["es"], out["de"], atol=1e-4, rtol=0)  # batch items stay independent

    split, split_calls = run(faces, audio, max_batch=4)
    assert split_calls.batches == [4, 2] * STEPS
    for language in audio:
        torch.testing.assert_close(split[language], out[language], atol=1e-4, rtol=0)

    plain, plain_calls = run(faces, {"es": speech(1)}, guidance_scale=1.0)
    assert plain_calls.batches == [1] * STEPS  # no unconditional branch without guidance
    assert (plain["es"] - out["es"]).abs().max() > 1e-3


@pytest.mark.slow
def test_chunks_batched_together_match_chunks_alone(faces):
    unet = tiny_unet()
    calls = UNetCalls(unet)
    pipe = LipSyncPipeline(unet, tiny_vae(), training_mask(), num_steps=STEPS)
    other = faces.flip(0)  # a second chunk: other faces, other audio
    chunks = []
    for chunk_faces, audio in ((faces, {"es": speech(1)}), (other, {"es": speech(3)})):
        latents = pipe.prepare_faces(chunk_faces, generator=torch.Generator().manual_seed(0))
        chunks.append((latents, audio, chunk_faces))
    noise = pipe.initial_noise(RES, RES)
    together = pipe.sync_chunks(chunks, noise)
    assert calls.batches == [4] * STEPS  # 2 chunks x (unconditional, conditional)
    alone = [pipe.sync(lat, audio, noise, f) for lat, audio, f in chunks]
    for batched, single in zip(together, alone):
        torch.testing.assert_close(batched["es"], single["es"], atol=1e-5, rtol=0)
    assert (together[0]["es"] - together[1]["es"]).abs().max() > 1e-2
    short = (chunks[0][0], {"es": speech(1)[:2]}, faces[:2])
    with pytest.raises(ValueError, match="same length|must be"):
        pipe.sync_chunks([chunks[0], short], noise)


@pytest.mark.slow
def test_deep_cache_runs_the_full_unet_every_third_step(faces):
    audio = {"es": speech(1), "fr": speech(2)}
    full, full_calls = run(faces, audio, num_steps=4)
    cached, cached_calls = run(faces, audio, num_steps=4, deep_cache=3)
    assert full_calls.full == 4
    assert cached_calls.batches == [4] * 4 and cached_calls.full == 2  # steps 0 and 3
    assert not torch.equal(cached["es"], full["es"])
    # close to the uncached result: ten times closer than a different noise draw
    pipe = LipSyncPipeline(tiny_unet(), tiny_vae(), training_mask(), num_steps=4)
    latents = pipe.prepare_faces(faces, generator=torch.Generator().manual_seed(0))
    reseeded = pipe.sync(latents, audio, pipe.initial_noise(RES, RES, seed=5), faces)
    mouth = ~training_mask()[0, 0].bool()
    for language in audio:
        gap = (cached[language] - full[language])[:, :, mouth].abs().mean()
        assert gap < 0.1 * (reseeded[language] - full[language])[:, :, mouth].abs().mean()


def test_load_vae_from_a_local_folder(tmp_path):
    vae = tiny_vae()
    vae.save_pretrained(tmp_path / "sd-vae-ft-mse")
    loaded = load_vae(tmp_path / "sd-vae-ft-mse")
    z = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(loaded.decode(z).sample, vae.decode(z).sample)
    with pytest.raises(InputError, match="VAE not found"):
        load_vae(tmp_path / "absent")
