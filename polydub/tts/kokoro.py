"""Kokoro-82M: natural, fast, non-cloning voices (Apache-2.0, code and weights).

`dub models pull kokoro` writes the model as its Hugging Face repository lays it out:

    MODELS_DIR/kokoro/config.json           dims and the phoneme vocabulary
    MODELS_DIR/kokoro/kokoro-v1_0.pth       the weights ({part: state_dict})
    MODELS_DIR/kokoro/voices/NAME.pt        a voice: style vectors by text length, (510, 1, 256)

Text becomes phonemes with espeak-ng (misaki's mapping onto Kokoro's symbols); English uses
misaki's own lexicon when the spaCy model `en_core_web_sm` is installed. Voice names say their
language and gender: `ef_dora` is a Spanish female voice, `em_alex` a Spanish male one.
"""

from __future__ import annotations

import importlib.util
import re
import threading
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from polydub import languages
from polydub.errors import InputError, StageError
from polydub.loading import load_once
from polydub.tts.wav import fingerprint, package_version, write_line

KOKORO_DIR = "kokoro"  # under the models directory
CONFIG = "config.json"
WEIGHTS = "kokoro-v1_0.pth"
VOICES = "voices"
REPO = "hexgrad/Kokoro-82M"
SAMPLE_RATE = 24_000
MAX_PHONEMES = 510  # the model's context (512) less its two boundary tokens
VOICE_NAME = re.compile(r"^[a-z][fm]_[a-z0-9]+$")


@dataclass(frozen=True)
class KokoroLanguage:
    espeak: str  # the espeak-ng language its phonemes come from
    prefix: str  # the first letter of its voices' names
    voices: tuple[str, ...]  # female and male in turn: the order speakers get them


# Our language code (normalized) -> how Kokoro speaks it. Kokoro's Portuguese is Brazilian
# only, so plain `pt` is not offered; Japanese and Chinese need misaki extras not installed.
LANGUAGES = {
    "en": KokoroLanguage("en-us", "a", ("af_heart", "am_michael", "af_bella", "am_fenrir", "af_nicole", "am_puck")),
    "en-us": KokoroLanguage("en-us", "a", ("af_heart", "am_michael", "af_bella", "am_fenrir", "af_nicole", "am_puck")),
    "en-gb": KokoroLanguage("en-gb", "b", ("bf_emma", "bm_george", "bf_isabella", "bm_fable")),
    "es": KokoroLanguage("es", "e", ("ef_dora", "em_alex", "em_santa")),
    "es-419": KokoroLanguage("es", "e", ("ef_dora", "em_alex", "em_santa")),
    "fr": KokoroLanguage("fr-fr", "f", ("ff_siwis",)),
    "hi": KokoroLanguage("hi", "h", ("hf_alpha", "hm_omega", "hf_beta", "hm_psi")),
    "it": KokoroLanguage("it", "i", ("if_sara", "im_nicola")),
    "pt-br": KokoroLanguage("pt-br", "p", ("pf_dora", "pm_alex", "pm_santa")),
}
ALL_VOICES = tuple(dict.fromkeys(v for lang in LANGUAGES.values() for v in lang.voices))


def language(lang: str) -> KokoroLanguage | None:
    """How Kokoro speaks `lang`, or None where it does not."""
    return LANGUAGES.get(languages.normalize(lang))


def spoken_languages() -> str:
    return ", ".join(LANGUAGES)


def weights_in(model_dir: Path) -> str | None:
    """Why `model_dir` is not a usable Kokoro model, or None when it is."""
    for name in (CONFIG, WEIGHTS):
        if not (model_dir / name).is_file():
            return f"no Kokoro weights in {model_dir} (dub models pull kokoro)"
    return None


def voice_for(lang: str, index: int = 0) -> str:
    """The `index`-th voice of `lang` (speakers in the order they first speak), in turn."""
    voices = LANGUAGES[languages.normalize(lang)].voices
    return voices[index % len(voices)]


def check_voice_name(name: str) -> None:
    if not VOICE_NAME.match(name):
        raise InputError(f"kokoro:{name}: a Kokoro voice is named like ef_dora (language letter, f or m, "
                         f"name); e.g. {', '.join(ALL_VOICES[:4])}")


@dataclass
class _Loaded:
    """The model and its phonemizers, shared by every voice and thread of the process."""

    model: object  # kokoro.KModel
    lock: threading.Lock = field(default_factory=threading.Lock)  # one inference at a time
    g2p: dict = field(default_factory=dict)  # espeak language -> phonemizer
    packs: dict = field(default_factory=dict)  # voice file -> (510, 1, 256) tensor


def load(model_dir: Path) -> _Loaded:
    """Load the model once per process (on CUDA when there is one)."""
    import torch

    device = "cuda" if torch.cuda.is_available() else "cpu"

    def build() -> _Loaded:
        try:
            from kokoro import KModel
        except ImportError as exc:
            raise InputError(f"Kokoro is not installed ({exc}); pip install kokoro") from None
        try:
            # Both files given: KModel never reaches for the network. Its layers warn of
            # deprecations (weight_norm, LSTM dropout) that are not the user's to act on.
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", (FutureWarning, UserWarning))
                model = KModel(repo_id=REPO, config=str(model_dir / CONFIG), model=str(model_dir / WEIGHTS))
            # mapped, not read again: only the keys and shapes are compared
            _check_strict(model, torch.load(model_dir / WEIGHTS, map_location="cpu", weights_only=True, mmap=True))
        except StageError as exc:
            raise StageError(f"could not load Kokoro model {model_dir}: {exc}") from None
        except Exception as exc:  # noqa: BLE001 - any load failure is one line for the user
            raise StageError(f"could not load Kokoro model {model_dir}: {type(exc).__name__}: {exc}"
                             .splitlines()[0]) from None
        return _Loaded(model.to(device).eval())

    return load_once(("kokoro", str(Path(model_dir).resolve()), device), build)


def _check_strict(model, state: dict) -> None:
    """KModel falls back to a non-strict load without a word: a checkpoint that does not
    match its config would speak noise. Every part's keys and shapes must match."""
    for part, weights in state.items():
        own = getattr(model, part).state_dict()
        weights = {k.removeprefix("module."): v for k, v in weights.items()}
        if set(own) != set(weights):
            odd = sorted(set(own) ^ set(weights))
            raise StageError(f"{part}: {len(odd)} weights do not match its config (e.g. {odd[0]})")
        for key, value in weights.items():
            if tuple(value.shape) != tuple(own[key].shape):
                raise StageError(f"{part}.{key}: shape {tuple(value.shape)}, config says {tuple(own[key].shape)}")


def describe(model_dir: Path) -> str:
    """Load the model strictly and every voice it has; what `dub models verify` prints."""
    import torch

    loaded = load(model_dir)
    packs = sorted((model_dir / VOICES).glob("*.pt"))
    for pack in packs:
        shape = tuple(torch.load(pack, map_location="cpu", weights_only=True).shape)
        if len(shape) != 3 or shape[1:] != (1, 256):
            raise StageError(f"Kokoro voice {pack.name}: shape {shape}, not (N, 1, 256)")
    params = sum(p.numel() for p in loaded.model.parameters())
    return f"Kokoro {params / 1e6:.1f} M params, all weights match; {len(packs)} voices"


def _phonemizer(loaded: _Loaded, spoken: KokoroLanguage):
    """Text -> Kokoro phonemes for one language (built once; espeak-ng is not thread-safe, so
    it is called under the model's lock)."""
    if spoken.espeak not in loaded.g2p:
        from misaki import espeak

        if spoken.prefix in "ab" and importlib.util.find_spec("en_core_web_sm") is not None:
            from misaki import en  # misaki's English lexicon; it needs the spaCy model installed

            british = spoken.prefix == "b"
            loaded.g2p[spoken.espeak] = en.G2P(trf=False, british=british,
                                               fallback=espeak.EspeakFallback(british=british))
        else:
            loaded.g2p[spoken.espeak] = espeak.EspeakG2P(language=spoken.espeak)
    return loaded.g2p[spoken.espeak]


def _chunks(phonemes: str, limit: int = MAX_PHONEMES) -> list[str]:
    """Split a long line's phonemes at spaces into pieces the model's context holds."""
    chunks, current = [], ""
    for word in phonemes.split(" "):
        while len(word) > limit:  # one 'word' longer than the context: cut it
            chunks.append(word[:limit])
            word = word[limit:]
        if current and len(current) + 1 + len(word) > limit:
            chunks.append(current)
            current = word
        else:
            current = f"{current} {word}" if current else word
    return [c for c in chunks + [current] if c.strip()]


class KokoroVoice:
    """One Kokoro voice speaking one language; `speed` > 1 speaks faster (the model's own
    duration scale, not a time-stretch)."""

    backend = "kokoro"
    sample_rate = SAMPLE_RATE
    sets_pace = True  # its duration scale

    def __init__(self, model_dir: Path, lang: str, voice: str | None = None, speed: float = 1.0):
        self.model_dir = Path(model_dir)
        missing = weights_in(self.model_dir)
        if missing:
            raise InputError(missing)
        spoken = language(lang)
        if spoken is None:
            raise InputError(f"Kokoro does not speak '{lang}' (it speaks {spoken_languages()})")
        self.lang, self.spoken = languages.normalize(lang), spoken
        self.voice = voice or spoken.voices[0]
        check_voice_name(self.voice)
        if self.voice[0] != spoken.prefix:
            raise InputError(f"Kokoro voice {self.voice} is not a '{self.lang}' voice "
                             f"(its voices: {', '.join(spoken.voices)}; set one per language in --voices)")
        self.pack = self.model_dir / VOICES / f"{self.voice}.pt"
        if not self.pack.is_file():
            raise InputError(f"no Kokoro voice {self.voice} in {self.model_dir / VOICES} (dub models pull kokoro)")
        self.speed = float(speed)
        pace = f" at {self.speed:g}x" if abs(self.speed - 1.0) > 1e-6 else ""
        self.model = (f"kokoro {package_version('kokoro')} {self.model_dir} #{fingerprint(self.model_dir / WEIGHTS)} "
                      f"voice {self.voice}#{fingerprint(self.pack)}{pace}")

    def faster(self, factor: float) -> KokoroVoice:
        """The same voice `factor` times as fast."""
        return KokoroVoice(self.model_dir, self.lang, self.voice, round(self.speed * factor, 3))

    def synthesize(self, text: str, lang: str, out_wav: Path) -> Path:
        """Write `text` as a mono 16-bit WAV at 24 kHz. The voice was chosen for `lang` already."""
        return write_line(out_wav, self.sample_rate, text, self._speak, "Kokoro")

    def _speak(self, text: str) -> np.ndarray:
        """Samples in [-1, 1] at 24 kHz, shape (n,)."""
        import torch

        loaded = load(self.model_dir)
        try:
            with loaded.lock, torch.inference_mode():
                phonemes, _ = _phonemizer(loaded, self.spoken)(text)
                if str(self.pack) not in loaded.packs:
                    loaded.packs[str(self.pack)] = torch.load(self.pack, map_location="cpu", weights_only=True)
                pack = loaded.packs[str(self.pack)]
                pieces = []
                for chunk in _chunks(phonemes):
                    style = pack[min(len(chunk), len(pack)) - 1].to(loaded.model.device)
                    pieces.append(loaded.model(chunk, style, speed=self.speed).float().cpu().numpy().reshape(-1))
        except (InputError, StageError):
            raise
        except Exception as exc:  # noqa: BLE001 - model failures become one line for the user
            raise StageError(f"Kokoro synthesis failed: {type(exc).__name__}: {exc}".splitlines()[0]) from None
        return np.concatenate(pieces) if pieces else np.zeros(0, dtype=np.float32)
