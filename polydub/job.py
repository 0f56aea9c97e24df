"""A dubbing job: its inputs, discovered sidecars and options, validated before any work.

Everything a user can get wrong is checked here, so that `dub` exits with status 2 and
one line before a single stage runs.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

from polydub import config, languages, limits, media
from polydub.errors import InputError
from polydub.options import DEFAULT_ASR_MODEL, DEFAULT_LOUDNESS, DEFAULT_MAX_SPEED, DubOptions, make_options
from polydub.segments import check_cues, read_subtitles, speakers_of

SUBTITLE_SUFFIXES = (".srt", ".vtt")


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
    voices: str | None = None  # --voices FILE: speaker -> voice, checked
    lipsync: str = "auto"
    translator: str = "google"
    asr_model: str = DEFAULT_ASR_MODEL
    glossary: str | None = None
    brand: str | None = None  # the catalog's glossary and translation memory of this brand apply
    max_speed: float = DEFAULT_MAX_SPEED
    loudness: float | None = DEFAULT_LOUDNESS  # None: match the source
    consent: str | None = None
    commercial: bool = False
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


def _check_glossaries(glossary: Path, langs: list[str]) -> None:
    """Read every glossary the job will use, so a malformed one fails before work."""
    from polydub.translate.glossary import glossary_for, load_glossary

    for path in {glossary_for(str(glossary), lang) for lang in langs} - {None}:
        limits.check_glossary(path, load_glossary(path))


def _check_brand_glossaries(brand: str, langs: list[str]) -> None:
    """The brand's glossaries in the catalog within the glossary limits (one counting query;
    `dub glossary import` already refuses more, this catches rows written otherwise)."""
    if not langs:
        return
    from polydub.storage import terms
    from polydub.tasks.common import catalog

    for lang, (n, longest) in terms.glossary_sizes(catalog(config.database_url()), brand, langs).items():
        where = f"catalog glossary {lang} of brand {brand}"
        if n > limits.MAX_GLOSSARY_TERMS:
            raise InputError(f"{where}: {n} terms; at most {limits.MAX_GLOSSARY_TERMS} are accepted")
        if longest > limits.MAX_TERM_CHARS:
            raise InputError(f"{where}: a term is longer than {limits.MAX_TERM_CHARS} characters")


def plan_job(input: str | Path, langs: list[str] | str, options: DubOptions | dict | None = None,
             check_decode: bool = True, outputs_root: str | Path | None = None, **overrides) -> JobPlan:
    """Validate one input and its options; raise `InputError` naming the first problem.

    `options` (or keyword overrides such as `voice="espeak"`) go through `DubOptions`, so
    the command line, a deployment's form and a manifest are checked by the same rules.
    With `outputs_root` (deployment runs) `out` is a folder under it and cannot leave it."""
    opts = make_options(options, **overrides)
    out, source_lang, transcript, translations = opts.out, opts.source_lang, opts.transcript, opts.translations
    glossary = opts.glossary
    path = Path(input).expanduser()
    if not str(input).strip():
        raise InputError("no input file given")
    langs = languages.parse_langs(langs) if isinstance(langs, str) else [languages.normalize(c) for c in langs]
    if not langs:
        raise InputError("--langs needs at least one language code, e.g. --langs es,fr")
    source = languages.normalize(source_lang) if source_lang else None

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

            heard, why = settle_transcript(path, {c: tagged[c] for c in others}, opts.asr_model)
            if not heard:
                names = ", ".join(tagged[c].name for c in others)
                raise InputError(f"several subtitle sidecars could be the transcript ({names}) and "
                                 f"listening did not settle it ({why}); say which language is spoken "
                                 f"with --source-lang")
            found, source = tagged[heard], heard
    if found:
        cues = read_subtitles(found)
        if not cues:
            raise InputError(f"{found}: transcript has no subtitle lines")
        check_cues(found, cues, info.duration)
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
            cues = read_subtitles(hit)  # fail now, not mid-job, on a malformed file
            if not cues:
                raise InputError(f"{hit}: approved translation has no subtitle lines")
            check_cues(hit, cues, info.duration)
            approved[code] = str(hit)

    if glossary and not Path(glossary).expanduser().exists():
        raise InputError(f"--glossary {glossary}: no such file or folder")
    if glossary:
        _check_glossaries(Path(glossary).expanduser(), [c for c in langs if c not in approved])
    if opts.brand:
        _check_brand_glossaries(opts.brand, [c for c in langs if c not in approved])
    voices = _voice_map(opts.voices, found, approved)

    return JobPlan(
        input=str(path.resolve()), name=stem,
        out_dir=str(_out_dir(out, stem, outputs_root)),
        langs=langs, source_lang=source, transcript=str(found) if found else None,
        translations=approved, voice=opts.voice, voices=voices, lipsync=opts.lipsync, translator=opts.translator,
        asr_model=opts.asr_model, glossary=str(glossary) if glossary else None, brand=opts.brand,
        max_speed=opts.max_speed, loudness=opts.loudness, consent=opts.consent, has_video=info.has_video,
        # the job's own choice wins; a job that does not say gets the machine's setting
        commercial=config.commercial() if opts.commercial is None else opts.commercial,
    )


def _voice_map(path: str | None, transcript: Path | None, approved: dict[str, str]) -> str | None:
    """Check `--voices FILE` against the script: every spec valid, every speaker in it."""
    if not path:
        return None
    from polydub.diarize import find_diarizer
    from polydub.tts.cast import check_speakers, load_voice_map

    voice_map = load_voice_map(path)
    scripts = ([transcript] if transcript else []) + [Path(p) for p in approved.values()]
    names = list(dict.fromkeys(name for script in scripts for name in speakers_of(read_subtitles(script))))
    check_speakers(voice_map, names, diarized=not names and find_diarizer() is not None)
    return str(Path(voice_map.path).resolve())


def _out_dir(out: str | None, stem: str, outputs_root: str | Path | None) -> Path:
    if outputs_root is None:
        return Path(out).expanduser().resolve() if out else Path.cwd() / "dubbed" / stem
    root = Path(outputs_root).expanduser().resolve()
    if out and (Path(out).is_absolute() or out.startswith("~")):
        raise InputError(f"out {out!r}: give a folder relative to the outputs root {root}")
    folder = (root / (out or stem)).resolve()
    if folder != root and root not in folder.parents:
        raise InputError(f"out {out!r} leaves the outputs root {root}")
    return folder


def check_backends(plan: JobPlan) -> None:
    """The backends the plan needs must be usable here (voice, translator, speech
    recognition, lip-sync): checked before any work, on every entry path."""
    from polydub.lipsync import lipsync_decision
    from polydub.tts import parse_voice_spec, select_voice

    parse_voice_spec(plan.voice)
    if plan.commercial:
        check_licences(plan)
    if not plan.voice.startswith("coqui"):
        for lang in plan.langs:  # every language needs a voice: espeak-ng may lack one
            select_voice(plan.voice, lang)
    if plan.voices:
        from polydub.tts.cast import load_voice_map

        voice_map = load_voice_map(plan.voices)
        for speaker in voice_map.voices:
            for lang in plan.langs:
                spec = voice_map.spec_for(speaker, lang)
                if spec and not spec.startswith("coqui"):
                    select_voice(spec, lang)
    if not plan.transcript:
        from polydub.asr.locate import locate_model

        locate_model(plan.asr_model)
        config.asr_vad()  # a bad DUB_ASR_VAD is bad usage, found now
    if any(lang not in plan.translations for lang in plan.langs):
        from polydub.translate import make_translator

        make_translator(plan.translator)
    if not plan.transcript or not speakers_of(read_subtitles(plan.transcript)):
        from polydub.diarize import find_diarizer

        find_diarizer()  # a diarizer that is asked for must load
    ok, reason = lipsync_decision(plan.lipsync, plan.has_video)  # also checks lip-sync settings
    if plan.lipsync == "on" and not ok:
        raise InputError(f"--lipsync on: lip-sync cannot run: {reason}")


def check_licences(plan: JobPlan) -> None:
    """`--commercial`: refuse a model the job names explicitly whose licence does not allow
    commercial use, with a permitted alternative. (What `auto` would pick is chosen among
    permitted models instead: XTTS-v2 and the published Demucs weights are passed over.)"""
    from polydub import licences

    refused: list[tuple[str, str, licences.Licence]] = []
    if _is_xtts_voice(plan.voice):
        refused.append(("voice", "XTTS-v2", licences.CPML))
    if any(lang not in plan.translations for lang in plan.langs) and plan.translator.startswith("local:"):
        licence = licences.of_translator(plan.translator)
        if licence and licence.commercial is False:
            refused.append(("translator", plan.translator, licence))
    if refused:
        what, name, licence = refused[0]
        raise InputError(f"--commercial: {what} {name} ({licence.name}, {licence.note}); "
                         f"{licences.ALTERNATIVES[what]}")


def _is_xtts_voice(spec: str) -> bool:
    """Whether a `--voice coqui:...` spec names an XTTS model."""
    from polydub.tts.coqui import XTTS_ALIASES, find_model, is_xtts

    backend, _, arg = spec.strip().partition(":")
    if backend.strip().lower() != "coqui":
        return False
    arg = arg.strip()
    if arg in XTTS_ALIASES:
        return True
    try:
        return is_xtts(find_model(arg, config.models_dir()))
    except (InputError, OSError, ValueError):
        return "xtts" in arg.lower()
