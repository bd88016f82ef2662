"""Order completion (WIP issue, close, variance), manual issues, and posting to a closed order."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal as D

import pytest

from gateway.ledger.operations import OperationRefused, list_errors, trace
from gateway.ledger.orders import complete_order, issue_manually, order_view
from tests.support import ledger_with_masterdata, masterdata_fixture, post_units

MASTERDATA = masterdata_fixture("kit_manual_and_order_completion_items")

T = datetime(2026, 6, 1, 12, tzinfo=UTC)


@pytest.fixture
def engine(ledger_url, tmp_path):
    return ledger_with_masterdata(ledger_url, MASTERDATA, tmp_path)


def post(engine, start, end):
    return post_units(engine, start, end, order="8000001", at=T)


def lines(view):
    return {c.material: (c.rule, c.planned, c.backflushed, c.manual, c.wip, c.open_errors) for c in view.components}


def test_wip_accrues_until_completion_then_is_issued_and_the_variance_reported(engine):
    post(engine, 0, 30)
    post(engine, 30, 50)
    issue_manually(engine, "LABEL", D(48), "8000001", "LS1", now=T)
    before = lines(order_view(engine, "8000001"))
    assert before == {
        "PART": ("operation", D(100), D(100), D(0), D(0), D(0)),
        "LABEL": ("manual", D(50), D(0), D(48), D(0), D(0)),
        "BAG": ("order_completion", D(5), D(0), D(0), D(5), D(0)),
    }
    view = complete_order(engine, "8000001", now=T)
    assert view.order.status == "completed"
    after = {c.material: c for c in view.components}
    assert (after["BAG"].backflushed, after["BAG"].wip, after["BAG"].open_errors) == (D(3), D(0), D(2))
    assert after["LABEL"].variance == D(-2)  # two labels fewer than planned were put on by hand
    [err] = list_errors(engine)
    assert (err.material, err.missing_qty, err.confirmation_id) == ("BAG", D(2), "O-8000001")
    assert [(x.material, x.lot) for x in trace(engine, "BAG-1", direction="forward")][1:] == [("KIT", "8000001")]
    with pytest.raises(OperationRefused, match="completed already"):
        complete_order(engine, "8000001", now=T)


def test_a_confirmation_for_a_completed_order_stands_but_posts_nothing(engine):
    post(engine, 0, 10)
    complete_order(engine, "8000001", now=T)
    post(engine, 10, 20)
    errors = [e for e in list_errors(engine) if "completed" in e.reason]
    assert len(errors) == 1 and errors[0].missing_qty == D(10)
    assert lines(order_view(engine, "8000001"))["PART"][2] == D(20), "only the first confirmation was backflushed"


def test_manual_issue_is_refused_with_a_reason(engine):
    for args, kwargs, match in [
        (("LABEL", D(1000), "8000001", "LS1"), {}, "only 500"),
        (("BAG", D(1), "8000001", "LS1"), {}, "lot-tracked"),
        (("NOPE", D(1), "8000001", "LS1"), {}, "unknown material"),
        (("LABEL", D(1), "999", "LS1"), {}, "no order 999"),
        (("LABEL", D(-1), "8000001", "LS1"), {}, "positive"),
        (("LABEL", D("0.5"), "8000001", "LS1"), {}, "0 decimal"),
        (("LABEL", D(1), "8000001", "LS1"), {"lot": "X"}, "not lot-tracked"),
    ]:
        with pytest.raises(OperationRefused, match=match):
            issue_manually(engine, *args, **kwargs)


def test_an_order_with_units_not_yet_confirmed_is_not_completed(engine):
    """Completed now, they could no longer be posted to it and would wait in the error queue."""
    from sqlalchemy import insert

    from gateway.ledger import schema as t

    post(engine, 0, 10)
    with engine.begin() as conn:
        conn.execute(insert(t.pending_units), [{
            "machine": "PRESS-9", "order_no": "8000001", "operation": "0010", "yield_qty": D(7), "scrap_qty": D(1),
            "start_pos": "good=0:10", "end_pos": "good=0:17", "first_source_time": T, "last_source_time": T,
            "opened_at": T}])
    with pytest.raises(OperationRefused) as refused:
        complete_order(engine, "8000001", now=T)
    assert str(refused.value) == (
        "order 8000001 still has units counted but not yet confirmed on PRESS-9 (8 units); complete it after "
        "the machine's next confirmation (or once the machine has moved to its next order)")
    assert order_view(engine, "8000001").order.status == "released"
    with engine.begin() as conn:  # the machine confirmed them: nothing is pending any more
        conn.execute(t.pending_units.update().values(yield_qty=D(0), scrap_qty=D(0)))
    assert complete_order(engine, "8000001", now=T).order.status == "completed"
