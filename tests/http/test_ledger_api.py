"""Ledger operations over HTTP after a real run: roles, results equal to the ledger, refusals as problems.

A gateway counts on a simulated PLC; once it stopped (everything committed), the API that
stays up is used as a controls engineer or an MES would: read orders and confirmations,
receive and count stock, reverse a confirmation — and be refused without the right role.
"""

from __future__ import annotations

from decimal import Decimal

import pytest
from sqlalchemy import select

from gateway.ledger import schema
from gateway.ledger.reports import summary
from tests.http.served import OPERATOR, VIEWER, auth, dec, line, served

PROBLEM = "application/problem+json"


@pytest.mark.slow
async def test_ledger_operations_over_http_with_roles(sqlite_url):
    ln = line(sqlite_url)
    async with served(ln.gateway) as (_, client):
        async with ln:
            await ln.produce(1.0, "ASSY-03")
        v, o = auth(VIEWER), auth(OPERATOR)
        confirmations = await client.get("/api/v1/confirmations", params={"order": "1000124", "last": 1000},
                                         headers=v)
        order = await client.get("/api/v1/orders/1000124", headers=v)
        # Writes: no token 401, viewer 403, operator 200.
        receipt = {"material": "CARTON", "qty": "25", "location": "LS-ASSY"}
        anonymous = await client.post("/api/v1/stock/receive", json=receipt)
        as_viewer = await client.post("/api/v1/stock/receive", json=receipt, headers=v)
        received = await client.post("/api/v1/stock/receive", json=receipt, headers=o)
        cartons = await client.get("/api/v1/stock", params={"material": "CARTON"}, headers=v)
        unknown = await client.post("/api/v1/stock/receive", json={**receipt, "material": "NO-SUCH"}, headers=o)
        bad_qty = await client.post("/api/v1/stock/receive", json={**receipt, "qty": "lots"}, headers=o)
        extra_key = await client.post("/api/v1/stock/receive", json={**receipt, "qyt": "1"}, headers=o)
        first = confirmations.json()[-1]["id"]
        reverse = {"confirmation_id": first, "reason": "counted on the wrong order"}
        reversed_by_viewer = await client.post("/api/v1/confirmations/reverse", json=reverse, headers=v)
        reversed_ = await client.post("/api/v1/confirmations/reverse", json=reverse, headers=o)
        again = await client.post("/api/v1/confirmations/reverse", json=reverse, headers=o)
        errors = await client.get("/api/v1/errors", params={"all": "true"}, headers=v)
        report = await client.get("/api/v1/reports/summary", headers=v)
        no_order = await client.get("/api/v1/orders/4711", headers=v)
        journal = await client.get("/api/v1/reports/journal/1000124", headers=v)
        lot = order.json()["produced_lot"]
        trace = await client.get(f"/api/v1/lots/{lot}/trace", params={"direction": "back"}, headers=v)
    totals = summary(ln.engine).machines["ASSY-03"]
    with ln.engine.connect() as conn:
        ledger_ids = [r.id for r in conn.execute(select(schema.confirmations.c.id).where(
            schema.confirmations.c.order_no == "1000124"))]
        carton_stock = sum((r.qty for r in conn.execute(select(schema.stock).where(schema.stock.c.material == "CARTON"))),
                           Decimal(0))
    assert confirmations.status_code == 200
    assert sorted(c["id"] for c in confirmations.json()) == sorted(ledger_ids) and len(ledger_ids) >= 2
    assert sum(dec(c["yield_qty"]) for c in confirmations.json()) == totals.confirmed_yield
    ops = {op["operation"]: op for op in order.json()["operations"]}
    assert dec(ops["0010"]["yield_qty"]) == totals.confirmed_yield
    assert (anonymous.status_code, as_viewer.status_code, received.status_code) == (401, 403, 200)
    assert as_viewer.headers["content-type"] == PROBLEM
    assert as_viewer.json()["detail"] == "token 'board' has role viewer; this needs operator"
    assert received.json()["uom"] and dec(received.json()["qty"]) == 25
    assert [dec(s["qty"]) for s in cartons.json()] == [carton_stock]
    assert unknown.status_code == 404 and unknown.headers["content-type"] == PROBLEM
    assert "NO-SUCH" in unknown.json()["detail"]
    assert unknown.json()["type"] == "urn:backflush-gateway:problem:not-found"
    assert bad_qty.status_code == 422 and bad_qty.json()["errors"][0]["loc"] == ["body", "qty"]
    assert extra_key.status_code == 422 and extra_key.json()["errors"][0]["loc"] == ["body", "qyt"]
    assert reversed_by_viewer.status_code == 403
    assert reversed_.status_code == 200 and reversed_.json()["confirmation_id"] == first
    with ln.engine.connect() as conn:
        assert conn.execute(select(schema.reversals.c.id).where(schema.reversals.c.confirmation_id == first)).scalar() == \
            reversed_.json()["reversal_id"]
    assert again.status_code == 409 and again.headers["content-type"] == PROBLEM
    assert errors.status_code == 200 and isinstance(errors.json(), list)
    machines = {m["machine"]: m for m in report.json()["machines"]}
    assert dec(machines["ASSY-03"]["counted"]) == totals.counted and machines["ASSY-03"]["balanced"] is True
    assert no_order.status_code == 404 and no_order.headers["content-type"] == PROBLEM
    assert sorted(c["id"] for c in journal.json()["sections"]["confirmations"]) == sorted(ledger_ids)
    # The demo's products are not lot-tracked: the order names its lot, the ledger keeps no genealogy of it.
    assert (trace.status_code, trace.json()["detail"]) == (404, f"no lot {lot} in the ledger")
