"""Version 10: values in money, the consumption basis per BOM item, self-reprocessing errors.

* ``materials``: ``standard_price`` (per unit of measure, 0 until master data sets one),
  ``currency`` (EUR) and ``auto_reprocess`` (on: a posting that adds stock reprocesses the
  material's open errors);
* ``order_components``: ``basis`` (``total``, as every order was planned so far) and
  ``basis_source``;
* ``goods_movements.value``: NULL on the rows already there (posted before there were
  prices; reports show them unvalued rather than inventing a price they did not have);
* ``error_queue.resolved_by``: NULL on the rows already there;
* ``anomalies.order_no``: the order an ``unknown_order`` anomaly's units are pending under
  (NULL on the rows already there: such units are assigned once the gateway records the
  anomaly again).

Revision ID: 0010
Revises: 0009
"""

import sqlalchemy as sa
from alembic import op

from gateway.ledger.schema import Dec

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Plain ADD COLUMN (SQLite takes it with a constant default): no table is copied.
    op.add_column("materials", sa.Column("standard_price", Dec, nullable=False, server_default="0"))
    op.add_column("materials", sa.Column("currency", sa.String(3), nullable=False, server_default="EUR"))
    op.add_column("materials", sa.Column("auto_reprocess", sa.Boolean, nullable=False, server_default=sa.true()))
    op.add_column("order_components", sa.Column("basis", sa.String(8), nullable=False, server_default="total"))
    op.add_column("order_components", sa.Column("basis_source", sa.String(80), nullable=False,
                                                server_default="default"))
    op.add_column("goods_movements", sa.Column("value", Dec))
    op.add_column("error_queue", sa.Column("resolved_by", sa.String(64)))
    op.add_column("anomalies", sa.Column("order_no", sa.String(64)))
    op.execute("UPDATE schema_version SET version = 10")


def downgrade() -> None:
    raise NotImplementedError("the ledger is upgraded only; restore a backup to go back")
