"""Error queue, stock receipts and genealogy through the ledger, on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal as D

import pytest
from sqlalchemy import select

from gateway.ledger import schema as t
from gateway.ledger.operations import OperationRefused, list_errors, receive_stock, reprocess_errors, trace
from gateway.ledger.queries import summary
from tests.support import ledger_with_masterdata, masterdata_fixture, post_units

MASTERDATA = masterdata_fixture("valve_body_lots_by_expiry")

T = datetime(2026, 6, 1, 12, tzinfo=UTC)


@pytest.fixture
def engine(ledger_url, tmp_path):
    return ledger_with_masterdata(ledger_url, MASTERDATA, tmp_path)


def post(engine, start, end):
    return post_units(engine, start, end, order="5000001", at=T)


def _lots(engine, material):
    with engine.connect() as conn:
        return {r.lot: r.qty for r in conn.execute(select(t.stock).where(t.stock.c.material == material))}


def test_shortage_then_receipt_then_reprocess_issues_exactly_once(engine):
    c = post(engine, 0, 8)  # needs 8 bodies (6 + 10 usable, expired lot skipped) and 16 seals (10 there)
    assert _lots(engine, "BODY") == {"B-OLD": 0, "B-NEW": 8, "B-GONE": 50}
    [err] = list_errors(engine)
    assert (err.material, err.missing_qty, err.confirmation_id) == ("SEAL", D(6), c.id)
    assert summary(engine).machines["M1"].confirmed_yield == 8, "the confirmation stands"

    still = reprocess_errors(engine, now=T)
    assert still.resolved == [] and "needed 6, issued 0" in still.still_open[0][1]

    receive_stock(engine, "SEAL", D(4), "LS1", now=T)
    partly = reprocess_errors(engine, now=T)
    assert partly.still_open and list_errors(engine)[0].missing_qty == D(2)

    receive_stock(engine, "SEAL", D(100), "LS1", now=T)
    done = reprocess_errors(engine, now=T)
    assert done.resolved == [err.id] and list_errors(engine) == []
    again = reprocess_errors(engine, now=T)
    assert again.resolved == [] and again.still_open == []
    assert _lots(engine, "SEAL") == {"": D(98)}  # 10 + 4 + 100 − 16, issued once
    assert summary(engine).issued[("SEAL", "PC")] == D(16)


def test_expired_lots_are_not_issued_and_genealogy_traces_both_ways(engine):
    post(engine, 0, 8)
    lines = trace(engine, "5000001", material="VALVE")
    assert [(x.depth, x.material, x.lot, x.qty) for x in lines] == [
        (0, "VALVE", "5000001", 0), (1, "BODY", "B-NEW", D(2)), (1, "BODY", "B-OLD", D(6))]
    used = trace(engine, "B-NEW", direction="forward")
    assert [(x.material, x.lot, x.qty) for x in used[1:]] == [("VALVE", "5000001", D(2))]
    with engine.connect() as conn:
        produced = conn.execute(select(t.lots).where(t.lots.c.material == "VALVE")).one()
    assert produced.lot == "5000001" and produced.produced_by_order == "5000001"
    assert _lots(engine, "VALVE") == {"5000001": D(8)}


def test_receipts_are_refused_with_a_reason(engine):
    for args, kwargs, match in [
        (("NOPE", D(1), "LS1"), {}, "unknown material"),
        (("BODY", D(1), "LS1"), {}, "lot-tracked"),
        (("SEAL", D(1), "LS1"), {"lot": "X"}, "not lot-tracked"),
        (("SEAL", D("0.5"), "LS1"), {}, "0 decimal"),
        (("SEAL", D(0), "LS1"), {}, "positive"),
    ]:
        with pytest.raises(OperationRefused, match=match):
            receive_stock(engine, *args, **kwargs)
    with pytest.raises(OperationRefused, match="no open error item with id 99"):
        reprocess_errors(engine, [99])
    receive_stock(engine, "BODY", D(5), "LS1", lot="B-9", expires_on=date(2027, 1, 1))
    assert _lots(engine, "BODY")["B-9"] == 5
