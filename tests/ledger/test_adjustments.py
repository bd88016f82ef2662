"""Adjustments in the ledger: what each kind posts, linked to its order, stock and genealogy exact, refusals."""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC, datetime
from decimal import Decimal as D

import pytest
from sqlalchemy import func, select

from gateway.ledger import schema as t
from gateway.ledger.adjustments import consumption, rework, scrap, substitute
from gateway.ledger.operations import (
    OperationRefused,
    list_errors,
    receive_stock,
    reprocess_errors,
    reverse_confirmation,
    trace,
)
from gateway.ledger.orders import carry_of, complete_order, document_kind, order_view, progress_of
from tests.support import ledger_with_masterdata, masterdata_fixture, post_units

MASTERDATA = masterdata_fixture("cap_from_resin_lots")

T = datetime(2026, 6, 1, 12, tzinfo=UTC)
ORDER = "7000001"


@pytest.fixture
def engine(ledger_url, tmp_path):
    engine = ledger_with_masterdata(ledger_url, MASTERDATA, tmp_path)
    post_units(engine, 0, 30, order=ORDER, at=T)  # 30 caps: resin 0.5 from R1 + 0.5 from R2, 30 liners
    yield engine
    assert_stock_is_the_sum_of_movements(engine)
    engine.dispose()


def assert_stock_is_the_sum_of_movements(engine):
    with engine.connect() as conn:
        moved: dict[tuple, D] = defaultdict(D)
        for m in conn.execute(select(t.goods_movements)):
            moved[(m.material, m.location, m.lot)] += m.qty
        stock = {(s.material, s.location, s.lot): s.qty for s in conn.execute(select(t.stock))}
    assert stock == {k: q for k, q in moved.items() if k in stock or q}


def posted(engine, document):
    with engine.connect() as conn:
        gm = t.goods_movements.c
        return [(m.kind, m.material, m.lot, m.qty, m.bom_item) for m in conn.execute(
            select(t.goods_movements).where(gm.confirmation_id == document).order_by(gm.id))]


def activities(engine, document):
    with engine.connect() as conn:
        return [(a.activity, a.hours, a.cost) for a in conn.execute(
            select(t.activity_postings).where(t.activity_postings.c.confirmation_id == document)
            .order_by(t.activity_postings.c.id))]


def adjustment_row(engine, document):
    with engine.connect() as conn:
        r = conn.execute(select(t.adjustments).where(t.adjustments.c.id == document)).one()
    return r.order_no, r.operation, r.kind, r.reason_code, r.note, r.material, r.qty, r.uom


def line(engine, material):
    view = order_view(engine, ORDER)
    [found] = [c for c in view.components + view.extra if c.material == material]
    return found


def where_from(engine):
    return {(x.material, x.lot): x.qty for x in trace(engine, ORDER)[1:]}


def state(engine):
    with engine.connect() as conn:
        stock = {(r.material, r.location, r.lot): r.qty for r in conn.execute(select(t.stock))}
        p = progress_of(conn, ORDER).get("0010", (D(0), D(0)))
        carry = {k: v for k, v in carry_of(conn, ORDER).items() if v}
        rows = {table.name: conn.execute(select(func.count()).select_from(table)).scalar_one()
                for table in (t.goods_movements, t.activity_postings, t.genealogy, t.adjustments, t.confirmations,
                              t.error_queue, t.deferred_components)}
    return stock, p, carry, rows


# -- scrap --------------------------------------------------------------------------------


def test_scrap_is_a_manual_confirmation_of_scrap_backflushed_linked_and_reversible(engine):
    before = state(engine)
    r = scrap(engine, ORDER, "0010", D(6), "DROPPED", "fell off the conveyor", now=T)
    doc = r.document
    assert doc.startswith("A-") and len(doc) == 14 and (r.kind, r.movements, r.queued) == ("scrap", 2, 0)
    with engine.connect() as conn:
        c = conn.execute(select(t.confirmations).where(t.confirmations.c.id == doc)).one()
    assert (c.machine, c.order_no, c.operation, c.yield_qty, c.scrap_qty, c.uom, c.trigger) == (
        "(manual)", ORDER, "0010", 0, 6, "PC", "adjustment:scrap")
    # 36 consumed so far: resin 1.2 planned, 1.0 issued → 0.2 more (R1 is empty); no goods receipt
    assert posted(engine, doc) == [("261", "RESIN", "R2", D("-0.2"), "0010"), ("261", "LINER", "", D(-6), "0020")]
    assert activities(engine, doc) == [("machine", D("0.006"), D("0.36")), ("labor", D("0.6"), D(24)),
                                       ("overhead", D(0), D(12))]
    assert adjustment_row(engine, doc) == (ORDER, "0010", "scrap", "DROPPED", "fell off the conveyor", "CAP", 6, "PC")
    assert state(engine)[1] == (30, 6), "progress moves as for any confirmation"
    resin = line(engine, "RESIN")
    assert (resin.planned, resin.backflushed, resin.adjusted, resin.variance) == (D("1.2"), 1, D("0.2"), 0)
    assert where_from(engine)[("RESIN", "R2")] == D("0.7")

    reversal = reverse_confirmation(engine, doc, "reported twice", now=T)
    assert reversal.reversal_id == f"R-{doc}" and document_kind(reversal.reversal_id) == "adjusted"
    assert state(engine)[:3] == before[:3]
    resin = line(engine, "RESIN")
    assert (resin.planned, resin.backflushed, resin.adjusted) == (1, 1, 0)
    assert where_from(engine)[("RESIN", "R2")] == D("0.5")


def test_reversal_documents_count_where_what_they_reverse_counted():
    assert [document_kind(d) for d in ("R-A-0123456789ab", "R-C-abc", "A-0123456789ab", "C-abc", "M-1", "O-7", None)] \
        == ["adjusted", "backflushed", "adjusted", "backflushed", "manual", "backflushed", "stock"]


# -- rework -------------------------------------------------------------------------------


def test_rework_issues_the_rework_items_and_labor_without_receipt_or_progress(engine):
    assert line(engine, "PAINT").issued == 0, "a confirmation never issues a rework item"
    before = state(engine)
    r = rework(engine, ORDER, "0010", D(30), "REWORK-PAINT", now=T)
    # paint 30 × 0.05 / 3 × 1.1 = 0.55 L; labor 30 × 0.3 / 3 = 3 h × 40 = 120, overhead 50 % = 60
    assert posted(engine, r.document) == [("261", "PAINT", "", D("-0.55"), "0030")]
    assert activities(engine, r.document) == [("labor", D(3), D(120)), ("overhead", D(0), D(60))]
    assert adjustment_row(engine, r.document) == (ORDER, "0010", "rework", "REWORK-PAINT", "", "CAP", 30, "PC")
    after = state(engine)
    assert after[1:3] == before[1:3], "no change to progress or to the plan totals"
    assert after[0][("CAP", "FG", ORDER)] == 30, "no goods receipt"
    paint = line(engine, "PAINT")
    assert (paint.planned, paint.adjusted, paint.variance) == (0, D("0.55"), D("0.55"))


def test_rework_short_of_stock_queues_the_rest_under_the_adjustment(engine):
    rework(engine, ORDER, "0010", D(30), "REWORK", now=T)
    r = rework(engine, ORDER, "0010", D(30), "REWORK", now=T)  # 0.45 L left of 0.55
    assert r.queued == 1 and posted(engine, r.document) == [("261", "PAINT", "", D("-0.45"), "0030")]
    [error] = list_errors(engine)
    assert (error.confirmation_id, error.material, error.missing_qty) == (r.document, "PAINT", D("0.1"))
    receive_stock(engine, "PAINT", D(5), "LS1", now=T)  # the receipt issues what was missing
    assert list_errors(engine) == [] and reprocess_errors(engine, now=T).resolved == []
    [cleared] = list_errors(engine, include_closed=True)
    assert (cleared.id, cleared.status, cleared.resolved_by) == (error.id, "resolved", "movement:12")
    assert posted(engine, r.document)[-1] == ("261", "PAINT", "", D("-0.1"), "0030")
    assert line(engine, "PAINT").adjusted == D("1.1")


# -- substitution -------------------------------------------------------------------------


def test_substitution_returns_a_to_its_latest_lots_and_issues_b_for_the_item(engine):
    r = substitute(engine, ORDER, "0010", "ALT", D("0.7"), "NO-RESIN", "R2 was wet", with_qty=D("0.8"), now=T)
    assert posted(engine, r.document) == [
        ("262", "RESIN", "R2", D("0.5"), "0010"), ("262", "RESIN", "R1", D("0.2"), "0010"),
        ("261", "ALT", "A1", D("-0.8"), "0010")]
    assert adjustment_row(engine, r.document) == (ORDER, "0010", "substitution", "NO-RESIN", "R2 was wet", "ALT",
                                                  D("0.8"), "KG")
    assert where_from(engine) == {("RESIN", "R1"): D("0.3"), ("ALT", "A1"): D("0.8")}, "R2 nets to nothing"
    resin, alt = line(engine, "RESIN"), line(engine, "ALT")
    assert (resin.backflushed, resin.adjusted, resin.variance) == (1, D("-0.7"), D("-0.7"))
    assert (alt.item, alt.operation, alt.rule, alt.adjusted, alt.variance) == (
        "0010", "0010", "substitute for RESIN", D("0.8"), D("0.8"))
    # the next confirmation still plans resin, not the substitute
    post_units(engine, 30, 33, order=ORDER, at=T)
    assert line(engine, "RESIN").backflushed == D("1.1")


def test_substitution_refusals_post_nothing(engine):
    substitute(engine, ORDER, "0010", "ALT", D("0.7"), "NO-RESIN", now=T)  # 0.3 of resin left on the order
    before = state(engine)
    for kwargs, match in [
        ({"qty": D("0.4")}, r"only 0\.3 is issued"),
        ({"qty": D("0.1"), "with_qty": D(2)}, r"not enough ALT at LS1: 2 KG needed, only 1\.3 can be issued"),
        ({"qty": D("0.1"), "with_material": "NOPE"}, "unknown material 'NOPE'"),
        ({"qty": D("0.1"), "with_material": "RESIN"}, "use a consumption adjustment"),
        ({"qty": D("0.1"), "item": "0099"}, "no BOM item '0099'"),
    ]:
        args = {"item": "0010", "with_material": "ALT", **kwargs}
        with pytest.raises(OperationRefused, match=match):
            substitute(engine, ORDER, args.pop("item"), args.pop("with_material"), args.pop("qty"), "X1", now=T,
                       **args)
    assert state(engine) == before


# -- consumption --------------------------------------------------------------------------


def test_over_and_under_consumption_issue_more_or_give_back_to_the_latest_lots(engine):
    more = consumption(engine, ORDER, "0010", D("0.3"), "SPILL", now=T)
    assert posted(engine, more.document) == [("261", "RESIN", "R2", D("-0.3"), "0010")]
    less = consumption(engine, ORDER, "0010", D("-0.9"), "OVERFLUSHED", now=T)
    assert posted(engine, less.document) == [("262", "RESIN", "R2", D("0.8"), "0010"),
                                             ("262", "RESIN", "R1", D("0.1"), "0010")]
    assert where_from(engine) == {("RESIN", "R1"): D("0.4")}
    liners = consumption(engine, ORDER, "0020", D(-5), "COUNTED", now=T)
    assert posted(engine, liners.document) == [("262", "LINER", "", D(5), "0020")]
    assert [adjustment_row(engine, r.document)[2:] for r in (more, less, liners)] == [
        ("consumption", "SPILL", "", "RESIN", D("0.3"), "KG"),
        ("consumption", "OVERFLUSHED", "", "RESIN", D("-0.9"), "KG"),
        ("consumption", "COUNTED", "", "LINER", D(-5), "PC")]
    resin = line(engine, "RESIN")
    assert (resin.planned, resin.adjusted, resin.variance) == (1, D("-0.6"), D("-0.6"))


# -- refusals -----------------------------------------------------------------------------


@pytest.mark.parametrize(("call", "match"), [
    (lambda e: scrap(e, ORDER, "0010", D(1), "bad code"), "reason code 'bad code' is not valid"),
    (lambda e: scrap(e, ORDER, "0010", D(1), ""), "reason code '' is not valid"),
    (lambda e: scrap(e, "999", "0010", D(1), "X1"), "no order 999"),
    (lambda e: scrap(e, ORDER, "0020", D(1), "X1"), r"no operation '0020' \(its operations: 0010\)"),
    (lambda e: scrap(e, ORDER, "0010", D("1.5"), "X1"), "CAP is kept in 0 decimal"),
    (lambda e: scrap(e, ORDER, "0010", D(-1), "X1"), "positive"),
    (lambda e: rework(e, ORDER, "0020", D(1), "X1"), "no operation '0020'"),
    (lambda e: rework(e, "999", "0010", D(1), "X1"), "no order 999"),
    (lambda e: consumption(e, ORDER, "0099", D(1), "X1"), "no BOM item '0099'"),
    (lambda e: consumption(e, ORDER, "0010", D("-1.001"), "X1"), r"cannot give back 1\.001: only 1 is issued"),
    (lambda e: consumption(e, ORDER, "0010", D(51), "X1"), "not enough RESIN at LS1"),
    (lambda e: consumption(e, ORDER, "0030", D(-1), "X1"), "only 0 is issued"),
    (lambda e: consumption(e, ORDER, "0010", D(0), "X1"), "non-zero"),
])
def test_refused_adjustments_post_nothing(engine, call, match):
    before = state(engine)
    with pytest.raises(OperationRefused, match=match):
        call(engine)
    assert state(engine) == before


def test_a_completed_order_takes_no_adjustment(engine):
    complete_order(engine, ORDER, now=T)
    before = state(engine)
    for call in (lambda: scrap(engine, ORDER, "0010", D(1), "X1"),
                 lambda: consumption(engine, ORDER, "0010", D(-1), "X1")):
        with pytest.raises(OperationRefused, match="order 7000001 is completed; nothing is posted to it"):
            call()
    assert state(engine) == before
