"""Translation memory: lines translated before are not sent again.

An approved script that changes one line, a variant of an ad that shares most of its
lines, a line repeated within one video: only the lines never seen by this translator
(same provider, model version, glossary and language pair) go to the provider. Free
services rate-limit; this keeps the requests to what is new.
"""

from __future__ import annotations

import bisect
import fcntl
import json
import os
from dataclasses import replace
from pathlib import Path

from polydub.segments import Segment


class TranslationMemory:
    """Source line -> translation, one JSON file per translator and language pair.

    Reads and writes hold a file lock, so jobs in several processes can share it.
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)

    def _locked(self):
        self.path.parent.mkdir(parents=True, exist_ok=True)
        handle = open(self.path.with_suffix(".lock"), "a")
        fcntl.flock(handle, fcntl.LOCK_EX)
        return handle

    def _read(self) -> dict[str, str]:
        try:
            return json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}  # none yet, or unreadable: start again rather than fail the job

    def get(self, lines: list[str]) -> dict[str, str]:
        with self._locked():
            known = self._read()
        return {line: known[line] for line in lines if line in known}

    def put(self, pairs: dict[str, str]) -> None:
        if not pairs:
            return
        with self._locked():
            known = self._read()
            known.update(pairs)
            tmp = self.path.with_suffix(".part")
            tmp.write_text(json.dumps(known, ensure_ascii=False, indent=0), encoding="utf-8")
            os.replace(tmp, self.path)


def translate_with_memory(segments: list[Segment], source: str, target: str, translator,
                          glossary: dict[str, str] | None, memory: TranslationMemory) -> tuple[list[Segment], int]:
    """Like `translate_segments`, sending only lines the memory does not hold (each distinct
    line once). Returns the translated segments and how many lines were sent."""
    from polydub.translate import translate_segments

    known = memory.get([s.text for s in segments])
    new = list(dict.fromkeys(s.text for s in segments if s.text not in known))
    if new:
        done = translate_segments([Segment(0.0, 0.0, text) for text in new], source, target, translator, glossary)
        fresh = {text: seg.text for text, seg in zip(new, done)}
        memory.put(fresh)
        known.update(fresh)
    return [replace(s, text=known[s.text]) for s in segments], len(new)


OVERLAP_SHARE = 0.25  # of the shorter line: less is two tools' timings brushing, not a pair


def pair_in_time(source: list[Segment], translated: list[Segment]) -> dict[str, str]:
    """Source line -> its approved translation, for lines that overlap exactly one line of
    the other script each way. Splits, merges, lines with no counterpart and a source line
    translated two ways are left out: a wrong pair in the memory would be reused everywhere."""
    in_source, in_translated = _Timeline(source), _Timeline(translated)
    pairs: dict[str, str] = {}
    doubtful: set[str] = set()
    for line in translated:
        found = in_source.overlapping(line)
        if len(found) != 1 or len(in_translated.overlapping(found[0])) != 1:
            continue
        text = found[0].text
        if pairs.get(text, line.text) != line.text:
            doubtful.add(text)
        pairs[text] = line.text
    return {k: v for k, v in pairs.items() if k not in doubtful}


class _Timeline:
    """Lines sorted by start, to find those overlapping a time span without a full scan."""

    def __init__(self, lines: list[Segment]):
        self.lines = sorted(lines, key=lambda s: s.start)
        self.starts = [s.start for s in self.lines]
        self.longest = max((s.duration for s in self.lines), default=0.0)

    def overlapping(self, line: Segment) -> list[Segment]:
        """Lines sharing more than OVERLAP_SHARE of the shorter one's time with `line`."""
        lo = bisect.bisect_left(self.starts, line.start - self.longest)
        hi = bisect.bisect_left(self.starts, line.end)
        return [o for o in self.lines[lo:hi]
                if min(line.end, o.end) - max(line.start, o.start)
                > OVERLAP_SHARE * max(min(line.duration, o.duration), 1e-3)]
