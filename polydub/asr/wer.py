"""Word error rate: how far a transcript's words are from a reference script's."""

from __future__ import annotations

import re
import unicodedata

_WORD = re.compile(r"[\w']+")


def words(text: str) -> list[str]:
    """Lower-cased words without punctuation ("Hello, and" -> ['hello', 'and'])."""
    return _WORD.findall(unicodedata.normalize("NFKC", text).lower())


def word_error_rate(reference: str, hypothesis: str) -> float:
    """(substitutions + deletions + insertions) / reference words; 0 is word for word."""
    ref, hyp = words(reference), words(hypothesis)
    if not ref:
        return 0.0 if not hyp else 1.0
    row = list(range(len(hyp) + 1))  # Levenshtein over words, one row at a time
    for i, r in enumerate(ref, 1):
        prev, row[0] = row[0], i
        for j, h in enumerate(hyp, 1):
            prev, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, prev + (r != h))
    return row[-1] / len(ref)
