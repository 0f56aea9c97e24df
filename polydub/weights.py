"""Model weights polydub can download (`dub models list|pull`) and where they live.

Each model is a folder under the models directory (`DUB_MODELS_DIR`) holding its files
and a `manifest.json` with the sha256 of each. Downloads resume: bytes land in
`FILE.part`, an interrupted pull continues from its size with an HTTP Range request, and
the file gets its final name only once complete (and verified where the digest is known).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import urllib.error
import urllib.request
from dataclasses import dataclass
from http.client import HTTPException
from pathlib import Path
from typing import Callable

from polydub import __version__, config
from polydub.errors import InputError, StageError
from polydub.tts.chatterbox_model import FILES as CHATTERBOX_FILES
from polydub.tts.kokoro import ALL_VOICES as KOKORO_VOICES

TIMEOUT_S = 30.0           # per connect and per read; a stalled transfer fails, then resumes
DOWNLOAD_ATTEMPTS = 3      # a dropped connection resumes from the .part file this many times
CHUNK_BYTES = 1 << 20
MANIFEST = "manifest.json"
USER_AGENT = f"polydub/{__version__}"


@dataclass(frozen=True)
class ModelFile:
    url: str
    path: str                 # relative to the model's folder
    sha256: str | None = None  # or its first hex digits, where that is all upstream publishes
    size: int | None = None   # bytes


@dataclass(frozen=True)
class ModelSpec:
    name: str
    description: str
    files: tuple[ModelFile, ...]
    stage: str = ""  # the pipeline stage it serves: transcribe, separate, translate, voice, lipsync
    clones: bool | None = None  # a voice: whether it clones the speaker


def _hf(repo: str, *files: str) -> tuple[ModelFile, ...]:
    return tuple(ModelFile(f"https://huggingface.co/{repo}/resolve/main/{f}", f) for f in files)


# openai-whisper's own checkpoints; the URL path carries the file's sha256.
_WHISPER_URLS = {
    "tiny": "https://openaipublic.azureedge.net/main/whisper/models/65147644a518d12f04e32d6f3b26facc3f8dd46e5390956a9424a650c0ce22b9/tiny.pt",
    "base": "https://openaipublic.azureedge.net/main/whisper/models/ed3a0b6b1c0edf879ad9b11b1af5a0e6ab5db9205f891f668f8b0e6c6326e34e/base.pt",
    "small": "https://openaipublic.azureedge.net/main/whisper/models/9ecf779972d90ba49c06d968637d720dd632c55bbf19d441fb42bf17a411e794/small.pt",
    "medium": "https://openaipublic.azureedge.net/main/whisper/models/345ae4da62f9b3d59415adc60127b97c714f32e89e936602e85993674d08dcb1/medium.pt",
    "large-v3": "https://openaipublic.azureedge.net/main/whisper/models/e5b1a55b89c1367dacf97e3e19bfd829a01529dbfdeefa8caeb59b3f1b81dadb/large-v3.pt",
}


_HTDEMUCS_URL = "https://dl.fbaipublicfiles.com/demucs/hybrid_transformer/955717e8-8726e21a.th"
# faster-whisper's CTranslate2 conversions of the same models (MIT, like OpenAI's weights)
_CT2_REPOS = {
    "tiny": "Systran/faster-whisper-tiny", "tiny.en": "Systran/faster-whisper-tiny.en",
    "base": "Systran/faster-whisper-base", "base.en": "Systran/faster-whisper-base.en",
    "small": "Systran/faster-whisper-small", "small.en": "Systran/faster-whisper-small.en",
    "medium": "Systran/faster-whisper-medium", "medium.en": "Systran/faster-whisper-medium.en",
    "large-v2": "Systran/faster-whisper-large-v2", "large-v3": "Systran/faster-whisper-large-v3",
    "large-v3-turbo": "mobiuslabsgmbh/faster-whisper-large-v3-turbo",
}
_CT2_V3 = ("large-v3", "large-v3-turbo")  # 128 mel bins: a preprocessor config, a JSON vocabulary


def _faster_whisper(size: str) -> ModelSpec:
    files = (("config.json", "model.bin", "preprocessor_config.json", "tokenizer.json", "vocabulary.json")
             if size in _CT2_V3 else ("config.json", "model.bin", "tokenizer.json", "vocabulary.txt"))
    return ModelSpec(f"faster-whisper-{size}", f"Whisper {size} speech recognition for faster-whisper "
                     f"(CTranslate2; MIT licence)", _hf(_CT2_REPOS[size], *files), stage="transcribe")


def _whisper(size: str) -> ModelSpec:
    url = _WHISPER_URLS[size]
    file = ModelFile(url, url.rsplit("/", 1)[1], sha256=url.split("/")[-2])
    return ModelSpec(f"whisper-{size}", f"openai-whisper {size} speech recognition (MIT licence)", (file,),
                     stage="transcribe")


REGISTRY: dict[str, ModelSpec] = {
    spec.name: spec
    for spec in [
        ModelSpec("latentsync-1.5", "LatentSync 1.5 lip-sync UNet and its audio encoder",
                  _hf("ByteDance/LatentSync-1.5", "latentsync_unet.pt", "whisper/tiny.pt"), stage="lipsync"),
        ModelSpec("latentsync-1.6", "LatentSync 1.6 lip-sync UNet (512 px) and its audio encoder",
                  _hf("ByteDance/LatentSync-1.6", "latentsync_unet.pt", "whisper/tiny.pt"), stage="lipsync"),
        ModelSpec("sd-vae-ft-mse", "Stable Diffusion VAE used by LatentSync",
                  _hf("stabilityai/sd-vae-ft-mse", "config.json", "diffusion_pytorch_model.safetensors"),
                  stage="lipsync"),
        *(_whisper(size) for size in _WHISPER_URLS),
        # Demucs names each checkpoint SIGNATURE-SHA256PREFIX.th (demucs/remote/files.txt).
        ModelSpec("htdemucs", "Hybrid Transformer Demucs v4: separates the voice from music and effects",
                  (ModelFile(_HTDEMUCS_URL, _HTDEMUCS_URL.rsplit("/", 1)[1],
                             sha256=_HTDEMUCS_URL.rsplit("-", 1)[1].removesuffix(".th")),), stage="separate"),
        *(_faster_whisper(size) for size in _CT2_REPOS),
        ModelSpec("chatterbox-multilingual", "Chatterbox Multilingual voice cloning in 23 languages "
                  "(MIT licence; its speech carries Resemble's Perth watermark)",
                  _hf("ResembleAI/chatterbox", *CHATTERBOX_FILES), stage="voice", clones=True),
        ModelSpec("kokoro", "Kokoro-82M natural voices for en, es, fr, hi, it and pt-br, no cloning "
                  "(Apache-2.0 licence)",
                  _hf("hexgrad/Kokoro-82M", "config.json", "kokoro-v1_0.pth",
                      *(f"voices/{name}.pt" for name in KOKORO_VOICES)), stage="voice", clones=False),
        ModelSpec("xtts-v2", "Coqui XTTS v2 multilingual voice-cloning TTS (CPML licence)",
                  _hf("coqui/XTTS-v2", "config.json", "model.pth", "vocab.json",
                      "speakers_xtts.pth", "dvae.pth", "mel_stats.pth"), stage="voice", clones=True),
    ]
}


def _spec(name: str) -> ModelSpec:
    if name not in REGISTRY:
        raise InputError(f"unknown model {name!r} (known: {', '.join(REGISTRY)})")
    return REGISTRY[name]


def model_dir(name: str, models_dir: Path | None = None) -> Path:
    """The folder a registered model lives in."""
    _spec(name)
    return Path(models_dir if models_dir is not None else config.models_dir()) / name


def is_present(name: str, models_dir: Path | None = None) -> bool:
    """Whether every file of the model is downloaded (complete, under its final name)."""
    root = model_dir(name, models_dir)
    return all((root / f.path).is_file() for f in _spec(name).files)


def list_models(models_dir: Path | None = None) -> list[dict]:
    """One row per registered model: name, stage (and clones, for a voice), description,
    licence, commercial (whether the licence allows commercial use), present, size (bytes
    on disk), path."""
    from polydub import licences

    rows = []
    for name, spec in REGISTRY.items():
        root = model_dir(name, models_dir)
        files = [root / f.path for f in spec.files]
        licence = licences.of_model(name)
        rows.append({
            "name": name,
            "stage": spec.stage,
            **({"clones": bool(spec.clones)} if spec.stage == "voice" else {}),
            "description": spec.description,
            "licence": licence.name,
            "commercial": licence.commercial,
            "licence_note": licence.note,
            "present": all(p.is_file() for p in files),
            "size": sum(p.stat().st_size for p in files if p.is_file()),
            "path": str(root),
        })
    return rows


def verify(name: str, models_dir: Path | None = None) -> str:
    """Load a present model the way polydub uses it, strictly; return what was loaded.

    Raises InputError/StageError (one line) when a file is missing or does not load.
    """
    root = model_dir(name, models_dir)
    if not is_present(name, models_dir):
        raise InputError(f"{name} is not complete in {root}; run: dub models pull {name}")
    if name.startswith("whisper-"):
        import whisper

        model = whisper.load_model(str(root / _spec(name).files[0].path), device="cpu")
        return f"whisper {model.dims.n_audio_layer}-layer encoder, {model.dims.n_vocab} tokens"
    if name.startswith("faster-whisper-"):
        from polydub.asr import faster

        model = faster.load_model(root, device="cpu")
        kind = "multilingual" if faster.is_multilingual(model) else "English-only"
        return f"CTranslate2 Whisper, {kind}, {model.model.n_mels} mel bins"
    if name.startswith("latentsync-"):
        import whisper

        from polydub.lipsync.pipeline import load_unet

        unet = load_unet(root / "latentsync_unet.pt")  # strict: every key and shape
        audio = whisper.load_model(str(root / "whisper" / "tiny.pt"), device="cpu")
        return (f"UNet {sum(p.numel() for p in unet.parameters()) / 1e9:.2f} B params, all keys match; "
                f"whisper audio width {audio.dims.n_audio_state}")
    if name == "sd-vae-ft-mse":
        from polydub.lipsync.pipeline import load_vae

        vae = load_vae(root)
        return f"VAE scaling factor {vae.config.scaling_factor}"
    if name == "htdemucs":
        from polydub.audio import separate

        model = separate.load(root / _spec(name).files[0].path)
        return f"Demucs {type(model).__name__}, stems {', '.join(model.sources)}, {model.samplerate} Hz"
    if name == "kokoro":
        from polydub.tts import kokoro

        return kokoro.describe(root)
    if name == "chatterbox-multilingual":
        from polydub.tts import chatterbox

        return chatterbox.describe(root)
    if name == "xtts-v2":
        from polydub.tts.coqui import CoquiVoice

        voice = CoquiVoice(root)
        return f"XTTS, {len(voice.languages)} languages"
    return "present"


def verify_all(models_dir: Path | None = None) -> list[dict]:
    """`verify` every present model: rows of name, ok, message."""
    rows = []
    for name in REGISTRY:
        if not is_present(name, models_dir):
            continue
        try:
            rows.append({"name": name, "ok": True, "message": verify(name, models_dir)})
        except Exception as exc:  # noqa: BLE001 - reported per model, the others still checked
            rows.append({"name": name, "ok": False, "message": str(exc).splitlines()[0] if str(exc) else type(exc).__name__})
    return rows


def pull(name: str, models_dir: Path | None = None,
         progress: Callable[[str, int, int], None] | None = None) -> Path:
    """Download a model's missing files into its folder and return the folder.
    `progress(file, bytes_done, bytes_total)` is called as bytes arrive (total 0 when the
    server does not say)."""
    spec = _spec(name)
    root = model_dir(name, models_dir)
    root.mkdir(parents=True, exist_ok=True)
    manifest = _read_manifest(root)
    for f in spec.files:
        dest = root / f.path
        if not dest.is_file():
            digest = _download(name, f, dest, progress)
        elif f.path in manifest.get("files", {}):
            continue
        else:  # put there by hand: record what it is
            digest = sha256_file(dest)
        manifest.setdefault("files", {})[f.path] = {
            "url": f.url, "sha256": digest, "size": dest.stat().st_size}
        _write_manifest(root, {"name": name, **manifest})  # after each file: a crash keeps it
    return root


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while block := fh.read(CHUNK_BYTES):
            digest.update(block)
    return digest.hexdigest()


def _read_manifest(root: Path) -> dict:
    try:
        return json.loads((root / MANIFEST).read_text())
    except (OSError, ValueError):
        return {}


def _write_manifest(root: Path, manifest: dict) -> None:
    tmp = root / (MANIFEST + ".tmp")
    tmp.write_text(json.dumps(manifest, indent=2, sort_keys=True))
    os.replace(tmp, root / MANIFEST)


def _download(name: str, f: ModelFile, dest: Path, progress) -> str:
    """Fetch one file to `dest` through `dest.part`; its sha256."""
    part = dest.with_name(dest.name + ".part")
    dest.parent.mkdir(parents=True, exist_ok=True)
    for attempt in range(DOWNLOAD_ATTEMPTS):
        try:
            _fetch(name, f, part, progress)
            break
        except (urllib.error.URLError, HTTPException, TimeoutError, ConnectionError) as exc:
            if isinstance(exc, urllib.error.HTTPError) or attempt == DOWNLOAD_ATTEMPTS - 1:
                raise StageError(f"{name}: downloading {f.path} failed: {_describe(exc)} "
                                 f"({f.url}); run the pull again to resume") from None
    digest = sha256_file(part)
    size = part.stat().st_size
    if f.size is not None and size != f.size:
        part.unlink()
        raise StageError(f"{name}: {f.path} is {size} bytes, expected {f.size}")
    if f.sha256 is not None and not digest.startswith(f.sha256):
        part.unlink()
        raise StageError(f"{name}: {f.path} failed its sha256 check (got {digest[:12]}..., "
                         f"expected {f.sha256[:12]}...); the partial download was removed")
    os.replace(part, dest)
    return digest


def _fetch(name: str, f: ModelFile, part: Path, progress) -> None:
    """Append the rest of the file to `part` (all of it when the server ignores Range)."""
    offset = part.stat().st_size if part.exists() else 0
    headers = {"User-Agent": USER_AGENT}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    token = os.environ.get("HF_TOKEN")
    if token and f.url.startswith("https://huggingface.co/"):
        headers["Authorization"] = f"Bearer {token}"
    try:
        response = urllib.request.urlopen(urllib.request.Request(f.url, headers=headers),
                                          timeout=TIMEOUT_S)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and offset:  # nothing after `offset`: the .part is complete
            total = re.search(r"/(\d+)", exc.headers.get("Content-Range") or "")
            if total and int(total.group(1)) == offset:
                return
            part.unlink()  # the .part is longer than the file: start over
            return _fetch(name, f, part, progress)
        raise
    with response:
        if offset and response.status != 206:
            offset = 0  # the server sent the whole file
        length = response.headers.get("Content-Length")
        total = offset + int(length) if length else (f.size or 0)
        done = offset
        with part.open("ab" if offset else "wb") as out:
            while block := response.read(CHUNK_BYTES):
                out.write(block)
                done += len(block)
                if progress:
                    progress(f.path, done, total)
    if length and done != total:
        raise ConnectionError(f"connection closed after {done} of {total} bytes")


def _describe(exc: Exception) -> str:
    if isinstance(exc, urllib.error.HTTPError):
        return f"HTTP {exc.code} {exc.reason}"
    reason = getattr(exc, "reason", None) or exc
    return f"{type(exc).__name__}: {str(reason).splitlines()[0] if str(reason) else ''}".rstrip(": ")
