"""Storing master data: idempotent reloads, and an order snapshot that cannot change once used."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from gateway.domain.confirming import accumulate, confirm
from gateway.domain.records import Increment, Position
from gateway.ledger.masters import MasterCache, MasterDataConflict, store_masterdata
from gateway.ledger.schema import open_engine
from gateway.ledger.posting import apply
from gateway.ledger.changes import ChangeSet
from gateway.masterdata.load import load_masterdata, to_domain

MASTERDATA = """
materials:
  P: {uom: PC}
  A: {uom: PC}
  B: {uom: KG, decimals: 3}
work_centers:
  W: {labor_rate: 1, machine_rate: 1, supply_location: L}
boms:
  P:
    items:   # listed out of item order on purpose
      - {item: "0020", material: B, quantity: QTY_B, operation: "0010"}
      - {item: "0010", material: A, quantity: 1, operation: "0010"}
routings:
  P:
    operations:
      - {operation: "0010", work_center: W}
orders:
  "1": {material: P, quantity: 10, receipt_location: FG}
stock:
  - {material: A, location: L, quantity: 100}
"""


def load(engine, tmp_path, qty_b="0.25"):
    path = tmp_path / "md.yaml"
    path.write_text(MASTERDATA.replace("QTY_B", qty_b))
    md = load_masterdata(path)
    return store_masterdata(engine, to_domain(md), md.stock)


def test_reloading_the_same_file_after_confirmations_changes_nothing(ledger_url, tmp_path):
    engine = open_engine(ledger_url)
    load(engine, tmp_path)
    t = datetime(2026, 1, 1, tzinfo=UTC)
    inc = Increment("M", "good", 5, Position(0, 0), Position(0, 5), t)
    with engine.begin() as conn:
        apply(conn, ChangeSet(confirmations=[confirm(accumulate(None, inc, order="1", operation="0010", now=t),
                                                  "shutdown", "PC")]), MasterCache())
    again = load(engine, tmp_path)
    assert (again.orders_unchanged, again.orders_updated, again.stock_posted) == (1, 0, 0)
    with pytest.raises(MasterDataConflict, match="already has confirmations"):
        load(engine, tmp_path, qty_b="0.5")
