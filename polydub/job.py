"""A dubbing job: its inputs, discovered sidecars and options, validated before any work.

Everything a user can get wrong is checked here, so that `dub` exits with status 2 and
one line before a single stage runs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from polydub import config, languages, limits, media, sidecars
from polydub.errors import InputError
from polydub.options import DubOptions, make_options
from polydub.segments import check_cues, read_subtitles, speakers_of
from polydub.storage import objects


@dataclass
class JobPlan:
    """A validated job. Small and JSON-serializable: it is a flow parameter.

    `options` are the job's options with what planning settled: `source_lang` and
    `transcript` (found beside the input, or by listening), `voices` (checked, absolute)
    and `commercial` (the machine's setting when the job does not say)."""

    input: str
    name: str
    out_dir: str  # resolved; a deployment run's job-N folder once the job exists
    langs: list[str]
    options: DubOptions = field(default_factory=DubOptions)
    translations: dict[str, str] = field(default_factory=dict)  # lang -> approved SRT/VTT
    has_video: bool = True
    input_url: str | None = None  # the input as the user named it in an object store (`input`: its local copy)

    @property
    def source(self) -> str:
        """The input as the user knows it: its URL, else its path (the catalog and report say this)."""
        return self.input_url or self.input

    def to_dict(self) -> dict:
        """The job's parameters as the catalog records them (`dub show`): flat."""
        options = self.options.model_dump(exclude={"out", "translations"})
        return {"input": self.source, "name": self.name, "out_dir": self.out_dir, "langs": list(self.langs),
                "source_lang": options.pop("source_lang"), "transcript": options.pop("transcript"),
                "translations": dict(self.translations), **options, "has_video": self.has_video}


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
    from polydub.storage import shared_catalog, terms

    for lang, (n, longest) in terms.glossary_sizes(shared_catalog(config.database_url()), brand, langs).items():
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
    opts = _fetched_options(make_options(options, **overrides))
    out, source_lang, transcript, translations = opts.out, opts.source_lang, opts.transcript, opts.translations
    glossary = opts.glossary
    if not str(input).strip():
        raise InputError("no input file given")
    input_url = objects.check_url(str(input), "input") if objects.is_remote(input) else None
    if input_url:  # with the sidecars beside it in the bucket, found below as on disk
        from polydub.storage.inputs import fetch_input

        input = fetch_input(input_url)
    path = Path(objects.local_path(str(input))).expanduser()
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
    listed = sidecars.Folders()
    beside = sidecars.subtitles(str(folder), stem, listed)
    tagged = {code: Path(p) for code, p in beside.items() if code is not None}
    found = None
    if transcript:
        found = Path(transcript).expanduser()
        if not found.exists():  # a folder, FIFO or device: refused by name when read
            raise InputError(f"--transcript {transcript}: no such file")
    elif source and source in tagged:
        found = tagged[source]
    elif None in beside:
        found = Path(beside[None])
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

    if translations and not Path(translations).expanduser().is_dir():
        raise InputError(f"--translations {translations}: not a folder")
    approved: dict[str, str] = {}
    for code, hit in sidecars.approved_translations(stem, langs, beside, translations, listed).items():
        cues = read_subtitles(hit)  # fail now, not mid-job, on a malformed file
        if not cues:
            raise InputError(f"{Path(hit)}: approved translation has no subtitle lines")
        check_cues(Path(hit), cues, info.duration)
        approved[code] = str(Path(hit))

    if glossary and not Path(glossary).expanduser().exists():
        raise InputError(f"--glossary {glossary}: no such file or folder")
    if glossary:
        _check_glossaries(Path(glossary).expanduser(), [c for c in langs if c not in approved])
    if opts.brand:
        _check_brand_glossaries(opts.brand, [c for c in langs if c not in approved])
    voices = _voice_map(opts.voices, found, approved)

    settled = opts.model_copy(update={
        "source_lang": source, "transcript": str(found) if found else None, "voices": voices,
        # the job's own choice wins; a job that does not say gets the machine's setting
        "commercial": config.commercial() if opts.commercial is None else opts.commercial})
    return JobPlan(input=str(path.resolve()), name=stem, out_dir=str(_out_dir(out, stem, outputs_root)),
                   langs=langs, options=settled, translations=approved, has_video=info.has_video,
                   input_url=input_url)


def _fetched_options(opts: DubOptions) -> DubOptions:
    """The options with every file named by object-store URL replaced by its local copy:
    the transcript, approved translations' folder, glossary (a file or folder) and voice map."""
    from polydub.storage.inputs import localize

    if not any(objects.is_remote(v) for v in (opts.transcript, opts.translations, opts.glossary, opts.voices)):
        return opts
    return opts.model_copy(update={
        "transcript": localize(opts.transcript, "--transcript"),
        "translations": localize(opts.translations, "--translations", (".srt", ".vtt")),
        "glossary": localize(opts.glossary, "--glossary", (".tsv", ".csv", ".json")),
        "voices": localize(opts.voices, "--voices")})


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


def _out_dir(out: str | None, stem: str, outputs_root: str | Path | None) -> Path | str:
    """The job's output folder: a resolved path, or a URL in an object store."""
    if out and objects.is_remote(out) and outputs_root is None:
        return objects.check_url(out, "--out")
    if outputs_root is None:
        return Path(objects.local_path(out)).expanduser().resolve() if out else Path.cwd() / "dubbed" / stem
    if objects.is_remote(outputs_root):  # a deployment's outputs in a bucket: out is a folder in it
        if out and (objects.scheme_of(out) or out.startswith(("/", "~")) or ".." in out.split("/")):
            raise InputError(f"out {out!r}: give a folder relative to the outputs root {outputs_root}")
        return objects.join(objects.check_url(str(outputs_root), "DUB_OUTPUTS_DIR"), out or stem)
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
    from polydub.qa import QAThresholds
    from polydub.tts import parse_voice_spec, select_voice

    parse_voice_spec(plan.options.voice)
    QAThresholds.configured()  # the QA report's, from the machine's setting: malformed is refused now
    if plan.options.commercial:
        check_licences(plan)
    if not plan.options.voice.startswith("coqui"):
        for lang in plan.langs:  # every language needs a voice: espeak-ng may lack one
            select_voice(plan.options.voice, lang)
    if plan.options.voices:
        from polydub.tts.cast import load_voice_map

        voice_map = load_voice_map(plan.options.voices)
        for speaker in voice_map.voices:
            for lang in plan.langs:
                spec = voice_map.spec_for(speaker, lang)
                if spec and not spec.startswith("coqui"):
                    select_voice(spec, lang)
    if not plan.options.transcript:
        from polydub.asr.locate import locate_model

        locate_model(plan.options.asr_model)
        config.asr_vad()  # a bad DUB_ASR_VAD is bad usage, found now
    if any(lang not in plan.translations for lang in plan.langs):
        from polydub.translate import make_translator

        translator = make_translator(plan.options.translator)
        if hasattr(translator, "check_reachable"):  # an online service: a worker may have no network
            translator.check_reachable()
    if not plan.options.transcript or not speakers_of(read_subtitles(plan.options.transcript)):
        from polydub.diarize import find_diarizer

        find_diarizer()  # a diarizer that is asked for must load
    if config.lipsync_deployment() and plan.has_video and plan.options.lipsync != "off":
        config.lipsync_timeout_s()  # a malformed DUB_LIPSYNC_TIMEOUT is bad usage, found now
        if objects.storage_url() is None:  # the GPU side decides whether it can run; it needs the bucket
            raise InputError(f"DUB_LIPSYNC_DEPLOYMENT={config.lipsync_deployment()}: lip-sync on GPU workers "
                             f"needs DUB_STORAGE_URL to name a bucket both sides reach")
        return
    ok, reason = lipsync_decision(plan.options.lipsync, plan.has_video)  # also checks lip-sync settings
    if plan.options.lipsync == "on" and not ok:
        raise InputError(f"--lipsync on: lip-sync cannot run: {reason}")


def check_licences(plan: JobPlan) -> None:
    """`--commercial`: refuse a model the job names explicitly whose licence does not allow
    commercial use, with a permitted alternative. (What `auto` would pick is chosen among
    permitted models instead: XTTS-v2 and the published Demucs weights are passed over.)"""
    from polydub import licences

    refused: list[tuple[str, str, licences.Licence]] = []
    if _is_xtts_voice(plan.options.voice):
        refused.append(("voice", "XTTS-v2", licences.CPML))
    if plan.options.voices:  # a speaker's own voice is as much the job's choice as --voice
        from polydub.tts.cast import load_voice_map

        voice_map = load_voice_map(plan.options.voices)
        for speaker, by_lang in voice_map.voices.items():
            if any(_is_xtts_voice(spec) for spec in by_lang.values()):
                refused.append(("voice", f"XTTS-v2 (speaker {speaker!r} in --voices {Path(voice_map.path).name})",
                                licences.CPML))
    if any(lang not in plan.translations for lang in plan.langs) and plan.options.translator.startswith("local:"):
        licence = licences.of_translator(plan.options.translator)
        if licence and licence.commercial is False:
            refused.append(("translator", plan.options.translator, licence))
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
