"""Source separation: the source's background (music, effects) without its voice.

A Demucs checkpoint (HT-Demucs, `dub models pull htdemucs`) splits the source into its
stems; the background is the sum of every stem but `vocals`, so the dub goes over the
music and effects alone instead of over the band-cut source. Checkpoints are the files
Demucs itself publishes (`demucs.states.serialize_model`: class, arguments and state),
one `*.th` in the model's folder; any stem list works as long as it names `vocals`
(`drums, bass, other, vocals` for HT-Demucs, or e.g. `vocals, other`).

Runs once per video, shared by every language. Without a checkpoint the mix falls back
to the band-cut (`mix.suppress_speech`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import soundfile as sf

from polydub import config
from polydub.errors import StageError

MODEL_DIR = "htdemucs"  # under the models directory; `dub models pull htdemucs` writes it
VOICE_STEM = "vocals"
OVERLAP = 0.25  # of each segment, cross-faded (Demucs' own default)
SHIFTS = 0  # random-shift averaging: up to +0.2 dB SDR for twice the time per shift; off


def locate(models_dir: Path | None = None) -> Path | None:
    """The Demucs checkpoint in the models directory's `htdemucs` folder, or None."""
    folder = Path(models_dir if models_dir is not None else config.models_dir()) / MODEL_DIR
    found = sorted(folder.glob("*.th")) if folder.is_dir() else []
    return found[0] if found else None


def model_version(checkpoint: Path) -> str:
    """Identity of a checkpoint for cache keys and the catalog: name, size and mtime."""
    st = Path(checkpoint).stat()
    return f"demucs:{Path(checkpoint).name}:{st.st_size}:{int(st.st_mtime)}"


def load(checkpoint: Path):
    """The Demucs model saved in `checkpoint`, in eval mode; StageError (one line) when the
    file does not load or has no `vocals` stem."""
    from demucs.states import load_model

    try:
        model = load_model(Path(checkpoint))
    except Exception as exc:  # noqa: BLE001 - torch/pickle raise anything on a bad file
        why = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise StageError(f"{checkpoint}: not a Demucs checkpoint ({why})") from None
    if VOICE_STEM not in getattr(model, "sources", []):
        raise StageError(f"{checkpoint}: the model has no '{VOICE_STEM}' stem (it has {', '.join(model.sources)})")
    return model.eval()


def separate(model, source_wav: Path, background_wav: Path, voice_wav: Path | None = None) -> Path:
    """Write the background of `source_wav` (all stems but vocals) to `background_wav`:
    float WAV with the source's rate, channels and exact length. `voice_wav`, if given,
    gets the vocals stem alike.

    The audio is resampled to the model's rate and channels, normalized as Demucs does
    (zero mean, unit deviation), split into overlapping segments, and mapped back.
    """
    import torch
    from demucs.apply import apply_model
    from demucs.audio import convert_audio

    try:
        audio, rate = sf.read(str(source_wav), dtype="float32", always_2d=True)  # [T, C]
    except (sf.LibsndfileError, RuntimeError) as exc:
        raise StageError(f"{source_wav}: cannot read the source audio ({exc})") from None
    frames, channels = audio.shape
    wav = convert_audio(torch.from_numpy(audio.T.copy()), rate, model.samplerate, model.audio_channels)
    ref = wav.mean(0)
    mean, std = ref.mean(), ref.std() + 1e-8  # Demucs' own normalization
    device = "cuda" if torch.cuda.is_available() else "cpu"
    with torch.no_grad():
        stems = apply_model(model, ((wav - mean) / std)[None], shifts=SHIFTS, split=True,
                            overlap=OVERLAP, device=device)[0].cpu() * std  # [S, C, T]
    voice_index = model.sources.index(VOICE_STEM)
    background = stems.sum(0) - stems[voice_index] + mean  # the input's offset goes with the background
    outputs = [(background, background_wav)] + ([(stems[voice_index], voice_wav)] if voice_wav else [])
    for stem, path in outputs:
        back = convert_audio(stem, model.samplerate, rate, channels).numpy().T  # [T', C]
        back = back[:frames]
        if len(back) < frames:
            back = np.concatenate([back, np.zeros((frames - len(back), channels), np.float32)])
        sf.write(str(path), back.astype(np.float32), rate, subtype="FLOAT")
    return Path(background_wav)
