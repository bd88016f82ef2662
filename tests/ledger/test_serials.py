"""Serial-tracked materials in the ledger: receipts serial by serial, one place per serial,
serials numbered per order, trace across levels, reversal, and a product without serials."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal as D
from pathlib import Path

import pytest
from sqlalchemy import select

from gateway.domain.confirming import accumulate, confirm
from gateway.domain.records import Increment, Position
from gateway.ledger import schema as t
from gateway.ledger.masters import MasterCache, store_masterdata
from gateway.ledger.operations import (
    OperationRefused,
    list_errors,
    receive_stock,
    reprocess_errors,
    reverse_confirmation,
    trace,
)
from gateway.ledger.posting import apply
from gateway.ledger.schema import open_engine
from gateway.ledger.tx import SerialConflict
from gateway.ledger.changes import ChangeSet
from gateway.masterdata.load import load_masterdata, to_domain

T = datetime(2026, 3, 2, 8, tzinfo=UTC)
MASTERDATA = """\
materials:
  PUMP:     {uom: PC, tracking: serial%s}
  MOTOR:    {uom: PC, tracking: serial}
  SEAL-KIT: {uom: PC, tracking: lot}
work_centers:
  WC-ASSY: {labor_rate: 40, machine_rate: 10, supply_location: LS-ASSY}
boms:
  PUMP:
    items:
      - {item: "0010", material: MOTOR,    quantity: 1, operation: "0010"}
      - {item: "0020", material: SEAL-KIT, quantity: 2, operation: "0010"}
routings:
  PUMP:
    operations:
      - {operation: "0010", work_center: WC-ASSY, labor_hours: 0.25}
orders:
  "4711": {material: PUMP, quantity: 10, receipt_location: FG}
stock:
  - {material: MOTOR, location: LS-ASSY, quantity: 3, serials: [M-1001, M-1002, M-1003], received_on: 2026-02-01}
  - {material: SEAL-KIT, location: LS-ASSY, quantity: 20, lot: SK-7}
"""
PATTERN = ', serials: "P-{order}-{seq:03}"'


def ledger(tmp_path: Path, pattern: str = PATTERN):
    (tmp_path / "md.yaml").write_text(MASTERDATA % pattern)
    md = load_masterdata(tmp_path / "md.yaml")
    engine = open_engine(f"sqlite:///{tmp_path / 'ledger.sqlite'}")
    store_masterdata(engine, to_domain(md), md.stock)
    return engine


class Line:
    """The assembly cell's good counter, confirmed unit by unit into the ledger."""

    def __init__(self, engine) -> None:
        self.engine, self.position = engine, 0

    def confirm(self, units: int) -> str:
        inc = Increment("ASSY", "good", units, Position(0, self.position), Position(0, self.position + units), T)
        self.position += units
        c = confirm(accumulate(None, inc, order="4711", operation="0010", now=T), "every_units", "PC")
        with self.engine.begin() as conn:
            apply(conn, ChangeSet(confirmations=[c]), MasterCache(ttl_s=0))
        return c.id


def stock(engine, material: str) -> dict[tuple[str, str], D]:
    with engine.connect() as conn:
        return {(r.location, r.lot): r.qty for r in conn.execute(select(t.stock).where(t.stock.c.material == material))
                if r.qty}


def test_serials_are_received_issued_and_traced_both_ways_across_levels(tmp_path):
    engine = ledger(tmp_path)
    Line(engine).confirm(2)
    assert stock(engine, "PUMP") == {("FG", "P-4711-001"): 1, ("FG", "P-4711-002"): 1}
    assert stock(engine, "MOTOR") == {("LS-ASSY", "M-1003"): 1}  # oldest receipt first: M-1001, M-1002 issued
    back = [(x.depth, x.material, x.lot, x.qty, x.serial) for x in trace(engine, "P-4711-002")]
    assert back == [(0, "PUMP", "P-4711-002", 0, True), (1, "PUMP", "4711", 1, False),
                    (2, "MOTOR", "M-1001", 1, True), (2, "MOTOR", "M-1002", 1, True), (2, "SEAL-KIT", "SK-7", 4, False)]
    forward = [(x.depth, x.material, x.lot, x.qty) for x in trace(engine, "M-1001", direction="forward")]
    assert forward == [(0, "MOTOR", "M-1001", 0), (1, "PUMP", "4711", 1), (2, "PUMP", "P-4711-001", 1),
                       (2, "PUMP", "P-4711-002", 1)]


def test_a_reversal_takes_the_serials_back_and_the_order_numbers_on(tmp_path):
    engine = ledger(tmp_path)
    line = Line(engine)
    first = line.confirm(2)
    reverse_confirmation(engine, first, "wrong order", now=T)
    assert stock(engine, "PUMP") == {}
    assert stock(engine, "MOTOR") == {("LS-ASSY", "M-1001"): 1, ("LS-ASSY", "M-1002"): 1, ("LS-ASSY", "M-1003"): 1}
    assert [x.depth for x in trace(engine, "P-4711-001")] == [0]  # the edge is netted to 0: made from nothing
    line.confirm(1)
    assert stock(engine, "PUMP") == {("FG", "P-4711-003"): 1}  # never the serial of a unit taken back


def test_a_serial_is_in_exactly_one_place(tmp_path):
    engine = ledger(tmp_path)
    with pytest.raises(SerialConflict) as refused:
        receive_stock(engine, "MOTOR", D(1), "LS-WELD", lot="M-1001", now=T)
    assert str(refused.value) == (
        "serial M-1001 of MOTOR is in stock 1 at LS-ASSY; moving 1 at LS-WELD would put it in stock other than "
        "once in one place (a serial is in exactly one place: receive a new serial, or issue this one where it is)")
    with pytest.raises(OperationRefused) as refused:
        receive_stock(engine, "MOTOR", D(2), "LS-ASSY", lot="M-1009", now=T)
    assert str(refused.value) == "MOTOR is serial-tracked: one serial is one unit, got 2 (one command per serial)"
    assert stock(engine, "MOTOR") == {("LS-ASSY", "M-1001"): 1, ("LS-ASSY", "M-1002"): 1, ("LS-ASSY", "M-1003"): 1}


def test_a_product_serial_received_by_hand_is_skipped_not_repeated(tmp_path):
    engine = ledger(tmp_path)
    receive_stock(engine, "PUMP", D(1), "FG", lot="P-4711-002", now=T)  # e.g. a returned pump
    Line(engine).confirm(2)
    assert stock(engine, "PUMP") == {("FG", "P-4711-001"): 1, ("FG", "P-4711-002"): 1, ("FG", "P-4711-003"): 1}


def test_a_shortage_of_serials_waits_in_the_error_queue_until_one_is_received(tmp_path):
    engine = ledger(tmp_path)
    Line(engine).confirm(4)
    [error] = list_errors(engine)
    assert (error.material, error.missing_qty) == ("MOTOR", 1)
    receive_stock(engine, "MOTOR", D(1), "LS-ASSY", lot="M-2001", now=T)  # the receipt issues it (self-reprocessing)
    [cleared] = list_errors(engine, include_closed=True)
    assert (cleared.status, cleared.missing_qty, cleared.resolved_by) == ("resolved", 0, "movement:13")
    assert reprocess_errors(engine, now=T).resolved == []  # nothing left for a person
    assert [x.lot for x in trace(engine, "M-2001", direction="forward")] == [
        "M-2001", "4711", "P-4711-001", "P-4711-002", "P-4711-003", "P-4711-004"]


def test_units_of_a_serial_product_without_serials_are_kept_not_received(tmp_path):
    engine = ledger(tmp_path, pattern="")
    cid = Line(engine).confirm(2)
    [error] = list_errors(engine)
    assert (error.confirmation_id, error.material, error.missing_qty) == (cid, "", 2)
    assert error.reason == ('PUMP is serial-tracked and 2 PC have no serial; give the material a serial pattern '
                            '(serials: "{order}-{seq:06}") and load the master data, then `gateway errors reprocess`')
    assert stock(engine, "PUMP") == {}
    md = load_masterdata(_write(tmp_path, MASTERDATA % PATTERN))
    store_masterdata(engine, to_domain(md), md.stock)
    assert reprocess_errors(engine, now=T).resolved == [error.id]
    assert stock(engine, "PUMP") == {("FG", "P-4711-001"): 1, ("FG", "P-4711-002"): 1}


def _write(folder: Path, text: str) -> Path:
    (folder / "md2.yaml").write_text(text)
    return folder / "md2.yaml"


def _tag_confirmation(start: int, serials: tuple[str, ...]):
    units = len(serials)
    inc = Increment("ASSY", "good", units, Position(0, start), Position(0, start + units), T)
    return accumulate(None, inc, order="4711", operation="0010", now=T, serials=serials)


def test_serials_from_the_tag_wait_with_pending_units_and_are_received_as_read(tmp_path):
    from gateway.ledger.queries import resume_state

    engine = ledger(tmp_path)
    pending = _tag_confirmation(0, ("SN-A", "SN-B"))
    with engine.begin() as conn:
        apply(conn, ChangeSet(pendings={pending.key: pending}), MasterCache(ttl_s=0))
    resumed = resume_state(engine, ["ASSY"]).pendings[pending.key]
    assert resumed.serials == ("SN-A", "SN-B")  # a restart keeps them with their units
    with engine.begin() as conn:
        apply(conn, ChangeSet(confirmations=[confirm(resumed, "shutdown", "PC")], pendings={pending.key: None}),
              MasterCache(ttl_s=0))
    assert stock(engine, "PUMP") == {("FG", "SN-A"): 1, ("FG", "SN-B"): 1}  # the tag's serials, not the pattern's


def test_a_tag_serial_already_in_stock_keeps_the_confirmation_whole_in_the_error_queue(tmp_path):
    engine = ledger(tmp_path)
    with engine.begin() as conn:
        apply(conn, ChangeSet(confirmations=[confirm(_tag_confirmation(0, ("SN-A",)), "every_units", "PC")]),
              MasterCache(ttl_s=0))
    again = confirm(_tag_confirmation(1, ("SN-A",)), "every_units", "PC")  # e.g. after a restart
    with engine.begin() as conn:
        apply(conn, ChangeSet(confirmations=[again]), MasterCache(ttl_s=0))
    [error] = list_errors(engine)
    assert (error.confirmation_id, error.material, error.missing_qty) == (again.id, "", 1)
    assert error.reason.startswith("not posted: SerialConflict: serial SN-A of PUMP is in stock 1 at FG;")
    assert stock(engine, "PUMP") == {("FG", "SN-A"): 1}


def test_a_serial_issued_to_an_order_comes_back_only_from_the_order_and_once(tmp_path):
    from gateway.ledger.inventory import record_count

    engine = ledger(tmp_path)
    first = Line(engine).confirm(1)  # M-1001 goes into the pump
    expected = ("serial M-1001 of MOTOR is issued to order 4711, not in stock; it comes back only from the order: "
                "reverse the confirmation that issued it, or `gateway adjust consumption` with a negative quantity")
    with pytest.raises(SerialConflict) as refused:  # e.g. the motor "found" and received by hand
        receive_stock(engine, "MOTOR", D(1), "LS-ASSY", lot="M-1001", now=T)
    assert str(refused.value) == expected
    with pytest.raises(SerialConflict) as refused:  # or counted
        record_count(engine, "MOTOR", D(1), "LS-ASSY", lot="M-1001", now=T)
    assert str(refused.value) == expected
    reverse_confirmation(engine, first, "wrong order", now=T)  # the reversal gives it back: once
    assert stock(engine, "MOTOR") == {("LS-ASSY", "M-1001"): 1, ("LS-ASSY", "M-1002"): 1, ("LS-ASSY", "M-1003"): 1}
    assert stock(engine, "PUMP") == {}


def test_a_reversal_after_a_give_back_returns_the_serial_the_order_still_holds(tmp_path):
    from gateway.ledger.adjustments import consumption

    engine = ledger(tmp_path)
    line = Line(engine)
    first, second = line.confirm(1), line.confirm(1)  # M-1001, then M-1002
    consumption(engine, "4711", "0010", D(-1), "UNDER-USE", now=T)  # gives back the last issued: M-1002
    assert stock(engine, "MOTOR") == {("LS-ASSY", "M-1002"): 1, ("LS-ASSY", "M-1003"): 1}
    reverse_confirmation(engine, second, "wrong order", now=T)  # M-1002 is back already: M-1001 instead
    assert stock(engine, "MOTOR") == {("LS-ASSY", "M-1001"): 1, ("LS-ASSY", "M-1002"): 1, ("LS-ASSY", "M-1003"): 1}
    assert [x.lot for x in trace(engine, "M-1001", direction="forward")] == ["M-1001"]  # its edge netted to 0
    with pytest.raises(OperationRefused) as refused:  # nothing of MOTOR is left in the order
        reverse_confirmation(engine, first, "wrong order", now=T)
    assert str(refused.value) == (
        "serial M-1001 of MOTOR was given back to stock since and order 4711 holds no other serial of item 0010 "
        "to give back: reversing would take back goods that are no longer there. Use --force WHY to reverse "
        "anyway; WHY is recorded")
    reverse_confirmation(engine, first, "wrong order", force_reason="motor returned by hand", now=T)
    assert stock(engine, "MOTOR") == {("LS-ASSY", "M-1001"): 1, ("LS-ASSY", "M-1002"): 1, ("LS-ASSY", "M-1003"): 1}
    assert stock(engine, "PUMP") == {}


def test_a_serial_given_back_and_issued_again_by_the_error_queue_is_returned_once(tmp_path):
    from gateway.ledger.adjustments import consumption

    engine = ledger(tmp_path)
    c = Line(engine).confirm(4)  # M-1001..M-1003 issued, one motor short
    consumption(engine, "4711", "0010", D(-1), "UNDER-USE", now=T)  # M-1003 back: the queue issues it again to c
    [error] = list_errors(engine, include_closed=True)
    assert error.status == "resolved" and error.resolved_by.startswith("A-")  # by the give-back
    assert stock(engine, "MOTOR") == {}
    with pytest.raises(OperationRefused, match="serial M-1003 of MOTOR was given back to stock since"):
        reverse_confirmation(engine, c, "wrong order", now=T)  # c issued M-1003 twice; it comes back once
    reverse_confirmation(engine, c, "wrong order", force_reason="checked the motors", now=T)
    assert stock(engine, "MOTOR") == {("LS-ASSY", "M-1001"): 1, ("LS-ASSY", "M-1002"): 1, ("LS-ASSY", "M-1003"): 1}
    assert [x.lot for x in trace(engine, "M-1003", direction="forward")] == ["M-1003"]
