"""Self-reprocessing of the error queue: the posting that adds stock issues what waited for it.

On SQLite and PostgreSQL, through the same functions the CLI and the writer use: a receipt,
a count gain, a reversal and an order's goods receipt each clear the open errors their stock
can satisfy, oldest first, FEFO and expiry respected, in their own transaction, and the item
names the posting that cleared it. A material with ``auto_reprocess: false`` waits.
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal as D

import pytest
from sqlalchemy import select

from gateway.ledger import schema as t
from gateway.ledger.inventory import record_count
from gateway.ledger.operations import list_errors, receive_stock, reprocess_errors, reverse_confirmation, trace
from tests.support import ledger_with_masterdata, masterdata_fixture, post_units

MASTERDATA = masterdata_fixture("valve_and_pump_with_prices")

T = datetime(2026, 6, 1, 12, tzinfo=UTC)


@pytest.fixture
def engine(ledger_url, tmp_path):
    return ledger_with_masterdata(ledger_url, MASTERDATA, tmp_path)


def errors(engine, *, all_=False):
    return {(e.order, e.material): (e.missing_qty, e.status, e.resolved_by)
            for e in list_errors(engine, include_closed=all_)}


def stock(engine, material):
    with engine.connect() as conn:
        return {r.lot: r.qty for r in conn.execute(select(t.stock).where(t.stock.c.material == material)) if r.qty}


def test_a_receipt_clears_the_oldest_errors_first_fefo_and_expiry_respected(engine):
    first = post_units(engine, 0, 5, order="5000001", at=T)  # 5 bodies needed, 3 there; 10 seals, 4 there
    post_units(engine, 0, 4, order="5000002", at=T, machine="M2")  # 4 bodies, 8 seals: none there
    assert errors(engine) == {
        ("5000001", "BODY"): (D(2), "open", None), ("5000001", "SEAL"): (D(6), "open", None),
        ("5000001", "GASKET"): (D(5), "open", None),
        ("5000002", "BODY"): (D(4), "open", None), ("5000002", "SEAL"): (D(8), "open", None),
        ("5000002", "GASKET"): (D(4), "open", None)}

    receive_stock(engine, "BODY", D(10), "LS1", lot="B-OLD", expires_on=date(2026, 5, 1), now=T)  # expired
    assert errors(engine)[("5000001", "BODY")] == (D(2), "open", None), "an expired lot is never issued"
    receive_stock(engine, "BODY", D(1), "LS1", lot="B-LATE", expires_on=date(2027, 12, 31), now=T)
    receive_stock(engine, "BODY", D(4), "LS1", lot="B-SOON", expires_on=date(2026, 9, 30), now=T)
    with engine.connect() as conn:
        soon = conn.execute(select(t.goods_movements.c.id).where(t.goods_movements.c.lot == "B-SOON")).scalar()
    # B-LATE's receipt cleared half of the oldest item; B-SOON's the rest of it, then 3 of the next.
    assert errors(engine, all_=True)[("5000001", "BODY")] == (D(0), "resolved", f"movement:{soon}")
    assert errors(engine)[("5000002", "BODY")] == (D(1), "open", f"movement:{soon}")
    assert stock(engine, "BODY") == {"B-OLD": D(10)}, "everything usable was issued, the expired lot stays"
    back = trace(engine, "5000001", material="VALVE")
    assert [(x.lot, x.qty) for x in back[1:]] == [("B-1", D(3)), ("B-LATE", D(1)), ("B-SOON", D(1))]
    assert first.id in {e.confirmation_id for e in list_errors(engine, include_closed=True)}


def test_a_material_that_waits_for_a_person_is_left_alone(engine):
    post_units(engine, 0, 2, order="5000001", at=T)
    receive_stock(engine, "GASKET", D(50), "LS1", now=T)
    assert errors(engine)[("5000001", "GASKET")] == (D(2), "open", None)
    assert stock(engine, "GASKET") == {"": D(50)}
    result = reprocess_errors(engine, now=T)
    assert errors(engine, all_=True)[("5000001", "GASKET")] == (D(0), "resolved", "errors reprocess")
    assert len(result.resolved) == 1 and stock(engine, "GASKET") == {"": D(48)}


def test_a_count_gain_and_a_reversal_clear_errors_and_are_named(engine):
    post_units(engine, 0, 2, order="5000001", at=T)  # seals: 4 needed, 4 there
    short = post_units(engine, 0, 3, order="5000002", at=T, machine="M2")  # 6 seals short
    count = record_count(engine, "SEAL", D(2), "LS1", now=T)
    assert errors(engine)[("5000002", "SEAL")] == (D(4), "open", f"count:{count.id}")
    assert stock(engine, "SEAL") == {}
    first = [e for e in list_errors(engine, include_closed=True) if e.order == "5000001"]
    assert {(e.material, e.status) for e in first} == {("GASKET", "open")}
    # Reversing order 5000001's confirmation gives its 4 seals back: they go to 5000002 at once.
    with engine.connect() as conn:
        c1 = conn.execute(select(t.confirmations.c.id).where(t.confirmations.c.order_no == "5000001")).scalar()
    reverse_confirmation(engine, c1, "counted twice", force_reason="test", now=T)
    assert errors(engine, all_=True)[("5000002", "SEAL")] == (D(0), "resolved", f"R-{c1}")
    assert stock(engine, "SEAL") == {}
    assert short.id != c1


def test_an_orders_goods_receipt_clears_the_next_levels_errors_in_the_writers_transaction(engine):
    post_units(engine, 0, 3, order="6000001", at=T, machine="M3")  # 6 valves needed, none in FG
    assert errors(engine)[("6000001", "VALVE")] == (D(6), "open", None)
    valves = post_units(engine, 0, 8, order="5000001", at=T)  # 8 valves received into FG
    assert errors(engine, all_=True)[("6000001", "VALVE")] == (D(0), "resolved", valves.id)
    assert stock(engine, "VALVE") == {"5000001": D(2)}
    assert [(x.material, x.lot) for x in trace(engine, "5000001", material="VALVE", direction="forward")[1:]] == [
        ("PUMP", "6000001")]
