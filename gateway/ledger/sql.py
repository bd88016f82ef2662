"""Small SQL building blocks shared by everything that writes the ledger.

``upsert`` is the one portable insert-or-update and ``insert_absent`` the one portable
insert-if-missing; the statements ``gateway.ledger.tx.LedgerTx`` reads stock with are
built here once. Stock, order progress and carry change only through ``LedgerTx``
(movements, lots, the create-then-lock of rows that do not exist yet): nothing here
moves stock. Nothing here commits.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

from sqlalchemy import Connection, bindparam, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from gateway.ledger import schema

# Statements the writer runs for every confirmation, built once with bound parameters:
# building a SQLAlchemy expression costs more CPU than SQLite takes to run it.
STOCK_LOTS = (select(schema.stock.c.lot, schema.stock.c.qty)
               .where(schema.stock.c.material == bindparam("material"), schema.stock.c.location == bindparam("location"))
               .with_for_update())
LOTS_OF = select(schema.lots).where(schema.lots.c.material == bindparam("material"))
_STATEMENTS: dict[tuple, object] = {}


def upsert(conn: Connection, table, rows: list[dict], keys: list[str]) -> None:
    """Insert ``rows``, or set the stored row's other columns to theirs where ``keys`` exist."""
    if not rows:
        return
    stmt = _on_conflict(conn, table, tuple(keys), tuple(c for c in rows[0] if c not in keys))
    conn.execute(stmt, rows)


def insert_absent(conn: Connection, table, rows: list[dict], keys: list[str]) -> None:
    """Insert those of ``rows`` whose ``keys`` are not stored yet; leave the others as they are."""
    if rows:
        conn.execute(_on_conflict(conn, table, tuple(keys), ()), rows)


def _on_conflict(conn: Connection, table, keys: tuple[str, ...], update: tuple[str, ...]):
    """One statement per dialect, table and columns, built once (see STOCK_LOTS)."""
    cache_key = (conn.dialect.name, table.name, keys, update)
    stmt = _STATEMENTS.get(cache_key)
    if stmt is None:
        stmt = (pg_insert if conn.dialect.name == "postgresql" else sqlite_insert)(table)
        stmt = (stmt.on_conflict_do_update(index_elements=keys, set_={c: stmt.excluded[c] for c in update})
                if update else stmt.on_conflict_do_nothing(index_elements=keys))
        _STATEMENTS[cache_key] = stmt
    return stmt


def movement_row(confirmation_id: str | None, order_no: str | None, m, now: datetime,
                 value: Decimal | None) -> dict:
    return {"confirmation_id": confirmation_id, "order_no": order_no, "kind": m.kind.value, "material": m.material,
            "location": m.location, "lot": m.lot, "qty": m.qty, "uom": m.uom, "bom_item": m.bom_item,
            "posted_at": now, "value": value}


def issued_to_order(conn: Connection, order_no: str, item: str, material: str) -> list[tuple[tuple[str, str], Decimal]]:
    """What the order got of ``material`` on ``item``, per (location, lot), in posting order (+ issued).

    Reads committed and flushed movements: flush a ``LedgerTx`` that moved stock first.
    """
    gm = schema.goods_movements.c
    rows = conn.execute(select(gm.location, gm.lot, gm.qty).where(
        gm.order_no == order_no, gm.bom_item == item, gm.material == material,
        gm.kind.in_(["261", "262"])).order_by(gm.id))
    return [((r.location, r.lot), -r.qty) for r in rows]  # an issue is a negative movement
