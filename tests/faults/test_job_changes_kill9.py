"""Fault: job changes every few seconds on a EUROMAP 77 machine while the gateway is killed -9.

PRESS-01 is mapped with the ``euromap77`` preset on the simulator's EUROMAP 77 address
space: its job counters (parts) restart at 0 at every job change (JobName changed with
ResetJobCounters). Jobs change while the gateway runs and while it is dead; it is killed
several times, in some rounds just after it committed a new JobName and before the job
counters were reset (ResetJobCounters a moment after the name): its restart must still
take their first value for the new job's. Proof: 0 lost, 0 duplicated, no PLC-reset anomaly.

What cannot be observed is stated, not guessed: when a job changes while the gateway is
dead, the parts the old job made after the gateway's last committed reading are never
read by anyone (the counter restarted). The test measures that tail exactly — the old
job's counters when the simulator pauses for the change, less the committed position —
and reconciles against ground truth less it; the gateway records one JOB_CHANGE_UNSEEN
anomaly per counter for such a change, holding nothing.
"""

from __future__ import annotations

import random
import time

import pytest
from sqlalchemy import select

from gateway.ledger import schema
from tests.faults.harness import MACHINES, FaultLine
from tests.integration.lines import wait_for

pytestmark = pytest.mark.slow

NS = "nsu=urn:backflush-gateway:simulator;s="
PRESS_UPC = 4  # the harness's PRESS-01: 4 parts per cycle; the EUROMAP 77 job counters count parts
ORDERS = ("1000123", "1000124")


class JobLine(FaultLine):
    """The fault line with PRESS-01 on the euromap77 preset and the simulator's EUROMAP 77 nodes."""

    def __init__(self, *args, **kw) -> None:
        super().__init__(*args, **kw)
        text = self.mapping.read_text()
        start, end = text.index("  PRESS-01:\n"), text.index("  ASSY-03:\n")
        self.mapping.write_text(text[:start] + (
            "  PRESS-01:\n"
            "    template: euromap77\n"
            f'    with: {{prefix: "{NS}PRESS-01"}}\n'
            "    source: line\n"
            "    work_center: WC-PRESS\n"
            "    confirm: {every_units: 40, every_seconds: 1}\n") + text[end:])
        self.opc_args += ["--interface", "euromap77"]

    def caught_up(self) -> bool:
        truth = self.sims.truth()
        scale = {m: PRESS_UPC if m == "PRESS-01" else 1 for m in MACHINES}
        want = {(m, c): truth[m][f"{c}_count"] * scale[m] for m in MACHINES for c in ("good", "scrap")}
        return self.counters_in_ledger() == want

    def committed_order(self) -> str | None:
        with self.engine.connect() as conn:
            row = conn.execute(select(schema.machine_states.c.order_no).where(schema.machine_states.c.machine == "PRESS-01")).first()
        return None if row is None else row.order_no

    def read_the_job(self) -> bool:
        """The gateway committed the running job and counter values of it (not the last job's)."""
        truth = self.sims.command("truth", "PRESS-01")["PRESS-01"]
        committed = self.counters_in_ledger()
        return self.committed_order() == truth["order"] and all(
            committed.get(("PRESS-01", c), -1) <= truth[f"{c}_count"] * PRESS_UPC for c in ("good", "scrap"))

    def all_read(self) -> bool:
        """Every count PRESS-01 shows is committed."""
        truth = self.sims.command("truth", "PRESS-01")["PRESS-01"]
        committed = self.counters_in_ledger()
        return all(committed.get(("PRESS-01", c)) == truth[f"{c}_count"] * PRESS_UPC for c in ("good", "scrap"))

    def change_job(self, order: str) -> dict:
        """Pause PRESS-01, change its job with ResetJobCounters, resume; the truth just before the change."""
        before = self.sims.command("pause", "PRESS-01")["PRESS-01"]
        self.sims.command("set_order", "PRESS-01", f"{order},reset")
        self.sims.command("resume", "PRESS-01")
        return before


def test_job_changes_while_the_gateway_is_killed(ledger_url, tmp_path, seed, soak):
    rng = random.Random(seed)
    rounds = 24 if soak else 6  # each of the three kinds of round twice
    unobservable = 0
    changes_down = changes_up = changes_in_window = 0
    with JobLine(ledger_url, tmp_path, scenario="job changes during kill -9") as line:
        order = line.start["PRESS-01"]["order"]
        line.sims.command("resume")
        for i in range(rounds):
            # Up and reading the running job: what it has read of it is committed.
            wait_for(line.read_the_job, 30, "the gateway to commit the running job and its counters")
            time.sleep(rng.uniform(0.5, 1.5))
            order = ORDERS[(ORDERS.index(order) + 1) % 2] if order in ORDERS else ORDERS[0]
            if i % 3 == 2:  # killed after it committed the new JobName, before the job counters reset
                line.sims.command("pause", "PRESS-01")
                wait_for(line.all_read, 30, "the gateway to commit the old job's last counts")
                line.sims.command("set_order", "PRESS-01", order)  # the name only
                wait_for(lambda: line.committed_order() == order, 30, "the gateway to commit the new JobName")
                line.kill_gateway()
                line.sims.command("reset_job_counters", "PRESS-01")
                line.sims.command("resume", "PRESS-01")
                changes_in_window += 1
            elif i % 3 == 0:  # a job change while the gateway reads, then killed
                line.change_job(order)
                changes_up += 1
                wait_for(line.read_the_job, 30, "the gateway to read the job change")
                time.sleep(rng.uniform(0.05, 0.5))
                line.kill_gateway()
            else:  # killed first; the job changes while it is dead
                line.kill_gateway()
                time.sleep(rng.uniform(0.1, 0.6))  # the old job goes on: its tail nobody reads
                committed = line.counters_in_ledger()
                before = line.change_job(order)
                unobservable += sum(before[f"{c}_count"] * PRESS_UPC - committed[("PRESS-01", c)]
                                    for c in ("good", "scrap"))
                changes_down += 1
            time.sleep(rng.uniform(0.1, 0.4))
            line.start_gateway()
        # Read while it still produces: counts made while the gateway was down are judged by
        # the state it reads when it comes back (see the README), here PRODUCTION.
        wait_for(line.read_the_job, 30, "the gateway to read the running job")
        time.sleep(1.0)
        figures = line.finish(unobservable={"PRESS-01": unobservable})
        with line.engine.connect() as conn:
            kinds = [r.kind for r in conn.execute(select(schema.anomalies).where(schema.anomalies.c.machine == "PRESS-01"))]
    assert figures.lost == 0 and figures.duplicated == 0 and figures.faults == rounds
    assert "reset" not in kinds and "implausible" not in kinds and "not_producing" not in kinds
    assert kinds.count("job_change_unseen") == 2 * changes_down  # good and scrap, per unseen change
    assert changes_up and changes_down and changes_in_window
