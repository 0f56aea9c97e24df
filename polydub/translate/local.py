"""A translation model on this machine (transformers seq2seq: Marian, NLLB, M2M100).

Marian (opus-mt) checkpoints translate one language pair each (`opus-mt-en-es`); the
multi-target ones want a `>>es<<` prefix, added here. NLLB and M2M100 translate between
many languages: the source language is set on the tokenizer and the target language is
forced as the first generated token.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

from polydub import config, languages
from polydub.errors import InputError, StageError
from polydub.loading import load_once

BATCH_SIZE = 16          # lines per generate() call
NUM_BEAMS = 4
MAX_NEW_TOKENS_PER_INPUT_TOKEN = 2.0  # translations rarely run past twice the source length
MAX_NEW_TOKENS_EXTRA = 16
MAX_NEW_TOKENS_CAP = 512

MODEL_CONFIG = "config.json"  # what every transformers model folder holds
_HUB_NAME = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")
_MARIAN_PAIR = re.compile(r"opus-mt-(?:tc-big-)?([a-z]{2})-([a-z]{2})$")

# ISO 639-1 -> NLLB-200 (FLORES-200) codes.
NLLB_CODES = {
    "af": "afr_Latn", "am": "amh_Ethi", "ar": "arb_Arab", "az": "azj_Latn", "be": "bel_Cyrl",
    "bg": "bul_Cyrl", "bn": "ben_Beng", "bs": "bos_Latn", "ca": "cat_Latn", "cs": "ces_Latn",
    "cy": "cym_Latn", "da": "dan_Latn", "de": "deu_Latn", "el": "ell_Grek", "en": "eng_Latn",
    "eo": "epo_Latn", "es": "spa_Latn", "et": "est_Latn", "eu": "eus_Latn", "fa": "pes_Arab",
    "fi": "fin_Latn", "fr": "fra_Latn", "ga": "gle_Latn", "gl": "glg_Latn", "gu": "guj_Gujr",
    "he": "heb_Hebr", "hi": "hin_Deva", "hr": "hrv_Latn", "hu": "hun_Latn", "hy": "hye_Armn",
    "id": "ind_Latn", "is": "isl_Latn", "it": "ita_Latn", "ja": "jpn_Jpan", "ka": "kat_Geor",
    "kk": "kaz_Cyrl", "kn": "kan_Knda", "ko": "kor_Hang", "lt": "lit_Latn", "lv": "lvs_Latn",
    "mk": "mkd_Cyrl", "ml": "mal_Mlym", "mr": "mar_Deva", "ms": "zsm_Latn", "nb": "nob_Latn",
    "ne": "npi_Deva", "nl": "nld_Latn", "no": "nob_Latn", "pa": "pan_Guru", "pl": "pol_Latn",
    "pt": "por_Latn", "ro": "ron_Latn", "ru": "rus_Cyrl", "sk": "slk_Latn", "sl": "slv_Latn",
    "sq": "als_Latn", "sr": "srp_Cyrl", "sv": "swe_Latn", "sw": "swh_Latn", "ta": "tam_Taml",
    "te": "tel_Telu", "th": "tha_Thai", "tl": "tgl_Latn", "tr": "tur_Latn", "uk": "ukr_Cyrl",
    "ur": "urd_Arab", "vi": "vie_Latn", "zh": "zho_Hans", "zh-tw": "zho_Hant",
}


def nllb_code(code: str) -> str | None:
    norm = languages.normalize(code)
    return NLLB_CODES.get(norm) or NLLB_CODES.get(norm.split("-")[0])


def resolve_model(name_or_path: str, models_dir: Path | None = None) -> tuple[str, bool]:
    """Where a model is: a folder (as given, or under the models directory) or a Hugging
    Face name that transformers fetches on first use. Returns (reference, is_local)."""
    path = Path(name_or_path).expanduser()
    root = Path(models_dir) if models_dir is not None else config.models_dir()
    for folder in (path, root / name_or_path if name_or_path else None):
        if folder is not None and folder.is_dir():
            if not (folder / MODEL_CONFIG).is_file():  # found at once, not when the job first translates
                raise InputError(f"no translation model in {folder.absolute()} (a folder without {MODEL_CONFIG}); "
                                 "give a model folder such as the one `dub models pull` or save_pretrained writes")
            return str(folder.absolute()), True
    if _HUB_NAME.fullmatch(name_or_path) and not name_or_path.startswith("."):
        return name_or_path, False
    raise InputError(
        f"no translation model at {name_or_path!r} (not a folder here or in {root}); "
        "give a model folder or a Hugging Face name such as Helsinki-NLP/opus-mt-en-es"
    )


def model_fingerprint(reference: str, is_local: bool) -> str:
    """Identifies the weights for cache keys without reading gigabytes: the config, and per
    weight file its size and the digest of its first and last MiB. For a hub name, the
    cached revision when there is one."""
    if not is_local:
        try:
            from huggingface_hub import try_to_load_from_cache

            cached = try_to_load_from_cache(reference, "config.json")
            if isinstance(cached, str):
                return f"{reference}@{Path(cached).parent.name}"
        except Exception:  # no cache: the name is all we know
            pass
        return reference
    digest = hashlib.sha256()
    for f in sorted(Path(reference).iterdir()):
        if f.name == "config.json" or f.name.endswith("tokenizer_config.json"):
            digest.update(f.read_bytes())
        elif f.suffix in {".safetensors", ".bin", ".pt", ".pth", ".spm", ".model"}:
            size = f.stat().st_size
            digest.update(f"{f.name}:{size}".encode())
            with f.open("rb") as fh:
                digest.update(fh.read(1 << 20))
                fh.seek(max(0, size - (1 << 20)))
                digest.update(fh.read())
    return f"{Path(reference).name}@{digest.hexdigest()[:16]}"


class LocalTranslator:
    """A transformers seq2seq model behind the `Translator` interface; loaded on first use,
    on CUDA when there is one."""

    def __init__(self, reference: str, is_local: bool, device: str | None = None):
        import transformers

        self.reference = reference
        self.name = "local:" + (Path(reference).name if is_local else reference)
        self.version = f"transformers-{transformers.__version__}:{model_fingerprint(reference, is_local)}"
        self.device = device
        self._model = None
        self._tokenizer = None

    def _load(self):
        if self._model is None:
            import torch

            self.device = self.device or ("cuda" if torch.cuda.is_available() else "cpu")
            self._model, self._tokenizer = load_once(("translate", self.reference, self.device), self._build)
        return self._model, self._tokenizer

    def _build(self):
        from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

        try:
            tokenizer = AutoTokenizer.from_pretrained(self.reference)
            model = AutoModelForSeq2SeqLM.from_pretrained(self.reference)
        except Exception as exc:
            reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise StageError(f"cannot load translation model {self.reference}: {reason}") from exc
        return model.to(self.device).eval(), tokenizer

    def _language_setup(self, source: str, target: str) -> tuple[str, int | None]:
        """(prefix for each input line, forced first token id) for this language pair."""
        model, tok = self._model, self._tokenizer
        unk = tok.unk_token_id
        if type(tok).__name__.startswith("Nllb"):
            src, tgt = nllb_code(source), nllb_code(target)
            tgt_id = tok.convert_tokens_to_ids(tgt) if tgt else unk
            if src is None or tgt_id in (None, unk):
                raise StageError(f"{self.name} has no NLLB language code for {source} -> {target}")
            tok.src_lang = src
            return "", tgt_id
        if hasattr(tok, "get_lang_id"):  # M2M100: ISO 639-1 codes
            src, tgt = languages.base(source), languages.base(target)
            try:
                tok.src_lang = src
                return "", tok.get_lang_id(tgt)
            except KeyError:
                raise StageError(f"{self.name} does not translate {source} -> {target}") from None
        if model.config.model_type == "marian":
            pair = _MARIAN_PAIR.search(Path(self.reference).name.lower())
            if pair and pair.groups() != (languages.base(source), languages.base(target)):
                raise StageError(
                    f"{self.name} translates {pair.group(1)} -> {pair.group(2)} only, "
                    f"not {source} -> {target} (Marian models hold one language pair)"
                )
            norm = languages.normalize(target)
            for token in (f">>{norm.replace('-', '_')}<<", f">>{languages.base(norm)}<<",
                          f">>{languages.iso639_2(norm)}<<"):
                if tok.convert_tokens_to_ids(token) not in (None, unk):
                    return token + " ", None
        return "", None

    def translate_batch(self, texts: list[str], source: str, target: str) -> list[str]:
        """One translation per input line, in order (empty where the model gave nothing)."""
        import torch

        model, tok = self._load()
        prefix, forced_bos = self._language_setup(source, target)
        max_positions = getattr(model.config, "max_position_embeddings", None) or MAX_NEW_TOKENS_CAP
        out = [""] * len(texts)
        # Similar lengths together: less padding per batch.
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        with torch.inference_mode():
            for start in range(0, len(order), BATCH_SIZE):
                idx = order[start : start + BATCH_SIZE]
                # Never feed more tokens than the model has positions (a saved tokenizer may
                # not know its model's limit).
                batch = tok([prefix + texts[i] for i in idx], return_tensors="pt", padding=True,
                            truncation=True, max_length=min(tok.model_max_length, max_positions)
                            ).to(self.device)
                n_in = batch["input_ids"].shape[1]
                limit = int(n_in * MAX_NEW_TOKENS_PER_INPUT_TOKEN) + MAX_NEW_TOKENS_EXTRA
                kwargs = {"max_new_tokens": min(limit, MAX_NEW_TOKENS_CAP, max_positions - 2),
                          "num_beams": NUM_BEAMS}
                if forced_bos is not None:
                    kwargs["forced_bos_token_id"] = forced_bos
                generated = model.generate(**batch, **kwargs)
                for i, text in zip(idx, tok.batch_decode(generated, skip_special_tokens=True)):
                    out[i] = " ".join(text.split())
        return out


def make_local(name_or_path: str, models_dir: Path | None = None) -> LocalTranslator:
    reference, is_local = resolve_model(name_or_path.strip(), models_dir)
    return LocalTranslator(reference, is_local)
