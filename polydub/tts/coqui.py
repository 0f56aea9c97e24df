"""Coqui TTS: any local Coqui model (VITS, XTTS, ...); XTTS-v2 clones the source speaker.

Weights are never downloaded here: a model is a directory holding `config.json` and a
checkpoint, found by path, in the models directory or in Coqui's own download cache.
Loaded models are kept per directory and shared by every thread of the process.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import numpy as np

from polydub.errors import InputError, StageError
from polydub.loading import load_once
from polydub.tts.wav import fingerprint, package_version, write_line

XTTS_NAME = "tts_models/multilingual/multi-dataset/xtts_v2"
XTTS_DIR = "xtts-v2"  # under the models directory; `dub models pull xtts-v2` writes it
XTTS_ALIASES = {"xtts-v2", "xtts_v2", "xtts", XTTS_NAME}
CHECKPOINTS = ("model.pth", "model_file.pth", "checkpoint.pth", "model_file.pth.tar")
# Our language codes where XTTS spells them differently.
XTTS_LANGUAGES = {"zh": "zh-cn", "zh-tw": "zh-cn", "pt-br": "pt"}


def known_model_names() -> set[str]:
    """Model names of Coqui's model zoo (`type/language/dataset/model`), from its bundled list."""
    try:
        zoo = json.loads(resources.files("TTS").joinpath(".models.json").read_text(encoding="utf-8"))
    except (ModuleNotFoundError, OSError, ValueError):
        return set()
    return {f"{kind}/{lang}/{data}/{name}" for kind, langs in zoo.items()
            for lang, sets in langs.items() for data, names in sets.items() for name in names}


def checkpoint_in(model_dir: Path) -> Path | None:
    """The checkpoint of a Coqui model directory, or None when it is not one."""
    if not (model_dir / "config.json").is_file():
        return None
    return next((model_dir / c for c in CHECKPOINTS if (model_dir / c).is_file()), None)


def read_config(model_dir: Path) -> dict:
    try:
        return json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise InputError(f"{model_dir / 'config.json'}: not a readable Coqui config ({exc})") from None


def is_xtts(model_dir: Path) -> bool:
    return read_config(model_dir).get("model") == "xtts"


def _coqui_cache_dirs(name: str) -> list[Path]:
    """Where Coqui's own `tts --model_name` would have put `name` (TTS_HOME, XDG, Hugging Face)."""
    dirs = []
    try:
        from trainer.io import (
            get_user_data_dir,  # what TTS.utils.manage.ModelManager uses
        )

        dirs.append(get_user_data_dir("tts") / name.replace("/", "--"))
    except ImportError:
        pass
    try:
        zoo = json.loads(resources.files("TTS").joinpath(".models.json").read_text(encoding="utf-8"))
        kind, lang, data, model = name.split("/")
        repo_id = zoo[kind][lang][data][model].get("repo_id")
    except (ModuleNotFoundError, OSError, ValueError, KeyError):
        repo_id = None
    if repo_id:
        try:
            from huggingface_hub import snapshot_download

            # local_files_only: look in the Hugging Face cache, never on the network
            dirs.append(Path(snapshot_download(repo_id, local_files_only=True)))
        except Exception:  # noqa: BLE001 - any failure means "not in the cache"
            pass
    return dirs


def candidate_dirs(name_or_dir: str, models_dir: Path) -> list[Path]:
    """Every place a model named `name_or_dir` may be, in the order we look."""
    given = Path(name_or_dir).expanduser()
    if given.is_dir() or given.is_absolute() or name_or_dir.startswith("."):
        return [given]
    name = XTTS_NAME if name_or_dir in XTTS_ALIASES else name_or_dir
    dirs = [models_dir / XTTS_DIR] if name == XTTS_NAME else []
    dirs += [models_dir / name_or_dir, models_dir / name.replace("/", "--")]
    return dirs + _coqui_cache_dirs(name)


def find_model(name_or_dir: str, models_dir: Path) -> Path:
    """The local directory of a Coqui model; `InputError` saying how to get it when absent."""
    dirs = candidate_dirs(name_or_dir, models_dir)
    for d in dirs:
        if checkpoint_in(d):
            return d.resolve()
    if len(dirs) == 1:
        d = dirs[0]
        what = "has no config.json and model.pth" if d.is_dir() else "does not exist"
        raise InputError(f"Coqui model directory {d} {what}")
    pull = "xtts-v2" if name_or_dir in XTTS_ALIASES else name_or_dir
    raise InputError(f"Coqui model '{name_or_dir}' is not downloaded (looked in {dirs[0]}); "
                     f"run `dub models pull {pull}` or give coqui:DIR with config.json and model.pth")


def xtts_language(lang: str, supported: list[str]) -> str | None:
    """Our code -> XTTS's (`zh` -> `zh-cn`, `pt-br` -> `pt`), None when XTTS does not speak it."""
    code = XTTS_LANGUAGES.get(lang, lang)
    for c in (code, code.split("-")[0]):
        if c in supported:
            return c
    return None


def model_language(lang: str, supported: list[str]) -> str | None:
    """Pick the model's name for `lang`: exact, base code, or the first regional variant."""
    if not supported:
        return None
    base = lang.split("-")[0]
    for c in (lang, base):
        if c in supported:
            return c
    return next((c for c in supported if c.split("-")[0] == base), None)


@dataclass
class _Loaded:
    """One loaded model, shared by every voice and thread using its directory."""

    synthesizer: object  # TTS.utils.synthesizer.Synthesizer
    lock: threading.Lock = field(default_factory=threading.Lock)  # one inference at a time
    voices: dict = field(default_factory=dict)  # reference clip -> XTTS conditioning latents


def _xtts_accepts_transformers_cache() -> None:
    """transformers >= 5.24 hands the generation cache to `forward` as `cache=`; coqui-tts 0.28's
    XTTS GPT still reads `past_key_values=` and fails on its second token. Pass it on."""
    from TTS.tts.layers.xtts.gpt_inference import GPT2InferenceModel

    forward = GPT2InferenceModel.forward
    if getattr(forward, "passes_cache", False):
        return

    def forward_with_cache(self, input_ids=None, past_key_values=None, **kwargs):
        if past_key_values is None and kwargs.get("cache") is not None:
            past_key_values = kwargs.pop("cache")
        return forward(self, input_ids=input_ids, past_key_values=past_key_values, **kwargs)

    forward_with_cache.passes_cache = True
    GPT2InferenceModel.forward = forward_with_cache


def load(model_dir: Path) -> _Loaded:
    """Load a model once per process (on CUDA when there is one) and keep it."""
    import torch

    use_cuda = torch.cuda.is_available()

    def build() -> _Loaded:
        from TTS.utils.synthesizer import Synthesizer

        # COQUI_TOS_AGREED is left alone: it only answers the licence prompt of a
        # download, and the person who pulled these weights answered it then.
        checkpoint = checkpoint_in(model_dir)
        # XTTS loads itself from its directory (vocab.json, speakers_xtts.pth beside it).
        target = model_dir if is_xtts(model_dir) else checkpoint
        if is_xtts(model_dir):
            _xtts_accepts_transformers_cache()
        try:
            synth = Synthesizer(tts_checkpoint=target, tts_config_path=model_dir / "config.json",
                                use_cuda=use_cuda)
        except Exception as exc:  # noqa: BLE001 - any load failure is one line for the user
            raise StageError(f"could not load Coqui model {model_dir}: "
                             f"{type(exc).__name__}: {exc}".splitlines()[0]) from None
        return _Loaded(synth)

    return load_once(("coqui", str(Path(model_dir).resolve()), use_cuda), build)


class CoquiVoice:
    """A local Coqui model. XTTS clones the speaker of `reference_wav` (6-15 s of clean speech)."""

    backend = "coqui"

    def __init__(self, model_dir: Path, reference_wav: Path | None = None, speed: float = 1.0):
        model_dir = Path(model_dir)
        checkpoint = checkpoint_in(model_dir)
        if checkpoint is None:
            raise InputError(f"Coqui model directory {model_dir} has no config.json and model.pth")
        config = read_config(model_dir)
        self.model_dir = model_dir
        self.xtts = config.get("model") == "xtts"
        self.languages: list[str] = list(config.get("languages") or [])
        self.reference_wav = Path(reference_wav) if reference_wav else None
        if self.reference_wav and not self.reference_wav.is_file():
            raise InputError(f"{self.reference_wav}: no such reference clip")
        if self.xtts and not self.reference_wav and not (model_dir / "speakers_xtts.pth").is_file():
            raise InputError(f"XTTS model {model_dir} needs a reference clip of the speaker to clone")
        audio = config.get("audio") or {}
        self.sample_rate = int(audio.get("output_sample_rate") or audio.get("sample_rate") or 22_050)
        self.speed = float(speed)
        pace = f" at {self.speed:g}x" if abs(self.speed - 1.0) > 1e-6 else ""
        self.model = f"coqui-tts {package_version('coqui-tts')} {model_dir} #{fingerprint(checkpoint)}{pace}"

    @property
    def sets_pace(self) -> bool:
        """XTTS takes a speed (it resamples its latents before the vocoder); other models do not here."""
        return self.xtts

    def faster(self, factor: float) -> CoquiVoice:
        """The same XTTS voice `factor` times as fast."""
        return CoquiVoice(self.model_dir, self.reference_wav, round(self.speed * factor, 3))

    def speaks(self, lang: str) -> bool:
        if self.xtts:
            return xtts_language(lang, self.languages) is not None
        return len(self.languages) <= 1 or model_language(lang, self.languages) is not None

    def synthesize(self, text: str, lang: str, out_wav: Path) -> Path:
        """Write `text` in `lang` as a mono 16-bit WAV at `self.sample_rate`."""
        if not self.speaks(lang):
            raise StageError(f"Coqui model {self.model_dir} does not speak '{lang}' "
                             f"(it speaks {', '.join(self.languages)})")
        return write_line(out_wav, self.sample_rate, text, lambda line: self._speak(line, lang),
                          f"Coqui model {self.model_dir}")

    def _speak(self, text: str, lang: str) -> np.ndarray:
        """Samples in [-1, 1] at `self.sample_rate`, shape (n,)."""
        loaded = load(self.model_dir)
        synth = loaded.synthesizer
        try:
            with loaded.lock:
                if self.xtts:
                    return self._speak_xtts(loaded, text, lang)
                model = synth.tts_model
                speaker = None
                manager = getattr(model, "speaker_manager", None)
                if manager is not None and manager.num_speakers > 1:
                    speaker = manager.speaker_names[0]  # a multi-speaker model: its first voice
                language = model_language(lang, model.language_manager.language_names)
                wav = np.asarray(synth.tts(text, speaker_name=speaker, language_name=language),
                                 dtype=np.float32)
        except StageError:
            raise
        except Exception as exc:  # noqa: BLE001 - model failures become one line for the user
            raise StageError(f"Coqui synthesis failed: {type(exc).__name__}: {exc}".splitlines()[0]) from None
        # The synthesizer pads every sentence with silence; the last pad would eat the line's slot.
        from TTS.utils.synthesizer import PAD_SILENCE_SAMPLES

        if wav.size > PAD_SILENCE_SAMPLES and not wav[-PAD_SILENCE_SAMPLES:].any():
            wav = wav[:-PAD_SILENCE_SAMPLES]
        return wav

    def _speak_xtts(self, loaded: _Loaded, text: str, lang: str) -> np.ndarray:
        model = loaded.synthesizer.tts_model
        config = model.config
        if self.reference_wav:
            # Conditioning on the reference takes longer than a short line: do it once per clip.
            st = self.reference_wav.stat()
            key = (str(self.reference_wav), st.st_size, st.st_mtime_ns)
            if key not in loaded.voices:
                loaded.voices[key] = model.get_conditioning_latents(
                    audio_path=[str(self.reference_wav)], max_ref_length=config.max_ref_len,
                    gpt_cond_len=config.gpt_cond_len, gpt_cond_chunk_len=config.gpt_cond_chunk_len,
                    sound_norm_refs=config.sound_norm_refs)
            gpt_latent, speaker_embedding = loaded.voices[key]
        else:  # XTTS-v2's bundled studio voices
            gpt_latent, speaker_embedding = next(iter(model.speaker_manager.speakers.values())).values()
        out = model.inference(
            text, xtts_language(lang, self.languages), gpt_latent, speaker_embedding,
            temperature=config.temperature, length_penalty=config.length_penalty,
            repetition_penalty=config.repetition_penalty, top_k=config.top_k, top_p=config.top_p,
            enable_text_splitting=True, speed=self.speed)
        return np.asarray(out["wav"], dtype=np.float32).reshape(-1)
