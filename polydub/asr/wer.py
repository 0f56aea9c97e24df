"""Word and character error rates: how far a transcript is from a reference script."""

from __future__ import annotations

import re
import unicodedata

_WORD = re.compile(r"[\w']+")


def words(text: str) -> list[str]:
    """Lower-cased words without punctuation ("Hello, and" -> ['hello', 'and'])."""
    return _WORD.findall(unicodedata.normalize("NFKC", text).lower())


def _edit_distance(ref: list[str], hyp: list[str]) -> int:
    """Levenshtein distance between two sequences (substitutions, deletions, insertions)."""
    row = list(range(len(hyp) + 1))  # one row at a time
    for i, r in enumerate(ref, 1):
        prev, row[0] = row[0], i
        for j, h in enumerate(hyp, 1):
            prev, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, prev + (r != h))
    return row[-1]


def _rate(ref: list[str], hyp: list[str]) -> float:
    if not ref:
        return 0.0 if not hyp else 1.0
    return _edit_distance(ref, hyp) / len(ref)


def word_error_rate(reference: str, hypothesis: str) -> float:
    """(substitutions + deletions + insertions) / reference words; 0 is word for word."""
    return _rate(words(reference), words(hypothesis))


def character_error_rate(reference: str, hypothesis: str) -> float:
    """(substitutions + deletions + insertions) / reference characters; 0 is letter for letter.

    Both texts are normalized as `words` does (NFKC, lower case, punctuation dropped) and
    their words joined by one space: a comma, a line break or a double space is then no
    error, while a word split in two or run together costs one character, as a listener
    would hear it. Scripts written without spaces (Chinese, Japanese, Thai) come out as
    one long word and are compared letter by letter: use this rate, not the word error
    rate, for them.
    """
    return _rate(list(" ".join(words(reference))), list(" ".join(words(hypothesis))))
