"""Repetitive production against a simulated PLC over OPC UA (real sockets), across a period boundary.

Two moulding machines on LINE-2 run without orders while the gateway's clock passes midnight
of 31 October in Berlin (the clock is the real one, shifted; the machines count in real time).
The ledger is reconciled with the simulator's ground truth: every unit made is in exactly one
confirmation, and each machine's confirmations chain over its counter without a gap or an
overlap, across both collectors. Then, over the HTTP API and the application layer as a
shift lead would: the collectors are listed, a confirmation of October is reversed, a purge
is posted to it as an adjustment, October is closed (its balance settled) and a reversal
after that is refused.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from sqlalchemy import select

from gateway.app import adjustments
from gateway.app.models import AdjustConsumption
from gateway.clock import utcnow
from gateway.domain.confirming import parse_positions
from gateway.ledger import schema
from gateway.ledger.audit import Actor
from gateway.ledger.masters import store_masterdata
from gateway.ledger.reports import summary
from gateway.mapping.model import Mapping
from gateway.masterdata.load import load_masterdata, to_domain
from gateway.service import Gateway
from simulators.machine import SimMachineConfig
from simulators.opcua_plc import OpcUaPlc, node_id
from tests.http.served import OPERATOR, VIEWER, auth, dec, served
from tests.integration.lines import ROOT, Line
from tests.support import free_port

BOUNDARY = datetime(2026, 10, 31, 23, tzinfo=UTC)  # 1 November 00:00 in Berlin (CET)
OCT, NOV = "HOUSING-B.0001@LINE-2:2026-10", "HOUSING-B.0001@LINE-2:2026-11"
MACHINES = ("MOLD-05", "MOLD-06")


def mapping(port: int) -> Mapping:
    return Mapping.model_validate({
        "sources": {"line-2": {"opcua": {"endpoint": f"opc.tcp://127.0.0.1:{port}", "publishing_interval_ms": 50,
                                         "reconnect_min_s": 0.1, "reconnect_max_s": 0.5}}},
        "machines": {name: {
            "source": "line-2", "work_center": "WC-ASSY", "order": "none", "product": "HOUSING-B", "line": "LINE-2",
            "counters": {"good": {"node": node_id(name, "GoodCount")}, "scrap": {"node": node_id(name, "ScrapCount")}},
            "confirm": {"every_units": 40, "every_seconds": 1},
        } for name in MACHINES},
    })


class ShiftedClock:
    """The real clock moved to wherever the test wants it to be now."""

    def __init__(self, at: datetime) -> None:
        self.set(at)

    def set(self, at: datetime) -> None:
        self.offset = at - utcnow()

    def __call__(self) -> datetime:
        return utcnow() + self.offset


def chained(engine, machine: str) -> bool:
    """The machine's confirmations cover its counter from the first to the last committed position
    once: each one starts where another ends, per counter, with no range twice."""
    with engine.connect() as conn:
        rows = conn.execute(select(schema.confirmations).where(schema.confirmations.c.machine == machine)).all()
        final = {r.counter: (r.epoch, r.raw) for r in conn.execute(
            select(schema.counter_states).where(schema.counter_states.c.machine == machine))}
    ranges = defaultdict(list)
    for r in rows:
        for (counter, start), (_, end) in zip(parse_positions(r.start_pos), parse_positions(r.end_pos), strict=True):
            ranges[counter].append(((start.epoch, start.raw), (end.epoch, end.raw)))
    for counter, spans in ranges.items():
        spans.sort()
        if any(a[1] != b[0] for a, b in zip(spans, spans[1:])) or spans[-1][1] != final[counter]:
            return False
    return True


@pytest.mark.slow
async def test_a_line_crosses_a_period_boundary_exactly_once_and_october_is_closed(ledger_url):
    port = free_port()
    plc = OpcUaPlc([SimMachineConfig("MOLD-05", rate_hz=40, scrap_ratio=0.05, seed=5),
                    SimMachineConfig("MOLD-06", rate_hz=30, scrap_ratio=0.1, seed=6)], port=port, tick_s=0.01)
    line = Line(ledger_url, plc, mapping(port), load_masterdata_now=False)
    md = load_masterdata(ROOT / "docs" / "worked-example-repetitive.yaml")
    store_masterdata(line.engine, to_domain(md), md.stock)
    clock = ShiftedClock(BOUNDARY - timedelta(hours=1))
    line.gateway = Gateway(mapping(port), line.engine, clock=clock)
    v, o = auth(VIEWER), auth(OPERATOR)
    async with served(line.gateway) as (_, client):
        async with line:  # simulators paused, the gateway's baseline taken
            clock.set(BOUNDARY - timedelta(seconds=3))
            await plc.command("*", "resume")
            await asyncio.sleep(7)  # midnight in Berlin after 3 s
            await plc.command("*", "pause")
            await line.settle()
            made = {m: line.made(m) for m in MACHINES}
        # The gateway has stopped: everything it counted is committed (shutdown confirms the rest).
        listed = await client.get("/api/v1/collectors", headers=v)
        october = await client.get(f"/api/v1/collectors/{OCT}", headers=v)
        with line.engine.connect() as conn:
            c = schema.confirmations.c
            first, second = [r.id for r in conn.execute(select(c.id).where(c.order_no == OCT).order_by(c.end_pos))
                             ][:2]
        reversed_ = await client.post("/api/v1/confirmations/reverse", headers=o,
                                      json={"confirmation_id": first, "reason": "test shots counted as production"})
        purge = adjustments.consumption(line.engine, AdjustConsumption(
            order=OCT, item="0010", delta=Decimal("0.75"), reason_code="PURGE", note="colour change"),
            actor=Actor("shift-lead", "cli", "line-2", "gateway adjust consumption"))
        closed = await client.post("/api/v1/periods/close", json={"period": "2026-10", "reason": "month end"},
                                   headers=o)
        late = await client.post("/api/v1/confirmations/reverse", headers=o,
                                 json={"confirmation_id": second, "reason": "too late"})
        bad = await client.get("/api/v1/collectors", params={"period": "October"}, headers=v)

    # Ground truth: every unit the simulator made since the baseline is in exactly one confirmation.
    report = summary(line.engine)
    for machine in MACHINES:
        totals = report.machines[machine]
        assert totals.confirmed_yield + totals.confirmed_scrap == made[machine] > 0, machine  # 0 lost, 0 twice
        assert totals.pending == totals.held == 0 and totals.balanced
        assert chained(line.engine, machine), f"{machine}: counter ranges do not chain"
    assert report.duplicate_confirmation_ids == 0
    with line.engine.connect() as conn:
        rows = conn.execute(select(schema.confirmations)).all()
        by_collector = defaultdict(Decimal)
        for r in rows:
            by_collector[r.order_no] += r.yield_qty + r.scrap_qty
        machines_of = {(r.machine, r.order_no) for r in rows}
        audit = conn.execute(select(schema.audit_log).where(schema.audit_log.c.action == "period.close")).all()
    assert set(by_collector) == {OCT, NOV} and sum(by_collector.values()) == sum(made.values())
    assert machines_of == {(m, c) for m in MACHINES for c in (OCT, NOV)}  # both machines made units on both sides

    assert listed.status_code == 200
    assert {r["number"]: dec(r["yield_qty"]) + dec(r["scrap_qty"]) for r in listed.json()} == by_collector
    assert october.status_code == 200 and october.json()["order"]["material"] == "HOUSING-B"
    assert reversed_.status_code == 200 and purge.kind == "consumption"
    assert closed.status_code == 200, closed.text
    [row] = closed.json()["collectors"]
    assert (row["number"], row["status"]) == (OCT, "closed")
    # The settled balance is the ledger's own: every movement's posted value and every activity's cost.
    with line.engine.connect() as conn:
        gm, ap = schema.goods_movements.c, schema.activity_postings.c
        moves = conn.execute(select(gm.kind, gm.value).where(gm.order_no == OCT)).all()
        costs = sum((r.cost for r in conn.execute(select(ap.cost).where(ap.order_no == OCT))), Decimal(0))
    components = -sum((m.value for m in moves if m.kind in ("261", "262")), Decimal(0))
    target = sum((m.value for m in moves if m.kind in ("101", "102")), Decimal(0))
    assert (dec(row["materials"]), dec(row["activities"]), dec(row["target"])) == (components, costs, target)
    assert dec(row["variance"]) == components + costs - target
    assert len(audit) == 1 and audit[0].actor == "shift-lead" and audit[0].reason == "month end"
    assert late.status_code == 409 and "closed" in late.json()["detail"]
    assert bad.status_code == 422 and "is no period" in bad.json()["detail"]
