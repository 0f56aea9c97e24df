"""Chatterbox Multilingual (Resemble AI; MIT code and weights): clones each speaker from a
few seconds of their own voice, in 23 languages; every clip carries Resemble's inaudible
Perth watermark, which polydub keeps and declares.

`dub models pull chatterbox-multilingual` writes its files into
MODELS_DIR/chatterbox-multilingual (see `chatterbox_model` for the layout). The `chatterbox-tts`
package pins an older torch, transformers and diffusers than polydub's; its code runs on
polydub's versions (the tests run it), so it is installed without its pins
(`pip install --no-deps chatterbox-tts==0.1.7`, done by ./dev) and its runtime needs are
polydub's own dependencies.
"""

from __future__ import annotations

import threading
import warnings
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from polydub import languages
from polydub.errors import InputError, StageError
from polydub.loading import load_once
from polydub.tts import chatterbox_model
from polydub.tts.wav import fingerprint, package_version, write_line

CHATTERBOX_DIR = "chatterbox-multilingual"  # under the models directory
SAMPLE_RATE = 24_000
TOKENS_PER_SECOND = 25  # S3 speech tokens: 40 ms each
MIN_SECONDS = 4.0  # the shortest bound on a line's speech
SECONDS_PER_CHARACTER = 0.2  # about three times a fast speaker's pace: the bound on a line's speech
MAX_NEW_TOKENS = 1000  # upstream's own bound (40 s)
WATERMARK = "Perth (Resemble AI): an inaudible watermark in every Chatterbox clip"
# Our base language codes Chatterbox speaks without extra packages (Chinese, Japanese,
# Hebrew, Korean and Russian need segmenters and dictionaries polydub does not install).
LANGUAGES = {code: code for code in ("ar", "da", "de", "el", "en", "es", "fi", "fr", "hi", "it", "ms", "nl",
                                     "pl", "pt", "sv", "sw", "tr")} | {"nb": "no", "no": "no"}


def language(lang: str) -> str | None:
    """Chatterbox's code for `lang`, or None where it is not offered."""
    return LANGUAGES.get(languages.base(lang))


def weights_in(model_dir: Path) -> str | None:
    """Why `model_dir` is not a usable Chatterbox model, or None when it is."""
    if any(not (model_dir / name).is_file() for name in chatterbox_model.FILES):
        return f"no Chatterbox weights in {model_dir} (dub models pull {CHATTERBOX_DIR})"
    return None


@dataclass
class _Loaded:
    tts: object  # chatterbox.mtl_tts.ChatterboxMultilingualTTS
    builtin: object = None  # its built-in voice (conds.pt), or None
    voices: dict = field(default_factory=dict)  # reference clip -> Conditionals


# One generation at a time in the process: upstream's alignment check reads a module-level
# table of attention heads, and lines are seeded from the global RNG for repeatable takes.
_GENERATING = threading.Lock()


def load(model_dir: Path) -> _Loaded:
    """Load the model once per process (on CUDA when there is one)."""
    import torch

    device = "cuda" if torch.cuda.is_available() else "cpu"

    def build() -> _Loaded:
        try:
            import chatterbox.mtl_tts  # noqa: F401
        except ImportError as exc:
            raise InputError(f"Chatterbox is not installed ({exc}); pip install --no-deps chatterbox-tts==0.1.7"
                             ) from None
        try:
            tts = chatterbox_model.load(model_dir, device)
            return _Loaded(tts, builtin=tts.conds)
        except Exception as exc:  # noqa: BLE001 - any load failure is one line for the user
            raise StageError(f"could not load Chatterbox model {model_dir}: {type(exc).__name__}: {exc}"
                             .splitlines()[0]) from None

    return load_once(("chatterbox", str(Path(model_dir).resolve()), device), build)


def describe(model_dir: Path) -> str:
    """Load the model strictly; what `dub models verify` prints."""
    tts = load(model_dir).tts
    params = sum(p.numel() for m in (tts.t3, tts.s3gen, tts.ve) for p in m.parameters())
    return f"Chatterbox Multilingual {params / 1e6:.1f} M params, all weights match"


class ChatterboxVoice:
    """Clones the speaker of `reference_wav` (a few seconds of clean speech); without one,
    the model's built-in voice (`conds.pt`)."""

    backend = "chatterbox"
    sample_rate = SAMPLE_RATE
    sets_pace = False  # no speaking-rate control: its lines are only time-stretched
    watermark = WATERMARK

    def __init__(self, model_dir: Path, reference_wav: Path | None = None):
        self.model_dir = Path(model_dir)
        missing = weights_in(self.model_dir)
        if missing:
            raise InputError(missing)
        self.reference_wav = Path(reference_wav) if reference_wav else None
        if self.reference_wav and not self.reference_wav.is_file():
            raise InputError(f"{self.reference_wav}: no such reference clip")
        weights = "#".join(fingerprint(self.model_dir / name) for name in
                           (chatterbox_model.T3_WEIGHTS, chatterbox_model.S3GEN, chatterbox_model.VE))
        self.model = f"chatterbox-tts {package_version('chatterbox-tts')} {self.model_dir} #{weights}"

    def speaks(self, lang: str) -> bool:
        return language(lang) is not None

    def synthesize(self, text: str, lang: str, out_wav: Path) -> Path:
        """Write `text` in `lang` as a mono 16-bit WAV at 24 kHz, watermarked."""
        code = language(lang)
        if code is None:
            raise StageError(f"Chatterbox does not speak '{lang}'")
        return write_line(out_wav, self.sample_rate, text, lambda line: self._speak(line, code), "Chatterbox")

    def _speak(self, text: str, code: str) -> np.ndarray:
        """Samples in [-1, 1] at 24 kHz, shape (n,)."""
        loaded = load(self.model_dir)
        try:
            with _GENERATING:
                return generate(loaded, text, code, self.reference_wav)
        except (InputError, StageError):
            raise
        except Exception as exc:  # noqa: BLE001 - model failures become one line for the user
            raise StageError(f"Chatterbox synthesis failed: {type(exc).__name__}: {exc}".splitlines()[0]) from None


def generate(loaded: _Loaded, text: str, code: str, reference: Path | None) -> np.ndarray:
    """Upstream's `generate`, owned here so that a line's speech is bounded by its text
    (upstream allows 40 s for any line: a model that does not stop would fill them) and
    repeatable (seeded by the text), with the watermark kept."""
    import torch
    import torch.nn.functional as F
    from chatterbox.models.s3tokenizer import drop_invalid_tokens
    from chatterbox.models.t3.inference import alignment_stream_analyzer as analyzer
    from chatterbox.mtl_tts import punc_norm

    tts = loaded.tts
    conds = _conditionals(loaded, reference)
    torch.manual_seed(zlib.crc32(f"{code}:{text}".encode()))
    text = punc_norm(text)
    tokens = tts.tokenizer.text_to_tokens(text, language_id=code).to(tts.device)
    tokens = torch.cat([tokens, tokens], dim=0)  # conditional and unconditional rows, for guidance
    tokens = F.pad(F.pad(tokens, (1, 0), value=tts.t3.hp.start_text_token), (0, 1), value=tts.t3.hp.stop_text_token)
    bound = min(MAX_NEW_TOKENS, round(TOKENS_PER_SECOND * max(MIN_SECONDS, SECONDS_PER_CHARACTER * len(text))))
    layers, heads = tts.t3.cfg.num_hidden_layers, tts.t3.cfg.num_attention_heads
    published = analyzer.LLAMA_ALIGNED_HEADS
    spied = [tts.t3.tfmr.layers[min(layer, layers - 1)].self_attn for layer, _ in published]
    hooks_before = [set(module._forward_hooks) for module in spied]
    # The alignment check watches heads of the published 30-layer model; a smaller model
    # (the tests') is watched on its own last layers and heads.
    analyzer.LLAMA_ALIGNED_HEADS = [(min(layer, layers - 1), min(head, heads - 1)) for layer, head in published]
    try:
        with torch.inference_mode(), warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # transformers' deprecations inside upstream's T3
            speech = tts.t3.inference(t3_cond=conds.t3, text_tokens=tokens, max_new_tokens=bound, temperature=0.8,
                                      cfg_weight=0.5, repetition_penalty=1.2, min_p=0.05, top_p=1.0)
            speech = drop_invalid_tokens(speech[0]).to(tts.device)
            wav, _ = tts.s3gen.inference(speech_tokens=speech, ref_dict=conds.gen)
    finally:
        analyzer.LLAMA_ALIGNED_HEADS = published
        for module, before in zip(spied, hooks_before):  # upstream adds hooks every line, never removes them
            for handle in set(module._forward_hooks) - before:
                del module._forward_hooks[handle]
    wav = wav.squeeze(0).detach().float().cpu().numpy()
    return np.asarray(tts.watermarker.apply_watermark(wav, sample_rate=tts.sr), dtype=np.float32).reshape(-1)


def _conditionals(loaded: _Loaded, reference: Path | None):
    """The speaker's conditioning, made once per reference clip; the built-in voice without one."""
    if reference is None:
        return loaded.builtin
    st = reference.stat()
    key = (str(reference), st.st_size, st.st_mtime_ns)
    if key not in loaded.voices:
        loaded.tts.prepare_conditionals(str(reference), exaggeration=0.5)  # sets tts.conds
        loaded.voices[key] = loaded.tts.conds
    return loaded.voices[key]
