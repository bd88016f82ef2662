"""Hot reload of the mapping while the machines count: nothing lost, nothing counted twice.

One gateway process runs against the OPC UA simulator (PRESS-01, ASSY-03) and the Modbus
simulator (LATHE-04); every machine counts from the baseline to the end without a pause
while the mapping file is rewritten and the gateway asked to reload it:

(a) ASSY-03 added (`gateway reload`): it takes its lease and its first reading is its baseline;
(b) LATHE-04 removed (`gateway reload`): its pending units confirmed, its lease released;
(c) PRESS-01 changed (its confirm rule; SIGHUP): the old definition's pending units confirmed;
(d) the OPC UA source changed (publishing interval; SIGHUP): reconnected;
(e) an invalid file, and a file whose master-data references fail: refused, counting goes on.

What is asserted, per machine, over the time it was in the mapping: its confirmations form
one unbroken chain of counter positions per counter (no gap: nothing lost; no overlap:
nothing twice) from its baseline to its last committed position, and their units equal the
simulator's ground truth over that span. The baseline is the truth at the gateway's start,
or, for the added machine, a position between the truth just before and just after its
reload. The end is the truth at the end, or, for the removed machine, a position between the
truth just before and just after its reload: the units it made after that are not the
gateway's (the PLC counter keeps them; the ledger's position for it does not move again).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import defaultdict
from decimal import Decimal

import pytest
from sqlalchemy import func, select

from gateway.domain.confirming import parse_positions
from gateway.ledger import schema
from gateway.ledger.leases import db_now
from gateway.ledger.reports import summary
from tests.faults.harness import FaultLine, _record, _stock_invariant, Figures
from tests.integration.lines import MASTERDATA, ROOT, wait_for

pytestmark = pytest.mark.slow

NS = "nsu=urn:backflush-gateway:simulator;s="
UPC = {"PRESS-01": 4, "ASSY-03": 1, "LATHE-04": 1}

SOURCES = """
sources:
  line:
    opcua: {{endpoint: "opc.tcp://127.0.0.1:{opc_port}", publishing_interval_ms: {interval}, reconnect_min_s: 0.2, reconnect_max_s: 1}}
  lathes:
    modbus: {{host: 127.0.0.1, port: {modbus_port}, poll_interval_ms: 50, reconnect_min_s: 0.2, reconnect_max_s: 1}}
machines:
"""
MACHINES = {
    "PRESS-01": """  PRESS-01:
    source: line
    work_center: {press_wc}
    units_per_cycle: 4
    counters:
      good:  {{node: "{ns}PRESS-01.GoodCount", type: uint32}}
      scrap: {{node: "{ns}PRESS-01.ScrapCount", type: uint32}}
    order: {{node: "{ns}PRESS-01.OrderNumber"}}
    confirm: {press_confirm}
""",
    "ASSY-03": """  ASSY-03:
    source: line
    work_center: WC-ASSY
    counters:
      good:  {{node: "{ns}ASSY-03.GoodCount", type: uint16}}
      scrap: {{node: "{ns}ASSY-03.ScrapCount", type: uint16}}
    order: "1000124"
    confirm: {{every_units: 15, every_seconds: 1}}
""",
    "LATHE-04": """  LATHE-04:
    source: lathes
    work_center: WC-LATHE
    counters:
      good:  {{register: 100, type: uint32}}
      scrap: {{register: 104, type: uint32}}
    order: {{register: 110, type: string, length: 10}}
    confirm: {{every_units: 100000, every_seconds: null}}
""",
}
# Before (c) PRESS-01 confirms only when told: its one confirmation until then is the reload's.
PRESS_BEFORE = "{every_units: 100000, every_seconds: null}"
PRESS_AFTER = "{every_units: 40, every_seconds: 1}"
RELOADS = 6  # (a) (c) (d) (b) and two refused in (e): the "faults injected" of the report


class ReloadLine(FaultLine):
    """The fault line with a mapping of our own that changes, and its machines in `mapped`."""

    def __init__(self, url, folder):
        super().__init__(url, folder, scenario="mapping reload", rates=(25, 30, 20))
        self.mapped = {"PRESS-01", "LATHE-04"}
        self.write(self.mapped)

    def write(self, machines, *, interval: int = 50, press_confirm: str = PRESS_BEFORE, press_wc: str = "WC-PRESS",
              head: str = "", broken: str = "") -> None:
        text = head + SOURCES.format(opc_port=self.opc_proxy.port, modbus_port=self.modbus_proxy.port,
                                     interval=interval)
        for name in ("PRESS-01", "ASSY-03", "LATHE-04"):
            if name in machines:
                text += MACHINES[name].format(ns=NS, press_confirm=press_confirm, press_wc=press_wc)
        self.mapping.write_text(text + broken)

    def caught_up(self) -> bool:
        truth = self.sims.truth()
        counters = self.counters_in_ledger()
        return all(counters.get((m, c)) == truth[m][f"{c}_count"] for m in self.mapped for c in ("good", "scrap"))

    def counts(self) -> dict[str, dict[str, int]]:
        truth = self.sims.truth()
        return {m: {c: truth[m][f"{c}_count"] for c in ("good", "scrap")} for m in UPC}

    def reload_command(self, *extra: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "gateway.cli", "reload", "--db", self.url, *extra],
                              cwd=ROOT, capture_output=True, text=True, timeout=90, check=False)

    def answered(self) -> int:
        with self.engine.connect() as conn:
            return conn.execute(select(func.count()).select_from(schema.mapping_reloads)
                                .where(schema.mapping_reloads.c.outcome.is_not(None))).scalar_one()

    def sighup(self) -> str:
        """SIGHUP as an operator sends it; the outcome the gateway recorded for it."""
        done = self.answered()
        self.gateway.send_signal(signal.SIGHUP)
        wait_for(lambda: self.answered() > done, 30, "the gateway to answer the SIGHUP")
        with self.engine.connect() as conn:
            row = conn.execute(select(schema.mapping_reloads).order_by(schema.mapping_reloads.c.id.desc())).first()
        assert row.requested_by == "signal"
        return f"{row.outcome}: {row.detail}"

    def lease(self, machine: str):
        with self.engine.connect() as conn:
            me = conn.execute(select(schema.gateway_instances.c.process)).scalar_one()
            row = conn.execute(select(schema.machine_leases).where(schema.machine_leases.c.machine == machine)).first()
            return row.process == me, row.expires_at > db_now(conn)

    def log_events(self, event: str) -> list[str]:
        return [line for line in self.log_text().splitlines() if f'"event": "{event}"' in line]


def chains(engine) -> dict[tuple[str, str], list[tuple[int, int]]]:
    """Per machine and counter, the (start, end) raw positions of its confirmations, in order."""
    spans = defaultdict(list)
    with engine.connect() as conn:
        for r in conn.execute(select(schema.confirmations)):
            for (c, a), (_, b) in zip(parse_positions(r.start_pos), parse_positions(r.end_pos), strict=True):
                assert a.epoch == b.epoch == 0, f"{r.machine}/{c}: a counter epoch changed ({r.id})"
                spans[(r.machine, c)].append((a.raw, b.raw))
    return {k: sorted(v) for k, v in spans.items()}


def test_reload_under_production(ledger_url, tmp_path):
    with ReloadLine(ledger_url, tmp_path) as line:
        start = line.counts()
        line.sims.command("resume")
        time.sleep(1.5)

        # (a) add ASSY-03, with `gateway reload`
        before_add = line.counts()
        line.mapped.add("ASSY-03")
        line.write(line.mapped)
        added = line.reload_command()
        after_add = line.counts()
        assert (added.returncode, added.stdout, added.stderr) == (0, (
            "reload applied: machines added: ASSY-03; removed: none; changed: none; unchanged: 2; sources "
            "reconnected: line; started: none; stopped: none\n"), "")
        assert line.lease("ASSY-03") == (True, True)
        time.sleep(2)

        # (c) change PRESS-01's confirm rule, with SIGHUP
        line.write(line.mapped, press_confirm=PRESS_AFTER)
        assert line.sighup() == ("applied: machines added: none; removed: none; changed: PRESS-01; unchanged: 2; "
                                 "sources reconnected: none; started: none; stopped: none")
        time.sleep(2)

        # (d) change the OPC UA source's publishing interval, with SIGHUP
        line.write(line.mapped, press_confirm=PRESS_AFTER, interval=120)
        assert line.sighup() == ("applied: machines added: none; removed: none; changed: none; unchanged: 3; "
                                 "sources reconnected: line; started: none; stopped: none")
        time.sleep(2)

        # (b) remove LATHE-04, with `gateway reload`
        before_rm = line.counts()
        line.mapped.discard("LATHE-04")
        line.write(line.mapped, press_confirm=PRESS_AFTER, interval=120)
        removed = line.reload_command()
        after_rm = line.counts()
        assert (removed.returncode, removed.stdout) == (0, (
            "reload applied: machines added: none; removed: LATHE-04; changed: none; unchanged: 2; sources "
            "reconnected: none; started: none; stopped: lathes\n"))
        assert line.lease("LATHE-04") == (True, False), "the removed machine's lease is still held"
        lathe_at_removal = line.counters_in_ledger()[("LATHE-04", "good")]

        # (e) an invalid file, then one whose master-data references fail: refused, the mapping stays
        line.write(line.mapped, press_confirm=PRESS_AFTER, interval=120, broken="    units_per_cycle: -4\n")
        bad = line.reload_command()
        error = f"{line.mapping}:25: machines.ASSY-03.units_per_cycle: must be at least 1, got -4"
        assert (bad.returncode, bad.stdout, bad.stderr) == (1, "", (
            f"reload refused: the mapping has errors\n{error}\nthe gateway runs on with its previous mapping\n"))
        line.write(line.mapped, press_confirm=PRESS_AFTER, interval=120, press_wc="WC-NOPE",
                   head=f"masterdata: {ROOT / MASTERDATA}\n")
        refs = line.reload_command()
        assert (refs.returncode, refs.stderr) == (1, (
            f"reload refused: the mapping has errors\n{line.mapping}:11: machines.PRESS-01.work_center: unknown "
            f"work center 'WC-NOPE' in {ROOT / MASTERDATA} (defined: WC-ASSY, WC-LATHE, WC-PRESS, WC-WELD)\n"
            "the gateway runs on with its previous mapping\n"))
        press_then = line.counters_in_ledger()[("PRESS-01", "good")]
        time.sleep(1.5)
        assert line.counters_in_ledger()[("PRESS-01", "good")] > press_then, "counting stopped after a refusal"

        line.sims.command("pause")
        line.wait_caught_up()
        end = line.counts()
        code, _ = line.stop_gateway()
        assert code == 0
        line.warn_if_stop_was_forced()

        # The refusals are logged one line per error, and one line per reload.
        errors = line.log_events("mapping_reload_error")
        assert len(errors) == 2 and error.replace('"', '\\"') in errors[0]
        assert len(line.log_events("mapping_reload_refused")) == 2
        assert len(line.log_events("mapping_reloaded")) == 4
        not_running = line.reload_command()
        assert not_running.returncode == 1 and "is not running" in not_running.stderr

        # -- reconcile ---------------------------------------------------------------------
        s = summary(line.engine)
        spans = chains(line.engine)
        ledger = line.counters_in_ledger()
        assert ledger[("LATHE-04", "good")] == lathe_at_removal < end["LATHE-04"]["good"], \
            "the removed machine was counted after its removal"
        produced = confirmed = 0
        for m in UPC:
            units = Decimal(0)
            for c in ("good", "scrap"):
                first, last = start[m][c], end[m][c]
                if m == "ASSY-03":  # its baseline: its first reading after the reload that added it
                    first = spans[(m, c)][0][0] if (m, c) in spans else ledger[(m, c)]
                    assert before_add[m][c] <= first <= after_add[m][c], (m, c, first, before_add, after_add)
                if m == "LATHE-04":  # its end: its last reading before the reload that removed it
                    last = ledger[(m, c)]
                    assert before_rm[m][c] <= last <= after_rm[m][c], (m, c, last, before_rm, after_rm)
                chain = spans.get((m, c), [])
                at = first
                for a, b in chain:  # unbroken: each confirmation starts where the one before ended
                    assert a == at, f"{m}/{c}: confirmations jump from {at} to {a} (lost or twice)"
                    at = b
                assert at == last == ledger[(m, c)], f"{m}/{c}: confirmed up to {at}, counted to {last}"
                units += (last - first) * UPC[m]
            totals = s.machines[m]
            assert totals.pending == 0 and totals.held == 0 and totals.balanced, (m, totals)
            assert totals.confirmed_yield + totals.confirmed_scrap == units, (m, totals, units)
            assert units >= 40, f"{m}: {units} units are too few to prove anything"
            produced += int(units)
            confirmed += int(totals.confirmed_yield + totals.confirmed_scrap)
        assert s.duplicate_confirmation_ids == 0
        assert _stock_invariant(line.engine), "stock ≠ opening + receipts − issues"
        with line.engine.connect() as conn:
            triggers = defaultdict(list)
            for r in conn.execute(select(schema.confirmations).order_by(schema.confirmations.c.last_source_time)):
                triggers[r.machine].append(r.trigger)
        # PRESS-01 confirmed nothing by its first rule: its first confirmation is the reload's, and
        # LATHE-04's only one is the one its removal made.
        assert triggers["PRESS-01"][0] == "reload" and triggers["PRESS-01"].count("reload") == 1
        assert triggers["LATHE-04"] == ["reload"]
        _record(Figures(line.scenario, line.database, produced, confirmed, 0, 0, produced - confirmed, 0, RELOADS,
                        round(time.monotonic() - line.began, 1)))


def test_reload_of_an_instance_that_is_not_there_is_refused(sqlite_url, tmp_path):
    from gateway.ledger.schema import open_engine

    open_engine(sqlite_url)
    run = subprocess.run([sys.executable, "-m", "gateway.cli", "reload", "--db", sqlite_url, "--instance", "line-a"],
                         cwd=ROOT, capture_output=True, text=True, timeout=60, check=False, env=os.environ)
    assert (run.returncode, run.stderr) == (1, "no gateway instance 'line-a' in this ledger; `gateway status` "
                                               "lists them (--instance NAME)\n")
