"""Fault: more than one gateway on one ledger — refused, standby failover, a stalled owner.

Every scenario ends like the others in this suite: the simulators' ground truth against
the ledger, 0 units lost and 0 counted twice (``reconcile``). The lease TTL is 3 s here
(10 s by default) so that ten failovers fit in CI; each takeover must land within TTL + 2 s.
"""

from __future__ import annotations

import random
import signal
import subprocess
import sys
import time

import pytest
from sqlalchemy import select

from gateway.ledger import schema
from tests.faults.harness import MACHINES, FaultLine
from tests.integration.lines import ROOT, spawn, wait_for

pytestmark = pytest.mark.slow

TTL_S = 3.0


def lease_args(instance: str, *, standby: bool = False) -> list[str]:
    return ["--instance", instance, "--lease-ttl", str(TTL_S)] + (["--standby"] if standby else [])


def owners(line: FaultLine) -> set[str]:
    with line.engine.connect() as conn:
        rows = conn.execute(select(schema.machine_leases.c.machine, schema.machine_leases.c.owner)).all()
    return {r.owner for r in rows if r.machine in MACHINES}


def started_as(line: FaultLine, instance: str, *, standby: bool = False) -> subprocess.Popen:
    """A gateway process, once it has registered in the ledger (its signal handlers are set by then)."""
    proc = spawn(line.gateway_args + lease_args(instance, standby=standby), line.log)

    def registered() -> bool:
        with line.engine.connect() as conn:
            return conn.execute(select(schema.gateway_instances.c.pid).where(
                schema.gateway_instances.c.name == instance)).scalar() == proc.pid

    wait_for(registered, 60, f"gateway {instance} to start")
    return proc


def kill_all(procs) -> None:
    """After a failed scenario: no gateway outlives its test (and writes into a dropped schema)."""
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


def stop(line: FaultLine, proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(60) == 0, f"a gateway exited with {proc.returncode}; see {line.log}"


def test_a_second_gateway_on_the_same_machines_is_refused(ledger_url, tmp_path):
    with FaultLine(ledger_url, tmp_path, scenario="second instance refused") as line:
        line.sims.command("resume")
        time.sleep(1.0)
        second = subprocess.run([sys.executable, *line.gateway_args, *lease_args("line-b")],
                                capture_output=True, text=True, timeout=60, cwd=ROOT)
        assert second.returncode == 2, second.stderr
        message = second.stderr
        assert "refused" in message and "--standby" in message and "pid" in message
        if line.database == "sqlite":
            assert "the ledger" in message
        for machine in MACHINES:
            assert machine in message
        time.sleep(1.0)
        line.finish()


def test_a_standby_takes_over_within_the_ttl_after_each_kill_9(ledger_url, tmp_path, seed, soak):
    rng = random.Random(seed)
    kills = 20 if soak else 6  # each instance is killed 3 times as owner; the soak run kills 20 times
    line = FaultLine(ledger_url, tmp_path, scenario="standby failover after kill -9")
    line.gateway_args = line.gateway_args + lease_args("line-a")
    with line:
        names = {"line-a": line.gateway}
        try:
            standby = "line-b"
            names[standby] = started_as(line, standby, standby=True)
            line.sims.command("resume")
            takeovers = failover(line, names, standby, kills, rng)
        finally:
            kill_all([p for p in names.values() if p is not line.gateway])
    assert max(takeovers) <= TTL_S + 2, f"takeover times {[round(s, 1) for s in takeovers]} s"


def failover(line: FaultLine, names: dict, standby: str, kills: int, rng: random.Random) -> list[float]:
    """Kill the owner ``kills`` times; the standby takes over, the killed one comes back as standby."""
    takeovers = []
    for _ in range(kills):
        time.sleep(rng.uniform(0.5, 2.0))
        owner = next(iter(owners(line)))
        names[owner].send_signal(signal.SIGKILL)
        names[owner].wait(10)
        killed_at = time.monotonic()
        line.faults += 1
        wait_for(lambda s=standby: owners(line) == {s}, TTL_S + 10, f"{standby} to take over")
        takeovers.append(time.monotonic() - killed_at)
        names[owner] = started_as(line, owner, standby=True)  # the service manager restarts it
        standby = owner
    line.gateway = names[next(iter(owners(line)))]
    line.sims.command("pause")
    line.wait_caught_up()
    stop(line, names[standby])
    line.finish()
    return takeovers


@pytest.mark.postgres
def test_a_stalled_owner_is_fenced_off_when_it_wakes(pg_url, tmp_path):
    """SIGSTOP past the TTL: the standby takes over; after SIGCONT the old owner posts nothing."""
    line = FaultLine(pg_url, tmp_path, scenario="stalled owner (SIGSTOP) fenced off")
    line.gateway_args = line.gateway_args + lease_args("line-a")
    with line:
        first = line.gateway
        second = started_as(line, "line-b", standby=True)
        try:
            stall_twice(line, first, second)
        finally:
            kill_all([first, second])
    text = line.log_text()
    assert "machine_lost" in text or "ledger_changes_fenced_off" in text


def stall_twice(line: FaultLine, first: subprocess.Popen, second: subprocess.Popen) -> None:
    """The owner is stopped past its TTL, the standby takes over, the stopped one wakes; twice."""
    line.sims.command("resume")
    for _ in range(2):
        time.sleep(1.5)
        stalled, other = (first, second) if owners(line) == {"line-a"} else (second, first)
        stalled.send_signal(signal.SIGSTOP)
        stopped_at = time.monotonic()
        new_owner = "line-b" if stalled is first else "line-a"
        wait_for(lambda o=new_owner: owners(line) == {o}, TTL_S + 10, f"{new_owner} to take over")
        took = time.monotonic() - stopped_at
        assert took <= TTL_S + 2, f"takeover after {took:.1f} s"
        time.sleep(1.0)  # the new owner posts meanwhile
        stalled.send_signal(signal.SIGCONT)
        line.faults += 1
        time.sleep(2.0)  # the woken one tries to post what it counted before the stop
    line.gateway = other
    line.sims.command("pause")
    line.wait_caught_up()
    stop(line, stalled)
    line.finish()
