"""What `DUB_LIPSYNC_COMPILE=1` (torch.compile of the UNet and the VAE) does to the lip-sync
loop, against the same pipeline run eagerly in the same process.

    python bench/lipsync_compile.py                 # CPU, tiny models (compiling takes minutes)
    python bench/lipsync_compile.py --device cuda --full --res 256 --dtype float16

Random weights, random faces and audio; one 16-frame chunk, every language in one batch.
Rows: eager, CUDA graphs (CUDA only), compiled, compiled + CUDA graphs (CUDA only).
Columns: the first call (the compiled one includes compiling), the median of the next calls,
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
    ap.add_argument("--no-explain", action="store_true", help="skip counting graphs and graph breaks")
    ap.add_argument("--no-compile", action="store_true", help="only the runs without torch.compile")
    ap.add_argument("--scaling", default="", help="also time eager and CUDA-graph passes for these language "
                    "counts (e.g. 1,6): how a pass's cost grows with the batch")
    args = ap.parse_args()
    from diffusers import AutoencoderKL

    dtype = getattr(torch, args.dtype)
    torch.manual_seed(0)
    config = unet_config() if args.full else TINY_UNET
    with torch.device(args.device):  # random init where the models run: seconds, not minutes
        unet = LipSyncUNet.from_config(config).eval()
        vae = AutoencoderKL(**(SD_VAE if args.full else TINY_VAE)).eval()
    mask = torch.ones(1, 1, args.res, args.res)
    mask[..., args.res // 2:, :] = 0  # the lower half regenerated, as the training mask does
    g = torch.Generator().manual_seed(1)
    faces = torch.rand(CHUNK, 3, args.res, args.res, generator=g) * 2 - 1
    audio = {f"l{i}": torch.randn(CHUNK, AUDIO_TOKENS, config["cross_attention_dim"], generator=g)
             for i in range(args.langs)}

    rows, outs = [], {}
    runs = [("eager", False, False), ("compiled", True, False)]
    if args.device.startswith("cuda"):  # CUDA graphs exist only there
        runs[1:1] = [("CUDA graphs", False, True)]
        runs.append(("compiled + CUDA graphs", True, True))
    if args.no_compile:
        runs = [run for run in runs if not run[1]]
    for name, compiled, graphs in runs:
        pipe = LipSyncPipeline(unet, vae, mask, num_steps=args.steps, device=args.device, dtype=dtype,
                               compile=compiled, cuda_graphs=graphs)
        first, outs[name] = synced(pipe, faces, audio, args.res)
        steady = statistics.median(synced(pipe, faces, audio, args.res)[0] for _ in range(args.repeats))
        rows.append((name, first, steady))
        print(f"{name}: first call {first:.2f} s, then {steady:.3f} s", flush=True)
    diffs = {name: max((outs[name][k] - outs["eager"][k]).abs().max().item() for k in audio) for name, *_ in runs}

    print(f"\n**torch.compile of the lip-sync loop: {args.device}, {args.dtype}, "
          f"{'full-size' if args.full else 'tiny'} models, {args.res} px, {args.langs} languages, "
          f"{args.steps} steps with guidance, one {CHUNK}-frame chunk**\n")
    print("| run | first call s | then, median of %d s | ratio to eager | largest difference from eager |"
          % args.repeats)
    print("|---|---|---|---|---|")
    for name, first, steady in rows:
        print(f"| {name} | {first:.2f} | {steady:.3f} | {steady / rows[0][2]:.2f} | {diffs[name]:.1e} |")
    print("\n(faces in [-1, 1])\n")
    if args.scaling:
        print("| languages | UNet batch items | eager s | CUDA graphs s | eager s per item |")
        print("|---|---|---|---|---|")
        for n in [int(v) for v in args.scaling.split(",")]:
            more = {f"l{i}": torch.randn(CHUNK, AUDIO_TOKENS, config["cross_attention_dim"], generator=g)
                    for i in range(n)}
            times = []
            for graphs in ([False, True] if args.device.startswith("cuda") else [False]):
                pipe = LipSyncPipeline(unet, vae, mask, num_steps=args.steps, device=args.device, dtype=dtype,
                                       cuda_graphs=graphs)
                synced(pipe, faces, more, args.res)
                times.append(statistics.median(synced(pipe, faces, more, args.res)[0] for _ in range(args.repeats)))
            graphed = f"{times[1]:.3f}" if len(times) > 1 else "-"
            print(f"| {n} | {2 * n} | {times[0]:.3f} | {graphed} | {times[0] / (2 * n):.3f} |", flush=True)
        print()
    if args.no_explain:
        return

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
