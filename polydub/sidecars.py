"""Subtitle sidecars: the files beside an input that players take for its subtitles.

`NAME.srt` (or `.vtt`) and `NAME.<lang>.srt` beside the input, and an approved
translation's `NAME.<lang>.srt` or `<lang>.srt` in a `--translations` folder. One
discovery serves both planning a job (`job.plan_job`) and judging whether a delivery is
stale (`staleness`), so the two never disagree on what a job is made from.
"""

from __future__ import annotations

import os

from polydub import languages
from polydub.errors import DubError

SUBTITLE_SUFFIXES = (".srt", ".vtt")


class Folders:
    """Names in each folder, listed once: `stem.*` lookups for thousands of items. Paths
    are plain strings here: a catalog makes tens of thousands of them."""

    def __init__(self):
        self._by_prefix: dict[str, dict[str, list[str]]] = {}

    def starting(self, folder: str, stem: str) -> list[str]:
        """Names in `folder` of the form `stem.*`, sorted."""
        if folder not in self._by_prefix:
            index: dict[str, list[str]] = {}
            try:
                names = sorted(os.listdir(folder))
            except OSError:
                names = []
            for name in names:
                for at in (i for i, ch in enumerate(name) if ch == "."):
                    index.setdefault(name[:at], []).append(name)
            self._by_prefix[folder] = index
        return self._by_prefix[folder].get(stem, [])


def subtitles(folder: str, stem: str, folders: Folders | None = None) -> dict[str | None, str]:
    """`stem.srt` (key None) and `stem.<lang>.srt` (key: the normalized code) in `folder`;
    `.srt` before `.vtt` when both are there."""
    folder = os.path.expanduser(str(folder))
    found: dict[str | None, str] = {}
    for name in (folders or Folders()).starting(folder, stem):
        tag, _, suffix = name[len(stem) + 1:].rpartition(".")
        if "." + suffix.lower() not in SUBTITLE_SUFFIXES:
            continue
        if not tag:
            found.setdefault(None, os.path.join(folder, name))
            continue
        try:
            found.setdefault(languages.normalize(tag), os.path.join(folder, name))
        except DubError:
            continue  # NAME.forced.srt and the like: not a language tag
    return found


def approved_translations(stem: str, langs: list[str], beside: dict[str | None, str], translations: str | None,
                          folders: Folders | None = None) -> dict[str, str]:
    """lang -> its approved translation: in the `translations` folder (`stem.<lang>.srt`,
    else `<lang>.srt`) first, since what the user names wins over what is found; else
    `stem.<lang>.srt` among `beside` (the input's `subtitles`)."""
    folders = folders or Folders()
    approved: dict[str, str] = {}
    for lang in langs:
        named = None
        if translations:
            named = (subtitles(translations, stem, folders).get(lang)
                     or subtitles(translations, lang, folders).get(None))
        if named or lang in beside:
            approved[lang] = named or beside[lang]
    return approved
