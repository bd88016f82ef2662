"""A transaction of many confirmations posts exactly what the same confirmations post one
transaction each (the writer keeps reads and buffers writes per transaction: ``LedgerTx``)."""

from __future__ import annotations


from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import select

from gateway.domain.confirming import accumulate, confirm
from gateway.domain.records import Increment, Position
from gateway.ledger import schema as t
from gateway.ledger.masters import MasterCache
from gateway.ledger.posting import apply
from gateway.ledger.changes import ChangeSet
from tests.ledger.test_invariants import T, component, masterdata_yaml
from tests.support import ledger_with_masterdata

# What a posting leaves, without ids and clocks (the batched ledger gets other row ids).
TABLES = {
    t.goods_movements: ("confirmation_id", "kind", "material", "location", "lot", "qty", "uom", "bom_item"),
    t.stock: ("material", "location", "lot", "qty"),
    t.lots: ("material", "lot", "produced_by_order"),
    t.activity_postings: ("confirmation_id", "operation", "work_center", "activity", "hours", "cost"),
    t.genealogy: ("confirmation_id", "component", "component_lot", "qty", "product", "product_lot"),
    t.error_queue: ("confirmation_id", "bom_item", "material", "location", "missing_qty", "reason", "status"),
    t.order_progress: ("order_no", "operation", "yield_qty", "scrap_qty"),
    t.order_carry: ("order_no", "key", "planned"),
    t.confirmations: ("id", "yield_qty", "scrap_qty", "start_pos", "end_pos"),
}


def ledger_after(folder, name, components, base, batches) -> dict:
    engine = ledger_with_masterdata(f"sqlite:///{folder / name}", masterdata_yaml(components, base), folder)
    for batch in batches:
        with engine.begin() as conn:
            apply(conn, ChangeSet(confirmations=batch), MasterCache())
    with engine.connect() as conn:
        out = {table.name: sorted(tuple(str(getattr(r, c)) for c in cols) for r in conn.execute(select(table)))
               for table, cols in TABLES.items()}
    engine.dispose()
    return out


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(components=st.lists(component, min_size=1, max_size=3), base=st.sampled_from([1, 3, 7]),
       units=st.lists(st.integers(1, 60), min_size=2, max_size=12), replay=st.booleans())
def test_one_transaction_posts_what_many_post(tmp_path_factory, components, base, units, replay):
    folder = tmp_path_factory.mktemp("batch")
    confirmations, position = [], 0
    for n in units:
        inc = Increment("M", "good", n, Position(0, position), Position(0, position + n), T)
        position += n
        confirmations.append(confirm(accumulate(None, inc, order="1", operation="0010", now=T),
                                     "every_units", "PC"))
    if replay:  # a confirmation queued twice in one transaction is posted once
        confirmations.append(confirmations[0])
    one_each = ledger_after(folder, "one.sqlite", components, base, [[c] for c in confirmations])
    together = ledger_after(folder, "all.sqlite", components, base, [confirmations])
    assert together == one_each
    assert len(together["confirmations"]) == len(units)
