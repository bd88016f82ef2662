"""Fault 6: a slow database (latency injected in the proxy): no reading dropped, memory bounded.

PostgreSQL only: SQLite is a file, there is no link to slow down (its slow case is the
lock in test_database_gone). Every chunk between gateway and server is delayed, so each
transaction takes many round trips' worth of latency while the machines count fast.

The bound: the writer merges everything queued into ONE commit per transaction, so what
waits is per machine one counter state per counter, one pending per order operation and
the confirmations made meanwhile (one per ``every_units`` / ``every_seconds``), never
one object per reading. The test samples the gateway's resident memory (VmRSS) every
0.2 s and asserts it grew by less than ``RSS_GROWTH_LIMIT_MB`` over its value before
the slowdown.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.faults.harness import FaultLine

pytestmark = pytest.mark.slow
RSS_GROWTH_LIMIT_MB = 40


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def test_slow_postgres_drops_nothing(pg_url, tmp_path, soak, soak_round):
    slow_s = 60.0 if soak else 10.0
    with FaultLine(pg_url, tmp_path, scenario="slow database", db_proxy=True, rates=(100, 100, 50)) as line:
        line.sims.command("resume")
        time.sleep(1.5)
        before = _rss_mb(line.gateway.pid)
        line.db_proxy.set_mode("delay", delay_s=0.05)
        line.faults += 1
        peak, until = before, time.monotonic() + slow_s
        while time.monotonic() < until:
            peak = max(peak, _rss_mb(line.gateway.pid))
            time.sleep(0.2)
        line.db_proxy.set_mode("pass")
        time.sleep(2.0)
        figures = line.finish()
    print(f"gateway RSS {before:.1f} MB before, peak {peak:.1f} MB while slow")
    assert peak - before < RSS_GROWTH_LIMIT_MB
    assert figures.lost == 0
