"""Localizing a catalog of ads: deliveries per item and language, translation memory,
glossaries, and a digest cache for staleness checks.

- deliveries: one row per (manifest, item, language): its state (queued, running, done,
  failed), who holds it (a runner's claim, released when the runner dies), the recipe
  fingerprint it was made from (what makes it stale) and the delivered file.
- translation_memory: approved, edited and imported translations per (brand, language
  pair, source line), reused across items before any provider is called.
- glossary_terms: per brand and target language, applied to every provider.
- file_digests: sha256 of a file by (path, size, mtime), so staleness checks of a large
  catalog hash only what changed.
- manifest_defaults: the languages and options the last catalog run of a manifest was
  given (command line or form), so `dub status` judges staleness as that run did.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-29
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

# Frozen copies of the values in tables.py (then models.py) at this revision.
DELIVERY_STATUSES = ("queued", "running", "done", "failed")
TM_ORIGINS = ("approved", "edited", "imported")
PATH_LENGTH = 4096
KEY_LENGTH = 512
OWNER_LENGTH = 300
JSON = sa.JSON().with_variant(JSONB(), "postgresql")


def one_of(column: str, values: tuple[str, ...]) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


def upgrade() -> None:
    op.create_table(
        "deliveries",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("manifest", sa.String(KEY_LENGTH), nullable=False),
        sa.Column("item", sa.String(KEY_LENGTH), nullable=False),
        sa.Column("lang", sa.String(32), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("fingerprint", sa.String(64), nullable=True),
        sa.Column("recipe", JSON, nullable=True),
        sa.Column("job_id", sa.Integer, sa.ForeignKey("jobs.id"), nullable=True),
        sa.Column("path", sa.String(PATH_LENGTH), nullable=True),
        sa.Column("duration", sa.Float, nullable=True),
        sa.Column("sha256", sa.String(64), nullable=True),
        sa.Column("error", sa.Text, nullable=True),
        sa.Column("owner", sa.String(OWNER_LENGTH), nullable=True),
        sa.Column("heartbeat_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("delivered_at", sa.DateTime(timezone=True), nullable=True),
        sa.UniqueConstraint("manifest", "item", "lang", name="uq_deliveries_item_lang"),
        sa.CheckConstraint(one_of("status", DELIVERY_STATUSES), name="ck_deliveries_status"),
    )
    op.create_index("ix_deliveries_status", "deliveries", ["status"])
    op.create_table(
        "translation_memory",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("brand", sa.String(256), nullable=False),  # '' when no brand
        sa.Column("source_lang", sa.String(32), nullable=False),
        sa.Column("target_lang", sa.String(32), nullable=False),
        sa.Column("source_key", sa.String(64), nullable=False),  # sha256 of the normalized source line
        sa.Column("source_text", sa.Text, nullable=False),
        sa.Column("target_text", sa.Text, nullable=False),
        sa.Column("origin", sa.String(16), nullable=False),
        sa.Column("note", sa.Text, nullable=True),  # where it came from: a file, an item
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("brand", "source_lang", "target_lang", "source_key", name="uq_translation_memory_line"),
        sa.CheckConstraint(one_of("origin", TM_ORIGINS), name="ck_translation_memory_origin"),
    )
    op.create_table(
        "glossary_terms",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("brand", sa.String(256), nullable=False),
        sa.Column("lang", sa.String(32), nullable=False),
        sa.Column("term", sa.String(256), nullable=False),
        sa.Column("translation", sa.String(256), nullable=False),  # '' keeps the term verbatim
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("brand", "lang", "term", name="uq_glossary_terms_term"),
    )
    op.create_table(
        "manifest_defaults",
        sa.Column("manifest", sa.String(KEY_LENGTH), primary_key=True),
        sa.Column("langs", JSON, nullable=True),
        sa.Column("options", JSON, nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "file_digests",
        sa.Column("path", sa.String(PATH_LENGTH), primary_key=True),
        sa.Column("size", sa.BigInteger, nullable=False),
        sa.Column("mtime_ns", sa.BigInteger, nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("file_digests")
    op.drop_table("manifest_defaults")
    op.drop_table("glossary_terms")
    op.drop_table("translation_memory")
    op.drop_index("ix_deliveries_status", table_name="deliveries")
    op.drop_table("deliveries")
