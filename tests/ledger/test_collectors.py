"""Cost collectors in the ledger (SQLite and PostgreSQL): created by the first change-set that
uses one, posted to like an order (backflush, activities, goods receipt, reversal, adjustment),
closed with their period — WIP issued, balance settled — and closed to anything after that."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime
from decimal import Decimal as D

import pytest
from sqlalchemy import select

from gateway.domain.confirming import accumulate, confirm
from gateway.domain.records import Increment, Position
from gateway.domain.repetitive import CollectorKey
from gateway.ledger import adjustments
from gateway.ledger import schema
from gateway.ledger.changes import ChangeSet
from gateway.ledger.collectors import close_period, collector_costs, list_collectors, read_collector
from gateway.ledger.masters import MasterCache, store_masterdata
from gateway.ledger.operations import OperationRefused, list_errors, reprocess_errors, reverse_confirmation
from gateway.ledger.orders import complete_order, order_view
from gateway.ledger.posting import apply
from gateway.ledger.reports import summary
from gateway.ledger.resume import order_directory
from gateway.masterdata.load import load_masterdata, to_domain
from tests.integration.lines import ROOT
from tests.support import ledger_with_masterdata, post_units

MASTERDATA = (ROOT / "docs" / "worked-example-repetitive.yaml").read_text()  # the worked example's

NOV = CollectorKey("HOUSING-B", "0001", "LINE-2", "2026-11")
DEC = CollectorKey("HOUSING-B", "0001", "LINE-2", "2026-12")
T = datetime(2026, 11, 30, 12, tzinfo=UTC)
AFTER = datetime(2026, 11, 30, 23, 0, 1, tzinfo=UTC)  # 00:00:01 on 1 December in Berlin


@pytest.fixture
def engine(ledger_url, tmp_path):
    return ledger_with_masterdata(ledger_url, MASTERDATA, tmp_path)


def post(engine, start, end, key=NOV, at=T):
    return post_units(engine, start, end, order=key.number, at=at, collector=key, machine="MOLD-05")


def movements(engine, document):
    gm = schema.goods_movements.c
    with engine.connect() as conn:
        return [(r.kind, r.material, r.qty, r.value) for r in conn.execute(
            select(schema.goods_movements).where(gm.confirmation_id == document).order_by(gm.id))]


def test_a_collector_is_created_by_its_first_confirmation_and_posts_as_an_order_does(engine):
    assert list_collectors(engine) == []
    c1 = post(engine, 0, 250)
    [row] = list_collectors(engine)
    assert (row.number, row.key, row.status) == ("HOUSING-B.0001@LINE-2:2026-11", NOV, "open")
    order = order_view(engine, NOV.number)
    assert (order.order.material, order.order.status, order.order.receipt_location) == ("HOUSING-B", "released",
                                                                                         "FG-01")
    # 250 × 2.5 ÷ 50 = 12.5 kg granulate at 3.20, 250 × 100 ÷ 50 = 500 inserts at 0.04, the receipt at 1.20;
    # the cartons (1 per 50 good) accrue until the period is closed
    assert movements(engine, c1.id) == [("261", "PA66-GRANULE", D("-12.5"), D("-40")),
                                        ("261", "INSERT-M4", D(-500), D("-20")),
                                        ("101", "HOUSING-B", D(250), D("300"))]
    assert {c.material: c.wip for c in order.components}["CARTON"] == D(5)
    with engine.connect() as conn:
        acts = {r.activity: (r.hours, r.cost) for r in conn.execute(
            select(schema.activity_postings).where(schema.activity_postings.c.confirmation_id == c1.id))}
    # setup 0.5 h once per collector; machine 250 × 0.4 ÷ 100 h at 25, labor 250 × 1.2 ÷ 100 h at 38.50,
    # overhead 80 % of setup and labor
    assert acts == {"setup": (D("0.5"), D("19.25")), "machine": (D(1), D(25)), "labor": (D(3), D("115.5")),
                    "overhead": (D(0), D("107.8"))}
    c2 = post(engine, 250, 300)
    with engine.connect() as conn:
        kinds = {r.activity for r in conn.execute(
            select(schema.activity_postings).where(schema.activity_postings.c.confirmation_id == c2.id))}
    assert "setup" not in kinds  # once per collector and operation
    directory = order_directory(engine)
    assert directory.uoms[NOV.number] == "PC" and directory.repetitive.collectors[NOV.number] == NOV


def test_period_close_issues_the_wip_and_settles_the_balance(engine):
    post(engine, 0, 250)
    post(engine, 250, 300)
    adjustments.consumption(engine, NOV.number, "0010", D("1.5"), "PURGE", "purging after a colour change", now=T)
    post(engine, 0, 40, key=DEC, at=AFTER)  # December's collector is left open
    with pytest.raises(OperationRefused, match=r"ends 2026-12-01 00:00 Europe/Berlin"):
        close_period(engine, "2026-11", now=datetime(2026, 11, 30, 22, 59, tzinfo=UTC))
    closed = close_period(engine, "2026-11", now=AFTER)
    [row] = closed.collectors
    assert (row.number, row.status, row.yield_qty, row.received) == (NOV.number, "closed", D(300), D(300))
    # The 6 cartons accrued (300 good ÷ 50) are issued at close, under the collector's own document.
    assert movements(engine, f"O-{NOV.number}") == [("261", "CARTON", D(-6), D("-3.6"))]
    # actual: components 12.5 + 2.5 + 1.5 kg at 3.20 (52.80) + 600 inserts at 0.04 (24.00) + 6 cartons (3.60);
    # activities 267.55 (the first confirmation) + 46.58 (50 more: 5.00 machine, 23.10 labor, 18.48 overhead);
    # target: 300 received at the standard price of 1.20
    costs = row.costs["EUR"]
    assert (costs.materials, costs.activities, costs.actual, costs.target, costs.variance) == (
        D("80.4"), D("314.13"), D("394.53"), D("360"), D("34.53"))
    assert [r.number for r in list_collectors(engine, status="open")] == [DEC.number]
    with engine.connect() as conn:
        assert read_collector(conn, NOV.number).costs == {"EUR": costs}  # as settled, also when read again
        audit = conn.execute(select(schema.audit_log)).all()
        assert audit == []  # no person's action in this test: nothing recorded (see the app test)
    with pytest.raises(OperationRefused, match="period 2026-11 is closed already"):
        close_period(engine, "2026-11", now=AFTER)
    with pytest.raises(OperationRefused, match="no cost collector of period 2026-10"):
        close_period(engine, "2026-10", now=AFTER)


def test_a_closed_collector_takes_nothing_more(engine):
    c1 = post(engine, 0, 100)
    close_period(engine, "2026-11", now=AFTER)
    late = post(engine, 100, 110)  # a confirmation that reached the ledger after the close
    [error] = list_errors(engine)
    assert (error.confirmation_id, error.missing_qty) == (late.id, D(10))
    assert f"order {NOV.number} is closed; nothing is posted to it" in error.reason
    assert movements(engine, late.id) == []
    assert summary(engine).machines["MOLD-05"].confirmed_yield == D(110)  # it stands, with its units
    with pytest.raises(OperationRefused, match="cost collector of period 2026-11, closed"):
        reverse_confirmation(engine, c1.id, "counted twice", now=AFTER)
    with pytest.raises(OperationRefused, match="is closed; nothing is posted to it"):
        adjustments.scrap(engine, NOV.number, "0010", D(2), "DAMAGED", now=AFTER)
    post(engine, 0, 10, key=DEC, at=AFTER)
    with pytest.raises(OperationRefused, match=r"is a cost collector: it is closed with its period \(`gateway "
                                               r"period close 2026-12`\), not completed"):
        complete_order(engine, DEC.number, now=AFTER)
    assert reverse_confirmation(engine, late.id, "reached a closed period", now=AFTER).movements == 0
    assert list_errors(engine) == []  # the late one's queue entry is cancelled by its reversal


def test_reversal_and_adjustment_on_an_open_collector(engine):
    c1 = post(engine, 0, 100)
    before = collector_costs_now(engine)
    c2 = post(engine, 100, 150)
    result = reverse_confirmation(engine, c2.id, "test parts", now=T)
    assert result.movements == 3  # granulate and inserts back (262), the receipt out (102)
    assert collector_costs_now(engine) == before  # the reversal nets the collector's balance to what it was
    adjustments.scrap(engine, NOV.number, "0010", D(4), "DAMAGED", "dropped in the line", now=T)
    view = order_view(engine, NOV.number)
    assert view.progress["0010"] == (D(100), D(4))
    granulate = {c.material: c for c in view.components}["PA66-GRANULE"]
    assert granulate.planned == D("5.2")  # 104 units × 0.05 kg: the scrapped 4 consume too (basis total)
    assert c1.order == NOV.number


def collector_costs_now(engine):
    with engine.connect() as conn:
        return collector_costs(conn, NOV.number)


def test_a_collector_of_a_version_loaded_later_waits_in_the_error_queue(engine, ledger_url, tmp_path):
    later = CollectorKey("HOUSING-B", "0002", "LINE-2", "2026-11")
    c = post(engine, 0, 20, key=later)
    assert [r.number for r in list_collectors(engine)] == [later.number]
    [error] = list_errors(engine)
    assert error.confirmation_id == c.id and "not in the master data" in error.reason
    assert later.number not in order_directory(engine).uoms  # the service keeps its units held meanwhile
    path = tmp_path / "v2.yaml"
    path.write_text(MASTERDATA.replace('receipt_location: FG-01}',
                                       'receipt_location: FG-01}\n    "0002": {receipt_location: FG-02}')
                    .split("stock:")[0])
    md = load_masterdata(path)
    store_masterdata(engine, to_domain(md), [])
    assert later.number in order_directory(engine).uoms  # known now: its units are confirmed to it
    post(engine, 20, 30, key=later)  # the next change-set that uses it writes its standing order
    assert reprocess_errors(engine, now=T).resolved  # and the waiting confirmation is posted
    assert order_view(engine, later.number).received == D(30)
    assert order_view(engine, later.number).order.receipt_location == "FG-02"


@pytest.mark.postgres
def test_two_transactions_creating_the_same_collector_at_once_make_one_and_post_setup_once(pg_url, tmp_path):
    """Two gateways (two machines of one line) confirm the first units of a new period at the same
    moment: the first transaction creates the collector and stays open until the second has run into
    it; afterwards there is one collector, one standing order, both confirmations posted, the setup
    once, and progress = what was confirmed."""
    engine = ledger_with_masterdata(pg_url, MASTERDATA, tmp_path)
    started, results = threading.Event(), {}

    def first():
        inc = Increment("MOLD-05", "good", 250, Position(0, 0), Position(0, 250), T)
        c = confirm(accumulate(None, inc, order=NOV.number, operation="0010", now=T), "every_units", "PC")
        with engine.begin() as conn:
            apply(conn, ChangeSet(confirmations=[c], collectors={NOV.number: NOV}), MasterCache())
            started.set()
            time.sleep(0.5)  # the second transaction starts and runs into this one's rows
        results["first"] = c.id

    def second():
        started.wait(10)
        results["second"] = post_units(engine, 0, 100, order=NOV.number, at=T, collector=NOV, machine="MOLD-06").id

    threads = [threading.Thread(target=first), threading.Thread(target=second)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert set(results) == {"first", "second"}
    assert [r.number for r in list_collectors(engine)] == [NOV.number]
    with engine.connect() as conn:
        po = schema.production_orders.c
        assert conn.execute(select(po.number).where(po.number == NOV.number)).scalars().all() == [NOV.number]
        ap = schema.activity_postings.c
        setups = conn.execute(select(ap.hours).where(ap.activity == "setup")).scalars().all()
        confirmed = conn.execute(select(schema.confirmations.c.id)).scalars().all()
    assert sorted(confirmed) == sorted(results.values())
    assert setups == [D("0.5")]  # once per collector and operation, not once per transaction
    assert order_view(engine, NOV.number).order.status == "released"
    assert summary(engine).received[("HOUSING-B", "PC")] == D(350)
    engine.dispose()
