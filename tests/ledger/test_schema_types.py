"""The ledger's column types bind exactly what SQLAlchemy's own conversion would.

``UtcDateTime`` formats SQLite's text itself (one ``isoformat``) and remembers its last
datetime: the stored text must be the very text SQLAlchemy writes, or comparisons of times
in SQL (``next_at <= now``, periods, ages) and rows written by older gateways disagree.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy import TypeDecorator, create_engine, select

from gateway.ledger.schema import UtcDateTime, outbox

SQLITE = create_engine("sqlite://").dialect

aware = st.builds(
    lambda naive, minutes: naive.replace(tzinfo=timezone(timedelta(minutes=minutes))),
    st.datetimes(min_value=datetime(1000, 1, 2), max_value=datetime(9999, 12, 30)),
    st.integers(min_value=-14 * 60 + 1, max_value=14 * 60 - 1),
)


def sqlalchemy_text(value: datetime) -> str:
    """What SQLAlchemy writes for the type without our shortcut: process_bind_param, then the
    SQLite DATETIME's own formatting."""
    return TypeDecorator.bind_processor(UtcDateTime().dialect_impl(SQLITE), SQLITE)(value)


@given(aware)
def test_sqlite_text_is_sqlalchemys_text(value):
    assert UtcDateTime()._cached_bind_processor(SQLITE)(value) == sqlalchemy_text(value)


@given(st.datetimes(min_value=datetime(1, 1, 1), max_value=datetime(9999, 12, 31)))
def test_utc_times_take_the_short_way_to_the_same_text(naive):
    value = naive.replace(tzinfo=UTC)  # asyncua's and the clock's times: UTC itself, no conversion
    assert UtcDateTime()._cached_bind_processor(SQLITE)(value) == sqlalchemy_text(value)


@given(st.lists(aware, min_size=1, max_size=8))
def test_the_remembered_last_value_never_answers_for_another(values):
    process = UtcDateTime()._cached_bind_processor(SQLITE)
    for v in values + values[::-1]:
        assert process(v) == sqlalchemy_text(v)
        assert process(v) == sqlalchemy_text(v)  # the same object again: from the memory


def test_none_and_naive():
    process = UtcDateTime()._cached_bind_processor(SQLITE)
    assert process(None) is None
    with pytest.raises(ValueError, match="naive datetime"):
        process(datetime(2026, 11, 30, 12, 0))


def test_a_stored_time_reads_back_and_compares_in_sql(sqlite_url):
    from gateway.ledger.schema import open_engine

    engine = open_engine(sqlite_url)
    when = datetime(2026, 11, 30, 23, 59, 59, 999999, tzinfo=UTC)
    row = {"key": "C-1:confirmation:hook", "target": "hook", "what": "confirmation", "document": "C-1",
           "payload": "{}", "status": "pending", "attempts": 0, "created_at": when, "next_at": when,
           "updated_at": when, "last_error": ""}
    with engine.begin() as conn:
        conn.execute(outbox.insert(), [row])
        assert conn.execute(select(outbox.c.next_at)).scalar() == when
        later = when.astimezone(timezone(timedelta(hours=1))) + timedelta(microseconds=1)  # 01:00 the next day
        assert conn.execute(select(outbox.c.id).where(outbox.c.next_at < later)).scalar() is not None
        assert conn.execute(select(outbox.c.id).where(outbox.c.next_at < when)).scalar() is None
    engine.dispose()


@given(st.lists(aware, min_size=1, max_size=30))
def test_the_remembered_texts_are_forgotten_in_bounds_and_never_answer_for_another(values):
    import gateway.ledger.schema as schema_module

    old, schema_module._MEMO = schema_module._MEMO, 4
    try:
        process = UtcDateTime().bind_processor(SQLITE)
        for v in values + values[::-1] + values:
            assert process(v) == sqlalchemy_text(v)
    finally:
        schema_module._MEMO = old
