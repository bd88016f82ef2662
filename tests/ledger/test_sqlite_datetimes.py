"""Datetimes on SQLite: the ledger's own bind processor writes the text SQLAlchemy's would."""

from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import DateTime, TypeDecorator
from sqlalchemy.dialects import sqlite

from gateway.ledger.schema import UtcDateTime


class Generic(UtcDateTime):
    """``UtcDateTime`` with TypeDecorator's generic binding: process_bind_param, then the dialect's."""

    def bind_processor(self, dialect):
        return TypeDecorator.bind_processor(self, dialect)


DIALECT = sqlite.dialect()
offsets = st.integers(-23 * 60, 23 * 60).map(lambda m: timezone(timedelta(minutes=m)))


@settings(max_examples=1000, deadline=None)
@given(st.datetimes(min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30), timezones=st.just(UTC) | offsets))
def test_the_same_text_as_sqlalchemy_writes(value):
    fast, generic = UtcDateTime().bind_processor(DIALECT), Generic().bind_processor(DIALECT)
    assert fast is not generic
    assert fast(value) == generic(value)
    assert fast(None) is generic(None) is None


def test_a_naive_datetime_is_refused_as_before():
    with pytest.raises(ValueError, match="naive datetime"):
        UtcDateTime().bind_processor(DIALECT)(datetime(2026, 1, 1))


def test_sqlalchemy_still_writes_the_format_relied_on():
    assert DateTime().dialect_impl(DIALECT).bind_processor(DIALECT)(datetime(2001, 2, 3, 4, 5, 6, 7)) \
        == "2001-02-03 04:05:06.000007"
