"""Lip-sync stage end to end, against the reference loop in the same run.

    python bench/lipsync_gpu.py --budget 540      # CUDA: full-size UNet + SD VAE, fp16, 30 s clip
    python bench/lipsync_gpu.py --smoke           # CPU, tiny models, 0.64 s clip: checks the script

Models have random weights (the cost of a pass does not depend on the values); whisper tiny
too. The clip is the astronaut photo drifting over a grey frame, 25 fps, with one synthetic
dubbed track per language. The face track is computed once with MediaPipe on the CPU and
cached (`--track` reuses a cached one, e.g. made on another machine).

Ours: `stage.lipsync_video` as the product runs it: decoding in a thread, batched alignment
on the device, faces encoded once per chunk for all languages, all languages and both guidance
branches in one UNet batch per step, batched paste-back on the device, encoding in threads.
Reference loop: what the reference inference does, run with the same models: per language
the whole video is read into memory, each frame aligned and pasted back one at a time, faces
encoded per language, one language's guidance branches per UNet call, every decoded chunk
kept on the device to the end; it reuses our cached face track (the reference detects faces
again per run, which is not counted). It is timed on the first `--reference-frames` frames.

Rows: frames/s per language, seconds per video second per language, peak device memory, and
a per-part breakdown (seconds): decode and encode are busy time of their threads (they overlap
the rest); align, UNet, VAE and paste are timed with the device synchronised around them.
Then DeepCache's cost in quality: PSNR of the regenerated (mouth) region, DeepCache against
full steps on the same inputs. Then how many languages fit in one batch on 24/48/80 GB cards,
estimated from parameter sizes and the live activations of one UNet and VAE pass traced on
the meta device (estimated, not measured).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
import weakref
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from polydub.lipsync import face, stage, warp  # noqa: E402
from polydub.lipsync.audio import frame_windows, load_audio, whisper_features, window_shape  # noqa: E402
from polydub.lipsync.pipeline import LipSyncPipeline, unet_config  # noqa: E402
from polydub.lipsync.unet import LipSyncUNet  # noqa: E402
from polydub.lipsync.video import LOSSLESS_ARGS, FrameWriter, read_frames  # noqa: E402

FPS = 25
CHUNK = 16
LANGS = ["es", "fr", "de"]
TONES = {"es": 220, "fr": 330, "de": 440}  # Hz: each language's dubbed track
SD_VAE = dict(in_channels=3, out_channels=3, latent_channels=4, layers_per_block=2, norm_num_groups=32,
              block_out_channels=(128, 256, 512, 512), down_block_types=("DownEncoderBlock2D",) * 4,
              up_block_types=("UpDecoderBlock2D",) * 4, sample_size=512)  # stabilityai/sd-vae-ft-mse
TINY_VAE = dict(in_channels=3, out_channels=3, latent_channels=4, layers_per_block=1, norm_num_groups=4,
                block_out_channels=(8, 8, 16, 16), down_block_types=("DownEncoderBlock2D",) * 4,
                up_block_types=("UpDecoderBlock2D",) * 4)
TINY_UNET = {**unet_config(), "block_out_channels": [32, 64], "layers_per_block": 1, "cross_attention_dim": 64,
             "down_block_types": ["CrossAttnDownBlock3D", "DownBlock3D"],
             "up_block_types": ["UpBlock3D", "CrossAttnUpBlock3D"], "attention_head_dim": 2, "norm_num_groups": 8,
             "motion_module_resolutions": [1, 2],
             "motion_module_kwargs": {**unet_config()["motion_module_kwargs"], "num_attention_heads": 2}}
WHISPER_TINY = dict(n_mels=80, n_audio_ctx=1500, n_audio_state=384, n_audio_head=6, n_audio_layer=4,
                    n_vocab=51865, n_text_ctx=448, n_text_state=384, n_text_head=6, n_text_layer=4)
TINY_WHISPER = {**WHISPER_TINY, "n_audio_state": 64, "n_audio_head": 2, "n_text_state": 64, "n_text_head": 2,
                "n_text_layer": 1}  # its windows are (50, 64): TINY_UNET's cross-attention width
CARDS_GB = (24, 48, 80)
CARD_RESERVE_GB = 1.5  # CUDA context, allocator slack, cuDNN workspaces
ACTIVATION_MARGIN = 1.2  # the trace came out 3 % (256 px) and 10 % (512 px) under peaks measured on an H200


# --- inputs ----------------------------------------------------------------------------------

def make_clip(path: Path, seconds: float, size: int) -> Path:
    """The astronaut's head drifting over a grey size x size frame, 25 fps, lossless."""
    import cv2
    import skimage.data

    head = skimage.data.astronaut()[:300, 70:370]
    side = int(size * 0.7)
    head = cv2.resize(head, (side, side), interpolation=cv2.INTER_AREA)
    n = int(round(seconds * FPS))
    proc = subprocess.Popen(["ffmpeg", "-hide_banner", "-loglevel", "error", "-y", "-f", "rawvideo",
                             "-pix_fmt", "rgb24", "-s", f"{size}x{size}", "-r", str(FPS), "-i", "-",
                             *LOSSLESS_ARGS, str(path)], stdin=subprocess.PIPE)
    for i in range(n):
        frame = np.full((size, size, 3), 128, np.uint8)
        x = int((size - side) / 2 + size * 0.08 * math.sin(2 * math.pi * i / 100))
        y = int((size - side) / 2 + size * 0.05 * math.cos(2 * math.pi * i / 80))
        frame[y:y + side, x:x + side] = head
        proc.stdin.write(frame.tobytes())
    proc.stdin.close()
    if proc.wait(timeout=600) != 0:
        raise RuntimeError("ffmpeg could not write the clip")
    return path


def make_audio(path: Path, seconds: float, freq: int) -> Path:
    subprocess.run(["ffmpeg", "-hide_banner", "-loglevel", "error", "-y", "-f", "lavfi", "-i",
                    f"sine=frequency={freq}:duration={seconds}:sample_rate=16000", "-ac", "1", str(path)],
                   check=True, timeout=120)
    return path


def build_models(smoke: bool, res: int, device: str, dtype: torch.dtype) -> stage.LipSyncModels:
    from diffusers import AutoencoderKL
    from whisper.model import ModelDimensions, Whisper

    torch.manual_seed(0)
    with torch.device(device):  # random init straight on the device: seconds, not minutes
        unet = LipSyncUNet.from_config(TINY_UNET if smoke else unet_config())
        vae = AutoencoderKL(**(TINY_VAE if smoke else SD_VAE))
        audio_model = Whisper(ModelDimensions(**(TINY_WHISPER if smoke else WHISPER_TINY)))
    return stage.LipSyncModels(unet.to(dtype).eval(), vae.to(dtype).eval(), audio_model.eval(),
                               stage.load_mask(res), res, device, dtype)


# --- timing -----------------------------------------------------------------------------------

def synchronize(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


class Parts:
    """Seconds per part, accumulated by wrappers around the stage's own functions."""

    def __init__(self, device: str):
        self.device, self.seconds = device, {}

    def add(self, part: str, seconds: float) -> None:
        self.seconds[part] = self.seconds.get(part, 0.0) + seconds

    def timed(self, part: str, fn, sync: bool = True):
        def wrapper(*args, **kwargs):
            if sync:
                synchronize(self.device)
            t0 = time.perf_counter()
            out = fn(*args, **kwargs)
            if sync:
                synchronize(self.device)
            self.add(part, time.perf_counter() - t0)
            return out
        return wrapper

    def timed_iter(self, part: str, fn):
        def wrapper(*args, **kwargs):
            items = fn(*args, **kwargs)
            while True:
                t0 = time.perf_counter()
                try:
                    item = next(items)
                except StopIteration:
                    return
                finally:
                    self.add(part, time.perf_counter() - t0)
                yield item
        return wrapper


@contextmanager
def patched(parts: Parts):
    """Time the stage's parts where they are defined (restored afterwards)."""
    saved = []

    def patch(owner, name, new):
        saved.append((owner, name, getattr(owner, name)))
        setattr(owner, name, new)

    patch(stage, "read_frames", parts.timed_iter("decode", stage.read_frames))
    patch(FrameWriter, "write", parts.timed("encode", FrameWriter.write, sync=False))
    patch(stage, "whisper_features", parts.timed("audio", stage.whisper_features))
    patch(warp, "align_faces", parts.timed("align", warp.align_faces))
    patch(warp, "paste_faces", parts.timed("paste", warp.paste_faces))
    patch(face, "align_face", parts.timed("align", face.align_face, sync=False))
    patch(warp, "paste_back", parts.timed("paste", warp.paste_back, sync=False))
    patch(LipSyncPipeline, "_predict", parts.timed("unet", LipSyncPipeline._predict))
    patch(LipSyncPipeline, "_encode", parts.timed("vae", LipSyncPipeline._encode))
    patch(LipSyncPipeline, "_decode", parts.timed("vae", LipSyncPipeline._decode))
    try:
        yield parts
    finally:
        for owner, name, old in reversed(saved):
            setattr(owner, name, old)


def measure(fn, device: str) -> tuple[float, float, dict]:
    """(seconds, peak GiB on the device, parts) of fn(parts)."""
    parts = Parts(device)
    if device.startswith("cuda"):
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    synchronize(device)
    t0 = time.perf_counter()
    with patched(parts):
        fn()
    synchronize(device)
    seconds = time.perf_counter() - t0
    peak = torch.cuda.max_memory_allocated() / 2**30 if device.startswith("cuda") else float("nan")
    return seconds, peak, parts.seconds


def trimmed(clip: Path, track: face.FaceTrack, frames: int, work: Path) -> tuple[Path, Path]:
    """The clip's first `frames` frames (stream copy: FFV1 frames are all key frames) and their track."""
    if frames >= len(track):
        path = work / "track.npz"
        track.save(path)
        return clip, path
    out = work / f"clip-{frames}.mkv"
    subprocess.run(["ffmpeg", "-hide_banner", "-loglevel", "error", "-y", "-i", str(clip), "-frames:v", str(frames),
                    "-c", "copy", str(out)], check=True, timeout=120)
    part = face.FaceTrack(track.anchors[:frames], track.track_id[:frames], track.res)
    return out, part.save(work / f"track-{frames}.npz")


# --- the two implementations -------------------------------------------------------------------

# ours, as rows: (name, DeepCache interval, CUDA graphs); the eager row shows what graphs buy
OURS = (("ours", 0, False), ("ours + CUDA graphs", 0, True), ("ours + graphs + DeepCache", 3, True))


def run_ours(models, clip: Path, audio: dict[str, Path], out_dir: Path, track: Path, res: int,
             steps: int, guidance: float, deep_cache: int, graphs: bool = True) -> None:
    outs = {lang: out_dir / f"ours.{lang}.mp4" for lang in audio}
    saved = os.environ.get("DUB_LIPSYNC_CUDA_GRAPHS")
    os.environ["DUB_LIPSYNC_CUDA_GRAPHS"] = "1" if graphs else "0"
    try:
        stage.lipsync_video(clip, audio, outs, models, track, res, num_steps=steps, guidance_scale=guidance,
                            deep_cache=deep_cache)
    finally:
        if saved is None:
            os.environ.pop("DUB_LIPSYNC_CUDA_GRAPHS")
        else:
            os.environ["DUB_LIPSYNC_CUDA_GRAPHS"] = saved


def run_reference(models, clip: Path, audio: dict[str, Path], out_dir: Path, track: face.FaceTrack, res: int,
                  steps: int, guidance: float, frames: int) -> None:
    """The reference inference's loop, per language, on the first `frames` frames."""
    from polydub.lipsync.video import frame_size

    width, height = frame_size(clip)
    for lang, path in audio.items():
        features = stage.whisper_features(models.whisper, load_audio(path))
        video = []
        for frame in stage.read_frames(clip, FPS):  # the reference reads the whole video into memory
            video.append(frame)
            if len(video) == frames:
                break
        aligned = [face.align_face(f, track.matrices[i], res) for i, f in enumerate(video)]
        pipe = LipSyncPipeline(models.unet, models.vae, models.mask, num_steps=steps, guidance_scale=guidance,
                               device=models.device, dtype=models.dtype, audio_shape=window_shape(models.whisper.dims))
        noise = pipe.initial_noise(res, res)
        kept = []  # every decoded chunk stays on the device until the end
        for s in range(0, len(video), CHUNK):
            faces = torch.from_numpy(np.stack(aligned[s:s + CHUNK])).permute(0, 3, 1, 2).float() / 127.5 - 1
            latents = pipe.prepare_faces(faces.contiguous())
            windows = {lang: frame_windows(features, FPS, frames=len(faces), first=s)}
            kept.append(pipe.sync(latents, windows, noise, faces, keep_on_device=True)[lang].to(models.dtype))
        synced = torch.cat(kept)
        writer = FrameWriter(out_dir / f"reference.{lang}.mp4", width, height, FPS)
        for i, frame in enumerate(video):  # restored one frame at a time
            new_face = ((synced[i].float().clamp(-1, 1) + 1) * 127.5).round().byte().permute(1, 2, 0).cpu().numpy()
            writer.write(warp.paste_back(frame, new_face, track.matrices[i]))
        writer.close()
        del kept, synced


# --- quality and memory ---------------------------------------------------------------------------

def deep_cache_quality(models, clip: Path, audio: dict[str, Path], track: face.FaceTrack, res: int,
                       steps: int, guidance: float, chunks: int) -> dict:
    """PSNR (dB) of the regenerated region, DeepCache (every 3rd step) against full steps,
    same faces, audio and noise; and, for scale, full steps against another noise draw."""
    frames = [f for _, f in zip(range(chunks * CHUNK), read_frames(clip, FPS))]
    features = whisper_features(models.whisper, load_audio(next(iter(audio.values()))))
    mouth = models.mask[0, 0] < 0.5
    results = {}
    for name, cache, seed in (("full", 0, 1247), ("deep_cache", 3, 1247), ("other_noise", 0, 5)):
        pipe = LipSyncPipeline(models.unet, models.vae, models.mask, num_steps=steps, guidance_scale=guidance,
                               deep_cache=cache, device=models.device, dtype=models.dtype,
                               audio_shape=window_shape(models.whisper.dims))
        outs = []
        for s in range(0, len(frames), CHUNK):
            batch = torch.from_numpy(np.stack(frames[s:s + CHUNK])).to(models.device)
            faces = warp.align_faces(batch, track.matrices[s:s + len(batch)], res)
            latents = pipe.prepare_faces(faces, generator=torch.Generator(models.device).manual_seed(0))
            windows = {"x": frame_windows(features, FPS, frames=len(batch), first=s)}
            outs.append(pipe.sync(latents, windows, pipe.initial_noise(res, res, seed), faces)["x"])
        results[name] = (torch.cat(outs) + 1) * 127.5

    def psnr(a, b):
        mse = ((a - b)[:, :, mouth] ** 2).mean().item()
        return float("inf") if mse == 0 else 10 * math.log10(255 ** 2 / mse)

    return {"deep_cache_vs_full_db": psnr(results["deep_cache"], results["full"]),
            "other_noise_vs_full_db": psnr(results["other_noise"], results["full"]), "frames": len(frames)}


@contextmanager
def fused_attention():
    """SDPA as a fused GPU kernel sees it: output only. On the meta device it would otherwise
    decompose into matmul + softmax and hold the (tokens x tokens) scores, which flash and
    memory-efficient attention never do."""
    import torch.nn.functional as F

    real = F.scaled_dot_product_attention
    F.scaled_dot_product_attention = lambda q, k, v, *a, **kw: q.new_empty((*q.shape[:-1], v.shape[-1]))
    try:
        yield
    finally:
        F.scaled_dot_product_attention = real


class LiveBytes(torch.utils._python_dispatch.TorchDispatchMode):
    """Peak bytes of live tensors made by the ops run under it (on the meta device: no compute)."""

    def __init__(self):
        super().__init__()
        self.live = self.peak = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in torch.utils._pytree.tree_leaves(out):
            if isinstance(t, torch.Tensor) and t._base is None:
                size = t.numel() * t.element_size()
                self.live += size
                self.peak = max(self.peak, self.live)
                weakref.finalize(t, self._free, size)
        return out

    def _free(self, size: int) -> None:
        self.live -= size


def memory_estimate(smoke: bool, res: int, max_langs: int = 999) -> dict:
    """GB of fp16 weights, activations of one UNet pass per batch item (2 per language with
    guidance) and of one VAE decode of 8 frames, traced on the meta device; languages that fit."""
    from diffusers import AutoencoderKL

    dtype = torch.float16
    with torch.device("meta"):
        unet = LipSyncUNet.from_config(TINY_UNET if smoke else unet_config()).to(dtype).eval()
        vae = AutoencoderKL(**(TINY_VAE if smoke else SD_VAE)).to(dtype).eval()
    weights = sum(p.numel() * 2 for m in (unet, vae) for p in m.parameters()) + 39e6 * 4  # + whisper tiny, fp32
    h = res // 8

    def unet_peak(items: int) -> int:
        with torch.no_grad(), fused_attention(), LiveBytes() as live:
            x = torch.empty(items, 13, CHUNK, h, h, device="meta", dtype=dtype)
            width = (TINY_UNET if smoke else unet_config())["cross_attention_dim"]
            audio = torch.empty(items * CHUNK, 50, width, device="meta", dtype=dtype)
            unet(x, torch.tensor(951, device="meta"), audio)
        return live.peak

    with torch.no_grad(), fused_attention(), LiveBytes() as live:
        vae.decode(torch.empty(8, 4, h, h, device="meta", dtype=dtype))
    vae_peak = live.peak
    one, two = unet_peak(2), unet_peak(4)
    per_lang = (two - one) * ACTIVATION_MARGIN  # bytes per language (two items) once the fixed part is paid
    fixed = max(0.0, one * ACTIVATION_MARGIN - per_lang)
    # per chunk and language also: decoded faces, frames on the device (small next to the UNet)
    row = {"res": res, "weights_gb": weights / 1e9, "unet_gb_per_lang": per_lang / 1e9,
           "unet_fixed_gb": fixed / 1e9, "vae_decode_gb": vae_peak / 1e9}
    for card in CARDS_GB:  # the UNet's and the VAE's activations are never held at the same time
        free = (card - CARD_RESERVE_GB) * 1e9 - weights
        fits = free >= vae_peak and per_lang > 0
        row[f"langs_{card}gb"] = max(0, min(max_langs, int((free - fixed) // per_lang))) if fits else 0
    return row


# --- main -----------------------------------------------------------------------------------------

def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--smoke", action="store_true", help="CPU, tiny models, 0.64 s clip at 64 px: checks the script")
    ap.add_argument("--seconds", type=float, default=30.0, help="clip length")
    ap.add_argument("--res", default="256,512")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--guidance", type=float, default=1.5)
    ap.add_argument("--reference-frames", default="64", help="frames the reference loop is timed on (one value, "
                    "or one per --res)")
    ap.add_argument("--eager-res", default="256", help="resolutions that also get an eager row (no CUDA graphs)")
    ap.add_argument("--quality-chunks", type=int, default=2, help="16-frame chunks for the DeepCache PSNR")
    ap.add_argument("--dtype", default="float16", choices=["float16", "bfloat16", "float32"])
    ap.add_argument("--compile", action="store_true", help="torch.compile UNet and VAE (DUB_LIPSYNC_COMPILE)")
    ap.add_argument("--track", type=Path, help="a cached face track (.npz) of the clip, made with the same --seconds")
    ap.add_argument("--budget", type=float, default=540, help="skip rows that would start after this many seconds")
    ap.add_argument("--track-only", type=Path, metavar="NPZ",
                    help="make the clip, track its face (MediaPipe, CPU), save the track here and stop")
    ap.add_argument("--json", type=Path, help="write the rows here as they come")
    ap.add_argument("--estimate-only", action="store_true",
                    help="only the languages-per-card estimate for the full-size models (any machine, ~10 s)")
    args = ap.parse_args()
    if args.estimate_only:
        print_estimate([256, 512], smoke=False, emit=lambda row: None)
        return

    start = time.perf_counter()
    smoke = args.smoke
    device = "cpu" if smoke or not torch.cuda.is_available() else "cuda"
    dtype = torch.float32 if device == "cpu" else getattr(torch, args.dtype)
    resolutions = [64] if smoke else [int(r) for r in args.res.split(",")]
    steps = 2 if smoke else args.steps
    seconds = 0.64 if smoke else args.seconds
    values = [16] if smoke else [int(f) for f in args.reference_frames.split(",")]
    ref_frames_at = {r: values[min(i, len(values) - 1)] for i, r in enumerate(resolutions)}
    eager_res = resolutions if smoke else [int(r) for r in args.eager_res.split(",") if r]
    quality_chunks = 1 if smoke else args.quality_chunks
    if args.compile:
        os.environ["DUB_LIPSYNC_COMPILE"] = "1"
    name = torch.cuda.get_device_name(0) if device == "cuda" else "cpu"
    print(f"lip-sync stage benchmark on {name}, {str(dtype).split('.')[-1]}, {'tiny' if smoke else 'full-size'} "
          f"random-weight models, {steps} steps, guidance {args.guidance}, {seconds:.2f} s clip", flush=True)
    rows: list[dict] = []

    def emit(row: dict) -> None:
        rows.append(row)
        if args.json:
            args.json.write_text(json.dumps(rows, indent=1))

    def over_budget() -> bool:
        if time.perf_counter() - start > args.budget:
            print("(budget reached: remaining rows skipped)", flush=True)
            return True
        return False

    work = Path(tempfile.mkdtemp(prefix="lipsync-bench-"))
    frame_px = 128 if smoke else 720
    clip = make_clip(work / "clip.mkv", seconds, frame_px)
    audio = {lang: make_audio(work / f"{lang}.wav", seconds, TONES[lang]) for lang in LANGS}
    t0 = time.perf_counter()
    if args.track_only:
        track = face.track_face(read_frames(clip, FPS), 256)
        track.save(args.track_only)
        print(f"face track of the {seconds:.0f} s clip: {len(track)} frames, {int(track.has_face.sum())} with a "
              f"face, saved to {args.track_only} ({time.perf_counter() - t0:.1f} s)")
        return
    if args.track:
        track = face.FaceTrack.load(args.track)
        how = f"loaded from {args.track}"
    else:
        track = face.track_face(read_frames(clip, FPS), 256)
        track.save(work / "clip-track.npz")  # copy it out to reuse it with --track
        how = f"MediaPipe on the CPU, saved to {work / 'clip-track.npz'}"
    track_s = time.perf_counter() - t0
    print(f"face track: {len(track)} frames, {int(track.has_face.sum())} with a face, {how}: {track_s:.1f} s "
          f"({1000 * track_s / max(len(track), 1):.1f} ms per frame), once per video\n", flush=True)
    emit({"kind": "track", "frames": len(track), "seconds": track_s, "how": how})

    header = (f"{'res':>4} {'impl':<26} {'langs':>5} {'frames':>6} {'seconds':>8} {'fps/lang':>8} "
              f"{'s per video s/lang':>18} {'peak GiB':>8} {'vs ref':>7}  parts (s)")
    print(header, flush=True)
    for res in resolutions:
        models = build_models(smoke, res, device, dtype)
        res_track = track.at_res(res)
        ref_frames = ref_frames_at[res]
        for n_langs in (1, 3):
            langs = {lang: audio[lang] for lang in LANGS[:n_langs]}
            if over_budget():
                break
            seconds_ref, peak, parts = measure(lambda: run_reference(
                models, clip, langs, work, res_track, res, steps, args.guidance, ref_frames), device)
            ref_fps = ref_frames / seconds_ref  # per language
            ref_rate = ref_frames * n_langs / seconds_ref  # all languages
            print(f"{res:>4} {'reference loop':<26} {n_langs:>5} {ref_frames:>6} {seconds_ref:>8.2f} "
                  f"{ref_rate / n_langs:>8.2f} {FPS / (ref_rate / n_langs):>18.2f} {peak:>8.2f} {1:>6.2f}x  "
                  + " ".join(f"{k} {v:.1f}" for k, v in parts.items()), flush=True)
            emit({"kind": "stage", "res": res, "impl": "reference loop", "langs": n_langs, "frames": ref_frames,
                  "seconds": seconds_ref, "peak_gib": peak, "parts": parts, "fps_per_lang": ref_fps})
            impls = [row for row in OURS if row[2] or res in eager_res]
            for k, (impl, cache, graphs) in enumerate(impls):
                if over_budget():
                    break
                # as much of the clip as the budget allows, assuming no faster than the reference loop
                rows_left = ((len(resolutions) - resolutions.index(res)) * 2 - (n_langs == 3)) * len(OURS) - k
                share = 0.8 * (args.budget - (time.perf_counter() - start)) / max(rows_left, 1)
                frames = int(min(len(track), max(CHUNK, share * ref_rate / n_langs)) // CHUNK * CHUNK) or len(track)
                row_clip, row_track = trimmed(clip, track, frames, work)
                secs, peak, parts = measure(lambda: run_ours(
                    models, row_clip, langs, work, row_track, res, steps, args.guidance, cache, graphs), device)
                rate = frames * n_langs / secs
                print(f"{res:>4} {impl:<26} {n_langs:>5} {frames:>6} {secs:>8.2f} {rate / n_langs:>8.2f} "
                      f"{FPS / (rate / n_langs):>18.2f} {peak:>8.2f} {rate / ref_rate:>6.2f}x  "
                      + " ".join(f"{k} {v:.1f}" for k, v in parts.items()), flush=True)
                emit({"kind": "stage", "res": res, "impl": impl, "langs": n_langs, "frames": frames,
                      "seconds": secs, "peak_gib": peak, "parts": parts, "fps_per_lang": rate / n_langs,
                      "speedup_vs_reference": rate / ref_rate})
        if not over_budget():
            q = deep_cache_quality(models, clip, audio, res_track, res, steps, args.guidance, quality_chunks)
            print(f"{res:>4} DeepCache quality over {q['frames']} frames, mouth region: PSNR vs full steps "
                  f"{q['deep_cache_vs_full_db']:.1f} dB (another noise draw: {q['other_noise_vs_full_db']:.1f} dB)",
                  flush=True)
            emit({"kind": "deep_cache_quality", "res": res, **q})
        del models
        if device == "cuda":
            torch.cuda.empty_cache()

    print_estimate([64] if smoke else [256, 512], smoke, emit)
    print(f"\ntotal {time.perf_counter() - start:.0f} s", flush=True)


def print_estimate(resolutions: list[int], smoke: bool, emit) -> None:
    print(f"\nlanguages per batch ({'tiny' if smoke else 'full-size'} models; estimated from fp16 parameter sizes "
          f"and activations traced on the meta device x {ACTIVATION_MARGIN}, {CARD_RESERVE_GB} GB reserved; not measured)", flush=True)
    print(f"{'res':>4} {'weights GB':>10} {'UNet GB/lang':>12} {'VAE GB':>7} "
          + " ".join(f"{c:>3} GB" for c in CARDS_GB), flush=True)
    for res in resolutions:
        est = memory_estimate(smoke, res)
        print(f"{res:>4} {est['weights_gb']:>10.2f} {est['unet_gb_per_lang']:>12.2f} {est['vae_decode_gb']:>7.2f} "
              + " ".join(f"{est[f'langs_{c}gb']:>6}" for c in CARDS_GB), flush=True)
        emit({"kind": "memory_estimate", **est})


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    main()
