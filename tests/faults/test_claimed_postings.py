"""Fault: the gateway is killed with SIGKILL the moment its log claims a posting, round after round.

A ``confirmation_posted`` line is written only after the transaction that posted the
confirmation committed, so whatever the log claims is in the ledger, even when the process
dies right after writing the line. Each round starts the gateway, waits for a new claim in
its log and kills it at once; at the end every confirmation the log ever claimed must be in
the ledger, each claimed once, and the line reconciles with the simulators as after any kill.
"""

from __future__ import annotations

import json
import time

import pytest
from sqlalchemy import select

from gateway.ledger import schema
from tests.faults.harness import FaultLine

pytestmark = pytest.mark.slow


def _claims_after(line: FaultLine, offset: int) -> tuple[list[dict], int]:
    """The ``confirmation_posted`` lines of the log from byte ``offset`` on, and the new offset."""
    with line.log.open("rb") as f:
        f.seek(offset)
        chunk = f.read()
    complete = chunk[:chunk.rfind(b"\n") + 1]  # a line still being written is read next time
    found = []
    for raw in complete.splitlines():
        if b'"confirmation_posted"' in raw:
            try:
                event = json.loads(raw)
            except ValueError:
                continue
            if event.get("event") == "confirmation_posted":
                found.append(event)
    return found, offset + len(complete)


def _kill_on_next_claim(line: FaultLine, offset: int, timeout: float = 60) -> tuple[list[dict], int]:
    """Wait for the gateway's next claim in its log, then kill it at once; the claims seen, the new offset."""
    deadline = time.monotonic() + timeout
    while True:
        claims, offset = _claims_after(line, offset)
        if claims:
            line.kill_gateway()
            more, offset = _claims_after(line, offset)  # written between the read and the kill
            return claims + more, offset
        assert time.monotonic() < deadline, f"no confirmation_posted within {timeout} s; see {line.log}"
        time.sleep(0.005)


def test_every_posting_the_log_claims_before_a_kill_9_is_in_the_ledger(ledger_url, tmp_path, soak):
    rounds = 40 if soak else 8
    claimed: list[dict] = []
    with FaultLine(ledger_url, tmp_path, scenario="kill -9 after a claimed posting", assy_every=5,
                   assy_seconds=0.5) as line:
        earlier, offset = _claims_after(line, 0)
        claimed += earlier
        line.sims.command("resume")
        for _ in range(rounds):
            seen, offset = _kill_on_next_claim(line, offset)
            claimed += seen
            with line.engine.connect() as conn:  # at once, before anything could be written later
                in_ledger = set(conn.execute(select(schema.confirmations.c.id)).scalars())
            missing = [e["confirmation_id"] for e in seen if e["confirmation_id"] not in in_ledger]
            assert not missing, f"claimed in the log but not in the ledger after kill -9: {missing}"
            line.start_gateway()
        time.sleep(1.0)
        figures = line.finish()
        rest, _ = _claims_after(line, offset)
        claimed += rest
        with line.engine.connect() as conn:
            in_ledger = set(conn.execute(select(schema.confirmations.c.id)).scalars())
    ids = [e["confirmation_id"] for e in claimed]
    assert len(ids) >= rounds
    assert len(ids) == len(set(ids)), "a posting was claimed twice"
    assert set(ids) <= in_ledger
    assert all(e["committed_at"] for e in claimed)
    assert figures.faults == rounds and figures.lost == 0 and figures.duplicated == 0
