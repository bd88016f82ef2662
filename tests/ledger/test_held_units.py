"""Units counted under an empty or unknown order: listed with quantity and age, assigned once.

On SQLite and PostgreSQL. The held units are written as the writer writes them (an
``unknown_order`` anomaly naming the order number and the pending units under it, with the
machine's counted total), then assigned through ``gateway.ledger.anomalies.assign``.
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal as D

import pytest
from sqlalchemy import insert, select, update

from gateway.domain.confirming import accumulate
from gateway.domain.records import Anomaly, AnomalyKind, Increment, Position
from gateway.ledger import schema as t
from gateway.ledger.anomalies import DecisionRefused, assign, list_anomalies
from gateway.ledger.masters import MasterCache
from gateway.ledger.posting import apply
from gateway.ledger.queries import summary
from gateway.ledger.changes import ChangeSet
from tests.support import ledger_with_masterdata, masterdata_fixture

MASTERDATA = masterdata_fixture("valve_two_orders")

T = datetime(2026, 6, 1, 12, tzinfo=UTC)


@pytest.fixture
def engine(ledger_url, tmp_path):
    engine = ledger_with_masterdata(ledger_url, MASTERDATA, tmp_path)
    with engine.begin() as conn:
        conn.execute(update(t.production_orders).where(t.production_orders.c.number == "5000009")
                     .values(status="completed"))
    return engine


def hold(engine, machine: str, order: str, units: int) -> int:
    """``units`` counted on ``machine`` under ``order`` (not released): the anomaly's id."""
    inc = Increment(machine, "good", units, Position(0, 0), Position(0, units), T)
    pending = accumulate(None, inc, order=order, operation="0010", now=T)
    what = f"order {order!r} is not in the master data" if order else "no order number on the machine"
    anomaly = Anomaly(machine, None, AnomalyKind.UNKNOWN_ORDER, f"{what}; counted units are kept pending", T,
                      order=order)
    with engine.begin() as conn:
        apply(conn, ChangeSet(pendings={pending.key: pending}, anomalies=[(anomaly, D(0))], counted={machine: D(units)}),
              MasterCache())
        return conn.execute(select(t.anomalies.c.id).where(t.anomalies.c.machine == machine)).scalar()


def test_held_units_are_listed_with_quantity_and_age_then_assigned_once(engine):
    anomaly = hold(engine, "M1", "", 12)
    [listed] = list_anomalies(engine)
    assert (listed.id, listed.kind, listed.order, listed.units_held, listed.held_since) == (
        anomaly, "unknown_order", "", D(12), T)

    confirmations, units = assign(engine, anomaly, "5000001", reason="order tag was empty")
    assert units == D(12) and len(confirmations) == 1
    with engine.connect() as conn:
        c = conn.execute(select(t.confirmations)).one()
        assert (c.id, c.order_no, c.operation, c.yield_qty, c.trigger) == (
            confirmations[0], "5000001", "0010", D(12), "assigned")
        assert conn.execute(select(t.pending_units)).all() == []
        seals = conn.execute(select(t.stock.c.qty).where(t.stock.c.material == "SEAL")).scalar()
    assert seals == D(76), "backflushed like any confirmation: 2 seals a valve"
    assert list_anomalies(engine) == [], "nothing is held any more"
    [decided] = list_anomalies(engine, include_decided=True)
    assert (decided.status, decided.decision, decided.confirmation_id) == ("assigned", "assigned", confirmations[0])
    balance = summary(engine).machines["M1"]
    assert (balance.counted, balance.confirmed_yield, balance.pending, balance.balanced) == (D(12), D(12), D(0), True)

    with pytest.raises(DecisionRefused, match=f"anomaly {anomaly} was already assigned at .*; a decision is final"):
        assign(engine, anomaly, "5000001")


@pytest.mark.parametrize(("order", "message"), [
    ("5000009", "order 5000009 is completed: held units are posted to a released order only"),
    ("4711", "order '4711' is not in the master data; load it first"),
])
def test_a_completed_or_unknown_order_is_refused_with_the_reason(engine, order, message):
    anomaly = hold(engine, "M2", "ABC", 5)
    with pytest.raises(DecisionRefused) as refused:
        assign(engine, anomaly, order)
    assert str(refused.value) == message
    [still] = list_anomalies(engine)
    assert (still.id, still.units_held, still.order) == (anomaly, D(5), "ABC")


def test_a_machine_a_live_gateway_counts_is_refused(engine):
    anomaly = hold(engine, "M3", "", 7)
    with engine.begin() as conn:
        conn.execute(insert(t.machine_leases), [{
            "machine": "M3", "owner": "gw-a", "host": "h1", "pid": 4242, "process": "p", "scope": "s", "token": 1,
            "acquired_at": 0.0, "expires_at": 4.0e9}])
    with pytest.raises(DecisionRefused, match="M3 is counted by gateway gw-a on h1 \\(pid 4242\\)"):
        assign(engine, anomaly, "5000001")
    assert list_anomalies(engine)[0].units_held == D(7)


def test_only_unknown_order_anomalies_are_assigned(engine):
    with engine.begin() as conn:
        apply(conn, ChangeSet(anomalies=[(Anomaly("M4", "good", AnomalyKind.RESET, "counter reset", T), D(0))]),
              MasterCache())
        reset = conn.execute(select(t.anomalies.c.id).where(t.anomalies.c.machine == "M4")).scalar()
    with pytest.raises(DecisionRefused, match="is of kind reset; only units held under an unknown order"):
        assign(engine, reset, "5000001")
