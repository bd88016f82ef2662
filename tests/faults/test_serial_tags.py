"""Fault: serial tags that miss a serial or repeat one, reconciled to 0 lost and 0 duplicated.

A pump assembly cell on the OPC UA simulator writes the serial of every good pump to its
``SerialNumber`` node right before the good count that counts it. On command it misses
the serial of the next good cycles (writes none) and then repeats the serial of an earlier
pump. The gateway receives every pump that has a serial of its own under exactly that
serial, and holds the others as ``serial_missing`` / ``serial_repeated`` anomalies: every
unit the simulator made is in the ledger once, none under a guessed or a second serial.
"""

from __future__ import annotations

from collections import defaultdict

import pytest
from sqlalchemy import select

from gateway.ledger import schema
from gateway.ledger.masters import store_masterdata
from gateway.ledger.reports import summary
from gateway.mapping.model import Mapping
from gateway.masterdata.load import to_domain
from gateway.masterdata.model import MasterData
from simulators.machine import SimMachineConfig
from simulators.opcua_plc import OpcUaPlc, node_id
from tests.integration.lines import Line
from tests.support import free_port

pytestmark = pytest.mark.slow
MACHINE, ORDER = "PUMP-1", "3000001"
MASTERDATA = {
    "materials": {"PUMP": {"uom": "PC", "tracking": "serial"}, "SCREW": {"uom": "PC"}},
    "work_centers": {"WC-PUMP": {"labor_rate": 38, "machine_rate": 10, "supply_location": "LS-PUMP"}},
    "boms": {"PUMP": {"items": [{"item": "0010", "material": "SCREW", "quantity": 4, "operation": "0010"}]}},
    "routings": {"PUMP": {"operations": [{"operation": "0010", "work_center": "WC-PUMP", "labor_hours": 0.1}]}},
    "orders": {ORDER: {"material": "PUMP", "quantity": 100000, "receipt_location": "FG-01"}},
    "stock": [{"material": "SCREW", "location": "LS-PUMP", "quantity": 100000}],
}


class PumpLine(Line):
    def __init__(self, url: str) -> None:
        port = free_port()
        plc = OpcUaPlc([SimMachineConfig(MACHINE, rate_hz=20, scrap_ratio=0.1, order=ORDER, seed=7, serials=True)],
                       port=port, tick_s=0.01)
        mapping = Mapping.model_validate({
            "sources": {"sim": {"opcua": {"endpoint": f"opc.tcp://127.0.0.1:{port}", "publishing_interval_ms": 50,
                                          "reconnect_min_s": 0.1, "reconnect_max_s": 0.5}}},
            "machines": {MACHINE: {
                "source": "sim", "work_center": "WC-PUMP", "operation": "0010",
                "counters": {"good": {"node": node_id(MACHINE, "GoodCount")},
                             "scrap": {"node": node_id(MACHINE, "ScrapCount")}},
                "order": {"node": node_id(MACHINE, "OrderNumber")},
                "serial": {"node": node_id(MACHINE, "SerialNumber")},
                "confirm": {"every_units": 20, "every_seconds": 1},
            }},
        })
        super().__init__(url, plc, mapping)

    def load_masterdata(self) -> None:
        md = MasterData.model_validate(MASTERDATA)
        store_masterdata(self.engine, to_domain(md), md.stock)


async def test_missed_and_repeated_serials_are_held_and_every_other_unit_is_received_once(ledger_url):
    async with PumpLine(ledger_url) as line:
        model = line.plc.models[MACHINE]
        before = model.truth()
        await line.produce(0.8)
        await line.plc.command(MACHINE, "miss_serial", "2")
        await line.produce(0.6)
        await line.plc.command(MACHINE, "repeat_serial", "2")
        await line.produce(0.8)
    truth = model.truth()
    made = line.made()
    written = truth["serials"][len(before["serials"]):]
    missed = truth["serials_missed"] - before["serials_missed"]
    repeated = truth["serials_repeated"] - before["serials_repeated"]
    assert missed == 2 and repeated == 2, truth  # the faults happened
    good = truth["good_units"] - before["good_units"]
    assert good == len(written) + missed + repeated

    with line.engine.connect() as conn:
        receipts = conn.execute(select(schema.goods_movements).where(schema.goods_movements.c.material == "PUMP")).all()
        anomalies = conn.execute(select(schema.anomalies).where(schema.anomalies.c.kind.like("serial%"))).all()
        stock = conn.execute(select(schema.stock).where(schema.stock.c.material == "PUMP")).all()
    received = defaultdict(int)
    for m in receipts:
        received[m.lot] += m.qty
    # Every pump with a serial of its own is received once, under exactly that serial.
    assert sorted(received) == sorted(written) and set(received.values()) == {1}
    assert all(r.qty == 1 and r.location == "FG-01" for r in stock) and len(stock) == len(written)
    # Every pump without one is held, not lost and not received under a guessed serial.
    held = {a.kind: sum(x.units_held for x in anomalies if x.kind == a.kind) for a in anomalies}
    assert held == {"serial_missing": missed, "serial_repeated": repeated}, [a.detail for a in anomalies]
    assert all(a.status == "open" for a in anomalies)
    totals = summary(line.engine)
    pump = totals.machines[MACHINE]
    assert pump.accounted == made and pump.balanced  # 0 lost
    assert pump.held == missed + repeated
    assert pump.confirmed_yield == len(written) and totals.duplicate_confirmation_ids == 0  # 0 duplicated
