"""espeak-ng: offline speech in 100+ languages, robotic but always available."""

from __future__ import annotations

import functools
import os
import re
import subprocess
import tempfile
from pathlib import Path

from polydub import languages
from polydub.errors import InputError, StageError
from polydub.tts.wav import write_silence

ESPEAK = "espeak-ng"
ESPEAK_TIMEOUT = 120  # seconds; one dubbed line takes well under a second
SAMPLE_RATE = 22_050  # espeak-ng's fixed output rate
DEFAULT_RATE = 175  # words per minute: espeak-ng's own pace
_OTHER_LANGUAGE = re.compile(r"\(([^\s()]+) \d+\)")  # `(en-gb 3)` in `espeak-ng --voices`


def _espeak(args: list[str], timeout: float = ESPEAK_TIMEOUT) -> str:
    try:
        proc = subprocess.run([ESPEAK, *args], capture_output=True, text=True, timeout=timeout)
    except FileNotFoundError:
        raise InputError("espeak-ng is not installed (apt-get install espeak-ng)") from None
    except subprocess.TimeoutExpired:
        raise StageError(f"espeak-ng timed out after {timeout:.0f} s") from None
    if proc.returncode != 0:
        lines = [ln for ln in (proc.stderr or proc.stdout).splitlines() if ln.strip()]
        raise StageError(f"espeak-ng failed: {lines[-1] if lines else 'exit %d' % proc.returncode}")
    return proc.stdout


@functools.cache
def version() -> str:
    """`'1.51'` from `eSpeak NG text-to-speech: 1.51  Data at: ...`."""
    words = _espeak(["--version"]).split()
    return next((w for w in words if w[:1].isdigit()), "unknown")


@functools.cache
def installed_voices() -> frozenset[str]:
    """Every name `-v` accepts: languages (`en-gb`), files (`gmw/en`, `en`), voice names and
    the other languages a voice speaks, all lower-case."""
    names: set[str] = set()
    for line in _espeak(["--voices"]).splitlines()[1:]:
        # Pty Language Age/Gender VoiceName File [(other-lang prio)...]
        cols = line.split()
        if len(cols) < 5:
            continue
        names.update({cols[1], cols[3], cols[4], cols[4].rsplit("/", 1)[-1]})
        names.update(_OTHER_LANGUAGE.findall(line))
    return frozenset(n.lower() for n in names)


@functools.cache
def installed_variants() -> frozenset[str]:
    """What `+VARIANT` accepts (`f3`, `m3`, `klatt`, ...), lower-case: espeak-ng ignores an
    unknown variant without a word, so it is checked here."""
    names: set[str] = set()
    for line in _espeak(["--voices=variant"]).splitlines()[1:]:
        cols = line.split()
        if len(cols) >= 5:
            names.update({cols[3], cols[4].rsplit("/", 1)[-1]})
    return frozenset(n.lower() for n in names)


def has_voice(voice: str) -> bool:
    # `en+f3` is voice `en` with variant `f3`
    base, _, variant = voice.partition("+")
    return base.lower() in installed_voices() and (not variant or variant.lower() in installed_variants())


def voice_for(lang: str) -> str:
    """The espeak-ng voice for a language code; `InputError` when none is installed."""
    voice = languages.espeak_voice(lang)
    if not has_voice(voice):
        raise InputError(f"espeak-ng has no voice for language '{lang}'")
    return voice




class EspeakVoice:
    """Speaks with one espeak-ng voice; `rate` in words per minute (espeak-ng's default: 175)."""

    backend = "espeak"
    sample_rate = SAMPLE_RATE
    sets_pace = True  # words per minute

    def __init__(self, voice: str, rate: int | None = None):
        if not has_voice(voice):
            raise InputError(f"espeak-ng has no voice '{voice}' (see `espeak-ng --voices`)")
        self.voice = voice
        self.rate = rate
        speed = f" at {rate} wpm" if rate else ""
        self.model = f"espeak-ng {version()} voice {voice}{speed}"

    def faster(self, factor: float) -> EspeakVoice:
        """The same voice `factor` times as fast (words per minute)."""
        return EspeakVoice(self.voice, round((self.rate or DEFAULT_RATE) * factor))

    def synthesize(self, text: str, lang: str, out_wav: Path) -> Path:
        """Write `text` as a mono 16-bit WAV at 22050 Hz. The voice was chosen for `lang` already."""
        out_wav = Path(out_wav)
        out_wav.parent.mkdir(parents=True, exist_ok=True)
        # Write beside the target and rename, so a crash never leaves a half-written line.
        fd, tmp = tempfile.mkstemp(suffix=".wav", dir=out_wav.parent)
        os.close(fd)
        txt = Path(tmp).with_suffix(".txt")
        try:
            if not text.strip():
                write_silence(Path(tmp), self.sample_rate)
            else:
                # Text goes through a file: a line such as "-- no" would otherwise read as options.
                txt.write_text(text.strip(), encoding="utf-8")
                args = ["-v", self.voice, "-b", "1", "-w", tmp, "-f", str(txt)]
                if self.rate:
                    args[:0] = ["-s", str(int(self.rate))]
                _espeak(args)
                if Path(tmp).stat().st_size <= 44:  # a bare header: espeak-ng said nothing
                    raise StageError(f"espeak-ng produced no audio for {text[:40]!r}")
            os.replace(tmp, out_wav)
        finally:
            txt.unlink(missing_ok=True)
            Path(tmp).unlink(missing_ok=True)
        return out_wav
