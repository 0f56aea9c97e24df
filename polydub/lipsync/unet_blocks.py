"""Resnets, resamplers and the down/mid/up blocks of the LatentSync UNet.

Tensors are (B, C, F, H, W). Convolutions are 2-D, applied to every frame; resnet GroupNorms
see the whole 5-D tensor, so their statistics are shared by all F frames of a chunk.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from polydub.lipsync.attention import SpatialTransformer
from polydub.lipsync.motion import MotionModule


class FrameConv(nn.Conv2d):
    """A 2-D convolution applied to each frame of (B, C, F, H, W)."""

    def forward(self, x: Tensor) -> Tensor:
        b, c, f, h, w = x.shape
        y = super().forward(x.transpose(1, 2).reshape(b * f, c, h, w))
        return y.reshape(b, f, *y.shape[1:]).transpose(1, 2)


class ResnetBlock(nn.Module):
    """GN -> SiLU -> conv1 -> + Linear(SiLU(temb)) -> GN -> SiLU -> conv2, plus the (1x1
    projected) input, divided by `output_scale`."""

    def __init__(self, in_channels: int, out_channels: int, temb_channels: int, groups: int, eps: float,
                 output_scale: float = 1.0):
        super().__init__()
        self.output_scale = output_scale
        self.norm1 = nn.GroupNorm(groups, in_channels, eps=eps)
        self.conv1 = FrameConv(in_channels, out_channels, 3, padding=1)
        self.time_emb_proj = nn.Linear(temb_channels, out_channels)
        self.norm2 = nn.GroupNorm(groups, out_channels, eps=eps)
        self.conv2 = FrameConv(out_channels, out_channels, 3, padding=1)
        self.conv_shortcut = FrameConv(in_channels, out_channels, 1) if in_channels != out_channels else None

    def forward(self, x: Tensor, temb: Tensor) -> Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = h + self.time_emb_proj(F.silu(temb))[:, :, None, None, None]
        h = self.conv2(F.silu(self.norm2(h)))
        skip = x if self.conv_shortcut is None else self.conv_shortcut(x)
        return (skip + h) / self.output_scale


class Downsample(nn.Module):
    """3x3 conv, stride 2, per frame."""

    def __init__(self, channels: int, padding: int = 1):
        super().__init__()
        self.conv = FrameConv(channels, channels, 3, stride=2, padding=padding)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(x)


class Upsample(nn.Module):
    """Nearest x2 in space (to `size`, the matching skip's H, W), then a 3x3 conv."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = FrameConv(channels, channels, 3, padding=1)

    def forward(self, x: Tensor, size: tuple[int, int]) -> Tensor:
        return self.conv(F.interpolate(x, size=(x.shape[2], *size), mode="nearest"))


def _motion_modules(enabled: bool, count: int, channels: int, motion: dict) -> nn.ModuleList:
    return nn.ModuleList([MotionModule(channels, **motion) for _ in range(count)] if enabled else [])


class DownBlock(nn.Module):
    """`layers` x (resnet -> spatial transformer -> motion module), then an optional stride-2
    downsample. Returns the output and every intermediate state (the skips for the up path)."""

    def __init__(self, in_channels: int, out_channels: int, temb_channels: int, layers: int, *,
                 cross_attention: bool, heads: int, audio_dim: int, groups: int, eps: float,
                 motion: dict | None, downsample: bool, downsample_padding: int = 1):
        super().__init__()
        self.resnets = nn.ModuleList([
            ResnetBlock(in_channels if i == 0 else out_channels, out_channels, temb_channels, groups, eps)
            for i in range(layers)])
        self.attentions = nn.ModuleList(
            [SpatialTransformer(out_channels, heads, audio_dim, groups) for _ in range(layers)]
            if cross_attention else [])
        self.motion_modules = _motion_modules(motion is not None, layers, out_channels, motion or {})
        self.downsamplers = nn.ModuleList(
            [Downsample(out_channels, downsample_padding)] if downsample else [])

    def forward(self, x: Tensor, temb: Tensor, audio: Tensor) -> tuple[Tensor, list[Tensor]]:
        skips = []
        for i, resnet in enumerate(self.resnets):
            x = resnet(x, temb)
            if self.attentions:
                x = self.attentions[i](x, audio)
            if self.motion_modules:
                x = self.motion_modules[i](x)
            skips.append(x)
        for downsampler in self.downsamplers:
            x = downsampler(x)
            skips.append(x)
        return x, skips


class MidBlock(nn.Module):
    """resnet, then `layers` x (spatial transformer -> [motion module] -> resnet)."""

    def __init__(self, channels: int, temb_channels: int, layers: int = 1, *, heads: int, audio_dim: int,
                 groups: int, eps: float, motion: dict | None, output_scale: float = 1.0):
        super().__init__()
        self.resnets = nn.ModuleList([
            ResnetBlock(channels, channels, temb_channels, groups, eps, output_scale)
            for _ in range(layers + 1)])
        self.attentions = nn.ModuleList(
            [SpatialTransformer(channels, heads, audio_dim, groups) for _ in range(layers)])
        self.motion_modules = _motion_modules(motion is not None, layers, channels, motion or {})

    def forward(self, x: Tensor, temb: Tensor, audio: Tensor) -> Tensor:
        x = self.resnets[0](x, temb)
        for i, (attn, resnet) in enumerate(zip(self.attentions, self.resnets[1:])):
            x = attn(x, audio)
            if self.motion_modules:
                x = self.motion_modules[i](x)
            x = resnet(x, temb)
        return x


class UpBlock(nn.Module):
    """`layers` x (concat skip -> resnet -> spatial transformer -> motion module), then an
    optional nearest-x2 upsample."""

    def __init__(self, in_channels: int, prev_channels: int, out_channels: int, temb_channels: int,
                 layers: int, *, cross_attention: bool, heads: int, audio_dim: int, groups: int,
                 eps: float, motion: dict | None, upsample: bool):
        super().__init__()
        self.resnets = nn.ModuleList()
        for i in range(layers):
            skip_channels = in_channels if i == layers - 1 else out_channels
            x_channels = prev_channels if i == 0 else out_channels
            self.resnets.append(ResnetBlock(x_channels + skip_channels, out_channels, temb_channels, groups, eps))
        self.attentions = nn.ModuleList(
            [SpatialTransformer(out_channels, heads, audio_dim, groups) for _ in range(layers)]
            if cross_attention else [])
        self.motion_modules = _motion_modules(motion is not None, layers, out_channels, motion or {})
        self.upsamplers = nn.ModuleList([Upsample(out_channels)] if upsample else [])

    def layer(self, i: int, x: Tensor, skip: Tensor, temb: Tensor, audio: Tensor) -> Tensor:
        """Layer i: x and its skip (from the down path) -> (B, out_channels, F, H, W)."""
        x = self.resnets[i](torch.cat([x, skip], dim=1), temb)
        if self.attentions:
            x = self.attentions[i](x, audio)
        if self.motion_modules:
            x = self.motion_modules[i](x)
        return x

    def forward(self, x: Tensor, skips: list[Tensor], temb: Tensor, audio: Tensor,
                upsample_size: tuple[int, int] | None = None) -> Tensor:
        """`skips` are consumed last first; `upsample_size` is the next level's (H, W)."""
        for i in range(len(self.resnets)):
            x = self.layer(i, x, skips[-1 - i], temb, audio)
        for upsampler in self.upsamplers:
            x = upsampler(x, upsample_size or (2 * x.shape[-2], 2 * x.shape[-1]))
        return x

