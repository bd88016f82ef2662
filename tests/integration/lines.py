"""A production line for integration tests: a simulated PLC, the gateway and a ledger.

The scenario tests of every protocol drive the same thing: start the simulator with its
machines paused, let the gateway take its baseline, produce, fault, and compare the
ledger with the simulator's ground truth. Only the simulator and the mapping differ.

``spawn``, ``wait_for`` and ``Simulators`` are the same line as separate processes
(simulators and gateway killed and restarted for real), shared by the kill -9 test and
the fault suite in ``tests/faults``.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from decimal import Decimal
from pathlib import Path

from sqlalchemy import select

from gateway.demo import caught_up, wait_until
from gateway.ledger import schema
from gateway.ledger.masters import store_masterdata
from gateway.ledger.schema import open_engine
from gateway.mapping.model import Mapping
from gateway.masterdata.load import load_masterdata, to_domain
from gateway.service import Gateway
from simulators.plant import SimulatedPlant

MASTERDATA = "mappings/demo-masterdata.yaml"
ROOT = Path(__file__).resolve().parents[2]


def spawn(args: list[str], log: Path) -> subprocess.Popen:
    """``python args…`` from the project root, output appended to ``log``."""
    return subprocess.Popen([sys.executable, *args], cwd=ROOT, stdout=log.open("ab"), stderr=subprocess.STDOUT)


def wait_for(cond, timeout: float, what: str) -> None:
    """Poll ``cond`` (exceptions mean "not yet") until true, else fail saying ``what``."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if cond():
                return
        except Exception:  # noqa: BLE001 — not ready yet
            pass
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


class Simulators:
    """Both simulator processes (OPC UA and Modbus), addressed through their control channels."""

    def __init__(self, endpoint: str, control_port: int) -> None:
        self.endpoint, self.control_port = endpoint, control_port

    def command(self, command: str, machine: str = "*", argument: str = "") -> dict:
        from simulators.commands import SimCommandError
        from simulators.control import sim_command_sync
        from simulators.json_control import json_command_sync

        if machine != "*":
            try:
                return {machine: sim_command_sync(self.endpoint, machine, command, argument)}
            except SimCommandError as exc:
                if "unknown machine" not in str(exc):
                    raise
                return {machine: json_command_sync("127.0.0.1", self.control_port, machine, command, argument)}
        return sim_command_sync(self.endpoint, "*", command, argument) | json_command_sync(
            "127.0.0.1", self.control_port, "*", command, argument)

    def truth(self) -> dict:
        return self.command("truth")


class Line:
    """Simulator + gateway + ledger for one scenario; ``start`` is the truth at the baseline."""

    def __init__(self, url: str, plc: SimulatedPlant, mapping: Mapping, *, load_masterdata_now: bool = True):
        self.plc = plc
        self.engine = open_engine(url)
        if load_masterdata_now:
            self.load_masterdata()
        self.gateway = Gateway(mapping, self.engine)
        self.stop = asyncio.Event()
        self.names = list(plc.models)
        self.name = self.names[0]

    def load_masterdata(self) -> None:
        md = load_masterdata(MASTERDATA)
        store_masterdata(self.engine, to_domain(md), md.stock)

    async def __aenter__(self) -> Line:
        await self.plc.start()
        await self.plc.command("*", "pause")
        self.task = asyncio.create_task(self.gateway.run(self.stop))
        await self.settle()
        self.start = self.truth_units()
        self.starts = {name: self.truth_units(name) for name in self.names}
        return self

    async def __aexit__(self, *exc) -> None:
        self.stop.set()
        await self.task
        await self.plc.stop()

    def truth_units(self, machine: str | None = None) -> Decimal:
        t_ = self.plc.models[machine or self.name].truth()
        return Decimal(t_["good_units"] + t_["scrap_units"])

    def made(self, machine: str | None = None) -> Decimal:
        machine = machine or self.name
        return self.truth_units(machine) - self.starts[machine]

    async def settle(self, timeout_s: float = 20) -> None:
        await wait_until(lambda: caught_up(self.gateway, self.plc), timeout_s, "the gateway to read the counters")
        await self.gateway.committed()

    async def produce(self, seconds: float, machine: str | None = None) -> None:
        await self.plc.command(machine or self.name, "resume")
        await asyncio.sleep(seconds)
        await self.plc.command(machine or self.name, "pause")
        await self.settle()

    def anomalies(self) -> list:
        with self.engine.connect() as conn:
            return conn.execute(select(schema.anomalies)).all()

    def units_by_order(self) -> dict[str, Decimal]:
        by_order: dict[str, Decimal] = {}
        with self.engine.connect() as conn:
            for r in conn.execute(select(schema.confirmations)):
                by_order[r.order_no] = by_order.get(r.order_no, 0) + r.yield_qty + r.scrap_qty
        return by_order


LINE_MAPPING = """
sources:
  line:
    opcua: {{endpoint: "opc.tcp://127.0.0.1:{opc_port}", publishing_interval_ms: 50, reconnect_min_s: 0.2, reconnect_max_s: 1}}
  lathes:
    modbus: {{host: 127.0.0.1, port: {modbus_port}, poll_interval_ms: 50, reconnect_min_s: 0.2, reconnect_max_s: 1}}
machines:
  PRESS-01:
    source: line
    work_center: WC-PRESS
    operation: "0010"
    units_per_cycle: 4
    counters:
      good:  {{node: "{ns}PRESS-01.GoodCount", type: uint32}}
      scrap: {{node: "{ns}PRESS-01.ScrapCount", type: uint32}}
    order: {{node: "{ns}PRESS-01.OrderNumber"}}
    confirm: {{every_units: 40, every_seconds: 1}}{plausibility}
  ASSY-03:
    source: line
    work_center: WC-ASSY
    operation: "0010"
    counters:
      good:  {{node: "{ns}ASSY-03.GoodCount", type: {assy_type}}}
      scrap: {{node: "{ns}ASSY-03.ScrapCount", type: {assy_type}}}
    order: "1000124"
    confirm: {{every_units: {assy_every}, every_seconds: {assy_seconds}}}
  LATHE-04:
    source: lathes
    work_center: WC-LATHE
    operation: "0010"
    counters:
      good:  {{register: 100, type: uint32}}
      scrap: {{register: 104, type: uint32}}
    order: {{register: 110, type: string, length: 10}}
    confirm: {{every_units: 10, every_seconds: 1}}
"""


def line_mapping(opc_port: int, modbus_port: int, *, assy_type: str = "uint32", assy_every: int = 15,
                 assy_seconds: float = 1, plausibility: str = "") -> str:
    """The mapping of the test line: PRESS-01 and ASSY-03 on OPC UA, LATHE-04 on Modbus."""
    return LINE_MAPPING.format(opc_port=opc_port, modbus_port=modbus_port, ns="nsu=urn:backflush-gateway:simulator;s=",
                               assy_type=assy_type, assy_every=assy_every, assy_seconds=assy_seconds,
                               plausibility=plausibility)
