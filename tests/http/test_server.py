"""The HTTP server's own behaviour, on a gateway whose PLCs are unreachable (nothing to count).

Problems for every bad request, tokens and roles, the writer's death seen by /health, and
`gateway run` itself: a port in use is one line and exit 1; SIGTERM still stops the gateway
cleanly while uvicorn serves on its loop.
"""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import time

import httpx
import pytest

from gateway.demo import wait_until
from gateway.http.auth import Principal, Role, Tokens
from gateway.ledger.schema import open_engine
from gateway.mapping.load import load_mapping
from gateway.service import Gateway
from tests.http.served import OPERATOR, VIEWER, auth, served
from tests.integration.lines import ROOT, line_mapping
from tests.support import free_port

PROBLEM = "application/problem+json"


def idle_gateway(tmp_path) -> Gateway:
    """A gateway whose sources find nothing at their ports (they retry meanwhile)."""
    path = tmp_path / "mapping.yaml"
    path.write_text(line_mapping(free_port(), free_port()))
    return Gateway(load_mapping(path), open_engine(f"sqlite:///{tmp_path / 'ledger.sqlite'}"))


async def test_every_refusal_is_a_problem_document(tmp_path):
    gw, stop = idle_gateway(tmp_path), asyncio.Event()
    async with served(gw) as (_, client):
        task = asyncio.create_task(gw.run(stop))
        await gw.started()
        none = await client.get("/api/v1/machines")
        wrong = await client.get("/api/v1/machines", headers=auth("not-a-configured-token"))
        basic = await client.get("/api/v1/machines", headers={"Authorization": "Basic dXNlcjpwYXNz"})
        unknown = await client.get("/api/v1/machines/NOPE-99", headers=auth(VIEWER))
        too_long = await client.get(f"/api/v1/machines/{'M' * 65}", headers=auth(VIEWER))
        no_route = await client.get("/api/v1/nothing-here")
        ok = await client.get("/api/v1/machines", headers=auth(VIEWER))
        headers = {**auth(OPERATOR), "content-type": "application/json"}
        surrogate = await client.post("/api/v1/stock/receive", headers=headers,
                                      content=b'{"material": "\\ud800", "qty": "1", "location": "LS-ASSY"}')
        huge_id = await client.post("/api/v1/anomalies/accept", headers=headers, json={"anomaly_id": 2**70})
        absurd = await client.post("/api/v1/stock/receive", headers=headers,
                                   json={"material": "STEEL-COIL", "qty": "1e30", "location": "LS-PRESS"})
        not_json = await client.post("/api/v1/errors/reprocess", headers=headers, content=b"{ids: [1")
        stop.set()
        await task
    for r in (none, wrong, basic, unknown, too_long, no_route, surrogate, huge_id, absurd, not_json):
        assert r.headers["content-type"] == PROBLEM, r.text
        assert set(r.json()) >= {"type", "title", "status", "detail"}
    assert (none.status_code, none.json()["detail"]) == (
        401, "this needs a bearer token (Authorization: Bearer <token>)")
    assert none.headers["www-authenticate"].startswith("Bearer")
    assert (wrong.status_code, wrong.json()["detail"]) == (401, "the bearer token is not one of the configured tokens")
    assert wrong.json()["type"] == "urn:backflush-gateway:problem:unauthorized"
    assert basic.status_code == 401
    assert (unknown.status_code, unknown.json()["detail"]) == (404, "no machine 'NOPE-99' in this gateway's mapping")
    assert too_long.status_code == 422 and too_long.json()["errors"][0]["loc"] == ["path", "name"]
    assert (no_route.status_code, no_route.json()["title"]) == (404, "Not Found")
    # The application layer refuses it, for every front end alike.
    assert (surrogate.status_code, surrogate.json()["detail"]) == (
        422, "'\\ud800' is not valid text (it holds a lone surrogate, shown as \\u…); type it again")
    # Stored, it would have broken every later read of that stock: refused before anything is posted.
    assert (absurd.status_code, absurd.json()["detail"]) == (
        422, "1E+30 is out of range: a quantity or amount in the ledger is a finite number below "
             "1,000,000,000,000,000 in its unit")
    assert huge_id.status_code == 422 and huge_id.json()["errors"][0]["loc"] == ["body", "anomaly_id"]
    assert not_json.status_code == 422 and not_json.json()["errors"][0]["type"] == "json_invalid"
    assert ok.status_code == 200 and [m["name"] for m in ok.json()] == ["ASSY-03", "LATHE-04", "PRESS-01"]


async def test_metrics_need_a_token_only_when_configured(tmp_path):
    gw = idle_gateway(tmp_path)
    async with served(gw) as (_, open_client):
        assert (await open_client.get("/metrics")).status_code == 200
    async with served(gw, auth_metrics=True) as (_, client):
        refused = await client.get("/metrics")
        allowed = await client.get("/metrics", headers=auth(VIEWER))
        health = await client.get("/health")
    assert refused.status_code == 401 and refused.headers["content-type"] == PROBLEM
    assert allowed.status_code == 200 and "gateway_writer_queue_depth" in allowed.text
    assert (health.status_code, health.json()["status"]) == (200, "starting")  # not run yet: alive


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
async def test_health_is_503_when_the_writer_thread_is_dead(tmp_path, monkeypatch):
    import gateway.ledger.writer as w

    def dies(self, *, block):
        raise SystemExit("the ledger writer thread ends")

    monkeypatch.setattr(w.LedgerWriter, "_drain", dies)
    gw = idle_gateway(tmp_path)
    async with served(gw) as (_, client):
        task = asyncio.create_task(gw.run(asyncio.Event(), shutdown_timeout_s=5))  # the writer's death stops it
        await gw.started()
        await wait_until(lambda: not gw.writer.alive, 10, "the writer thread to end")
        health = await client.get("/health")
        done = await asyncio.wait_for(task, 30)
    assert done is False
    assert health.status_code == 503
    body = health.json()
    assert body["status"] == "failing"
    assert body["writer"]["ok"] is False and body["writer"]["alive"] is False
    assert body["event_loop"]["ok"] is True


def test_token_new_prints_a_token_whose_line_admits_it_with_its_role():
    out = subprocess.run([sys.executable, "-m", "gateway.cli", "token", "new", "--name", "mes", "--role", "operator"],
                         cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    first, second, line = out.stdout.splitlines()
    token = first.removeprefix("token (shown once, keep it secret): ")
    assert token.startswith("bgw_") and len(token) > 40
    assert token not in line
    assert Tokens.parse(line, "the printed line").who(token) == Principal("mes", Role.operator)
    assert Tokens.parse(line, "the printed line").who(token + "x") is None


def _run(tmp_path, *extra: str) -> subprocess.Popen:
    mapping = tmp_path / "mapping.yaml"
    mapping.write_text(line_mapping(free_port(), free_port()))
    return subprocess.Popen([sys.executable, "-m", "gateway.cli", "run", "--mapping", str(mapping), "--db",
                             f"sqlite:///{tmp_path / 'ledger.sqlite'}", "--log-json", *extra],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_run_with_the_port_in_use_says_so_in_one_line_and_exits_1(tmp_path):
    import socket

    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        proc = _run(tmp_path, "--http", f"127.0.0.1:{port}")
        out, err = proc.communicate(timeout=60)
    assert proc.returncode == 1
    assert err.strip() == (f"error: cannot serve HTTP on 127.0.0.1:{port}: the port is in use by another program; "
                           "choose another with --http HOST:PORT, or --http off")
    assert not (tmp_path / "ledger.sqlite").exists()  # refused before anything started


def test_the_demo_serves_on_a_free_port_when_its_default_one_is_taken():
    """A demo is for trying things: another program on 8080 must not stop it (a run is refused, above)."""
    import socket

    from gateway.cli.http import prepare

    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        plan = prepare(f"127.0.0.1:{port}", None, False, any_port_if_taken=True)
        try:
            host, got = plan.sock.getsockname()[:2]
            assert host == "127.0.0.1" and got not in (0, port)
        finally:
            plan.sock.close()


def test_run_serves_http_and_still_stops_cleanly_on_sigterm(tmp_path):
    port = free_port()
    tokens = tmp_path / "tokens.yaml"
    from gateway.http.auth import digest

    tokens.write_text(f'[{{"name": "lead", "role": "operator", "sha256": "{digest(OPERATOR)}"}}]')  # JSON works too
    proc = _run(tmp_path, "--http", f"127.0.0.1:{port}", "--tokens", str(tokens))
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                machines = httpx.get(f"http://127.0.0.1:{port}/api/v1/machines", headers=auth(OPERATOR), timeout=2)
                if machines.status_code == 200 and machines.json():  # restored: the writer runs
                    health = httpx.get(f"http://127.0.0.1:{port}/health", timeout=2)
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline and proc.poll() is None, "the gateway did not serve"
            time.sleep(0.2)
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert health.status_code == 200
    assert sorted(m["name"] for m in machines.json()) == ["ASSY-03", "LATHE-04", "PRESS-01"]
    assert proc.returncode == 0, err[-2000:]
    assert '"event": "gateway_stopped"' in err and '"committed": true' in err
    assert '"event": "http_serving"' in err


@pytest.mark.slow
def test_demo_serves_http_and_says_where(tmp_path):
    port = free_port()
    out = subprocess.run([sys.executable, "-m", "gateway.cli", "demo", "--seconds", "1", "--port", str(free_port()),
                          "--modbus-port", str(free_port()), "--db", f"sqlite:///{tmp_path / 'demo.sqlite'}",
                          "--http", f"127.0.0.1:{port}"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    assert f"HTTP: http://127.0.0.1:{port}  (/health /ready /metrics /api/v1/machines /openapi.json)" in out.stdout
    assert f"web console: http://127.0.0.1:{port}/console/  (while the demo runs; log in with the token below)" in out.stdout
    assert "API token for this demo run (operator): bgw_" in out.stdout
    # The commands it suggests work as printed: the ledger is named once, for all of them.
    assert f"explore the ledger: export GATEWAY_DB=sqlite:///{tmp_path / 'demo.sqlite'}\n" in out.stdout


async def test_ready_is_503_once_a_source_is_down_longer_than_its_budget(tmp_path):
    from gateway.http.health import Limits

    gw, stop = idle_gateway(tmp_path), asyncio.Event()
    async with served(gw, limits=Limits(source_budget_s=1.0)) as (server, client):
        task = asyncio.create_task(gw.run(stop))
        await gw.started()
        early = await client.get("/ready")
        await asyncio.sleep(2.0)
        late = await client.get("/ready")
        health = await client.get("/health")
        stop.set()
        await task
    assert early.status_code == 200, early.text  # not connected, but within the budget
    assert late.status_code == 503
    body = late.json()
    assert body["status"] == "not ready" and body["ledger"]["ok"] is True
    assert {name: s["ok"] for name, s in body["sources"].items()} == {"line": False, "lathes": False}
    assert body["sources"]["line"]["disconnected_s"] > 1.0
    assert "Connect call failed" in body["sources"]["line"]["last_error"]
    assert body["machines"]["LATHE-04"] == {"owned": True, "source": "lathes", "source_ok": False}
    assert health.status_code == 200  # alive all the same: a PLC away is not the gateway's failure
