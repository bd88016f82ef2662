"""Physical counts, inventory accuracy and error metrics through the ledger, on SQLite and PostgreSQL."""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC, datetime, timedelta
from decimal import Decimal as D

import pytest
from sqlalchemy import func, insert, select

from gateway.domain.records import MovementKind
from gateway.ledger import posting, schema
from gateway.ledger.inventory import (
    accuracy,
    accuracy_pct,
    age_bucket,
    error_metrics,
    record_count,
)
from gateway.ledger.operations import OperationRefused, receive_stock, reprocess_errors
from tests.support import ledger_with_masterdata, masterdata_fixture, post_units

MASTERDATA = masterdata_fixture("valve_errors_wait_for_reprocess")

NOW = datetime(2026, 6, 10, 12, tzinfo=UTC)


@pytest.fixture
def engine(ledger_url, tmp_path):
    return ledger_with_masterdata(ledger_url, MASTERDATA, tmp_path)


@pytest.fixture
def post(engine, monkeypatch):
    """Post a confirmation of units start..end on M1 as the writer would, at a chosen time."""

    def _post(start: int, end: int, at: datetime):
        monkeypatch.setattr(posting, "utcnow", lambda: at)  # posting stamps rows with its clock
        return post_units(engine, start, end, order="5000001", at=at)

    return _post


def book(engine, material, location="LS1", lot=""):
    with engine.connect() as conn:
        return conn.execute(select(schema.stock.c.qty).where(
            schema.stock.c.material == material, schema.stock.c.location == location, schema.stock.c.lot == lot)).scalar_one()


def movements(engine, kind: MovementKind):
    with engine.connect() as conn:
        return conn.execute(select(schema.goods_movements).where(schema.goods_movements.c.kind == kind.value)).all()


def assert_stock_is_sum_of_movements(engine):
    moved: dict = defaultdict(D)
    with engine.connect() as conn:
        for m in conn.execute(select(schema.goods_movements)):
            moved[(m.material, m.location, m.lot)] += m.qty
        held = {(s.material, s.location, s.lot): s.qty for s in conn.execute(select(schema.stock))}
    assert held == dict(moved)


def add_anomaly(engine, machine, at):
    with engine.begin() as conn:
        conn.execute(insert(schema.anomalies), [{"machine": machine, "counter": "good", "kind": "reset",
                                            "detail": "test", "units_held": D(0), "source_time": at,
                                            "status": "recorded", "created_at": at}])


def add_adjustment(engine, material, qty, at):
    with engine.begin() as conn:
        n = conn.execute(select(func.count()).select_from(schema.adjustments)).scalar_one()
        conn.execute(insert(schema.adjustments), [{"id": f"A-{n}", "order_no": "5000001", "kind": "consumption",
                                              "reason_code": "TEST", "material": material, "qty": qty,
                                              "uom": "PC", "created_at": at}])


# -- counting -------------------------------------------------------------------------


def test_count_loss_and_gain_post_702_and_701_and_the_book_equals_the_count(engine):
    loss = record_count(engine, "SEAL", D(7), "LS1", now=NOW)
    assert (loss.book_qty, loss.counted_qty, loss.difference, loss.movement) == (10, 7, -3, MovementKind.COUNT_LOSS)
    assert book(engine, "SEAL") == 7
    [m702] = movements(engine, MovementKind.COUNT_LOSS)
    assert (m702.material, m702.location, m702.qty, m702.uom) == ("SEAL", "LS1", D(-3), "PC")
    assert m702.confirmation_id is None and m702.order_no is None

    gain = record_count(engine, "GREASE", D("1000.5"), "LS1", now=NOW)
    assert (gain.difference, gain.movement) == (D("0.5"), MovementKind.COUNT_GAIN)
    assert book(engine, "GREASE") == D("1000.5")
    assert [m.qty for m in movements(engine, MovementKind.COUNT_GAIN)] == [D("0.5")]

    same = record_count(engine, "SEAL", D(7), "LS1", now=NOW)
    assert same.movement is None and same.difference == 0, "a matching count posts nothing"

    new_place = record_count(engine, "SEAL", D(2), "LS9", now=NOW)  # never seen there: book 0
    assert (new_place.book_qty, new_place.movement) == (0, MovementKind.COUNT_GAIN) and book(engine, "SEAL", "LS9") == 2

    with engine.connect() as conn:
        rows = conn.execute(select(schema.stock_counts).order_by(schema.stock_counts.c.id)).all()
    assert [(r.material, r.location, r.book_qty, r.counted_qty, r.uom, r.counted_at) for r in rows] == [
        ("SEAL", "LS1", 10, 7, "PC", NOW), ("GREASE", "LS1", 1000, D("1000.5"), "G", NOW),
        ("SEAL", "LS1", 7, 7, "PC", NOW), ("SEAL", "LS9", 0, 2, "PC", NOW)]
    assert_stock_is_sum_of_movements(engine)


def test_lots_are_counted_one_by_one_and_a_found_lot_is_registered(engine):
    record_count(engine, "BODY", D(4), "LS1", lot="B-1", now=NOW)
    found = record_count(engine, "BODY", D(3), "LS1", lot="B-2", now=NOW)
    assert (book(engine, "BODY", lot="B-1"), book(engine, "BODY", lot="B-2")) == (4, 3)
    assert found.movement is MovementKind.COUNT_GAIN
    with engine.connect() as conn:
        lot = conn.execute(select(schema.lots).where(schema.lots.c.lot == "B-2")).one()
    assert (lot.material, lot.received_at, lot.produced_by_order) == ("BODY", NOW, None)
    assert_stock_is_sum_of_movements(engine)


def test_counts_after_backflush_keep_stock_the_sum_of_movements(engine, post):
    post(0, 8, NOW)  # 16 seals needed, 10 on the book: 6 to the error queue
    assert book(engine, "SEAL") == 0
    record_count(engine, "SEAL", D(5), "LS1", now=NOW)
    record_count(engine, "GREASE", D(990), "LS1", now=NOW)  # book 996
    post(8, 10, NOW + timedelta(minutes=1))
    assert book(engine, "SEAL") == 1 and book(engine, "GREASE") == 989
    assert_stock_is_sum_of_movements(engine)


@pytest.mark.parametrize(("material", "qty", "location", "lot", "match"), [
    ("NOPE", D(1), "LS1", "", "unknown material 'NOPE'"),
    ("SEAL", D(-1), "LS1", "", "zero or more"),
    ("SEAL", D("NaN"), "LS1", "", "zero or more"),
    ("SEAL", D(1), "LS1", "X", "SEAL is not lot-tracked"),
    ("BODY", D(1), "LS1", "", "BODY is lot-tracked"),
    ("SEAL", D("1.5"), "LS1", "", "0 decimal"),
    ("GREASE", D("1.25"), "LS1", "", "1 decimal"),
    ("SEAL", D(1), "", "", "location"),
])
def test_counts_are_refused_with_a_reason_and_nothing_is_written(engine, material, qty, location, lot, match):
    with pytest.raises(OperationRefused, match=match):
        record_count(engine, material, qty, location, lot=lot, now=NOW)
    with engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(schema.stock_counts)).scalar_one() == 0
    assert movements(engine, MovementKind.COUNT_GAIN) == movements(engine, MovementKind.COUNT_LOSS) == []
    assert book(engine, "SEAL") == 10


# -- accuracy -------------------------------------------------------------------------


@pytest.mark.parametrize(("book_qty", "counted", "pct"), [
    ("10", "7", "70.00"), ("7", "10", "70.00"), ("0", "0", "100.00"), ("3", "3", "100.00"),
    ("0", "5", "0.00"), ("5", "0", "0.00"), ("1000", "999.5", "99.95"), ("3", "2", "66.67"),
    ("-5", "0", "0.00"), ("-1", "3", "0.00"), ("-1", "1", "0.00"),
])
def test_accuracy_percentage(book_qty, counted, pct):
    assert str(accuracy_pct(D(book_qty), D(counted))) == pct


def test_accuracy_correlates_only_what_happened_since_the_previous_count(engine, post):
    t0, t1, t2, t3, t4 = (NOW + timedelta(hours=h) for h in range(5))
    post(0, 8, t0)  # SEAL error 6 at LS1, CLIP error 8
    add_anomaly(engine, "M1", t0)
    add_adjustment(engine, "SEAL", D(-2), t0)
    record_count(engine, "SEAL", D(4), "LS1", now=t1)

    [first] = [r for r in accuracy(engine) if r.material == "SEAL"]
    assert (first.since, first.counted_at, first.counts) == (None, t1, 1)
    assert (first.book_qty, first.counted_qty, first.difference, first.accuracy_pct) == (0, 4, 4, D("0.00"))
    assert (first.errors, first.error_qty, first.adjustments, first.adjustment_qty) == (1, 6, 1, -2)
    assert (first.anomalies, first.anomaly_machines) == (1, ("M1",))

    post(8, 12, t2)  # 8 seals needed, 4 on the book: error 4
    add_anomaly(engine, "M1", t2)
    add_anomaly(engine, "M2", t2)  # M2 confirmed nothing that consumes SEAL
    add_adjustment(engine, "GREASE", D(1), t2)
    record_count(engine, "SEAL", D(1), "LS1", now=t3)
    record_count(engine, "SEAL", D(0), "LS2", now=t3)  # another location: none of LS1's errors
    post(12, 13, t4)  # after the last count: belongs to the next one
    add_anomaly(engine, "M1", t4)

    rows = {(r.material, r.location): r for r in accuracy(engine)}
    assert set(rows) == {("SEAL", "LS1"), ("SEAL", "LS2")}
    second = rows[("SEAL", "LS1")]
    assert (second.since, second.counted_at, second.counts) == (t1, t3, 2)
    assert (second.book_qty, second.counted_qty, second.accuracy_pct) == (0, 1, D("0.00"))
    assert (second.errors, second.error_qty) == (1, 4), "the error before the previous count is not counted"
    assert (second.adjustments, second.adjustment_qty) == (0, 0)
    assert (second.anomalies, second.anomaly_machines) == (1, ("M1",))
    other = rows[("SEAL", "LS2")]
    assert (other.errors, other.anomalies, other.accuracy_pct) == (0, 0, D("100.00"))


def test_error_quantity_is_what_is_still_missing(engine, post):
    post(0, 8, NOW)
    receive_stock(engine, "SEAL", D(6), "LS1", now=NOW)
    reprocess_errors(engine, now=NOW)
    record_count(engine, "SEAL", D(0), "LS1", now=NOW + timedelta(hours=1))
    [row] = [r for r in accuracy(engine) if r.material == "SEAL"]
    assert (row.errors, row.error_qty) == (1, 0)


def test_accuracy_lists_nothing_before_the_first_count(engine, post):
    post(0, 8, NOW)
    assert accuracy(engine) == []


# -- error metrics --------------------------------------------------------------------


@pytest.mark.parametrize(("age", "bucket"), [
    (timedelta(0), "< 1 h"), (timedelta(minutes=59, seconds=59), "< 1 h"), (timedelta(hours=1), "1–24 h"),
    (timedelta(hours=23, minutes=59), "1–24 h"), (timedelta(hours=24), "1–7 d"),
    (timedelta(days=6, hours=23), "1–7 d"), (timedelta(days=7), "> 7 d"), (timedelta(days=400), "> 7 d"),
])
def test_age_buckets(age, bucket):
    assert age_bucket(age) == bucket


def test_error_metrics_by_age_material_and_rate(engine, post):
    ages = [timedelta(days=10), timedelta(days=3), timedelta(hours=5), timedelta(minutes=30)]
    for i, age in enumerate(ages):  # each: a SEAL shortage (6, then 16) and a CLIP shortage (8)
        post(8 * i, 8 * (i + 1), NOW - age)
    receive_stock(engine, "SEAL", D(6), "LS1", now=NOW - timedelta(days=9))
    reprocess_errors(engine, now=NOW - timedelta(days=9))  # resolves the first SEAL item only
    receive_stock(engine, "SEAL", D(100), "LS1", now=NOW)
    receive_stock(engine, "CLIP", D(100), "LS1", now=NOW)
    post(32, 40, NOW - timedelta(minutes=10))  # enough of everything: no error
    post(40, 48, NOW + timedelta(hours=1))  # after `now`: outside the last 24 h

    m = error_metrics(engine, now=NOW)
    assert m.open_items == 7
    assert m.by_age == {"< 1 h": 2, "1–24 h": 2, "1–7 d": 2, "> 7 d": 1}
    assert [(e.material, e.uom, e.open_items, e.missing_qty, e.oldest_age) for e in m.by_material] == [
        ("CLIP", "PC", 4, D(32), timedelta(days=10)), ("SEAL", "PC", 3, D(48), timedelta(days=3))]
    assert (m.errors_created, m.confirmations) == (8, 6)
    assert m.rate_per_1000 == D("1333.3")
    assert (m.errors_created_24h, m.confirmations_24h) == (4, 3)
    assert m.rate_per_1000_24h == D("1333.3")

    later = error_metrics(engine, now=NOW + timedelta(days=30))
    assert later.by_age == {"< 1 h": 0, "1–24 h": 0, "1–7 d": 0, "> 7 d": 7}
    assert later.rate_per_1000_24h is None, "no confirmations in the last 24 h: no rate"


def test_error_metrics_of_an_empty_ledger(engine):
    m = error_metrics(engine)
    assert (m.open_items, m.by_material, m.rate_per_1000, m.rate_per_1000_24h) == (0, [], None, None)
    assert set(m.by_age.values()) == {0}
