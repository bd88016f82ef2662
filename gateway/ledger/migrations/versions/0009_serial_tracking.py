"""Version 9: serial-tracked materials (``materials.tracking``, ``materials.serial_pattern``) and
the serials read from a machine's serial tag (``confirmations.serials``, ``pending_units.serials``,
one a line; empty for every existing row), and the lot/serial selection a BOM item may set
(``order_components.selection``, empty: the material's).

``tracking`` is none, lot or serial; existing materials get lot or none from their
``lot_tracked`` flag. A serial is held as a lot of one unit, so stock, movements, lots and
genealogy need no new tables. ``serial_pattern`` numbers produced units without a serial
tag ("{order}-{seq:06}"); empty for every existing material.

Revision ID: 0009
Revises: 0008
"""

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("materials") as batch:
        batch.add_column(sa.Column("tracking", sa.String(6), nullable=False, server_default="none"))
        batch.add_column(sa.Column("serial_pattern", sa.String(64), nullable=False, server_default=""))
    with op.batch_alter_table("order_components") as batch:
        batch.add_column(sa.Column("selection", sa.String(4), nullable=False, server_default=""))
    for table in ("confirmations", "pending_units"):
        with op.batch_alter_table(table) as batch:
            batch.add_column(sa.Column("serials", sa.Text, nullable=False, server_default=""))
    materials = sa.table("materials", sa.column("lot_tracked", sa.Boolean), sa.column("tracking", sa.String))
    op.execute(materials.update().where(materials.c.lot_tracked == sa.true()).values(tracking="lot"))
    op.execute("UPDATE schema_version SET version = 9")


def downgrade() -> None:
    raise NotImplementedError("the ledger is upgraded only; restore a backup to go back")
