"""The lip-sync stage: one source video, one dubbed audio track per language -> one video per language.

The face is tracked once per video (cached as a .npz and reused by every language); then the
video is streamed in chunks of up to 16 contiguous face frames: the chunk is aligned on the
pipeline's device (one batched warp), its faces are encoded once, synced to every language's
audio, pasted back (batched) and written to each language's encoder. Decoding and encoding run
in threads beside the model. Frames without a face are written unchanged. Memory does not grow
with video length.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
from torch import Tensor

from polydub import config
from polydub.errors import InputError, StageError
from polydub.lipsync import face, warp
from polydub.lipsync.audio import frame_windows, load_audio, whisper_features, window_shape
from polydub.lipsync.video import (
    ENCODE_ARGS,
    FPS,
    PIPE_TIMEOUT,
    BackgroundWriter,
    FrameWriter,
    frame_size,
    prefetch,
    read_frames,
)
from polydub.lipsync.weights import (  # noqa: F401
    OVERRIDES,
    RESOLUTION,
    default_version,
    face_choice,
    lipsync_device,
    missing_weights,
    weight_paths,
)

MASK_PATH = Path(__file__).parent / "assets" / "mask.png"
CHUNK_FRAMES = 16  # frames the UNet sees at once (its temporal layers)
BATCH_LANGUAGES = 3  # chunks are batched together until about this many languages' worth of items
SEED = 1247
def can_run(models_dir: str | Path, version: str | None = None) -> tuple[bool, str]:
    """Whether lip-sync can run here: a CUDA device (or DUB_LIPSYNC_DEVICE=cpu) and the
    weights; else why not."""
    version = version or default_version()
    device = lipsync_device()
    if device.startswith("cuda") and not torch.cuda.is_available():
        return False, "no CUDA device (DUB_LIPSYNC_DEVICE=cpu runs it on the CPU, slowly)"
    missing = missing_weights(models_dir, version)
    if missing:
        return False, "weights missing: " + ", ".join(missing)
    where = torch.cuda.get_device_name(0) if device.startswith("cuda") else device
    return True, f"LatentSync {version} on {where}"


def load_mask(res: int) -> Tensor:
    """The mouth mask (1, 1, res, res) in [0, 1]: 1 keeps the face, 0 is regenerated."""
    mask = cv2.imread(str(MASK_PATH), cv2.IMREAD_GRAYSCALE)
    if mask is None:
        raise StageError(f"{MASK_PATH}: mouth mask missing from the installation")
    mask = cv2.resize(mask, (res, res), interpolation=cv2.INTER_LANCZOS4)
    return torch.from_numpy(np.clip(mask / 255.0, 0, 1).astype(np.float32))[None, None]


@dataclass
class LipSyncModels:
    """Everything the stage needs loaded: the UNet, the VAE, whisper tiny and the mask."""

    unet: torch.nn.Module
    vae: torch.nn.Module
    whisper: torch.nn.Module
    mask: Tensor  # (1, 1, res, res) in [0, 1]
    res: int
    device: str = "cpu"
    dtype: torch.dtype = torch.float32

    @classmethod
    def load(cls, models_dir: str | Path, version: str = "1.5", device: str | None = None,
             dtype: torch.dtype | None = None, unet_config: dict | None = None) -> LipSyncModels:
        """Load latentsync-X/latentsync_unet.pt, latentsync-X/whisper/tiny.pt and sd-vae-ft-mse/.

        fp16 on CUDA unless `dtype` says otherwise; `unet_config` defaults to the published one.
        """
        import whisper

        from polydub.lipsync.pipeline import load_unet, load_vae

        paths = weight_paths(models_dir, version)
        missing = missing_weights(models_dir, version)
        if missing:
            raise InputError(f"LatentSync {version} weights missing: {', '.join(missing)} "
                             f"(run `dub models pull` or set DUB_MODELS_DIR)")
        device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        dtype = dtype or (torch.float16 if device.startswith("cuda") else torch.float32)
        overrides_file = paths["unet"].parent / OVERRIDES
        overrides = json.loads(overrides_file.read_text()) if overrides_file.is_file() else {}
        unet = load_unet(paths["unet"], unet_config or overrides.get("unet"), device=device, dtype=dtype)
        vae = load_vae(paths["vae"]).to(device=device, dtype=dtype)
        audio_model = whisper.load_model(str(paths["whisper"]), device=device)
        res = int(overrides.get("resolution") or RESOLUTION[version])
        return cls(unet, vae, audio_model, load_mask(res), res, device, dtype)


def load_or_track(video: Path, track_cache: Path, res: int, timeout: float = PIPE_TIMEOUT,
                  prefer: str = "largest") -> tuple[face.FaceTrack, str]:
    """The video's face track at 25 fps: read from `track_cache`, or computed once and saved
    there. `prefer` picks among several faces (see `face.track_face`); it belongs in the
    cache file's name."""
    track_cache = Path(track_cache)
    if track_cache.exists():
        try:
            return face.FaceTrack.load(track_cache).at_res(res), "reused"
        except StageError:
            pass  # unreadable cache: compute it again
    track = face.track_face(read_frames(video, FPS, timeout), res, prefer=prefer)
    track.save(track_cache)
    return track, "computed"


def lipsync_video(video: str | Path, dubbed_audio: dict[str, Path], out_videos: dict[str, Path],
                  models: LipSyncModels, track_cache: str | Path, res: int | None = None, *,
                  num_steps: int = 20, guidance_scale: float = 1.5, seed: int = SEED,
                  chunk_frames: int = CHUNK_FRAMES, deep_cache: int = 0, overlap_s: float = 0.0,
                  chunks_per_batch: int | None = None,
                  codec_args: tuple[str, ...] = ENCODE_ARGS, timeout: float = PIPE_TIMEOUT,
                  prefer_face: str = "largest") -> dict:
    """Lip-sync `video` to each language's dubbed audio; write `out_videos[lang]` (25 fps, video only).

    Returns {"frames", "face_frames", "track": "computed" | "reused", "seconds", "outputs"}.
    The dubbed tracks are expected to be as long as the video; the audio windows are truncated
    or padded (last position repeated) to the video's frame count. `chunks_per_batch` chunks of
    equal length share each UNet call (default: DUB_LIPSYNC_CHUNKS, or enough for about three
    languages' worth of batch items).
    """
    from polydub.lipsync.pipeline import LipSyncPipeline

    started = time.monotonic()
    video, res = Path(video), res or models.res
    if not dubbed_audio:
        raise InputError("no dubbed audio given: nothing to lip-sync")
    if set(dubbed_audio) != set(out_videos):
        raise InputError(f"languages differ: audio for {sorted(dubbed_audio)}, outputs for {sorted(out_videos)}")
    for lang, path in dubbed_audio.items():
        if not Path(path).is_file():
            raise InputError(f"{path}: no dubbed audio for {lang}")
    width, height = frame_size(video)

    track, how = load_or_track(video, Path(track_cache), res, timeout, prefer=prefer_face)
    frames = len(track)
    if frames == 0:
        raise InputError(f"{video}: no video frames to lip-sync")
    features = {lang: whisper_features(models.whisper, load_audio(path), overlap_s=overlap_s)
                for lang, path in dubbed_audio.items()}

    mask = models.mask if models.mask.shape[-1] == res else load_mask(res)
    pipeline = LipSyncPipeline(models.unet, models.vae, mask, num_steps=num_steps,
                               guidance_scale=guidance_scale, deep_cache=deep_cache,
                               device=models.device, dtype=models.dtype,
                               audio_shape=window_shape(models.whisper.dims),
                               compile=config.lipsync_compile(), cuda_graphs=config.lipsync_cuda_graphs(),
                               max_batch=config.lipsync_max_batch())
    noise = pipeline.initial_noise(res, res, seed=seed)  # one draw for the whole video
    per_batch = chunks_per_batch or config.lipsync_chunks() or max(1, BATCH_LANGUAGES // len(dubbed_audio))
    generator = torch.Generator(models.device).manual_seed(seed)

    tmp = {lang: Path(p).with_name(Path(p).stem + ".partial" + Path(p).suffix) for lang, p in out_videos.items()}
    writers: dict[str, BackgroundWriter] = {}
    try:
        for lang in out_videos:
            writers[lang] = BackgroundWriter(FrameWriter(tmp[lang], width, height, FPS, codec_args, timeout),
                                             depth=2 * chunk_frames)
        chunk: list[tuple[int, np.ndarray]] = []
        pending: list[tuple] = []  # prepared chunks waiting for their UNet batch, in video order

        def run() -> None:
            if not pending:
                return
            synced = pipeline.sync_chunks([(lat, audio, faces) for _, _, lat, audio, faces in pending], noise,
                                          keep_on_device=True)
            for (frames_in, matrices, *_), outs in zip(pending, synced):
                for lang, out in outs.items():
                    for pasted in warp.paste_faces(frames_in, out, matrices).cpu().numpy():
                        writers[lang].write(pasted)
            pending.clear()

        def flush() -> None:
            if not chunk:
                return
            if pending and len(pending[0][0]) != len(chunk):
                run()  # only chunks of one length share a batch
            first = chunk[0][0]
            matrices = track.matrices[[i for i, _ in chunk]]
            frames_in = torch.from_numpy(np.stack([f for _, f in chunk])).to(pipeline.device)
            faces = warp.align_faces(frames_in, matrices, res)  # (F, 3, res, res) on the device
            latents = pipeline.prepare_faces(faces, generator=generator)
            audio = {lang: frame_windows(feat, FPS, frames=len(chunk), first=first)
                     for lang, feat in features.items()}
            pending.append((frames_in, matrices, latents, audio, faces))
            chunk.clear()
            if len(pending) >= per_batch:
                run()

        count = 0
        for i, frame in enumerate(prefetch(read_frames(video, FPS, timeout), depth=2 * chunk_frames)):
            count += 1
            if i >= frames:
                raise StageError(f"{track_cache}: face track has {frames} frames but the video has more; "
                                 "delete it to track again")
            tid = track.track_id[i]
            if chunk and (tid < 0 or tid != track.track_id[chunk[0][0]] or len(chunk) == chunk_frames):
                flush()
            if tid < 0:
                flush()
                run()  # everything before this frame is written first
                for w in writers.values():
                    w.write(frame)
            else:
                chunk.append((i, frame))
        flush()
        run()
        if count != frames:
            raise StageError(f"{track_cache}: face track has {frames} frames but the video has {count}; "
                             "delete it to track again")
        for lang, w in writers.items():
            w.close()
            tmp[lang].replace(out_videos[lang])
    except BaseException:
        for w in writers.values():
            w.abort()
        raise
    return {"frames": frames, "face_frames": int(track.has_face.sum()), "track": how,
            "seconds": round(time.monotonic() - started, 3),
            "outputs": {lang: str(p) for lang, p in out_videos.items()}}
