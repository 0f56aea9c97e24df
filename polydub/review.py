"""A person's review of a job's script before it is voiced (`review: script`).

The job offers each language's translated lines, with the source line each renders and
the speed its slot will ask of the voice; a reviewer edits the text in an SRT file
(`dub review`), and `dub approve` checks the edit (the same lines, times and speakers,
none empty) and continues the job with the approved script, which the translate stage
then takes as approved translations (remembered in the brand's translation memory).
"""

from __future__ import annotations

import contextvars
import getpass
import os
from dataclasses import dataclass, field
from pathlib import Path

from polydub import config, languages
from polydub.errors import InputError
from polydub.segments import Segment, format_time, read_subtitles

CHARS_PER_SECOND = 15.0  # an unhurried speaking rate: the speed a line will need is estimated from it
TIME_TOLERANCE_S = 0.0015  # an SRT keeps milliseconds
REVIEWS_DIR = "reviews"  # under DUB_HOME: the approved scripts a continued job reads
FROM_MEMORY = "translation memory"  # a translation whose every line a person approved before
# A deployment run suspended with a pause key starting so waits for a person: `review-LANG`
# (its script, `review-LANG-N` asked again) or `final-LANG` (its result).
REVIEW_KEYS = ("review-", "final-")


@dataclass
class Continuation:
    """A job that waited for review goes on: its id, the approved script per language
    and the languages rejected (with why)."""

    job_id: int
    translations: dict[str, str] = field(default_factory=dict)  # lang -> approved SRT
    rejected: dict[str, str] = field(default_factory=dict)  # lang -> why


# Set by `dub approve` around the flow it runs in this process: the flow resumes this job
# instead of opening a new one (the Prefect form never shows it).
continuing: contextvars.ContextVar[Continuation | None] = contextvars.ContextVar("continuing", default=None)


def needs_review(options, lang: str, translations: dict[str, str]) -> bool:
    """Whether `lang`'s script is offered to a person before it is voiced: script review is
    on and no approved script exists for it (an approved translation is already approved).
    A translation whose every line comes from the brand's memory is not offered either (see
    `flows.dub.offer_for_review`)."""
    return options.review in ("script", "both") and not translations.get(lang)


def needs_final_review(options, qa: dict | None) -> bool:
    """Whether a delivered language waits for a person's approval of its result: final
    review is on, or `auto` and its QA report (`qa`, as in the job report) flags something."""
    return options.review in ("final", "both") or (options.review == "auto" and bool((qa or {}).get("flags")))


def offered_lines(source: list[Segment], translated: list[Segment]) -> list[dict]:
    """What a reviewer sees of each translated line: its slot, speaker, the source text it
    overlaps, the translation and the speed the slot will likely ask (>= 1.0)."""
    lines = []
    for line in translated:
        heard = [s.text for s in source if s.start < line.end and line.start < s.end]
        slot = max(line.end - line.start, 1e-3)
        speed = max(1.0, len(line.text) / CHARS_PER_SECOND / slot)
        lines.append({"start": round(line.start, 3), "end": round(line.end, 3), "speaker": line.speaker,
                      "source": " ".join(heard), "text": line.text, "speed": round(speed, 2)})
    return lines


def to_review_srt(lines: list[dict]) -> str:
    """The lines as an SRT to edit, a speaker as `[Name] ` (always read back as a label)."""
    cues = [f"{i}\n{format_time(ln['start'])} --> {format_time(ln['end'])}\n"
            f"{'[' + ln['speaker'] + '] ' if ln.get('speaker') else ''}{ln['text']}\n"
            for i, ln in enumerate(lines, 1)]
    return "\n".join(cues)


def read_edited(path: Path, offered: list[dict]) -> tuple[list[dict], list[dict]]:
    """The offered lines with the texts of the edited SRT `path`, and what changed (see
    `check_edits`); an InputError in one line naming the file."""
    edited = [{"start": s.start, "end": s.end, "speaker": s.speaker, "text": s.text} for s in read_subtitles(path)]
    return check_edits(edited, offered, str(path))


def check_edits(edited: list[dict], offered: list[dict], where: str = "the answer") -> tuple[list[dict], list[dict]]:
    """The offered lines with the edited texts, and what changed ([{line, before, after}]);
    an InputError in one line when the edit changes anything but the texts: its lines (an
    emptied line is a line removed), their times or speakers."""
    edited = [line for line in edited if str(line.get("text") or "").strip()]
    if len(edited) != len(offered):
        raise InputError(f"{where}: {len(edited)} line{'s' * (len(edited) != 1)}, the script has {len(offered)}: "
                         "keep every line, its time and some text (to drop a language, reject it)")
    approved, changes = [], []
    for n, (new, old) in enumerate(zip(edited, offered), 1):
        at = f"{where}: line {n} ({format_time(old['start'])})"
        start, end, text = float(new["start"]), float(new["end"]), " ".join(str(new["text"]).split())
        if abs(start - old["start"]) > TIME_TOLERANCE_S or abs(end - old["end"]) > TIME_TOLERANCE_S:
            raise InputError(f"{at} is timed {format_time(start)} --> {format_time(end)}, "
                             f"the script's {format_time(old['start'])} --> {format_time(old['end'])}: "
                             "edit the text only")
        if (new.get("speaker") or None) != (old.get("speaker") or None):
            raise InputError(f"{at} is spoken by {new.get('speaker') or 'no one named'}, in the script by "
                             f"{old.get('speaker') or 'no one named'}: edit the text only")
        approved.append({**old, "text": text})
        if text != old["text"]:
            changes.append({"line": n, "before": old["text"], "after": text})
    return approved, changes


def decided_scripts(cat, job_id: int, name: str) -> tuple[dict[str, str], dict[str, str]]:
    """A job's decided reviews: {lang: the approved script, written where the continued job
    reads it}, {lang: why it was rejected}."""
    from polydub.storage import reviews

    decided = reviews.of_job(cat, job_id)
    approved = {r.lang: str(approved_script(job_id, name, r.lang, r.approved))
                for r in decided if r.status == reviews.APPROVED and r.kind == reviews.SCRIPT}
    rejected = {r.lang: rejection(r) for r in decided if r.status == reviews.REJECTED}
    return approved, rejected


def rejection(record) -> str:
    """Why a rejected language (a `storage.reviews.ReviewRecord`) is not delivered."""
    what = "script" if record.kind == "script" else "result"
    return f"{what} rejected by {record.decided_by}: {record.reason}"


def waiting_line(report) -> str:
    """`awaiting review: es, fr; see the script with ...`: what a job (a JobReport) waits
    for, and how to go on."""
    job = report.job
    line = (f"awaiting review: {', '.join(report.awaiting_review)}; see the script with `dub review {job} --out DIR`, "
            f"then `dub approve {job}` or `dub reject {job} --why TEXT`")
    if report.delivered:
        line = f"delivered {', '.join(report.delivered)}; {line}"
    failed = report.failures()
    return f"{line}; failed {failed}" if failed else line


def reviewer() -> str:
    """Who decides: DUB_REVIEWER, else the account running `dub`."""
    try:
        return os.environ.get("DUB_REVIEWER") or getpass.getuser()
    except (KeyError, OSError):  # no name for this uid (a container)
        return f"uid {os.getuid()}"


def approved_script(job_id: int, name: str, lang: str, lines: list[dict]) -> Path:
    """Write the approved lines where the continued job reads them: an approved
    translation NAME.<lang>.srt under DUB_HOME/reviews/job-N/."""
    folder = config.home() / REVIEWS_DIR / f"job-{job_id}"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.{languages.normalize(lang)}.srt"
    path.write_text(to_review_srt(lines), encoding="utf-8")
    return path
