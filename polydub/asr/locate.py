"""Which speech recognition model `--asr-model` names, and which backend runs it.

A spec is a model name ('small', 'tiny.en', 'large-v3'), an openai-whisper checkpoint
(`.pt`) or a CTranslate2 Whisper folder (holding `model.bin`). A name resolves to
faster-whisper when it is installed and the CTranslate2 model is on this machine, else to
openai-whisper's checkpoint; nothing is downloaded here (`dub models pull` does that).
"""

from __future__ import annotations

import functools
import importlib.util
import re
from dataclasses import dataclass
from pathlib import Path

from polydub import config
from polydub.errors import InputError
from polydub.options import DEFAULT_ASR_MODEL as DEFAULT_MODEL  # defined once, with the options

FASTER_WHISPER = "faster-whisper"
OPENAI_WHISPER = "whisper"
CT2_WEIGHTS = "model.bin"  # what makes a folder a CTranslate2 model
# faster-whisper names with a CTranslate2 conversion (`dub models pull faster-whisper-NAME`)
FASTER_WHISPER_NAMES = ("tiny", "tiny.en", "base", "base.en", "small", "small.en", "medium",
                        "medium.en", "large-v2", "large-v3", "large-v3-turbo")


@dataclass(frozen=True)
class AsrModel:
    """A located model: `backend` is 'faster-whisper' or 'whisper'; `path` a CTranslate2
    folder or a `.pt` checkpoint."""

    backend: str
    path: Path
    name: str

    @property
    def version(self) -> str:
        """Identity for cache keys and the catalog: backend, name, weight size and mtime."""
        weights = self.path / CT2_WEIGHTS if self.backend == FASTER_WHISPER else self.path
        st = weights.stat()
        return f"{self.backend}:{self.name}:{st.st_size}:{int(st.st_mtime)}"


def faster_whisper_installed() -> bool:
    return importlib.util.find_spec("faster_whisper") is not None


def locate_model(spec: str, models_dir: Path | None = None) -> AsrModel:
    """Resolve `--asr-model`; `InputError` (one line) if it is not usable here."""
    path = Path(spec).expanduser()
    if path.is_dir():
        if not (path / CT2_WEIGHTS).is_file():
            raise InputError(f"--asr-model {spec}: not a CTranslate2 Whisper model folder (no {CT2_WEIGHTS})")
        if not faster_whisper_installed():
            raise InputError(f"--asr-model {spec} is a CTranslate2 model; install faster-whisper to use it")
        return AsrModel(FASTER_WHISPER, path, path.name)
    if path.suffix == ".pt" or path.is_file() or "/" in spec:
        if not path.is_file():
            raise InputError(f"--asr-model {spec}: no such checkpoint file or model folder")
        return AsrModel(OPENAI_WHISPER, path, path.name)

    root = Path(models_dir or config.models_dir())
    faster = faster_whisper_installed()
    if faster and spec in FASTER_WHISPER_NAMES:
        found = _find_ct2(spec, root)
        if found:
            return AsrModel(FASTER_WHISPER, found, spec)
    checkpoint = _find_checkpoint(spec, root)
    if checkpoint:
        return AsrModel(OPENAI_WHISPER, checkpoint, spec)
    known = sorted(set(FASTER_WHISPER_NAMES if faster else ()) | set(_whisper_names()))
    if spec not in known:
        raise InputError(f"unknown speech recognition model {spec!r} (one of: {', '.join(known)}; "
                         f"or a .pt checkpoint or a CTranslate2 model folder)")
    pull = f"faster-whisper-{spec}" if faster and spec in FASTER_WHISPER_NAMES else f"whisper-{spec}"
    raise InputError(f"speech recognition model {spec!r} is not on this machine; give a transcript "
                     f"(--transcript or a NAME.srt sidecar) or run: dub models pull {pull}")


def _find_ct2(name: str, root: Path) -> Path | None:
    """`MODELS/faster-whisper-NAME/` (where `dub models pull` puts it), then the Hugging
    Face cache faster-whisper itself downloads to (looked up without importing
    faster-whisper, whose import costs half a second that a job without the model keeps)."""
    folder = root / f"faster-whisper-{name}"
    if (folder / CT2_WEIGHTS).is_file():
        return folder
    repos = _source_literal("faster_whisper", "utils.py", "_MODELS")
    try:
        if repos is None:  # its source changed shape: ask faster-whisper itself
            from faster_whisper.utils import download_model

            cached = Path(download_model(name, local_files_only=True))
            return cached if (cached / CT2_WEIGHTS).is_file() else None
        if name not in repos:
            return None
        from huggingface_hub import try_to_load_from_cache

        cached = try_to_load_from_cache(repos[name], CT2_WEIGHTS)  # the snapshot of its main revision
        return Path(cached).parent if isinstance(cached, str) and Path(cached).is_file() else None
    except Exception:  # noqa: BLE001 - not in the cache (or no hub client): not here
        return None


@functools.cache
def _source_literal(package: str, file: str, name: str) -> dict | None:
    """The `name = {"key": "value", ...}` table at the top of `package`'s `file`, read from
    its source without importing the package; None when it is not installed or not found.
    Read with a pattern, not Python's parser: Python 3.11's AST builder is not safe in two
    threads at once, and each language's QA stage asks at the same moment."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.origin:
        return None
    try:
        source = (Path(spec.origin).parent / file).read_text(encoding="utf-8")
    except OSError:
        return None
    table = re.search(rf"^{re.escape(name)}\s*=\s*{{(.*?)^}}", source, re.MULTILINE | re.DOTALL)
    pairs = re.findall(r'^\s*"([^"]+)"\s*:\s*"([^"]+)",?\s*$', table.group(1), re.MULTILINE) if table else []
    return dict(pairs) or None


@functools.cache
def whisper_checkpoints() -> dict[str, str]:
    """openai-whisper's model names and their download URLs ({} when it is not installed),
    read from its source: importing it imports torch, seconds that finding a file (or a QA
    stage learning there is none) should not cost."""
    if importlib.util.find_spec("whisper") is None:
        return {}
    found = _source_literal("whisper", "__init__.py", "_MODELS")
    if found is not None:
        return found
    import whisper  # its source changed shape: ask the module itself

    return dict(whisper._MODELS)


def _whisper_names() -> list[str]:
    return list(whisper_checkpoints())


def _find_checkpoint(name: str, root: Path) -> Path | None:
    """`MODELS/whisper-NAME/NAME.pt`, `MODELS/whisper/NAME.pt`, then ~/.cache/whisper."""
    if name not in _whisper_names():
        return None
    candidates = [root / f"whisper-{name}" / f"{name}.pt", root / "whisper" / f"{name}.pt",
                  Path.home() / ".cache" / "whisper" / Path(whisper_checkpoints()[name]).name]
    return next((c for c in candidates if c.is_file()), None)
