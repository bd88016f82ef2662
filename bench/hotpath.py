"""The gateway's CPU per counter change, in one process, without simulators or network.

Usage: python bench/hotpath.py [--machines 100] [--rate 50] [--seconds 10] [--profile FILE]

What ``bench/e2e.py`` measures end to end, with the noise taken out: the simulators, the
sockets and the other processes on the machine. A real ``Gateway`` runs (its writer thread,
its confirmation timer, its leases, a SQLite ledger with ``synchronous=FULL`` and the bench master data
of ``bench/e2e.py``); its OPC UA source gets publish responses as asyncua hands them over:
the binary ``PublishResponse`` messages of ``--machines`` machines counting ``--rate`` cycles
per second (95 % good, 5 % scrap, one notification per cycle, one response per 100 ms
publishing interval) are made up front, and every 100 ms the next one is decoded with
asyncua's decoder and given to the source's publish callback, as asyncua's publish loop does.

It prints the process CPU (all threads: event loop, writer, timer) per counter change,
split into asyncua's decoding (timed alone over the same messages, before the run) and the
rest (the source, counting, confirming, the ledger). Every unit fed must be accounted in the
ledger (confirmed or pending), or it exits 1. ``--profile`` writes a py-spy profile
of the run (raw/collapsed stacks, GIL-holding samples of all threads). It writes only a temporary folder, which it removes.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from asyncua import ua  # noqa: E402
from asyncua.common.utils import Buffer  # noqa: E402
from asyncua.ua.ua_binary import struct_from_binary, struct_to_binary  # noqa: E402

from bench.e2e import NS, ORDERS, masterdata_yaml  # noqa: E402

PUBLISH_S = 0.1


def mapping_yaml(machines: int) -> str:
    # A port nothing listens on: the source's own connection attempts fail and back off;
    # the values come from this script.
    lines = ["sources:", '  plc: {opcua: {endpoint: "opc.tcp://127.0.0.1:9", publishing_interval_ms: 100, '
             "watchdog_s: 30}}", "machines:"]
    for i in range(machines):
        name, node = f"U{i:05d}", f"nsu={NS};s=U{i:05d}"
        lines.append(f"  {name}: {{source: plc, work_center: WC-BENCH, units_per_cycle: 1, "
                     f"confirm: {{every_units: 50, every_seconds: 10}}, "
                     f'counters: {{good: {{node: "{node}.GoodCount"}}, scrap: {{node: "{node}.ScrapCount"}}}}, '
                     f'order: {{node: "{node}.OrderNumber"}}}}')
    return "\n".join(lines) + "\n"


def messages(machines: int, rate: float, seconds: float, handles: dict[tuple[str, str], int],
             began: datetime) -> tuple[list[bytes], int, int]:
    """Binary PublishResponses: the first with every tag's value, then one per interval.

    Returns the messages, the counter changes they carry after the first, and the units."""
    rng = random.Random(7)
    counts = {(f"U{i:05d}", c): 0 for i in range(machines) for c in ("good", "scrap")}
    per_interval = rate * PUBLISH_S
    carry = {m: rng.random() for m in range(machines)}  # machines out of step, as real ones are
    out, changes = [], 0

    def response(seq: int, items: list[ua.MonitoredItemNotification]) -> bytes:
        note = ua.DataChangeNotification(MonitoredItems=items)
        message = ua.NotificationMessage(SequenceNumber=seq, PublishTime=began, NotificationData=[note])
        result = ua.PublishResult(SubscriptionId=1, NotificationMessage=message, MoreNotifications=False)
        return struct_to_binary(ua.PublishResponse(Parameters=result))

    def item(key: tuple[str, str], value, vtype, at: datetime) -> ua.MonitoredItemNotification:
        dv = ua.DataValue(Value=ua.Variant(value, vtype), SourceTimestamp=at, ServerTimestamp=at)
        return ua.MonitoredItemNotification(ClientHandle=handles[key], Value=dv)

    first = []
    for i in range(machines):
        name = f"U{i:05d}"
        first.append(item((name, "order"), str(9000000 + i % ORDERS), ua.VariantType.String, began))
        for c in ("good", "scrap"):
            first.append(item((name, c), 0, ua.VariantType.UInt32, began))
    out.append(response(1, first))
    for k in range(1, int(seconds / PUBLISH_S) + 1):
        start = began + timedelta(seconds=k * PUBLISH_S)
        items = []
        for m in range(machines):
            carry[m] += per_interval
            cycles, carry[m] = int(carry[m]), carry[m] - int(carry[m])
            for j in range(cycles):
                c = "scrap" if rng.random() < 0.05 else "good"
                key = (f"U{m:05d}", c)
                counts[key] += 1
                at = start + timedelta(seconds=PUBLISH_S * j / max(1, cycles))
                items.append(item(key, counts[key], ua.VariantType.UInt32, at))
        changes += len(items)
        out.append(response(k + 1, items))
    return out, changes, sum(counts.values())


def thread_cpu(tid: int) -> float:
    """A thread's CPU seconds so far (utime + stime of /proc/self/task/TID/stat; Linux)."""
    fields = Path(f"/proc/self/task/{tid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def run(args: argparse.Namespace, folder: Path) -> int:
    from gateway.ledger.reports import summary
    from gateway.ledger.schema import open_engine
    from gateway.mapping.load import load_mapping
    from gateway.ownership import LeaseOptions
    from gateway.service import Gateway
    from gateway.sources import build_sources
    from gateway.sources.opcua.source import _Connection, _Item

    (folder / "masterdata.yaml").write_text(masterdata_yaml())
    (folder / "mapping.yaml").write_text(mapping_yaml(args.machines))
    url = f"sqlite:///{folder / 'ledger.sqlite'}"
    subprocess.run([sys.executable, "-m", "gateway.cli", "masterdata", "load", str(folder / "masterdata.yaml"),
                    "--db", url], check=True, cwd=ROOT, capture_output=True)
    engine = open_engine(url, create=False)
    mapping = load_mapping(folder / "mapping.yaml")
    gather = {} if args.gather is None else {"gather_s": args.gather}
    gateway = Gateway(mapping, engine, lease=LeaseOptions("bench"), **gather)  # as `gateway run`: leases, a fenced writer
    stop = asyncio.Event()
    task = asyncio.create_task(gateway.run(stop, shutdown_timeout_s=60))
    await gateway.started()

    source = build_sources(mapping, gateway.on_batch)[0]
    conn = _Connection(30.0)
    handles = {}
    for h, spec in enumerate(source.tags, start=1):
        conn.items[h] = _Item(ua.NodeId(spec.address.rpartition("s=")[2], 2), [spec])
        handles[(spec.machine, spec.role)] = h
    began = datetime.now(UTC)
    data, changes, units = messages(args.machines, args.rate, args.seconds, handles, began)

    def decode(blob: bytes) -> ua.PublishResult:
        return struct_from_binary(ua.PublishResponse, Buffer(blob)).Parameters

    cpu0 = time.process_time()
    for blob in data[1:]:
        decode(blob)
    decode_s = time.process_time() - cpu0

    source._on_publish(conn, decode(data[0]))  # the baseline: every tag's current value
    await asyncio.sleep(1.0)
    # What the gateway does 15 s after its start (collect, freeze what lives long), done
    # here so that the one full collection does not fall into the figure.
    gc.collect()
    gc.freeze()
    spy = None
    if args.profile:  # py-spy, all threads, samples holding the GIL only: where the CPU goes
        spy = subprocess.Popen([str(Path(sys.executable).parent / "py-spy"), "record", "-p", str(os.getpid()),
                                "-d", str(int(args.seconds)), "-r", "200", "--gil", "--threads", "-f", "raw",
                                "-o", args.profile], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        await asyncio.sleep(0.5)
    writer_tid = gateway.writer._thread.native_id
    cpu0, wall0, writer0 = time.process_time(), time.monotonic(), thread_cpu(writer_tid)
    for k, blob in enumerate(data[1:], start=1):
        source._on_publish(conn, decode(blob))
        await asyncio.sleep(max(0.0, wall0 + k * PUBLISH_S - time.monotonic()))
    fed = time.monotonic()
    while gateway.writer._queue.qsize():  # what was fed, committed
        await asyncio.sleep(0.01)
    await gateway.committed()
    cpu = time.process_time() - cpu0
    writer_cpu = thread_cpu(writer_tid) - writer0
    wall = time.monotonic() - wall0
    behind = time.monotonic() - fed
    if spy is not None:
        spy.wait(60)
    stop.set()
    ok = await task
    accounted = sum(m.accounted for m in summary(engine).machines.values())
    engine.dispose()
    us = 1e6 * cpu / changes
    us_decode = 1e6 * decode_s / changes
    print(f"{args.machines} machines at {args.rate:g} Hz, {len(data) - 1} publish responses, {changes} counter "
          f"changes in {wall:.1f} s: process CPU {1e6 * cpu / changes:.1f} µs per change "
          f"(asyncua decoding {us_decode:.1f} µs, the writer thread {1e6 * writer_cpu / changes:.1f} µs, the "
          f"rest {us - us_decode - 1e6 * writer_cpu / changes:.1f} µs), "
          f"{100 * cpu / wall:.0f} % of a core; {gateway.writer.health.transactions} transactions, the last "
          f"committed {behind:.1f} s after the last response")
    if not ok or accounted != units:
        print(f"FAILED: {units} units fed, {accounted} accounted, clean stop: {ok}", file=sys.stderr)
        return 1
    print(f"exactly once: {units} units fed, {accounted} accounted")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--machines", type=int, default=100)
    parser.add_argument("--rate", type=float, default=50.0, help="cycles/s per machine")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--gather", type=float, default=None,
                        help="the writer's gather time in seconds (`gateway run --gather`; default: its default)")
    parser.add_argument("--profile", help="write a py-spy profile of the run (raw/collapsed stacks) to this file")
    args = parser.parse_args()
    # The gateway logs every posted confirmation at info: kept, as in production (JSON to a
    # file that is thrown away), so that what logging costs is in the figure.
    folder = Path(tempfile.mkdtemp(prefix="bench-hotpath-"))
    try:
        from gateway import logs
        with (folder / "gateway.log").open("w") as stream:
            logs.configure(json=True, level="info", stream=stream)
            return asyncio.run(run(args, folder))
    finally:
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
