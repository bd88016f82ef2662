"""Property tests of serial-tracked materials against a real ledger.

Hypothesis draws a serial-tracked product (numbered by a pattern) made from a
serial-tracked component and a lot-tracked one, and a random sequence of confirmations,
reversals, stock receipts (new serials, serials already in stock or issued to the order,
at the same or another location, a product serial the order will number later), counts,
serials given back by a consumption adjustment, and error-queue reprocessing (by hand, and
by every posting that adds stock). After every sequence:

1. each serial is in at most one place: every stock row of a serial holds 0 or 1, and
   the rows of one serial add up to 0 or 1; a serial issued to the order (issues less
   returns) is in no stock, so a serial is returned once, whichever path returns it;
2. stock per material/location/lot (serial) = the sum of its goods movements;
3. every issued serial and lot has a genealogy edge (net, after reversals);
4. every unit of yield that stands confirmed and posted is a product serial received,
   each an edge from the order's lot; a confirmation whose serials could not be received
   is kept, with its units, in the error queue: none lost, none twice.
"""

from __future__ import annotations

import os
from collections import defaultdict
from datetime import UTC, datetime
from decimal import Decimal as D

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import select

from gateway.domain.confirming import accumulate, confirm
from gateway.domain.records import Increment, Position
from gateway.ledger import schema as t
from gateway.ledger.adjustments import consumption
from gateway.ledger.inventory import record_count
from gateway.ledger.masters import MasterCache, store_masterdata
from gateway.ledger.operations import OperationRefused, receive_stock, reprocess_errors, reverse_confirmation
from gateway.ledger.posting import apply
from gateway.ledger.schema import open_engine
from gateway.ledger.tx import SerialConflict
from gateway.ledger.changes import ChangeSet
from gateway.masterdata.load import load_masterdata, to_domain

T = datetime(2026, 6, 1, 12, tzinfo=UTC)

operation = st.one_of(
    st.tuples(st.just("confirm"), st.integers(1, 6), st.integers(0, 2)),
    st.tuples(st.just("confirm_and_reverse"), st.integers(1, 6)),
    st.tuples(st.just("reverse"), st.integers(0, 10)),
    st.tuples(st.just("receive_new"), st.integers(1, 4)),
    st.tuples(st.just("receive_again"), st.integers(0, 20), st.sampled_from(["LS", "LS2"])),
    st.tuples(st.just("receive_product"), st.integers(1, 30)),
    st.tuples(st.just("receive_lot"), st.integers(1, 50)),
    st.tuples(st.just("reprocess")),
    st.tuples(st.just("give_back"), st.integers(1, 3)),
    st.tuples(st.just("count"), st.integers(0, 20), st.sampled_from(["LS", "LS2"])),
)


def masterdata_yaml(motors: int, per_unit: int, granulate: str) -> str:
    serials = ", ".join(f"S-{i:03d}" for i in range(motors))
    return f"""\
materials:
  P: {{uom: PC, tracking: serial, serials: "{{order}}-{{seq:04}}"}}
  S: {{uom: PC, tracking: serial}}
  G: {{uom: KG, decimals: 3, tracking: lot}}
work_centers:
  W: {{labor_rate: 30, machine_rate: 50, supply_location: LS}}
boms:
  P:
    items:
      - {{item: "0010", material: S, quantity: {per_unit}, operation: "0010"}}
      - {{item: "0020", material: G, quantity: {granulate}, operation: "0010"}}
routings:
  P:
    operations:
      - {{operation: "0010", work_center: W, labor_hours: 0.1}}
orders:
  "1": {{material: P, quantity: 100000, receipt_location: FG}}
stock:
  - {{material: G, location: LS, quantity: 5, lot: G-1, received_on: 2026-01-01}}
""" + (f"  - {{material: S, location: LS, quantity: {motors}, serials: [{serials}]}}\n" if motors else "")


def rows(engine, table):
    with engine.connect() as conn:
        return conn.execute(select(table)).all()


@settings(max_examples=int(os.environ.get("INVARIANT_EXAMPLES", "25")), deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(motors=st.integers(0, 8), per_unit=st.sampled_from([1, 2]),
       granulate=st.sampled_from(["0.125", "0.4", "1"]), ops=st.lists(operation, min_size=1, max_size=14))
def test_serial_invariants_hold_for_any_sequence(tmp_path_factory, motors, per_unit, granulate, ops):
    folder = tmp_path_factory.mktemp("serials")
    (folder / "md.yaml").write_text(masterdata_yaml(motors, per_unit, granulate))
    md = load_masterdata(folder / "md.yaml")
    engine = open_engine(f"sqlite:///{folder / 'ledger.sqlite'}")
    store_masterdata(engine, to_domain(md), md.stock)
    position, posted, reversed_, received = 0, [], set(), 0

    def post(yield_qty: int, scrap: int = 0) -> str:
        nonlocal position
        good = Increment("M", "good", yield_qty, Position(0, position), Position(0, position + yield_qty), T)
        bad = Increment("M", "scrap", scrap, Position(0, position), Position(0, position + scrap), T)
        position += yield_qty + scrap
        pending = accumulate(None, good, order="1", operation="0010", now=T)
        if scrap:
            pending = accumulate(pending, bad, order="1", operation="0010", now=T)
        c = confirm(pending, "every_units", "PC")
        with engine.begin() as conn:
            apply(conn, ChangeSet(confirmations=[c]), MasterCache(ttl_s=0))
        posted.append((c.id, yield_qty))
        return c.id

    def try_receive(material: str, qty: int, location: str, lot: str) -> None:
        try:
            receive_stock(engine, material, D(qty), location, lot=lot, now=T)
        except (SerialConflict, OperationRefused):
            pass  # a serial that is already somewhere: refused, nothing posted

    for op in ops:
        if op[0] == "confirm":
            post(op[1], op[2])
        elif op[0] == "confirm_and_reverse":
            cid = post(op[1])
            if _is_posted(engine, cid):
                reverse_confirmation(engine, cid, "property test", force_reason="test", now=T)
                reversed_.add(cid)
        elif op[0] == "reverse" and posted:
            cid, _ = posted[op[1] % len(posted)]
            if cid not in reversed_ and _is_posted(engine, cid):
                reverse_confirmation(engine, cid, "property test", force_reason="test", now=T)
                reversed_.add(cid)
        elif op[0] == "receive_new":
            for _ in range(op[1]):
                received += 1
                try_receive("S", 1, "LS", f"N-{received:03d}")
        elif op[0] == "receive_again":
            try_receive("S", 1, op[2], f"S-{op[1] % max(motors, 1):03d}")
        elif op[0] == "receive_product":
            try_receive("P", 1, "FG", f"1-{op[1]:04d}")  # a serial the order numbers itself, later or before
        elif op[0] == "receive_lot":
            try_receive("G", op[1], "LS", f"G-{op[1]}")
        elif op[0] == "reprocess":
            reprocess_errors(engine, now=T)
        elif op[0] == "give_back":  # under-consumption: serials go back from the order to stock
            try:
                consumption(engine, "1", "0010", D(-op[1]), "UNDER-USE", now=T)
            except OperationRefused:
                pass  # the order holds fewer: refused, nothing posted
        elif op[0] == "count":  # a serial found at a place: a count gain, refused if it is elsewhere
            try:
                record_count(engine, "S", D(1), op[2], lot=f"S-{op[1] % max(motors, 1):03d}", now=T)
            except (SerialConflict, OperationRefused):
                pass

    stock = rows(engine, t.stock)
    movements = rows(engine, t.goods_movements)
    genealogy = rows(engine, t.genealogy)
    open_errors = [e for e in rows(engine, t.error_queue) if e.status == "open"]

    # 1. each serial in at most one place
    per_serial = defaultdict(D)
    for r in stock:
        if r.material in ("S", "P"):
            assert r.qty in (0, 1), f"serial {r.lot} of {r.material} at {r.location}: {r.qty}"
            per_serial[(r.material, r.lot)] += r.qty
    assert all(q in (0, 1) for q in per_serial.values()), per_serial
    in_order = defaultdict(D)
    for m in movements:
        if m.material == "S" and m.kind in ("261", "262"):
            in_order[m.lot] -= m.qty
    assert all(q in (0, 1) for q in in_order.values()), in_order
    assert all(per_serial[("S", lot)] + q in (0, 1) for lot, q in in_order.items()), (per_serial, in_order)

    # 2. stock = sum of movements
    summed = defaultdict(D)
    for m in movements:
        summed[(m.material, m.location, m.lot)] += m.qty
    assert {(r.material, r.location, r.lot): r.qty for r in stock if r.qty} == {k: v for k, v in summed.items() if v}

    # 3. every issued serial and lot has a genealogy edge
    issued, edges = defaultdict(D), defaultdict(D)
    for m in movements:
        if m.kind in ("261", "262"):
            issued[(m.material, m.lot)] -= m.qty
    for g in genealogy:
        if g.component != "P":
            assert (g.product, g.product_lot) == ("P", "1")
            edges[(g.component, g.component_lot)] += g.qty
    assert {k: v for k, v in issued.items() if v} == {k: v for k, v in edges.items() if v}

    # 4. every unit that stands confirmed is a serial received from the order, or waits in the error queue
    from_order = defaultdict(D)
    for m in movements:
        if m.kind in ("101", "102"):
            from_order[m.lot] += m.qty
    serial_edges = defaultdict(D)
    for g in genealogy:
        if g.component == "P":
            assert (g.component_lot, g.product) == ("1", "P")
            serial_edges[g.product_lot] += g.qty
    received_serials = {k: v for k, v in from_order.items() if v}
    assert all(v == 1 for v in received_serials.values())
    assert received_serials == {k: v for k, v in serial_edges.items() if v}
    waiting = {e.confirmation_id for e in open_errors if not e.material}
    standing = sum(units for cid, units in posted if cid not in reversed_ and cid not in waiting)
    assert len(received_serials) == standing
    assert all(w not in reversed_ for w in waiting)


def _is_posted(engine, confirmation_id: str) -> bool:
    """Posted with its postings (not kept whole in the error queue)."""
    eq = t.error_queue.c
    with engine.connect() as conn:
        return conn.execute(select(eq.id).where(eq.confirmation_id == confirmation_id, eq.material == "",
                                                eq.status == "open")).first() is None
