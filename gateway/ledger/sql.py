"""Small SQL building blocks shared by everything that writes the ledger.

``upsert`` is the one portable insert-or-update; ``write_movements`` is the one way
stock moves: a goods movement row and the balance change, in the caller's transaction
(``gateway.ledger.tx.LedgerTx.move`` does the same with its writes buffered, from the
same row and the same locked reads). Nothing here commits.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

from sqlalchemy import Connection, bindparam, insert, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from gateway.domain.records import LotStock, StockView
from gateway.ledger import schema as t

# Statements the writer runs for every confirmation, built once with bound parameters:
# building a SQLAlchemy expression costs more CPU than SQLite takes to run it.
STOCK_LOTS = (select(t.stock.c.lot, t.stock.c.qty)
               .where(t.stock.c.material == bindparam("material"), t.stock.c.location == bindparam("location"))
               .with_for_update())
LOTS_OF = select(t.lots).where(t.lots.c.material == bindparam("material"))
_STOCK_QTY = (select(t.stock.c.qty)
              .where(t.stock.c.material == bindparam("material"), t.stock.c.location == bindparam("location"),
                     t.stock.c.lot == bindparam("lot"))
              .with_for_update())
_LOT_EXISTS = select(t.lots.c.lot).where(t.lots.c.material == bindparam("material"), t.lots.c.lot == bindparam("lot"))
_STATEMENTS: dict[tuple, object] = {}


def read_stock(conn: Connection, keys: set[tuple[str, str]]) -> StockView:
    """Stock lot by lot for (material, location) pairs, locked until the transaction ends."""
    view: dict[tuple[str, str], tuple[LotStock, ...]] = {}
    for material, location in keys:
        rows = conn.execute(STOCK_LOTS, {"material": material, "location": location}).all()
        info = {r.lot: r for r in conn.execute(LOTS_OF, {"material": material})}
        view[(material, location)] = tuple(
            LotStock(r.lot, r.qty, info[r.lot].received_at if r.lot in info else None,
                     info[r.lot].expires_on if r.lot in info else None)
            for r in rows
        )
    return StockView(view)


def move_stock(conn: Connection, material: str, location: str, lot: str, delta: Decimal) -> None:
    row = conn.execute(_STOCK_QTY, {"material": material, "location": location, "lot": lot}).first()
    upsert(conn, t.stock, [{"material": material, "location": location, "lot": lot,
                            "qty": (row.qty if row else Decimal(0)) + delta}], ["material", "location", "lot"])


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


def ensure_lot(conn: Connection, material: str, lot: str, received_at, *, expires_on=None,
               produced_by_order: str | None = None) -> None:
    """Register a lot on its first receipt; later receipts keep the first date (FIFO)."""
    if not lot:
        return
    exists = conn.execute(_LOT_EXISTS, {"material": material, "lot": lot}).first()
    if exists is None:
        conn.execute(t.lots.insert(), [{"material": material, "lot": lot, "received_at": received_at,
                                         "expires_on": expires_on, "produced_by_order": produced_by_order}])


def movement_row(confirmation_id: str | None, order_no: str | None, m, now: datetime) -> dict:
    return {"confirmation_id": confirmation_id, "order_no": order_no, "kind": m.kind.value, "material": m.material,
            "location": m.location, "lot": m.lot, "qty": m.qty, "uom": m.uom, "bom_item": m.bom_item,
            "posted_at": now}


def write_movements(conn: Connection, confirmation_id: str | None, order_no: str | None, movements, now: datetime) -> None:
    """Goods movements and the stock they change; with ``LedgerTx.move`` (buffered), the only way stock moves."""
    for m in movements:
        conn.execute(insert(t.goods_movements), [movement_row(confirmation_id, order_no, m, now)])
        if m.qty > 0:
            ensure_lot(conn, m.material, m.lot, now, produced_by_order=order_no if confirmation_id else None)
        move_stock(conn, m.material, m.location, m.lot, m.qty)


def issued_to_order(conn: Connection, order_no: str, item: str, material: str) -> list[tuple[tuple[str, str], Decimal]]:
    """What the order got of ``material`` on ``item``, per (location, lot), in posting order (+ issued)."""
    gm = t.goods_movements.c
    rows = conn.execute(select(gm.location, gm.lot, gm.qty).where(
        gm.order_no == order_no, gm.bom_item == item, gm.material == material,
        gm.kind.in_(["261", "262"])).order_by(gm.id))
    return [((r.location, r.lot), -r.qty) for r in rows]  # an issue is a negative movement
