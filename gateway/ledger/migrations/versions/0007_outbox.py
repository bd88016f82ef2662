"""Version 7: ``outbox`` and ``outbox_routes``, the transactional outbox of the outputs.

Both start empty: documents posted before the upgrade are not delivered (the outputs
begin with what is posted after it).

Revision ID: 0007
Revises: 0006
"""

import sqlalchemy as sa
from alembic import op

from gateway.ledger.schema import UtcDateTime

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "outbox",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("key", sa.String(200), nullable=False, unique=True),
        sa.Column("target", sa.String(64), nullable=False),
        sa.Column("what", sa.String(16), nullable=False),
        sa.Column("document", sa.String(96), nullable=False),
        sa.Column("order_no", sa.String(64)),
        sa.Column("machine", sa.String(64)),
        sa.Column("payload", sa.Text, nullable=False),
        sa.Column("status", sa.String(12), nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("created_at", UtcDateTime, nullable=False),
        sa.Column("next_at", UtcDateTime, nullable=False),
        sa.Column("updated_at", UtcDateTime, nullable=False),
        sa.Column("delivered_at", UtcDateTime),
        sa.Column("last_error", sa.Text, nullable=False),
    )
    op.create_index("ix_outbox_open", "outbox", ["target", "status", "id"])
    op.create_table(
        "outbox_routes",
        sa.Column("target", sa.String(64), primary_key=True),
        sa.Column("machine", sa.String(64), primary_key=True),
    )
    op.execute("UPDATE schema_version SET version = 7")


def downgrade() -> None:
    raise NotImplementedError("the ledger is upgraded only; restore a backup to go back")
