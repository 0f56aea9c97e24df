"""A dubbing job: its inputs, discovered sidecars and options, validated before any work.

Everything a user can get wrong is checked here, so that `dub` exits with status 2 and
one line before a single stage runs.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

from polydub import languages, media
from polydub.asr.locate import DEFAULT_MODEL as DEFAULT_ASR_MODEL
from polydub.errors import InputError
from polydub.segments import read_subtitles

SUBTITLE_SUFFIXES = (".srt", ".vtt")
LIPSYNC_MODES = ("auto", "on", "off")
DEFAULT_MAX_SPEED = 1.3
DEFAULT_LOUDNESS = -23.0  # LUFS, EBU R128


@dataclass
class JobPlan:
    """A validated job. Small and JSON-serializable: it is a flow parameter."""

    input: str
    name: str
    out_dir: str
    langs: list[str]
    source_lang: str | None = None
    transcript: str | None = None  # an approved transcript (sidecar or --transcript)
    translations: dict[str, str] = field(default_factory=dict)  # lang -> approved SRT/VTT
    voice: str = "auto"
    lipsync: str = "auto"
    translator: str = "google"
    asr_model: str = DEFAULT_ASR_MODEL
    glossary: str | None = None
    max_speed: float = DEFAULT_MAX_SPEED
    loudness: float = DEFAULT_LOUDNESS
    consent: str | None = None
    has_video: bool = True

    def to_dict(self) -> dict:
        return asdict(self)


def _sidecar(folder: Path, stem: str, tag: str | None) -> Path | None:
    for suffix in SUBTITLE_SUFFIXES:
        candidate = folder / (f"{stem}.{tag}{suffix}" if tag else f"{stem}{suffix}")
        if candidate.is_file():
            return candidate
    return None


def _tagged_sidecars(folder: Path, stem: str) -> dict[str, Path]:
    """`NAME.<lang>.srt` files beside the input, by normalized language code."""
    found = {}
    for path in sorted(folder.glob(f"{stem}.*")):
        parts = path.name[len(stem) + 1:].rsplit(".", 1)
        if len(parts) == 2 and "." + parts[1].lower() in SUBTITLE_SUFFIXES:
            try:
                found.setdefault(languages.normalize(parts[0]), path)
            except InputError:
                continue  # NAME.forced.srt and the like: not a language tag
    return found


def _from_container_tag(tag: str) -> str | None:
    """ISO 639-2 ('eng', 'ger') or 639-1 tag from a container -> our code, or None ('und')."""
    tag = tag.strip().lower()
    for code, (t, b, _) in languages.LANGUAGES.items():
        if tag in (code, t, b):
            return code
    return None


def plan_job(input: str | Path, langs: list[str] | str, out: str | Path | None = None,
             source_lang: str | None = None, transcript: str | Path | None = None,
             translations: str | Path | None = None, voice: str = "auto", lipsync: str = "auto",
             translator: str = "google", asr_model: str = DEFAULT_ASR_MODEL, glossary: str | Path | None = None,
             max_speed: float = DEFAULT_MAX_SPEED, loudness: float = DEFAULT_LOUDNESS,
             consent: str | None = None, check_decode: bool = True) -> JobPlan:
    """Validate one input and its options; raise `InputError` naming the first problem."""
    path = Path(input).expanduser()
    langs = languages.parse_langs(langs) if isinstance(langs, str) else [languages.normalize(c) for c in langs]
    if not langs:
        raise InputError("--langs needs at least one language code, e.g. --langs es,fr")
    source = languages.normalize(source_lang) if source_lang else None
    if lipsync not in LIPSYNC_MODES:
        raise InputError(f"--lipsync must be one of {', '.join(LIPSYNC_MODES)}, not {lipsync!r}")
    if not 1.0 <= max_speed <= 2.0:
        raise InputError(f"--max-speed must be between 1.0 and 2.0, not {max_speed}")
    if not -40.0 <= loudness <= -5.0:
        raise InputError(f"--loudness must be between -40 and -5 LUFS, not {loudness}")

    info = media.probe(path)  # missing / not media / zero-length / no audio
    if check_decode:
        media.check_decodes(path, info)  # truncated / corrupt
    stem, folder = path.stem, path.parent
    if not source and info.audio_language:
        source = _from_container_tag(info.audio_language)

    # Transcript: explicit, else NAME.<source>.srt, else NAME.srt, else the one tagged sidecar
    # whose language is not a target (which also tells us the source language), else the one
    # in the language heard in the first 30 s.
    tagged = _tagged_sidecars(folder, stem)
    found = None
    if transcript:
        found = Path(transcript).expanduser()
        if not found.is_file():
            raise InputError(f"--transcript {transcript}: no such file")
    elif source and source in tagged:
        found = tagged[source]
    elif _sidecar(folder, stem, None):
        found = _sidecar(folder, stem, None)
    else:
        others = [code for code in tagged if code not in langs]
        if len(others) == 1:
            found, source = tagged[others[0]], source or others[0]
        elif len(others) > 1:
            # listen to the first 30 s: the sidecar in the spoken language is the transcript
            from polydub.asr.language import settle_transcript

            heard, why = settle_transcript(path, {c: tagged[c] for c in others}, asr_model)
            if not heard:
                names = ", ".join(tagged[c].name for c in others)
                raise InputError(f"several subtitle sidecars could be the transcript ({names}) and "
                                 f"listening did not settle it ({why}); say which language is spoken "
                                 f"with --source-lang")
            found, source = tagged[heard], heard
    if found:
        if not read_subtitles(found):
            raise InputError(f"{found}: transcript has no subtitle lines")
    if source and source in langs:
        langs = [code for code in langs if code != source]
        if not langs:
            raise InputError(f"nothing to do: the only target language is the source language {source}")

    approved: dict[str, str] = {}
    folders = [Path(translations).expanduser()] if translations else []
    if translations and not folders[0].is_dir():
        raise InputError(f"--translations {translations}: not a folder")
    for code in langs:
        candidates = []  # --translations first: what the user names wins over what we find
        for f in folders:
            candidates += [_sidecar(f, stem, code), _sidecar(f, code, None)]
        candidates.append(tagged.get(code))
        hit = next((c for c in candidates if c), None)
        if hit:
            read_subtitles(hit)  # fail now, not mid-job, on a malformed file
            approved[code] = str(hit)

    if glossary and not Path(glossary).expanduser().exists():
        raise InputError(f"--glossary {glossary}: no such file or folder")

    return JobPlan(
        input=str(path.resolve()), name=stem,
        out_dir=str(Path(out).expanduser().resolve() if out else (Path.cwd() / "dubbed" / stem)),
        langs=langs, source_lang=source, transcript=str(found) if found else None,
        translations=approved, voice=voice, lipsync=lipsync, translator=translator,
        asr_model=asr_model, glossary=str(glossary) if glossary else None,
        max_speed=max_speed, loudness=loudness, consent=consent, has_video=info.has_video,
    )
