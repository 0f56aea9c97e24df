"""AnimateDiff-style motion module: self-attention across the frames of a chunk at every
spatial position, with a sinusoidal frame-position encoding (LatentSync's temporal layers)."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from polydub.lipsync.attention import FeedForward, attention

MOTION_NORM_EPS = 1e-6


def frame_position_encoding(dim: int, max_frames: int) -> Tensor:
    """(1, max_frames, dim): pe[0, p, 2i] = sin(p / 10000^(2i/dim)), pe[0, p, 2i+1] = cos(...)."""
    position = torch.arange(max_frames, dtype=torch.float32)[:, None]
    freq = torch.exp(torch.arange(0, dim, 2, dtype=torch.float32) * (-math.log(10000.0) / dim))
    pe = torch.zeros(1, max_frames, dim)
    pe[0, :, 0::2] = torch.sin(position * freq)
    pe[0, :, 1::2] = torch.cos(position * freq)
    return pe


class PositionalEncoding(nn.Module):
    """Adds the first F rows of the buffer `pe` (1, max_frames, C) to x (N, F, C)."""

    def __init__(self, dim: int, max_frames: int):
        super().__init__()
        self.register_buffer("pe", frame_position_encoding(dim, max_frames))

    def forward(self, x: Tensor) -> Tensor:
        return x + self.pe[:, : x.shape[1]].to(x.dtype)


class TemporalAttention(nn.Module):
    """Self-attention over frames. x (N, F, C), N = batch x spatial positions."""

    def __init__(self, dim: int, heads: int, max_frames: int | None):
        super().__init__()
        self.heads = heads
        self.to_q = nn.Linear(dim, dim, bias=False)
        self.to_k = nn.Linear(dim, dim, bias=False)
        self.to_v = nn.Linear(dim, dim, bias=False)
        self.to_out = nn.ModuleList([nn.Linear(dim, dim), nn.Dropout(0.0)])
        self.pos_encoder = PositionalEncoding(dim, max_frames) if max_frames else None

    def forward(self, x: Tensor) -> Tensor:
        if self.pos_encoder is not None:
            x = self.pos_encoder(x)
        return self.to_out[0](attention(self.to_q(x), self.to_k(x), self.to_v(x), self.heads))


class TemporalTransformerBlock(nn.Module):
    """For each attention: x += attn(LN x) (the position encoding is added inside, to the
    normed input only); then x += FF(LN x)."""

    def __init__(self, dim: int, heads: int, num_attentions: int, max_frames: int | None):
        super().__init__()
        self.attention_blocks = nn.ModuleList(
            [TemporalAttention(dim, heads, max_frames) for _ in range(num_attentions)])
        self.norms = nn.ModuleList([nn.LayerNorm(dim) for _ in range(num_attentions)])
        self.ff = FeedForward(dim)
        self.ff_norm = nn.LayerNorm(dim)

    def forward(self, x: Tensor) -> Tensor:
        for attn, norm in zip(self.attention_blocks, self.norms):
            x = x + attn(norm(x))
        return x + self.ff(self.ff_norm(x))


class TemporalTransformer(nn.Module):
    """Per-frame GroupNorm -> Linear proj_in -> blocks -> Linear proj_out -> + residual."""

    def __init__(self, dim: int, heads: int, groups: int, num_blocks: int, num_attentions: int,
                 max_frames: int | None):
        super().__init__()
        self.norm = nn.GroupNorm(groups, dim, eps=MOTION_NORM_EPS)
        self.proj_in = nn.Linear(dim, dim)
        self.transformer_blocks = nn.ModuleList(
            [TemporalTransformerBlock(dim, heads, num_attentions, max_frames) for _ in range(num_blocks)])
        self.proj_out = nn.Linear(dim, dim)

    def forward(self, x: Tensor) -> Tensor:
        b, c, f, h, w = x.shape
        normed = self.norm(x.transpose(1, 2).reshape(b * f, c, h, w)).reshape(b, f, c, h, w)
        # one sequence of F frames per (batch item, spatial position)
        tokens = self.proj_in(normed.permute(0, 3, 4, 1, 2).reshape(b * h * w, f, c))
        for block in self.transformer_blocks:
            tokens = block(tokens)
        tokens = self.proj_out(tokens)
        return x + tokens.reshape(b, h, w, f, c).permute(0, 4, 3, 1, 2)


class MotionModule(nn.Module):
    """x (B, C, F, H, W) -> same shape, mixing information across the F frames.

    With `zero_init` the output projection starts at zero, so a fresh module is the identity
    (AnimateDiff's initialisation; the checkpoint overwrites it).
    """

    def __init__(self, dim: int, heads: int = 8, groups: int = 32, num_blocks: int = 1,
                 num_attentions: int = 2, max_frames: int | None = 24, zero_init: bool = True):
        super().__init__()
        self.temporal_transformer = TemporalTransformer(dim, heads, groups, num_blocks, num_attentions,
                                                        max_frames)
        if zero_init:
            nn.init.zeros_(self.temporal_transformer.proj_out.weight)
            nn.init.zeros_(self.temporal_transformer.proj_out.bias)

    def forward(self, x: Tensor) -> Tensor:
        return self.temporal_transformer(x)
