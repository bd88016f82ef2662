"""Property tests of the backflush engine against a real ledger.

Hypothesis draws master data (components with random ratios, scrap, decimals, lots,
FIFO/FEFO) and a random sequence of operations — confirmations, stock receipts,
error-queue reprocessing, reversals, consumption adjustments — and after every sequence
checks what must always hold:

1. stock per material/location/lot = the sum of its goods movements (opening, receipts,
   issues, reversals, adjustments);
2. a reversal restores the stock exactly;
3. every issued lot-tracked unit has a genealogy edge to the order's produced lot;
4. per component, backflush (issued + still queued) = the rounded plan for the
   quantity that stands confirmed (machine confirmations and scrap reported by hand; good
   units only for a component on ``basis: yield``), however it was split, reversed and
   reprocessed, by hand or by the posting that added stock; consumption adjustments are extra.
   So self-reprocessing never issues an error twice;
5. self-reprocessing never issues more than there is (no stock goes below zero), and it
   leaves nothing usable behind: an open error of a material with ``auto_reprocess`` has
   no stock at its location (every lot here is unexpired);
6. the value of stock (Σ quantity × standard price) = the sum of the values of all goods
   movements.
"""

from __future__ import annotations

import os
from collections import defaultdict
from datetime import UTC, datetime
from decimal import Decimal as D
from fractions import Fraction

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select

from gateway.domain.backflush import quantize
from gateway.domain.confirming import accumulate, confirm
from gateway.domain.records import Increment, Position
from gateway.ledger import schema as t
from gateway.ledger.masters import MasterCache, store_masterdata
from gateway.ledger import adjustments as adjust
from gateway.ledger.operations import OperationRefused, receive_stock, reprocess_errors, reverse_confirmation
from gateway.ledger.orders import document_kind
from gateway.ledger.schema import open_engine
from gateway.ledger.posting import apply
from gateway.ledger.changes import ChangeSet
from gateway.masterdata.load import load_masterdata, to_domain

T = datetime(2026, 6, 1, 12, tzinfo=UTC)

component = st.fixed_dictionaries({
    "quantity": st.decimals(min_value=D("0.001"), max_value=D(20), places=3),
    "scrap_pct": st.sampled_from([D(0), D("1.5"), D(5)]),
    "decimals": st.integers(0, 3),
    "lot_tracked": st.booleans(),
    "fefo": st.booleans(),
    "lots": st.lists(st.decimals(min_value=0, max_value=200, places=0), min_size=0, max_size=3),
    "price": st.decimals(min_value=0, max_value=500, places=4),
    "auto": st.booleans(),
    "basis": st.sampled_from(["total", "yield"]),
})

operation = st.one_of(
    st.tuples(st.just("confirm"), st.integers(1, 40)),
    st.tuples(st.just("confirm_many"), st.lists(st.integers(1, 40), min_size=2, max_size=6)),
    st.tuples(st.just("confirm_and_reverse"), st.integers(1, 40)),
    st.tuples(st.just("reverse"), st.integers(0, 10)),
    st.tuples(st.just("receive"), st.integers(0, 2), st.integers(1, 300)),
    st.tuples(st.just("reprocess")),
    st.tuples(st.just("consume"), st.integers(0, 2), st.integers(-5, 5)),
    st.tuples(st.just("scrap"), st.integers(1, 10)),
)


def masterdata_yaml(components: list[dict], base: int) -> str:
    lines = ["materials:", "  P: {uom: PC, lot_tracked: true, standard_price: 17.25}"]
    for i, c in enumerate(components):
        lines.append(f"  C{i}: {{uom: U{i}, decimals: {c['decimals']}, lot_tracked: {str(c['lot_tracked']).lower()}, "
                     f"lot_selection: {'fefo' if c['fefo'] else 'fifo'}, standard_price: {c['price']}, "
                     f"auto_reprocess: {str(c['auto']).lower()}}}")
    lines += ["work_centers:", "  W: {labor_rate: 30, machine_rate: 50, overhead_pct_of_labor: 10, supply_location: L}",
              "boms:", "  P:", f"    base_quantity: {base}", "    items:"]
    for i, c in enumerate(components):
        lines.append(f"      - {{item: '{i:04d}', material: C{i}, quantity: {c['quantity']}, "
                     f"scrap_pct: {c['scrap_pct']}, operation: '0010', basis: {c['basis']}}}")
    lines += ["routings:", "  P:", f"    base_quantity: {base}", "    operations:",
              "      - {operation: '0010', work_center: W, setup_hours: 0.5, machine_hours: 0.7, labor_hours: 0.3}",
              "orders:", "  '1': {material: P, quantity: 100000, receipt_location: FG}", "stock:"]
    for i, c in enumerate(components):
        for j, qty in enumerate(c["lots"]):
            lot = f", lot: L{i}-{j}, received_on: 2026-01-{j + 1:02d}, expires_on: 2027-0{j + 1}-01" \
                if c["lot_tracked"] else ""
            if c["lot_tracked"] or j == 0:
                lines.append(f"  - {{material: C{i}, location: L, quantity: {qty}{lot}}}")
    return "\n".join(lines) + ("\n" if any(c["lots"] for c in components) else " []\n")


def last_movement(engine) -> int:
    with engine.connect() as conn:
        return conn.execute(select(func.max(t.goods_movements.c.id))).scalar() or 0


def stock_rows(engine) -> dict:
    with engine.connect() as conn:
        return {(r.material, r.location, r.lot): r.qty for r in conn.execute(select(t.stock)) if r.qty}


@settings(max_examples=int(os.environ.get("INVARIANT_EXAMPLES", "25")), deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(components=st.lists(component, min_size=1, max_size=3), base=st.sampled_from([1, 3, 7, 100]),
       ops=st.lists(operation, min_size=1, max_size=14))
def test_backflush_invariants_hold_for_any_sequence(tmp_path_factory, components, base, ops):
    folder = tmp_path_factory.mktemp("inv")
    (folder / "md.yaml").write_text(masterdata_yaml(components, base))
    md = load_masterdata(folder / "md.yaml")
    engine = open_engine(f"sqlite:///{folder / 'ledger.sqlite'}")
    store_masterdata(engine, to_domain(md), md.stock)
    position, posted, reversed_, scrapped = 0, [], set(), []

    def post(*units_each: int) -> str:
        """Confirmations of these units, all in one writer transaction."""
        nonlocal position
        batch = []
        for units in units_each:
            inc = Increment("M", "good", units, Position(0, position), Position(0, position + units), T)
            position += units
            batch.append(confirm(accumulate(None, inc, order="1", operation="0010", now=T),
                                 "every_units", "PC"))
            posted.append((batch[-1].id, units))
        with engine.begin() as conn:
            apply(conn, ChangeSet(confirmations=batch), MasterCache())
        return batch[-1].id

    for op in ops:
        if op[0] == "confirm":
            post(op[1])
        elif op[0] == "confirm_many":
            post(*op[1])
        elif op[0] == "confirm_and_reverse":
            before, mark = stock_rows(engine), last_movement(engine)
            cid = post(op[1])
            reverse_confirmation(engine, cid, "property test", force_reason="test", now=T)
            reversed_.add(cid)
            # ... but for what the stock it gave back issued at once to other confirmations' errors
            with engine.connect() as conn:
                for m in conn.execute(select(t.goods_movements).where(
                        t.goods_movements.c.id > mark, t.goods_movements.c.confirmation_id.not_in([cid, f"R-{cid}"]))):
                    key = (m.material, m.location, m.lot)
                    before[key] = before.get(key, D(0)) + m.qty
            assert stock_rows(engine) == {k: v for k, v in before.items() if v}, "a reversal restores the stock"
        elif op[0] == "reverse" and posted:
            cid, _ = posted[op[1] % len(posted)]
            if cid not in reversed_:
                reverse_confirmation(engine, cid, "property test", force_reason="test", now=T)
                reversed_.add(cid)
        elif op[0] == "receive":
            i = op[1] % len(components)
            lot = f"R{i}-{len(posted)}" if components[i]["lot_tracked"] else ""
            receive_stock(engine, f"C{i}", D(op[2]), "L", lot=lot, now=T)
        elif op[0] == "reprocess":
            reprocess_errors(engine, now=T)
        elif op[0] == "consume" and op[2]:
            item = f"{op[1] % len(components):04d}"
            try:  # refused when there is not enough to issue or to give back: then nothing is posted
                adjust.consumption(engine, "1", item, D(op[2]), "OVER-CONSUMPTION", now=T)
            except OperationRefused:
                pass
        elif op[0] == "scrap":
            doc = adjust.scrap(engine, "1", "0010", D(op[1]), "SCRAP-HANDLING", now=T).document
            scrapped.append((doc, op[1]))

    with engine.connect() as conn:
        movements = conn.execute(select(t.goods_movements)).all()
        genealogy = conn.execute(select(t.genealogy)).all()
        open_errors = conn.execute(select(t.error_queue).where(t.error_queue.c.status == "open")).all()

    # 1. stock = sum of movements
    summed = defaultdict(D)
    for m in movements:
        summed[(m.material, m.location, m.lot)] += m.qty
    assert stock_rows(engine) == {k: v for k, v in summed.items() if v}

    # 3. every issued lot-tracked unit has a genealogy edge to the produced lot
    issued_lots, edges = defaultdict(D), defaultdict(D)
    for m in movements:
        if m.kind in ("261", "262") and m.lot:
            issued_lots[(m.material, m.lot)] -= m.qty
    for g in genealogy:
        assert (g.product, g.product_lot) == ("P", "1")
        edges[(g.component, g.component_lot)] += g.qty
    assert {k: v for k, v in issued_lots.items() if v} == {k: v for k, v in edges.items() if v}

    # 4. backflush (issued + queued) = rounded plan for what stands confirmed
    standing = sum(units for cid, units in posted + scrapped if cid not in reversed_)
    good = sum(units for cid, units in posted if cid not in reversed_)
    for i, c in enumerate(components):
        planned_on = good if c["basis"] == "yield" else standing
        plan = Fraction(planned_on) * Fraction(c["quantity"]) / base * (1 + Fraction(c["scrap_pct"]) / 100)
        issued = -sum((m.qty for m in movements if m.material == f"C{i}" and m.kind in ("261", "262")
                       and (document_kind(m.confirmation_id) == "backflushed"
                            or m.confirmation_id in {doc for doc, _ in scrapped})), D(0))
        queued = sum((e.missing_qty for e in open_errors if e.material == f"C{i}"), D(0))
        assert issued + queued == quantize(plan, c["decimals"]), f"component C{i}"

    # 5. never more than stock; nothing usable left behind an open error that reprocesses itself
    stock = stock_rows(engine)
    assert all(qty > 0 for qty in stock.values()), stock
    for e in open_errors:
        i = int(e.material[1:])
        if components[i]["auto"]:
            assert not any(k[:2] == (e.material, e.location) for k in stock), f"error {e.id} of {e.material}"

    # 6. value of stock = Σ quantity × standard price = Σ movement values
    prices = {"P": D("17.25")} | {f"C{i}": c["price"] for i, c in enumerate(components)}
    assert sum((qty * prices[k[0]] for k, qty in stock.items()), D(0)) == sum((m.value for m in movements), D(0))
