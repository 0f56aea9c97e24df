"""LatentSync inference: VAE-encode the aligned faces once, run the DDIM denoising loop for
every language at once, decode and composite the regenerated lower face.

Pixel tensors are (F, 3, res, res) in [-1, 1]; latents are (F, 4, res/8, res/8) scaled by
LATENT_SCALE. Everything a caller keeps across chunks (face latents, results) lives on the CPU,
so device memory does not grow with the length of the video; a chunk's results may stay on the
device for its paste-back.
"""

from __future__ import annotations

import json
import pickle
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

from polydub.errors import InputError
from polydub.lipsync.graphs import GraphedCall
from polydub.lipsync.unet import LipSyncUNet

MANIFEST = Path(__file__).parent / "assets" / "unet_state_dict_manifest.json"
LATENT_SCALE = 0.18215  # Stable Diffusion VAE scaling factor (shift 0)
VAE_DOWNSCALE = 8
LATENT_CHANNELS = 4
VAE_FRAMES = 8  # frames per VAE encode/decode call, bounds the VAE's activation memory
SCHEDULER = {"beta_schedule": "scaled_linear", "beta_start": 0.00085, "beta_end": 0.012,
             "num_train_timesteps": 1000, "clip_sample": False, "set_alpha_to_one": False, "steps_offset": 1,
             "prediction_type": "epsilon", "timestep_spacing": "leading"}  # DDIM, eta 0


def unet_config() -> dict:
    """The `model:` config of LatentSync 1.5/1.6 (both share the architecture)."""
    return json.loads(MANIFEST.read_text())["config"]


def load_unet(path: Path, config: dict | None = None, device="cpu", dtype=torch.float32) -> LipSyncUNet:
    """Load `latentsync_unet.pt` ({"global_step", "state_dict"}); every key must match."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"LatentSync UNet checkpoint not found: {path}")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, OSError, EOFError, pickle.UnpicklingError) as e:
        raise InputError(f"cannot read LatentSync UNet checkpoint {path}: {e}") from None
    state = checkpoint.get("state_dict") if isinstance(checkpoint, dict) else None
    if not isinstance(state, dict):
        raise InputError(f"{path} is not a LatentSync UNet checkpoint (no 'state_dict')")
    with torch.device("meta"):  # no time or memory spent on weights that are overwritten
        unet = LipSyncUNet.from_config(config or unet_config())
    expected = {k: tuple(v.shape) for k, v in unet.state_dict().items()}
    missing = sorted(expected.keys() - state.keys())
    unexpected = sorted(state.keys() - expected.keys())
    wrong = sorted(k for k in expected.keys() & state.keys() if tuple(state[k].shape) != expected[k])
    if missing or unexpected or wrong:
        problems = [f"{len(keys)} {what} (first: {keys[0]})"
                    for what, keys in (("missing keys", missing), ("unexpected keys", unexpected),
                                       ("wrong shapes", wrong)) if keys]
        raise InputError(f"{path} does not match the LatentSync UNet config: {', '.join(problems)}")
    unet.load_state_dict(state, strict=True, assign=True)
    return unet.to(device=device, dtype=dtype).eval().requires_grad_(False)


def load_vae(path_or_dir):
    """The Stable Diffusion VAE (`stabilityai/sd-vae-ft-mse`) from a local diffusers folder
    (config.json + weights), or a weights file inside one."""
    from diffusers import AutoencoderKL

    path = Path(path_or_dir)
    folder = path.parent if path.is_file() else path
    if not (folder / "config.json").is_file():
        raise InputError(f"VAE not found: {path} (expected a diffusers folder with config.json)")
    try:
        return AutoencoderKL.from_pretrained(folder, local_files_only=True).eval().requires_grad_(False)
    except (OSError, ValueError) as e:
        raise InputError(f"cannot load the VAE from {folder}: {str(e).splitlines()[0]}") from None


@contextmanager
def tuned_convolutions(device: torch.device):
    """cuDNN times its algorithms for each convolution shape once and keeps the fastest: the
    shapes repeat for every chunk of a video. Left as it was afterwards (other models in the
    process may see a new shape per call)."""
    saved = torch.backends.cudnn.benchmark
    torch.backends.cudnn.benchmark = saved or device.type == "cuda"
    try:
        yield
    finally:
        torch.backends.cudnn.benchmark = saved


@dataclass
class FaceLatents:
    """The audio-independent UNet inputs of one chunk of aligned faces, computed once per
    chunk and shared by every language. On the CPU, float32."""

    masked: Tensor  # (F, 4, h, w) latents of the aligned faces * mask, scaled by LATENT_SCALE
    reference: Tensor  # (F, 4, h, w) latents of the aligned faces (the reference frames)
    mask: Tensor  # (1, 1, h, w) the mask at latent resolution, 1 = keep


class LipSyncPipeline:
    """Denoises the lower face of a chunk of aligned faces for several languages at once.

    Each step runs one UNet batch of 2 x languages items (CFG: zero audio, then the
    language's audio), split into calls of at most `max_batch` items (and halved again
    if the device runs out of memory). `audio_shape` is the per-frame audio window
    (`audio.window_shape` of the encoder's dims); by default any (tokens, C) with C the UNet's
    cross-attention width. `compile` wraps the UNet and the VAE in torch.compile; `cuda_graphs`
    replays the UNet's passes from CUDA graphs (on a CUDA device; see graphs.py). `deep_cache=N > 1`
    runs the full UNet on every N-th step and only its shallowest layers in between (see LipSyncUNet).
    """

    def __init__(self, unet: LipSyncUNet, vae, mask: Tensor, num_steps: int = 20, guidance_scale: float = 1.5,
                 deep_cache: int = 0, device="cpu", dtype=torch.float32, max_batch: int | None = None,
                 audio_shape: tuple[int, int] | None = None, compile: bool = False,
                 cuda_graphs: bool = False):
        from diffusers import DDIMScheduler

        if mask.ndim != 4 or mask.shape[:2] != (1, 1) or mask.shape[2] % VAE_DOWNSCALE:
            raise ValueError(f"mask must be (1, 1, res, res) with res a multiple of 8, got {tuple(mask.shape)}")
        self.device, self.dtype = torch.device(device), dtype
        self.unet = unet.to(device=self.device, dtype=dtype).eval().requires_grad_(False)
        if vae.dtype != dtype:  # diffusers warns about every cast, even a no-op one
            vae = vae.to(dtype=dtype)
        self.vae = vae.to(device=self.device).eval().requires_grad_(False)
        self.mask = mask.detach().float().cpu()
        self.guidance_scale = guidance_scale
        self.deep_cache = deep_cache
        self.max_batch = max_batch
        self.audio_shape = tuple(audio_shape) if audio_shape else None
        self._unet_call = torch.compile(self.unet) if compile else self.unet
        if cuda_graphs and self.device.type == "cuda":
            self._unet_call = GraphedCall(self._unet_call)
        self._vae_encode = torch.compile(self.vae.encode) if compile else self.vae.encode
        self._vae_decode = torch.compile(self.vae.decode) if compile else self.vae.decode
        self.scheduler = DDIMScheduler(**SCHEDULER)
        self.scheduler.set_timesteps(num_steps)
        self.timesteps = [int(t) for t in self.scheduler.timesteps]

    @torch.no_grad()
    def prepare_faces(self, faces: Tensor, generator: torch.Generator | None = None) -> FaceLatents:
        """faces (F, 3, res, res) in [-1, 1], on any device -> their latents and the masked
        faces' latents (a posterior sample, like the reference)."""
        res = self.mask.shape[-1]
        if faces.ndim != 4 or faces.shape[1:] != (3, res, res):
            raise ValueError(f"faces must be (F, 3, {res}, {res}), got {tuple(faces.shape)}")
        faces = faces.detach().float()
        with tuned_convolutions(self.device):
            masked = self._encode(faces * self.mask.to(faces.device), generator)
            reference = self._encode(faces, generator)
        mask = F.interpolate(self.mask, size=(res // VAE_DOWNSCALE, res // VAE_DOWNSCALE), mode="nearest")
        return FaceLatents(masked=masked, reference=reference, mask=mask)

    def initial_noise(self, height: int, width: int, seed: int = 1247) -> Tensor:
        """One (1, 4, 1, height/8, width/8) draw for a face of height x width pixels, shared by
        every frame (repeat over frames) and every language. Drawn on the CPU: the same on any
        device."""
        generator = torch.Generator("cpu").manual_seed(seed)
        shape = (1, LATENT_CHANNELS, 1, height // VAE_DOWNSCALE, width // VAE_DOWNSCALE)
        return torch.randn(shape, generator=generator)

    @torch.no_grad()
    def sync(self, latents: FaceLatents, audio: dict[str, Tensor], noise: Tensor,
             faces: Tensor, keep_on_device: bool = False) -> dict[str, Tensor]:
        """audio: per language (F, tokens, C) features (F, 50, 384 for whisper tiny) of the
        chunk's frames; noise from `initial_noise`; faces: the chunk's aligned faces
        (F, 3, res, res) in [-1, 1]. Returns per language (F, 3, res, res) in [-1, 1], float32
        on the CPU (or on the pipeline's device with `keep_on_device`): the decoded face in the
        regenerated region (mask 0), the input face elsewhere."""
        return self.sync_chunks([(latents, audio, faces)], noise, keep_on_device)[0]

    @torch.no_grad()
    def sync_chunks(self, chunks: list[tuple[FaceLatents, dict[str, Tensor], Tensor]], noise: Tensor,
                    keep_on_device: bool = False) -> list[dict[str, Tensor]]:
        """`sync` for several chunks of the same length at once: chunks x languages batch items
        share each UNet call (a short video's one language still fills the device)."""
        if not chunks or not chunks[0][1]:
            return [{} for _ in chunks]
        frames, _, h, w = chunks[0][0].reference.shape
        res = self.mask.shape[-1]
        first_audio = next(iter(chunks[0][1].values()))
        window = self.audio_shape or (first_audio.shape[1], self.unet.config.cross_attention_dim)
        for latents, audio, faces in chunks:
            if latents.reference.shape[0] != frames:
                raise ValueError(f"chunks batched together must have the same length, got "
                                 f"{latents.reference.shape[0]} and {frames} frames")
            for language, features in audio.items():
                if tuple(features.shape) != (frames, *window):
                    raise ValueError(f"audio for {language} must be ({frames}, {window[0]}, {window[1]}), "
                                     f"got {tuple(features.shape)}")
            if tuple(faces.shape) != (frames, 3, res, res):
                raise ValueError(f"faces must be ({frames}, 3, {res}, {res}), got {tuple(faces.shape)}")
        if tuple(noise.shape) != (1, LATENT_CHANNELS, 1, h, w):
            raise ValueError(f"noise must be (1, 4, 1, {h}, {w}), got {tuple(noise.shape)}")
        guided = self.guidance_scale > 1
        dev, dt = self.device, self.dtype

        # one batch item per (chunk, language); its audio-independent channels
        # [mask 1, masked latents 4, reference latents 4]: (items, 9, F, h, w)
        items = [(c, language) for c, (_, audio, _) in enumerate(chunks) for language in audio]
        per_chunk = [torch.cat([lat.mask.expand(frames, 1, h, w), lat.masked, lat.reference], dim=1)
                     .transpose(0, 1).to(dev, dt) for lat, _, _ in chunks]
        faces_in = torch.stack([per_chunk[c] for c, _ in items])
        speech = torch.stack([chunks[c][1][language] for c, language in items]).to(dev, dt)  # (items, F, T, C)
        if guided:
            speech = torch.cat([torch.zeros_like(speech), speech])
            faces_in = torch.cat([faces_in, faces_in])
        speech = speech.flatten(0, 1)  # (batch * F, T, C), batch-major

        x = noise.to(dev, torch.float32).expand(len(items), -1, frames, -1, -1).clone()
        features = None
        for step, t in enumerate(self.timesteps):
            reuse = self.deep_cache > 1 and step % self.deep_cache != 0
            model_in = torch.cat([x, x]) if guided else x
            model_in = torch.cat([model_in.to(dt), faces_in], dim=1)
            eps, new_features = self._predict(model_in, t, speech, features if reuse else None)
            if self.deep_cache > 1 and not reuse:
                features = new_features
            eps = eps.float()
            if guided:
                uncond, cond = eps.chunk(2)
                eps = uncond + self.guidance_scale * (cond - uncond)
            x = self.scheduler.step(eps, t, x, eta=0.0).prev_sample

        where = self.device if keep_on_device else torch.device("cpu")
        mask = self.mask.to(where)
        out: list[dict[str, Tensor]] = [{} for _ in chunks]
        for i, (c, language) in enumerate(items):
            faces = chunks[c][2].detach().float().to(where)
            decoded = self._decode(x[i].transpose(0, 1)).to(where)
            out[c][language] = (decoded * (1 - mask) + faces * mask).clamp(-1, 1)  # clamped after, as the reference
        return out

    def _predict(self, model_in: Tensor, t: int, speech: Tensor,
                 cached: Tensor | None) -> tuple[Tensor, Tensor | None]:
        """One UNet evaluation of the whole batch, in calls of at most max_batch items;
        halves max_batch and retries when the device runs out of memory."""
        t = torch.tensor(t, device=self.device)  # a tensor: a compiled UNet is not rebuilt per step
        with tuned_convolutions(self.device):
            return self._predict_in_calls(model_in, t, speech, cached)

    def _predict_in_calls(self, model_in: Tensor, t: Tensor, speech: Tensor,
                          cached: Tensor | None) -> tuple[Tensor, Tensor | None]:
        items, frames = model_in.shape[0], model_in.shape[2]
        while True:
            size = min(self.max_batch or items, items)
            try:
                eps, features = [], []
                for s in range(0, items, size):
                    e = slice(s, s + size)
                    result = self._unet_call(model_in[e], t, speech[s * frames:(s + size) * frames],
                                       cached_features=None if cached is None else cached[e],
                                       return_features=self.deep_cache > 1)
                    eps.append(result[0] if self.deep_cache > 1 else result)
                    if self.deep_cache > 1:
                        features.append(result[1])
                return torch.cat(eps), (torch.cat(features) if features else None)
            except torch.OutOfMemoryError:
                if size == 1:
                    raise
                del eps, features
                self.max_batch = size // 2
                if isinstance(self._unet_call, GraphedCall):
                    self._unet_call.reset()  # graphs of the larger size hold their memory
                if self.device.type == "cuda":
                    torch.cuda.empty_cache()

    def _encode(self, pixels: Tensor, generator: torch.Generator | None) -> Tensor:
        """(F, 3, res, res) in [-1, 1] -> (F, 4, res/8, res/8) scaled latents on the CPU."""
        parts = []
        for s in range(0, len(pixels), VAE_FRAMES):
            # contiguous: in channels_last torch's CPU GroupNorm takes a one-pass variance (1e-3 off)
            chunk = pixels[s:s + VAE_FRAMES].to(self.device, self.dtype).contiguous()
            parts.append(self._vae_encode(chunk).latent_dist.sample(generator=generator).float().cpu())
        return torch.cat(parts) * LATENT_SCALE

    def _decode(self, latents: Tensor) -> Tensor:
        """(F, 4, h, w) scaled latents -> (F, 3, 8h, 8w) about [-1, 1] (not clamped), float32 on
        the pipeline's device."""
        parts = []
        with tuned_convolutions(self.device):
            for s in range(0, len(latents), VAE_FRAMES):
                chunk = (latents[s:s + VAE_FRAMES] / LATENT_SCALE).to(self.device, self.dtype).contiguous()
                parts.append(self._vae_decode(chunk).sample.float())
        return torch.cat(parts)
