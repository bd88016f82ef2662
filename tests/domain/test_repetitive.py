"""Repetitive production: period keys and bounds per time zone, collector numbers, and
units split across a period boundary exactly once (accumulate/confirm with a period change
treated as an order change)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal as D
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.domain.confirming import accumulate, confirm
from gateway.domain.records import Increment, Position
from gateway.domain.repetitive import (
    MAX_NUMBER_LENGTH,
    CollectorCosts,
    CollectorKey,
    PeriodError,
    parse_period,
    period_of,
)

BERLIN = ZoneInfo("Europe/Berlin")
NEW_YORK = ZoneInfo("America/New_York")


def utc(*args) -> datetime:
    return datetime(*args, tzinfo=UTC)


@pytest.mark.parametrize(("at", "length", "tz", "key", "start", "end"), [
    # months: the calendar month in the plant's zone, not UTC's
    (utc(2026, 11, 30, 22, 59, 59), "month", BERLIN, "2026-11", utc(2026, 10, 31, 23), utc(2026, 11, 30, 23)),
    (utc(2026, 11, 30, 23, 0, 0), "month", BERLIN, "2026-12", utc(2026, 11, 30, 23), utc(2026, 12, 31, 23)),
    (utc(2026, 11, 30, 23, 0, 0), "month", UTC, "2026-11", utc(2026, 11, 1), utc(2026, 12, 1)),
    (utc(2026, 12, 31, 23, 59, 59), "month", UTC, "2026-12", utc(2026, 12, 1), utc(2027, 1, 1)),
    (utc(2027, 1, 1), "month", UTC, "2027-01", utc(2027, 1, 1), utc(2027, 2, 1)),
    # a month across the change to summer time is 1 h shorter in UTC
    (utc(2026, 3, 15), "month", BERLIN, "2026-03", utc(2026, 2, 28, 23), utc(2026, 3, 31, 22)),
    # ISO weeks, Monday to Sunday; the week of 1 January 2027 is week 53 of 2026
    (utc(2026, 12, 3, 12), "week", UTC, "2026-W49", utc(2026, 11, 30), utc(2026, 12, 7)),
    (utc(2027, 1, 1, 12), "week", UTC, "2026-W53", utc(2026, 12, 28), utc(2027, 1, 4)),
    (utc(2026, 12, 7, 4, 59), "week", NEW_YORK, "2026-W49", utc(2026, 11, 30, 5), utc(2026, 12, 7, 5)),
    # days; the day summer time starts has 23 hours
    (utc(2026, 12, 3, 23, 30), "day", BERLIN, "2026-12-04", utc(2026, 12, 3, 23), utc(2026, 12, 4, 23)),
    (utc(2026, 3, 29, 12), "day", BERLIN, "2026-03-29", utc(2026, 3, 28, 23), utc(2026, 3, 29, 22)),
])
def test_period_of(at, length, tz, key, start, end):
    period = period_of(at, length, tz)
    assert (period.key, period.start, period.end) == (key, start, end)
    assert period.holds(at)
    assert parse_period(key, tz) == period


@pytest.mark.parametrize("text", ["2026-13", "2026-W54", "2026-02-30", "26-12", "December", "", "2026-12-3"])
def test_a_key_that_names_no_period_is_refused(text):
    with pytest.raises(PeriodError, match="is no period"):
        parse_period(text, UTC)


def test_a_naive_time_has_no_period():
    with pytest.raises(ValueError, match="naive"):
        period_of(datetime(2026, 12, 1), "month", UTC)


@given(at=st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2090, 12, 31), timezones=st.just(UTC)),
       length=st.sampled_from(["month", "week", "day"]),
       tz=st.sampled_from([UTC, BERLIN, NEW_YORK, ZoneInfo("Asia/Kolkata"), ZoneInfo("Pacific/Auckland")]))
def test_periods_tile_time(at, length, tz):
    """Every instant is in exactly one period: the one it names, whose end is the next one's start."""
    period = period_of(at, length, tz)
    assert period.holds(at)
    assert period_of(period.start, length, tz) == period
    following = period_of(period.end, length, tz)
    assert following.start == period.end and following.key > period.key
    assert period_of(period.end - timedelta(microseconds=1), length, tz) == period
    assert parse_period(period.key, tz) == period


@pytest.mark.parametrize(("key", "number"), [
    (CollectorKey("HOUSING-B", "0001", "LINE-2", "2026-12"), "HOUSING-B.0001@LINE-2:2026-12"),
    (CollectorKey("HOUSING-B", "", "WC-ASSY", "2026-W49"), "HOUSING-B@WC-ASSY:2026-W49"),
])
def test_collector_number(key, number):
    assert key.number == number


def test_a_long_collector_number_fits_the_column_and_stays_distinct():
    a = CollectorKey("P" * 60, "0001", "LINE-A", "2026-12")
    b = CollectorKey("P" * 60, "0001", "LINE-B", "2026-12")
    assert len(a.number) == len(b.number) == MAX_NUMBER_LENGTH
    assert a.number != b.number and a.number == CollectorKey("P" * 60, "0001", "LINE-A", "2026-12").number


def test_collector_variance_is_actual_less_target():
    costs = CollectorCosts(materials=D("310.50"), activities=D("42.75"), target=D("340.00"))
    assert costs.actual == D("353.25") and costs.variance == D("13.25")


# -- units across a period boundary ---------------------------------------------------------

T0 = utc(2026, 11, 30, 23, 59, 50)


@settings(max_examples=300)
@given(steps=st.lists(st.integers(0, 5), min_size=1, max_size=60),
       every=st.integers(1, 12))
def test_units_cross_a_period_boundary_exactly_once(steps, every):
    """Units counted second by second across midnight of 1 December: a period change confirms the
    old collector's pending units (as an order change does), new units go to the new collector;
    every unit lands in exactly one confirmation or the final pending, and each confirmation
    is of one period's units only."""
    raw, confirmed, pendings = 0, [], {}
    periods_of_units: dict[str, int] = {}
    current = None
    for second, units in enumerate(steps):
        now = T0 + timedelta(seconds=second * 2)
        number = CollectorKey("P", "0001", "L", period_of(now, "month", UTC).key).number
        if number != current:  # the service's roll: confirm what the old collector has pending
            for key in [k for k in pendings if k != number]:
                confirmed.append(confirm(pendings.pop(key), "period_change", "PC"))
            current = number
        if not units:
            continue
        inc = Increment("M", "good", units, Position(0, raw), Position(0, raw + units), now)
        raw += units
        periods_of_units[number] = periods_of_units.get(number, 0) + units
        pendings[number] = accumulate(pendings.get(number), inc, order=number, operation="0010", now=now)
        if pendings[number].units >= every:
            confirmed.append(confirm(pendings.pop(number), "every_units", "PC"))
    total = sum(c.yield_qty for c in confirmed) + sum(p.yield_qty for p in pendings.values())
    assert total == raw  # nothing lost, nothing twice
    assert len({c.id for c in confirmed}) == len(confirmed)
    by_collector: dict[str, D] = {}
    for c in confirmed:
        by_collector[c.order] = by_collector.get(c.order, D(0)) + c.yield_qty
    for p in pendings.values():
        by_collector[p.order] = by_collector.get(p.order, D(0)) + p.yield_qty
    assert by_collector == {k: D(v) for k, v in periods_of_units.items()}
    assert all(c.order.endswith(":2026-11") or c.order.endswith(":2026-12") for c in confirmed)
