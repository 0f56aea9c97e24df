"""Audio features for lip-sync: whisper-tiny encoder hidden states at 50 Hz, windowed per video frame.

`whisper_features` turns 16 kHz mono speech into `(T, n_layers + 1, width)` (T positions at
50 Hz); `frame_windows` gives each 25 fps video frame the 10 positions around it, flattened to
`(10 * (n_layers + 1), width)` = `(50, 384)` for whisper tiny, which the UNet cross-attends to.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
import whisper
from torch import Tensor

from polydub.errors import InputError, StageError

SAMPLE_RATE = 16_000  # Hz, what whisper expects
WINDOW_MEL_FRAMES = 3000  # 30 s of mel frames (hop 10 ms): the encoder's fixed input
POSITIONS_PER_SECOND = 50  # encoder positions (conv2 has stride 2)
FRAME_CONTEXT = (4, 6)  # positions before / after (exclusive) each frame's centre: c-4 .. c+5
ENCODER_BATCH = 8  # windows per encoder call
DECODE_TIMEOUT = 600  # seconds


def load_audio(path: str | Path, timeout: float = DECODE_TIMEOUT) -> np.ndarray:
    """Decode any audio file to a 16 kHz mono float32 array in [-1, 1]."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: no such audio file")
    args = ["ffmpeg", "-hide_banner", "-nostdin", "-loglevel", "error", "-i", str(path),
            "-map", "0:a:0", "-ac", "1", "-ar", str(SAMPLE_RATE), "-f", "f32le", "-"]
    try:
        proc = subprocess.run(args, capture_output=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        raise StageError(f"decoding {path.name} timed out after {timeout:.0f} s") from None
    if proc.returncode != 0:
        lines = proc.stderr.decode(errors="replace").strip().splitlines() or ["decode failed"]
        raise StageError(f"decoding {path.name} failed: {lines[-1]}")
    return np.frombuffer(proc.stdout, dtype=np.float32).copy()


@torch.no_grad()
def encoder_hidden_states(model: whisper.Whisper, mel: Tensor) -> Tensor:
    """Run the audio encoder on `(B, n_mels, 3000)` mel windows.

    Returns `(B, 1500, n_layers + 1, width)`: the input to the first block (after conv1/conv2,
    GELU and the positional embedding) and each block's output; `ln_post` is not applied.
    """
    encoder = model.encoder
    x = F.gelu(encoder.conv1(mel))
    x = F.gelu(encoder.conv2(x)).permute(0, 2, 1)
    x = x + encoder.positional_embedding[: x.shape[1]].to(x.dtype)
    states = [x]
    for block in encoder.blocks:
        x = block(x)
        states.append(x)
    return torch.stack(states, dim=2)


def _windows(n_mel: int, overlap: int) -> list[tuple[int, int, int]]:
    """Mel windows as (mel start, first kept position, end of kept positions), positions global.

    Without overlap: consecutive 3000-frame windows, each keeping `frames // 2` positions.
    With `overlap` positions (even) shared by consecutive windows: each window keeps the
    positions at least `overlap / 2` from an inner window edge, so every kept position has
    audio context on both sides (no seam every 30 s).
    """
    total, span = n_mel // 2, WINDOW_MEL_FRAMES // 2
    if overlap <= 0:
        return [(s, s // 2, s // 2 + min(WINDOW_MEL_FRAMES, n_mel - s) // 2)
                for s in range(0, n_mel, WINDOW_MEL_FRAMES)]
    out, start, first = [], 0, 0  # start in positions
    while first < total:
        end = total if start + span >= total else start + span - overlap // 2
        out.append((2 * start, first, end))
        start, first = start + span - overlap, end
    return out


@torch.no_grad()
def whisper_features(model: whisper.Whisper, audio: np.ndarray | Tensor, overlap_s: float = 0.0) -> Tensor:
    """Encoder hidden states of 16 kHz mono audio: `(T, n_layers + 1, width)` at 50 Hz, float32 CPU.

    The log-mel is computed on the whole file exactly as openai-whisper does (so its max - 8
    floor is over the whole file), cut into consecutive 30 s windows, each zero-padded to 3000
    frames. Of each window the first `window_mel_frames // 2` positions are kept, so T is
    `n_mel_frames // 2` (500 for 10 s). `overlap_s > 0` overlaps the windows instead (removes
    the seam every 30 s; does not reproduce the reference numerics). `overlap_s` is the
    audio shared by consecutive windows, at most 7.5 s.
    """
    audio = torch.as_tensor(audio, dtype=torch.float32)
    if sum(n > 1 for n in audio.shape) > 1:
        raise InputError(f"audio must be mono, got shape {tuple(audio.shape)}")
    audio = audio.flatten()
    if audio.numel() == 0:
        raise InputError("audio is empty: nothing to lip-sync to")
    if audio.numel() < whisper.audio.N_FFT:
        raise InputError(f"audio is too short ({audio.numel()} samples at 16 kHz): nothing to lip-sync to")
    param = next(model.encoder.parameters())
    mel = whisper.log_mel_spectrogram(audio, n_mels=model.dims.n_mels, device=param.device)
    overlap = 2 * int(round(overlap_s * POSITIONS_PER_SECOND / 2))  # positions, even
    if not 0 <= overlap <= WINDOW_MEL_FRAMES // 4:
        raise InputError(f"overlap_s must be in [0, 7.5], got {overlap_s}")
    plan = _windows(mel.shape[1], overlap)
    pieces = []
    for b in range(0, len(plan), ENCODER_BATCH):
        batch = plan[b: b + ENCODER_BATCH]
        windows = torch.stack([whisper.pad_or_trim(mel[:, s: s + WINDOW_MEL_FRAMES], WINDOW_MEL_FRAMES)
                               for s, _, _ in batch])
        states = encoder_hidden_states(model, windows.to(param.dtype))
        for (s, first, end), st in zip(batch, states):
            pieces.append(st[first - s // 2: end - s // 2].float().cpu())
    return torch.cat(pieces)


def frame_count(positions: int, fps: float = 25.0) -> int:
    """Frames the reference makes from T positions: up to and including the first frame
    whose centre lies past the end (`floor(T / 2) + 2` at 25 fps)."""
    i = 0
    while int(i * POSITIONS_PER_SECOND / fps) <= positions:
        i += 1
    return i + 1


def window_shape(dims) -> tuple[int, int]:
    """The per-frame window `(10 * (n_audio_layer + 1), n_audio_state)` an encoder with these
    `whisper.ModelDimensions` gives: (50, 384) for whisper tiny."""
    return (sum(FRAME_CONTEXT) * (dims.n_audio_layer + 1), dims.n_audio_state)


def frame_windows(features: Tensor, fps: float = 25.0, frames: int | None = None, first: int = 0) -> Tensor:
    """Per video frame, the positions around it: `(N, 10 * (n_layers + 1), width)`.

    Frame i is centred on position `c = int(i * 50 / fps)` and takes positions c-4 .. c+5,
    each clamped to [0, T-1], flattened time-major then layer. N is `frame_count(T, fps)`
    unless `frames` is given (then the windows are made for exactly that many frames; the
    clamping repeats the last position past the end of the audio); `first` starts the windows
    at that frame (for one chunk of a video).
    """
    total, layers, width = features.shape
    n = frame_count(total, fps) if frames is None else frames
    # as the reference's int(i * 50 / fps)
    centres = (torch.arange(first, first + n, dtype=torch.float64) * POSITIONS_PER_SECOND / fps).long()
    offsets = torch.arange(-FRAME_CONTEXT[0], FRAME_CONTEXT[1])
    index = (centres[:, None] + offsets[None, :]).clamp(0, total - 1)  # (N, 10)
    return features[index].reshape(n, len(offsets) * layers, width)
