"""Script review inside a deployment run: the run suspends with a form per language (a
Prefect `RunInput`: each line's slot, speaker, source, translation and estimated speed,
editable; approve or reject) and holds no worker while it waits. Resumed with the form's
answer, the run starts again from the top (every finished stage comes from the cache),
finds the answer to each language's suspend, records it, and goes on.

The same answer comes from `dub approve|reject JOB` for such a job: it resumes the run
with the input the form would send.
"""

from __future__ import annotations

import os

from prefect.input import RunInput
from pydantic import BaseModel, Field

from polydub import review
from polydub.errors import InputError
from polydub.report import AWAITING_REVIEW
from polydub.storage import reviews

REVIEW_TIMEOUT_ENV = "DUB_REVIEW_TIMEOUT"  # seconds a run waits for a person (default: a week)
DEFAULT_REVIEW_TIMEOUT_S = 7 * 24 * 3600
ATTEMPTS = 5  # answers the form may send that do not keep the script's lines, before the language fails
FORM_REVIEWER = "the Prefect form"  # who decided, when the form does not say


class ScriptLine(BaseModel):
    """One line as the form shows it: edit `text` only."""

    start: float = Field(description="Start in the source, s (not editable)")
    end: float = Field(description="End of its slot, s (not editable)")
    speaker: str | None = Field(None, description="Who says it (not editable)")
    source: str = Field("", description="The source line")
    text: str = Field(description="The translation that will be voiced: edit it here")
    speed: float = Field(1.0, description="Speed the slot will likely ask of the voice (estimated)")


class ScriptReview(RunInput):
    """Approve the translated lines (with your edits) or reject the language."""

    approve: bool = Field(True, description="Approve these lines, as edited below; untick to reject the language")
    reason: str = Field("", description="Why, when rejecting")
    reviewer: str = Field("", description="Your name, recorded with the decision")
    lines: list[ScriptLine] = Field(default_factory=list)


class ResultReview(RunInput):
    """Approve the delivered language (its files and QA report) or reject it."""

    approve: bool = Field(True, description="Approve this language's delivery; untick to reject it (its files "
                                            "are withdrawn)")
    reason: str = Field("", description="Why, when rejecting")
    reviewer: str = Field("", description="Your name, recorded with the decision")


def review_timeout() -> int:
    """Seconds a run waits for a decision before Prefect fails it (the language then stays
    awaiting review in the catalog): DUB_REVIEW_TIMEOUT, default a week."""
    text = os.environ.get(REVIEW_TIMEOUT_ENV, "").strip()
    try:
        return int(text) if text else DEFAULT_REVIEW_TIMEOUT_S
    except ValueError:
        raise InputError(f"{REVIEW_TIMEOUT_ENV}: a number of seconds, not {text[:40]!r}") from None


def pause_key(lang: str, attempt: int = 0) -> str:
    """The suspend of a language's script review (and of each answer asked again)."""
    return f"{review.REVIEW_KEYS[0]}{lang}" + (f"-{attempt + 1}" if attempt else "")


def decide_in_form(cat, job_id: int, lang: str, logger) -> None:
    """Wait (suspended) for `lang`'s decision in the run's form unless the catalog has it;
    record it. Raises Prefect's Pause while the run waits."""
    [record] = [r for r in reviews.of_job(cat, job_id) if r.lang == lang and r.kind == reviews.SCRIPT]
    for attempt in range(ATTEMPTS):
        if record.status != reviews.AWAITING:
            return
        form = ScriptReview.with_initial_data(
            description=_description(job_id, lang, record.lines, attempt),
            lines=[ScriptLine(**line) for line in record.lines])
        answer = _suspended(cat, job_id, form, pause_key(lang, attempt))
        by = answer.reviewer.strip() or FORM_REVIEWER
        if not answer.approve:
            reviews.decide(cat, record.id, reviews.REJECTED, by, reason=answer.reason.strip() or "rejected")
            return
        try:
            approved, changes = review.check_edits([line.model_dump() for line in answer.lines], record.lines)
        except InputError as exc:  # asked again, saying why
            logger.error("review %s: %s", lang, exc)
            continue
        reviews.decide(cat, record.id, reviews.APPROVED, by, approved=approved, changes=changes)
        return
    reviews.decide(cat, record.id, reviews.REJECTED, FORM_REVIEWER,
                   reason=f"{ATTEMPTS} answers changed the script's lines, not only their text")


def decide_result_in_form(cat, job_id: int, lang: str, logger) -> None:
    """Wait (suspended) for the decision on `lang`'s delivered result in the run's form
    unless the catalog has it; record it. Raises Prefect's Pause while the run waits."""
    [record] = [r for r in reviews.of_job(cat, job_id) if r.lang == lang and r.kind == reviews.FINAL]
    if record.status != reviews.AWAITING:
        return
    detail = record.detail or {}
    files = "\n".join(f"- {kind}: `{path}`" for kind, path in (detail.get("outputs") or {}).items())
    flags = "\n".join(f"- {flag}" for flag in detail.get("qa_flags") or []) or "- none"
    timeline = f"\n\nTimeline: `{detail['timeline']}`" if detail.get("timeline") else ""
    form = ResultReview.with_initial_data(
        description=f"# Approve the {lang} dub of job {job_id}\n\nFiles:\n{files}\n\nQA flags:\n{flags}{timeline}")
    answer = _suspended(cat, job_id, form, f"{review.REVIEW_KEYS[1]}{lang}")
    by = answer.reviewer.strip() or FORM_REVIEWER
    if answer.approve:
        reviews.decide(cat, record.id, reviews.APPROVED, by)
    else:
        reviews.decide(cat, record.id, reviews.REJECTED, by, reason=answer.reason.strip() or "rejected")
    logger.info("review %s: result %s by %s", lang, "approved" if answer.approve else "rejected", by)


def _suspended(cat, job_id: int, form: type[RunInput], key: str) -> RunInput:
    """The answer to `form`: the run suspends (Prefect's Pause) until it is given, or has it
    already (a run started again after its resume). The job reads 'awaiting review' before
    the run shows Suspended, so that no one sees a suspended run whose job is at work."""
    from prefect.flow_runs import suspend_flow_run

    cat.finish_job(job_id, AWAITING_REVIEW)
    answer = suspend_flow_run(wait_for_input=form, timeout=review_timeout(), key=key)
    cat.resume_job(job_id)  # answered: at work again
    return answer


def _description(job_id: int, lang: str, lines: list[dict], attempt: int) -> str:
    """The form's heading: what to do, and the lines as a table to read."""
    rows = "\n".join(f"| {n} | {ln['start']:.2f}-{ln['end']:.2f} | {ln.get('speaker') or ''} | "
                     f"{_cell(ln['source'])} | {_cell(ln['text'])} | {ln['speed']:.2f}x |"
                     for n, ln in enumerate(lines, 1))
    again = ("\n\n**The last answer changed a line's time, speaker or count, or left a text empty: "
             "edit the texts only.**" if attempt else "")
    return (f"# Review the {lang} script of job {job_id}\n\nEdit the texts only, then approve; or untick "
            f"*approve* and say why to reject the language.{again}\n\n"
            "| # | time | speaker | source | translation | speed |\n|---|---|---|---|---|---|\n" + rows)


def _cell(text: str) -> str:
    return str(text).replace("|", "/").replace("\n", " ")
