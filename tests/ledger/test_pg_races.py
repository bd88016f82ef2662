"""Postings that run at the same time lose nothing (PostgreSQL; SQLite serialises writers).

``SELECT … FOR UPDATE`` locks nothing for a row that does not exist yet: an order's first
progress and carry rows, a first stock row of a new lot. These tests run two transactions
on two connections that really overlap — the first posts and keeps its transaction open
until the second has started and run into its locks, then commits — and check the
ledger afterwards: progress = what was confirmed, carry = the rounded plan of the total
(setup once), stock = the sum of its movements.

The last test is the documented workflow: a confirmation waits in the error queue because
its order was not loaded; master data is loaded; ``errors reprocess`` runs while the
gateway posts the next confirmations of the same order. Many rounds, each a new order.
"""

from __future__ import annotations

import threading
import time
from collections import defaultdict
from datetime import UTC, datetime
from decimal import Decimal as D

import pytest
from sqlalchemy import func, select

from gateway.domain.backflush import plan
from gateway.domain.confirming import accumulate, confirm
from gateway.domain.records import (
    Confirmation,
    GoodsMovement,
    Increment,
    MovementKind,
    OperationProgress,
    Position,
    StockView,
)
from gateway.ledger import schema as t
from gateway.ledger.masters import MasterCache, read_materials, read_order, read_work_centers, store_masterdata
from gateway.ledger.operations import reprocess_errors
from gateway.ledger.orders import carry_of, progress_of
from gateway.ledger.posting import apply
from gateway.ledger.tx import buffered
from gateway.ledger.changes import ChangeSet
from gateway.masterdata.load import load_masterdata, to_domain
from tests.ledger.test_invariants import stock_rows
from tests.support import ledger_with_masterdata

T = datetime(2026, 6, 1, 12, tzinfo=UTC)
HOLD_S = 0.3  # how long the first transaction stays open after the second started

HEAD = """
materials:
  CAP:    {uom: PC, lot_tracked: true}
  RESIN:  {uom: KG, decimals: 3}
  INSERT: {uom: PC, lot_tracked: true}
work_centers:
  WC1: {labor_rate: 40, machine_rate: 60, overhead_pct_of_labor: 50, supply_location: LS1}
boms:
  CAP:
    base_quantity: 3
    items:
      - {item: "0010", material: RESIN, quantity: 1, operation: "0010"}
      - {item: "0020", material: INSERT, quantity: 2, operation: "0010"}
routings:
  CAP:
    operations:
      - {operation: "0010", work_center: WC1, setup_hours: 0.5, machine_hours: 0.001, labor_hours: 0.0007}
stock:
  - {material: RESIN, location: LS1, quantity: 100000}
  - {material: INSERT, location: LS1, quantity: 60000, lot: I1, received_on: 2026-01-01}
  - {material: INSERT, location: LS1, quantity: 60000, lot: I2, received_on: 2026-02-01}
orders:
"""


def masterdata(*orders: str) -> str:
    if not orders:
        return HEAD[:-1] + " {}\n"
    return HEAD + "".join(f'  "{o}": {{material: CAP, quantity: 100000, receipt_location: FG}}\n' for o in orders)


def confirmation(order: str, machine: str, start: int, end: int) -> Confirmation:
    inc = Increment(machine, "good", end - start, Position(0, start), Position(0, end), T)
    return confirm(accumulate(None, inc, order=order, operation="0010", now=T), "every_units", "PC")


def post(engine, c: Confirmation, masters: MasterCache | None = None) -> None:
    """One writer transaction of one confirmation."""
    with engine.begin() as conn:
        apply(conn, ChangeSet(confirmations=[c]), masters or MasterCache())


def overlapped(engine, first, second) -> None:
    """``first(conn)`` and ``second(conn)`` in two transactions that overlap.

    The first posts, then keeps its transaction open until the second has started and
    had ``HOLD_S`` to run into the first's locks; then it commits. The second must have
    waited for that commit: it cannot finish planning against rows the first holds.
    """
    started = threading.Barrier(2, timeout=10)
    when: dict[str, float] = {}
    failures: list[BaseException] = []

    def one():
        with engine.begin() as conn:
            first(conn)
            started.wait()
            time.sleep(HOLD_S)
            when["first_commits"] = time.monotonic()

    def two():
        started.wait()
        with engine.begin() as conn:
            second(conn)
            when["second_done"] = time.monotonic()

    run_threads([one, two], failures)
    assert not failures, failures
    assert when["second_done"] > when["first_commits"], "the second transaction did not wait for the first"


def run_threads(targets, failures: list[BaseException]) -> None:
    def guarded(target):
        try:
            target()
        except BaseException as exc:  # noqa: BLE001 — reported by the test
            failures.append(exc)

    threads = [threading.Thread(target=guarded, args=(target,)) for target in targets]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
        assert not thread.is_alive(), "a posting thread hangs (deadlock?)"


def reconcile(engine, order_no: str, confirmations: list[Confirmation]) -> None:
    """The order's ledger is what ONE confirmation of everything would have posted."""
    confirmed = sum((c.yield_qty for c in confirmations), D(0))
    with engine.connect() as conn:
        order = read_order(conn, order_no)
        whole = Confirmation("whole", "", order_no, "0010", confirmed, D(0), "PC", (), (), T, T, "check")
        expected = dict(plan(whole, order, OperationProgress(order_no, "0010"), read_materials(conn),
                             read_work_centers(conn), StockView(), carry={}).planned)
        assert progress_of(conn, order_no) == {"0010": (confirmed, D(0))}, "progress = sum of confirmed yields"
        assert {k: v for k, v in carry_of(conn, order_no).items() if v} == expected, "carry = plan of the total"
        moved = conn.execute(select(t.goods_movements).where(t.goods_movements.c.order_no == order_no)).all()
        issued = defaultdict(D)
        for m in moved:
            if m.kind in ("261", "262"):
                issued[f"item:{m.bom_item}"] -= m.qty
        assert dict(issued) == {k: v for k, v in expected.items() if k.startswith("item:")}, "issued = plan"
        received = [(m.lot, m.qty) for m in moved if m.kind == "101"]
        assert sum((q for _, q in received), D(0)) == confirmed and {lot for lot, _ in received} == {order_no}
        hours = defaultdict(D)
        for a in conn.execute(select(t.activity_postings).where(t.activity_postings.c.order_no == order_no)):
            hours[f"0010:{a.activity}:hours"] += a.hours
        assert hours["0010:setup:hours"] == D("0.5"), "setup is posted once per order operation"
        assert {k: v for k, v in hours.items() if v} == {k: v for k, v in expected.items() if k.endswith(":hours")}
        still_open = conn.execute(select(func.count()).select_from(t.error_queue).where(
            t.error_queue.c.order_no == order_no, t.error_queue.c.status == "open")).scalar_one()
        assert still_open == 0
    stock_is_its_movements(engine)


def stock_is_its_movements(engine) -> None:
    """Invariant 3: stock per material/location/lot = the sum of its goods movements."""
    with engine.connect() as conn:
        summed = defaultdict(D)
        for m in conn.execute(select(t.goods_movements)):
            summed[(m.material, m.location, m.lot)] += m.qty
    assert stock_rows(engine) == {k: v for k, v in summed.items() if v}


@pytest.mark.postgres
def test_two_postings_of_a_new_orders_first_rows_lose_nothing(pg_url, tmp_path):
    """Both are "first" postings: no progress, carry or finished-goods stock row exists yet."""
    engine = ledger_with_masterdata(pg_url, masterdata("7000001"), tmp_path)
    writer = confirmation("7000001", "M1", 0, 40)
    other = confirmation("7000001", "M2", 0, 100)
    overlapped(engine, lambda conn: apply(conn, ChangeSet(confirmations=[writer]), MasterCache()),
               lambda conn: apply(conn, ChangeSet(confirmations=[other]), MasterCache()))
    reconcile(engine, "7000001", [writer, other])


@pytest.mark.postgres
def test_two_receipts_into_a_new_lot_lose_nothing(pg_url, tmp_path):
    """No order to lock: the stock row and the lot are created, then locked, at flush."""
    engine = ledger_with_masterdata(pg_url, masterdata("7000001"), tmp_path)

    def receive(qty: int):
        def run(conn):
            with buffered(conn) as tx:
                tx.move(None, None, [GoodsMovement(MovementKind.OTHER_RECEIPT, "INSERT", "LS2", D(qty), "PC",
                                                   lot="NEW")], T)
        return run

    overlapped(engine, receive(40), receive(100))
    assert stock_rows(engine)[("INSERT", "LS2", "NEW")] == 140
    with engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(t.lots).where(t.lots.c.lot == "NEW")).scalar_one() == 1
    stock_is_its_movements(engine)


ROUNDS = 50


def test_errors_reprocess_racing_the_writer_on_a_new_order(ledger_url, tmp_path):
    engine = ledger_with_masterdata(ledger_url, masterdata(), tmp_path)
    file = tmp_path / "orders.yaml"
    for r in range(ROUNDS):
        order, machine = f"80{r:05d}", f"M{r}"
        waiting = confirmation(order, machine, 0, 30)
        post(engine, waiting)  # the order is not loaded yet: the confirmation waits in the error queue
        file.write_text(masterdata(order))
        md = load_masterdata(file)
        store_masterdata(engine, to_domain(md), md.stock)  # opening stock: already posted, skipped

        later = [confirmation(order, machine, 30, 70), confirmation(order, machine, 70, 71),
                 confirmation(order, machine, 71, 135)]
        go = threading.Barrier(2, timeout=10)
        outcome = {}
        failures: list[BaseException] = []

        def reprocess():
            go.wait()
            outcome["reprocess"] = reprocess_errors(engine, now=T)

        def writer():
            go.wait()
            masters = MasterCache()
            for c in later:
                post(engine, c, masters)

        run_threads([reprocess, writer], failures)
        assert not failures, failures
        assert len(outcome["reprocess"].resolved) == 1 and not outcome["reprocess"].still_open, outcome
        reconcile(engine, order, [waiting, *later])
