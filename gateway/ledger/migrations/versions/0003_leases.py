"""Version 3: machine leases and the gateways that hold them (``gateway.ledger.leases``).

``machine_leases``: one row per machine, its owner (instance, host, pid), fencing token and
expiry; ``gateway_instances``: one row per instance name, for ``gateway status``. Both start
empty: the first gateway to run after the upgrade takes the leases.

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "gateway_instances",
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("host", sa.String(255), nullable=False),
        sa.Column("pid", sa.Integer, nullable=False),
        sa.Column("process", sa.String(32), nullable=False),
        sa.Column("standby", sa.Boolean, nullable=False),
        sa.Column("ttl_s", sa.Float, nullable=False),
        sa.Column("machines", sa.Integer, nullable=False),
        sa.Column("started_at", sa.Float, nullable=False),
        sa.Column("seen_at", sa.Float, nullable=False),
        sa.Column("last_commit_at", sa.Float),
        sa.Column("stopped_at", sa.Float),
    )
    op.create_table(
        "machine_leases",
        sa.Column("machine", sa.String(64), primary_key=True),
        sa.Column("owner", sa.String(64), nullable=False),
        sa.Column("host", sa.String(255), nullable=False),
        sa.Column("pid", sa.Integer, nullable=False),
        sa.Column("process", sa.String(32), nullable=False),
        sa.Column("scope", sa.String(96), nullable=False),
        sa.Column("token", sa.Integer, nullable=False),
        sa.Column("acquired_at", sa.Float, nullable=False),
        sa.Column("expires_at", sa.Float, nullable=False),
    )
    op.execute("UPDATE schema_version SET version = 3")


def downgrade() -> None:
    raise NotImplementedError("the ledger is upgraded only; restore a backup to go back")
