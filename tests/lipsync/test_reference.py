"""Stage by stage against a plain re-computation of the reference inference (fp32, CPU, tiny models).

The reference computation below follows bytedance/LatentSync's inference step by step
(similarity transform from three points, crop resize, mask, posterior-sample VAE encode,
13-channel UNet input, DDIM with classifier-free guidance, decode, composite), written out
independently of polydub's pipeline. Every stage must agree to 1e-4 relative.
"""

from __future__ import annotations

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
