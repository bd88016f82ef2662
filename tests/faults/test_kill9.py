"""Fault 1: the gateway is killed with SIGKILL at random (seeded) moments, 20 times or more.

The simulated machines keep counting while it is down; every restart resumes from the
last committed position and the PLC's cumulative counters cover the gap.
"""

from __future__ import annotations

import random
import time

import pytest

from tests.faults.harness import FaultLine

pytestmark = pytest.mark.slow


def test_kill_9_at_random_moments(ledger_url, tmp_path, seed, soak):
    rng = random.Random(seed)
    kills = 60 if soak else 20
    with FaultLine(ledger_url, tmp_path, scenario="gateway kill -9") as line:
        line.sims.command("resume")
        for _ in range(kills):
            time.sleep(rng.uniform(0.2, 1.0))  # sometimes before the gateway even took its baseline
            line.kill_gateway()
            time.sleep(rng.uniform(0.05, 0.4))  # the machines keep counting meanwhile
            line.start_gateway()
        time.sleep(2.0)
        figures = line.finish()
    assert figures.faults == kills
