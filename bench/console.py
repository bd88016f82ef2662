"""What the web console's plant board costs: how soon a change shows in the browser, and the
browser's CPU while every machine counts.

One process runs a simulated OPC UA PLC with N machines, the gateway on it (SQLite ledger in a
temporary folder), its HTTP server with the console, and Chromium (Playwright) on the board.

* **Update latency**: all machines paused; one is resumed (the change) and the time until its tile
  shows a new count in the browser is taken, ``--changes`` times, machine after machine. It
  includes the PLC's publishing interval, the gateway's commit and the board's tick (1 s).
* **Browser CPU**: every machine produces for ``--seconds``; the CPU time of Chromium's processes
  over that window, divided by the wall time, is the cores the board uses.

    python bench/console.py --machines 200          # the target: --machines 1000, within 2 s, < 1 core

Needs the ``test`` extra (playwright) and psutil (``bench`` extra), and Chromium on PATH.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import psutil  # noqa: E402

from gateway.demo import caught_up, wait_until  # noqa: E402
from gateway.http.listen import Listen, bind  # noqa: E402
from gateway.http.server import HttpServer  # noqa: E402
from gateway.mapping.model import Mapping  # noqa: E402
from simulators.machine import SimMachineConfig  # noqa: E402
from simulators.opcua_plc import OpcUaPlc, node_id  # noqa: E402
from tests.http.served import OPERATOR, TOKENS  # noqa: E402
from tests.integration.lines import Line  # noqa: E402
from tests.support import free_port  # noqa: E402


def plant(n: int, rate_hz: float) -> list[SimMachineConfig]:
    return [SimMachineConfig(f"M-{i:04d}", rate_hz=rate_hz, order="1000124", seed=i, paused=True) for i in range(n)]


def mapping(port: int, names: list[str]) -> Mapping:
    return Mapping.model_validate({
        "sources": {"plant": {"opcua": {"endpoint": f"opc.tcp://127.0.0.1:{port}", "publishing_interval_ms": 100}}},
        "machines": {name: {"source": "plant", "work_center": "WC-ASSY", "order": "1000124",
                            "counters": {"good": {"node": node_id(name, "GoodCount")},
                                         "scrap": {"node": node_id(name, "ScrapCount")}},
                            "confirm": {"every_units": 1000, "every_seconds": 30}} for name in names}})


def browser_cpu_s() -> float:
    """CPU seconds of this run's Chromium (our child processes only, not another browser on the host)."""
    total = 0.0
    for p in psutil.Process().children(recursive=True):
        if "chrom" in p.name():
            try:
                t = p.cpu_times()
                total += t.user + t.system
            except psutil.Error:
                pass
    return total


async def main(args) -> None:
    from playwright.async_api import async_playwright

    folder = Path(tempfile.mkdtemp(prefix="console-bench-"))
    port = free_port()
    machines = plant(args.machines, args.rate)
    names = [m.name for m in machines]
    ln = Line(f"sqlite:///{folder / 'ledger.sqlite'}", OpcUaPlc(machines, port=port, tick_s=0.05), mapping(port, names))
    server = HttpServer(bind(Listen("127.0.0.1", free_port())), ln.gateway, tokens=TOKENS)
    await server.start()
    try:
        await ln.plc.start()
        ln.task = asyncio.create_task(ln.gateway.run(ln.stop))
        await wait_until(lambda: caught_up(ln.gateway, ln.plc), 120, "the gateway to read every counter")
        async with async_playwright() as p:
            browser = await p.chromium.launch(executable_path=shutil.which("chromium"), args=["--no-sandbox"])
            page = await browser.new_page(viewport={"width": 1366, "height": 768}, base_url=server.url)
            await page.goto("/console/login")
            await page.fill("input[name=token]", OPERATOR)
            await page.click("button[type=submit]")
            await page.wait_for_selector(f'[data-machine="{names[-1]}"]')
            await page.wait_for_function("document.getElementById('live').textContent === 'live'")

            latencies = []
            for name in names[:args.changes]:
                counted = page.locator(f'[data-machine="{name}"] [data-f=counted]')
                before = await counted.inner_text()
                t0 = time.monotonic()
                await ln.plc.command(name, "resume")
                await page.wait_for_function(
                    f"document.querySelector('[data-machine=\"{name}\"] [data-f=counted]').textContent !== '{before}'",
                    timeout=30_000)
                latencies.append(time.monotonic() - t0)
                await ln.plc.command(name, "pause")

            await ln.plc.command("*", "resume")
            await asyncio.sleep(2)
            cpu0, wall0 = browser_cpu_s(), time.monotonic()
            updates0 = int(await page.locator("#board").get_attribute("data-updates") or 0)
            await asyncio.sleep(args.seconds)
            cpu1, wall1 = browser_cpu_s(), time.monotonic()
            updates1 = int(await page.locator("#board").get_attribute("data-updates") or 0)
            await ln.plc.command("*", "pause")
            await browser.close()
        cores = (cpu1 - cpu0) / (wall1 - wall0)
        print(f"machines={args.machines} rate={args.rate}/s each; board tick 1 s")
        print(f"change → tile updated: median {statistics.median(latencies):.2f} s, max {max(latencies):.2f} s "
              f"over {len(latencies)} changes (target: within 2 s)")
        print(f"browser CPU while all count: {cores:.2f} cores over {wall1 - wall0:.0f} s, "
              f"{updates1 - updates0} board updates received (target: below 1 core)")
    finally:
        ln.stop.set()
        if getattr(ln, "task", None) is not None:
            await ln.task
        await ln.plc.stop()
        await server.stop()
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--machines", type=int, default=200)
    ap.add_argument("--rate", type=float, default=2.0, help="cycles per second of each machine")
    ap.add_argument("--changes", type=int, default=10, help="single-machine changes timed")
    ap.add_argument("--seconds", type=float, default=10.0, help="window of the CPU measurement")
    asyncio.run(main(ap.parse_args()))
