"""Requests per poll for 100 machines' Modbus tags, with and without grouping, and the
time one poll takes against the simulated Modbus PLC on this machine.

Usage: python bench/modbus_grouping.py [--machines 100] [--polls 30] [--append]

Each machine has three tags (good and scrap counters, the order number string) at the
simulator's layout (``simulators.modbus_plc.machine_layout``). A poll is what the
Modbus source sends: the reads of ``plan_reads`` one after another over one TCP
connection. ``--append`` adds the table, the command and this machine's CPU to
bench/RESULTS.md. Only 127.0.0.1 is contacted; the run is bounded by --polls.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import statistics
import sys
import time
from dataclasses import dataclass
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from gateway.sources.modbus.client import ModbusClient  # noqa: E402
from gateway.sources.modbus.registers import ModbusTag, Read, one_read_per_tag, plan_reads  # noqa: E402
from simulators.machine import SimMachineConfig  # noqa: E402
from simulators.modbus_plc import ModbusPlc  # noqa: E402
from bench.machine import cpu_model  # noqa: E402
from tests.support import free_port  # noqa: E402

RESULTS = ROOT / "bench" / "RESULTS.md"
HEADER = """# Benchmark results

Each section: what was measured, the command, the machine it ran on, the figures.
Figures are from one run on the machine named; compare runs on the same machine only.
"""


@dataclass
class Case:
    name: str
    stride: int  # registers from one machine's base to the next
    max_gap: int | None  # None: no grouping, one request per tag


CASES = [
    Case("one request per tag (no grouping)", 100, None),
    Case("grouped, max_gap_registers 8 (default)", 100, 8),
    Case("grouped, max_gap_registers 80 (bridges the gap between machines)", 100, 80),
    Case("grouped, max_gap 8, machines packed 20 registers apart", 20, 8),
]


def tags_of(plc: ModbusPlc) -> list[ModbusTag]:
    roles = {"GoodCount": "good", "ScrapCount": "scrap", "OrderNumber": "order"}
    return [ModbusTag(name, roles[key], t.register, t.type, t.table, t.length)
            for name in plc.models for key, t in plc.layout(name).items() if key in roles]


async def poll(client: ModbusClient, plan: list[Read]) -> None:
    for read in plan:
        words = await client.read(read.table, read.start, read.count, 1)
        read.values(words)  # decoding is part of a poll's cost


async def measure(case: Case, machines: int, polls: int) -> dict:
    configs = [SimMachineConfig(f"M{i:03d}", rate_hz=10.0, order=f"{1000000 + i}", seed=i) for i in range(machines)]
    async with ModbusPlc(configs, port=free_port(), stride=case.stride) as plc:
        tags = tags_of(plc)
        plan = one_read_per_tag(tags) if case.max_gap is None else plan_reads(tags, max_gap=case.max_gap)
        client = ModbusClient(plc.host, plc.port, timeout_s=5.0)
        await client.connect()
        try:
            await poll(client, plan)  # warm-up: connection, caches
            unit = plc.unit(configs[0].name)
            before = unit.reads
            times = []
            for _ in range(polls):
                began = time.perf_counter()
                await poll(client, plan)
                times.append(time.perf_counter() - began)
            sent = (unit.reads - before) / polls
        finally:
            client.close()
    return {
        "case": case.name,
        "tags": len(tags),
        "requests": len(plan),
        "sent": sent,
        "registers": sum(r.count for r in plan),
        "median_ms": statistics.median(times) * 1000,
        "p90_ms": sorted(times)[int(0.9 * (len(times) - 1))] * 1000,
    }



def table(rows: list[dict]) -> str:
    lines = ["| layout and grouping | tags | requests per poll | registers read | poll median | poll p90 |",
             "|---|---:|---:|---:|---:|---:|"]
    for r in rows:
        assert r["sent"] == r["requests"], r  # what the server counted is what was planned
        lines.append(f"| {r['case']} | {r['tags']} | {r['requests']} | {r['registers']} | "
                     f"{r['median_ms']:.1f} ms | {r['p90_ms']:.1f} ms |")
    return "\n".join(lines)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--machines", type=int, default=100)
    parser.add_argument("--polls", type=int, default=30)
    parser.add_argument("--append", action="store_true", help="append the results to bench/RESULTS.md")
    args = parser.parse_args()
    rows = [await measure(case, args.machines, args.polls) for case in CASES]
    text = table(rows)
    print(text)
    if args.append:
        command = "python bench/modbus_grouping.py " + " ".join(sys.argv[1:])
        section = (
            f"\n## Modbus read grouping, {args.machines} machines ({date.today().isoformat()})\n\n"
            f"Requests one poll sends for {args.machines} machines × 3 tags (good, scrap: uint32; order: "
            f"string of 10 registers) at the simulator's layout, and the time of one poll (all reads in "
            f"sequence over one connection, decoding included) against the simulated Modbus PLC in the same "
            f"process, over {args.polls} polls.\n\n"
            f"- command: `{command.strip()}`\n"
            f"- machine: {os.cpu_count()} CPUs (`nproc`: {len(os.sched_getaffinity(0))}), {cpu_model()}, "
            f"Python {platform.python_version()}\n\n{text}\n\n"
            f"Over loopback, with the server on the same event loop: the times include the server's "
            f"work and no network. On a plant network every request adds a round trip, so the request "
            f"count is what scales.\n"
        )
        existing = RESULTS.read_text() if RESULTS.exists() else HEADER
        RESULTS.write_text(existing.rstrip("\n") + "\n" + section)
        print(f"appended to {RESULTS.relative_to(ROOT)}")


if __name__ == "__main__":
    asyncio.run(main())
