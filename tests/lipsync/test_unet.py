"""The LatentSync UNet: checkpoint layout, shapes, and the numerics the checkpoint relies on."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from diffusers.models.embeddings import Timesteps

from polydub.errors import InputError
from polydub.lipsync.pipeline import MANIFEST, load_unet, unet_config
from polydub.lipsync.unet import LipSyncUNet, timestep_embedding

FRAMES = 5
BATCH = 2
LATENT = 8  # latent height and width (64 px faces)
TINY_CONFIG = {
    **unet_config(),
    "block_out_channels": [32, 32, 64, 64],
    "norm_num_groups": 8,
    "attention_head_dim": 2,
    "motion_module_kwargs": {**unet_config()["motion_module_kwargs"], "num_attention_heads": 2,
                             "zero_initialize": False},  # random temporal layers, not identities
}


def tiny_unet(seed: int = 0, **overrides) -> LipSyncUNet:
    torch.manual_seed(seed)
    return LipSyncUNet.from_config({**TINY_CONFIG, **overrides}).eval()


def unet_inputs(seed: int = 1, batch: int = BATCH, frames: int = FRAMES) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    sample = torch.randn(batch, 13, frames, LATENT, LATENT, generator=g)
    audio = torch.randn(batch * frames, 50, 384, generator=g)
    return sample, audio


@torch.no_grad()
def test_real_config_builds_exactly_the_checkpoint_layout():
    manifest = json.loads(MANIFEST.read_text())
    with torch.device("meta"):
        unet = LipSyncUNet.from_config({**manifest["config"], "norm_eps": "1e-5"})  # as PyYAML reads it
    state = unet.state_dict()
    expected = manifest["state_dict_shapes"]
    assert sorted(state) == sorted(expected)
    assert {k: list(v.shape) for k, v in state.items()} == expected
    assert sum(v.numel() for v in state.values()) == manifest["params"]
    assert unet.down_blocks[0].resnets[0].norm1.eps == 1e-5
    assert unet.down_blocks[0].attentions[0].norm.eps == 1e-6
    # 8 heads of C/8 in the spatial transformers and the motion modules
    assert unet.down_blocks[1].attentions[0].transformer_blocks[0].attn2.heads == 8
    assert unet.up_blocks[0].motion_modules[0].temporal_transformer.transformer_blocks[0].attention_blocks[0].heads == 8


@torch.no_grad()
def test_forward_shape_and_timestep_forms():
    unet = tiny_unet()
    sample, audio = unet_inputs()
    eps = unet(sample, 500, audio)
    assert eps.shape == (BATCH, 4, FRAMES, LATENT, LATENT)
    assert torch.isfinite(eps).all()
    torch.testing.assert_close(unet(sample, torch.tensor(500), audio), eps)
    torch.testing.assert_close(unet(sample, torch.tensor([500, 500]), audio), eps)
    per_item = unet(sample, torch.tensor([500, 20]), audio)
    torch.testing.assert_close(per_item[0], eps[0])
    assert not torch.allclose(per_item[1], eps[1], atol=1e-4)
    with pytest.raises(ValueError, match="expected batch x frames = 10"):
        unet(sample, 500, audio[:FRAMES])


@torch.no_grad()
def test_checkpoint_round_trip_is_strict(tmp_path: Path):
    unet = tiny_unet(seed=3)
    path = tmp_path / "latentsync_unet.pt"
    torch.save({"global_step": 7, "state_dict": unet.state_dict()}, path)
    loaded = load_unet(path, config=TINY_CONFIG)
    sample, audio = unet_inputs()
    assert torch.equal(loaded(sample, 301, audio), unet(sample, 301, audio))

    state = unet.state_dict()
    state.pop("conv_out.bias")
    torch.save({"global_step": 7, "state_dict": state}, path)
    with pytest.raises(InputError, match=r"1 missing keys \(first: conv_out.bias\)"):
        load_unet(path, config=TINY_CONFIG)
    with pytest.raises(InputError, match="does not match"):  # the tiny weights against the real layout
        load_unet(path)
    with pytest.raises(InputError, match="not found"):
        load_unet(tmp_path / "absent.pt")
    (tmp_path / "truncated.pt").write_bytes(path.read_bytes()[:1000])
    with pytest.raises(InputError, match="cannot read LatentSync UNet checkpoint"):
        load_unet(tmp_path / "truncated.pt")


@torch.no_grad()
def test_resnet_norms_share_statistics_over_frames():
    """Without motion modules, frames interact only through the resnet GroupNorms, which see
    the whole chunk: identical frames behave like one frame, and changing frame 3 moves frame 0."""
    unet = tiny_unet(use_motion_module=False)
    sample, audio = unet_inputs()
    one = unet(sample[:, :, :1], 400, audio.view(BATCH, FRAMES, 50, 384)[:, :1].flatten(0, 1))
    same = sample[:, :, :1].expand(-1, -1, FRAMES, -1, -1)
    same_audio = audio.view(BATCH, FRAMES, 50, 384)[:, :1].expand(-1, FRAMES, -1, -1).flatten(0, 1)
    repeated = unet(same, 400, same_audio)
    for f in range(FRAMES):
        torch.testing.assert_close(repeated[:, :, f], one[:, :, 0], atol=1e-5, rtol=1e-4)

    changed = sample.clone()
    changed[:, :, 3] += 2.0
    base, moved = unet(sample, 400, audio), unet(changed, 400, audio)
    assert (moved[:, :, 0] - base[:, :, 0]).abs().max() > 1e-3
    # batch items stay separate: changing item 1 leaves item 0 alone
    changed_item = sample.clone()
    changed_item[1] += 2.0
    torch.testing.assert_close(unet(changed_item, 400, audio)[0], base[0], atol=1e-6, rtol=1e-5)


@torch.no_grad()
def test_motion_modules_see_frame_positions():
    """Identical frames come out different only through the temporal position encoding."""
    unet = tiny_unet()
    sample, audio = unet_inputs()
    same = sample[:, :, :1].expand(-1, -1, FRAMES, -1, -1)
    same_audio = audio.view(BATCH, FRAMES, 50, 384)[:, :1].expand(-1, FRAMES, -1, -1).flatten(0, 1)
    out = unet(same, 400, same_audio)
    assert (out[:, :, 0] - out[:, :, 4]).abs().max() > 1e-3

    pe = unet.down_blocks[0].motion_modules[0].temporal_transformer.transformer_blocks[0] \
        .attention_blocks[1].pos_encoder.pe
    assert pe.shape == (1, 24, 32)
    p, i = 5, 3
    assert pe[0, p, 2 * i].item() == pytest.approx(math.sin(p * math.exp(-2 * i * math.log(10000) / 32)), abs=1e-6)
    assert pe[0, p, 2 * i + 1].item() == pytest.approx(math.cos(p * math.exp(-2 * i * math.log(10000) / 32)), abs=1e-6)
    long_sample, long_audio = unet_inputs(batch=1, frames=25)
    with pytest.raises(ValueError, match="at most 24 frames"):
        unet(long_sample, 400, long_audio)


@torch.no_grad()
def test_audio_conditions_each_batch_item():
    unet = tiny_unet()
    sample, audio = unet_inputs()
    base = unet(sample, 600, audio)
    other = audio.clone()
    other[FRAMES:] = torch.randn(FRAMES, 50, 384, generator=torch.Generator().manual_seed(9))  # item 1 only
    changed = unet(sample, 600, other)
    torch.testing.assert_close(changed[0], base[0], atol=1e-6, rtol=1e-5)
    assert (changed[1] - base[1]).abs().mean() > 1e-3
    silent = unet(sample, 600, torch.zeros_like(audio))
    assert (silent - base).abs().mean() > 1e-3


def test_time_embedding_matches_diffusers():
    t = torch.tensor([1.0, 251.0, 951.0])
    ours = timestep_embedding(t, 320, flip_sin_to_cos=True, shift=0)
    reference = Timesteps(320, flip_sin_to_cos=True, downscale_freq_shift=0)(t)
    torch.testing.assert_close(ours, reference)


@torch.no_grad()
def test_deep_cache_features_reproduce_the_full_pass():
    """Reusing the features of a pass on the same input recomputes exactly its last layer."""
    unet = tiny_unet()
    sample, audio = unet_inputs()
    eps, features = unet(sample, 700, audio, return_features=True)
    assert features.shape == (BATCH, 32, FRAMES, LATENT, LATENT)
    torch.testing.assert_close(unet(sample, 700, audio), eps)
    torch.testing.assert_close(unet(sample, 700, audio, cached_features=features), eps, atol=1e-5, rtol=1e-4)
    # later step: new noisy latents and timestep, stale deep features
    later = unet(sample * 0.9, 650, audio, cached_features=features)
    assert later.shape == eps.shape and not torch.allclose(later, eps)


@torch.no_grad()
def test_bfloat16_follows_float32():
    unet = tiny_unet()
    sample, audio = unet_inputs()
    full = unet(sample, 500, audio)
    half = unet.to(torch.bfloat16)(sample.bfloat16(), 500, audio.bfloat16())
    assert half.dtype == torch.bfloat16
    assert ((half.float() - full).abs().mean() / full.abs().mean()).item() < 0.05
