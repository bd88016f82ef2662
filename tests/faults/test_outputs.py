"""Outputs under faults: a ``gateway run`` process on the simulators delivers its confirmations to a
webhook stand-in (tests/outputs/standin.py, which counts effects per delivery key) while it is
killed mid-delivery, while the receiver is down for 30 s, and while the receiver commits and then
answers too late — one delivery per request, and (kill, commit then timeout) in batches.

Each scenario reconciles the units as every fault scenario does, then lets a restarted gateway
deliver what is left (the confirmations of its last shutdown wait in the outbox for the next
start) and proves: every confirmation in the ledger has exactly one delivery row, delivered; the
receiver took the effect of every key exactly once; nothing parked.
"""

from __future__ import annotations

import random
import time

import pytest
from sqlalchemy import select

from gateway.ledger import schema
from tests.faults.harness import FaultLine
from tests.integration.lines import wait_for
from tests.outputs.standin import Standin
from tests.support import free_port

pytestmark = pytest.mark.slow

OUTAGE_S = 30.0  # the number: a receiver down for half a minute loses and parks nothing


def webhook_line(ledger_url, folder, scenario: str, standin: Standin, *, timeout_s: float = 5,
                 retry_max_s: float = 5, batch: int = 1) -> FaultLine:
    line = FaultLine(ledger_url, folder, scenario=scenario)
    line.mapping.write_text(line.mapping.read_text() + (
        "outputs:\n  hook:\n"
        f"    webhook: {{url: '{standin.url}', timeout_s: {timeout_s}, batch: {batch}}}\n"
        f"    retry_min_s: 0.2\n    retry_max_s: {retry_max_s}\n"))
    return line


def outbox_rows(line: FaultLine) -> list:
    with line.engine.connect() as conn:
        return list(conn.execute(select(schema.outbox.c.key, schema.outbox.c.status, schema.outbox.c.attempts)))


def deliver_the_rest(line: FaultLine) -> None:
    """A gateway started again delivers what waits (nothing new is counted: the machines are paused)."""
    line.start_gateway()
    wait_for(lambda: outbox_rows(line) and all(r.status == "delivered" for r in outbox_rows(line)), 120,
             "the restarted gateway to deliver the outbox")
    code, _ = line.stop_gateway()
    assert code == 0, f"the gateway exited with {code}; see {line.log}"


def assert_each_confirmation_delivered_once(line: FaultLine, standin: Standin) -> list:
    with line.engine.connect() as conn:
        confirmed = list(conn.execute(select(schema.confirmations.c.id)).scalars())
    rows = outbox_rows(line)
    keys = {f"{c}:confirmation:hook" for c in confirmed}
    assert len(confirmed) >= 10, f"only {len(confirmed)} confirmations: too few to prove anything"
    assert sorted(r.key for r in rows) == sorted(keys)  # one row per confirmation, no other
    assert {r.status for r in rows} == {"delivered"}  # none parked, none left
    assert dict(standin.effects) == dict.fromkeys(keys, 1), "a key's effect taken twice, or never"
    assert standin.bad_signatures == 0
    return rows


BATCHES = pytest.mark.parametrize("batch", [1, 50], ids=["one-per-request", "batches"])


@BATCHES
def test_gateway_kill_9_during_delivery(ledger_url, tmp_path, seed, soak, batch):
    rng = random.Random(seed)
    kills = 30 if soak else (10 if batch == 1 else 3)  # ×10 as asked one per request; batches add 3 more
    standin = Standin(free_port())
    standin.mode, standin.delay_s = "slow", 0.4  # every POST takes 0.4 s: a kill lands in one
    line = webhook_line(ledger_url, tmp_path, "outputs: gateway kill -9 during delivery", standin, batch=batch)
    try:
        with line:
            line.sims.command("resume")
            for _ in range(kills):
                before = sum(standin.posts.values())
                # the restarted gateway is sending again: kill it while the receiver still works on it
                wait_for(lambda: sum(standin.posts.values()) > before, 60, "a delivery to start")
                time.sleep(rng.uniform(0.0, 0.3))
                line.kill_gateway()
                time.sleep(rng.uniform(0.05, 0.4))  # the machines keep counting meanwhile
                line.start_gateway()
            time.sleep(2.0)
            figures = line.finish()
            standin.mode = "up"
            deliver_the_rest(line)
            assert_each_confirmation_delivered_once(line, standin)
    finally:
        standin.close()
    assert figures.faults == kills
    # The kills cut deliveries short; the next start asked the receiver about those (HEAD by key) and
    # found them, instead of sending them again.
    found = line.log_text().count('"event": "outbox_found_on_target"')
    resent = {k: n for k, n in standin.posts.items() if n > 1}
    print(f"kills {kills}: found by lookup after a restart {found}, POSTed more than once {resent}")
    assert found >= 1
    assert resent == {}, resent
    assert batch == 1 or max(standin.requests) > 1  # the batch variant did send many deliveries per request


def test_webhook_down_30_s(ledger_url, tmp_path):
    standin = Standin(free_port())
    line = webhook_line(ledger_url, tmp_path, "outputs: webhook down 30 s", standin)
    try:
        with line:
            line.sims.command("resume")
            wait_for(lambda: len(standin.effects) >= 3, 60, "the first deliveries")
            standin.down()
            line.faults += 1
            down_at = len(standin.effects)
            time.sleep(OUTAGE_S)  # confirmations are posted meanwhile: they wait in the outbox
            waiting = [r for r in outbox_rows(line) if r.status != "delivered"]
            standin.up()
            wait_for(lambda: len(standin.effects) > down_at + len(waiting) // 2, 60,
                     "deliveries after the receiver came back")
            time.sleep(2.0)
            line.finish()
            deliver_the_rest(line)
            rows = assert_each_confirmation_delivered_once(line, standin)
    finally:
        standin.close()
    assert len(waiting) >= 10, f"only {len(waiting)} confirmations waited through the outage"
    assert max(r.attempts for r in rows) < 20  # the default max_attempts: far from parking


@BATCHES
def test_webhook_commits_then_times_out(ledger_url, tmp_path, batch):
    standin = Standin(free_port())
    standin.delay_s = 1.0  # every key (every batch): the effect is taken, the answer comes after the 0.5 s timeout
    standin.hang_all = True
    line = webhook_line(ledger_url, tmp_path, "outputs: commit then timeout", standin, timeout_s=0.5, retry_max_s=1,
                        batch=batch)
    try:
        with line:
            line.sims.command("resume")
            time.sleep(5.0)  # a dozen confirmations, each answered after the timeout
            line.finish()
            deliver_the_rest(line)
            assert_each_confirmation_delivered_once(line, standin)
    finally:
        standin.close()
    # An unknown outcome is asked about (HEAD by key), never sent again.
    assert dict(standin.posts) == dict(standin.effects)
    assert batch == 1 or max(standin.requests) > 1
