"""Where the lip-sync weights live and which version, device and face the stage uses.

Kept free of torch so that deciding whether lip-sync can run costs nothing when the
weights are not there.
"""

from __future__ import annotations

from pathlib import Path

from polydub import config
from polydub.errors import InputError

RESOLUTION = {"1.5": 256, "1.6": 512}
VAE_DIR = "sd-vae-ft-mse"
FACE_CHOICES = ("largest", "left", "right", "center")  # which face to sync when several are visible
OVERRIDES = "polydub.json"  # optional, beside the UNet: {"unet": {...config...}, "resolution": N}


def default_version() -> str:
    """The LatentSync version the flow uses: DUB_LIPSYNC_VERSION, else 1.5 (256 px, ~8 GB)."""
    return config.lipsync_version()


def lipsync_device() -> str:
    """DUB_LIPSYNC_DEVICE if set (`cpu` runs the stage on the CPU, slowly), else cuda."""
    return config.lipsync_device()


def weight_paths(models_dir: str | Path, version: str = "1.5") -> dict[str, Path]:
    """Where the weights of a LatentSync version live under the models directory."""
    if version not in RESOLUTION:
        raise InputError(f"unknown LatentSync version {version!r} (choose from {', '.join(RESOLUTION)})")
    root = Path(models_dir).expanduser()
    return {"unet": root / f"latentsync-{version}" / "latentsync_unet.pt",
            "whisper": root / f"latentsync-{version}" / "whisper" / "tiny.pt",
            "vae": root / VAE_DIR}


def missing_weights(models_dir: str | Path, version: str = "1.5") -> list[str]:
    """The weight files (or the VAE folder) that are not there."""
    paths = weight_paths(models_dir, version)
    present = {"unet": paths["unet"].is_file(), "whisper": paths["whisper"].is_file(),
               "vae": (paths["vae"] / "config.json").is_file()}
    return [str(paths[k]) for k, ok in present.items() if not ok]


def face_choice() -> str:
    """DUB_LIPSYNC_FACE (largest, left, right, center), checked."""
    prefer = config.lipsync_face()
    if prefer not in FACE_CHOICES:
        raise InputError(f"DUB_LIPSYNC_FACE must be one of {', '.join(FACE_CHOICES)}, not {prefer!r}")
    return prefer


def weights_fingerprint(models_dir: str | Path, version: str) -> str:
    """Identity of the weights in use (paths, sizes, modification times): part of the cache
    key, so that new or replaced weights redo the lip-sync."""
    parts = []
    for path in weight_paths(models_dir, version).values():
        files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
        overrides = path.parent / OVERRIDES
        if path.is_file() and overrides.is_file():
            files.append(overrides)
        for f in files:
            st = f.stat()
            parts.append(f"{f.name}:{st.st_size}:{st.st_mtime_ns}")
    return ";".join(parts)
