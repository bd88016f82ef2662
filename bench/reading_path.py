"""The reading path alone: CPU per counter change in ``MachineRuntime.on_value``, with and without runs.

Usage: python bench/reading_path.py [--machines 100] [--batches 300] [--repeats 4]

What ``Gateway.on_batch`` does with the values of a publish response, without the source, the
writer or the event loop: ``machines`` machines with a good and a scrap counter (confirm every
50 units), five counter changes per machine per batch (50 Hz read every 100 ms), one in fifty
of them scrap. Each repeat runs the same batches through fresh machines twice: value by value
(``runs=None``) and with runs (``gateway.machine``: a counter's plain increases after its first
in a batch counted together), and prints process CPU per change for both, and that both gave
the same pendings and counted units. Alternate runs in one process: compare the two columns of
one line, not lines of different runs.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import structlog

from gateway.ledger.changes import ChangeSet
from gateway.ledger.resume import OrderDirectory
from gateway.machine import MachineRuntime
from gateway.mapping.model import Machine
from gateway.sources.base import ORDER_ROLE, Quality, TagValue

T0 = datetime(2026, 3, 2, 6, 0, tzinfo=UTC)
ORDERS = OrderDirectory(uoms={"A": "PC"}, closed=set(), work_centers={("A", "0010"): "WC-1"})


def machines(n: int) -> dict[str, MachineRuntime]:
    cfg = Machine.model_validate({"source": "sim", "work_center": "WC-1", "order": {"node": "ns=2;s=Order"},
                                  "counters": {"good": {"node": "ns=2;s=Good"}, "scrap": {"node": "ns=2;s=Scrap"}},
                                  "confirm": {"every_units": 50, "every_seconds": 10}})
    return {f"M{i}": MachineRuntime.of(f"M{i}", cfg) for i in range(n)}


def batches(n_machines: int, n_batches: int) -> list[list[TagValue]]:
    names = [f"M{i}" for i in range(n_machines)]
    out = [[tv for m in names for tv in (TagValue(m, ORDER_ROLE, "A", T0, Quality.GOOD, T0),
                                         TagValue(m, "good", 0, T0, Quality.GOOD, T0),
                                         TagValue(m, "scrap", 0, T0, Quality.GOOD, T0))]]
    good = dict.fromkeys(names, 0)
    scrap = dict.fromkeys(names, 0)
    for b in range(n_batches):
        values = []
        for k in range(5):
            at = T0 + timedelta(milliseconds=100 * b + 20 * k + 20)
            for i, m in enumerate(names):
                if (5 * b + k + i) % 50 == 0:
                    scrap[m] += 1
                    values.append(TagValue(m, "scrap", scrap[m], at, Quality.GOOD, at))
                else:
                    good[m] += 1
                    values.append(TagValue(m, "good", good[m], at, Quality.GOOD, at))
        out.append(values)
    return out


def run(data: list[list[TagValue]], n_machines: int, with_runs: bool) -> tuple[float, dict]:
    """µs of process CPU per counter change, and the machines' pendings and counted units after."""
    ms = machines(n_machines)
    changes_seen = 0
    began = time.process_time()
    for values in data:
        changes = ChangeSet()
        runs: list[MachineRuntime] | None = [] if with_runs else None
        for tv in values:
            ms[tv.machine].on_value(tv, changes, ORDERS, T0, frozenset(), runs)
        for rt in runs or ():
            rt.settle(changes, ORDERS, T0)
        changes_seen += len(values)
    took = time.process_time() - began
    return 1e6 * took / changes_seen, {m: (rt.pendings, rt.counted_total) for m, rt in ms.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--machines", type=int, default=100)
    parser.add_argument("--batches", type=int, default=300)
    parser.add_argument("--repeats", type=int, default=4)
    args = parser.parse_args()
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    data = batches(args.machines, args.batches)
    print(f"{args.machines} machines, {args.batches} batches of 5 changes per machine")
    for _ in range(args.repeats):
        one_by_one, a = run(data, args.machines, False)
        together, b = run(data, args.machines, True)
        print(f"value by value {one_by_one:.2f} µs per change, with runs {together:.2f} µs per change "
              f"({100 * (together / one_by_one - 1):+.0f} %); same pendings and counted units: {a == b}")


if __name__ == "__main__":
    main()
