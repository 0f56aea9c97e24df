"""The licence of every model polydub can run, and whether it allows commercial use.

One table, read by `dub models list`, the job report, the catalog (`stage_runs.licence`)
and the `--commercial` guard. What the table says, and where it comes from:

- openai-whisper: code and weights MIT (the whisper repository's README and LICENSE).
- Coqui XTTS-v2: Coqui Public Model License 1.0.0, non-commercial use only.
- espeak-ng: the program is GPL-3.0-or-later; the GPL covers the program, not the speech
  it produces, so its output may be used commercially.
- Demucs: code MIT, but its author states the published pretrained weights are not under
  MIT and are provided for research purposes only (facebookresearch/demucs issues #327 and
  #508; trained on MusDB / MixingSecrets material): non-commercial.
- LatentSync: code Apache-2.0; the published weights' model card says CreativeML Open
  RAIL++-M: commercial use allowed under its use restrictions.
- sd-vae-ft-mse: CreativeML Open RAIL-M: commercial use allowed under its use restrictions.
- Chatterbox Multilingual (Resemble AI): code and weights MIT (the chatterbox repository's
  LICENSE and model card); every clip carries Resemble's Perth watermark, declared, never removed.
- Kokoro-82M: code and weights Apache-2.0 (hexgrad/Kokoro-82M model card); its phonemes
  come from espeak-ng (GPL, the program) through misaki (Apache-2.0).
- Marian opus-mt: CC-BY-4.0 (attribution). NLLB-200: CC-BY-NC-4.0, non-commercial.
- Translation services (google, deepl, ...): the provider's terms of service.

A model the table does not know (a user's own Coqui or Demucs checkpoint, a translation
model by path) is recorded as unknown and allowed: its licence is the user's to check.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Licence:
    name: str
    commercial: bool | None  # None: not known
    note: str = ""

    @property
    def label(self) -> str:
        """Short form for tables, the report and the catalog (at most 128 characters)."""
        use = {True: "", False: " (non-commercial)", None: " (licence unknown)"}[self.commercial]
        return (self.name + use)[:128]


MIT = Licence("MIT", True)
APACHE = Licence("Apache-2.0", True)
CPML = Licence("Coqui Public Model License 1.0.0", False, "non-commercial use only")
GPL3_PROGRAM = Licence("GPL-3.0-or-later (program)", True, "the speech it produces is not covered by the GPL")
DEMUCS_WEIGHTS = Licence("Demucs pretrained weights: research use only", False,
                         "code MIT; the weights are not (demucs issues #327, #508)")
OPENRAIL_PP = Licence("CreativeML Open RAIL++-M", True, "commercial use allowed; use restrictions apply")
OPENRAIL = Licence("CreativeML Open RAIL-M", True, "commercial use allowed; use restrictions apply")
CC_BY = Licence("CC-BY-4.0", True, "attribution required")
CC_BY_NC = Licence("CC-BY-NC-4.0", False, "non-commercial use only")
UNKNOWN = Licence("not in polydub's licence table", None, "check the model's own licence")

# Registered models (`dub models list`), by name prefix.
MODELS: dict[str, Licence] = {
    "whisper-": MIT,
    "faster-whisper-": MIT,  # Systran's CTranslate2 conversions of OpenAI's MIT weights
    "latentsync-": OPENRAIL_PP,
    "sd-vae-ft-mse": OPENRAIL,
    "htdemucs": DEMUCS_WEIGHTS,
    "xtts-v2": CPML,
    "kokoro": APACHE,
    "chatterbox-multilingual": MIT,
}
DEMUCS_PUBLISHED = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{8}\.th$")  # Meta's SIGNATURE-SHA256PREFIX.th

# What to use instead of a non-commercial model, named in the refusal.
ALTERNATIVES = {
    "voice": "use --voice chatterbox, --voice kokoro, --voice espeak or a commercially licensed coqui:MODEL",
    "translator": "use a local:Helsinki-NLP/opus-mt-* model (CC-BY-4.0) or a translation service",
}


def of_model(name: str) -> Licence:
    """Licence of a registered model (`dub models list`)."""
    return next((lic for prefix, lic in MODELS.items() if name.startswith(prefix)), UNKNOWN)


def of_voice(backend: str, xtts: bool = False) -> Licence:
    if backend == "espeak":
        return GPL3_PROGRAM
    if backend == "kokoro":
        return APACHE
    if backend == "chatterbox":
        return MIT
    return CPML if xtts else UNKNOWN


def of_cast(voices: list[Licence]) -> Licence:
    """One stage's licence when several voices made it (one per speaker): the one licence
    they share, else the most restrictive of them, named with the others."""
    distinct = list(dict.fromkeys(voices))
    if len(distinct) == 1:
        return distinct[0]
    rank = {False: 0, None: 1, True: 2}
    worst = min(distinct, key=lambda lic: rank[lic.commercial])
    return Licence(" + ".join(lic.name for lic in distinct), worst.commercial, "voices of several speakers")


def of_translator(name: str) -> Licence | None:
    """None for approved translations (no model)."""
    lowered = name.lower()
    if not lowered.startswith("local:"):
        return Licence(f"{name} terms of service", True, "an online service: its terms apply")
    if "nllb" in lowered:
        return CC_BY_NC
    if "opus-mt" in lowered:
        return CC_BY
    return UNKNOWN


def of_separator(checkpoint: str | Path) -> Licence:
    return DEMUCS_WEIGHTS if DEMUCS_PUBLISHED.match(Path(checkpoint).name) else UNKNOWN


def of_stage(stage: str, backend: str | None, model_version: str | None) -> Licence | None:
    """Licence of the model that made a stage's output; None where no model did (ffmpeg,
    approved texts). For the voice, `tasks.language` passes the voice's own licence."""
    if backend in ("whisper", "faster-whisper"):
        return MIT
    if stage == "translate" and backend and backend != "approved translation":
        return of_translator(backend)
    if backend in ("espeak", "kokoro", "chatterbox"):
        return of_voice(backend)
    if backend == "demucs":
        match = re.match(r"demucs:([^:]+)", model_version or "")
        return of_separator(match.group(1)) if match else UNKNOWN
    if backend == "latentsync":
        return LIPSYNC
    return None


LIPSYNC = Licence("CreativeML Open RAIL++-M (LatentSync) + Open RAIL-M (sd-vae-ft-mse) + MIT (whisper)",
                  True, "commercial use allowed; use restrictions apply")
