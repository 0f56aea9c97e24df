"""The face path as batched tensor operations on the pipeline's device: align a chunk of frames
and paste the synced faces back, with no per-frame Python work.

Same geometry as `face.align_face` (cv2, one frame at a time; `paste_back` is this module's
paste-back on one frame): matrices map frame pixels to aligned pixels with pixel
centres at integers (cv2's convention).
Alignment is the reference's: bilinear warp into the template crop (grey outside the frame),
truncated to whole levels, Lanczos-4 resize to res x res (as two small matrix products).
Paste-back is the reference's too: the face resized back to the template crop (bicubic,
antialiased), warped bilinearly, blended over an eroded, blurred footprint, truncated.
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


def _footprint(matrices: np.ndarray, src_w: int, src_h: int, width: int, height: int) -> tuple[int, int, int, int]:
    """(x0, y0, x1, y1): the box in the frame that holds every face of the batch (source
    images src_w x src_h, `matrices` frame -> source pixels), with a margin."""
    corners = np.array([[-1.0, -1.0, 1.0], [src_w, -1.0, 1.0], [-1.0, src_h, 1.0], [src_w, src_h, 1.0]])
    points = corners @ invert(matrices).transpose(0, 2, 1)  # (N, 4, 2)
    x0, y0 = np.maximum(np.floor(points.reshape(-1, 2).min(0)).astype(int) - 2, 0)
    x1, y1 = np.minimum(np.ceil(points.reshape(-1, 2).max(0)).astype(int) + 3, [width, height])
    return int(x0), int(y0), int(x1), int(y1)


def _erode(mask: Tensor, before: int, after: int) -> Tensor:
    """Erosion of (N, 1, H, W) by a square window from -before to +after pixels (cv2.erode's
    anchor: a 2k kernel reaches k before and k - 1 after); the border does not erode (cv2)."""
    size = before + after + 1
    padded = F.pad(-mask, (before, after, 0, 0), value=-math.inf)
    rows = F.max_pool2d(padded, (1, size), stride=1)  # separable: 2 size taps, not size^2
    return -F.max_pool2d(F.pad(rows, (0, 0, before, after), value=-math.inf), (size, 1), stride=1)


def _gaussian_blur(mask: Tensor, size: int) -> Tensor:
    """The reference's blur of (N, 1, H, W): size x size, sigma from the size (as cv2 sets it
    for sigma 0), reflect-101 border."""
    sigma = 0.3 * ((size - 1) * 0.5 - 1) + 0.8
    x = torch.arange(size, dtype=torch.float64, device=mask.device) - (size - 1) / 2
    kernel = torch.exp(-x ** 2 / (2 * sigma ** 2))
    kernel = (kernel / kernel.sum()).to(mask.dtype)
    pad = size // 2
    out = F.conv2d(F.pad(mask, (pad, pad, 0, 0), mode="reflect"), kernel.view(1, 1, 1, size))
    return F.conv2d(F.pad(out, (0, 0, pad, pad), mode="reflect"), kernel.view(1, 1, size, 1))


def restore(regions: Tensor, faces: Tensor, inverse: np.ndarray) -> Tensor:
    """The reference's paste-back, before its cast to uint8: regions (N, 3, h, w) float of frame
    pixels, faces (N, 3, res, res) in [-1, 1], inverse (N, 2, 3) template-crop -> region pixels.
    Returns (N, 3, h, w) float levels in [0, 255].

    The face is resized to the template crop (bicubic, antialiased), warped back bilinearly
    (grey outside the crop), and blended over the crop's footprint eroded by 2 x 2, then by
    2 * edge (edge = sqrt(footprint area) / 20), then Gaussian-blurred over 2 * edge + 1."""
    n, _, h, w = regions.shape
    res = faces.shape[-1]
    crop_w, crop_h = crop_size(res)
    face = F.interpolate(faces.float(), size=(crop_h, crop_w), mode="bicubic", align_corners=False, antialias=True)
    face = warp(face, inverse, (h, w), mode="bilinear", fill=float(BORDER_VALUE[0]))
    face = (face / 2 + 0.5).clamp(0, 1) * 255
    ones = torch.ones((n, 1, crop_h, crop_w), dtype=torch.float32, device=regions.device)
    footprint = _erode(warp(ones, inverse, (h, w), mode="bilinear"), 1, 0)  # 2 x 2: the interpolated rim
    pasted = footprint * face
    soft = footprint.clone()
    edges = [int(math.sqrt(a)) // EDGE_DIVISOR for a in footprint.sum((1, 2, 3)).tolist()]
    for edge in sorted(set(edges)):  # one pass per distinct edge width (one or two per chunk)
        pick = torch.tensor([e == edge for e in edges], device=regions.device)
        # an edge of 0 makes the reference's kernel empty, which cv2 takes as 3 x 3
        centre = _erode(footprint[pick], *((edge, edge - 1) if edge else (1, 1)))
        soft[pick] = _gaussian_blur(centre, 2 * edge + 1)
    return soft * pasted + (1 - soft) * regions


def paste_faces(frames: Tensor, faces: Tensor, matrices: np.ndarray) -> Tensor:
    """Aligned faces (N, 3, res, res) in [-1, 1] pasted back into frames (N, H, W, 3) uint8 as
    the reference restores a frame (see `restore`), truncated to uint8 as it is; returns
    (N, H, W, 3) uint8. Pixels outside the blended footprint are left bit-identical."""
    n, height, width, _ = frames.shape
    res = faces.shape[-1]
    crops = crop_matrix(np.asarray(matrices, np.float64), res)  # frame -> template-crop pixels
    x0, y0, x1, y1 = _footprint(crops, *crop_size(res), width, height)
    out = frames.clone()
    if x1 <= x0 or y1 <= y0:
        return out
    shifted = crops.copy()
    shifted[:, :, 2] += shifted[:, :, :2] @ np.array([x0, y0], np.float64)  # box pixels -> crop pixels
    region = out[:, y0:y1, x0:x1].permute(0, 3, 1, 2).float()
    blended = restore(region, faces, invert(shifted))
    out[:, y0:y1, x0:x1] = blended.to(torch.uint8).permute(0, 2, 3, 1)  # truncated, as the reference's cast
    return out


def paste_back(frame: np.ndarray, face: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """Paste an aligned face (res, res, 3) uint8 back into the frame (H, W, 3) uint8, one frame
    at a time, as the reference does (`paste_faces` on a batch of one); pixels outside the
    blended footprint are left bit-identical."""
    faces = torch.from_numpy(np.ascontiguousarray(face)).permute(2, 0, 1)[None].float() / 127.5 - 1
    return paste_faces(torch.from_numpy(np.ascontiguousarray(frame))[None], faces, np.asarray(matrix)[None])[0].numpy()
