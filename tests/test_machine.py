"""One machine's values in, its changes out (``gateway.machine``): no ledger, no writer, no sources.

Each test feeds ``TagValue`` s to a ``MachineRuntime`` and reads the ``ChangeSet`` it fills,
as the gateway would hand it to the ledger writer.
"""

from dataclasses import fields
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from gateway.domain.confirming import ConfirmRule, Moment, Pending
from gateway.domain.counting import Ignored
from gateway.domain.records import AnomalyKind, Position, Trigger
from gateway.sources.base import Quality
from gateway.ledger.changes import ChangeSet
from gateway.ledger.resume import OrderDirectory
from gateway.machine import MachineRuntime, state_snapshots
from gateway.mapping.model import Machine
from gateway.sources.base import ORDER_ROLE, STATE_ROLE, TagValue

T0 = datetime(2026, 3, 2, 6, 0, tzinfo=UTC)
ORDERS = OrderDirectory(uoms={"A": "PC", "B": "PC"}, closed={"OLD"},
                        work_centers={("A", "0010"): "WC-1", ("B", "0010"): "WC-2"})


def machine(**entry) -> MachineRuntime:
    cfg = {"source": "sim", "work_center": "WC-1", "order": {"node": "ns=2;s=M1.Order"},
           "counters": {"good": {"node": "ns=2;s=M1.Good", "type": "uint32"}}, **entry}
    return MachineRuntime.of("M1", Machine.model_validate(cfg))


def value(role, v, t=0.0, quality=Quality.GOOD):
    at = T0 + timedelta(seconds=t)
    return TagValue("M1", role, v, at, quality, at)


def feed(rt, *values, orders=ORDERS, now=T0) -> ChangeSet:
    changes = ChangeSet()
    for tv in values:
        rt.on_value(tv, changes, orders, now)
    return changes


def kinds(changes):
    return [a.kind for a, _ in changes.anomalies]


def test_units_per_cycle_are_applied_in_counting_and_every_counter_change_is_in_the_change_set():
    rt = machine(units_per_cycle=4)
    changes = feed(rt, value(ORDER_ROLE, "A"), value("good", 100, 1), value("good", 103, 2), value("good", 110, 3))
    pending = rt.pendings[("A", "0010")]
    assert pending.yield_qty == Decimal(40)  # (110 − 100) cycles × 4 units
    assert changes.pendings[("M1", "A", "0010")] == pending
    assert [s.position for s in changes.counter_states] == [Position(0, 100), Position(0, 103), Position(0, 110)]
    assert changes.latest_states()[("M1", "good")].position == Position(0, 110)
    assert changes.counted == {"M1": Decimal(40)} and changes.machine_orders == {"M1": "A"}
    assert not changes.confirmations and not changes.anomalies


def test_the_count_threshold_confirms_in_the_same_change_set():
    rt = machine(confirm={"every_units": 10})
    changes = feed(rt, value(ORDER_ROLE, "A"), value("good", 0, 1), value("good", 12, 2))
    [c] = changes.confirmations
    assert (c.order, c.yield_qty, c.trigger, c.uom) == ("A", Decimal(12), Trigger.EVERY_UNITS, "PC")
    assert changes.pendings[("M1", "A", "0010")] is None and not rt.pendings


def test_an_expired_timer_is_left_to_the_tick():
    rt = machine(confirm={"every_units": None, "every_seconds": 60, "jitter_seconds": 0})
    feed(rt, value(ORDER_ROLE, "A"), value("good", 0, 1), value("good", 5, 2))
    changes = feed(rt, value("good", 6, 3), now=T0 + timedelta(minutes=5))
    assert not changes.confirmations  # counted: only a count threshold confirms here
    tick = ChangeSet()
    assert rt.confirm_due(tick, ORDERS, T0 + timedelta(minutes=5), Moment.TICK) == 1
    assert [(c.yield_qty, c.trigger) for c in tick.confirmations] == [(Decimal(6), Trigger.EVERY_SECONDS)]


def test_an_order_change_confirms_the_previous_orders_units_and_expects_a_job_change():
    rt = machine()
    feed(rt, value(ORDER_ROLE, "A"), value("good", 0, 1), value("good", 7, 2))
    changes = feed(rt, value(ORDER_ROLE, "B", 3), value("good", 9, 4))
    [c] = changes.confirmations
    assert (c.order, c.yield_qty, c.trigger) == ("A", Decimal(7), Trigger.ORDER_CHANGE)
    assert changes.machine_orders == {"M1": "B"}
    assert rt.pendings[("B", "0010")].yield_qty == Decimal(2)
    # the job change was expected for the counter, and its first value after it taken: both committed
    assert changes.job_resets["M1"] == (frozenset(), frozenset()) and not rt.job_changed


def test_units_of_an_unknown_order_wait_with_one_anomaly_and_are_confirmed_once_it_is_known():
    rt = machine(confirm={"every_units": 5})
    changes = feed(rt, value(ORDER_ROLE, "X"), value("good", 0, 1), value("good", 10, 2), value("good", 20, 3))
    assert kinds(changes) == [AnomalyKind.UNKNOWN_ORDER]  # once per order, not per value
    assert not changes.confirmations and rt.pendings[("X", "0010")].yield_qty == Decimal(20)
    assert rt.reported_unknown_orders == {"X"} and not rt.reported_work_centers
    loaded = OrderDirectory(uoms={**ORDERS.uoms, "X": "PC"})
    tick = ChangeSet()
    rt.confirm_due(tick, loaded, T0, Moment.TICK)
    assert [(c.order, c.yield_qty, c.trigger) for c in tick.confirmations] == [("X", Decimal(20), Trigger.EVERY_UNITS)]


def test_no_order_number_and_a_completed_order_are_said_apart():
    rt = machine()
    changes = feed(rt, value(ORDER_ROLE, "OLD"), value("good", 0, 1), value("good", 3, 2))
    [(anomaly, held)] = changes.anomalies
    assert anomaly.kind is AnomalyKind.UNKNOWN_ORDER and "completed" in anomaly.detail and held == 0
    rt = machine()
    changes = feed(rt, value("good", 0, 1), value("good", 3, 2))
    assert "no order number" in changes.anomalies[0][0].detail and rt.pendings[("", "0010")].units == 3


def test_another_work_center_is_reported_once_per_order_apart_from_unknown_orders():
    rt = machine(work_center="WC-9")
    changes = feed(rt, value(ORDER_ROLE, "A"), value("good", 0, 1), value("good", 2, 2), value("good", 4, 3))
    assert kinds(changes) == [AnomalyKind.WORK_CENTER_MISMATCH]
    changes = feed(rt, value(ORDER_ROLE, "B", 4), value("good", 6, 5), value(ORDER_ROLE, "X", 6), value("good", 8, 7))
    assert kinds(changes) == [AnomalyKind.WORK_CENTER_MISMATCH, AnomalyKind.UNKNOWN_ORDER]
    assert rt.reported_work_centers == {"A", "B"} and rt.reported_unknown_orders == {"X"}


def test_a_bad_counter_value_is_reported_once_per_streak_and_bad_quality_only_counted():
    rt = machine()
    changes = feed(rt, value(ORDER_ROLE, "A"), value("good", 0, 1), value("good", "ten", 2), value("good", "ten", 3),
                   value("good", None, 4, Quality.BAD), value("good", 5, 5), value("good", 2.5, 6))
    assert kinds(changes) == [AnomalyKind.BAD_VALUE, AnomalyKind.BAD_VALUE]  # a good value ended the first streak
    assert rt.ignored == {Ignored.BAD_VALUE: 3, Ignored.BAD_QUALITY: 1}
    assert rt.ignored["quality_bad"] == 1  # logged at stop under the same words as ever
    assert rt.pendings[("A", "0010")].yield_qty == Decimal(5)


def test_units_counted_outside_count_when_are_held_with_their_units():
    rt = machine(units_per_cycle=3, count_when={"node": "ns=2;s=M1.State", "in": [1]})
    changes = feed(rt, value(ORDER_ROLE, "A"), value(STATE_ROLE, 1), value("good", 0, 1),
                   value(STATE_ROLE, 2, 2), value("good", 4, 3))
    [(anomaly, held)] = changes.anomalies
    assert anomaly.kind is AnomalyKind.NOT_PRODUCING and anomaly.counts_held == 4 and held == Decimal(12)
    assert changes.counted == {"M1": Decimal(12)} and not rt.pendings


def test_a_state_change_read_in_the_same_snapshot_as_a_counter_lets_its_counts_through():
    rt = machine(count_when={"node": "ns=2;s=M1.State", "in": [1]})
    feed(rt, value(ORDER_ROLE, "A"), value(STATE_ROLE, 1), value("good", 0, 1))
    batch = [value("good", 3, 2), value(STATE_ROLE, 2, 2)]  # one scan: the machine stopped after these counts
    changes = ChangeSet()
    snapshots = state_snapshots({"M1": rt}, batch)
    for tv in batch:
        rt.on_value(tv, changes, ORDERS, T0, snapshots.get(("M1", tv.source_time), frozenset()))
    assert not changes.anomalies and rt.pendings[("A", "0010")].yield_qty == Decimal(3)


def test_shutdown_confirms_every_known_order_and_leaves_the_unknown_pending():
    rt = machine()
    feed(rt, value(ORDER_ROLE, "X"), value("good", 0, 1), value("good", 2, 2), value(ORDER_ROLE, "A", 3),
         value("good", 5, 4))
    changes = ChangeSet()
    rt.confirm_due(changes, ORDERS, T0, Moment.SHUTDOWN)
    assert [(c.order, c.yield_qty, c.trigger) for c in changes.confirmations] == [("A", Decimal(3), Trigger.SHUTDOWN)]
    assert list(rt.pendings) == [("X", "0010")]


def test_a_quiet_machine_is_asked_again_when_its_timer_comes_or_its_pendings_or_rule_change():
    """The confirm timer skips a machine until ``quiet_until`` says; anything but the clock changing ends that."""
    rt = machine(confirm={"every_units": 100, "every_seconds": 60, "jitter_seconds": 0})
    feed(rt, value(ORDER_ROLE, "A"), value("good", 0, 1), value("good", 5, 2))
    assert rt.confirm_due(ChangeSet(), ORDERS, T0 + timedelta(seconds=10), Moment.TICK) == 0
    assert rt._quiet is not None and rt._quiet[4] == T0 + timedelta(seconds=60, milliseconds=-1)
    # The same pending, older (as a resumed or reassigned one would be): asked, and due.
    p = rt.pendings[("A", "0010")]
    older = Pending(**{f.name: getattr(p, f.name) for f in fields(Pending)} | {"opened_at": T0 - timedelta(minutes=5)})
    rt.pendings[("A", "0010")] = older
    tick = ChangeSet()
    assert rt.confirm_due(tick, ORDERS, T0 + timedelta(seconds=10), Moment.TICK) == 1
    assert [c.trigger for c in tick.confirmations] == [Trigger.EVERY_SECONDS]
    # A new pending, quiet again; a shorter timer (a reloaded rule) is asked at once.
    feed(rt, value("good", 8, 3), now=T0 + timedelta(seconds=20))
    assert rt.confirm_due(ChangeSet(), ORDERS, T0 + timedelta(seconds=30), Moment.TICK) == 0
    rt.rule = ConfirmRule(every_units=100, every_seconds=5)
    assert rt.confirm_due(ChangeSet(), ORDERS, T0 + timedelta(seconds=30), Moment.TICK) == 1
    # Quiet until its timer: nothing one millisecond before, the confirmation at it.
    feed(rt, value("good", 9, 4), now=T0 + timedelta(seconds=40))
    assert rt.confirm_due(ChangeSet(), ORDERS, T0 + timedelta(seconds=41), Moment.TICK) == 0
    assert rt.confirm_due(ChangeSet(), ORDERS, T0 + timedelta(seconds=44.998), Moment.TICK) == 0
    assert rt.confirm_due(ChangeSet(), ORDERS, T0 + timedelta(seconds=45), Moment.TICK) == 1
