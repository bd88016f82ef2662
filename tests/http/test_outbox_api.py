"""The outbox over HTTP on a real ledger: list with filters, retry, park and skip with roles; refusals are
problems with the application layer's messages; each action audited under the token; the schema served
is the package's."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

from gateway.ledger import audit, outbox
from tests.http.served import OPERATOR, VIEWER, auth, line, served
from tests.support import post_units

PROBLEM = "application/problem+json"
T = datetime(2026, 6, 1, 12, tzinfo=UTC)


async def test_outbox_over_http_with_roles_and_problems(sqlite_url):
    ln = line(sqlite_url)
    outbox.set_routes(ln.engine, {"hook": None, "board": ["PRESS-01"]})
    confirmed = [post_units(ln.engine, i * 25, (i + 1) * 25, order="1000124", machine="ASSY-03", at=T).id
                 for i in range(3)]
    keys = [f"{c}:confirmation:hook" for c in confirmed]
    ids = {r.key: r.id for r in outbox.listed(ln.engine)}
    first, second, third = (ids[k] for k in keys)
    async with served(ln.gateway) as (_, client):
        v, o = auth(VIEWER), auth(OPERATOR)
        anonymous = await client.get("/api/v1/outbox")
        waiting = await client.get("/api/v1/outbox", headers=v)
        of_board = await client.get("/api/v1/outbox", params={"target": "board"}, headers=v)
        of_order = await client.get("/api/v1/outbox", params={"order": "1000124", "last": 2}, headers=v)
        bad_status = await client.get("/api/v1/outbox", params={"status": "lost"}, headers=v)
        park = {"ids": [first], "reason": "ERP closed for the audit"}
        parked_by_viewer = await client.post("/api/v1/outbox/park", json=park, headers=v)
        parked = await client.post("/api/v1/outbox/park", json=park, headers=o)
        parked_again = await client.post("/api/v1/outbox/park", json=park, headers=o)
        no_reason = await client.post("/api/v1/outbox/skip", json={"ids": [second], "reason": " "}, headers=o)
        no_ids = await client.post("/api/v1/outbox/retry", json={"ids": []}, headers=o)
        missing = await client.post("/api/v1/outbox/retry", json={"ids": [first, 999]}, headers=o)
        only_parked = await client.get("/api/v1/outbox", params={"status": "parked"}, headers=v)
        retried = await client.post("/api/v1/outbox/retry", json={"ids": [first]}, headers=o)
        skipped = await client.post("/api/v1/outbox/skip", headers=o,
                                    json={"ids": [second], "reason": "posted by hand in the ERP"})
        every = await client.get("/api/v1/outbox", params={"status": "all"}, headers=v)
        schema = await client.get("/api/v1/outputs/schema", headers=v)
        schema_anonymous = await client.get("/api/v1/outputs/schema")
    assert anonymous.status_code == 401 and anonymous.headers["content-type"] == PROBLEM
    assert waiting.status_code == 200
    assert [(r["id"], r["key"], r["status"], r["attempts"]) for r in waiting.json()] == [
        (third, keys[2], "pending", 0), (second, keys[1], "pending", 0), (first, keys[0], "pending", 0)]
    assert {r["target"] for r in waiting.json()} == {"hook"}  # ASSY-03 is not routed to the board
    assert of_board.json() == []
    assert [r["id"] for r in of_order.json()] == [third, second]
    assert bad_status.status_code == 422 and bad_status.json()["errors"][0]["loc"] == ["query", "status"]
    assert parked_by_viewer.status_code == 403
    assert parked_by_viewer.json()["detail"] == "token 'board' has role viewer; this needs operator"
    assert parked.status_code == 200
    assert [(r["id"], r["status"], r["last_error"]) for r in parked.json()] == [
        (first, "parked", "park by hand: ERP closed for the audit")]
    assert parked_again.status_code == 409 and parked_again.headers["content-type"] == PROBLEM
    assert parked_again.json()["detail"] == (f"delivery {first} ({keys[0]}) is parked; "
                                             "park applies to pending or unknown deliveries")
    assert no_reason.status_code == 422 and no_reason.json()["type"] == "urn:backflush-gateway:problem:invalid"
    assert no_reason.json()["detail"] == "give a reason to skip a delivery (--reason)"
    assert no_ids.status_code == 422 and no_ids.json()["errors"][0]["loc"] == ["body", "ids"]
    assert missing.status_code == 404 and missing.json()["detail"] == "no delivery 999 in the outbox"
    assert [r["id"] for r in only_parked.json()] == [first]  # the refused retry changed nothing
    assert [(r["id"], r["status"], r["attempts"]) for r in retried.json()] == [(first, "pending", 0)]
    assert [(r["id"], r["status"]) for r in skipped.json()] == [(second, "skipped")]
    assert {r["id"]: r["status"] for r in every.json()} == {first: "pending", second: "skipped", third: "pending"}
    trail = [(r.actor, r.actor_kind, r.via, r.action, r.reason, r.subject) for r in audit.read(ln.engine)]
    assert trail == [
        ("shift-lead", "api", "POST /api/v1/outbox/park", "outbox.park", "ERP closed for the audit",
         f"outbox:{first}"),
        ("shift-lead", "api", "POST /api/v1/outbox/retry", "outbox.retry", "", f"outbox:{first}"),
        ("shift-lead", "api", "POST /api/v1/outbox/skip", "outbox.skip", "posted by hand in the ERP",
         f"outbox:{second}")]
    package_schema = Path(__file__).parents[2] / "gateway" / "outputs" / "outputs.schema.json"
    assert schema.status_code == 200 and schema.headers["content-type"] == "application/schema+json"
    assert schema.json() == json.loads(package_schema.read_text())
    assert schema.json()["required"][:2] == ["version", "key"]
    assert schema_anonymous.status_code == 401
    ln.engine.dispose()
