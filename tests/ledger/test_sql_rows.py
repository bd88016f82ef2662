"""``execute_rows`` stores exactly what SQLAlchemy's own executemany stores.

On SQLite it compiles a statement once and hands the driver tuples converted by the columns'
bind processors; a difference from SQLAlchemy's path (a column's order, a value's text)
would put different rows in the ledger. Every table is written both ways with random rows
of its column types and the stored text compared; the statements it must leave to
SQLAlchemy (a column's Python-side default, an expanding parameter) still work.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import BigInteger, Boolean, Date, Float, Integer, String, Text, bindparam, delete, insert, select

from gateway.ledger import schema
from gateway.ledger.schema import Dec, UInt64, UtcDateTime, open_engine
from gateway.ledger.sql import _plan, execute_rows, insert_rows, upsert

_TIMES = st.builds(lambda naive, minutes: naive.replace(tzinfo=UTC if minutes is None else
                                                        timezone(timedelta(minutes=minutes))),
                   st.datetimes(min_value=datetime(1970, 1, 2), max_value=datetime(9999, 12, 30)),
                   st.none() | st.integers(min_value=-14 * 60 + 1, max_value=14 * 60 - 1))


def _values(column):
    t = column.type
    if isinstance(t, UtcDateTime):
        values = _TIMES
    elif isinstance(t, Dec):
        values = st.decimals(min_value=Decimal("-1e12"), max_value=Decimal("1e12"), places=6, allow_nan=False)
    elif isinstance(t, UInt64):
        values = st.integers(min_value=0, max_value=2**64 - 1)
    elif isinstance(t, Boolean):
        values = st.booleans()
    elif isinstance(t, Date):
        values = st.dates(min_value=date(1970, 1, 1))
    elif isinstance(t, Float):
        values = st.floats(allow_nan=False, allow_infinity=False, width=32)
    elif isinstance(t, (Integer, BigInteger)):
        values = st.integers(min_value=-(2**62), max_value=2**62)
    elif isinstance(t, (String, Text)):
        values = st.text(max_size=12)
    else:
        raise AssertionError(f"no values for {column}: {t!r}")
    return st.none() | values if column.nullable else values


def _rows(table, n: int):
    columns = [c for c in table.columns if not (c.primary_key and c.autoincrement is True and
                                                isinstance(c.type, Integer))]
    given = {c.key for c in columns}
    keys = {tuple(c.key for c in u.columns) for u in [*table.constraints, *table.indexes]
            if getattr(u, "unique", True) and hasattr(u, "columns") and len(u.columns)}
    keys |= {(c.key,) for c in columns if c.unique}
    unique = tuple((lambda r, k=k: tuple(r[c] for c in k)) for k in sorted(keys) if set(k) <= given)
    return st.lists(st.fixed_dictionaries({c.key: _values(c) for c in columns}), min_size=n, max_size=n,
                    unique_by=unique or None)


def _stored(conn, table) -> list[tuple]:
    """The rows as SQLite holds them: the driver's raw values, in insertion order."""
    names = ", ".join(f'"{c.name}"' for c in table.columns)
    return list(conn.exec_driver_sql(f'SELECT {names} FROM "{table.name}" ORDER BY rowid'))


TABLES = [schema.counter_states, schema.pending_units, schema.counted_units, schema.confirmations,
          schema.goods_movements, schema.activity_postings, schema.genealogy, schema.anomalies, schema.outbox,
          schema.stock, schema.order_carry, schema.order_progress, schema.lots, schema.error_queue]


@pytest.fixture(scope="module")
def engines(tmp_path_factory):
    folder = tmp_path_factory.mktemp("rows")
    pair = [open_engine(f"sqlite:///{folder / name}.sqlite") for name in ("ours", "sqlalchemy")]
    yield pair
    for engine in pair:
        engine.dispose()


@pytest.mark.parametrize("table", TABLES, ids=lambda t: t.name)
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_a_table_written_both_ways_holds_the_same_text(engines, table, data):
    ours, theirs = engines
    rows = data.draw(_rows(table, 3))
    with ours.begin() as a, theirs.begin() as b:
        for conn in (a, b):
            conn.execute(delete(table))
        assert _plan(a, insert(table), tuple(rows[0])) is not None, "every column given: the fast path"
        insert_rows(a, table, rows)
        b.execute(insert(table), rows)
        assert _stored(a, table) == _stored(b, table)


def test_an_upsert_updates_like_sqlalchemys(engines):
    ours, theirs = engines
    when = datetime(2026, 12, 1, 5, 0, 0, 1, tzinfo=UTC)
    first = [{"machine": f"M{i}", "units": i, "updated_at": when} for i in range(5)]
    second = [{"machine": f"M{i}", "units": 10 * i, "updated_at": when + timedelta(hours=i)} for i in range(3, 8)]
    with ours.begin() as a, theirs.begin() as b:
        for conn in (a, b):
            conn.execute(delete(schema.counted_units))
        for rows in (first, second):
            upsert(a, schema.counted_units, rows, ["machine"])
            for r in rows:  # SQLAlchemy's path, row by row: the reference
                b.execute(schema.counted_units.insert().prefix_with("OR REPLACE"), [r])
        assert _stored(a, schema.counted_units) == sorted(_stored(b, schema.counted_units))


def test_a_missing_column_with_a_default_goes_through_sqlalchemy(engines):
    """goods_movements.bom_item has a Python-side default: left out, SQLAlchemy fills it in."""
    ours, _ = engines
    row = {"confirmation_id": "C-1", "order_no": "1", "kind": "261", "material": "M", "location": "L",
           "lot": "", "qty": Decimal("-1.5"), "uom": "PC", "posted_at": datetime(2026, 12, 1, tzinfo=UTC),
           "value": None}
    with ours.begin() as conn:
        conn.execute(delete(schema.goods_movements))
        assert _plan(conn, insert(schema.goods_movements), tuple(row)) is None
        insert_rows(conn, schema.goods_movements, [row])
        assert conn.execute(select(schema.goods_movements.c.bom_item, schema.goods_movements.c.qty)).one() == (
            "", Decimal("-1.5"))


def test_a_delete_by_bound_names_and_an_expanding_statement(engines):
    ours, _ = engines
    when = datetime(2026, 12, 1, tzinfo=UTC)
    with ours.begin() as conn:
        conn.execute(delete(schema.counted_units))
        insert_rows(conn, schema.counted_units, [{"machine": m, "units": 1, "updated_at": when} for m in "ABCD"])
        gone = delete(schema.counted_units).where(schema.counted_units.c.machine == bindparam("m"))
        execute_rows(conn, gone, [{"m": "A"}, {"m": "C"}])
        expanding = delete(schema.counted_units).where(
            schema.counted_units.c.machine.in_(bindparam("ms", expanding=True)))
        assert _plan(conn, expanding, ("ms",)) is None
        execute_rows(conn, expanding, [{"ms": ["D"]}])
        assert list(conn.execute(select(schema.counted_units.c.machine))) == [("B",)]
