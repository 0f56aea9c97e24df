"""Spatial transformer of the LatentSync UNet: per-frame self-attention, then cross-attention
to the audio features, then a GEGLU feed-forward (diffusers' key names)."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

SPATIAL_NORM_EPS = 1e-6


def attention(q: Tensor, k: Tensor, v: Tensor, heads: int) -> Tensor:
    """Multi-head scaled dot-product attention. q (N, Lq, C), k/v (N, Lk, C) -> (N, Lq, C)."""
    n, lq, c = q.shape
    q, k, v = (x.reshape(n, x.shape[1], heads, c // heads).transpose(1, 2) for x in (q, k, v))
    out = F.scaled_dot_product_attention(q, k, v)
    return out.transpose(1, 2).reshape(n, lq, c)


class Attention(nn.Module):
    """Self-attention (context None) or cross-attention to `context` (N, L, context_dim)."""

    def __init__(self, dim: int, heads: int, context_dim: int | None = None):
        super().__init__()
        self.heads = heads
        self.to_q = nn.Linear(dim, dim, bias=False)
        self.to_k = nn.Linear(context_dim or dim, dim, bias=False)
        self.to_v = nn.Linear(context_dim or dim, dim, bias=False)
        self.to_out = nn.ModuleList([nn.Linear(dim, dim), nn.Dropout(0.0)])

    def forward(self, x: Tensor, context: Tensor | None = None) -> Tensor:
        context = x if context is None else context
        out = attention(self.to_q(x), self.to_k(context), self.to_v(context), self.heads)
        return self.to_out[0](out)


class GEGLU(nn.Module):
    """Linear C -> 2*inner, split, `a * gelu(b)`."""

    def __init__(self, dim: int, inner: int):
        super().__init__()
        self.proj = nn.Linear(dim, inner * 2)

    def forward(self, x: Tensor) -> Tensor:
        a, gate = self.proj(x).chunk(2, dim=-1)
        return a * F.gelu(gate)


class FeedForward(nn.Module):
    """GEGLU C -> 4C, then Linear 4C -> C (keys `net.0.proj`, `net.2`)."""

    def __init__(self, dim: int, mult: int = 4):
        super().__init__()
        self.net = nn.ModuleList([GEGLU(dim, dim * mult), nn.Dropout(0.0), nn.Linear(dim * mult, dim)])

    def forward(self, x: Tensor) -> Tensor:
        for layer in self.net:
            x = layer(x)
        return x


class TransformerBlock(nn.Module):
    """x += attn1(LN x); x += attn2(LN x, audio); x += FF(LN x). Tokens (B*F, H*W, C)."""

    def __init__(self, dim: int, heads: int, audio_dim: int):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn1 = Attention(dim, heads)
        self.norm2 = nn.LayerNorm(dim)
        self.attn2 = Attention(dim, heads, context_dim=audio_dim)
        self.norm3 = nn.LayerNorm(dim)
        self.ff = FeedForward(dim)

    def forward(self, x: Tensor, audio: Tensor) -> Tensor:
        x = x + self.attn1(self.norm1(x))
        x = x + self.attn2(self.norm2(x), audio)
        return x + self.ff(self.norm3(x))


class SpatialTransformer(nn.Module):
    """Per-frame GroupNorm -> 1x1 proj_in -> blocks -> 1x1 proj_out -> + residual.

    x (B, C, F, H, W); audio (B*F, L, audio_dim), batch-major, one row of audio per frame.
    """

    def __init__(self, dim: int, heads: int, audio_dim: int, groups: int):
        super().__init__()
        self.norm = nn.GroupNorm(groups, dim, eps=SPATIAL_NORM_EPS)
        self.proj_in = nn.Conv2d(dim, dim, kernel_size=1)
        self.transformer_blocks = nn.ModuleList([TransformerBlock(dim, heads, audio_dim)])
        self.proj_out = nn.Conv2d(dim, dim, kernel_size=1)

    def forward(self, x: Tensor, audio: Tensor) -> Tensor:
        b, c, f, h, w = x.shape
        frames = x.transpose(1, 2).reshape(b * f, c, h, w)  # (b f) order matches the audio rows
        tokens = self.proj_in(self.norm(frames)).permute(0, 2, 3, 1).reshape(b * f, h * w, c)
        for block in self.transformer_blocks:
            tokens = block(tokens, audio)
        out = self.proj_out(tokens.reshape(b * f, h, w, c).permute(0, 3, 1, 2)) + frames
        return out.reshape(b, f, c, h, w).transpose(1, 2)
