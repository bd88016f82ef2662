"""Serials: the pattern that numbers produced units, which PLC serials go with which units,
components issued serial by serial, products received serial by serial with their genealogy."""

from datetime import UTC, date, datetime
from decimal import Decimal as D

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.domain.backflush import plan
from gateway.domain.records import (
    Confirmation,
    FlushingRule,
    GenealogyEdge,
    LotStock,
    Material,
    MovementKind,
    OperationProgress,
    OrderComponent,
    OrderOperation,
    ProductionOrder,
    StockView,
    WorkCenter,
)
from gateway.domain.serials import PatternError, serial_of, serials_of, take_serials

T0 = datetime(2026, 3, 2, tzinfo=UTC)
PUMP = Material("PUMP", "pump", "PC", 0, lot_tracked=True, serial_tracked=True, serial_pattern="P-{order}-{seq:05}")
MOTOR = Material("MOTOR", "motor", "PC", 0, lot_tracked=True, serial_tracked=True)
MATERIALS = {m.id: m for m in (PUMP, MOTOR)}
WCS = {"WC": WorkCenter("WC", "assembly", D(40), D(10), D(0), "EUR", "LS")}
ORDER = ProductionOrder("4711", "PUMP", D(100), D(1), "FG",
                        components=(OrderComponent("0010", "MOTOR", D(1), D(0), FlushingRule.OPERATION, "0010", "LS"),),
                        operations=(OrderOperation("0010", "WC", D(0), D(0), D(0), final=True),))


def confirmation(yield_qty: int, scrap: int = 0) -> Confirmation:
    return Confirmation("C1", "ASSY", "4711", "0010", D(yield_qty), D(scrap), "PC", (), (), T0, T0, "every_units")


def motors(*received: tuple[str, int]) -> StockView:
    return StockView({("MOTOR", "LS"): tuple(LotStock(s, D(1), datetime(2026, 1, day, tzinfo=UTC))
                                             for s, day in received)})


def test_pattern_numbers_units_per_order():
    assert serial_of("P-{order}-{seq:05}", "4711", 7) == "P-4711-00007"
    assert serials_of("{order}-{seq:06}", "1000125", 9, 3) == ("1000125-000009", "1000125-000010", "1000125-000011")


@pytest.mark.parametrize("pattern, message", [
    ("{order}-{line}", "serial pattern '{order}-{line}': unknown field {line} (use {order} and {seq})"),
    ("{order}-{seq:06", "serial pattern '{order}-{seq:06': unmatched '{' in format spec"),
    ("{seq:x}{order:>70}", "serial pattern '{seq:x}{order:>70}' gives '1" + " " * 66 + "4711': a serial is 1 to 64 "
                           "characters"),
    ("{0}", "serial pattern '{0}': unknown field {0} (use {order} and {seq})"),
])
def test_a_pattern_that_cannot_number_units_says_why(pattern, message):
    with pytest.raises(PatternError) as refused:
        serial_of(pattern, "4711", 1)
    assert str(refused.value) == message


def test_components_are_issued_serial_by_serial_oldest_receipt_first_each_with_a_genealogy_edge():
    p = plan(confirmation(2), ORDER, OperationProgress("4711", "0010"), MATERIALS, WCS,
             motors(("M-3", 3), ("M-1", 1), ("M-2", 2)), serials=("P-4711-00001", "P-4711-00002"))
    issued = [(m.lot, m.qty) for m in p.movements if m.kind is MovementKind.GOODS_ISSUE]
    assert issued == [("M-1", D(-1)), ("M-2", D(-1))]
    assert [g for g in p.genealogy if g.component == "MOTOR"] == [
        GenealogyEdge("MOTOR", "M-1", D(1), "PC", "PUMP", "4711"),
        GenealogyEdge("MOTOR", "M-2", D(1), "PC", "PUMP", "4711")]


def test_products_are_received_one_unit_per_serial_each_an_edge_from_the_orders_lot():
    p = plan(confirmation(2, scrap=1), ORDER, OperationProgress("4711", "0010"), MATERIALS, WCS,
             motors(("M-1", 1), ("M-2", 2), ("M-3", 3)), serials=("P-4711-00001", "P-4711-00002"))
    receipts = [(m.location, m.lot, m.qty) for m in p.movements if m.kind is MovementKind.GOODS_RECEIPT]
    assert receipts == [("FG", "P-4711-00001", D(1)), ("FG", "P-4711-00002", D(1))]
    assert [g for g in p.genealogy if g.component == "PUMP"] == [
        GenealogyEdge("PUMP", "4711", D(1), "PC", "PUMP", "P-4711-00001"),
        GenealogyEdge("PUMP", "4711", D(1), "PC", "PUMP", "P-4711-00002")]
    assert len([m for m in p.movements if m.kind is MovementKind.GOODS_ISSUE]) == 3  # scrap consumed a motor too


def test_a_serial_missing_for_a_shortage_goes_to_the_error_queue_not_negative():
    p = plan(confirmation(3), ORDER, OperationProgress("4711", "0010"), MATERIALS, WCS, motors(("M-1", 1)),
             serials=("a", "b", "c"))
    assert [(e.material, e.missing_qty) for e in p.errors] == [("MOTOR", D(2))]
    assert p.errors[0].reason == ("not enough stock of MOTOR at LS: needed 3, issued 1; receive stock "
                                  "(`gateway stock receive`): the receipt issues it")


@pytest.mark.parametrize("serials", [("a",), ("a", "a")])
def test_a_serial_product_is_never_received_without_one_different_serial_per_unit(serials):
    with pytest.raises(ValueError) as refused:
        plan(confirmation(2), ORDER, OperationProgress("4711", "0010"), MATERIALS, WCS,
             motors(("M-1", 1), ("M-2", 2)), serials=serials)
    assert str(refused.value).startswith("2 PC of PUMP need as many different serials")


def test_take_serials_holds_missed_and_repeated_serials():
    took = take_serials(["S-1", "S-2", "S-2"], 4, used=["S-0"])
    assert (took.serials, took.missing, took.repeated, took.held) == (("S-1", "S-2"), 1, ("S-2",), 2)
    assert take_serials(["S-0", "S-3"], 2, used=["S-0"]).repeated == ("S-0",)
    assert take_serials(["S-1", "S-2", "S-3"], 2).serials == ("S-1", "S-2")  # S-3: the counter is behind


@given(fresh=st.lists(st.sampled_from("ABCDEFG"), max_size=12), units=st.integers(0, 12),
       used=st.sets(st.sampled_from("ABCDEFG"), max_size=4))
def test_take_serials_accounts_for_every_unit_and_never_reuses_a_serial(fresh, units, used):
    took = take_serials(fresh, units, used)
    assert len(took.serials) + took.held == units
    assert len(set(took.serials)) == len(took.serials) and not set(took.serials) & used


def test_split_at_gives_disjoint_ranges_within_an_epoch_over_a_rollover_and_after_a_reset():
    from gateway.domain.records import Increment, Position
    from gateway.domain.serials import split_at

    plain = Increment("M", "good", 5, Position(0, 10), Position(0, 15), T0)
    head, at = split_at(plain, 3, 2**16)
    assert (head.counts, head.start, head.end, at) == (3, Position(0, 10), Position(0, 13), Position(0, 13))
    rollover = Increment("M", "good", 6, Position(0, 65533), Position(1, 3), T0)  # 65533, 34, 35, 0, 1, 2 → 3
    assert split_at(rollover, 2, 2**16)[1] == Position(0, 65535)
    assert split_at(rollover, 4, 2**16)[1] == Position(1, 1)
    reset = Increment("M", "good", 4, Position(0, 900), Position(1, 4), T0)  # a PLC reset: counted from 0
    assert split_at(reset, 1, 2**16)[1] == Position(1, 1)
    with pytest.raises(ValueError):
        split_at(plain, 6, 2**16)


def test_a_bom_item_selection_beats_the_materials():
    from dataclasses import replace

    first_expiry = StockView({("MOTOR", "LS"): (
        LotStock("M-old", D(1), datetime(2026, 1, 1, tzinfo=UTC), date(2027, 1, 1)),
        LotStock("M-new", D(1), datetime(2026, 2, 1, tzinfo=UTC), date(2026, 6, 1)))})
    fefo_item = replace(ORDER, components=(replace(ORDER.components[0], selection="fefo"),))
    for order, issued in ((ORDER, "M-old"), (fefo_item, "M-new")):  # the material: fifo
        p = plan(confirmation(1), order, OperationProgress("4711", "0010"), MATERIALS, WCS, first_expiry,
                 serials=("P-4711-00001",))
        assert [m.lot for m in p.movements if m.kind is MovementKind.GOODS_ISSUE] == [issued]
