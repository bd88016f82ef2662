"""Version 6: ``audit_log``, the append-only trail of every manual action.

Who (the OS user of a command, the token's name of an API call), from where, when, why,
and the ids of what the action posted. The table starts empty; the database refuses
UPDATE and DELETE on it (triggers, as ``schema.AUDIT_APPEND_ONLY`` creates them for a
fresh ledger).

Revision ID: 0006
Revises: 0005
"""

import sqlalchemy as sa
from alembic import op

from gateway.ledger.schema import AUDIT_APPEND_ONLY, UtcDateTime

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "audit_log",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("at", UtcDateTime, nullable=False),
        sa.Column("actor", sa.String(128), nullable=False),
        sa.Column("actor_kind", sa.String(8), nullable=False),
        sa.Column("host", sa.String(255), nullable=False),
        sa.Column("via", sa.Text, nullable=False),
        sa.Column("action", sa.String(32), nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("order_no", sa.String(64)),
        sa.Column("subject", sa.String(128), nullable=False),
        sa.Column("postings", sa.Text, nullable=False),
        sa.Column("detail", sa.Text, nullable=False),
    )
    for column in ("at", "actor", "order_no"):
        op.create_index(f"ix_audit_log_{column}", "audit_log", [column])
    for statement in AUDIT_APPEND_ONLY.get(op.get_bind().dialect.name, []):
        op.execute(statement)
    op.execute("UPDATE schema_version SET version = 6")


def downgrade() -> None:
    raise NotImplementedError("the ledger is upgraded only; restore a backup to go back")
