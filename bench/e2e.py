"""End-to-end benchmark: simulated machines → the gateway in its own process → the ledger,
with the raw libraries' ceilings measured in the same run.

Usage:
  python bench/e2e.py --opcua 100 --rate 10 [--modbus 0] [--seconds 30] [--db URL] [--json FILE]
  python bench/e2e.py --scaling [--seconds 20] [--append]     # the scaling table and bench/scaling.png
  python bench/e2e.py --opcua 1000 --rate 1 --db URL --instances 1,2   # one gateway against two, same run
  python bench/e2e.py --opcua 1000 --rate 1 --confirm-every 1 --outputs   # 1 000 confirmations/s, outputs or not
  python bench/e2e.py … --out-of-step   # the machines end their cycles spread over the second (default: in step)

One run: the simulators start (OPC UA machines spread over ``--sim-procs`` processes, Modbus
machines in one process per ``--modbus-per-proc``), then (a) a raw asyncua client subscribes
to the same counter nodes and counts notifications, and (c) a raw pymodbus client reads the
same registers as fast as it can; then the machines pause, the master data is loaded, the
gateway starts (``gateway run --stats``), takes its baseline, the machines run for
``--seconds``, pause again, and the gateway catches up and stops. Then (b) the rows the
gateway wrote are inserted again with raw SQLAlchemy Core, in as many transactions. The
gateway's figures come from its ``--stats`` lines, the ledger and ``psutil``; every process's
CPU is measured, the simulators' too (on 2 cores they compete with the gateway).

Confirmed + pending units must equal the simulators' ground truth for every machine: a run
that loses or doubles a unit exits 1 with the difference.

``--instances N`` starts N gateway processes on the same ledger (``gateway run --instance
gw-K``), each with a mapping of a contiguous share of the machines (whole simulators where
the split allows) and its own ``--stats`` file; changes/s and latency are over all of them
merged, CPU and RSS summed, and exactly once is checked over every machine as above. Each
gateway logs its lease renewals with their duration (debug level); after the run the bench
times ``leases.renew`` + ``heartbeat`` (one transaction, as the keeper does) and the writer's
fence (inside a transaction) on the run's lease rows, ``--lease-reps`` times each. A list
(``--instances 1,2``) runs each count back to back in one invocation and prints one table.

``--http-load`` runs each configuration twice in one invocation, the gateway serving HTTP both
times: first with nobody asking, then with ``/metrics`` scraped every second and ``--api-rps``
API requests per second (``HttpLoad.MIX``: single machines, the confirmations and anomaly
lists, every tenth the whole machine list), and prints the change → commit percentiles of
both side by side with the API's own response times. Without it the gateway serves no HTTP.

``--outputs`` runs each configuration twice in one invocation: first without outputs, then
with two (``outputs:`` in the mapping): a webhook to the test stand-in receiver
(tests/outputs/standin.py, in this process, taking the batch body — ``WEBHOOK_BATCH``
deliveries per request at most — and deduping each delivery by its key) and MQTT to the
Mosquitto broker at 127.0.0.1:1883 (a topic root of this run; a subscriber here counts the
confirmation messages by key). ``--confirm-every N`` confirms every N units (default 50 per
unit of a cycle), which sets the confirmation rate: machines × rate / N per second. It prints
per target the deliveries/s while the machines ran, the delivery lag (posted → delivered)
and the time to empty the outbox after they stopped, and the change → commit percentiles of
both runs side by side. The outbox is emptied before the gateway is stopped; what its
shutdown confirms stays for a next start and is reported, not delivered. A key delivered twice
to the stand-in, or a delivered row it never got, fails the run.

It needs the ``bench`` extra (psutil, matplotlib). It only ever contacts 127.0.0.1 (and
the PostgreSQL URL given, in a schema of its own that it drops), every run is bounded by
``--seconds`` plus start-up and catch-up timeouts, and it kills only the processes it started.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import psutil

from bench.machine import cpu_model  # noqa: E402
from tests.integration.lines import spawn, wait_for  # noqa: E402
from tests.support import free_port  # noqa: E402

RESULTS = ROOT / "bench" / "RESULTS.md"
NS = "urn:backflush-gateway:simulator"
ORDERS = 10
STRIDE = 20  # Modbus machines packed: one read of 125 registers covers six machines


# --- master data and mapping --------------------------------------------------------


def masterdata_yaml() -> str:
    orders = "\n".join(f'  "{9000000 + i}": {{material: PART, quantity: 1000000000, receipt_location: FG-01}}'
                       for i in range(ORDERS))
    return f"""materials:
  PART:  {{description: "Bench part", uom: PC, decimals: 0}}
  RESIN: {{description: "Bench resin", uom: KG, decimals: 3, negative_stock: allowed}}
work_centers:
  WC-BENCH: {{description: "Bench cell", labor_rate: 40.00, machine_rate: 60.00, overhead_pct_of_labor: 100, supply_location: LS-BENCH}}
boms:
  PART:
    base_quantity: 1
    items:
      - {{item: "0010", material: RESIN, quantity: 0.1, operation: "0010"}}
routings:
  PART:
    base_quantity: 1
    operations:
      - {{operation: "0010", work_center: WC-BENCH, setup_hours: 0.1, machine_hours: 0.001, labor_hours: 0.001, final: true}}
orders:
{orders}
production_versions:  # bench/writer_tx.py --collectors
  PART:
    "0001": {{receipt_location: FG-01}}
stock:
  - {{material: RESIN, location: LS-BENCH, quantity: 1000000}}
"""


def order_of(i: int) -> str:
    return str(9000000 + i % ORDERS)


@dataclass
class Sim:
    kind: str  # opcua | modbus
    port: int
    machines: list[str]
    control_port: int | None = None
    proc: subprocess.Popen | None = None

    @property
    def endpoint(self) -> str:
        return f"opc.tcp://127.0.0.1:{self.port}"

    def command(self, command: str) -> dict:
        from simulators.control import sim_command_sync
        from simulators.json_control import json_command_sync
        if self.kind == "opcua":
            return sim_command_sync(self.endpoint, "*", command, timeout_s=60)
        return json_command_sync("127.0.0.1", self.control_port, "*", command, timeout_s=60)


@dataclass
class Plan:
    opcua: int
    modbus: int
    rate: float
    upc: int
    seconds: float
    publishing_ms: int
    poll_ms: int
    sim_procs: int
    modbus_per_proc: int
    db: str
    tick: float
    instances: int = 1  # gateway processes on the same ledger, each owning a share of the machines
    http: bool = False  # the gateway serves HTTP (--http-load)
    api_rps: float = 0.0  # …and this many API requests/s plus a /metrics scrape every second reach it
    outputs: bool = False  # a webhook (stand-in) and an MQTT output (--outputs)
    confirm_every: int = 0  # units per confirmation (0: 50 per unit of a cycle)
    out_of_step: bool = False  # each machine ends its cycles at its own moment of the second (--out-of-step)
    gather: float | None = None  # the gateway's `run --gather` (None: its default)
    webhook_url: str = ""
    mqtt_site: str = ""
    sims: list[Sim] = field(default_factory=list)


def build_sims(plan: Plan) -> list[Sim]:
    from tests.support import free_port
    sims = []
    names = [f"U{i:05d}" for i in range(plan.opcua)]
    procs = max(1, min(plan.sim_procs, plan.opcua)) if plan.opcua else 0
    for k in range(procs):
        sims.append(Sim("opcua", free_port(), names[k::procs]))
    names = [f"B{i:05d}" for i in range(plan.modbus)]
    for k in range(0, plan.modbus, plan.modbus_per_proc):
        sims.append(Sim("modbus", free_port(), names[k:k + plan.modbus_per_proc], control_port=free_port()))
    return sims


def sim_args(plan: Plan, sim: Sim) -> list[str]:
    specs = []
    for name in sim.machines:
        i = int(name[1:])
        # Out of step: machine i a golden-ratio share further into its first cycle than machine i − 1,
        # so the machines' cycle ends spread evenly over the second instead of all falling in one tick.
        phase = f",phase={i * 0.6180339887 % 1:.4f}" if plan.out_of_step else ""
        specs += ["--machine", f"{name},rate={plan.rate:g},upc={plan.upc},scrap=0.05,order={order_of(i)},seed={i}"
                  + phase]
    module = "simulators.opcua_plc" if sim.kind == "opcua" else "simulators.modbus_plc"
    args = ["-m", module, "--port", str(sim.port), "--tick", str(plan.tick), *specs]
    if sim.kind == "modbus":
        args += ["--control-port", str(sim.control_port), "--stride", str(STRIDE)]
    return args


def shares(plan: Plan) -> list[list[str]]:
    """The machines of each gateway instance: contiguous slices of the machines in simulator
    order, so an instance keeps whole simulators (PLC servers) where the split allows."""
    every = [m for sim in plan.sims for m in sim.machines]
    n = max(1, plan.instances)
    return [every[k * len(every) // n:(k + 1) * len(every) // n] for k in range(n)]


def mapping_yaml(plan: Plan, only: list[str] | None = None) -> str:
    """The mapping of all machines, or of the machines ``only`` (one instance's share)."""
    from simulators.modbus_plc import machine_layout
    keep = None if only is None else set(only)
    lines = ["sources:"]
    for k, sim in enumerate(plan.sims):
        if keep is not None and not keep.intersection(sim.machines):
            continue
        if sim.kind == "opcua":
            lines.append(f'  sim{k}: {{opcua: {{endpoint: "{sim.endpoint}", publishing_interval_ms: {plan.publishing_ms}, '
                         f"watchdog_s: 30}}}}")
        else:
            lines.append(f"  sim{k}: {{modbus: {{host: 127.0.0.1, port: {sim.port}, poll_interval_ms: {plan.poll_ms}, "
                         f"timeout_s: 10}}}}")
    lines.append("machines:")
    for k, sim in enumerate(plan.sims):
        for position, name in enumerate(sim.machines, start=1):
            if keep is not None and name not in keep:
                continue
            head = (f"  {name}: {{source: sim{k}, work_center: WC-BENCH, units_per_cycle: {plan.upc}, "
                    f"confirm: {{every_units: {plan.confirm_every or 50 * plan.upc}, every_seconds: 10}}, ")
            if sim.kind == "opcua":
                node = f"nsu={NS};s={name}"
                lines.append(head + f'counters: {{good: {{node: "{node}.GoodCount"}}, scrap: {{node: "{node}.ScrapCount"}}}}, '
                             f'order: {{node: "{node}.OrderNumber"}}}}')
            else:
                lay = machine_layout(name, position, stride=STRIDE)
                lines.append(head + f"counters: {{good: {{register: {lay['GoodCount'].register}, type: uint32}}, "
                             f"scrap: {{register: {lay['ScrapCount'].register}, type: uint32}}}}, "
                             f"order: {{register: {lay['OrderNumber'].register}, type: string, length: 10}}}}")
    if plan.outputs:
        lines += ["outputs:",
                  f"  hook: {{webhook: {{url: '{plan.webhook_url}', timeout_s: 10, batch: {WEBHOOK_BATCH}}}, retry_min_s: 0.2, "
                  f"retry_max_s: 5}}",
                  f"  uns: {{mqtt: {{url: '{BROKER}', site: {plan.mqtt_site}, area: bench, "
                  f"client_id: {plan.mqtt_site}}}, retry_min_s: 0.2, retry_max_s: 5}}"]
    return "\n".join(lines) + "\n"




def truth(plan: Plan) -> dict:
    out: dict = {}
    for sim in plan.sims:
        out |= sim.command("truth")
    return out


def command_all(plan: Plan, command: str) -> None:
    for sim in plan.sims:
        sim.command(command)


def cpu_seconds(procs: list[psutil.Process]) -> float:
    total = 0.0
    for p in procs:
        try:
            c = p.cpu_times()
            total += c.user + c.system
        except psutil.Error:
            pass
    return total


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def percentile(pairs: list[tuple[float, int]], q: float) -> float:
    """q-th percentile of values given with weights."""
    pairs = sorted(pairs)
    total = sum(w for _, w in pairs)
    if not total:
        return float("nan")
    acc = 0
    for value, weight in pairs:
        acc += weight
        if acc >= q * total:
            return value
    return pairs[-1][0]


def ledger_matches(engine, plan: Plan, now: dict) -> bool:
    from sqlalchemy import select

    from gateway.ledger import schema as t
    with engine.connect() as conn:
        states = {(r.machine, r.counter): r.raw for r in conn.execute(select(t.counter_states))}
    want = {(m, c): now[m][f"{c}_count"] for sim in plan.sims for m in sim.machines for c in ("good", "scrap")}
    return states == want


def isolated_url(db: str) -> tuple[str, object]:
    """A URL of an empty ledger of our own, and how to drop it."""
    if db.startswith("sqlite") or db == "sqlite":
        folder = Path(tempfile.mkdtemp(prefix="bench-ledger-"))
        return f"sqlite:///{folder / 'ledger.sqlite'}", lambda: shutil.rmtree(folder, ignore_errors=True)
    from sqlalchemy import create_engine, text
    schema = f"bench_{uuid.uuid4().hex[:10]}"
    admin = create_engine(db)
    with admin.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))

    def drop() -> None:
        with admin.begin() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()
    sep = "&" if "?" in db else "?"
    return f"{db}{sep}options=-csearch_path%3D{schema}", drop


# --- ceilings -------------------------------------------------------------------------


async def raw_opcua(endpoints: dict[str, list[str]], seconds: float, publishing_ms: int) -> dict:
    """A bare asyncua client: subscribe to the counters, count notifications."""
    from asyncua import Client, ua
    count = 0
    started = None

    class Handler:
        def datachange_notification(self, node, val, data):
            nonlocal count
            if started is not None:
                count += 1

    clients = []
    for endpoint, machines in endpoints.items():
        client = Client(endpoint, timeout=60)
        client.session_timeout = 120_000
        await client.connect()
        idx = await client.get_namespace_index(NS)
        sub = await client.create_subscription(publishing_ms, Handler())
        nodes = [client.get_node(ua.NodeId(f"{m}.{tag}", idx)) for m in machines for tag in ("GoodCount", "ScrapCount")]
        for i in range(0, len(nodes), 1000):
            await sub.subscribe_data_change(nodes[i:i + 1000], queuesize=10)
        clients.append(client)
    await asyncio.sleep(2.0)  # initial values
    me = psutil.Process()
    cpu0, started = cpu_seconds([me]), time.monotonic()
    await asyncio.sleep(seconds)
    elapsed, got, cpu = time.monotonic() - started, count, cpu_seconds([me]) - cpu0
    for client in clients:
        await client.disconnect()
    return {"notifications": got, "seconds": elapsed, "cpu_s": cpu}


async def raw_modbus(servers: list[tuple[int, list[str]]], seconds: float) -> dict:
    """A bare pymodbus client per server: read the same registers back to back."""
    from pymodbus.client import AsyncModbusTcpClient

    from gateway.sources.modbus.registers import ModbusTag, plan_reads
    from simulators.modbus_plc import machine_layout
    plans = []
    for port, machines in servers:
        tags = []
        for position, name in enumerate(machines, start=1):
            lay = machine_layout(name, position, stride=STRIDE)
            tags += [ModbusTag(name, r, lay[k].register, lay[k].type, length=lay[k].length)
                     for k, r in (("GoodCount", "good"), ("ScrapCount", "scrap"), ("OrderNumber", "order"))]
        client = AsyncModbusTcpClient("127.0.0.1", port=port, timeout=10, retries=0)
        await client.connect()
        plans.append((client, plan_reads(tags)))
    me = psutil.Process()
    requests, polls = 0, 0
    cpu0, began = cpu_seconds([me]), time.monotonic()
    while time.monotonic() - began < seconds:
        for client, reads in plans:
            for read in reads:
                response = await client.read_holding_registers(read.start, count=read.count, device_id=1)
                assert not response.isError()
                requests += 1
        polls += 1
    elapsed, cpu = time.monotonic() - began, cpu_seconds([me]) - cpu0
    for client, _ in plans:
        client.close()
    return {"requests": requests, "polls": polls, "per_poll": sum(len(r) for _, r in plans), "seconds": elapsed,
            "cpu_s": cpu}


def raw_inserts(source_url: str, db: str, window: tuple[float, float], transactions: int, states: int) -> dict:
    """Insert the rows the gateway wrote in the window again, with bare SQLAlchemy Core."""
    from datetime import UTC, datetime

    from sqlalchemy import insert, select

    from gateway.ledger import schema as t
    from gateway.ledger.schema import metadata, open_engine
    lo, hi = (datetime.fromtimestamp(x, UTC) for x in window)
    src = open_engine(source_url, create=False)
    tables = (t.confirmations, t.goods_movements, t.activity_postings)
    with src.connect() as conn:
        rows = {tab: [dict(r._mapping) for r in conn.execute(select(tab).where(tab.c.posted_at.between(lo, hi)))]
                for tab in tables}
    src.dispose()
    for tab in (t.goods_movements, t.activity_postings):
        for r in rows[tab]:
            r.pop("id", None)
    any_state = {"epoch": 0, "raw": 0, "source_time": lo, "updated_at": lo, "counter": "good"}
    rows[t.counter_states] = [dict(any_state, machine=f"m{i}") for i in range(states)]
    url, drop = isolated_url(db)
    try:
        dst = open_engine(url)  # the same pragmas (WAL, synchronous=FULL) as the ledger
        metadata.create_all(dst)
        n = max(1, transactions)
        chunks = [{tab: rs[i * len(rs) // n:(i + 1) * len(rs) // n] for tab, rs in rows.items()} for i in range(n)]
        began = time.perf_counter()
        for chunk in chunks:
            with dst.begin() as conn:
                for tab, rs in chunk.items():
                    if rs:
                        conn.execute(insert(tab), rs)
        took = time.perf_counter() - began
        dst.dispose()
    finally:
        drop()
    return {"rows": sum(len(r) for r in rows.values()), "transactions": n, "seconds": took}


# --- HTTP load (--http-load) -----------------------------------------------------------


class HttpLoad:
    """Open-loop HTTP clients of one gateway: ``/metrics`` every second and ``rps`` API requests/s
    on a fixed schedule (a slow answer does not lower the rate), each request timed."""

    # Repeated in turn: mostly one machine (what a line board polls), lists from the ledger,
    # and every tenth request the whole machine list.
    MIX = ("machine", "machine", "machine", "confirmations", "machine", "machine", "anomalies", "machine",
           "machine", "machines")

    def __init__(self, url: str, token: str, machines: list[str], rps: float) -> None:
        import threading
        from concurrent.futures import ThreadPoolExecutor

        import httpx
        self.url, self.rps, self.machines = url, rps, machines
        self.client = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=30,
                                   limits=httpx.Limits(max_connections=16))
        self.pool = ThreadPoolExecutor(16, thread_name_prefix="http-load")
        self.stop = threading.Event()
        self.api_ms: list[float] = []
        self.scrape_ms: list[float] = []
        self.failed: dict[str, int] = {}
        self.thread = threading.Thread(target=self._schedule, name="http-load", daemon=True)

    def __enter__(self) -> HttpLoad:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        self.thread.join()
        self.pool.shutdown(wait=True)
        self.client.close()

    def _path(self, i: int) -> str:
        kind = self.MIX[i % len(self.MIX)]
        if kind == "machine":
            return f"/api/v1/machines/{self.machines[i % len(self.machines)]}"
        return {"confirmations": "/api/v1/confirmations?last=20", "anomalies": "/api/v1/anomalies",
                "machines": "/api/v1/machines"}[kind]

    def _get(self, path: str, into: list[float]) -> None:
        began = time.perf_counter()
        try:
            status = self.client.get(path).status_code
        except Exception as exc:  # noqa: BLE001 — counted, the load goes on
            status = type(exc).__name__
        into.append(1000 * (time.perf_counter() - began))
        if status != 200:
            self.failed[str(status)] = self.failed.get(str(status), 0) + 1

    def _schedule(self) -> None:
        began, i, scrapes = time.monotonic(), 0, 0
        while not self.stop.is_set():
            now = time.monotonic() - began
            if now >= scrapes:
                self.pool.submit(self._get, "/metrics", self.scrape_ms)
                scrapes += 1
            if self.rps > 0 and now >= i / self.rps:
                self.pool.submit(self._get, self._path(i), self.api_ms)
                i += 1
                continue
            self.stop.wait(min(scrapes, (i / self.rps) if self.rps > 0 else scrapes) - now)

    def figures(self, seconds: float) -> dict:
        def q(xs: list[float], p: float) -> float:
            xs = sorted(xs)
            return xs[min(len(xs) - 1, int(p * len(xs)))] if xs else float("nan")
        return {"api_requests": len(self.api_ms), "api_per_s": len(self.api_ms) / seconds,
                "api_p50_ms": q(self.api_ms, 0.5), "api_p99_ms": q(self.api_ms, 0.99), "scrapes": len(self.scrape_ms),
                "scrape_p99_ms": q(self.scrape_ms, 0.99), "failed": self.failed}


# --- outputs (--outputs) -----------------------------------------------------------------

BROKER = "mqtt://127.0.0.1:1883"
WEBHOOK_BATCH = 500  # deliveries per webhook request (the stand-in takes the batch body)


class MqttCounter:
    """Subscribes to the run's confirmation topics on the broker and counts the messages per key, as a
    consumer that dedupes by key would: ``mosquitto_sub`` (QoS 1) in a process of its own writing one
    payload a line to a file. (A Python subscriber in this process, beside the webhook stand-in, fell
    behind the relay's bursts of a thousand messages, and the broker dropped what overflowed its
    queue for the subscriber — ``max_queued_messages``, 1 000 by default.)"""

    def __init__(self, site: str, folder: Path) -> None:
        self.site = site
        self.file = folder / f"{site}-mqtt.txt"
        self.proc: subprocess.Popen | None = None

    def __enter__(self) -> MqttCounter:
        sub = shutil.which("mosquitto_sub")
        if sub is None:
            raise SystemExit("--outputs needs mosquitto_sub (the mosquitto clients) to count the MQTT messages")
        topic = f"{self.site}/bench/+/+/confirmation"
        with self.file.open("wb") as out:
            self.proc = subprocess.Popen([sub, "-h", "127.0.0.1", "-p", "1883", "-q", "1", "-i", f"{self.site}-counter",
                                          "-t", topic], stdout=out, stderr=subprocess.DEVNULL)
        deadline = time.time() + 10
        while time.time() < deadline:  # subscribed once a probe published to the topic comes through
            subprocess.run([shutil.which("mosquitto_pub") or "mosquitto_pub", "-h", "127.0.0.1", "-p", "1883", "-q", "1",
                            "-t", f"{self.site}/bench/probe/probe/confirmation", "-m", '{"key":"probe"}'],
                           capture_output=True, timeout=10, check=False)
            time.sleep(0.2)
            if self.file.read_bytes():
                return self
        self.__exit__()
        raise SystemExit(f"--outputs: cannot subscribe to the broker at {BROKER}")

    @property
    def keys(self) -> dict[str, int]:
        keys: dict[str, int] = {}
        for line in self.file.read_text().splitlines():
            key = json.loads(line)["key"]
            if key != "probe":
                keys[key] = keys.get(key, 0) + 1
        return keys

    def __exit__(self, *exc) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)


def relays(gateways: list[psutil.Process]) -> list[psutil.Process]:
    """The outbox relay processes the gateways started (gateway/outputs/relay.py)."""
    found = []
    for g in gateways:
        for child in g.children():
            try:
                if "gateway.outputs.relay" in child.cmdline():
                    found.append(child)
            except psutil.Error:
                pass
    return found


def outbox_open(engine) -> int:
    from sqlalchemy import func, select

    from gateway.ledger import schema as t
    with engine.connect() as conn:
        return conn.execute(select(func.count()).select_from(t.outbox).where(
            t.outbox.c.status.in_(("pending", "unknown")))).scalar()


def output_figures(engine, window: tuple[float, float], standin, counter: MqttCounter) -> dict:
    """Per target: deliveries/s in the window, lag posted → delivered, what is left; exactly once."""
    from sqlalchemy import select

    from gateway.ledger import schema as t
    with engine.connect() as conn:
        rows = conn.execute(select(t.outbox.c.key, t.outbox.c.target, t.outbox.c.status, t.outbox.c.created_at,
                                   t.outbox.c.delivered_at)).all()
    out: dict = {}
    for target, received in (("hook", dict(standin.effects)), ("uns", dict(counter.keys))):
        mine = [r for r in rows if r.target == target]
        done = [r for r in mine if r.status == "delivered"]
        inside = [r for r in done if window[0] <= r.delivered_at.timestamp() <= window[1]]
        lags = sorted(1000 * (r.delivered_at - r.created_at).total_seconds() for r in done)
        delivered_keys = {r.key for r in done}
        out[target] = {
            "rows": len(mine), "delivered": len(done), "left": len(mine) - len(done),
            "parked": sum(r.status == "parked" for r in mine),
            "per_s": len(inside) / (window[1] - window[0]),
            "lag_p50_ms": lags[len(lags) // 2] if lags else float("nan"),
            "lag_p99_ms": lags[min(len(lags) - 1, int(0.99 * len(lags)))] if lags else float("nan"),
            "received_keys": len(received), "received_twice": sum(n > 1 for n in received.values()),
            "delivered_not_received": len(delivered_keys - set(received)),
            "received_not_in_outbox": len(set(received) - {r.key for r in mine}),
        }
    return out


# --- one run --------------------------------------------------------------------------


def run(plan: Plan, ceilings: bool = True, log_dir: Path | None = None, profile: Path | None = None,
        lease_reps: int = 50, profile_gil: bool = False) -> dict:
    from gateway.ledger.reports import summary
    from gateway.ledger.schema import open_engine
    work = Path(tempfile.mkdtemp(prefix="bench-e2e-"))
    if log_dir is not None:
        log_dir.mkdir(parents=True, exist_ok=True)
    log = (log_dir or work) / "processes.log"
    log_from = log.stat().st_size if log.exists() else 0  # --keep-logs appends: this run's lines start here
    plan.sims = build_sims(plan)
    gateways: list[subprocess.Popen] = []
    receivers: list = []  # --outputs: the webhook stand-in and the MQTT counter
    url, drop = isolated_url(plan.db)
    out: dict = {"opcua": plan.opcua, "modbus": plan.modbus, "rate": plan.rate, "db": plan.db.split(":")[0],
                 "seconds": plan.seconds, "publishing_ms": plan.publishing_ms, "poll_ms": plan.poll_ms,
                 "sim_procs": sum(1 for s in plan.sims), "instances": plan.instances,
                 "load_before": round(os.getloadavg()[0], 2)}
    try:
        for sim in plan.sims:
            sim.proc = spawn(sim_args(plan, sim), log)
        wait_for(lambda: truth(plan), 120 + plan.opcua / 20, "the simulators")
        sim_ps = [psutil.Process(s.proc.pid) for s in plan.sims]
        opcua_sims = [s for s in plan.sims if s.kind == "opcua"]
        modbus_sims = [s for s in plan.sims if s.kind == "modbus"]
        raw_s = min(10.0, plan.seconds)
        if ceilings and opcua_sims:
            t0, c0 = truth(plan), cpu_seconds(sim_ps)
            w0 = time.monotonic()
            res = subprocess.run([sys.executable, __file__, "--raw-opcua", json.dumps(
                {s.endpoint: s.machines for s in opcua_sims}), "--seconds", str(raw_s),
                "--publishing-ms", str(plan.publishing_ms)], capture_output=True, text=True, timeout=600 + raw_s, check=False)
            if res.returncode:
                raise SystemExit(res.stderr)
            raw = json.loads(res.stdout.strip().splitlines()[-1])
            t1, w1 = truth(plan), time.monotonic()
            out["raw_opcua_per_s"] = raw["notifications"] / raw["seconds"]
            out["raw_opcua_cpu_us"] = 1e6 * raw["cpu_s"] / max(1, raw["notifications"])
            out["raw_phase_sim_changes_per_s"] = changes(t0, t1, [m for s in opcua_sims for m in s.machines]) / (w1 - w0)
            out["raw_phase_sim_cpu_pct"] = 100 * (cpu_seconds(sim_ps) - c0) / (w1 - w0)
        if ceilings and modbus_sims:
            res = subprocess.run([sys.executable, __file__, "--raw-modbus", json.dumps(
                [(s.port, s.machines) for s in modbus_sims]), "--seconds", str(min(5.0, raw_s))],
                capture_output=True, text=True, timeout=600, check=False)
            if res.returncode:
                raise SystemExit(res.stderr)
            raw = json.loads(res.stdout.strip().splitlines()[-1])
            out["raw_modbus_requests_per_s"] = raw["requests"] / raw["seconds"]
            out["raw_modbus_cpu_us_per_request"] = 1e6 * raw["cpu_s"] / max(1, raw["requests"])
            out["modbus_requests_per_poll"] = raw["per_poll"]

        command_all(plan, "pause")
        masterdata = work / "masterdata.yaml"
        masterdata.write_text(masterdata_yaml())
        load = subprocess.run([sys.executable, "-m", "gateway.cli", "masterdata", "load", str(masterdata), "--db", url],
                              cwd=ROOT, capture_output=True, text=True, timeout=120, check=False)
        if load.returncode:
            raise SystemExit(load.stderr)
        engine = open_engine(url, create=False)
        if plan.outputs:  # the receivers, before the gateway: they must see every delivery
            from tests.outputs.standin import Standin
            standin = Standin(free_port())
            plan.webhook_url, plan.mqtt_site = standin.url, f"bench{uuid.uuid4().hex[:8]}"
            receivers.append(standin)
            counter = MqttCounter(plan.mqtt_site, work).__enter__()
            receivers.append(counter)
        # One gateway process per instance, each with its own share of the machines, its own
        # --stats file and its own lease keeper, all on the same ledger. Debug level: the
        # keeper logs every lease renewal with its duration.
        parts = shares(plan)
        stats_files = [work / f"stats-{k + 1}.jsonl" for k in range(len(parts))]
        http_ports = [free_port() for _ in parts]
        token = "bench-" + uuid.uuid4().hex
        (work / "tokens.yaml").write_text(f"- {{name: bench, role: viewer, sha256: {hashlib.sha256(token.encode()).hexdigest()}}}\n")
        for k, part in enumerate(parts):
            mapping = work / f"mapping-{k + 1}.yaml"
            mapping.write_text(mapping_yaml(plan, part if len(parts) > 1 else None))
            http = ["--http", f"127.0.0.1:{http_ports[k]}", "--tokens", str(work / "tokens.yaml")] if plan.http \
                else ["--http", "off"]
            gateways.append(spawn(["-m", "gateway.cli", "run", "--mapping", str(mapping), "--db", url, "--log-json",
                                   "--log-level", "debug", "--instance", f"gw-{k + 1}",
                                   "--stats", str(stats_files[k]), *http,
                                   *([] if plan.gather is None else ["--gather", str(plan.gather)])], log))
        gws = [psutil.Process(g.pid) for g in gateways]
        gateway = gateways[0]
        wait_for(lambda: ledger_matches(engine, plan, truth(plan)), 120 + plan.opcua / 20, "the gateway's baseline")
        start = truth(plan)
        spy = None
        if profile is not None:  # py-spy samples the gateway (all threads) while the machines run
            spy = subprocess.Popen([shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy"), "record", "-p", str(gateway.pid), "-d", str(int(plan.seconds)),
                                    "-f", "raw", "-o", str(profile), "--threads", "-r", "100",
                                    *(["--gil"] if profile_gil else [])],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        load = None
        if plan.http and plan.api_rps > 0:  # the first instance's API, with the machines it owns
            load = HttpLoad(f"http://127.0.0.1:{http_ports[0]}", token, parts[0], plan.api_rps).__enter__()
        command_all(plan, "resume")
        began = time.time()
        warm = began + min(3.0, plan.seconds / 5)
        samples = []
        cpu_at = {}
        while time.time() < began + plan.seconds:
            time.sleep(0.5)
            now = time.time()
            samples.append((now - began, sum(g.memory_info().rss for g in gws) / 2**20))
            if "gw" not in cpu_at and now >= warm:
                cpu_at["gw"], cpu_at["sim"], cpu_at["t"] = cpu_seconds(gws), cpu_seconds(sim_ps), now
                cpu_at["each"] = [cpu_seconds([g]) for g in gws]
                if plan.outputs:  # the gateways' outbox relays, and the receivers (this process, mosquitto_sub)
                    relay_ps = relays(gws)
                    receiver_ps = [psutil.Process(), psutil.Process(receivers[1].proc.pid)]
                    cpu_at["relay"], cpu_at["bench"] = cpu_seconds(relay_ps), cpu_seconds(receiver_ps)
        end_t = time.time()
        if load is not None:
            load.__exit__(None, None, None)
            out["http_load"] = load.figures(end_t - began)
        out["http"], out["api_rps"] = plan.http, plan.api_rps
        if spy is not None:
            spy.wait(60)
        gw_cpu, sim_cpu = cpu_seconds(gws) - cpu_at["gw"], cpu_seconds(sim_ps) - cpu_at["sim"]
        if plan.outputs:
            out["relay_cpu_pct"] = 100 * (cpu_seconds(relay_ps) - cpu_at["relay"]) / (end_t - cpu_at["t"])
            out["relays"] = len(relay_ps)
            out["receivers_cpu_pct"] = 100 * (cpu_seconds(receiver_ps) - cpu_at["bench"]) / (end_t - cpu_at["t"])
        gw_cpu_each = [cpu_seconds([g]) for g in gws]
        window = (cpu_at["t"], end_t)
        command_all(plan, "pause")
        paused = truth(plan)
        wait_for(lambda: ledger_matches(engine, plan, paused), 300, "the gateway to catch up")
        out["catch_up_s"] = time.time() - end_t
        out["outputs"] = plan.outputs
        out["out_of_step"] = plan.out_of_step
        if plan.outputs:  # the outbox emptied before the stop (its shutdown's confirmations stay)
            wait_for(lambda: outbox_open(engine) == 0, 600, "the outputs to empty the outbox")
            out["outputs_drain_s"] = time.time() - end_t
            time.sleep(1.0)  # the last MQTT messages on their way to the counter
        peaks = [peak_rss_mb(g.pid) for g in gateways]
        out["peak_rss_mb"], out["peak_rss_total_mb"] = max(peaks), sum(peaks)
        for g in gateways:
            g.send_signal(signal.SIGTERM)
        for g in gateways:
            if g.wait(120) != 0:
                raise SystemExit("a gateway did not stop cleanly")
        end = truth(plan)
        if plan.outputs:
            out["output_figures"] = output_figures(engine, (began, end_t), receivers[0], receivers[1])

        # exactly once: every unit made since the baseline is confirmed or pending, once
        s = summary(engine)
        lost = {}
        for sim in plan.sims:
            for m in sim.machines:
                made = (end[m]["good_units"] + end[m]["scrap_units"]) - (start[m]["good_units"] + start[m]["scrap_units"])
                got = s.machines[m].accounted if m in s.machines else 0
                if got != made:
                    lost[m] = (made, str(got))
        out["units_made"] = sum((end[m]["good_units"] + end[m]["scrap_units"]) - (start[m]["good_units"]
                                + start[m]["scrap_units"]) for sim in plan.sims for m in sim.machines)
        out["units_accounted"] = str(sum(x.accounted for x in s.machines.values()))
        out["duplicates"] = s.duplicate_confirmation_ids
        out["lost"] = lost

        length = window[1] - window[0]
        per_instance = [[json.loads(x) for x in f.read_text().splitlines() if x.strip()] for f in stats_files]
        lines = [x for each in per_instance for x in each]  # the instances' transactions, merged
        inside = [x for x in lines if window[0] <= x["committed_at"] <= window[1]]
        readings = sum(x["readings"] for x in inside)
        out["sim_changes_per_s"] = changes(start, paused, [m for s in plan.sims for m in s.machines]) / (end_t - began)
        out["changes_per_s"] = readings / length
        out["transactions_per_s"] = len(inside) / length
        # mean over the instances: each has its own writer thread
        out["writer_busy_pct"] = 100 * sum(x["committed_at"] - x["began_at"] for x in inside) / length / len(gateways)
        ages = sorted(a for x in inside for a in x.get("ages_ms", ()))  # every change: source time → commit
        for q in (50, 95, 99):
            out[f"latency_p{q}_ms"] = ages[min(len(ages) - 1, int(q / 100 * len(ages)))] if ages else float("nan")
        out["_ages_ms"] = ages  # for --pairs (pooled over runs); not written to --json
        lat = [(x["committed_at"] - x["oldest_source"], x["readings"]) for x in inside if x["readings"]]
        lat_lo = [(x["committed_at"] - x["newest_source"], x["readings"]) for x in inside if x["readings"]]
        out["latency_p99_upper_ms"] = 1000 * percentile(lat, 0.99)
        out["latency_p50_lower_ms"] = 1000 * percentile(lat_lo, 0.5)
        out["latency_max_ms"] = 1000 * max((v for v, _ in lat), default=float("nan"))
        out["gateway_cpu_pct"] = 100 * gw_cpu / length  # all instances together
        # CPU per counter change, everything the gateway does for it (decoding, counting,
        # confirming, the ledger), over the same window as the changes; the raw client's
        # figure (its own process, its own counting window) is the yardstick.
        out["gateway_cpu_us_per_change"] = 1e6 * gw_cpu / readings if readings else float("nan")
        if out.get("raw_opcua_cpu_us") and not plan.modbus:
            out["cpu_per_change_ratio"] = out["gateway_cpu_us_per_change"] / out["raw_opcua_cpu_us"]
        out["each"] = [instance_figures(each, window, share, cpu - cpu_at_each)
                       for each, share, cpu, cpu_at_each in zip(per_instance, parts, gw_cpu_each, cpu_at["each"],
                                                                 strict=True)]
        out.update(lease_events(log, log_from, window))
        if modbus_sims and not opcua_sims and "modbus_requests_per_poll" in out:
            requests = out["modbus_requests_per_poll"] * length * 1000 / plan.poll_ms
            out["gateway_cpu_us_per_modbus_request"] = 1e6 * gw_cpu / requests
        out["sim_cpu_pct"] = 100 * sim_cpu / length
        rss = [r for t_, r in samples if t_ >= length / 5]
        out["rss_first_mb"], out["rss_last_mb"] = (rss[0], rss[-1]) if rss else (float("nan"),) * 2
        # Long runs: RSS at the end of every minute, to show whether memory stays flat.
        out["rss_by_minute_mb"] = [round(max(r for t_, r in samples if m * 60 <= t_ < (m + 1) * 60))
                                   for m in range(int(plan.seconds // 60))]
        out.update(ledger_rates(engine, window))
        # What renewing and fencing cost against this run's ledger (1 000 lease rows, the
        # gateways stopped): timed here, in this process, N times each.
        if lease_reps > 0:
            out["lease_cost"] = lease_cost(engine, sorted({len(p) for p in parts} | {sum(map(len, parts))}),
                                           reps=lease_reps, machines_per_tx=int(percentile(
                                               [(x["counter_states"], 1) for x in inside], 0.5)) if inside else 0)
        out["tx_ms_p50"] = 1000 * percentile([(x["committed_at"] - x["began_at"], 1) for x in inside], 0.5)
        out["load_after"] = round(os.getloadavg()[0], 2)
        engine.dispose()
        if ceilings:
            raw = raw_inserts(url, plan.db, window, len(inside), sum(x["counter_states"] for x in inside))
            out["raw_rows"] = raw["rows"]
            out["raw_rows_per_s"] = raw["rows"] / raw["seconds"]
            busy = sum(x["committed_at"] - x["began_at"] for x in inside)
            out["gateway_rows_per_busy_s"] = raw["rows"] / busy if busy else float("nan")
    finally:
        for receiver in reversed(receivers):  # the MQTT counter, then the stand-in
            if isinstance(receiver, MqttCounter):
                receiver.__exit__(None, None, None)
            else:
                receiver.close()
        for proc in [*gateways, *(s.proc for s in plan.sims)]:
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait(10)
        drop()
        if log_dir is not None:
            # stats-1.jsonl, gw2-stats-1.jsonl … with --instances 2, outputs-stats-1.jsonl with the outputs
            prefix = ("outputs-" if plan.outputs else "") + ("" if plan.instances == 1 else f"gw{plan.instances}-")
            for f in work.glob("stats-*.jsonl"):
                shutil.copy(f, log_dir / f"{prefix}{f.name}")
        shutil.rmtree(work, ignore_errors=True)
    return out


def instance_figures(lines: list[dict], window: tuple[float, float], machines: list[str], cpu_s: float) -> dict:
    """One instance's figures from its own --stats lines, over the same window as the whole."""
    inside = [x for x in lines if window[0] <= x["committed_at"] <= window[1]]
    length = window[1] - window[0]
    ages = sorted(a for x in inside for a in x.get("ages_ms", ()))
    return {"machines": len(machines), "changes_per_s": sum(x["readings"] for x in inside) / length,
            "transactions_per_s": len(inside) / length,
            "latency_p99_ms": ages[min(len(ages) - 1, int(0.99 * len(ages)))] if ages else float("nan"),
            "writer_busy_pct": 100 * sum(x["committed_at"] - x["began_at"] for x in inside) / length,
            "cpu_pct": 100 * cpu_s / length}


LEASE_EVENTS = ("lease_renewal_failed", "lease_takeover_failed", "machine_lost", "machine_taken_over",
                "ledger_changes_fenced_off", "leases_not_released", "standby")


def lease_events(log: Path, offset: int, window: tuple[float, float]) -> dict:
    """The keepers' renewals (debug lines with their duration) and any lease trouble, from the log."""
    from datetime import datetime
    renewals: list[tuple[str, int, float, bool]] = []  # instance, leases, ms, inside the window
    trouble: list[str] = []
    with log.open("rb") as f:
        f.seek(offset)
        for raw in f:
            if not raw.startswith(b"{"):
                continue
            try:
                e = json.loads(raw)
            except ValueError:
                continue
            if e.get("event") == "leases_renewed":
                at = datetime.fromisoformat(e["timestamp"]).timestamp()
                renewals.append((e["instance"], e["leases"], e["ms"], window[0] <= at <= window[1]))
            elif e.get("event") in LEASE_EVENTS:
                trouble.append(raw.decode(errors="replace").strip())
    ms = sorted(r[2] for r in renewals if r[3])
    return {"renewals": len(ms), "renewal_ms_p50": ms[len(ms) // 2] if ms else float("nan"),
            "renewal_ms_max": ms[-1] if ms else float("nan"),
            "renewal_leases": sorted({r[1] for r in renewals}), "lease_trouble": trouble}


def lease_cost(engine, sizes: list[int], reps: int, machines_per_tx: int) -> dict:
    """Time a keeper's renewal (``renew`` + ``heartbeat``, one transaction) and the writer's fence
    (inside a transaction) for ``sizes`` leases, ``reps`` times each, on the run's lease rows."""
    from sqlalchemy import select

    from gateway.ledger import leases
    from gateway.ledger import schema as t
    me = leases.Me.here("bench-probe")
    with engine.connect() as conn:
        names = sorted(r.machine for r in conn.execute(select(t.machine_leases.c.machine))
                       if r.machine != leases.LEDGER)
    ttl = leases.DEFAULT_TTL_S
    with engine.begin() as conn:  # the gateways released their leases when they stopped
        tokens, holders = leases.acquire(conn, me, names, ttl, all_or_nothing=True)
        leases.register(conn, me, standby=False, ttl_s=ttl, machines=len(names))
    if holders or len(tokens) != len(names):
        return {"error": f"{len(holders)} leases still held"}

    def q(xs: list[float], p: float) -> float:
        xs = sorted(xs)
        return xs[min(len(xs) - 1, int(p * len(xs)))]

    fence = leases.Fence(me, ttl)
    out = {}
    for n in sorted({*sizes, *([machines_per_tx] if machines_per_tx else [])}):
        mine = {m: tokens[m] for m in names[:n]}
        renew, fenced = [], []
        for _ in range(reps):
            began = time.perf_counter()
            with engine.begin() as conn:
                lost = leases.renew(conn, me, mine, ttl)
                leases.heartbeat(conn, me, None)
            renew.append(1000 * (time.perf_counter() - began))
            assert not lost
            with engine.begin() as conn:
                began = time.perf_counter()
                lost = fence(conn, mine)
                fenced.append(1000 * (time.perf_counter() - began))
            assert not lost
        out[n] = {"renew_ms_p50": q(renew, 0.5), "renew_ms_p99": q(renew, 0.99),
                  "fence_ms_p50": q(fenced, 0.5), "fence_ms_p99": q(fenced, 0.99)}
    with engine.begin() as conn:
        leases.release(conn, me)
    return {"reps": reps, "machines_per_tx": machines_per_tx, "sizes": out}


def changes(a: dict, b: dict, machines: list[str]) -> int:
    """Counter changes the simulators wrote between two truths (one per cycle at these rates)."""
    return sum((b[m]["good_cycles"] + b[m]["scrap_cycles"]) - (a[m]["good_cycles"] + a[m]["scrap_cycles"])
               for m in machines)


def ledger_rates(engine, window: tuple[float, float]) -> dict:
    from datetime import UTC, datetime

    from sqlalchemy import func, select

    from gateway.ledger import schema as t
    lo, hi = (datetime.fromtimestamp(x, UTC) for x in window)
    with engine.connect() as conn:
        c = t.confirmations.c
        # Quantities are text on SQLite: summed here, exactly, not by the database.
        rows = conn.execute(select(c.yield_qty, c.scrap_qty).where(c.posted_at.between(lo, hi))).all()
        n, units = len(rows), sum(r.yield_qty + r.scrap_qty for r in rows)
        postings = sum(conn.execute(select(func.count()).select_from(tab).where(tab.c.posted_at.between(lo, hi)))
                       .scalar() for tab in (t.goods_movements, t.activity_postings))
    length = window[1] - window[0]
    return {"confirmations_per_s": n / length, "units_confirmed_per_s": float(units or 0) / length,
            "postings_per_s": postings / length}


# --- reporting ----------------------------------------------------------------------



def describe(r: dict) -> str:
    lines = [f"machines: {r['opcua']} OPC UA + {r['modbus']} Modbus at {r['rate']:g} Hz"
             f"{' (out of step)' if r.get('out_of_step') else ''}, ledger {r['db']}, "
             f"{r['seconds']:g} s, {r['sim_procs']} simulator process(es), {r.get('instances', 1)} gateway "
             f"instance(s), load {r.get('load_before', float('nan')):.2f} → {r.get('load_after', float('nan')):.2f}",
             f"  simulators wrote {r['sim_changes_per_s']:.0f} counter changes/s using {r['sim_cpu_pct']:.0f} % CPU",
             f"  gateway: {r['changes_per_s']:.0f} counter changes/s read and committed, "
             f"{r['units_confirmed_per_s']:.0f} units confirmed/s, {r['confirmations_per_s']:.1f} confirmations/s, "
             f"{r['postings_per_s']:.0f} postings/s, {r['transactions_per_s']:.1f} transactions/s "
             f"(writer busy {r['writer_busy_pct']:.0f} %)",
             f"  latency source time → commit: p50 {r['latency_p50_ms']:.0f} ms, p95 {r['latency_p95_ms']:.0f} ms, "
             f"p99 {r['latency_p99_ms']:.0f} ms, max {r['latency_max_ms']:.0f} ms (every change; "
             f"per-transaction bounds: p99 ≤ {r['latency_p99_upper_ms']:.0f} ms, p50 ≥ {r['latency_p50_lower_ms']:.0f} ms)",
             f"  gateway CPU {r['gateway_cpu_pct']:.1f} % of one core, peak RSS {r['peak_rss_mb']:.0f} MB "
             f"({r.get('peak_rss_total_mb', r['peak_rss_mb']):.0f} MB all instances) "
             f"(RSS {r['rss_first_mb']:.0f} → {r['rss_last_mb']:.0f} MB over the run), catch-up {r['catch_up_s']:.1f} s",
             f"  CPU per counter change: gateway {r.get('gateway_cpu_us_per_change', float('nan')):.1f} µs"
             + (f", raw asyncua client {r['raw_opcua_cpu_us']:.1f} µs: gateway/raw = {r['cpu_per_change_ratio']:.2f}"
                if "cpu_per_change_ratio" in r else "")]
    if r.get("rss_by_minute_mb"):
        lines.append(f"  RSS per minute (MB): {' '.join(str(x) for x in r['rss_by_minute_mb'])}")
    if "raw_opcua_per_s" in r:
        lines.append(f"  ceiling (a) raw asyncua client: {r['raw_opcua_per_s']:.0f} notifications/s "
                     f"({r['raw_opcua_cpu_us']:.1f} µs CPU each; simulators wrote "
                     f"{r['raw_phase_sim_changes_per_s']:.0f}/s at {r['raw_phase_sim_cpu_pct']:.0f} % CPU); "
                     + (f"gateway/raw = {r['changes_per_s'] / r['raw_opcua_per_s']:.2f}" if not r["modbus"]
                        else "no ratio: the gateway's figure includes the Modbus machines"))
    if "raw_rows_per_s" in r:
        lines.append(f"  ceiling (b) raw SQLAlchemy Core: the same {r['raw_rows']} rows in as many transactions at "
                     f"{r['raw_rows_per_s']:.0f} rows/s; the gateway's writer did {r['gateway_rows_per_busy_s']:.0f} "
                     f"rows per busy second: gateway/raw = {r['gateway_rows_per_busy_s'] / r['raw_rows_per_s']:.2f}")
    if "raw_modbus_requests_per_s" in r:
        lines.append(f"  ceiling (c) raw pymodbus client: {r['raw_modbus_requests_per_s']:.0f} requests/s back to back "
                     f"({r['raw_modbus_cpu_us_per_request']:.0f} µs CPU each, {r['modbus_requests_per_poll']} requests "
                     f"per poll of all machines)" + (
                         f"; the gateway spent {r['gateway_cpu_us_per_modbus_request']:.0f} µs CPU per request, "
                         "everything included" if "gateway_cpu_us_per_modbus_request" in r else ""))
    if r.get("instances", 1) > 1:
        for k, e in enumerate(r["each"], start=1):
            lines.append(f"  instance gw-{k}: {e['machines']} machines, {e['changes_per_s']:.0f} changes/s, "
                         f"{e['transactions_per_s']:.1f} tx/s, p99 {e['latency_p99_ms']:.0f} ms, writer busy "
                         f"{e['writer_busy_pct']:.0f} %, CPU {e['cpu_pct']:.1f} %")
    if "renewals" in r:
        lines.append(f"  lease renewals in the gateways ({'/'.join(map(str, r['renewal_leases']))} leases each): "
                     f"{r['renewals']} in the window, p50 {r['renewal_ms_p50']:.1f} ms, max {r['renewal_ms_max']:.1f} ms; "
                     f"lease trouble in the log: {len(r['lease_trouble'])} line(s)")
        for line in r["lease_trouble"][:10]:
            lines.append(f"    {line}")
    if "sizes" in r.get("lease_cost", {}):
        lc = r["lease_cost"]
        lines.append(f"  lease cost after the run, {lc['reps']} times each (p50 / p99 ms): " + "; ".join(
            f"{n} leases: renew+heartbeat {c['renew_ms_p50']:.1f} / {c['renew_ms_p99']:.1f}, "
            f"fence {c['fence_ms_p50']:.1f} / {c['fence_ms_p99']:.1f}" for n, c in lc["sizes"].items())
            + f" (writer transaction p50 {r['tx_ms_p50']:.0f} ms, {lc['machines_per_tx']} counter states)")
    if r.get("http_load"):
        h = r["http_load"]
        lines.append(f"  HTTP load: {h['api_requests']} API requests ({h['api_per_s']:.0f}/s) p50 {h['api_p50_ms']:.0f} ms, "
                     f"p99 {h['api_p99_ms']:.0f} ms; {h['scrapes']} /metrics scrapes p99 {h['scrape_p99_ms']:.0f} ms; "
                     f"not 200: {h['failed'] or 'none'}")
    if r.get("output_figures"):
        lines.append(f"  outbox relay: {r['relays']} process(es), {r['relay_cpu_pct']:.1f} % of one core; the receivers "
                     f"(webhook stand-in in this process, mosquitto_sub) {r['receivers_cpu_pct']:.1f} %")
    for target, o in (r.get("output_figures") or {}).items():
        lines.append(f"  output {target}: {o['per_s']:.0f} deliveries/s while the machines ran "
                     f"({r['confirmations_per_s']:.0f} confirmations/s), lag posted → delivered p50 "
                     f"{o['lag_p50_ms']:.0f} ms, p99 {o['lag_p99_ms']:.0f} ms; outbox empty "
                     f"{r['outputs_drain_s'] - r['catch_up_s']:.1f} s after the ledger caught up; {o['delivered']} "
                     f"delivered, {o['parked']} parked, {o['left']} left for the next start; received "
                     f"{o['received_keys']} keys, {o['received_twice']} twice, {o['delivered_not_received']} "
                     f"delivered but not received")
    verdict = "OK" if not r["lost"] and not r["duplicates"] else "UNITS LOST OR DOUBLED"
    lines.append(f"  exactly once: made {r['units_made']}, accounted {r['units_accounted']}: {verdict}")
    return "\n".join(lines)


SCALING = [  # (opcua, modbus, rate)
    (10, 0, 1), (100, 0, 1), (1000, 0, 1), (5000, 0, 1), (100, 0, 10), (100, 0, 50),
    (0, 10, 1), (0, 100, 1), (0, 1000, 1), (0, 5000, 1), (0, 100, 10), (0, 100, 50),
]


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.2))
    for proto, marker in (("opcua", "o"), ("modbus", "s")):
        pts = [r for r in rows if r[proto] and r["rate"] == 1]
        xs = [r[proto] for r in pts]
        ax1.plot(xs, [r["gateway_cpu_pct"] for r in pts], marker=marker, label=f"{proto} gateway CPU %")
        ax1.plot(xs, [r["latency_p99_ms"] / 10 for r in pts], marker=marker, linestyle="--",
                 label=f"{proto} p99 latency (×10 ms)")
        ax2.plot([r["sim_changes_per_s"] for r in rows if r[proto]], [r["changes_per_s"] for r in rows if r[proto]],
                 marker=marker, linestyle="", label=f"{proto}")
    ax1.set_xscale("log")
    ax1.set_xlabel("machines at 1 Hz")
    ax1.legend(fontsize=8)
    ax1.grid(alpha=0.3)
    top = max([r["sim_changes_per_s"] for r in rows] + [1])
    ax2.plot([0, top], [0, top], color="grey", linewidth=0.8, label="gateway = offered")
    ax2.set_xlabel("counter changes/s written by the simulators")
    ax2.set_ylabel("counter changes/s committed by the gateway")
    ax2.legend(fontsize=8)
    ax2.grid(alpha=0.3)
    fig.suptitle("Backflush Gateway, one process, SQLite synchronous=FULL")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def table(rows: list[dict]) -> str:
    out = ["| machines | rate | sim writes/s (sim CPU) | gateway changes/s | raw asyncua /s (ratio) | units conf./s | "
           "postings/s | tx/s | p50 / p95 / p99 latency | gateway CPU | CPU µs per change (raw, ratio) | peak RSS | "
           "exactly once |",
           "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    for r in rows:
        who = f"{r['opcua']} OPC UA" if r["opcua"] else f"{r['modbus']} Modbus"
        raw = (f"{r['raw_opcua_per_s']:.0f} ({r['changes_per_s'] / r['raw_opcua_per_s']:.2f})"
               if r.get("raw_opcua_per_s") else "–")
        ok = "yes" if not r["lost"] and not r["duplicates"] else f"NO ({len(r['lost'])} machines)"
        per = f"{r.get('gateway_cpu_us_per_change', float('nan')):.1f}" + (
            f" ({r['raw_opcua_cpu_us']:.1f}, {r['cpu_per_change_ratio']:.2f})" if "cpu_per_change_ratio" in r else "")
        out.append(f"| {who} | {r['rate']:g} Hz | {r['sim_changes_per_s']:.0f} ({r['sim_cpu_pct']:.0f} %) | "
                   f"{r['changes_per_s']:.0f} | {raw} | {r['units_confirmed_per_s']:.0f} | {r['postings_per_s']:.0f} | "
                   f"{r['transactions_per_s']:.1f} | {r['latency_p50_ms']:.0f} / {r['latency_p95_ms']:.0f} / "
                   f"{r['latency_p99_ms']:.0f} ms | {r['gateway_cpu_pct']:.1f} % | {per} | {r['peak_rss_mb']:.0f} MB | {ok} |")
    return "\n".join(out)


def instances_table(rows: list[dict]) -> str:
    """One row per instance count, same invocation: throughput, latency, CPU, lease costs."""
    out = [("| gateways × machines | sim writes/s | changes/s committed | tx/s | p50 / p95 / p99 change → commit | "
            "gateway CPU (sum) | writer busy (per instance) | peak RSS (sum) | lease renewal in the gateway, p50 / max "
            "| exactly once |"),
           "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    for r in rows:
        sizes = "/".join(str(e["machines"]) for e in r["each"])
        ok = "yes" if not r["lost"] and not r["duplicates"] else f"NO ({len(r['lost'])} machines)"
        out.append(f"| {r['instances']} × {sizes} | {r['sim_changes_per_s']:.0f} | {r['changes_per_s']:.0f} | "
                   f"{r['transactions_per_s']:.1f} | {r['latency_p50_ms']:.0f} / {r['latency_p95_ms']:.0f} / "
                   f"{r['latency_p99_ms']:.0f} ms | {r['gateway_cpu_pct']:.1f} % | {r['writer_busy_pct']:.0f} % | "
                   f"{r['peak_rss_total_mb']:.0f} MB | {r['renewal_ms_p50']:.1f} / {r['renewal_ms_max']:.1f} ms "
                   f"({r['renewals']} renewals of {'/'.join(map(str, r['renewal_leases']))}) | {ok} |")
    cost = ["", "| leases | renew + heartbeat p50 / p99 | fence p50 / p99 | measured after the run with |",
            "|---:|---:|---:|---|"]
    for r in rows:
        for n, c in r.get("lease_cost", {}).get("sizes", {}).items():
            cost.append(f"| {n} | {c['renew_ms_p50']:.1f} / {c['renew_ms_p99']:.1f} ms | {c['fence_ms_p50']:.1f} / "
                        f"{c['fence_ms_p99']:.1f} ms | {r['instances']} instance(s) |")
    return "\n".join(out + cost)


def http_load_table(rows: list[dict]) -> str:
    """--http-load: each configuration idle and under HTTP load, side by side."""
    out = ["| machines | HTTP | changes/s committed | p50 / p95 / p99 change → commit | gateway CPU | API p50 / p99 | "
           "/metrics p99 | exactly once |", "|---|---|---:|---:|---:|---:|---:|---|"]
    for r in rows:
        who = " + ".join(f"{r[k]} {n}" for k, n in (("opcua", "OPC UA"), ("modbus", "Modbus")) if r[k])
        h = r.get("http_load")
        load = (f"/metrics 1/s + {r['api_rps']:g} API req/s" if h else "served, idle")
        api = f"{h['api_p50_ms']:.0f} / {h['api_p99_ms']:.0f} ms" if h else "–"
        scrape = f"{h['scrape_p99_ms']:.0f} ms" if h else "–"
        ok = "yes" if not r["lost"] and not r["duplicates"] else f"NO ({len(r['lost'])} machines)"
        out.append(f"| {who} at {r['rate']:g} Hz | {load} | {r['changes_per_s']:.0f} | {r['latency_p50_ms']:.0f} / "
                   f"{r['latency_p95_ms']:.0f} / {r['latency_p99_ms']:.0f} ms | {r['gateway_cpu_pct']:.1f} % | {api} | "
                   f"{scrape} | {ok} |")
    return "\n".join(out)


def pooled_outputs(rows: list[dict]) -> str:
    """--outputs --pairs N: the p99 over every change of all runs without and of all runs with the outputs,
    and the pairs' own ratios (each pair ran back to back)."""
    def pooled(runs: list[dict], q: float) -> float:
        ages = sorted(a for r in runs for a in r["_ages_ms"])
        return ages[min(len(ages) - 1, int(q * len(ages)))] if ages else float("nan")
    without = [r for r in rows if not r.get("output_figures")]
    with_ = [r for r in rows if r.get("output_figures")]
    ratios = sorted(b["latency_p99_ms"] / a["latency_p99_ms"] - 1 for a, b in zip(without, with_, strict=True))
    p99_without, p99_with = pooled(without, 0.99), pooled(with_, 0.99)
    return (f"pooled over {len(without)} runs each: p50 {pooled(without, 0.5):.0f} → {pooled(with_, 0.5):.0f} ms, "
            f"p99 {p99_without:.0f} → {p99_with:.0f} ms ({100 * (p99_with / p99_without - 1):+.0f} %); pairs' p99 "
            f"changes {', '.join(f'{100 * x:+.0f} %' for x in ratios)} (median {100 * ratios[len(ratios) // 2]:+.0f} %); "
            f"gateway CPU {sum(r['gateway_cpu_pct'] for r in without) / len(without):.1f} → "
            f"{sum(r['gateway_cpu_pct'] for r in with_) / len(with_):.1f} %")


def outputs_table(rows: list[dict]) -> str:
    """--outputs: each configuration without and with the outputs, side by side."""
    out = ["| machines | confirmations/s | outputs | webhook deliveries/s | MQTT deliveries/s | lag p99 webhook / "
           "MQTT | p50 / p95 / p99 change → commit | gateway CPU | relay CPU | exactly once |",
           "|---|---:|---|---:|---:|---:|---:|---:|---:|---|"]
    base = None
    for r in rows:
        who = " + ".join(f"{r[k]} {n}" for k, n in (("opcua", "OPC UA"), ("modbus", "Modbus")) if r[k])
        o = r.get("output_figures")
        if not o:
            base = r
        worse = (f" ({100 * (r['latency_p99_ms'] / base['latency_p99_ms'] - 1):+.0f} %)"
                 if o and base and base["latency_p99_ms"] else "")
        ok = not r["lost"] and not r["duplicates"] and not (o and any(
            x["received_twice"] and t == "hook" or x["delivered_not_received"] for t, x in o.items()))
        out.append(f"| {who} at {r['rate']:g} Hz | {r['confirmations_per_s']:.0f} | {'webhook + MQTT' if o else 'none'} | "
                   + (f"{o['hook']['per_s']:.0f} | {o['uns']['per_s']:.0f} | {o['hook']['lag_p99_ms']:.0f} / "
                      f"{o['uns']['lag_p99_ms']:.0f} ms" if o else "– | – | –")
                   + f" | {r['latency_p50_ms']:.0f} / {r['latency_p95_ms']:.0f} / {r['latency_p99_ms']:.0f} ms{worse} "
                   f"| {r['gateway_cpu_pct']:.1f} % | " + (f"{r['relay_cpu_pct']:.1f} %" if o else "–")
                   + f" | {'yes' if ok else 'NO'} |")
    return "\n".join(out)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--opcua", type=int, default=0, help="OPC UA machines")
    parser.add_argument("--modbus", type=int, default=0, help="Modbus machines")
    parser.add_argument("--rate", type=float, default=1.0, help="cycles/s per machine")
    parser.add_argument("--upc", type=int, default=1, help="units per cycle")
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--db", default="sqlite", help="'sqlite' (a fresh file) or a PostgreSQL URL (a fresh schema)")
    parser.add_argument("--publishing-ms", type=int, default=100)
    parser.add_argument("--poll-ms", type=int, default=1000)
    parser.add_argument("--sim-procs", type=int, default=0, help="OPC UA simulator processes (default: 1 per 500 machines)")
    parser.add_argument("--modbus-per-proc", type=int, default=1000)
    parser.add_argument("--tick", type=float, default=0.05, help="simulator tick (s)")
    parser.add_argument("--no-ceilings", action="store_true")
    parser.add_argument("--json", type=Path, help="append the run's figures as a JSON line")
    parser.add_argument("--profile", type=Path, help="py-spy profile of the gateway (raw/collapsed stacks) to this file")
    parser.add_argument("--profile-gil", action="store_true",
                        help="with --profile: only samples of the thread holding the GIL (where the CPU goes; "
                             "without it, waits on the disk and the network are sampled too)")
    parser.add_argument("--keep-logs", type=Path, help="keep the processes' log and the gateway's --stats lines in this folder")
    parser.add_argument("--instances", default="1",
                        help="gateway processes on the one ledger, each owning a contiguous share of the machines; "
                             "a list (1,2) runs each count back to back and prints a comparison table")
    parser.add_argument("--gather", type=float, default=None,
                        help="the gateway's `run --gather` seconds (default: the gateway's default)")
    parser.add_argument("--lease-reps", type=int, default=50,
                        help="repetitions of the lease renewal/fence timing after each run (0: none)")
    parser.add_argument("--http-load", action="store_true",
                        help="run each configuration twice, the gateway serving HTTP: idle, then with /metrics scraped "
                             "every second and --api-rps API requests/s; compare change → commit latency")
    parser.add_argument("--api-rps", type=float, default=50.0, help="API requests per second with --http-load")
    parser.add_argument("--outputs", action="store_true",
                        help="run each configuration twice: without outputs, then delivering to a webhook stand-in "
                             "and to the MQTT broker at 127.0.0.1:1883; compare change → commit latency")
    parser.add_argument("--pairs", type=int, default=1,
                        help="with --outputs: run without and with the outputs this many times, alternating, and "
                             "compare the p99 of all runs of each (a 60 s run's p99 rests on a handful of bursts)")
    parser.add_argument("--confirm-every", type=int, default=0,
                        help="units per confirmation (default 50 per unit of a cycle): the confirmation rate")
    parser.add_argument("--out-of-step", action="store_true",
                        help="the simulated machines out of step, as a plant's are: each ends its cycles at its own "
                             "moment (default: all in step, every cycle of every machine in the same tick)")
    parser.add_argument("--scaling", action="store_true", help="run the scaling table and plot bench/scaling.png")
    parser.add_argument("--append", action="store_true", help="append the scaling table to bench/RESULTS.md")
    parser.add_argument("--raw-opcua", help=argparse.SUPPRESS)
    parser.add_argument("--raw-modbus", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.raw_opcua:
        print(json.dumps(asyncio.run(raw_opcua(json.loads(args.raw_opcua), args.seconds, args.publishing_ms))))
        return 0
    if args.raw_modbus:
        print(json.dumps(asyncio.run(raw_modbus([tuple(x) for x in json.loads(args.raw_modbus)], args.seconds))))
        return 0

    counts = [int(x) for x in args.instances.split(",")]
    if args.scaling and counts != [1]:
        parser.error("--scaling runs one gateway instance")

    def plan_for(opcua: int, modbus: int, rate: float, instances: int = 1, api_rps: float | None = None,
                 outputs: bool = False) -> Plan:
        procs = args.sim_procs or max(1, -(-opcua // 500))
        return Plan(opcua, modbus, rate, args.upc, args.seconds, args.publishing_ms, args.poll_ms, procs,
                    args.modbus_per_proc, args.db, min(args.tick, 0.5 / rate), instances,
                    http=api_rps is not None, api_rps=api_rps or 0.0, outputs=outputs,
                    confirm_every=args.confirm_every, out_of_step=args.out_of_step, gather=args.gather)

    combos = [(*c, 1) for c in SCALING] if args.scaling else [(args.opcua, args.modbus, args.rate, n) for n in counts]
    rows, failed = [], False
    loads = [0.0, args.api_rps] if args.http_load else [None]  # --http-load: idle, then loaded, same configuration
    combos = [(*c, load) for c in combos for load in loads]
    # --outputs: without, then with the outputs, same configuration
    combos = [(*c, outputs) for c in combos for _ in range(args.pairs if args.outputs else 1)
              for outputs in ([False, True] if args.outputs else [False])]
    for opcua, modbus, rate, instances, api_rps, outputs in combos:
        r = run(plan_for(opcua, modbus, rate, instances, api_rps, outputs), ceilings=not args.no_ceilings,
                log_dir=args.keep_logs, profile=args.profile, lease_reps=args.lease_reps,
                profile_gil=args.profile_gil)
        print(describe(r), flush=True)
        rows.append(r)
        failed |= bool(r["lost"] or r["duplicates"])
        o = r.get("output_figures") or {}
        if o and (o["hook"]["received_twice"] or any(x["delivered_not_received"] or x["parked"] for x in o.values())):
            print("FAILED: an output got a key twice, missed a delivered one, or a delivery was parked",
                  file=sys.stderr)
            failed = True
        if args.json:
            with args.json.open("a") as f:
                f.write(json.dumps({k: v for k, v in r.items() if k != "_ages_ms"}) + "\n")
    if len(counts) > 1:
        print(instances_table(rows))
    if args.http_load:
        print(http_load_table(rows))
    if args.outputs:
        print(outputs_table(rows))
        if args.pairs > 1:
            print(pooled_outputs(rows))
    if args.scaling:
        print(table(rows))
        plot(rows, ROOT / "bench" / "scaling.png")
        if args.append:
            command = "python bench/e2e.py " + " ".join(sys.argv[1:])
            RESULTS.write_text(RESULTS.read_text().rstrip("\n") + f"\n\n## End-to-end scaling ({date.today()})\n\n"
                               f"- command: `{command}`\n- machine: {os.cpu_count()} CPUs, {cpu_model()}, "
                               f"Python {platform.python_version()}\n\n{table(rows)}\n")
    if failed:
        print("FAILED: units lost or counted twice (see above)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
