"""Reversal: exact inverse, linked, refused when it cannot be undone; carry stays right."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal as D

import pytest
from sqlalchemy import select

from gateway.ledger import schema as t
from gateway.ledger.operations import OperationRefused, list_errors, reverse_confirmation
from gateway.ledger.queries import summary
from gateway.ledger.orders import carry_of, progress_of
from tests.support import ledger_with_masterdata, masterdata_fixture, post_units

MASTERDATA = masterdata_fixture("cap_two_orders_box_at_completion")

T = datetime(2026, 6, 1, 12, tzinfo=UTC)


@pytest.fixture
def engine(ledger_url, tmp_path):
    return ledger_with_masterdata(ledger_url, MASTERDATA, tmp_path)


def post(engine, start, end, order="7000001"):
    return post_units(engine, start, end, order=order, at=T)


def snapshot(engine):
    with engine.connect() as conn:
        stock = {(r.material, r.location, r.lot): r.qty for r in conn.execute(select(t.stock))}
        progress = progress_of(conn, "7000001").get("0010", (D(0), D(0)))
        carry = carry_of(conn, "7000001")
    return stock, progress, {k: v for k, v in carry.items() if v}


def net(engine, table, column, where):
    with engine.connect() as conn:
        return sum((getattr(r, column) for r in conn.execute(select(table).where(where))), D(0))


def test_reversal_restores_everything_exactly_and_is_linked(engine):
    post(engine, 0, 10)
    before = snapshot(engine)
    c = post(engine, 10, 40)  # 30 caps: resin 1 kg over R1 (2 kg) … liners run short (25 − 10 = 15 < 30)
    assert list_errors(engine), "the shortage went to the error queue"
    result = reverse_confirmation(engine, c.id, "wrong order on the machine", now=T)
    assert result.reversal_id == f"R-{c.id}" and not result.forced
    assert snapshot(engine) == before
    assert net(engine, t.activity_postings, "cost", t.activity_postings.c.order_no == "7000001") == \
        net(engine, t.activity_postings, "cost", t.activity_postings.c.confirmation_id != f"R-{c.id}") - \
        net(engine, t.activity_postings, "cost", t.activity_postings.c.confirmation_id == c.id)
    assert net(engine, t.genealogy, "qty", t.genealogy.c.confirmation_id.in_([c.id, f"R-{c.id}"])) == 0
    assert net(engine, t.deferred_components, "qty", t.deferred_components.c.confirmation_id.in_([c.id, f"R-{c.id}"])) == 0
    assert list_errors(engine) == [], "its open errors are cancelled, not left to be reprocessed"
    with engine.connect() as conn:
        kinds = sorted(r.kind for r in conn.execute(select(t.goods_movements).where(
            t.goods_movements.c.confirmation_id == f"R-{c.id}")))
    assert kinds == ["102", "262", "262", "262"]  # receipt out; resin from two lots and liners back


def test_reversing_twice_is_refused(engine):
    c = post(engine, 0, 3)
    reverse_confirmation(engine, c.id, "test", now=T)
    with pytest.raises(OperationRefused, match=f"already reversed by R-{c.id}"):
        reverse_confirmation(engine, c.id, "again", now=T)
    with pytest.raises(OperationRefused, match="no confirmation"):
        reverse_confirmation(engine, "C-nope", "x", now=T)
    with pytest.raises(OperationRefused, match="reason"):
        reverse_confirmation(engine, c.id, " ", now=T)


def test_produced_lot_used_elsewhere_needs_force_and_the_force_is_recorded(engine):
    c = post(engine, 0, 6)
    with engine.begin() as conn:  # the produced lot leaves the receipt location
        conn.execute(t.stock.update().where(t.stock.c.material == "CAP").values(qty=D(2)))
    with pytest.raises(OperationRefused, match="only 2 of the 6 PC CAP received in lot 7000001"):
        reverse_confirmation(engine, c.id, "mistake", now=T)
    result = reverse_confirmation(engine, c.id, "mistake", force_reason="counted again, caps were scrapped", now=T)
    assert result.forced
    with engine.connect() as conn:
        row = conn.execute(select(t.reversals)).one()
    assert row.forced and row.force_reason == "counted again, caps were scrapped"


def test_after_a_reversal_the_next_confirmation_plans_from_the_right_base(engine):
    """Cumulative issue = rounded plan of what remains confirmed, whatever was reversed."""
    docs = [post(engine, i, i + 1) for i in range(7)]  # 7 × 1 cap: resin 0.1/3 kg each
    reverse_confirmation(engine, docs[2].id, "test", now=T)
    reverse_confirmation(engine, docs[5].id, "test", now=T)
    post(engine, 7, 8)
    confirmed = D(6)  # 8 − 2 reversed
    resin = summary(engine).issued[("RESIN", "KG")]
    assert resin == (confirmed * D("0.1") / 3).quantize(D("0.001"))
    setup = net(engine, t.activity_postings, "hours", t.activity_postings.c.activity == "setup")
    assert setup == D("0.5")
