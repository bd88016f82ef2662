"""Two gateways on one ledger, in one process, fed the same PLC readings at different moments.

Before leases both posted: 1 200 units made, 2 400 confirmed (the scenario of the code
review's reproducer). Now the second is refused; and when an owner stops renewing while
it still counts (a stalled process), the standby takes over and the stalled one's changes
are fenced off, so every unit is confirmed once.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select

from gateway.sources.base import Quality
from gateway.ledger import schema as t
from gateway.ledger.leases import LEDGER, MachinesOwned
from gateway.ledger.masters import store_masterdata
from gateway.ledger.queries import summary
from gateway.ledger.schema import open_engine
from gateway.mapping.load import load_mapping
from gateway.masterdata.load import load_masterdata, to_domain
from gateway.ownership import LeaseOptions
from gateway.service import Gateway
from gateway.sources.base import ORDER_ROLE, TagValue
from tests.integration.lines import MASTERDATA, ROOT, line_mapping

M = "PRESS-01"
T0 = datetime(2026, 1, 1, tzinfo=UTC)


def value(raw: int, second: int) -> TagValue:
    at = T0 + timedelta(seconds=second)
    return TagValue(M, "good", raw, at, Quality.GOOD, at)


def order(second: int = 0) -> TagValue:
    at = T0 + timedelta(seconds=second)
    return TagValue(M, ORDER_ROLE, "1000123", at, Quality.GOOD, at)


def demo_ledger(url: str):
    engine = open_engine(url)
    md = load_masterdata(ROOT / MASTERDATA)
    store_masterdata(engine, to_domain(md), md.stock)
    return engine


@pytest.fixture
def mapping(tmp_path):
    path = tmp_path / "mapping.yaml"
    path.write_text(line_mapping(1, 2))  # nothing listens there: the sources retry, values come from the test
    return load_mapping(path)


async def started(gateway: Gateway) -> tuple[asyncio.Event, asyncio.Task]:
    stop = asyncio.Event()
    task = asyncio.create_task(gateway.run(stop))
    await asyncio.wait_for(gateway.started(), 10)
    return stop, task


async def stalled_until_taken_over(owner: Gateway, standby: Gateway) -> None:
    """The owner stalls (SIGSTOP, a frozen VM): it stops renewing (its keeper is the task named
    "leases") and writes nothing until the standby has taken the machine over."""
    keeper = next(task for task in asyncio.all_tasks() if task.get_name() == "leases"
                  and task.get_coro().cr_frame.f_locals.get("self") is owner.keeper)
    keeper.cancel()
    for _ in range(50):
        await asyncio.sleep(0.1)
        if standby.machines[M].owned:
            return
    raise AssertionError("the standby did not take over")


async def test_a_second_gateway_is_refused_and_nothing_is_counted_twice(ledger_url, mapping):
    engine = demo_ledger(ledger_url)
    a = Gateway(mapping, engine, lease=LeaseOptions("line-a", 30.0))
    b = Gateway(mapping, engine, lease=LeaseOptions("line-b", 30.0))
    stop, task = await started(a)
    with pytest.raises(MachinesOwned) as refused:
        await b.run(asyncio.Event())
    assert {h.machine for h in refused.value.holders} >= set(mapping.machines)
    assert {h.instance for h in refused.value.holders} == {"line-a"}
    a.on_batch([order(), value(1000, 0)])
    for i, raw in enumerate(range(1010, 1301, 10), start=1):
        a.on_batch([value(raw, i)])
    stop.set()
    assert await task
    machine = summary(engine).machines[M]
    assert machine.confirmed_yield + machine.confirmed_scrap + machine.pending == 300 * 4


async def test_a_stalled_owners_changes_are_fenced_off_after_the_standby_took_over(ledger_url, mapping):
    engine = demo_ledger(ledger_url)
    ttl = 1.0
    a = Gateway(mapping, engine, lease=LeaseOptions("line-a", ttl))
    b = Gateway(mapping, engine, lease=LeaseOptions("line-b", ttl, standby=True))
    stop_a, task_a = await started(a)
    stop_b, task_b = await started(b)
    for g in (a, b):
        g.on_batch([order(), value(1000, 0)])
    a.on_batch([value(1100, 1)])
    await a.committed()
    await stalled_until_taken_over(a, b)
    # A wakes up and goes on counting every value; B sees every third (subscription timing).
    for second in range(2, 32):
        raw = 1100 + 10 * second
        a.on_batch([value(raw, second)])
        if second % 3 == 0:
            b.on_batch([value(raw, second)])
    await a.committed()
    for stop in (stop_a, stop_b):
        stop.set()
    assert await task_a and await task_b
    assert not a.machines[M].owned, "A did not learn that it lost the machine"
    machine = summary(engine).machines[M]
    b_last = 1100 + 10 * max(s for s in range(2, 32) if s % 3 == 0)
    # A's 100 units before the stall, then B's count from A's committed position: once each.
    assert machine.confirmed_yield + machine.confirmed_scrap + machine.pending == (b_last - 1000) * 4
    with engine.connect() as conn:
        assert conn.execute(select(t.machine_leases.c.owner).where(t.machine_leases.c.machine == M)).scalar() \
            == "line-b"


async def test_gateway_status_names_each_instance_its_machines_and_its_last_commit(ledger_url, mapping):
    engine = demo_ledger(ledger_url)
    a = Gateway(mapping, engine, lease=LeaseOptions("line-a", 30.0))
    stop, task = await started(a)
    a.on_batch([order(), value(1000, 0)])
    await a.committed()
    await asyncio.to_thread(a.keeper._renew, dict(a.keeper.tokens))  # the heartbeat carries the last commit
    shown = await asyncio.to_thread(subprocess.run, [sys.executable, "-m", "gateway.cli", "status", "--db", ledger_url],
                                    capture_output=True, text=True, timeout=60, cwd=ROOT)
    stop.set()
    assert await task
    assert shown.returncode == 0, shown.stderr
    head, *machines = shown.stdout.splitlines()
    assert head.startswith("line-a  host ") and " running " in head and "machines 3" in head
    assert "last commit never" not in head
    assert sorted(line.split()[0] for line in machines) == sorted(mapping.machines)
    stopped = subprocess.run([sys.executable, "-m", "gateway.cli", "status", "--db", ledger_url],
                             capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert " not running " in stopped.stdout and "machines 0" in stopped.stdout


async def test_gateways_with_different_machines_share_a_postgresql_ledger_but_not_a_sqlite_file(ledger_url, mapping):
    engine = demo_ledger(ledger_url)
    names = sorted(mapping.machines)
    part = [mapping.model_copy(update={"machines": {m: mapping.machines[m] for m in half}})
            for half in (names[:1], names[1:])]
    a = Gateway(part[0], engine, lease=LeaseOptions("line-a", 30.0))
    b = Gateway(part[1], engine, lease=LeaseOptions("line-b", 30.0))
    stop, task = await started(a)
    try:
        if engine.dialect.name == "sqlite":
            with pytest.raises(MachinesOwned) as refused:
                await b.run(asyncio.Event())
            assert [h.machine for h in refused.value.holders] == [LEDGER]
        else:
            stop_b, task_b = await started(b)
            assert all(rt.owned for rt in b.machines.values()) and all(rt.owned for rt in a.machines.values())
            stop_b.set()
            assert await task_b
    finally:
        stop.set()
        assert await task


async def test_a_takeover_does_not_replay_a_value_read_before_the_owners_last_commit(ledger_url, mapping):
    """The standby's link was down while the PLC reset: its last value (30 000) is older than the
    owner's committed position (50 after the reset) and must not count as 29 950 new units."""
    engine = demo_ledger(ledger_url)
    a = Gateway(mapping, engine, lease=LeaseOptions("line-a", 1.0))
    b = Gateway(mapping, engine, lease=LeaseOptions("line-b", 1.0, standby=True))
    stop_a, task_a = await started(a)
    stop_b, task_b = await started(b)
    for g in (a, b):
        g.on_batch([order(), value(30_000, 0)])
    a.on_batch([value(50, 10)])  # the PLC was reset: A counts the 50 units it can see
    await a.committed()
    await stalled_until_taken_over(a, b)
    b.on_batch([value(55, 11)])  # B's link is back
    for stop in (stop_a, stop_b):
        stop.set()
    assert await task_a and await task_b
    machine = summary(engine).machines[M]
    assert machine.confirmed_yield + machine.confirmed_scrap + machine.pending == 55 * 4
