"""Reviews: a person's decision on one language of a job, before it is voiced (its
script) or before it ships (its delivered result).

A job under review offers each language's translated lines, or its delivered files and
QA flags (`offer`), and waits; `decide` records the approval (the lines as approved, what
changed, who, when) or the rejection (why). A decided review is never decided again.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select

from polydub.errors import InputError
from polydub.redact import redact
from polydub.storage.catalog import Catalog, iso
from polydub.storage.tables import Job, Review, utcnow

AWAITING, APPROVED, REJECTED = "awaiting", "approved", "rejected"
SCRIPT, FINAL = "script", "final"  # before voicing; of the delivered result


@dataclass
class ReviewRecord:
    """One language's review as the catalog holds it."""

    id: int
    job: int
    lang: str
    kind: str
    status: str  # awaiting | approved | rejected
    lines: list[dict]  # a script's offered: start, end, speaker, source, text, speed ([] for a final review)
    approved: list[dict] | None
    changes: list[dict] | None  # [{line (1-based), before, after}]
    decided_by: str | None
    reason: str | None
    created_at: datetime | None
    decided_at: datetime | None
    detail: dict | None = None  # a final review's files and QA flags

    def to_dict(self) -> dict:
        return {"lang": self.lang, "kind": self.kind, "status": self.status, "lines": len(self.lines),
                "changes": self.changes or [], "decided_by": self.decided_by, "reason": self.reason,
                "offered_at": iso(self.created_at), "decided_at": iso(self.decided_at),
                **({"detail": self.detail} if self.detail else {})}


def _record(row: Review) -> ReviewRecord:
    return ReviewRecord(row.id, row.job_id, row.lang, row.kind, row.status, list(row.lines),
                        None if row.approved is None else list(row.approved),
                        None if row.changes is None else list(row.changes), row.decided_by, row.reason,
                        row.created_at, row.decided_at, dict(row.detail) if row.detail else None)


def offer(cat: Catalog, job_id: int, lang: str, lines: list[dict], kind: str = SCRIPT,
          detail: dict | None = None) -> None:
    """Offer `lang` of the job for review: its script's lines, or (kind 'final') its
    delivered files and QA flags in `detail`; again, when a rerun of the job offers it anew
    before anyone decided."""
    with cat.writing() as session:
        row = session.scalars(select(Review).where(Review.job_id == job_id, Review.lang == lang,
                                                   Review.kind == kind)).first()
        if row is None:
            session.add(Review(job_id=job_id, lang=lang, kind=kind, status=AWAITING, lines=lines, detail=detail))
        elif row.status == AWAITING:
            row.lines, row.detail, row.created_at = lines, detail, utcnow()


def of_job(cat: Catalog, job_id: int) -> list[ReviewRecord]:
    """Every review of a job, by language."""
    with cat.reading() as session:
        rows = session.scalars(select(Review).where(Review.job_id == job_id).order_by(Review.id))
        return [_record(row) for row in rows]


def awaiting(cat: Catalog, job_id: int, lang: str | None = None) -> list[ReviewRecord]:
    """The job's reviews still waiting for a decision (of `lang` only, when given); an
    InputError when there is no such job, it waits for none, or not for `lang`."""
    with cat.reading() as session:
        if session.get(Job, job_id) is None:
            raise InputError(f"no job {job_id} in the catalog")
    reviews = of_job(cat, job_id)
    waiting = [r for r in reviews if r.status == AWAITING]
    if not waiting:
        decided = ", ".join(f"{r.lang} {r.status}" for r in reviews)
        raise InputError(f"job {job_id} is not awaiting review" + (f" ({decided})" if decided else ""))
    if lang is not None:
        chosen = [r for r in waiting if r.lang == lang]
        if not chosen:
            raise InputError(f"job {job_id} has no {lang} script awaiting review (awaiting: "
                             f"{', '.join(r.lang for r in waiting)})")
        return chosen
    return waiting


def decide(cat: Catalog, review_id: int, status: str, by: str, *, approved: list[dict] | None = None,
           changes: list[dict] | None = None, reason: str | None = None) -> None:
    """Approve (with the lines as approved and what changed) or reject (with why) a review
    that is still awaiting; an InputError when someone decided it meanwhile."""
    if status not in (APPROVED, REJECTED):
        raise ValueError(f"a review is approved or rejected, not {status!r}")
    with cat.writing() as session:
        row = session.get(Review, review_id)
        if row is None or row.status != AWAITING:
            raise InputError(f"the {row.lang if row else ''} review was decided meanwhile".replace("  ", " "))
        row.status, row.decided_by, row.decided_at = status, by, utcnow()
        row.approved, row.changes = approved, changes
        row.reason = redact(reason) if reason else None
