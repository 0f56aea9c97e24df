"""Jobs point at their Prefect flow run and keep their own input path; more honest states.

- jobs: input_path (the path this job was given; a source's path is where it was seen
  last), flow_run_id and deployment (what triggered it), heartbeat_at (a running job's
  process says it is alive; a shared PostgreSQL cannot see other hosts' processes),
  source_id nullable (a job refused up front may have no readable source).
- job statuses: + interrupted, cancelled, crashed, rejected.
- stage runs: + interrupted status; licence of the model that made the output.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-29
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

# Frozen copies of the values in tables.py (then models.py) at this revision.
OLD_JOB_STATUSES = ("running", "done", "partial", "failed")
OLD_STAGE_STATUSES = ("running", "done", "cached", "skipped", "failed")
JOB_STATUSES = ("running", "done", "partial", "failed", "interrupted", "cancelled", "crashed", "rejected")
STAGE_STATUSES = ("running", "done", "cached", "skipped", "failed", "interrupted")
PATH_LENGTH = 4096


def one_of(column: str, values: tuple[str, ...]) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.drop_constraint("ck_jobs_status", type_="check")
        batch.create_check_constraint("ck_jobs_status", one_of("status", JOB_STATUSES))
        batch.alter_column("source_id", existing_type=sa.Integer, nullable=True)
        batch.add_column(sa.Column("input_path", sa.String(PATH_LENGTH), nullable=True))
        batch.add_column(sa.Column("flow_run_id", sa.String(64), nullable=True))
        batch.add_column(sa.Column("deployment", sa.String(256), nullable=True))
        batch.add_column(sa.Column("heartbeat_at", sa.DateTime(timezone=True), nullable=True))
        batch.create_index("ix_jobs_flow_run_id", ["flow_run_id"])
    with op.batch_alter_table("stage_runs") as batch:
        batch.drop_constraint("ck_stage_runs_status", type_="check")
        batch.create_check_constraint("ck_stage_runs_status", one_of("status", STAGE_STATUSES))
        batch.add_column(sa.Column("licence", sa.String(128), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("stage_runs") as batch:
        batch.drop_column("licence")
        batch.drop_constraint("ck_stage_runs_status", type_="check")
        batch.create_check_constraint("ck_stage_runs_status", one_of("status", OLD_STAGE_STATUSES))
    with op.batch_alter_table("jobs") as batch:
        batch.drop_index("ix_jobs_flow_run_id")
        batch.drop_column("heartbeat_at")
        batch.drop_column("deployment")
        batch.drop_column("flow_run_id")
        batch.drop_column("input_path")
        batch.alter_column("source_id", existing_type=sa.Integer, nullable=False)
        batch.drop_constraint("ck_jobs_status", type_="check")
        batch.create_check_constraint("ck_jobs_status", one_of("status", OLD_JOB_STATUSES))
