"""Lip-sync benchmark: our pipeline against a plain port of the reference loop, same run.

    python bench/lipsync_gpu.py                    # on a CUDA GPU: full-size UNet and SD VAE
    python bench/lipsync_gpu.py --tiny             # anywhere: tiny models, to check the script

The models have random weights: the cost of a forward pass does not depend on the values.
Audio features and aligned faces are random tensors of the real shapes; face tracking
(MediaPipe, on the CPU) is timed separately with `--face` on a real face clip.

Ours: faces VAE-encoded once per chunk for every language; all languages and both
guidance branches in one UNet batch per step; decoded chunks streamed to the CPU;
optionally DeepCache (full UNet every 3rd step).
Reference port: one language at a time (face encoding redone per language), one
language's two guidance branches per UNet call, every decoded chunk kept on the GPU
until the end (as the reference inference does).
Throughput uses `--steps` (20) on `--chunks` chunks of 16 frames; peak memory does not
depend on the step count, so it runs `--memory-steps` (1) over 10 s and 60 s of video.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from polydub.lipsync.pipeline import LipSyncPipeline, unet_config  # noqa: E402
from polydub.lipsync.unet import LipSyncUNet  # noqa: E402

FPS = 25
CHUNK = 16
MASK = Path(__file__).resolve().parents[1] / "polydub" / "lipsync" / "assets" / "mask.png"
SD_VAE = dict(in_channels=3, out_channels=3, latent_channels=4, layers_per_block=2, norm_num_groups=32,
              block_out_channels=(128, 256, 512, 512), down_block_types=("DownEncoderBlock2D",) * 4,
              up_block_types=("UpDecoderBlock2D",) * 4, sample_size=512)  # stabilityai/sd-vae-ft-mse
TINY_VAE = dict(in_channels=3, out_channels=3, latent_channels=4, layers_per_block=1, norm_num_groups=4,
                block_out_channels=(8, 8, 16, 16), down_block_types=("DownEncoderBlock2D",) * 4,
                up_block_types=("UpDecoderBlock2D",) * 4)
TINY_UNET = {**unet_config(), "block_out_channels": [32, 64], "layers_per_block": 1,
             "down_block_types": ["CrossAttnDownBlock3D", "DownBlock3D"],
             "up_block_types": ["UpBlock3D", "CrossAttnUpBlock3D"], "attention_head_dim": 2, "norm_num_groups": 8,
             "motion_module_resolutions": [1, 2],
             "motion_module_kwargs": {**unet_config()["motion_module_kwargs"], "num_attention_heads": 2}}


def load_mask(res: int) -> torch.Tensor:
    from PIL import Image
    import numpy as np

    image = Image.open(MASK).convert("L").resize((res, res), Image.LANCZOS)
    return torch.from_numpy(np.asarray(image, dtype="float32") / 255.0).clamp(0, 1)[None, None]


def build_models(tiny: bool, device: str, dtype: torch.dtype):
    from diffusers import AutoencoderKL

    torch.manual_seed(0)
    with torch.device(device):  # random init straight on the device: seconds, not minutes
        unet = LipSyncUNet.from_config(TINY_UNET if tiny else unet_config())
        vae = AutoencoderKL(**(TINY_VAE if tiny else SD_VAE))
    return unet.to(dtype).eval(), vae.to(dtype).eval()


def sync_time(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def chunk_sizes(frames: int) -> list[int]:
    return [min(CHUNK, frames - s) for s in range(0, frames, CHUNK)]


def random_chunk(n: int, res: int, langs: list[str]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    faces = torch.rand(n, 3, res, res) * 2 - 1
    return faces, {lang: torch.randn(n, 50, 384) for lang in langs}


def run_ours(pipe: LipSyncPipeline, langs: list[str], frames: int, res: int) -> None:
    noise = pipe.initial_noise(res, res)
    for n in chunk_sizes(frames):
        faces, audio = random_chunk(n, res, langs)
        latents = pipe.prepare_faces(faces)  # once per chunk, shared by every language
        pipe.sync(latents, audio, noise, faces)  # results stream to the CPU


def run_reference(pipe: LipSyncPipeline, langs: list[str], frames: int, res: int, device: str) -> None:
    noise = pipe.initial_noise(res, res)
    for lang in langs:  # one whole run per language
        kept = []  # the reference keeps every decoded chunk on the GPU until the end
        for n in chunk_sizes(frames):
            faces, audio = random_chunk(n, res, [lang])
            latents = pipe.prepare_faces(faces)
            out = pipe.sync(latents, audio, noise, faces)
            kept.append(out[lang].to(device, pipe.dtype))
        del kept


def measure(fn, device: str) -> tuple[float, float]:
    """(seconds, peak GiB allocated) of fn()."""
    if device.startswith("cuda"):
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    sync_time(device)
    t0 = time.perf_counter()
    fn()
    sync_time(device)
    seconds = time.perf_counter() - t0
    peak = torch.cuda.max_memory_allocated() / 2**30 if device.startswith("cuda") else float("nan")
    return seconds, peak


def face_tracking(frames: int) -> dict:
    """Seconds per frame of our face path (MediaPipe, CPU) on the bundled example."""
    import subprocess

    import numpy as np

    from polydub.lipsync import face

    clip = Path(__file__).resolve().parents[1] / "examples" / "talking_head.mp4"
    raw = subprocess.run(["ffmpeg", "-v", "error", "-i", str(clip), "-frames:v", str(frames), "-f", "rawvideo",
                          "-pix_fmt", "rgb24", "-"], capture_output=True, timeout=120, check=True).stdout
    video = np.frombuffer(raw, np.uint8).reshape(-1, 448, 448, 3)
    t0 = time.perf_counter()
    track = face.track_face(list(video), 256)
    seconds = time.perf_counter() - t0
    return {"frames": len(video), "seconds": seconds, "per_frame_ms": 1000 * seconds / len(video),
            "faces": int(track.has_face.sum())}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tiny", action="store_true", help="tiny models on the CPU: checks the script")
    ap.add_argument("--res", default="256,512")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--guidance", type=float, default=1.5)
    ap.add_argument("--chunks", type=int, default=2, help="16-frame chunks timed per configuration")
    ap.add_argument("--memory-seconds", default="10,60")
    ap.add_argument("--memory-steps", type=int, default=1)
    ap.add_argument("--dtype", default="float16", choices=["float16", "bfloat16", "float32"])
    ap.add_argument("--budget", type=float, default=1e9, help="skip what would start after this many seconds")
    ap.add_argument("--face", type=int, default=0, help="also time face tracking on N frames (CPU)")
    ap.add_argument("--json", type=Path, help="write the rows here as they come")
    args = ap.parse_args()

    start = time.perf_counter()
    device = "cpu" if args.tiny or not torch.cuda.is_available() else "cuda"
    dtype = torch.float32 if device == "cpu" else getattr(torch, args.dtype)
    resolutions = [64] if args.tiny else [int(r) for r in args.res.split(",")]
    steps = 2 if args.tiny else args.steps
    memory_seconds = [0.64, 1.28] if args.tiny else [float(s) for s in args.memory_seconds.split(",")]
    unet, vae = build_models(args.tiny, device, dtype)
    name = torch.cuda.get_device_name(0) if device == "cuda" else "cpu"
    print(f"lip-sync benchmark on {name}, {args.dtype if device == 'cuda' else 'float32'}, "
          f"UNet {sum(p.numel() for p in unet.parameters()) / 1e9:.2f} B params, {steps} steps, "
          f"guidance {args.guidance}", flush=True)
    rows: list[dict] = []

    def emit(row: dict) -> None:
        rows.append(row)
        if args.json:
            args.json.write_text(json.dumps(rows, indent=1))

    langs3 = ["es", "fr", "de"]
    print(f"\n{'res':>4} {'impl':<16} {'langs':>5} {'frames':>6} {'seconds':>8} {'frames/s':>9} "
          f"{'s per video s per lang':>22} {'speed-up':>9}", flush=True)
    for res in resolutions:
        for n_langs in (1, 3):
            langs = langs3[:n_langs]
            frames = args.chunks * CHUNK
            reference = None
            for impl, cache in (("reference port", 0), ("ours", 0), ("ours + DeepCache", 3)):
                if time.perf_counter() - start > args.budget:
                    print("(budget reached: remaining rows skipped)", flush=True)
                    break
                pipe = LipSyncPipeline(unet, vae, load_mask(res), num_steps=steps, guidance_scale=args.guidance,
                                       deep_cache=cache, device=device, dtype=dtype)
                warm = LipSyncPipeline(unet, vae, load_mask(res), num_steps=1, guidance_scale=args.guidance,
                                       deep_cache=0, device=device, dtype=dtype)
                run_ours(warm, langs, CHUNK, res)  # kernels and allocator warmed for this shape
                if impl == "reference port":
                    seconds, _ = measure(lambda: run_reference(pipe, langs, frames, res, device), device)
                    reference = seconds
                else:
                    seconds, _ = measure(lambda: run_ours(pipe, langs, frames, res), device)
                per = seconds / (frames / FPS) / n_langs
                ratio = reference / seconds if reference else float("nan")
                print(f"{res:>4} {impl:<16} {n_langs:>5} {frames:>6} {seconds:>8.2f} {frames * n_langs / seconds:>9.1f} "
                      f"{per:>22.2f} {ratio:>8.2f}x", flush=True)
                emit({"kind": "throughput", "res": res, "impl": impl, "langs": n_langs, "frames": frames,
                      "steps": steps, "seconds": seconds, "speedup_vs_reference": ratio})

    print(f"\n{'res':>4} {'impl':<16} {'video s':>7} {'frames':>6} {'peak GiB':>9} {'seconds':>8}", flush=True)
    for res in resolutions:
        for video_s in memory_seconds:
            frames = int(video_s * FPS)
            for impl in ("reference port", "ours"):
                if time.perf_counter() - start > args.budget:
                    print("(budget reached: remaining rows skipped)", flush=True)
                    break
                pipe = LipSyncPipeline(unet, vae, load_mask(res), num_steps=args.memory_steps,
                                       guidance_scale=args.guidance, device=device, dtype=dtype)
                if impl == "ours":
                    seconds, peak = measure(lambda: run_ours(pipe, ["es"], frames, res), device)
                else:
                    seconds, peak = measure(lambda: run_reference(pipe, ["es"], frames, res, device), device)
                print(f"{res:>4} {impl:<16} {video_s:>7.0f} {frames:>6} {peak:>9.2f} {seconds:>8.1f}", flush=True)
                emit({"kind": "memory", "res": res, "impl": impl, "video_seconds": video_s, "frames": frames,
                      "steps": args.memory_steps, "peak_gib": peak, "seconds": seconds})

    if args.face:
        result = face_tracking(args.face)
        print(f"\nface tracking (MediaPipe, CPU): {result['per_frame_ms']:.1f} ms per frame over "
              f"{result['frames']} frames; ours runs it once per video, the reference once per language",
              flush=True)
        emit({"kind": "face", **result})
    print(f"\ntotal {time.perf_counter() - start:.0f} s", flush=True)


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    main()
