"""Catalog tables: the source, the job, each output and each stage run.

The schema itself is created by the Alembic migrations in `migrations/versions`; these
models mirror it for queries. Types are portable (SQLite and PostgreSQL): JSON columns
(JSONB on PostgreSQL) and timezone-aware UTC timestamps.
"""

from __future__ import annotations

from datetime import datetime, timezone

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    CheckConstraint,
    DateTime,
    Float,
    ForeignKey,
    Integer,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

JOB_STATUSES = ("running", "done", "partial", "failed", "interrupted", "cancelled", "crashed", "rejected",
                "awaiting review")
STAGE_STATUSES = ("running", "done", "cached", "skipped", "failed", "interrupted")
OUTPUT_KINDS = ("video", "audio", "srt", "vtt", "multitrack", "report", "timeline")
DELIVERY_STATUSES = ("queued", "running", "done", "failed", "awaiting review", "rejected")
TM_ORIGINS = ("approved", "edited", "imported")
REVIEW_KINDS = ("script", "final")
REVIEW_STATUSES = ("awaiting", "approved", "rejected")

PATH_LENGTH = 4096
OWNER_LENGTH = 300  # "host#key:pid:start", enough for any hostname
KEY_LENGTH = 512  # a manifest's key (its resolved path) and an item id


def status_check(column: str, values: tuple[str, ...]) -> str:
    """SQL for a CHECK that `column` holds one of `values`."""
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


class UTCDateTime(TypeDecorator):
    """A timestamp stored in UTC and always read back timezone-aware.

    SQLite keeps no offset, so naive values read from it are UTC by construction.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value, dialect):
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("catalog timestamps must be timezone-aware")
        return value.astimezone(timezone.utc)

    def process_result_value(self, value, dialect):
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=timezone.utc)
        return value.astimezone(timezone.utc)


JSONType = JSON().with_variant(JSONB(), "postgresql")


class Base(DeclarativeBase):
    pass


class Source(Base):
    """A source video (or audio) file, identified by the sha256 of its bytes."""

    __tablename__ = "sources"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    path: Mapped[str] = mapped_column(String(PATH_LENGTH))
    content_hash: Mapped[str] = mapped_column(String(64), unique=True)
    duration: Mapped[float] = mapped_column(Float)  # seconds
    fps: Mapped[float | None] = mapped_column(Float, nullable=True)
    has_video: Mapped[bool] = mapped_column(Boolean)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    jobs: Mapped[list[Job]] = relationship(back_populates="source")


class Job(Base):
    """One `dub` run of a source into a list of languages."""

    __tablename__ = "jobs"
    __table_args__ = (CheckConstraint(status_check("status", JOB_STATUSES), name="ck_jobs_status"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    source_id: Mapped[int | None] = mapped_column(ForeignKey("sources.id"), index=True, nullable=True)
    input_path: Mapped[str | None] = mapped_column(String(PATH_LENGTH), nullable=True)  # as given to this job
    flow_run_id: Mapped[str | None] = mapped_column(String(64), nullable=True, index=True)
    deployment: Mapped[str | None] = mapped_column(String(256), nullable=True)
    heartbeat_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    langs: Mapped[list] = mapped_column(JSONType)
    params: Mapped[dict] = mapped_column(JSONType)
    out_dir: Mapped[str] = mapped_column(String(PATH_LENGTH))
    status: Mapped[str] = mapped_column(String(16), index=True)
    consent: Mapped[str | None] = mapped_column(Text, nullable=True)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    owner: Mapped[str | None] = mapped_column(String(OWNER_LENGTH), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)

    source: Mapped[Source] = relationship(back_populates="jobs")
    outputs: Mapped[list[Output]] = relationship(back_populates="job", order_by="Output.id")
    stage_runs: Mapped[list[StageRun]] = relationship(back_populates="job", order_by="StageRun.id")


class Output(Base):
    """A deliverable file of a job; `lang` is None for the multi-track file."""

    __tablename__ = "outputs"
    __table_args__ = (CheckConstraint(status_check("kind", OUTPUT_KINDS), name="ck_outputs_kind"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id"), index=True)
    lang: Mapped[str | None] = mapped_column(String(32), nullable=True)
    kind: Mapped[str] = mapped_column(String(16))
    path: Mapped[str] = mapped_column(String(PATH_LENGTH))
    duration: Mapped[float | None] = mapped_column(Float, nullable=True)  # seconds
    size: Mapped[int | None] = mapped_column(BigInteger, nullable=True)  # bytes, as delivered
    sha256: Mapped[str | None] = mapped_column(String(64), nullable=True)  # as delivered
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    job: Mapped[Job] = relationship(back_populates="outputs")


class StageRun(Base):
    """One run of a pipeline stage for a job; `lang` is None for per-video stages."""

    __tablename__ = "stage_runs"
    __table_args__ = (
        CheckConstraint(status_check("status", STAGE_STATUSES), name="ck_stage_runs_status"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id"), index=True)
    stage: Mapped[str] = mapped_column(String(64))
    lang: Mapped[str | None] = mapped_column(String(32), nullable=True)
    status: Mapped[str] = mapped_column(String(16), index=True)
    cache_key: Mapped[str | None] = mapped_column(String(128), nullable=True, index=True)
    backend: Mapped[str | None] = mapped_column(String(128), nullable=True)
    model_version: Mapped[str | None] = mapped_column(String(256), nullable=True)
    owner: Mapped[str | None] = mapped_column(String(OWNER_LENGTH), nullable=True)
    started_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    seconds: Mapped[float | None] = mapped_column(Float, nullable=True)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    detail: Mapped[dict | None] = mapped_column(JSONType, nullable=True)
    licence: Mapped[str | None] = mapped_column(String(128), nullable=True)

    job: Mapped[Job] = relationship(back_populates="stage_runs")


class Delivery(Base):
    """One item x language of a manifest: its state, who holds it, what it was made from.

    `manifest` is the manifest's key (its resolved path); `fingerprint` the sha256 of the
    `recipe` (source, scripts, glossary, options, model versions) the delivered file was
    made from; `owner` the runner that claimed it (queued / running), released when that
    runner finishes or is found dead (`heartbeat_at`)."""

    __tablename__ = "deliveries"
    __table_args__ = (
        UniqueConstraint("manifest", "item", "lang", name="uq_deliveries_item_lang"),
        CheckConstraint(status_check("status", DELIVERY_STATUSES), name="ck_deliveries_status"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    manifest: Mapped[str] = mapped_column(String(KEY_LENGTH))
    item: Mapped[str] = mapped_column(String(KEY_LENGTH))
    lang: Mapped[str] = mapped_column(String(32))
    status: Mapped[str] = mapped_column(String(16), index=True)
    fingerprint: Mapped[str | None] = mapped_column(String(64), nullable=True)
    recipe: Mapped[dict | None] = mapped_column(JSONType, nullable=True)
    job_id: Mapped[int | None] = mapped_column(ForeignKey("jobs.id"), nullable=True)
    path: Mapped[str | None] = mapped_column(String(PATH_LENGTH), nullable=True)
    duration: Mapped[float | None] = mapped_column(Float, nullable=True)
    sha256: Mapped[str | None] = mapped_column(String(64), nullable=True)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    owner: Mapped[str | None] = mapped_column(String(OWNER_LENGTH), nullable=True)
    heartbeat_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    delivered_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class Review(Base):
    """A person's review of one language of a job: its script before it is voiced (kind
    'script': the lines offered, then approved with `changes` against the offer) or its
    delivered result (kind 'final': `detail` holds the files and the QA flags shown), then
    approved or rejected (`reason`), by whom and when."""

    __tablename__ = "reviews"
    __table_args__ = (
        UniqueConstraint("job_id", "lang", "kind", name="uq_reviews_job_lang_kind"),
        CheckConstraint(status_check("kind", REVIEW_KINDS), name="ck_reviews_kind"),
        CheckConstraint(status_check("status", REVIEW_STATUSES), name="ck_reviews_status"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id"), index=True)
    lang: Mapped[str] = mapped_column(String(32))
    kind: Mapped[str] = mapped_column(String(16))
    status: Mapped[str] = mapped_column(String(16), index=True)
    lines: Mapped[list] = mapped_column(JSONType)  # [{start, end, speaker, source, text, speed}]
    approved: Mapped[list | None] = mapped_column(JSONType, nullable=True)  # the lines as approved
    changes: Mapped[list | None] = mapped_column(JSONType, nullable=True)  # [{line, before, after}]
    detail: Mapped[dict | None] = mapped_column(JSONType, nullable=True)  # final: {outputs, qa_flags, timeline}
    decided_by: Mapped[str | None] = mapped_column(String(256), nullable=True)
    reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    decided_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class TranslationMemoryEntry(Base):
    """An approved, edited or imported translation of one source line, per brand ('' for
    none) and language pair; `source_key` is the sha256 of the normalized source line."""

    __tablename__ = "translation_memory"
    __table_args__ = (
        UniqueConstraint("brand", "source_lang", "target_lang", "source_key", name="uq_translation_memory_line"),
        CheckConstraint(status_check("origin", TM_ORIGINS), name="ck_translation_memory_origin"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    brand: Mapped[str] = mapped_column(String(256))
    source_lang: Mapped[str] = mapped_column(String(32))
    target_lang: Mapped[str] = mapped_column(String(32))
    source_key: Mapped[str] = mapped_column(String(64))
    source_text: Mapped[str] = mapped_column(Text)
    target_text: Mapped[str] = mapped_column(Text)
    origin: Mapped[str] = mapped_column(String(16))
    note: Mapped[str | None] = mapped_column(Text, nullable=True)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class GlossaryTerm(Base):
    """A term forced (or kept verbatim, translation '') for one brand and target language."""

    __tablename__ = "glossary_terms"
    __table_args__ = (UniqueConstraint("brand", "lang", "term", name="uq_glossary_terms_term"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    brand: Mapped[str] = mapped_column(String(256))
    lang: Mapped[str] = mapped_column(String(32))
    term: Mapped[str] = mapped_column(String(256))
    translation: Mapped[str] = mapped_column(String(256))
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class FileDigest(Base):
    """The sha256 of a file as it was at (size, mtime_ns): rehash only what changed."""

    __tablename__ = "file_digests"

    path: Mapped[str] = mapped_column(String(PATH_LENGTH), primary_key=True)
    size: Mapped[int] = mapped_column(BigInteger)
    mtime_ns: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(String(64))


class ManifestDefaults(Base):
    """The languages and options (as given, unset ones left out) of the last catalog run
    of a manifest: what `dub status` judges staleness with when it is given none."""

    __tablename__ = "manifest_defaults"

    manifest: Mapped[str] = mapped_column(String(KEY_LENGTH), primary_key=True)
    langs: Mapped[list | None] = mapped_column(JSONType, nullable=True)
    options: Mapped[dict] = mapped_column(JSONType)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
