"""Runs: a counter's plain increases within one batch counted together give the changes value by value gives.

``MachineRuntime.on_value`` with a ``runs`` list (as ``Gateway.on_batch`` calls it) defers the
units of a counter's second, third, … plain increase in a batch and adds them to the pending
once (``accumulate_run``). Everything the ledger gets must be what it gets without that: the
same counter states in the same order, the same pendings, confirmations (a count rule fires
on the same value), anomalies, counted units, and the same machine state after the batch.
Each case feeds the same batches to two machines, one with runs and one without, and
compares after every batch and every confirm-timer tick.
"""

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.domain.confirming import Moment, Pending, accumulate, accumulate_run, yield_before_due
from gateway.domain.records import Increment, Position
from gateway.ledger.changes import ChangeSet
from gateway.ledger.resume import OrderDirectory
from gateway.machine import MachineRuntime
from gateway.mapping.model import Machine
from gateway.sources.base import ORDER_ROLE, SERIAL_ROLE, STATE_ROLE, Quality, TagValue

T0 = datetime(2026, 3, 2, 6, 0, tzinfo=UTC)
ORDERS = OrderDirectory(uoms={"A": "PC", "B": "PC"}, closed=set(), work_centers={("A", "0010"): "WC-1",
                                                                                   ("B", "0010"): "WC-2"})

CONFIGS = {
    "good only": {},
    "good and scrap": {"counters": {"good": {"node": "ns=2;s=G", "type": "uint16"},
                                    "scrap": {"node": "ns=2;s=S", "type": "uint16"}}},
    "total holds the scrap": {"counters": {"total": {"node": "ns=2;s=T", "type": "uint16"},
                                           "scrap": {"node": "ns=2;s=S", "type": "uint16"}}},
    "three units a cycle, a plausibility limit": {"units_per_cycle": 3, "plausibility": {"max_units_per_reading": 12}},
    "count_when": {"count_when": {"node": "ns=2;s=State", "in": [6]}},
    "serials": {"serial": {"node": "ns=2;s=Serial"}},
    "job counters reset": {"job_counters": "reset"},
}


def machine(name: str, entry: dict, every_units: int | None) -> MachineRuntime:
    cfg = {"source": "sim", "work_center": "WC-1", "order": {"node": f"ns=2;s={name}.Order"},
           "counters": {"good": {"node": f"ns=2;s={name}.Good", "type": "uint16"}},
           "confirm": {"every_units": every_units, "every_seconds": 30, "jitter_seconds": 0}, **entry}
    return MachineRuntime.of(name, Machine.model_validate(cfg))


# One event of a machine: an order value, a counter going up (by 0..6, mostly 1), a counter going
# down (a reset), a bad value, a state value, a serial value; and how far its source time moves.
event = st.one_of(
    st.tuples(st.just("order"), st.sampled_from(["A", "B", "X"])),
    st.tuples(st.just("up"), st.sampled_from(["good", "scrap", "total"]),
              st.integers(0, 6) | st.just(1) | st.just(1)),
    st.tuples(st.just("up"), st.just("good"), st.integers(1, 2)),
    st.tuples(st.just("down"), st.sampled_from(["good", "scrap", "total"]), st.integers(0, 3)),
    st.tuples(st.just("bad"), st.sampled_from(["good", "scrap", "total"])),
    st.tuples(st.just("state"), st.sampled_from([6, 2])),
    st.tuples(st.just("serial"), st.integers(0, 30)),
)
step = st.sampled_from([0.02, 0.02, 0.02, 0.0, 0.5, -1.0])  # a PLC clock may step back


@st.composite
def batches(draw):
    """Batches of (machine, event, time step): two machines interleaved, as a publish response has them."""
    return draw(st.lists(st.lists(st.tuples(st.sampled_from(["M1", "M2"]), event, step), max_size=25),
                         min_size=1, max_size=8))


def values_of(batch, clock: dict[str, float], raw: dict[tuple[str, str], int]) -> list[TagValue]:
    out = []
    for name, ev, dt in batch:
        clock[name] = clock.get(name, 0.0) + dt
        at = T0 + timedelta(seconds=clock[name])
        kind = ev[0]
        if kind == "order":
            out.append(TagValue(name, ORDER_ROLE, ev[1], at, Quality.GOOD, at))
        elif kind == "state":
            out.append(TagValue(name, STATE_ROLE, ev[1], at, Quality.GOOD, at))
        elif kind == "serial":
            out.append(TagValue(name, SERIAL_ROLE, f"SN-{ev[1]}", at, Quality.GOOD, at))
        elif kind == "bad":
            out.append(TagValue(name, ev[1], None, at, Quality.BAD, at))
        else:
            key = (name, ev[1])
            raw[key] = raw.get(key, 0) + ev[2] if kind == "up" else ev[2]
            out.append(TagValue(name, ev[1], raw[key], at, Quality.GOOD, at))
    return out


def feed(machines: dict[str, MachineRuntime], values: list[TagValue], now: datetime, with_runs: bool) -> ChangeSet:
    """What ``Gateway.on_batch`` does with one batch (runs settled at its end), or value by value."""
    changes = ChangeSet()
    runs: list[MachineRuntime] | None = [] if with_runs else None
    for tv in values:
        machines[tv.machine].on_value(tv, changes, ORDERS, now, frozenset(), runs)
    for rt in runs or ():
        rt.settle(changes, ORDERS, now)
    return changes


def as_compared(changes: ChangeSet):
    return (changes.counter_states, list(changes.pendings.items()), list(changes.counted.items()),
            changes.confirmations, changes.anomalies, changes.machine_orders, changes.job_resets)


def state_of(rt: MachineRuntime):
    return (rt.order, rt.states, rt.pendings, rt.counted_units, rt.counted_total, rt.job_changed,
            rt.reported_unknown_orders, rt.reported_work_centers, rt.reported_bad, rt.ignored, rt.fresh_serials,
            rt.used_serials)


@pytest.mark.parametrize("every_units", [None, 1, 4, 10])
@pytest.mark.parametrize("config", CONFIGS)
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=batches())
def test_runs_change_nothing_the_ledger_gets(config, every_units, data):
    entry = CONFIGS[config]
    folded = {m: machine(m, entry, every_units) for m in ("M1", "M2")}
    one_by_one = {m: machine(m, entry, every_units) for m in ("M1", "M2")}
    clock: dict[str, float] = {}
    raw: dict[tuple[str, str], int] = {}
    for k, batch in enumerate(data):
        values = values_of(batch, clock, raw)
        now = T0 + timedelta(seconds=10 * k)
        assert as_compared(feed(folded, values, now, True)) == as_compared(feed(one_by_one, values, now, False))
        for m in folded:
            assert state_of(folded[m]) == state_of(one_by_one[m])
        if k % 3 == 2:  # the confirm timer between two batches
            a, b = ChangeSet(), ChangeSet()
            for m in folded:
                folded[m].confirm_due(a, ORDERS, now + timedelta(seconds=40), Moment.TICK)
                one_by_one[m].confirm_due(b, ORDERS, now + timedelta(seconds=40), Moment.TICK)
            assert as_compared(a) == as_compared(b)


def test_a_run_is_counted_once_and_confirmed_on_the_value_that_reaches_the_count():
    """At 50 Hz read every 100 ms a response has five increases per counter: the pending is
    built for the first and once more for the other four; a count of 7 is confirmed at the 7th unit."""
    rt = machine("M1", {}, 7)
    at = [T0 + timedelta(milliseconds=20 * i) for i in range(12)]
    values = [TagValue("M1", ORDER_ROLE, "A", at[0], Quality.GOOD, at[0])]
    values += [TagValue("M1", "good", 100 + i, at[i], Quality.GOOD, at[i]) for i in range(12)]
    changes = feed({"M1": rt}, values, T0, True)
    [c] = changes.confirmations
    assert (c.yield_qty, c.start, c.end) == (Decimal(7), (("good", Position(0, 100)),), (("good", Position(0, 107)),))
    assert (c.first_source_time, c.last_source_time) == (at[1], at[7])
    assert rt.pendings[("A", "0010")].yield_qty == Decimal(4)  # 107 → 111
    assert len(changes.counter_states) == 12  # every value's state, as value by value
    assert rt._run_role is None and not rt._run  # settled: nothing waits past the batch


def test_without_a_runs_list_every_value_is_counted_at_once():
    rt = machine("M1", {}, None)
    changes = ChangeSet()
    for i, v in enumerate([0, 1, 2, 3]):
        at = T0 + timedelta(seconds=i)
        rt.on_value(TagValue("M1", "good", v, at, Quality.GOOD, at), changes, ORDERS, T0)
    assert changes.counted == {"M1": Decimal(3)} and rt._run_role is None


@given(st.lists(st.tuples(st.integers(1, 4), st.integers(-3, 3)), min_size=1, max_size=12),
       st.booleans(), st.integers(1, 3))
def test_accumulate_run_is_accumulate_one_by_one(steps, with_pending, per_count):
    raw, t = 10, 0
    run = []
    for counts, dt in steps:
        t += dt
        run.append(Increment("M1", "good", counts, Position(1, raw), Position(1, raw + counts),
                             T0 + timedelta(seconds=t), per_count))
        raw += counts
    pending = (Pending("M1", "A", "0010", Decimal(-2), Decimal(3), (("good", Position(1, 4)), ("scrap", Position(0, 1))),
                       (("good", Position(1, 10)), ("scrap", Position(0, 4))), T0, T0 + timedelta(seconds=1), T0,
                       ("SN-1",)) if with_pending else None)
    now = T0 + timedelta(hours=1)
    one_by_one = pending
    for increment in run:
        one_by_one = accumulate(one_by_one, increment, order="A", operation="0010", now=now)
    assert accumulate_run(pending, run, order="A", operation="0010", now=now) == one_by_one


@given(st.integers(-20, 20), st.integers(0, 20), st.integers(1, 30))
def test_yield_before_due_is_where_the_count_rule_starts_to_fire(yield_qty, scrap, every_units):
    pending = Pending("M1", "A", "0010", Decimal(yield_qty), Decimal(scrap), (), (), T0, T0, T0)

    def fires(extra: int) -> bool:
        p = replace(pending, yield_qty=pending.yield_qty + extra)
        units = p.yield_qty + p.scrap_qty
        return units >= every_units and units > 0 and p.yield_qty >= 0

    room = yield_before_due(pending, every_units)
    if fires(0):
        assert room == 0
    else:
        assert not fires(room) and fires(room + 1)
    assert yield_before_due(pending, None) is None
    assert yield_before_due(None, every_units) == every_units - 1
