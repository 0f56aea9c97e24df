"""The LatentSync 1.5/1.6 UNet: Stable Diffusion 1.5's UNet inflated to video (AnimateDiff
motion modules), conditioned on whisper audio features instead of text.

Input (B, 13, F, H, W) = [noisy latents 4, mask 1, masked-face latents 4, reference latents 4];
output (B, 4, F, H, W), the predicted noise. Built from the `model:` section of LatentSync's
`configs/unet/*.yaml`; parameter names match the published `latentsync_unet.pt`.

DeepCache (optional speed-up): a full pass can also return the hidden state that enters the
last layer of the last up block (the shallowest up layer), shape (B, C0, F, H, W) with C0 =
block_out_channels[0]. Passing it back as `cached_features` skips everything but `conv_in`
and that one layer (its skip is the fresh `conv_in` output), then `conv_norm_out`/`conv_out`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from polydub.lipsync.unet_blocks import DownBlock, FrameConv, MidBlock, UpBlock

TIME_EMBED_MULT = 4  # temb width = 4 x block_out_channels[0]
MAX_PERIOD = 10000


@dataclass
class UNetConfig:
    in_channels: int = 13
    out_channels: int = 4
    block_out_channels: tuple[int, ...] = (320, 640, 1280, 1280)
    down_block_types: tuple[str, ...] = ("CrossAttnDownBlock3D",) * 3 + ("DownBlock3D",)
    up_block_types: tuple[str, ...] = ("UpBlock3D",) + ("CrossAttnUpBlock3D",) * 3
    layers_per_block: int = 2
    attention_head_dim: int | tuple[int, ...] = 8  # the number of heads (diffusers' legacy name)
    cross_attention_dim: int = 384
    norm_num_groups: int = 32
    norm_eps: float = 1e-5
    flip_sin_to_cos: bool = True
    freq_shift: float = 0
    downsample_padding: int = 1
    mid_block_scale_factor: float = 1.0
    center_input_sample: bool = False
    use_motion_module: bool = True
    motion_module_resolutions: tuple[int, ...] = (1, 2, 4, 8)
    motion_module_mid_block: bool = False
    motion_module_decoder_only: bool = False
    motion_module_kwargs: dict | None = None

    @classmethod
    def from_dict(cls, config: dict) -> UNetConfig:
        """Accepts LatentSync's YAML `model:` mapping; unknown keys are ignored, values that
        would change the architecture in ways this module does not implement are refused."""
        required = {"act_fn": "silu", "resnet_time_scale_shift": "default", "add_audio_layer": True,
                    "mid_block_type": "UNetMidBlock3DCrossAttn", "motion_module_type": "Vanilla",
                    "use_inflated_groupnorm": False}
        for key, value in required.items():
            if key in config and config[key] != value:
                raise ValueError(f"unsupported UNet config: {key}={config[key]!r} (expected {value!r})")
        names = {f.name for f in fields(cls)}
        c = cls(**{k: v for k, v in config.items() if k in names})
        c.norm_eps = float(c.norm_eps)  # YAML 1.1 reads `1e-5` as a string
        c.freq_shift = float(c.freq_shift)
        c.block_out_channels = tuple(int(x) for x in c.block_out_channels)
        c.down_block_types, c.up_block_types = tuple(c.down_block_types), tuple(c.up_block_types)
        c.motion_module_resolutions = tuple(c.motion_module_resolutions)
        n = len(c.block_out_channels)
        if len(c.down_block_types) != n or len(c.up_block_types) != n:
            raise ValueError("unsupported UNet config: one down and one up block per block_out_channels entry")
        bad = set(c.down_block_types) - {"CrossAttnDownBlock3D", "DownBlock3D"}
        bad |= set(c.up_block_types) - {"CrossAttnUpBlock3D", "UpBlock3D"}
        if bad:
            raise ValueError(f"unsupported UNet block types: {sorted(bad)}")
        return c

    def heads(self, level: int) -> int:
        h = self.attention_head_dim
        return int(h) if isinstance(h, (int, float, str)) else int(h[level])

    def motion(self) -> dict:
        """Keyword arguments of MotionModule from `motion_module_kwargs`."""
        kw = dict(self.motion_module_kwargs or {})
        types = list(kw.get("attention_block_types", ["Temporal_Self", "Temporal_Self"]))
        if any(t != "Temporal_Self" for t in types) or int(kw.get("temporal_attention_dim_div", 1)) != 1:
            raise ValueError(f"unsupported motion module config: {kw}")
        positional = kw.get("temporal_position_encoding", False)
        return {"heads": int(kw.get("num_attention_heads", 8)), "groups": self.norm_num_groups,
                "num_blocks": int(kw.get("num_transformer_block", 2)), "num_attentions": len(types),
                "max_frames": int(kw.get("temporal_position_encoding_max_len", 24)) if positional else None,
                "zero_init": bool(kw.get("zero_initialize", True))}


def timestep_embedding(timesteps: Tensor, dim: int, flip_sin_to_cos: bool = True, shift: float = 0.0) -> Tensor:
    """(N,) diffusion timesteps -> (N, dim) sinusoids (diffusers' `get_timestep_embedding`)."""
    half = dim // 2
    exponent = -math.log(MAX_PERIOD) * torch.arange(half, dtype=torch.float32, device=timesteps.device)
    args = timesteps[:, None].float() * torch.exp(exponent / (half - shift))[None]
    emb = torch.cat([torch.cos(args), torch.sin(args)] if flip_sin_to_cos else [torch.sin(args), torch.cos(args)], -1)
    return F.pad(emb, (0, 1)) if dim % 2 else emb


class TimestepEmbedding(nn.Module):
    """Linear -> SiLU -> Linear (keys `linear_1`, `linear_2`)."""

    def __init__(self, in_dim: int, dim: int):
        super().__init__()
        self.linear_1 = nn.Linear(in_dim, dim)
        self.linear_2 = nn.Linear(dim, dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.linear_2(F.silu(self.linear_1(x)))


class LipSyncUNet(nn.Module):
    """conv_in -> down blocks -> mid block -> up blocks (with skips) -> GN, SiLU, conv_out."""

    def __init__(self, config: UNetConfig):
        super().__init__()
        self.config = c = config
        channels = c.block_out_channels
        levels = len(channels)
        temb_dim = channels[0] * TIME_EMBED_MULT
        common = {"audio_dim": c.cross_attention_dim, "groups": c.norm_num_groups, "eps": c.norm_eps}
        motion = c.motion() if c.use_motion_module else None

        self.conv_in = FrameConv(c.in_channels, channels[0], 3, padding=1)
        self.time_embedding = TimestepEmbedding(channels[0], temb_dim)

        self.down_blocks = nn.ModuleList()
        for i, kind in enumerate(c.down_block_types):
            with_motion = 2**i in c.motion_module_resolutions and not c.motion_module_decoder_only
            self.down_blocks.append(DownBlock(
                channels[max(i - 1, 0)], channels[i], temb_dim, c.layers_per_block,
                cross_attention=kind.startswith("CrossAttn"), heads=c.heads(i),
                motion=motion if with_motion else None, downsample=i < levels - 1,
                downsample_padding=c.downsample_padding, **common))

        self.mid_block = MidBlock(channels[-1], temb_dim, heads=c.heads(-1),
                                  motion=motion if c.motion_module_mid_block else None,
                                  output_scale=c.mid_block_scale_factor, **common)

        self.up_blocks = nn.ModuleList()
        reversed_channels = channels[::-1]
        for i, kind in enumerate(c.up_block_types):
            with_motion = 2 ** (levels - 1 - i) in c.motion_module_resolutions
            self.up_blocks.append(UpBlock(
                reversed_channels[min(i + 1, levels - 1)], reversed_channels[max(i - 1, 0)],
                reversed_channels[i], temb_dim, c.layers_per_block + 1,
                cross_attention=kind.startswith("CrossAttn"), heads=c.heads(levels - 1 - i),
                motion=motion if with_motion else None, upsample=i < levels - 1, **common))

        self.conv_norm_out = nn.GroupNorm(c.norm_num_groups, channels[0], eps=c.norm_eps)
        self.conv_out = FrameConv(channels[0], c.out_channels, 3, padding=1)
        self.max_frames = motion["max_frames"] if motion else None

    @classmethod
    def from_config(cls, config: dict) -> LipSyncUNet:
        return cls(UNetConfig.from_dict(config))

    def forward(self, sample: Tensor, timestep: Tensor | float, encoder_hidden_states: Tensor,
                cached_features: Tensor | None = None,
                return_features: bool = False) -> Tensor | tuple[Tensor, Tensor]:
        """sample (B, 13, F, H, W); timestep scalar or (B,); encoder_hidden_states (B*F, 50, 384)
        batch-major -> predicted noise (B, 4, F, H, W).

        cached_features: the DeepCache features of an earlier full pass on the same batch; the
        deep part of the UNet is then skipped. return_features: also return this pass's
        features, i.e. `(noise, features)`.
        """
        b, _, f = sample.shape[:3]
        if self.max_frames and f > self.max_frames:
            raise ValueError(f"a chunk holds at most {self.max_frames} frames, got {f}")
        if encoder_hidden_states.shape[0] != b * f:
            raise ValueError(f"encoder_hidden_states has {encoder_hidden_states.shape[0]} rows, "
                             f"expected batch x frames = {b * f}")
        if self.config.center_input_sample:
            sample = 2 * sample - 1.0
        t = torch.as_tensor(timestep, device=sample.device)
        t = t.reshape(1).expand(b) if t.ndim == 0 else t.expand(b)
        t_emb = timestep_embedding(t, self.config.block_out_channels[0], self.config.flip_sin_to_cos,
                                   self.config.freq_shift)
        temb = self.time_embedding(t_emb.to(sample.dtype))
        audio = encoder_hidden_states.to(sample.dtype)

        x = self.conv_in(sample)
        last = self.up_blocks[-1]
        if cached_features is None:
            skips = [x]
            for block in self.down_blocks:
                x, block_skips = block(x, temb, audio)
                skips += block_skips
            x = self.mid_block(x, temb, audio)
            for block in self.up_blocks[:-1]:
                n = len(block.resnets)
                block_skips, skips = skips[-n:], skips[:-n]
                x = block(x, block_skips, temb, audio, upsample_size=skips[-1].shape[-2:])
            # the last up block, layer by layer, to keep the input of its last layer
            n = len(last.resnets)
            for i in range(n - 1):
                x = last.layer(i, x, skips[-1 - i], temb, audio)
            features = x
            x = last.layer(n - 1, x, skips[0], temb, audio)
        else:
            features = cached_features
            x = last.layer(len(last.resnets) - 1, cached_features.to(x.dtype), x, temb, audio)

        noise = self.conv_out(F.silu(self.conv_norm_out(x)))
        return (noise, features) if return_features else noise
