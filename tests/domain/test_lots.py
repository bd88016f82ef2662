"""Lot selection (FIFO / FEFO, expiry) and genealogy from backflush planning."""

from datetime import UTC, date, datetime
from decimal import Decimal as D

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.domain.backflush import plan
from gateway.domain.lots import allocate
from gateway.domain.records import (
    Confirmation,
    FlushingRule,
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

TODAY = date(2026, 6, 1)


def lot(name, qty, received_day, expires=None):
    return LotStock(name, D(qty), datetime(2026, 5, received_day, tzinfo=UTC), expires)


LOTS = [
    lot("B", 5, 10, date(2026, 6, 20)),
    lot("A", 5, 2, date(2026, 7, 30)),
    lot("C", 5, 20, date(2026, 6, 5)),
]

CASES = [
    ("fifo takes the oldest receipt first", D(7), LOTS, "fifo", [("A", D(5)), ("B", D(2))], D(0), ()),
    ("fefo takes the earliest expiry first", D(7), LOTS, "fefo", [("C", D(5)), ("B", D(2))], D(0), ()),
    ("exact fit", D(15), LOTS, "fifo", [("A", D(5)), ("B", D(5)), ("C", D(5))], D(0), ()),
    ("shortage leaves the rest missing", D(20), LOTS, "fifo", [("A", D(5)), ("B", D(5)), ("C", D(5))], D(5), ()),
    ("expired lot is never issued", D(4), [lot("OLD", 10, 1, date(2026, 5, 31)), lot("NEW", 10, 9)], "fifo",
     [("NEW", D(4))], D(0), ("OLD",)),
    ("expiring today is still usable", D(4), [lot("TODAY", 10, 1, TODAY)], "fefo", [("TODAY", D(4))], D(0), ()),
    ("empty and negative lots are skipped", D(3), [lot("E", 0, 1), lot("N", -2, 2), lot("OK", 5, 3)], "fifo",
     [("OK", D(3))], D(0), ()),
    ("lots without expiry go last under fefo", D(3), [lot("NOEXP", 5, 1), lot("EXP", 5, 9, date(2027, 1, 1))], "fefo",
     [("EXP", D(3))], D(0), ()),
]


@pytest.mark.parametrize("qty,lots,rule,picks,missing,expired", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_allocation(qty, lots, rule, picks, missing, expired):
    a = allocate(qty, lots, rule, TODAY)
    assert list(a.picks) == picks
    assert a.missing == missing
    assert a.expired == expired


def test_unknown_selection_rule_is_refused():
    with pytest.raises(ValueError, match="fifo or fefo"):
        allocate(D(1), LOTS, "lifo", TODAY)


@given(
    qty=st.decimals(min_value=0, max_value=100, places=2),
    sizes=st.lists(st.decimals(min_value=0, max_value=30, places=2), max_size=6),
    rule=st.sampled_from(["fifo", "fefo"]),
)
def test_allocation_never_takes_more_than_a_lot_has_and_accounts_for_everything(qty, sizes, rule):
    lots = [lot(f"L{i}", s, i + 1, date(2026, 7, i + 1)) for i, s in enumerate(sizes)]
    a = allocate(qty, lots, rule, TODAY)
    have = {x.lot: x.qty for x in lots}
    assert all(0 < q <= have[name] for name, q in a.picks)
    assert a.issued + a.missing == qty
    assert a.missing == max(D(0), qty - sum(have.values()))


def test_lot_tracked_issue_splits_across_lots_and_links_every_lot_to_the_produced_lot():
    materials = {
        "FG": Material("FG", "product", "PC", 0, lot_tracked=True),
        "RESIN": Material("RESIN", "resin", "KG", 3, lot_tracked=True, lot_selection="fefo"),
    }
    wcs = {"WC": WorkCenter("WC", "moulding", D(40), D(60), D(0), "EUR", "LS")}
    order = ProductionOrder(
        "1000200", "FG", D(100), D(1), "FG-01",
        components=(OrderComponent("0010", "RESIN", D("0.25"), D(0), FlushingRule.OPERATION, "0010", "LS"),),
        operations=(OrderOperation("0010", "WC", D(0), D(0), D(0), final=True),),
    )
    stock = StockView({("RESIN", "LS"): (lot("R1", "3", 1, date(2026, 12, 1)), lot("R2", "10", 5, date(2026, 9, 1)),
                                         lot("R0", "50", 1, date(2026, 1, 1)))})
    conf = Confirmation("C1", "M", "1000200", "0010", D(50), D(2), "PC", (), (), datetime(2026, 6, 1, tzinfo=UTC),
                        datetime(2026, 6, 1, tzinfo=UTC), "every_units")
    p = plan(conf, order, OperationProgress("1000200", "0010"), materials, wcs, stock)
    issues = [(m.lot, -m.qty) for m in p.movements if m.kind is MovementKind.GOODS_ISSUE]
    assert issues == [("R2", D("10")), ("R1", D("3"))]  # 52 × 0.25 = 13 kg, FEFO, expired R0 skipped
    assert [(e.component_lot, e.qty, e.product_lot) for e in p.genealogy] == [("R2", D(10), "1000200"),
                                                                              ("R1", D(3), "1000200")]
    [receipt] = [m for m in p.movements if m.kind is MovementKind.GOODS_RECEIPT]
    assert (receipt.lot, receipt.qty) == ("1000200", D(50))
    assert not p.errors


def test_lot_tracked_shortage_names_the_expired_lots():
    materials = {"FG": Material("FG", "p", "PC", 0), "RESIN": Material("RESIN", "r", "KG", 3, lot_tracked=True)}
    wcs = {"WC": WorkCenter("WC", "m", D(1), D(1), D(0), "EUR", "LS")}
    order = ProductionOrder(
        "1", "FG", D(1), D(1), "FG", components=(
            OrderComponent("0010", "RESIN", D(1), D(0), FlushingRule.OPERATION, "0010", "LS"),),
        operations=(OrderOperation("0010", "WC", D(0), D(0), D(0), final=True),))
    stock = StockView({("RESIN", "LS"): (lot("OLD", "100", 1, date(2026, 1, 1)),)})
    t = datetime(2026, 6, 1, tzinfo=UTC)
    p = plan(Confirmation("C", "M", "1", "0010", D(5), D(0), "PC", (), (), t, t, "x"), order,
             OperationProgress("1", "0010"), materials, wcs, stock)
    [err] = p.errors
    assert err.missing_qty == D(5) and "expired lots not issued: OLD" in err.reason
