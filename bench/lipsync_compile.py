"""What `DUB_LIPSYNC_COMPILE=1` (torch.compile of the UNet and the VAE) does to the lip-sync
loop, against the same pipeline run eagerly in the same process.

    python bench/lipsync_compile.py                 # CPU, tiny models (compiling takes minutes)
    python bench/lipsync_compile.py --device cuda --full --res 256 --dtype float16

Random weights, random faces and audio; one 16-frame chunk, every language in one batch.
Rows: the first call (the compiled one includes compiling), the median of the next calls,
their ratio to eager, and the largest difference of the synced faces from eager's. Then
how many graphs and graph breaks torch.compile finds in the UNet (a break splits the
compiled program and loses fusion across it), with and without DeepCache's features.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.lipsync_gpu import SD_VAE, TINY_UNET, TINY_VAE  # noqa: E402
from polydub.lipsync.pipeline import LipSyncPipeline, unet_config  # noqa: E402
from polydub.lipsync.unet import LipSyncUNet  # noqa: E402

CHUNK = 16
AUDIO_TOKENS = 50


def synced(pipe: LipSyncPipeline, faces: torch.Tensor, audio: dict, res: int) -> tuple[float, dict]:
    """Seconds for one chunk (faces encoded, denoised, decoded) and its output."""
    if pipe.device.type == "cuda":
        torch.cuda.synchronize()
    started = time.perf_counter()
    latents = pipe.prepare_faces(faces, generator=torch.Generator().manual_seed(0))
    out = pipe.sync(latents, audio, pipe.initial_noise(res, res), faces)
    if pipe.device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - started, out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--full", action="store_true", help="LatentSync 1.5's UNet and the SD VAE (else tiny ones)")
    ap.add_argument("--res", type=int, default=64)
    ap.add_argument("--langs", type=int, default=3)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--dtype", default="float32", choices=["float32", "float16", "bfloat16"])
    args = ap.parse_args()
    from diffusers import AutoencoderKL

    dtype = getattr(torch, args.dtype)
    torch.manual_seed(0)
    config = unet_config() if args.full else TINY_UNET
    unet = LipSyncUNet.from_config(config).eval()
    vae = AutoencoderKL(**(SD_VAE if args.full else TINY_VAE)).eval()
    mask = torch.ones(1, 1, args.res, args.res)
    mask[..., args.res // 2:, :] = 0  # the lower half regenerated, as the training mask does
    g = torch.Generator().manual_seed(1)
    faces = torch.rand(CHUNK, 3, args.res, args.res, generator=g) * 2 - 1
    audio = {f"l{i}": torch.randn(CHUNK, AUDIO_TOKENS, config["cross_attention_dim"], generator=g)
             for i in range(args.langs)}

    rows, outs = [], {}
    for compiled in (False, True):
        pipe = LipSyncPipeline(unet, vae, mask, num_steps=args.steps, device=args.device, dtype=dtype,
                               compile=compiled)
        first, outs[compiled] = synced(pipe, faces, audio, args.res)
        steady = statistics.median(synced(pipe, faces, audio, args.res)[0] for _ in range(args.repeats))
        rows.append(("compiled" if compiled else "eager", first, steady))
    diff = max((outs[True][k] - outs[False][k]).abs().max().item() for k in audio)

    print(f"\n**torch.compile of the lip-sync loop: {args.device}, {args.dtype}, "
          f"{'full-size' if args.full else 'tiny'} models, {args.res} px, {args.langs} languages, "
          f"{args.steps} steps with guidance, one {CHUNK}-frame chunk**\n")
    print("| run | first call s | then, median of %d s | ratio to eager |" % args.repeats)
    print("|---|---|---|---|")
    for name, first, steady in rows:
        print(f"| {name} | {first:.2f} | {steady:.3f} | {steady / rows[0][2]:.2f} |")
    print(f"\nlargest difference from eager (faces in [-1, 1]): {diff:.1e}\n")

    h = args.res // 8
    x = torch.randn(2, 13, 2, h, h)
    t = torch.tensor(951)
    speech = torch.randn(4, AUDIO_TOKENS, config["cross_attention_dim"])
    print("| UNet call | graphs | graph breaks |")
    print("|---|---|---|")
    for features in (False, True):
        found = torch._dynamo.explain(unet.float().cpu())(x, t, speech, cached_features=None,
                                                          return_features=features)
        print(f"| {'with DeepCache features' if features else 'plain'} | {found.graph_count} | "
              f"{found.graph_break_count} |")
        for reason in found.break_reasons:
            print(f"  break: {reason.reason.splitlines()[0][:160]}")


if __name__ == "__main__":
    main()
