"""The face path as batched tensor operations on the pipeline's device: align a chunk of frames
and paste the synced faces back, with no per-frame Python work.

Same geometry and blend as `face.align_face` / `face.paste_back` (cv2, one frame at a time):
matrices map frame pixels to aligned pixels with pixel centres at integers (cv2's convention).
Alignment is the reference's: bilinear warp into the template crop (grey outside the frame),
truncated to whole levels, Lanczos-4 resize to res x res (as two small matrix products).
Paste-back warps bicubically (A = -0.75, as cv2's INTER_CUBIC).
Frames are (N, H, W, 3) uint8, faces (N, 3, res, res) float in [-1, 1].
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from polydub.lipsync.face import BORDER_VALUE, crop_matrix, crop_size

EDGE_DIVISOR = 20  # blend edge width = sqrt(face area) / 20 pixels, as the reference


def invert(matrices: np.ndarray) -> np.ndarray:
    """Inverse of each 2x3 affine matrix, (N, 2, 3)."""
    a = matrices[:, :, :2]
    inv = np.linalg.inv(a)
    return np.concatenate([inv, -inv @ matrices[:, :, 2:]], axis=2)


def warp(images: Tensor, matrices: np.ndarray, size: tuple[int, int], mode: str = "bicubic",
         fill: float = 0.0) -> Tensor:
    """cv2.warpAffine for a batch: images (N, C, H, W) float, matrices (N, 2, 3) source pixels ->
    output pixels, size (h, w). Taps outside the source read `fill`."""
    n, _, h_in, w_in = images.shape
    h, w = size
    inverse = torch.as_tensor(invert(np.asarray(matrices, np.float64)), dtype=torch.float64, device=images.device)
    ys, xs = torch.meshgrid(torch.arange(h, dtype=torch.float64, device=images.device),
                            torch.arange(w, dtype=torch.float64, device=images.device), indexing="ij")
    points = torch.stack([xs, ys, torch.ones_like(xs)], -1).reshape(-1, 3)  # (h*w, 3)
    source = points @ inverse.transpose(1, 2)  # (N, h*w, 2) in source pixels
    # align_corners=True: -1 and 1 are the centres of the first and last pixels, as in cv2
    grid = source / torch.tensor([w_in - 1, h_in - 1], dtype=torch.float64, device=images.device) * 2 - 1
    grid = grid.reshape(n, h, w, 2).to(images.dtype)
    out = F.grid_sample(images - fill, grid, mode=mode, padding_mode="zeros", align_corners=True)
    return out + fill


def lanczos_weights(n_out: int, n_in: int, device=None) -> Tensor:
    """(n_out, n_in) matrix of cv2.resize's INTER_LANCZOS4 along one axis: 8 taps, pixel centres
    at +0.5, taps past the edge clamped to it."""
    src = (np.arange(n_out) + 0.5) * (n_in / n_out) - 0.5
    base = np.floor(src).astype(int)
    taps = base[:, None] + np.arange(-3, 5)[None]  # (n_out, 8)
    d = src[:, None] - taps
    with np.errstate(divide="ignore", invalid="ignore"):
        w = np.where(np.abs(d) < 1e-9, 1.0, 4 * np.sin(np.pi * d) * np.sin(np.pi * d / 4) / (np.pi * d) ** 2)
    w /= w.sum(1, keepdims=True)
    weights = np.zeros((n_out, n_in))
    np.add.at(weights, (np.repeat(np.arange(n_out), 8), np.clip(taps, 0, n_in - 1).ravel()), w.ravel())
    return torch.as_tensor(weights, dtype=torch.float32, device=device)


def align_faces(frames: Tensor, matrices: np.ndarray, res: int, dtype=torch.float32) -> Tensor:
    """Aligned faces (N, 3, res, res) in [-1, 1] of frames (N, H, W, 3) uint8, made like
    `face.align_face` (quantised to whole levels like its uint8 faces)."""
    images = frames.permute(0, 3, 1, 2).to(torch.float32)
    width, height = crop_size(res)
    crops = warp(images, crop_matrix(matrices, res), (height, width), mode="bilinear", fill=float(BORDER_VALUE[0]))
    crops = crops.clamp_(0, 255).floor_()  # truncated, as the reference's astype(uint8)
    rows = lanczos_weights(res, height, frames.device)
    cols = lanczos_weights(res, width, frames.device)
    faces = (rows @ crops @ cols.T).round_().clamp_(0, 255)
    return (faces / 127.5 - 1).to(dtype).contiguous()


def _footprint(matrices: np.ndarray, res: int, width: int, height: int) -> tuple[int, int, int, int]:
    """(x0, y0, x1, y1): the box in the frame that holds every face of the batch, with a margin."""
    corners = np.array([[-1.0, -1.0, 1.0], [res, -1.0, 1.0], [-1.0, res, 1.0], [res, res, 1.0]])
    points = corners @ invert(matrices).transpose(0, 2, 1)  # (N, 4, 2)
    x0, y0 = np.maximum(np.floor(points.reshape(-1, 2).min(0)).astype(int) - 2, 0)
    x1, y1 = np.minimum(np.ceil(points.reshape(-1, 2).max(0)).astype(int) + 3, [width, height])
    return int(x0), int(y0), int(x1), int(y1)


def _erode(mask: Tensor, size: int) -> Tensor:
    """Square erosion (size x size, size odd) of (N, 1, H, W); the border does not erode (cv2)."""
    rows = F.max_pool2d(-mask, (1, size), stride=1, padding=(0, size // 2))  # separable: 2 size, not size^2
    return -F.max_pool2d(rows, (size, 1), stride=1, padding=(size // 2, 0))


def _gaussian_blur(mask: Tensor, size: int) -> Tensor:
    """cv2.GaussianBlur(mask, (size, size), 0) on (N, 1, H, W): sigma from the size, reflect-101 border."""
    sigma = 0.3 * ((size - 1) * 0.5 - 1) + 0.8
    x = torch.arange(size, dtype=torch.float64, device=mask.device) - (size - 1) / 2
    kernel = torch.exp(-x ** 2 / (2 * sigma ** 2))
    kernel = (kernel / kernel.sum()).to(mask.dtype)
    pad = size // 2
    out = F.conv2d(F.pad(mask, (pad, pad, 0, 0), mode="reflect"), kernel.view(1, 1, 1, size))
    return F.conv2d(F.pad(out, (0, 0, pad, pad), mode="reflect"), kernel.view(1, 1, size, 1))


def paste_faces(frames: Tensor, faces: Tensor, matrices: np.ndarray) -> Tensor:
    """Warp aligned faces (N, 3, res, res) in [-1, 1] back into frames (N, H, W, 3) uint8 and
    blend over an eroded, blurred footprint (see `face.paste_back`); returns (N, H, W, 3) uint8.
    Pixels outside the footprints are left bit-identical."""
    n, height, width, _ = frames.shape
    res = faces.shape[-1]
    matrices = np.asarray(matrices, np.float64)
    x0, y0, x1, y1 = _footprint(matrices, res, width, height)
    out = frames.clone()
    if x1 <= x0 or y1 <= y0:
        return out
    shifted = matrices.copy()
    shifted[:, :, 2] += shifted[:, :, :2] @ np.array([x0, y0], np.float64)  # box pixels -> aligned pixels
    inverse = invert(shifted)
    size = (y1 - y0, x1 - x0)
    face_levels = ((faces.float().clamp(-1, 1) + 1) * 127.5).round()  # the uint8 faces of the CPU path
    restored = warp(face_levels, inverse, size)
    ones = torch.ones((n, 1, res, res), dtype=torch.float32, device=frames.device)
    area = _erode(warp(ones, inverse, size, mode="bilinear"), 3)  # drop the interpolated rim
    edges = [int(math.sqrt(s)) // EDGE_DIVISOR for s in area.sum((1, 2, 3)).tolist()]
    for edge in sorted(set(edges)):  # one pass per distinct edge width (one or two per chunk)
        if edge <= 0:
            continue
        pick = torch.tensor([e == edge for e in edges], device=frames.device)
        blurred = _gaussian_blur(_erode(area[pick], 2 * edge + 1), 2 * edge + 1)
        area[pick] = blurred
    region = out[:, y0:y1, x0:x1].permute(0, 3, 1, 2).float()
    blended = area * restored + (1 - area) * region
    blended = torch.where(area > 0, blended.round().clamp(0, 255), region)
    out[:, y0:y1, x0:x1] = blended.to(torch.uint8).permute(0, 2, 3, 1)
    return out
