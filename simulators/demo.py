"""The demo plant's machines, as the simulator runs them for ``gateway demo``.

They match ``mappings/demo-plant.yaml``: same machine names, units per cycle and order
numbers, 32-bit counters; three machines on one OPC UA server at ``DEMO_ENDPOINT`` and
one lathe on a Modbus TCP server at ``DEMO_MODBUS_PORT`` (first machine: registers from
100, see ``simulators.modbus_plc``). Protocol-free, so any simulator (and the gateway's
demo command) can import it without a server library.
"""

from __future__ import annotations

from simulators.machine import SimMachineConfig

DEMO_HOST = "127.0.0.1"
DEMO_PORT = 4840
DEMO_ENDPOINT = f"opc.tcp://{DEMO_HOST}:{DEMO_PORT}"
DEMO_MODBUS_PORT = 5020


def demo_machines() -> list[SimMachineConfig]:
    """The three demo machines; seeds differ so their scrap does not fall in step."""
    return [
        # 4-cavity press: one stroke makes 4 brackets.
        SimMachineConfig("PRESS-01", rate_hz=5.0, units_per_cycle=4, scrap_ratio=0.02, order="1000123", seed=1),
        # The mapping fixes WELD-02's order (no order tag on the welder); the simulator
        # still shows the order so a person looking at the server sees what it makes.
        SimMachineConfig("WELD-02", rate_hz=6.0, units_per_cycle=1, scrap_ratio=0.01, order="1000123", seed=2),
        SimMachineConfig("ASSY-03", rate_hz=10.0, units_per_cycle=1, scrap_ratio=0.03, order="1000124", seed=3),
    ]


def demo_modbus_machines() -> list[SimMachineConfig]:
    """The demo's Modbus machine: a bar-fed lathe turning shafts, one per cycle."""
    return [SimMachineConfig("LATHE-04", rate_hz=4.0, units_per_cycle=1, scrap_ratio=0.02, order="1000125", seed=4)]
