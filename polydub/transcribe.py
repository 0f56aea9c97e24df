"""Speech to timed segments with openai-whisper, from a model name or a local checkpoint."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from polydub import config
from polydub.errors import InputError
from polydub.loading import load_once
from polydub.segments import Segment

ASR_SAMPLE_RATE = 16_000  # whisper's input rate
DEFAULT_MODEL = "base"
SEED = 0


def locate_model(spec: str, models_dir: Path | None = None) -> Path:
    """Find a whisper checkpoint for a name ('base') or a path; `InputError` if absent.

    Names are looked up in `MODELS/whisper-NAME/NAME.pt` (where `dub models pull` puts
    them) and `MODELS/whisper/NAME.pt`, then in whisper's own cache
    (~/.cache/whisper); nothing is downloaded here (`dub models pull whisper-NAME` does).
    """
    path = Path(spec).expanduser()
    if path.suffix == ".pt" or path.is_file() or "/" in spec:
        if not path.is_file():
            raise InputError(f"whisper checkpoint {spec} not found")
        return path
    import whisper  # deferred: importing torch costs seconds

    if spec not in whisper._MODELS:
        raise InputError(f"unknown whisper model {spec!r} (one of: {', '.join(whisper._MODELS)})")
    root = Path(models_dir or config.models_dir())
    candidates = [root / f"whisper-{spec}" / f"{spec}.pt", root / "whisper" / f"{spec}.pt",
                  Path.home() / ".cache" / "whisper" / Path(whisper._MODELS[spec]).name]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    raise InputError(f"whisper model {spec!r} is not on this machine; give a transcript "
                     f"(--transcript or a NAME.srt sidecar) or run: dub models pull whisper-{spec}")


def load_model(path: Path, device: str | None = None):
    """Load (once per process) a whisper checkpoint saved as {'dims', 'model_state_dict'}."""
    import torch
    import whisper

    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    return load_once(("whisper", str(Path(path).resolve()), device),
                     lambda: whisper.load_model(str(path), device=device))


def transcribe(model, audio: np.ndarray, language: str | None = None) -> tuple[list[Segment], str]:
    """Transcribe 16 kHz mono float32 audio; return segments and the (detected) language."""
    import torch

    # whisper samples when it falls back to a higher temperature: seed it, so that the same
    # audio always gives the same transcript (and the same cache keys downstream).
    with torch.random.fork_rng(devices=[model.device] if model.device.type == "cuda" else []):
        torch.manual_seed(SEED)
        result = model.transcribe(audio, language=language, verbose=None,
                                  fp16=torch.cuda.is_available() and model.device.type == "cuda",
                                  condition_on_previous_text=False)
    segments = [Segment(round(float(s["start"]), 3), round(float(s["end"]), 3), s["text"].strip())
                for s in result["segments"] if s["text"].strip() and s["end"] > s["start"]]
    return segments, result.get("language") or language or "und"


def model_version(path: Path) -> str:
    """Identity of a checkpoint for cache keys: file name, size and mtime."""
    st = Path(path).stat()
    return f"whisper:{Path(path).name}:{st.st_size}:{int(st.st_mtime)}"
