"""A person's review of a job's language before it is voiced, the job state that waits
for it, and the QA report's timeline picture among a job's outputs.

- reviews: one row per job x language x kind (script: the lines offered before they are
  voiced; final: the delivered files and their QA flags), then approved (with the changes
  made) or rejected (with why), by whom and when.
- job statuses: + 'awaiting review'.
- output kinds: + 'timeline' (NAME.<lang>.timeline.png).
- delivery statuses: + 'awaiting review' (a catalog item's language whose job waits),
  'rejected' (a person rejected it: not redone until its recipe changes).

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-05
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

# Frozen copies of the values in tables.py at this revision.
OLD_JOB_STATUSES = ("running", "done", "partial", "failed", "interrupted", "cancelled", "crashed", "rejected")
JOB_STATUSES = (*OLD_JOB_STATUSES, "awaiting review")
OLD_OUTPUT_KINDS = ("video", "audio", "srt", "vtt", "multitrack", "report")
OUTPUT_KINDS = (*OLD_OUTPUT_KINDS, "timeline")
OLD_DELIVERY_STATUSES = ("queued", "running", "done", "failed")
DELIVERY_STATUSES = (*OLD_DELIVERY_STATUSES, "awaiting review", "rejected")
REVIEW_KINDS = ("script", "final")
REVIEW_STATUSES = ("awaiting", "approved", "rejected")
JSON = sa.JSON().with_variant(JSONB(), "postgresql")


def one_of(column: str, values: tuple[str, ...]) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.drop_constraint("ck_jobs_status", type_="check")
        batch.create_check_constraint("ck_jobs_status", one_of("status", JOB_STATUSES))
    with op.batch_alter_table("outputs") as batch:
        batch.drop_constraint("ck_outputs_kind", type_="check")
        batch.create_check_constraint("ck_outputs_kind", one_of("kind", OUTPUT_KINDS))
    with op.batch_alter_table("deliveries") as batch:
        batch.drop_constraint("ck_deliveries_status", type_="check")
        batch.create_check_constraint("ck_deliveries_status", one_of("status", DELIVERY_STATUSES))
    op.create_table(
        "reviews",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("job_id", sa.Integer, sa.ForeignKey("jobs.id"), nullable=False),
        sa.Column("lang", sa.String(32), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("lines", JSON, nullable=False),
        sa.Column("approved", JSON, nullable=True),
        sa.Column("changes", JSON, nullable=True),
        sa.Column("detail", JSON, nullable=True),
        sa.Column("decided_by", sa.String(256), nullable=True),
        sa.Column("reason", sa.Text, nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("decided_at", sa.DateTime(timezone=True), nullable=True),
        sa.UniqueConstraint("job_id", "lang", "kind", name="uq_reviews_job_lang_kind"),
        sa.CheckConstraint(one_of("kind", REVIEW_KINDS), name="ck_reviews_kind"),
        sa.CheckConstraint(one_of("status", REVIEW_STATUSES), name="ck_reviews_status"),
    )
    op.create_index("ix_reviews_job_id", "reviews", ["job_id"])
    op.create_index("ix_reviews_status", "reviews", ["status"])


def downgrade() -> None:
    op.drop_index("ix_reviews_status", "reviews")
    op.drop_index("ix_reviews_job_id", "reviews")
    op.drop_table("reviews")
    with op.batch_alter_table("outputs") as batch:
        batch.drop_constraint("ck_outputs_kind", type_="check")
        batch.create_check_constraint("ck_outputs_kind", one_of("kind", OLD_OUTPUT_KINDS))
    with op.batch_alter_table("deliveries") as batch:
        batch.drop_constraint("ck_deliveries_status", type_="check")
        batch.create_check_constraint("ck_deliveries_status", one_of("status", OLD_DELIVERY_STATUSES))
    with op.batch_alter_table("jobs") as batch:
        batch.drop_constraint("ck_jobs_status", type_="check")
        batch.create_check_constraint("ck_jobs_status", one_of("status", OLD_JOB_STATUSES))
