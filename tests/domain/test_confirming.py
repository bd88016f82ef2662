"""Grouping increments into confirmations, and the deterministic id."""

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from hypothesis import given
from hypothesis import strategies as st

from gateway.domain.confirming import (
    ConfirmRule,
    accumulate,
    confirm,
    confirmation_id,
    due,
    format_positions,
    parse_positions,
    timer_spread,
)
from gateway.domain.records import Increment, Position

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def inc(counter, start, end, t=0):
    return Increment("M1", counter, end - start, Position(0, start), Position(0, end), T0 + timedelta(seconds=t))


def acc(pending, increment, units, t=0):
    """Accumulate ``increment`` as counted on a counter whose counts make ``units`` together."""
    assert units % increment.counts == 0
    increment = replace(increment, units_per_count=units // increment.counts)
    return accumulate(pending, increment, order="1000123", operation="0010", now=T0 + timedelta(seconds=t))


def test_yield_and_scrap_accumulate_with_their_ranges():
    p = acc(None, inc("good", 0, 10), 40)
    p = acc(p, inc("scrap", 5, 6), 4)
    p = acc(p, inc("good", 10, 12), 8)
    assert (p.yield_qty, p.scrap_qty) == (Decimal(48), Decimal(4))
    assert dict(p.start) == {"good": Position(0, 0), "scrap": Position(0, 5)}
    assert dict(p.end) == {"good": Position(0, 12), "scrap": Position(0, 6)}
    c = confirm(p, "every_units", "PC")
    assert c.consumed_qty == Decimal(52) and c.uom == "PC"


def test_a_total_counter_holds_the_scrap_so_yield_is_total_minus_scrap():
    def total(pending, increment, units, t=0):
        assert increment.units == units
        return accumulate(pending, increment, order="1000123", operation="0010",
                          now=T0 + timedelta(seconds=t), scrap_in_total=True)

    p = total(None, inc("total", 0, 10), 10)  # 10 parts made, good and bad
    p = total(p, inc("scrap", 0, 2), 2)  # 2 of them bad
    assert (p.yield_qty, p.scrap_qty, p.units) == (Decimal(8), Decimal(2), Decimal(10))
    c = confirm(p, "every_units", "PC")
    assert (c.yield_qty, c.scrap_qty, c.consumed_qty) == (Decimal(8), Decimal(2), Decimal(10))
    assert dict(c.start) == {"scrap": Position(0, 0), "total": Position(0, 0)}
    # Scrap read before the total it is part of: not due, at any rule, until the total is read.
    rule = ConfirmRule(every_units=1, every_seconds=1)
    early = total(None, inc("scrap", 2, 5), 3)
    assert (early.yield_qty, early.scrap_qty) == (Decimal(-3), Decimal(3))
    assert due(early, rule, T0 + timedelta(seconds=60)) is None
    assert due(total(early, inc("total", 10, 13), 3), rule, T0) == "every_units"


def test_rules_fire_on_units_and_on_time_only_with_units_pending():
    rule = ConfirmRule(every_units=100, every_seconds=60)
    assert due(None, rule, T0) is None
    p = acc(None, inc("good", 0, 99), 99)
    assert due(p, rule, T0 + timedelta(seconds=59)) is None
    assert due(p, rule, T0 + timedelta(seconds=60)) == "every_seconds"
    assert due(acc(p, inc("good", 99, 100), 1), rule, T0) == "every_units"


def test_a_machines_spread_delays_its_timer_only():
    rule = ConfirmRule(every_units=100, every_seconds=60, spread_seconds=4.5)
    p = acc(None, inc("good", 0, 99), 99)
    assert due(p, rule, T0 + timedelta(seconds=64)) is None
    assert due(p, rule, T0 + timedelta(seconds=64.5)) == "every_seconds"
    assert due(acc(p, inc("good", 99, 100), 1), rule, T0) == "every_units"


@given(st.text(min_size=1, max_size=30), st.floats(0, 3600))
def test_timer_spread_is_fixed_per_machine_and_within_the_jitter(machine, jitter):
    spread = timer_spread(machine, jitter)
    assert spread == timer_spread(machine, jitter)
    assert 0 <= spread <= jitter  # < jitter exactly; float rounding may reach it


def test_timer_spread_spreads_machines_started_together():
    spreads = sorted(timer_spread(f"PRESS-{i:04d}", 6.0) for i in range(1000))
    # about uniform over [0, 6): every second of the window gets its share
    per_second = [sum(1 for s in spreads if k <= s < k + 1) for k in range(6)]
    assert all(130 <= n <= 205 for n in per_second), per_second


def test_same_ranges_same_id_and_different_ranges_different_id():
    a = confirm(acc(None, inc("good", 0, 10), 10), "shutdown", "PC")
    b = confirm(acc(None, inc("good", 0, 10), 10, t=99), "every_units", "PC")
    c = confirm(acc(None, inc("good", 10, 20), 10), "shutdown", "PC")
    assert a.id == b.id != c.id


@given(st.lists(st.tuples(st.text("ABCM-0123", min_size=1, max_size=12), st.integers(0, 2**32 - 2),
                          st.datetimes(min_value=datetime(1971, 1, 1), max_value=datetime(2400, 1, 1),
                                       timezones=st.just(UTC))), min_size=2, max_size=6))
def test_ids_sort_by_when_the_first_unit_was_made(slices):
    """The time leads the id (the ledger's indexes grow at their end); a whole millisecond apart is enough."""
    def cid(machine, raw, made):
        return confirmation_id(machine, (("good", Position(0, raw)),), (("good", Position(0, raw + 1)),), made)
    for (m1, r1, t1), (m2, r2, t2) in zip(slices, slices[1:]):
        a, b = cid(m1, r1, t1), cid(m2, r2, t2)
        if t2 - t1 >= timedelta(milliseconds=1):
            assert a < b
        assert len(a) == 33 and len("R-" + a) <= 40  # a reversal's postings carry "R-" + id in a 40-character column
        assert cid(m1, r1, t1) == a  # deterministic
        # the digest part names the machine and its ranges, whatever the time
        assert cid(m1, r1, t1 + timedelta(days=1))[13:] == a[13:]


def test_an_id_is_the_first_units_millisecond_then_the_digest_of_machine_and_ranges():
    start, end = (("good", Position(0, 0)),), (("good", Position(0, 10)),)
    made = datetime(2026, 11, 30, 12, 0, 0, 123456, tzinfo=UTC)
    cid = confirmation_id("M1", start, end, made)
    assert cid[:2] == "C-" and int(cid[2:13], 16) == 1_796_040_000_123
    assert cid[13:] != confirmation_id("M2", start, end, made)[13:]
    assert cid[13:] != confirmation_id("M1", start, (("good", Position(0, 11)),), made)[13:]
    # a PLC clock before 1970 (a flat battery) sorts first instead of failing the confirmation
    assert confirmation_id("M1", start, end, datetime(1960, 1, 1, tzinfo=UTC))[:13] == "C-" + "0" * 11
    # another unit made first: another slice of production, another id
    assert confirm(acc(None, inc("good", 0, 10, t=1), 10), "shutdown", "PC").id != \
        confirm(acc(None, inc("good", 0, 10, t=2), 10), "shutdown", "PC").id


@given(st.lists(st.tuples(st.sampled_from(["good", "scrap"]), st.integers(0, 3), st.integers(0, 2**32 - 1)), max_size=3, unique_by=lambda x: x[0]))
def test_positions_text_round_trip(items):
    positions = tuple(sorted((c, Position(e, r)) for c, e, r in items))
    assert parse_positions(format_positions(positions)) == positions
