"""Casting: the voice each speaker gets in each language.

`--voices FILE` maps speakers to voice specs (the `--voice` forms), for every language or
per language, in JSON or YAML (YAML reads JSON too):

    {"Ana": {"es": "espeak:es+f3", "*": "coqui:xtts-v2"}, "Ben": "espeak:en+m3"}

A speaker the file does not name (or names for other languages only) gets the job's
`--voice`: a cloning voice clones them from their own lines; espeak-ng gives each named
speaker a variant of their own, male and female in turn, in the order they first speak,
unless the voice already names its variant (`espeak:es+f3`: every line in that voice).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from polydub import languages, limits
from polydub.errors import InputError

ANY = "*"  # a map entry's key for every language it does not name
VARIANTS = ("m3", "f3", "m7", "f4", "m2", "f2", "m5", "f5")  # espeak-ng's, male and female in turn
MAP_MAX_BYTES = 1 << 20


@dataclass(frozen=True)
class VoiceMap:
    """Speaker -> {language or '*': voice spec}, as `--voices FILE` gives it."""

    path: str
    voices: dict[str, dict[str, str]] = field(default_factory=dict)

    def spec_for(self, speaker: str | None, lang: str) -> str | None:
        specs = self.voices.get(speaker or "", {})
        return specs.get(lang) or specs.get(ANY)

    @property
    def specs(self) -> set[str]:
        return {spec for by_lang in self.voices.values() for spec in by_lang.values()}


def load_voice_map(path: str | Path) -> VoiceMap:
    """Read and check a `--voices` file; `InputError` naming the file and what is wrong."""
    import yaml

    from polydub.tts import parse_voice_spec

    path = Path(path).expanduser()
    where = f"--voices {path}"
    if not path.exists():
        raise InputError(f"{where}: no such file")
    try:
        raw = limits.read_bounded(path, MAP_MAX_BYTES, "voice map")  # a regular file, bounded
        data = limits.load_yaml(raw.decode("utf-8-sig"), str(path))  # an alias bomb is refused unbuilt
    except InputError as exc:
        raise InputError(f"--voices {exc}") from None
    except UnicodeDecodeError as exc:
        raise InputError(f"{where}: cannot read it ({exc})") from None
    except yaml.YAMLError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise InputError(f"{where}: not JSON or YAML ({first})") from None
    if not isinstance(data, dict) or not data:
        raise InputError(f"{where}: give a mapping of speaker names to voices, e.g. "
                         '{"Ana": "espeak:es+f3", "Ben": {"es": "espeak:es+m3", "*": "auto"}}')
    voices: dict[str, dict[str, str]] = {}
    for speaker, value in data.items():
        name = str(speaker).strip()
        if not name:
            raise InputError(f"{where}: an empty speaker name")
        by_lang = value if isinstance(value, dict) else {ANY: value}
        checked = {}
        for lang, spec in by_lang.items():
            if not isinstance(spec, str) or not spec.strip():
                raise InputError(f"{where}: speaker {name!r}: a voice is a spec such as espeak:es+f3, "
                                 f"not {spec!r}")
            code = ANY if str(lang).strip() == ANY else _language(str(lang), where, name)
            try:
                parse_voice_spec(spec)
            except InputError as exc:
                raise InputError(f"{where}: speaker {name!r}: {exc}") from None
            checked[code] = spec.strip()
        voices[name] = checked
    return VoiceMap(str(path), voices)


def _language(code: str, where: str, speaker: str) -> str:
    try:
        return languages.normalize(code)
    except InputError as exc:
        raise InputError(f"{where}: speaker {speaker!r}: {exc}") from None


def check_speakers(voice_map: VoiceMap, script: list[str], diarized: bool = False) -> None:
    """A speaker the map names must be in the script when the script names its speakers: a
    misspelt name would otherwise silently leave that speaker in the default voice. With a
    diarizer, an unlabeled script gets its names ("Speaker 1", ...) only during the job."""
    if not script:
        if diarized:
            return
        raise InputError(f"--voices {voice_map.path}: the script names no speakers (label its lines "
                         "<v Name> or Name:, or set DUB_DIARIZER)")
    unknown = [name for name in voice_map.voices if name not in script]
    if unknown:
        raise InputError(f"--voices {voice_map.path}: no speaker {unknown[0]!r} in the script "
                         f"(its speakers: {', '.join(script)})")


def espeak_variant(voice: str, index: int, speakers: int) -> str:
    """`voice` for the `index`-th of `speakers` named speakers: a variant each when there are
    several and the voice has none of its own."""
    if speakers < 2 or "+" in voice:
        return voice
    return f"{voice}+{VARIANTS[index % len(VARIANTS)]}"
