"""Small SQL building blocks shared by everything that writes the ledger.

``upsert`` is the one portable insert-or-update and ``insert_absent`` the one portable
insert-if-missing; ``execute_rows`` and ``insert_rows`` run a statement for many rows
(what the writer does for every transaction); the statements ``gateway.ledger.tx.LedgerTx``
reads stock with are built here once. Stock, order progress and carry change only through ``LedgerTx``
(movements, lots, the create-then-lock of rows that do not exist yet): nothing here
moves stock. Nothing here commits.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from decimal import Decimal
from operator import itemgetter

from sqlalchemy import Connection, Table, bindparam, insert, select
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
_INSERTS: dict[Table, object] = {}

# A statement run for many rows on SQLite, compiled once: the SQL text, how a row (a dict)
# becomes the driver's parameter tuple, or None where SQLAlchemy's own path is needed.
_Plan = tuple[str, Callable[[dict], tuple]] | None
_PLANS: dict[tuple, _Plan] = {}


def execute_rows(conn: Connection, stmt, rows: Sequence[dict]) -> None:
    """Run ``stmt`` once for each of ``rows`` (one ``executemany``); every row has the first row's keys.

    ``stmt`` must live as long as the process (a module constant, or one of this module's
    caches): it is compiled once per dialect and set of keys. On SQLite the rows go to the
    driver as tuples, converted by the columns' own bind processors (the same values
    SQLAlchemy would bind: ``tests/ledger/test_sql_rows.py``), without the per-row work of
    SQLAlchemy's executemany, which cost the writer more than SQLite took to store the rows
    (``bench/hotpath.py``). A statement that needs more than the rows give (a column's
    Python-side default, an expanding parameter) and other databases go through
    ``Connection.execute``: on PostgreSQL SQLAlchemy batches an INSERT's rows into few round
    trips, which is what matters there.
    """
    if not rows:
        return
    plan = _plan(conn, stmt, tuple(rows[0])) if conn.dialect.name == "sqlite" else None
    if plan is None:
        conn.execute(stmt, list(rows))
        return
    sql, to_tuple = plan
    conn.exec_driver_sql(sql, [to_tuple(r) for r in rows])


def insert_rows(conn: Connection, table: Table, rows: Sequence[dict]) -> None:
    """INSERT ``rows`` into ``table`` (see ``execute_rows``)."""
    stmt = _INSERTS.get(table)
    if stmt is None:
        stmt = _INSERTS[table] = insert(table)
    execute_rows(conn, stmt, rows)


def _plan(conn: Connection, stmt, keys: tuple[str, ...]) -> _Plan:
    cache_key = (stmt, conn.dialect.name, keys)
    if cache_key not in _PLANS:
        _PLANS[cache_key] = _compile_plan(conn, stmt, keys)
    return _PLANS[cache_key]


def _compile_plan(conn: Connection, stmt, keys: tuple[str, ...]) -> _Plan:
    dialect = conn.dialect
    compiled = stmt.compile(dialect=dialect, column_keys=list(keys))
    names = compiled.positiontup
    if not names or not set(names) <= set(keys) or getattr(compiled, "literal_execute_params", None):
        return None
    binds = compiled.binds
    if any(binds[n].expanding or binds[n].callable is not None for n in names):
        return None
    processors = [(i, p) for i, n in enumerate(names)
                  if (p := binds[n].type.dialect_impl(dialect).bind_processor(dialect)) is not None]
    get = itemgetter(*names)
    if len(names) == 1:
        def values(row: dict) -> list:
            return [get(row)]
    else:
        def values(row: dict) -> list:
            return list(get(row))

    def to_tuple(row: dict) -> tuple:
        v = values(row)
        for i, process in processors:
            v[i] = process(v[i])
        return tuple(v)
    return compiled.string, to_tuple


def upsert(conn: Connection, table, rows: list[dict], keys: list[str]) -> None:
    """Insert ``rows``, or set the stored row's other columns to theirs where ``keys`` exist."""
    if not rows:
        return
    stmt = _on_conflict(conn, table, tuple(keys), tuple(c for c in rows[0] if c not in keys))
    execute_rows(conn, stmt, rows)


def insert_absent(conn: Connection, table, rows: list[dict], keys: list[str]) -> None:
    """Insert those of ``rows`` whose ``keys`` are not stored yet; leave the others as they are."""
    if rows:
        execute_rows(conn, _on_conflict(conn, table, tuple(keys), ()), rows)


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
