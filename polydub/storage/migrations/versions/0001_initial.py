"""Initial catalog: sources, jobs, outputs, stage runs.

Revision ID: 0001
Revises:
Create Date: 2025-01-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

# Frozen copies of the values in tables.py (then models.py) at this revision: later edits there must come
# with a new migration, never change this one.
JOB_STATUSES = ("running", "done", "partial", "failed")
STAGE_STATUSES = ("running", "done", "cached", "skipped", "failed")
OUTPUT_KINDS = ("video", "audio", "srt", "vtt", "multitrack", "report")
PATH_LENGTH = 4096
OWNER_LENGTH = 300


def json_type():
    return sa.JSON().with_variant(JSONB(), "postgresql")


def timestamp():
    return sa.DateTime(timezone=True)


def one_of(column: str, values: tuple[str, ...]) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


def upgrade() -> None:
    op.create_table(
        "sources",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("path", sa.String(PATH_LENGTH), nullable=False),
        sa.Column("content_hash", sa.String(64), nullable=False),
        sa.Column("duration", sa.Float, nullable=False),
        sa.Column("fps", sa.Float, nullable=True),
        sa.Column("has_video", sa.Boolean, nullable=False),
        sa.Column("created_at", timestamp(), nullable=False),
        sa.UniqueConstraint("content_hash", name="uq_sources_content_hash"),
    )
    op.create_table(
        "jobs",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("source_id", sa.Integer, sa.ForeignKey("sources.id", name="fk_jobs_source_id"), nullable=False),
        sa.Column("langs", json_type(), nullable=False),
        sa.Column("params", json_type(), nullable=False),
        sa.Column("out_dir", sa.String(PATH_LENGTH), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("consent", sa.Text, nullable=True),
        sa.Column("error", sa.Text, nullable=True),
        sa.Column("owner", sa.String(OWNER_LENGTH), nullable=True),
        sa.Column("created_at", timestamp(), nullable=False),
        sa.Column("finished_at", timestamp(), nullable=True),
        sa.CheckConstraint(one_of("status", JOB_STATUSES), name="ck_jobs_status"),
    )
    op.create_index("ix_jobs_source_id", "jobs", ["source_id"])
    op.create_index("ix_jobs_status", "jobs", ["status"])
    op.create_index("ix_jobs_created_at", "jobs", ["created_at"])
    op.create_table(
        "outputs",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("job_id", sa.Integer, sa.ForeignKey("jobs.id", name="fk_outputs_job_id"), nullable=False),
        sa.Column("lang", sa.String(32), nullable=True),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("path", sa.String(PATH_LENGTH), nullable=False),
        sa.Column("duration", sa.Float, nullable=True),
        sa.Column("created_at", timestamp(), nullable=False),
        sa.CheckConstraint(one_of("kind", OUTPUT_KINDS), name="ck_outputs_kind"),
    )
    op.create_index("ix_outputs_job_id", "outputs", ["job_id"])
    op.create_table(
        "stage_runs",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("job_id", sa.Integer, sa.ForeignKey("jobs.id", name="fk_stage_runs_job_id"), nullable=False),
        sa.Column("stage", sa.String(64), nullable=False),
        sa.Column("lang", sa.String(32), nullable=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("cache_key", sa.String(128), nullable=True),
        sa.Column("backend", sa.String(128), nullable=True),
        sa.Column("model_version", sa.String(256), nullable=True),
        sa.Column("owner", sa.String(OWNER_LENGTH), nullable=True),
        sa.Column("started_at", timestamp(), nullable=False),
        sa.Column("finished_at", timestamp(), nullable=True),
        sa.Column("seconds", sa.Float, nullable=True),
        sa.Column("error", sa.Text, nullable=True),
        sa.Column("detail", json_type(), nullable=True),
        sa.CheckConstraint(one_of("status", STAGE_STATUSES), name="ck_stage_runs_status"),
    )
    op.create_index("ix_stage_runs_job_id", "stage_runs", ["job_id"])
    op.create_index("ix_stage_runs_status", "stage_runs", ["status"])
    op.create_index("ix_stage_runs_cache_key", "stage_runs", ["cache_key"])


def downgrade() -> None:
    op.drop_table("stage_runs")
    op.drop_table("outputs")
    op.drop_table("jobs")
    op.drop_table("sources")
