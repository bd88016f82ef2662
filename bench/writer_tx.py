"""The ledger writer alone: the time of one transaction of N confirmations with their
postings (the bench master data of ``bench/e2e.py``, SQLite with synchronous=FULL).

Usage: python bench/writer_tx.py [--confirmations 100] [--transactions 10] [--outputs N] [--profile] [--db URL]
                                  [--collectors] [--ids sequential|hashed|digest]
       python bench/writer_tx.py --plan      # backflush planning alone (``plan()``), no database

It shows what one confirmation costs the writer thread, the figure behind the latency
tail when many machines confirm at once, in wall time and in CPU time (the CPU time is
the steadier figure on a busy machine); ``--outputs N`` routes every machine to N outputs,
so each confirmation also writes N outbox rows (the outbox relay's marks are its own
transactions, not the writer's); ``--profile`` prints a pyinstrument profile
(the ``bench`` extra). It writes only a temporary SQLite file, which it removes, or
with ``--db`` the ledger at URL, which must be empty (e.g. a fresh PostgreSQL schema:
``postgresql+psycopg://host/db?options=-csearch_path%3Dmy_schema``).

``--ids hashed``: confirmation ids as the gateway makes them (``confirming.confirmation_id``: the
first unit's time, transaction ``k`` made at second ``k``, then a hash of the machine and its
counter positions) instead of ``C-<k>-<i>``. ``--ids digest``: the hash alone, as the gateway
made them before the time went in front: their indexes are then written at random places, and
what a confirmation costs grows with the ledger — run many transactions (``--transactions
100``) to see it. The COMMIT time per transaction is printed too (on SQLite it includes the
checkpoint SQLite runs in a COMMIT that finds its log longer than 1 000 pages).

``--collectors``: the same confirmations posted to cost collectors (repetitive production, one
per "order" of the bench master data), each change-set naming its collectors as the service's
do, so the writer checks them (``ensure_collectors``) in every transaction.
"""

from __future__ import annotations

import argparse
import logging
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import structlog

from bench.e2e import ORDERS, masterdata_yaml
from gateway.domain.confirming import confirmation_id
from gateway.domain.records import Confirmation, Position
from gateway.domain.repetitive import CollectorKey
from gateway.ledger.masters import MasterCache
from gateway.ledger.schema import open_engine
from gateway.ledger.posting import apply
from gateway.ledger.changes import ChangeSet


def commit_of(k: int, n: int, now: datetime, collectors: bool = False, ids: str = "sequential") -> ChangeSet:
    """Confirmation number ``k`` of ``n`` machines: 48 good and 2 scrap each."""
    c = ChangeSet()
    for i in range(n):
        start = (("good", Position(0, k * 48)), ("scrap", Position(0, k * 2)))
        end = (("good", Position(0, k * 48 + 48)), ("scrap", Position(0, k * 2 + 2)))
        order = str(9000000 + i % ORDERS)
        if collectors:
            key = CollectorKey("PART", "0001", f"LINE-{i % ORDERS}", "2026-11")
            order = key.number
            c.collectors[order] = key
        machine = f"U{i:05d}"
        made = now + timedelta(seconds=k)
        cid = (f"C-{k}-{i}" if ids == "sequential" else confirmation_id(machine, start, end, made) if ids == "hashed"
               else "C-" + confirmation_id(machine, start, end, made)[13:])
        c.confirmations.append(Confirmation(cid, machine, order, "0010",
                                            Decimal(48), Decimal(2), "PC", start, end, made, made, "every_units"))
    return c


def plan_alone() -> None:
    """``plan()`` for 48 good + 2 scrap of the bench order (a component, setup, machine, labor and
    overhead), with the order well under way: what the writer plans per confirmation."""
    import timeit

    from gateway.domain.backflush import plan
    from gateway.domain.records import (FlushingRule, Material, OperationProgress, OrderComponent, OrderOperation,
                                        ProductionOrder, StockView, WorkCenter)
    now = datetime.now(UTC)
    materials = {"PART": Material("PART", "part", "PC", 0),
                 "RESIN": Material("RESIN", "resin", "KG", 3, negative_stock_allowed=True)}
    centers = {"WC-BENCH": WorkCenter("WC-BENCH", "cell", Decimal("40.00"), Decimal("60.00"), Decimal("100"), "EUR",
                                      "LS-BENCH")}
    order = ProductionOrder(
        "9000000", "PART", Decimal(10**9), Decimal(1), "FG-01",
        components=(OrderComponent("0010", "RESIN", Decimal("0.1"), Decimal(0), FlushingRule.OPERATION, "0010",
                                   "LS-BENCH"),),
        operations=(OrderOperation("0010", "WC-BENCH", Decimal("0.1"), Decimal("0.001"), Decimal("0.001"),
                                   final=True),))
    c = Confirmation("C-1", "U00000", "9000000", "0010", Decimal(48), Decimal(2), "PC", (), (), now, now,
                     "every_units")
    progress = OperationProgress("9000000", "0010", Decimal(123456), Decimal(6543))
    stock = StockView.of({("RESIN", "LS-BENCH"): Decimal(10**6)})
    n = 5000
    took = min(timeit.repeat(lambda: plan(c, order, progress, materials, centers, stock), number=n, repeat=7)) / n
    print(f"plan() for one confirmation of the bench order: {1e6 * took:.1f} µs (best of 7 × {n})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--confirmations", type=int, default=100)
    parser.add_argument("--transactions", type=int, default=10)
    parser.add_argument("--outputs", type=int, default=0, help="outputs routed to every machine (outbox rows)")
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--db", help="an empty ledger database (default: a temporary SQLite file)")
    parser.add_argument("--collectors", action="store_true", help="post to cost collectors instead of orders")
    parser.add_argument("--ids", choices=("sequential", "hashed", "digest"), default="sequential",
                        help="confirmation ids C-<k>-<i>, as the gateway makes them (time, then a hash), or the "
                             "hash alone (random order)")
    parser.add_argument("--plan", action="store_true", help="time plan() alone for one confirmation of the bench order")
    args = parser.parse_args()
    if args.plan:
        plan_alone()
        return
    # The writer logs every posted confirmation at info; measured here is the ledger work.
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    folder = Path(tempfile.mkdtemp(prefix="bench-writer-"))
    try:
        (folder / "masterdata.yaml").write_text(masterdata_yaml())
        url = args.db or f"sqlite:///{folder / 'ledger.sqlite'}"
        subprocess.run([sys.executable, "-m", "gateway.cli", "masterdata", "load", str(folder / "masterdata.yaml"),
                        "--db", url], check=True, cwd=ROOT, capture_output=True)
        engine = open_engine(url, create=False)
        if args.outputs:
            from gateway.ledger.outbox import set_routes
            set_routes(engine, {f"out-{k}": None for k in range(args.outputs)})
        masters = MasterCache(ttl_s=1e9)
        now = datetime.now(UTC)
        commits: list[float] = []
        for k in range(1, 3):  # warm-up: caches, first setup activity, first lots
            with engine.begin() as conn:
                apply(conn, commit_of(k, args.confirmations, now, args.collectors, args.ids), masters)
        profiler = None
        if args.profile:
            from pyinstrument import Profiler
            profiler = Profiler(interval=0.0005)
            profiler.start()
        took = cpu = 0.0
        for k in range(3, 3 + args.transactions):
            changes = commit_of(k, args.confirmations, now, args.collectors, args.ids)
            began, cpu_began = time.perf_counter(), time.process_time()
            with engine.begin() as conn:
                apply(conn, changes, masters)
                committing = time.perf_counter()
            commits.append(time.perf_counter() - committing)
            took += time.perf_counter() - began
            cpu += time.process_time() - cpu_began
        took, cpu = took / args.transactions, cpu / args.transactions
        if profiler is not None:
            profiler.stop()
            print(profiler.output_text(unicode=True, color=False))
        engine.dispose()
        commits.sort()
        print(f"COMMIT per transaction: p50 {1000 * commits[len(commits) // 2]:.1f} ms, "
              f"mean {1000 * sum(commits) / len(commits):.1f} ms (ids: {args.ids})")
        print(f"{args.confirmations} confirmations per transaction{' (cost collectors)' if args.collectors else ''}, "
              f"{args.outputs} outputs: {1000 * took:.1f} ms per transaction, "
              f"{1e6 * took / args.confirmations:.0f} µs per confirmation "
              f"({1e6 * cpu / args.confirmations:.0f} µs CPU: on a busy machine the CPU figure is the steadier one)")
    finally:
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
