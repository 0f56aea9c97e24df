"""A dubbing job's options, defined once.

`DubOptions` is the one typed model behind the `dub` command's flags, the `dub_video`
flow's `options` parameter (which Prefect renders as the run form, with these defaults,
descriptions, choices and bounds) and the `parameters` in `prefect.yaml`. The checks that
need more than a type (does the voice exist here, can lip-sync run) live in `job.py` and
run on every entry path before the first stage.

No secret and no catalog URL is an option: the catalog is the runner's configuration
(`DUB_DATABASE_URL`), so nothing sensitive ever lands in Prefect's parameters.
"""

from __future__ import annotations

import re
from typing import Annotated, Literal, Union, get_args, get_origin

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from polydub import limits
from polydub.errors import InputError
from polydub.translate.providers import PROVIDERS

DEFAULT_ASR_MODEL = "base"  # a Whisper size that runs on a CPU; polydub.asr's default too
DEFAULT_MAX_SPEED = 1.3
MAX_SPEED_RANGE = (1.0, 2.0)
DEFAULT_LOUDNESS = None  # match the source's integrated loudness and true peak
LOUDNESS_RANGE = (-40.0, -5.0)
LIPSYNC_MODES = ("auto", "on", "off")
REVIEW_MODES = ("none", "script", "final", "both", "auto")
TRANSLATORS = tuple(PROVIDERS)
TEXT_MAX = 4096  # any free-text option; paths included
BRAND_MAX = 256
# No text option may hold a NUL byte: no file name can, and the OS refuses it in a path
# (a ValueError deep in a stage otherwise). In the form's schema too, so Prefect refuses it.
NO_NUL = r"^[^\x00]*$"

VoiceChoice = Literal["auto", "chatterbox", "espeak", "kokoro"]
VoiceSpec = Annotated[str, Field(pattern=r"^(espeak:[\w.+-]+|kokoro:[a-z][fm]_[a-z0-9]+|coqui:[^\x00]+)$",
                                 max_length=TEXT_MAX, title="espeak:VOICE, kokoro:VOICE or coqui:MODEL_OR_PATH")]
TranslatorChoice = Literal[TRANSLATORS]  # type: ignore[valid-type]
LocalTranslator = Annotated[str, Field(pattern=r"^local:[^\x00]+$", max_length=TEXT_MAX, title="local:MODEL")]
Text = Annotated[str, Field(max_length=TEXT_MAX, pattern=NO_NUL)]


class _PathMark:
    """Marks an option that names a file or folder (the command line's PATH)."""

    def __repr__(self) -> str:
        return "PATH"


PATH = _PathMark()
FilePath = Annotated[str, Field(max_length=TEXT_MAX, pattern=NO_NUL), PATH]


# Left as a choice in the form: unset means "the machine's setting" (DUB_COMMERCIAL), which
# an unticked box would not say.
TRI_STATE = ("commercial",)


def _plain_optional_fields(schema: dict) -> None:
    """A field that may be left unset shows in Prefect's form as the field itself, not as a
    choice between its type and null: the empty field is the unset one (the form leaves it
    out and the default applies)."""
    for name, prop in schema.get("properties", {}).items():
        options = prop.get("anyOf")
        if name in TRI_STATE or not options or {"type": "null"} not in options:
            continue
        rest = [o for o in options if o != {"type": "null"}]
        if len(rest) == 1:
            del prop["anyOf"]
            prop.update({k: v for k, v in rest[0].items() if k not in prop})


class DubOptions(BaseModel):
    """How to dub: every option of a job except its input and languages."""

    model_config = ConfigDict(extra="forbid", title="Options", json_schema_extra=_plain_optional_fields)

    out: FilePath | None = Field(
        None, description="Output folder. From the command line: any folder (default ./dubbed/NAME/). "
        "In a deployment run: a folder under the worker's outputs root (DUB_OUTPUTS_DIR); each job "
        "gets its own subfolder there.")
    source_lang: Text | None = Field(
        None, description="Language spoken in the input (default: the audio track's language tag, "
        "the transcript sidecar's name, or speech recognition).")
    transcript: FilePath | None = Field(
        None, description="Approved transcript (SRT/VTT). Default: `NAME.srt` or `NAME.<source-lang>.srt` "
        "beside the input. Skips speech recognition.")
    translations: FilePath | None = Field(
        None, description="Folder of approved translations `NAME.<lang>.srt` (wins over sidecars "
        "beside the input).")
    voice: Union[VoiceChoice, VoiceSpec] = Field(
        "auto", description="auto (clone the speaker with Chatterbox when its weights are present, else "
        "with Coqui XTTS when its weights are present and the job is not --commercial, else Kokoro where it "
        "speaks the language and its weights are present, else espeak-ng) | chatterbox | espeak | espeak:VOICE "
        "| kokoro | kokoro:VOICE (e.g. em_alex) | coqui:MODEL_OR_PATH.")
    voices: FilePath | None = Field(
        None, description="Voices per speaker: a JSON or YAML file mapping speaker names (from the "
        "script's `<v Name>` or `Name:` labels) to voices, for every language or per language, e.g. "
        '{"Ana": "espeak:es+f3", "Ben": {"es": "espeak:es+m3", "*": "auto"}}. Speakers it does not name get '
        "--voice, a voice each.")
    lipsync: Literal[LIPSYNC_MODES] = Field(  # type: ignore[valid-type]
        "auto", description="auto | on | off. auto: lip-sync when a GPU and the weights are present, "
        "best effort; on: refuse to start without them.")
    translator: Union[TranslatorChoice, LocalTranslator] = Field(
        "google", description="google | deepl | microsoft | ... (keys from the worker's environment) "
        "| local:MODEL (a translation model in the models folder).")
    asr_model: Text = Field(DEFAULT_ASR_MODEL, description="Speech recognition: a Whisper model name "
                            "(tiny.en, small, large-v3), an openai-whisper .pt checkpoint or a CTranslate2 "
                            "folder (unused with an approved transcript).")
    glossary: FilePath | None = Field(
        None, description="Glossary: a TSV/CSV/JSON file of terms kept verbatim or forced, or a "
        "folder of `<lang>.tsv` files.")
    brand: Annotated[str, Field(max_length=BRAND_MAX, pattern=r"^[\w .&'+-]+$")] | None = Field(
        None, description="Brand (or client) of the video: its glossary and translation memory in the "
        "catalog (dub glossary, dub tm) apply to every translator.")
    max_speed: float = Field(DEFAULT_MAX_SPEED, ge=MAX_SPEED_RANGE[0], le=MAX_SPEED_RANGE[1],
                             description="Cap on speeding up a line to fit its slot (pitch preserved).")
    loudness: float | None = Field(
        DEFAULT_LOUDNESS, ge=LOUDNESS_RANGE[0], le=LOUDNESS_RANGE[1],
        description="Integrated loudness of the dubbed tracks, LUFS (EBU R128). Default: the source's own "
        "loudness and true peak, so switching audio tracks keeps the level; or a delivery target: "
        "-23 broadcast, -14 streaming.")
    review: Literal[REVIEW_MODES] = Field(  # type: ignore[valid-type]
        "none", description="none | script | final | both | auto. script: each language's translated lines "
        "wait for a person's approval before they are voiced (languages with approved translations, or "
        "whose every line is in the brand's translation memory, need none); final: each delivered language "
        "waits for approval of the result (its files and QA report) and is done only once approved; both: "
        "the two; auto: a final review only of languages the QA report flags. Decide with dub review, "
        "dub approve, dub reject, or in a deployment run's form.")
    commercial: bool | None = Field(
        None, description="Commercial use: refuse, before any work, a model whose licence does not allow "
        "it (XTTS-v2). Unset: the machine's DUB_COMMERCIAL setting (off unless set).")
    consent: Text | None = Field(
        None, description="The consent under which the voice is cloned and the lips changed "
        "(recorded in the catalog).")


FLAGS = {name: "--" + name.replace("_", "-") for name in DubOptions.model_fields}


def names_a_path(annotation) -> bool:
    """Whether an option's type is a `FilePath` (optional or not)."""
    return any(get_origin(a) is Annotated and PATH in get_args(a)[1:] for a in (annotation, *get_args(annotation)))


PATH_OPTIONS = tuple(name for name, field in DubOptions.model_fields.items() if names_a_path(field.annotation))


def help_for(name: str) -> str:
    """The option's description, for the command line's --help."""
    return DubOptions.model_fields[name].description or ""


def make_options(values: dict | DubOptions | None = None, **overrides) -> DubOptions:
    """Options from a dict (a form, a manifest row) or keyword arguments (the command line);
    `InputError` naming the option for anything out of type, choice or bounds."""
    data = values.model_dump(exclude_unset=True) if isinstance(values, DubOptions) else dict(values or {})
    data.update({k: v for k, v in overrides.items() if v is not None})
    try:
        return DubOptions(**data)
    except ValidationError as exc:
        raise InputError(describe(exc)) from None


def describe(exc: ValidationError) -> str:
    """The first validation problem as the command line would name it."""
    error = exc.errors()[0]
    name = str(error["loc"][0]) if error["loc"] else "options"
    flag = FLAGS.get(name, name)
    value = error.get("input")
    shown = limits.shown(value)  # quoted at a bounded length: a manifest's value may be a list of millions
    bare = value if isinstance(value, (int, float, str)) and len(str(value)) <= limits.MAX_SHOWN_CHARS else shown
    if error["type"] == "extra_forbidden":
        return f"unknown option {name!r}"
    if isinstance(value, str) and "\0" in value and name not in ("voice", "translator"):
        return f"{flag}: a NUL byte is not allowed"  # the value itself may be long
    if name == "voice":
        return (f"unknown voice {shown} (auto, chatterbox, espeak, espeak:VOICE, kokoro, kokoro:VOICE such as "
                "kokoro:ef_dora, or coqui:MODEL_OR_PATH)")
    if name == "translator":
        return f"unknown translator {shown} (choose from {', '.join(TRANSLATORS)}, or local:MODEL)"
    if name in ("lipsync", "review"):
        return f"{flag} must be one of {', '.join(LIPSYNC_MODES if name == 'lipsync' else REVIEW_MODES)}, not {shown}"
    if name == "max_speed":
        low, high = MAX_SPEED_RANGE
        return f"{flag} must be between {low} and {high}, not {bare}"
    if name == "loudness":
        low, high = LOUDNESS_RANGE
        return f"{flag} must be between {low:g} and {high:g} LUFS, not {bare}"
    return f"{flag}: {error['msg']}"


# A flow's own parameters, named as they are in a deployment's form (not under `options`).
FORM_PARAMETERS = ("input", "langs", "manifest", "only_stale", "via_deployment", "concurrency")
_FLAG = re.compile(r"(?<![\w-])--[a-z][a-z0-9-]*")


def in_form_words(message: str) -> str:
    """A message as a deployment's form names things: `--source-lang` becomes
    `options.source_lang`, `--langs` becomes `langs`; other text is left as it is."""
    fields = {flag: f"options.{name}" for name, flag in FLAGS.items()}
    fields.update({"--" + name.replace("_", "-"): name for name in FORM_PARAMETERS})
    return _FLAG.sub(lambda m: fields.get(m[0], m[0]), message)
