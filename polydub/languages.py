"""Language codes: what users type (ISO 639-1, optionally with a region: `pt-br`), what
containers store (ISO 639-2) and what espeak-ng calls its voices."""

from __future__ import annotations

import re

from polydub.errors import InputError

# ISO 639-1 -> (ISO 639-2/T, ISO 639-2/B, English name). Matroska stores /B, MP4 stores /T.
LANGUAGES: dict[str, tuple[str, str, str]] = {
    "af": ("afr", "afr", "Afrikaans"), "am": ("amh", "amh", "Amharic"),
    "ar": ("ara", "ara", "Arabic"), "az": ("aze", "aze", "Azerbaijani"),
    "be": ("bel", "bel", "Belarusian"), "bg": ("bul", "bul", "Bulgarian"),
    "bn": ("ben", "ben", "Bengali"), "bs": ("bos", "bos", "Bosnian"),
    "ca": ("cat", "cat", "Catalan"), "cs": ("ces", "cze", "Czech"),
    "cy": ("cym", "wel", "Welsh"), "da": ("dan", "dan", "Danish"),
    "de": ("deu", "ger", "German"), "el": ("ell", "gre", "Greek"),
    "en": ("eng", "eng", "English"), "eo": ("epo", "epo", "Esperanto"),
    "es": ("spa", "spa", "Spanish"), "et": ("est", "est", "Estonian"),
    "eu": ("eus", "baq", "Basque"), "fa": ("fas", "per", "Persian"),
    "fi": ("fin", "fin", "Finnish"), "fr": ("fra", "fre", "French"),
    "ga": ("gle", "gle", "Irish"), "gl": ("glg", "glg", "Galician"),
    "gu": ("guj", "guj", "Gujarati"), "he": ("heb", "heb", "Hebrew"),
    "hi": ("hin", "hin", "Hindi"), "hr": ("hrv", "hrv", "Croatian"),
    "hu": ("hun", "hun", "Hungarian"), "hy": ("hye", "arm", "Armenian"),
    "id": ("ind", "ind", "Indonesian"), "is": ("isl", "ice", "Icelandic"),
    "it": ("ita", "ita", "Italian"), "ja": ("jpn", "jpn", "Japanese"),
    "ka": ("kat", "geo", "Georgian"), "kk": ("kaz", "kaz", "Kazakh"),
    "kn": ("kan", "kan", "Kannada"), "ko": ("kor", "kor", "Korean"),
    "lt": ("lit", "lit", "Lithuanian"), "lv": ("lav", "lav", "Latvian"),
    "mk": ("mkd", "mac", "Macedonian"), "ml": ("mal", "mal", "Malayalam"),
    "mr": ("mar", "mar", "Marathi"), "ms": ("msa", "may", "Malay"),
    "nb": ("nob", "nob", "Norwegian Bokmal"), "ne": ("nep", "nep", "Nepali"),
    "nl": ("nld", "dut", "Dutch"), "no": ("nor", "nor", "Norwegian"),
    "pa": ("pan", "pan", "Punjabi"), "pl": ("pol", "pol", "Polish"),
    "pt": ("por", "por", "Portuguese"), "ro": ("ron", "rum", "Romanian"),
    "ru": ("rus", "rus", "Russian"), "sk": ("slk", "slo", "Slovak"),
    "sl": ("slv", "slv", "Slovenian"), "sq": ("sqi", "alb", "Albanian"),
    "sr": ("srp", "srp", "Serbian"), "sv": ("swe", "swe", "Swedish"),
    "sw": ("swa", "swa", "Swahili"), "ta": ("tam", "tam", "Tamil"),
    "te": ("tel", "tel", "Telugu"), "th": ("tha", "tha", "Thai"),
    "tl": ("tgl", "tgl", "Tagalog"), "tr": ("tur", "tur", "Turkish"),
    "uk": ("ukr", "ukr", "Ukrainian"), "ur": ("urd", "urd", "Urdu"),
    "vi": ("vie", "vie", "Vietnamese"), "zh": ("zho", "chi", "Chinese"),
}

# espeak-ng voice names where they differ from the ISO 639-1 code.
_ESPEAK_VOICES = {"zh": "cmn", "pt-br": "pt-br", "pt": "pt", "nb": "nb", "no": "nb", "fa": "fa",
                  "en-us": "en-us", "en-gb": "en-gb", "es-419": "es-419", "zh-tw": "yue"}

_CODE = re.compile(r"^([a-z]{2})(?:-([a-z0-9]{2,4}))?$")


def normalize(code: str) -> str:
    """`'pt_BR'` -> `'pt-br'`; raise `InputError` for a code we do not know."""
    norm = code.strip().lower().replace("_", "-")
    m = _CODE.match(norm)
    if not m or m.group(1) not in LANGUAGES:
        raise InputError(f"unknown language code {code!r} (use ISO 639-1, e.g. es, fr, de, pt-br)")
    return norm


def parse_langs(text: str) -> list[str]:
    """Parse `--langs es,fr,de` into normalized, de-duplicated codes in the given order."""
    codes = [normalize(c) for c in text.split(",") if c.strip()]
    if not codes:
        raise InputError("--langs needs at least one language code, e.g. --langs es,fr")
    return list(dict.fromkeys(codes))


def base(code: str) -> str:
    return normalize(code).split("-")[0]


def iso639_2(code: str, bibliographic: bool = False) -> str:
    """Three-letter code as containers store it (`bibliographic` for Matroska)."""
    t, b, _ = LANGUAGES[base(code)]
    return b if bibliographic else t


def name(code: str) -> str:
    return LANGUAGES[base(code)][2]


def espeak_voice(code: str) -> str:
    norm = normalize(code)
    return _ESPEAK_VOICES.get(norm) or _ESPEAK_VOICES.get(base(norm)) or base(norm)
