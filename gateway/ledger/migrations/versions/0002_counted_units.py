"""Version 2: ``counted_units``, each machine's units counted, written with its counter state.

A ledger of version 1 never counted them apart, so each machine that has a counter state
starts from what the ledger accounts for: confirmed yield and scrap (confirmations of a
person, machine ``(manual)``, are not counted), pending units, units held by open
anomalies and written off by rejected ones. From here on the figure grows with every
counter change and ``gateway report`` checks the others against it.

Revision ID: 0002
Revises: 0001
"""

from decimal import Decimal

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "counted_units",
        sa.Column("machine", sa.String(64), primary_key=True),
        sa.Column("units", sa.BigInteger, nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )
    conn = op.get_bind()
    units: dict[str, Decimal] = {m: Decimal(0) for (m,) in conn.execute(
        sa.text("SELECT DISTINCT machine FROM counter_states"))}
    queries = ["SELECT machine, yield_qty, scrap_qty FROM confirmations",
               "SELECT machine, yield_qty, scrap_qty FROM pending_units",
               "SELECT machine, units_held, 0 FROM anomalies WHERE status IN ('open', 'rejected')"]
    for query in queries:
        for machine, a, b in conn.execute(sa.text(query)):
            if machine in units:  # counted by a PLC
                units[machine] += Decimal(str(a)) + Decimal(str(b))
    now = conn.execute(sa.text("SELECT CURRENT_TIMESTAMP")).scalar()
    if units:
        conn.execute(sa.text("INSERT INTO counted_units (machine, units, updated_at) VALUES (:m, :u, :t)"),
                     [{"m": m, "u": int(u), "t": now} for m, u in units.items()])
    op.execute("UPDATE schema_version SET version = 2")


def downgrade() -> None:
    raise NotImplementedError("the ledger is upgraded only; restore a backup to go back")
