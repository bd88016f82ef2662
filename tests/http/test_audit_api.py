"""The audit trail over HTTP: a posting records the token's name, the client's address and the endpoint;
``GET /api/v1/audit`` reads the trail (viewer), filtered by actor, order and time."""

from __future__ import annotations

from tests.http.served import OPERATOR, VIEWER, auth, line, served


async def test_an_api_posting_is_audited_under_its_token_and_the_trail_is_readable(sqlite_url):
    ln = line(sqlite_url)
    async with served(ln.gateway) as (_, client):
        o, v = auth(OPERATOR), auth(VIEWER)
        received = await client.post("/api/v1/stock/receive", headers=o,
                                     json={"material": "CARTON", "qty": "25", "location": "LS-ASSY"})
        completed = await client.post("/api/v1/orders/1000124/complete", headers=o)
        trail = await client.get("/api/v1/audit", headers=v)
        of_order = await client.get("/api/v1/audit", params={"order": "1000124"}, headers=v)
        of_nobody = await client.get("/api/v1/audit", params={"actor": "board"}, headers=v)
        later = await client.get("/api/v1/audit", params={"since": "2999-01-01T00:00"}, headers=v)
        anonymous = await client.get("/api/v1/audit")
    assert (received.status_code, completed.status_code, trail.status_code) == (200, 200, 200)
    api = [e for e in trail.json() if e["actor_kind"] == "api"]
    assert [(e["actor"], e["host"], e["via"], e["action"], e["order"]) for e in api] == [
        ("shift-lead", "127.0.0.1", "POST /api/v1/stock/receive", "stock.receive", None),
        ("shift-lead", "127.0.0.1", "POST /api/v1/orders/1000124/complete", "orders.complete", "1000124"),
    ]
    assert api[0]["postings"][0].startswith("movement:") and api[1]["postings"] == ["O-1000124"]
    assert api[1]["detail"] == {"before": {"status": "released"}, "changed": {"status": "completed"}}
    assert [e["action"] for e in of_order.json()] == ["orders.complete"]
    assert of_nobody.json() == [] and later.json() == []
    assert anonymous.status_code == 401
