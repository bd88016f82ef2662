"""When pending units become confirmations, and why: ``confirming.decide``, one table row per rule."""

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.domain.confirming import NEVER, ConfirmRule, Moment, Pending, accumulate, decide, due, quiet_until
from gateway.domain.records import Increment, Position, Trigger

T0 = datetime(2026, 1, 1, tzinfo=UTC)
KNOWN = {"A", "B"}  # orders in the master data; "X" is not, "" is no order number at all
RULE = ConfirmRule(every_units=100, every_seconds=60)


def pending(order, units, *, age_s=0.0, counter="good"):
    """``units`` counted for ``order``, the first of them ``age_s`` seconds before T0."""
    inc = Increment("M1", counter, units, Position(0, 0), Position(0, units), T0)
    return accumulate(None, inc, order=order, operation="0010", now=T0 - timedelta(seconds=age_s))


def scrap_before_total(units):
    """Scrap of a machine with a total counter, read before its total: yield below zero."""
    inc = Increment("M1", "scrap", units, Position(0, 0), Position(0, units), T0)
    return accumulate(None, inc, order="A", operation="0010", now=T0 - timedelta(seconds=600), scrap_in_total=True)


# (case, moment, running order, pending) -> trigger, or None: it waits
CASES = [
    # units were just counted: only the count threshold of the running order's pending
    ("counted: threshold reached", Moment.COUNTED, "A", pending("A", 100), Trigger.EVERY_UNITS),
    ("counted: below threshold waits", Moment.COUNTED, "A", pending("A", 99), None),
    ("counted: expired timer waits for the tick", Moment.COUNTED, "A", pending("A", 5, age_s=61), None),
    ("counted: another order's pending waits for the tick", Moment.COUNTED, "B", pending("A", 100), None),
    ("counted: unknown order waits", Moment.COUNTED, "X", pending("X", 500), None),
    # the confirm timer's round
    ("tick: threshold reached", Moment.TICK, "A", pending("A", 150), Trigger.EVERY_UNITS),
    ("tick: timer expired", Moment.TICK, "A", pending("A", 5, age_s=60), Trigger.EVERY_SECONDS),
    ("tick: timer not expired waits", Moment.TICK, "A", pending("A", 5, age_s=59), None),
    ("tick: another order than the running one", Moment.TICK, "B", pending("A", 1), Trigger.ORDER_CHANGE),
    ("tick: unknown order waits", Moment.TICK, "X", pending("X", 500, age_s=600), None),
    ("tick: unknown order waits, machine moved on", Moment.TICK, "A", pending("X", 500), None),
    ("tick: no order number waits", Moment.TICK, "", pending("", 500, age_s=600), None),
    ("tick: scrap before its total waits", Moment.TICK, "A", scrap_before_total(3), None),
    # the machine's order has just changed (to the running order given)
    ("order changed: the previous order's units", Moment.ORDER_CHANGED, "B", pending("A", 1), Trigger.ORDER_CHANGE),
    ("order changed: whatever the rules say", Moment.ORDER_CHANGED, "B", scrap_before_total(3),
     Trigger.ORDER_CHANGE),
    ("order changed: the new order's units wait", Moment.ORDER_CHANGED, "A", pending("A", 500), None),
    ("order changed: unknown previous order waits", Moment.ORDER_CHANGED, "A", pending("X", 5), None),
    # a repetitive machine has just moved to the running period's collector (B; A is the last period's)
    ("period changed: the last period's units", Moment.PERIOD_CHANGED, "B", pending("A", 1), Trigger.PERIOD_CHANGE),
    ("period changed: whatever the rules say", Moment.PERIOD_CHANGED, "B", scrap_before_total(3),
     Trigger.PERIOD_CHANGE),
    ("period changed: this period's units wait", Moment.PERIOD_CHANGED, "A", pending("A", 500), None),
    ("period changed: an unknown collector waits", Moment.PERIOD_CHANGED, "A", pending("X", 5), None),
    # the gateway stops; the machine's mapping entry is removed or changed
    ("shutdown: everything known", Moment.SHUTDOWN, "A", pending("A", 1), Trigger.SHUTDOWN),
    ("shutdown: another order's too", Moment.SHUTDOWN, "B", pending("A", 1), Trigger.SHUTDOWN),
    ("shutdown: unknown order waits", Moment.SHUTDOWN, "X", pending("X", 1), None),
    ("reload: everything known", Moment.RELOAD, "A", pending("A", 1), Trigger.RELOAD),
    ("reload: unknown order waits", Moment.RELOAD, "", pending("", 1), None),
]


@pytest.mark.parametrize("moment,running,p,expected", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_decide_rules(moment, running, p, expected):
    got = decide({(p.order, p.operation): p}, running, KNOWN, RULE, T0, moment)
    assert got == ([] if expected is None else [((p.order, p.operation), expected)])


def test_a_rule_without_threshold_or_timer_confirms_only_at_an_order_change_or_the_end():
    p = pending("A", 10_000, age_s=86_400)
    pendings = {(p.order, p.operation): p}
    assert decide(pendings, "A", KNOWN, ConfirmRule(), T0, Moment.TICK) == []
    assert decide(pendings, "B", KNOWN, ConfirmRule(), T0, Moment.TICK) == [(("A", "0010"), Trigger.ORDER_CHANGE)]


def test_the_machines_spread_delays_its_timer():
    p = pending("A", 5, age_s=65)
    rule = ConfirmRule(every_seconds=60, spread_seconds=10)
    assert decide({("A", "0010"): p}, "A", KNOWN, rule, T0, Moment.TICK) == []
    later = T0 + timedelta(seconds=5)
    assert decide({("A", "0010"): p}, "A", KNOWN, rule, later, Moment.TICK) == [(("A", "0010"), Trigger.EVERY_SECONDS)]


def test_several_pendings_in_their_order():
    old, unknown, running = pending("A", 3), pending("X", 7), pending("B", 120)
    pendings = {("A", "0010"): old, ("X", "0010"): unknown, ("B", "0010"): running}
    assert decide(pendings, "B", KNOWN, RULE, T0, Moment.TICK) == [
        (("A", "0010"), Trigger.ORDER_CHANGE), (("B", "0010"), Trigger.EVERY_UNITS)]
    assert decide(pendings, "B", KNOWN, RULE, T0, Moment.SHUTDOWN) == [
        (("A", "0010"), Trigger.SHUTDOWN), (("B", "0010"), Trigger.SHUTDOWN)]


def test_triggers_are_stored_as_the_words_the_ledger_has_always_had():
    assert [t.value for t in Trigger] == ["every_units", "every_seconds", "order_change", "period_change", "shutdown",
                                          "reload", "anomaly_accepted", "assigned", "adjustment:scrap", "true-up"]
    assert Trigger.EVERY_UNITS == "every_units" and f"{Trigger.SHUTDOWN}" == "shutdown"


orders = st.sampled_from(["A", "B", "X", ""])


@given(st.dictionaries(orders, st.tuples(st.integers(1, 300), st.floats(0, 120))), orders,
       st.sampled_from(list(Moment)))
def test_only_known_orders_are_confirmed_each_once_and_a_closing_moment_takes_them_all(spec, running, moment):
    pendings: dict[tuple[str, str], Pending] = {
        (order, "0010"): pending(order, units, age_s=age) for order, (units, age) in spec.items()}
    got = decide(pendings, running, KNOWN, RULE, T0, moment)
    keys = [k for k, _ in got]
    assert len(keys) == len(set(keys)) and all(k[0] in KNOWN for k in keys)
    if moment in (Moment.SHUTDOWN, Moment.RELOAD):
        assert set(keys) == {k for k in pendings if k[0] in KNOWN}
    if moment is Moment.COUNTED:
        assert all(k[0] == running and why is Trigger.EVERY_UNITS for k, why in got)


@given(st.dictionaries(orders, st.tuples(st.integers(1, 300), st.floats(0, 120), st.booleans())), orders,
       st.sampled_from([ConfirmRule(every_units=100, every_seconds=60), ConfirmRule(every_seconds=60),
                        ConfirmRule(every_units=1)]))
def test_after_a_count_only_the_running_orders_count_threshold_fires(spec, running, rule):
    """``decide`` at COUNTED (its own short path, run after every counter change) confirms exactly the
    pendings of the running, known order for which ``due`` says ``every_units``."""
    pendings = {(order, "0010"): (scrap_before_total(units) if negative and order == "A" else
                                  pending(order, units, age_s=age))
                for order, (units, age, negative) in spec.items()}
    expected = [(k, Trigger.EVERY_UNITS) for k, p in pendings.items()
                if k[0] == running and k[0] in KNOWN and due(p, rule, T0) is Trigger.EVERY_UNITS]
    assert decide(pendings, running, KNOWN, rule, T0, Moment.COUNTED) == expected


rules = st.sampled_from([ConfirmRule(every_units=100, every_seconds=60), ConfirmRule(every_seconds=60),
                         ConfirmRule(every_seconds=0.25, spread_seconds=7.3), ConfirmRule(every_units=1),
                         ConfirmRule(every_units=100), ConfirmRule()])


@given(st.dictionaries(orders, st.tuples(st.integers(1, 300), st.floats(0, 120), st.booleans()), max_size=3),
       orders, rules, st.lists(st.floats(0, 200), max_size=8))
def test_the_timer_may_skip_a_machine_until_quiet_until_and_never_later(spec, running, rule, later_s):
    """``quiet_until``: the confirm timer asks a machine again only when it says; until then ``decide`` at
    TICK finds nothing, and at that moment (or a tick after it) it finds what is due."""
    pendings = {(order, "0010"): (scrap_before_total(units) if negative and order == "A" else
                                  pending(order, units, age_s=age))
                for order, (units, age, negative) in spec.items()}
    until = quiet_until(pendings, running, KNOWN, rule)
    if decide(pendings, running, KNOWN, rule, T0, Moment.TICK):
        assert until is None or until <= T0  # due now: no quiet to promise
        return
    if until is None:
        return  # no promise (an order not known yet): asked every tick, as without it
    for s in later_s:
        t = T0 + timedelta(seconds=s)
        if t < until:
            assert decide(pendings, running, KNOWN, rule, t, Moment.TICK) == []
    if until != NEVER:  # the first timer ends the quiet at most a few milliseconds before it fires
        assert decide(pendings, running, KNOWN, rule, until + timedelta(milliseconds=2), Moment.TICK)
    else:
        assert decide(pendings, running, KNOWN, rule, T0 + timedelta(days=3650), Moment.TICK) == []


def test_quiet_until_is_the_timer_of_the_running_orders_pending():
    rule = ConfirmRule(every_units=100, every_seconds=60, spread_seconds=1.5)
    p = pending("A", 5, age_s=10)
    assert quiet_until({("A", "0010"): p}, "A", KNOWN, rule) == p.opened_at + timedelta(seconds=61.499)
    assert quiet_until({("A", "0010"): p}, "B", KNOWN, rule) is None  # another order's: due at once
    assert quiet_until({("X", "0010"): pending("X", 5)}, "X", KNOWN, rule) is None  # may become known
    assert quiet_until({("A", "0010"): pending("A", 100)}, "A", KNOWN, rule) is None  # count reached
    assert quiet_until({("A", "0010"): p}, "A", KNOWN, ConfirmRule(every_units=100)) == NEVER
    assert quiet_until({}, "A", KNOWN, rule) == NEVER
