"""The HTTP face of a running gateway on a simulated PLC: probes, metrics and machines against the ledger.

The gateway runs in-process on real sockets (asyncua server, uvicorn on a real port, httpx
as the client) and a real SQLite ledger; after a committed run the API and /metrics must
say exactly what the ledger holds.
"""

from __future__ import annotations

import asyncio
import json
from decimal import Decimal

import pytest

from gateway.ledger.reports import summary
from gateway.service import Gateway
from tests.http.served import OPERATOR, VIEWER, auth, dec, line, scrape, served


@pytest.mark.slow
async def test_machines_and_metrics_equal_the_ledger_after_a_committed_run(ledger_url):
    ln = line(ledger_url)
    async with served(ln.gateway) as (server, client):
        async with ln:
            health, ready = await client.get("/health"), await client.get("/ready")
            assert health.status_code == 200, health.text
            assert health.json()["writer"]["alive"] is True
            assert ready.status_code == 200, ready.text
            assert ready.json()["sources"]["line"]["connected"] is True
            assert set(ready.json()["machines"]) == {"PRESS-01", "ASSY-03"}
            await ln.produce(1.5, "PRESS-01")
            await ln.produce(1.0, "ASSY-03")
            live = (await client.get("/api/v1/machines/PRESS-01", headers=auth(VIEWER))).json()
            assert live["order"] == "1000123" and live["owned"] is True
            assert live["source"]["connected"] is True and live["last_reading_age_s"] < 5
            assert live["counters"]["good"] == ln.plc.models["PRESS-01"].truth()["good_count"]
        # Stopped: pending units were confirmed and committed; the server still answers.
        totals = summary(ln.engine).machines
        machines = (await client.get("/api/v1/machines", headers=auth(OPERATOR))).json()
        metrics = scrape((await client.get("/metrics")).text)
    assert [m["name"] for m in machines] == ["ASSY-03", "PRESS-01"]
    for m in machines:
        t = totals[m["name"]]
        assert t.counted == ln.made(m["name"]) > 20
        assert dec(m["counted_units"]) == t.counted
        assert (dec(m["confirmed"]["yield"]), dec(m["confirmed"]["scrap"])) == (t.confirmed_yield, t.confirmed_scrap)
        assert dec(m["pending"]["yield"]) + dec(m["pending"]["scrap"]) == t.pending == 0
        assert dec(m["held"]) == t.held == 0
        labels = (("machine", m["name"]),)
        assert metrics[("gateway_units_counted_total", labels)] == float(t.counted)
        assert metrics[("gateway_units_confirmed_total", (("kind", "yield"), *labels))] == float(t.confirmed_yield)
        assert metrics[("gateway_units_confirmed_total", (("kind", "scrap"), *labels))] == float(t.confirmed_scrap)
        assert metrics[("gateway_units_pending", (("kind", "yield"), *labels))] == 0
    assert metrics[("gateway_source_connected", (("source", "line"),))] in (0.0, 1.0)
    assert metrics[("gateway_writer_queue_depth", ())] == 0
    assert metrics[("gateway_commit_seconds_count", ())] >= 2
    assert metrics[("gateway_build_info", (("python", metrics_python(metrics)), ("version", "0.1.0")))] == 1


def metrics_python(metrics) -> str:
    return next(dict(labels)["python"] for name, labels in metrics if name == "gateway_build_info")


@pytest.mark.slow
async def test_the_figures_survive_a_restart_on_the_same_ledger(sqlite_url):
    """Counted and confirmed are the ledger's all-time figures, not this process's."""
    first = line(sqlite_url)
    async with first:
        await first.produce(0.8, "ASSY-03")
    second, stop = Gateway(first.gateway.mapping, first.engine), asyncio.Event()
    async with served(second) as (_, client):  # the PLC is gone: the source retries meanwhile
        task = asyncio.create_task(second.run(stop))
        await second.started()
        body = (await client.get("/api/v1/machines/ASSY-03", headers=auth(VIEWER))).json()
        ready = await client.get("/ready")
        stop.set()
        assert await task is True
    t = summary(first.engine).machines["ASSY-03"]
    assert t.counted == first.made("ASSY-03") > 0
    assert dec(body["counted_units"]) == t.counted
    assert (dec(body["confirmed"]["yield"]), dec(body["confirmed"]["scrap"])) == (t.confirmed_yield,
                                                                                  t.confirmed_scrap)
    # Disconnected, but within the source's retry budget: still ready.
    assert ready.status_code == 200, ready.text
    assert ready.json()["sources"]["line"]["connected"] is False


@pytest.mark.slow
async def test_a_machine_a_reload_adds_brings_its_ledger_history_into_the_figures(sqlite_url, tmp_path):
    """ASSY-03 was counted by an earlier run; a reload adds it to a gateway that started without it."""
    first = line(sqlite_url)
    async with first:
        await first.produce(0.8, "ASSY-03")
    second = line(sqlite_url)
    whole = second.gateway.mapping
    file = tmp_path / "plant.yaml"
    file.write_text(json.dumps(whole.model_dump(mode="json", exclude_none=True)))  # JSON is YAML
    press_only = whole.model_copy(update={"machines": {"PRESS-01": whole.machines["PRESS-01"]}})
    second.gateway = Gateway(press_only, second.engine, mapping_file=file)
    async with served(second.gateway) as (_, client):
        async with second:
            await second.produce(0.3, "PRESS-01")
            assert (await second.gateway.reload())[0] == "applied"
            await second.produce(0.5, "ASSY-03")
        body = (await client.get("/api/v1/machines/ASSY-03", headers=auth(VIEWER))).json()
        metrics = scrape((await client.get("/metrics")).text)
    t = summary(second.engine).machines["ASSY-03"]
    assert t.confirmed_yield > first.made("ASSY-03") * Decimal("0.5")  # both runs' confirmations
    assert (dec(body["confirmed"]["yield"]), dec(body["confirmed"]["scrap"])) == (t.confirmed_yield,
                                                                                  t.confirmed_scrap)
    labels = (("machine", "ASSY-03"),)
    assert metrics[("gateway_units_counted_total", labels)] == float(t.counted)
    assert metrics[("gateway_units_confirmed_total", (("kind", "yield"), *labels))] == float(t.confirmed_yield)
