"""A gateway on a simulated OPC UA PLC, served over HTTP on a real port, for the HTTP tests.

``served(gateway)`` starts the HTTP server before the gateway runs (as ``gateway run`` does)
and keeps it up after the gateway stopped, so a test can compare what the API and
``/metrics`` say with what the ledger holds once everything is committed.
"""

from __future__ import annotations

import contextlib
from decimal import Decimal

import httpx
from prometheus_client.parser import text_string_to_metric_families

from gateway.http.auth import Tokens, digest
from gateway.http.listen import Listen, bind
from gateway.http.server import HttpServer
from gateway.mapping.model import Mapping
from simulators.machine import SimMachineConfig
from simulators.opcua_plc import OpcUaPlc, node_id
from tests.integration.lines import Line
from tests.support import free_port

VIEWER = "viewer-token-for-tests"
OPERATOR = "operator-token-for-tests"
TOKENS = Tokens.parse(f"""
- {{name: board, role: viewer, sha256: {digest(VIEWER)}}}
- {{name: shift-lead, role: operator, sha256: {digest(OPERATOR)}}}
""", "tests")


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def machines() -> list[SimMachineConfig]:
    return [SimMachineConfig("PRESS-01", rate_hz=40, units_per_cycle=4, scrap_ratio=0.05, order="1000123", seed=1),
            SimMachineConfig("ASSY-03", rate_hz=60, scrap_ratio=0.1, order="1000124", seed=3)]


def mapping(port: int) -> Mapping:
    def counters(name: str) -> dict:
        return {"good": {"node": node_id(name, "GoodCount")}, "scrap": {"node": node_id(name, "ScrapCount")}}

    return Mapping.model_validate({
        "sources": {"line": {"opcua": {"endpoint": f"opc.tcp://127.0.0.1:{port}", "publishing_interval_ms": 50,
                                       "reconnect_min_s": 0.1, "reconnect_max_s": 0.5}}},
        "machines": {
            "PRESS-01": {"source": "line", "work_center": "WC-PRESS", "units_per_cycle": 4, "counters": counters(
                "PRESS-01"), "order": {"node": node_id("PRESS-01", "OrderNumber")},
                "confirm": {"every_units": 40, "every_seconds": 1}},
            "ASSY-03": {"source": "line", "work_center": "WC-ASSY", "counters": counters("ASSY-03"),
                        "order": "1000124", "confirm": {"every_units": 25, "every_seconds": 1}},
        },
    })


def line(url: str) -> Line:
    port = free_port()
    return Line(url, OpcUaPlc(machines(), port=port, tick_s=0.01), mapping(port))


@contextlib.asynccontextmanager
async def served(gateway, **kw):
    """The HTTP server of ``gateway`` on a free port, with an httpx client on it."""
    server = HttpServer(bind(Listen("127.0.0.1", free_port())), gateway, tokens=TOKENS, **kw)
    await server.start()
    try:
        async with httpx.AsyncClient(base_url=server.url, timeout=10) as client:
            yield server, client
    finally:
        await server.stop()


def scrape(text: str) -> dict[tuple[str, tuple], float]:
    """``/metrics`` text → {(sample name, sorted labels): value}."""
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def dec(value) -> Decimal:
    return Decimal(str(value))
