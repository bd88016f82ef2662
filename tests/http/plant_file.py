"""A gateway's mapping file for the workbench tests: PRESS-01 of a simulated OPC UA PLC that
also has ASSY-03 (not mapped: the tests add it), and a Modbus source without machines whose
device counts past 16 bits in word-swapped registers."""

from __future__ import annotations

import hashlib

from simulators.machine import SimMachineConfig
from simulators.modbus_plc import ModbusPlc
from simulators.opcua_plc import NAMESPACE_URI, OpcUaPlc
from tests.support import free_port

NS = f"nsu={NAMESPACE_URI};s="
RUNNING = """\
sources:
  line:
    opcua: {{endpoint: "opc.tcp://127.0.0.1:{opc}", publishing_interval_ms: 50, reconnect_min_s: 0.1, reconnect_max_s: 0.5}}
  lathes:
    modbus: {{host: 127.0.0.1, port: {modbus}, timeout_s: 2}}
machines:
  PRESS-01:
    source: line
    work_center: WC-PRESS
    units_per_cycle: 4
    counters:
      good:  {{node: "{ns}PRESS-01.GoodCount", type: uint32}}
      scrap: {{node: "{ns}PRESS-01.ScrapCount", type: uint32}}
    order: {{node: "{ns}PRESS-01.OrderNumber"}}
    confirm: {{every_units: 40, every_seconds: 1}}
"""
ASSY = """\
  ASSY-03:
    source: line
    work_center: WC-ASSY
    counters:
      good:  {good}
      scrap: {scrap}
    order: "1000124"
    confirm: {{every_units: 25, every_seconds: 1}}
"""


def sha(text: str | bytes) -> str:
    return hashlib.sha256(text.encode() if isinstance(text, str) else text).hexdigest()


def plcs() -> tuple[OpcUaPlc, ModbusPlc]:
    opc = OpcUaPlc([SimMachineConfig("PRESS-01", rate_hz=40, units_per_cycle=4, order="1000123", seed=1),
                    SimMachineConfig("ASSY-03", rate_hz=60, scrap_ratio=0.1, order="1000124", seed=3)],
                   port=free_port(), tick_s=0.01)
    # Word-swapped (CDAB) and past 16 bits, so that only one of the decodings is the count.
    lathe = ModbusPlc([SimMachineConfig("LATHE-04", rate_hz=10, order="1000125", initial_count=70_000, paused=True)],
                      port=free_port(), word_order="little")
    return opc, lathe
