"""Speech synthesis: one `Voice` per target language, chosen from a `--voice` spec.

    auto                    the best voice present for the language: Chatterbox cloning the source
                            speaker, else XTTS-v2 cloning them (not under --commercial), else Kokoro,
                            else espeak-ng
    chatterbox              Chatterbox Multilingual cloning each speaker (MIT, Perth-watermarked)
    espeak | espeak:VOICE   espeak-ng, the language's voice or a named one (`en-us`, `es+f3`)
    kokoro | kokoro:VOICE   Kokoro-82M, the language's first voice or a named one (`em_alex`)
    coqui:MODEL_NAME_OR_DIR a local Coqui model: a directory with config.json + model.pth,
                            or a Coqui model name already downloaded (never downloaded here)
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

from polydub import config, languages
from polydub.errors import InputError
from polydub.tts.coqui import (
    XTTS_ALIASES,
    XTTS_DIR,
    XTTS_NAME,
    CoquiVoice,
    checkpoint_in,
    find_model,
    known_model_names,
)
from polydub.tts.chatterbox import CHATTERBOX_DIR, ChatterboxVoice
from polydub.tts.chatterbox import LANGUAGES as CHATTERBOX_LANGUAGES
from polydub.tts.chatterbox import language as chatterbox_language
from polydub.tts.chatterbox import weights_in as chatterbox_missing
from polydub.tts.espeak import EspeakVoice, has_voice, voice_for
from polydub.tts.kokoro import KOKORO_DIR, KokoroVoice, check_voice_name
from polydub.tts.kokoro import language as kokoro_language
from polydub.tts.kokoro import weights_in as kokoro_missing
from polydub.tts.reference import cut_reference

BACKENDS = ("auto", "chatterbox", "espeak", "kokoro", "coqui")
SPEC_HELP = "use auto, chatterbox, espeak, espeak:VOICE, kokoro, kokoro:VOICE or coqui:MODEL_NAME_OR_DIR"

__all__ = ["Voice", "ChatterboxVoice", "EspeakVoice", "KokoroVoice", "CoquiVoice", "select_voice", "auto_cloner",
           "parse_voice_spec", "cut_reference"]


class Voice(Protocol):
    backend: str  # 'chatterbox', 'espeak', 'kokoro' or 'coqui'
    model: str  # identity and version, for cache keys and the report
    sample_rate: int  # Hz of the WAVs `synthesize` writes
    sets_pace: bool  # it can say a line faster itself: then it has `faster(factor) -> Voice`

    def synthesize(self, text: str, lang: str, out_wav: Path) -> Path:
        """Write `text` spoken in `lang` as a mono PCM WAV at `out_wav`."""
        ...


def _split(spec: str) -> tuple[str, str]:
    backend, _, arg = spec.strip().partition(":")
    return backend.strip().lower(), arg.strip()


def parse_voice_spec(spec: str) -> None:
    """Check a `--voice` spec before any work; `InputError` saying what is wrong."""
    backend, arg = _split(spec)
    if backend not in BACKENDS:
        raise InputError(f"unknown voice '{spec}' ({SPEC_HELP})")
    if backend in ("auto", "chatterbox") and arg:
        raise InputError(f"voice '{backend}' takes no argument ({SPEC_HELP})")
    if backend == "espeak" and arg and not has_voice(arg):
        raise InputError(f"espeak-ng has no voice '{arg}' (see `espeak-ng --voices`)")
    if backend == "kokoro" and arg:
        check_voice_name(arg)
    if backend == "coqui":
        if not arg:
            raise InputError(f"voice 'coqui:' needs a model name or directory ({SPEC_HELP})")
        path = Path(arg).expanduser()
        if path.is_dir():
            if checkpoint_in(path) is None:
                raise InputError(f"Coqui model directory {path} has no config.json and model.pth")
        elif arg not in XTTS_ALIASES and arg not in known_model_names():
            raise InputError(f"coqui:{arg}: no such model directory, and not a Coqui model name "
                             f"(e.g. {XTTS_NAME})")


def auto_cloner(lang: str, models_dir: Path | None = None, commercial: bool = False) -> Path | None:
    """The folder of the cloning model `auto` uses for `lang` once it has a clip of the speaker
    (Chatterbox, else XTTS-v2 but not under `commercial`), or None where it would not clone.
    Reads folders and configs only: what needs a reference clip, and what a recipe names."""
    models_dir = Path(models_dir) if models_dir is not None else config.models_dir()
    chatterbox_dir, xtts_dir = models_dir / CHATTERBOX_DIR, models_dir / XTTS_DIR
    if chatterbox_missing(chatterbox_dir) is None and chatterbox_language(lang) is not None:
        return chatterbox_dir
    if not commercial and checkpoint_in(xtts_dir) is not None:  # whether it speaks `lang` is its load's to say
        return xtts_dir
    return None


def select_voice(spec: str, lang: str, models_dir: Path | None = None,
                 reference_wav: Path | None = None, commercial: bool = False) -> tuple[Voice, str]:
    """The voice for `lang` and why it was chosen, e.g.
    `(EspeakVoice, 'auto: no Coqui weights in /x/models/xtts-v2; espeak-ng voice es')`.
    `commercial`: auto never picks XTTS-v2 (non-commercial licence); an explicit
    non-commercial voice is refused earlier, by `job.check_backends`."""
    parse_voice_spec(spec)
    lang = languages.normalize(lang)
    backend, arg = _split(spec)
    models_dir = Path(models_dir) if models_dir is not None else config.models_dir()
    reference = Path(reference_wav) if reference_wav is not None else None

    if backend == "espeak":
        voice = EspeakVoice(arg or voice_for(lang))
        return voice, f"requested espeak-ng voice {voice.voice}"

    if backend == "chatterbox":
        voice = ChatterboxVoice(models_dir / CHATTERBOX_DIR, reference if reference and reference.is_file() else None)
        if not voice.speaks(lang):
            raise InputError(f"Chatterbox does not speak '{lang}' here (it speaks {', '.join(CHATTERBOX_LANGUAGES)})")
        how = "; cloning the source speaker" if voice.reference_wav else ""
        return voice, f"requested Chatterbox{how}"

    if backend == "kokoro":
        voice = KokoroVoice(models_dir / KOKORO_DIR, lang, arg or None)
        return voice, f"requested Kokoro voice {voice.voice}"

    if backend == "coqui":
        model_dir = find_model(arg, models_dir)
        voice = CoquiVoice(model_dir, reference if reference and reference.is_file() else None)
        if not voice.speaks(lang):
            raise InputError(f"Coqui model {model_dir} does not speak '{lang}' "
                             f"(it speaks {', '.join(voice.languages)})")
        cloning = "; cloning the source speaker" if voice.xtts and voice.reference_wav else ""
        return voice, f"requested Coqui model {model_dir}{cloning}"

    # auto: the first voice that can do its job here, fully offline; each one passed over says why.
    whys: list[str] = []
    clip = reference if reference is not None and reference.is_file() else None
    chatterbox_dir = models_dir / CHATTERBOX_DIR
    if missing := chatterbox_missing(chatterbox_dir):
        whys.append(missing)
    elif chatterbox_language(lang) is None:
        whys.append(f"Chatterbox does not speak '{lang}'")
    else:
        how = "cloning the source speaker" if clip else "its built-in voice (no reference clip of the speaker)"
        return ChatterboxVoice(chatterbox_dir, clip), f"auto: Chatterbox found in {chatterbox_dir}; {how}"

    xtts_dir = models_dir / XTTS_DIR
    if checkpoint_in(xtts_dir) is None:
        whys.append(f"no Coqui weights in {xtts_dir}")
    elif commercial:
        whys.append("XTTS-v2 is licensed for non-commercial use only (--commercial)")
    elif clip is None:
        whys.append(f"XTTS-v2 found in {xtts_dir} but no reference clip of the source speaker")
    else:
        voice = CoquiVoice(xtts_dir, clip)
        if voice.xtts and voice.speaks(lang):
            return voice, f"auto: {'; '.join(whys + [f'XTTS-v2 found in {xtts_dir}'])}; cloning the source speaker"
        whys.append(f"XTTS-v2 in {xtts_dir} does not speak '{lang}'" if voice.xtts
                    else f"{xtts_dir} holds a Coqui model that is not XTTS")

    kokoro_dir = models_dir / KOKORO_DIR
    if kokoro_language(lang) is None:
        whys.append(f"Kokoro does not speak '{lang}'")
    elif missing := kokoro_missing(kokoro_dir):
        whys.append(missing)
    else:
        voice = KokoroVoice(kokoro_dir, lang)
        return voice, f"auto: {'; '.join(whys)}; Kokoro voice {voice.voice}"
    espeak = EspeakVoice(voice_for(lang))
    return espeak, f"auto: {'; '.join(whys)}; espeak-ng voice {espeak.voice}"
