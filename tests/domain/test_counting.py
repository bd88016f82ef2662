"""Counting rules, one table row per rule, plus properties over random sequences."""

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.domain.counting import advance, advance_increase
from gateway.domain.records import (
    AnomalyKind,
    CounterReading,
    CounterSpec,
    CounterState,
    Position,
)

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def spec(bits=32, **kw):
    return CounterSpec("M1", "good", bits, **kw)


def reading(value, t=1, quality="good"):
    return CounterReading("M1", "good", value, T0 + timedelta(seconds=t), quality)


def state(raw, epoch=0, t=0):
    return CounterState("M1", "good", Position(epoch, raw), T0 + timedelta(seconds=t))


# (case, state before, reading, spec, job_changed) -> (counts, position after, anomaly kind, ignored)
CASES = [
    ("first reading is a baseline", None, reading(123456), spec(), False, None, Position(0, 123456), None, "baseline"),
    ("plain delta", state(100), reading(130), spec(), False, 30, Position(0, 130), None, None),
    ("same value is a no-op", state(100), reading(100), spec(), False, None, Position(0, 100), None, "unchanged"),
    ("uint16 rollover", state(65530), reading(4), spec(16), False, 10, Position(1, 4), None, None),
    ("uint32 rollover", state(2**32 - 3), reading(7), spec(32), False, 10, Position(1, 7), None, None),
    ("uint64 rollover", state(2**64 - 1), reading(0), spec(64), False, 1, Position(1, 0), None, None),
    ("reset is counted from 0 and recorded", state(5000), reading(12), spec(), False, 12, Position(1, 12), AnomalyKind.RESET, None),
    ("reset to zero", state(5000), reading(0), spec(), False, 0, Position(1, 0), AnomalyKind.RESET, None),
    ("job reset with order change", state(5000), reading(3), spec(), True, 3, Position(1, 3), None, None),
    ("bad quality ignored", state(100), reading(999, quality="bad"), spec(), False, None, Position(0, 100), None, "quality_bad"),
    ("uncertain ignored", state(100), reading(999, quality="uncertain"), spec(), False, None, Position(0, 100), None, "quality_uncertain"),
    ("missing value ignored", state(100), reading(None), spec(), False, None, Position(0, 100), None, "quality_good"),
    ("negative value is bad", state(100), reading(-1), spec(), False, None, Position(0, 100), AnomalyKind.BAD_VALUE, "out_of_range"),
    ("too wide for uint16", state(100), reading(70000), spec(16), False, None, Position(0, 100), AnomalyKind.BAD_VALUE, "out_of_range"),
    ("implausible jump is held", state(100), reading(100100), spec(max_counts_per_reading=5000), False, None, Position(0, 100100), AnomalyKind.IMPLAUSIBLE, None),
    ("at the limit is fine", state(100), reading(5100), spec(max_counts_per_reading=5000), False, 5000, Position(0, 5100), None, None),
    ("wrap beyond window is a reset", state(2**32 - 10), reading(2**31), spec(), False, 2**31, Position(1, 2**31), AnomalyKind.RESET, None),
    ("custom rollover window", state(60000), reading(100), spec(16, rollover_window=6000), False, 5636, Position(1, 100), None, None),
    ("an older timestamp does not hide a reset", state(500, t=10), reading(400, t=5), spec(), False, 400, Position(1, 400), AnomalyKind.RESET, None),
]


@pytest.mark.parametrize(
    "before,read,sp,job,counts,after,anomaly,ignored",
    [c[1:] for c in CASES],
    ids=[c[0] for c in CASES],
)
def test_counting_rules(before, read, sp, job, counts, after, anomaly, ignored):
    step = advance(before, read, sp, job_changed=job)
    assert (step.increment.counts if step.increment else None) == counts
    assert step.state.position == after
    assert (step.anomaly.kind if step.anomaly else None) == anomaly
    assert step.ignored == ignored


def test_implausible_hold_records_the_held_counts():
    step = advance(state(100), reading(100100), spec(max_counts_per_reading=5000))
    assert step.anomaly.counts_held == 100000
    assert (step.anomaly.start, step.anomaly.end) == (Position(0, 100), Position(0, 100100))


@settings(max_examples=300, deadline=None)
@given(
    bits=st.sampled_from([16, 32]),
    start=st.integers(min_value=0),
    steps=st.lists(st.integers(min_value=0, max_value=4000), min_size=1, max_size=200),
)
def test_rollovers_never_lose_or_add_counts(bits, start, steps):
    """For any true production with rollovers, counted units equal true increments."""
    sp = spec(bits)
    start %= sp.modulus
    true_total, counted = 0, 0
    st_ = advance(None, reading(start, t=0), sp).state
    for i, delta in enumerate(steps, start=1):
        true_total += delta
        step = advance(st_, reading((start + true_total) % sp.modulus, t=i), sp)
        assert step.anomaly is None
        counted += step.increment.counts if step.increment else 0
        st_ = step.state
    assert counted == true_total


@settings(max_examples=200, deadline=None)
@given(values=st.lists(st.integers(min_value=0, max_value=2**16 - 1), min_size=2, max_size=100))
def test_positions_strictly_increase_and_ranges_chain(values):
    """Whatever a PLC sends, accepted increments chain end-to-start and never overlap."""
    sp = spec(16)
    st_ = None
    last_end = None
    for i, v in enumerate(values):
        step = advance(st_, reading(v, t=i), sp)
        if st_ is not None and step.state.position != st_.position:
            assert (step.state.position.epoch, step.state.position.raw) > (st_.position.epoch, st_.position.raw)
        if step.increment:
            if last_end is not None:
                assert step.increment.start == last_end
            last_end = step.increment.end
        elif step.state and st_ and step.state.position != st_.position:
            last_end = step.state.position
        st_ = step.state


@given(v=st.integers(min_value=0, max_value=2**32 - 1))
def test_replaying_a_reading_is_idempotent(v):
    sp = spec()
    s1 = advance(None, reading(v), sp).state
    assert advance(s1, reading(v), sp).increment is None
    assert advance(s1, reading(v), sp).state == s1


def test_a_plc_clock_stepping_back_after_a_restart_loses_nothing():
    """The PLC restarts at 0 with its clock in 2000 and counts to 1500: all 1500 are counted."""
    sp = spec()
    s = state(1000, t=10**6)
    counted = 0
    old_clock = datetime(2000, 1, 1, tzinfo=UTC)
    for i, v in enumerate([0, 10, 500, 999, 1200, 1500]):
        step = advance(s, CounterReading("M1", "good", v, old_clock + timedelta(seconds=i)), sp)
        counted += step.increment.counts if step.increment else 0
        s = step.state
    assert counted == 1500


def test_an_increment_and_a_hold_carry_their_units():
    step = advance(state(100), reading(103), spec(units_per_count=4))
    assert (step.increment.counts, step.increment.units) == (3, 12)
    held = advance(state(100), reading(200), spec(units_per_count=4, max_counts_per_reading=50))
    assert held.increment is None and held.anomaly.kind is AnomalyKind.IMPLAUSIBLE
    assert (held.anomaly.counts_held, held.anomaly.units_held) == (100, 400)


# -- the fast path: advance_increase gives exactly what advance gives, or nothing -------------------


@given(width=st.sampled_from([16, 32]), epoch=st.integers(0, 3), last=st.integers(0, 2**16 - 1),
       step=st.integers(-5, 70000), units_per_count=st.sampled_from([1, 4, 24]),
       limit=st.one_of(st.none(), st.integers(1, 2000)), no_state=st.booleans(),
       not_producing=st.sampled_from([None, "state is STOPPED"]))
def test_the_fast_path_of_a_plain_increase_equals_advance(width, epoch, last, step, units_per_count, limit,
                                                            no_state, not_producing):
    s = spec(width, units_per_count=units_per_count, max_counts_per_reading=limit)
    before = None if no_state else state(last, epoch)
    value = last + step
    fast = advance_increase(before, "M1", "good", value, T0, s, not_producing)
    slow = advance(before, CounterReading("M1", "good", value, T0), s, not_producing=not_producing)
    if fast is None:  # not the plain case: the gateway calls advance, which holds, ignores or resolves it
        assert no_state or not (last < value < s.modulus) or slow.increment is None or slow.anomaly is not None
    else:
        assert fast == (slow.state, slow.increment) and slow.anomaly is None and slow.ignored is None
        assert fast[1].units == slow.increment.units
