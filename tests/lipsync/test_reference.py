"""Stage by stage against a plain re-computation of the reference inference (fp32, CPU, tiny models).

The reference computation below follows bytedance/LatentSync's inference step by step
(similarity transform from three points, crop resize, mask, posterior-sample VAE encode,
13-channel UNet input, DDIM with classifier-free guidance, decode, composite), written out
independently of polydub's pipeline. Every stage must agree to 1e-4 relative.
"""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from diffusers import DDIMScheduler

from polydub.lipsync.face import align_matrix
from polydub.lipsync.pipeline import SCHEDULER, LipSyncPipeline
from polydub.lipsync.stage import load_mask

from .test_pipeline import FRAMES, RES, STEPS, aligned_faces, speech, tiny_vae
from .test_unet import tiny_unet

SCALE = 0.18215
GUIDANCE = 1.5
RELATIVE = 1e-4


def offset_vae():
    """The tiny VAE with its first activations moved far from zero, as a trained VAE's are; a
    random one's sit near zero and hide the CPU GroupNorm's one-pass variance."""
    vae = tiny_vae()
    with torch.no_grad():
        vae.encoder.conv_in.bias.add_(10.0)
    return vae


def assert_relative(ours: torch.Tensor | np.ndarray, reference: torch.Tensor | np.ndarray, what: str) -> None:
    ours, reference = torch.as_tensor(ours).double(), torch.as_tensor(reference).double()
    assert ours.shape == reference.shape, what
    error = ((ours - reference).abs().max() / reference.abs().max()).item()
    assert error < RELATIVE, f"{what}: {error:.2e} relative"


def reference_transform(points: np.ndarray, res: int) -> np.ndarray:
    """The reference's transformation_from_points (no smoothing) into the int(75r) x int(100r)
    crop, then cv2.resize's pixel-centre mapping onto res x res."""
    r = res / 256 * 2.8
    template = torch.tensor([[17.0, 20.0], [58.0, 20.0], [37.5, 40.0]], dtype=torch.float64) * r
    p1 = torch.tensor(points, dtype=torch.float64)
    c1, c2 = p1.mean(0), template.mean(0)
    s1, s2 = (p1 - c1).std(), (template - c2).std()
    u, _, v = torch.svd(((p1 - c1) / s1).T @ ((template - c2) / s2))
    rotation = v @ u.T
    if torch.det(rotation) < 0:
        v[:, -1] = -v[:, -1]
        rotation = v @ u.T
    crop = torch.cat([(s2 / s1) * rotation, (c2 - (s2 / s1) * rotation @ c1)[:, None]], 1).numpy()
    width, height = int(75 * r), int(100 * r)
    sx, sy = res / width, res / height
    # x_res = (x_crop + 0.5) * sx - 0.5
    return np.array([[sx, 0, 0.5 * sx - 0.5], [0, sy, 0.5 * sy - 0.5]]) @ np.vstack([crop, [0, 0, 1]])


@pytest.mark.parametrize("res", [64, 256, 512])
def test_alignment_from_injected_anchors(res):
    anchors = np.array([[101.3, 140.7], [187.9, 133.2], [146.1, 181.4]])  # a slightly tilted face
    assert_relative(align_matrix(anchors, res), reference_transform(anchors, res), f"alignment at {res}")


class Recorder:
    """What the UNet and the VAE decoder see: hooks on our own modules."""

    def __init__(self, unet, vae):
        self.unet_inputs, self.latents, self.decoded = [], [], []
        unet.register_forward_hook(lambda m, args, out: self.unet_inputs.append(args[0].clone()))
        vae.post_quant_conv.register_forward_pre_hook(lambda m, args: self.latents.append(args[0].clone()))
        vae.decoder.register_forward_hook(lambda m, args, out: self.decoded.append(out.clone()))


@torch.no_grad()
def reference_run(unet, vae, mask_hw: torch.Tensor, faces: torch.Tensor, audio: torch.Tensor, seed: int) -> dict:
    """One chunk, one language, as the reference inference does it."""
    generator = torch.Generator().manual_seed(0)
    mask3 = mask_hw.expand(3, -1, -1)  # the reference's mask image has 3 channels
    masked = faces * mask3
    mask_latent = F.interpolate(mask_hw[None, None].expand(FRAMES, 1, -1, -1), size=(RES // 8, RES // 8))
    masked_latents = vae.encode(masked).latent_dist.sample(generator=generator) * SCALE
    ref_latents = vae.encode(faces).latent_dist.sample(generator=generator) * SCALE
    to_video = lambda x: x.transpose(0, 1)[None]  # "f c h w -> 1 c f h w"
    mask_latent, masked_latents, ref_latents = map(to_video, (mask_latent, masked_latents, ref_latents))
    scheduler = DDIMScheduler(**SCHEDULER)
    scheduler.set_timesteps(STEPS)
    noise = torch.randn((1, 4, 1, RES // 8, RES // 8), generator=torch.Generator().manual_seed(seed))
    latents = noise.repeat(1, 1, FRAMES, 1, 1) * scheduler.init_noise_sigma
    speech_in = torch.cat([torch.zeros_like(audio), audio])
    inputs = []
    for t in scheduler.timesteps:
        unet_input = torch.cat([latents] * 2)
        unet_input = torch.cat([unet_input] + [torch.cat([c] * 2) for c in (mask_latent, masked_latents, ref_latents)], 1)
        inputs.append(unet_input)
        uncond, cond = unet(unet_input, int(t), speech_in).chunk(2)
        latents = scheduler.step(uncond + GUIDANCE * (cond - uncond), t, latents, eta=0.0).prev_sample
    z = (latents / SCALE)[0].transpose(0, 1)  # "b c f h w -> (b f) c h w"
    decoded = vae.decode(z).sample
    composite = decoded * (1 - mask3) + faces * mask3
    return {"masked": masked_latents, "reference": ref_latents, "inputs": inputs, "latents": z,
            "decoded": decoded, "composite": composite.clamp(-1, 1)}


@pytest.mark.slow
def test_every_stage_matches_the_reference():
    mask = load_mask(RES)
    pixels = np.ascontiguousarray(((aligned_faces() + 1) * 127.5).round().byte().permute(0, 2, 3, 1).numpy())
    # handed over in channels_last (as a permuted view of HWC frames is): the pipeline must give
    # its VAE contiguous input whatever layout it is given
    faces = (torch.from_numpy(pixels).permute(0, 3, 1, 2).float() / 127.5 - 1).contiguous(
        memory_format=torch.channels_last)
    reference_faces = torch.stack([torch.from_numpy(p).permute(2, 0, 1) for p in pixels]).float() / 255
    # torchvision's Normalize([0.5], [0.5]); contiguous: the CPU GroupNorm's exact (two-pass) variance
    reference_faces = ((reference_faces - 0.5) / 0.5).contiguous()
    audio = speech(1)
    unet, vae = tiny_unet(), offset_vae()
    recorder = Recorder(unet, vae)
    pipe = LipSyncPipeline(unet, vae, mask, num_steps=STEPS, guidance_scale=GUIDANCE, audio_shape=(50, 384))
    latents = pipe.prepare_faces(faces, generator=torch.Generator().manual_seed(0))
    out = pipe.sync(latents, {"es": audio}, pipe.initial_noise(RES, RES), faces)["es"]
    ours_unet_inputs, ours_latents, ours_decoded = recorder.unet_inputs, recorder.latents, recorder.decoded
    recorder.unet_inputs, recorder.latents, recorder.decoded = [], [], []

    ref = reference_run(unet, vae, mask[0, 0], reference_faces, audio, seed=1247)
    assert_relative(faces, reference_faces, "faces")
    assert_relative(latents.masked, ref["masked"][0].transpose(0, 1), "masked-face latents")
    assert_relative(latents.reference, ref["reference"][0].transpose(0, 1), "reference latents")
    assert len(ours_unet_inputs) == len(ref["inputs"]) == STEPS
    for step, (a, b) in enumerate(zip(ours_unet_inputs, ref["inputs"])):
        assert a.shape == (2, 13, FRAMES, RES // 8, RES // 8)
        assert_relative(a, b, f"13-channel UNet input at step {step}")
    assert_relative(ours_latents[0], ref["latents"], "latents after the DDIM loop")
    assert_relative(ours_decoded[0], ref["decoded"], "decoded faces")
    assert_relative(out, ref["composite"], "composite")


def test_channels_last_faces_would_drift():
    """Why the VAE gets contiguous input: in channels_last the same faces drift on the CPU."""
    vae = offset_vae()
    faces = aligned_faces()
    with torch.no_grad():
        plain = vae.encode(faces.contiguous()).latent_dist.mean
        strided = vae.encode(faces.contiguous(memory_format=torch.channels_last)).latent_dist.mean
    assert ((plain - strided).abs().max() / plain.abs().max()).item() > 2 * RELATIVE


# --- Paste-back: the reference's restore_img (kornia and torchvision on the GPU), re-derived with
# numpy and cv2: an antialiased bicubic resize as PIL and torchvision compute it, a bilinear
# inverse warp with pixel centres at integers (kornia's align_corners=True), cv2's erosions
# and Gaussian blur with the reference's sizes and sigma.


def pil_bicubic_weights(n_out: int, n_in: int) -> np.ndarray:
    """(n_out, n_in) antialiased bicubic resize along one axis (a = -0.5, support widened by
    the scale when shrinking), as PIL's and torchvision's antialias=True compute it."""
    def cubic(x):
        x = np.abs(x)
        return np.where(x < 1, ((1.5 * x - 2.5) * x) * x + 1,
                        np.where(x < 2, ((-0.5 * x + 2.5) * x - 4) * x + 2, 0.0))

    scale = n_in / n_out
    stretch = max(scale, 1.0)
    weights = np.zeros((n_out, n_in))
    for i in range(n_out):
        centre = (i + 0.5) * scale
        lo, hi = max(int(centre - 2 * stretch + 0.5), 0), min(int(centre + 2 * stretch + 0.5), n_in)
        taps = cubic((np.arange(lo, hi) - centre + 0.5) / stretch)
        weights[i, lo:hi] = taps / taps.sum()
    return weights


def bilinear_warp(image: np.ndarray, inverse: np.ndarray, size: tuple[int, int], fill: float) -> np.ndarray:
    """(C, H, W) -> (C, h, w): each output pixel reads the source at inverse @ (x, y, 1) (inverse:
    output pixels -> source pixels), four taps, taps outside the source read `fill`."""
    h, w = size
    ys, xs = np.mgrid[:h, :w].astype(np.float64)
    sx = inverse[0, 0] * xs + inverse[0, 1] * ys + inverse[0, 2]
    sy = inverse[1, 0] * xs + inverse[1, 1] * ys + inverse[1, 2]
    x0, y0 = np.floor(sx).astype(int), np.floor(sy).astype(int)
    fx, fy = sx - x0, sy - y0
    out = np.zeros((image.shape[0], h, w))
    for dx, dy, weight in ((0, 0, (1 - fx) * (1 - fy)), (1, 0, fx * (1 - fy)), (0, 1, (1 - fx) * fy), (1, 1, fx * fy)):
        x, y = x0 + dx, y0 + dy
        inside = (x >= 0) & (x < image.shape[2]) & (y >= 0) & (y < image.shape[1])
        taps = np.where(inside, image[:, np.clip(y, 0, image.shape[1] - 1), np.clip(x, 0, image.shape[2] - 1)], fill)
        out += weight * taps
    return out


def reference_restore(frame: np.ndarray, face: np.ndarray, crop_affine: np.ndarray) -> np.ndarray:
    """restore_img before its uint8 cast, fp32: frame (H, W, 3) uint8, face (3, res, res) in
    [-1, 1], crop_affine frame -> template crop. Returns (3, H, W) float levels."""
    h, w = frame.shape[:2]
    crop_w, crop_h = int(75 * frame_ratio(face)), int(100 * frame_ratio(face))
    resized = pil_bicubic_weights(crop_h, face.shape[1]) @ face @ pil_bicubic_weights(crop_w, face.shape[2]).T
    # each frame pixel reads the crop where crop_affine takes it (kornia warps by the inverse)
    inv_face = np.clip(bilinear_warp(resized, crop_affine, (h, w), fill=127.0) / 2 + 0.5, 0, 1) * 255
    inv_mask = bilinear_warp(np.ones((1, crop_h, crop_w)), crop_affine, (h, w), fill=0.0)[0].astype(np.float32)
    inv_mask_erosion = cv2.erode(inv_mask, np.ones((2, 2), np.uint8))
    pasted_face = inv_mask_erosion * inv_face
    w_edge = int(float(inv_mask_erosion.sum()) ** 0.5) // 20
    inv_mask_center = cv2.erode(inv_mask_erosion, np.ones((w_edge * 2, w_edge * 2), np.uint8))
    blur_size = w_edge * 2 + 1
    sigma = 0.3 * ((blur_size - 1) * 0.5 - 1) + 0.8
    soft = cv2.GaussianBlur(inv_mask_center, (blur_size, blur_size), sigma, borderType=cv2.BORDER_REFLECT_101)
    return soft * pasted_face + (1 - soft) * frame.transpose(2, 0, 1).astype(np.float32)


def frame_ratio(face: np.ndarray) -> float:
    return face.shape[-1] / 256 * 2.8


@pytest.mark.slow
@pytest.mark.parametrize("res", [256, 512])
def test_paste_back_matches_the_reference(res):
    import skimage.data

    from polydub.lipsync import warp
    from polydub.lipsync.face import crop_matrix

    frame = skimage.data.astronaut()  # 512 x 512, the face about 150 px wide
    anchors = np.array([[196.0, 108.0], [262.0, 103.0], [233.0, 160.0]])  # eyebrows and nose, slightly tilted
    matrix = align_matrix(anchors, res)
    face = np.random.default_rng(res).uniform(-1, 1, (3, res, res))  # a very different face
    expected = reference_restore(frame, face, crop_matrix(matrix, res))

    faces = torch.from_numpy(face).float()[None]
    ours = warp.restore(torch.from_numpy(frame).permute(2, 0, 1).float()[None], faces,
                        warp.invert(crop_matrix(matrix, res)[None]))[0].numpy()
    assert_relative(ours, expected, f"paste-back at {res} before the cast to uint8")
    pasted = warp.paste_faces(torch.from_numpy(frame)[None], faces, matrix[None])[0].numpy().transpose(2, 0, 1)
    truncated = expected.astype(np.uint8)  # the reference's cast
    # within the tolerance of an integer level the cast may fall either way
    near_a_level = np.abs(expected - np.round(expected)) < RELATIVE * 255
    assert np.array_equal(pasted[~near_a_level], truncated[~near_a_level])
    assert np.abs(pasted.astype(int) - truncated).max() <= 1
    assert (pasted != frame.transpose(2, 0, 1)).mean() > 0.02  # the face did change
