"""The fault suite's line: simulator and gateway processes, proxies between them, reconciliation.

``FaultLine`` starts the OPC UA simulator (PRESS-01 with a 32-bit counter and 4 units per
cycle, ASSY-03 with a 16-bit counter) and the Modbus simulator (LATHE-04), each behind a
``TcpProxy``; optionally the PostgreSQL ledger behind one too. The gateway runs as
``python -m gateway.cli run`` and is killed, stopped and restarted for real.

``reconcile`` compares the ledger with the simulators' ground truth and asserts what
every scenario must prove; its figures go to ``FAULTS_RESULTS`` (a JSON-lines file) when
that variable is set, for ``tests/faults/report.py``. Nothing here may change the code
under test, hide a difference (a scenario fails with the figures), or listen beyond
loopback.
"""

from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
import sys
import time
import warnings
from collections import defaultdict
from dataclasses import asdict, dataclass
from decimal import Decimal
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.engine import make_url

from gateway.domain.confirming import parse_positions
from gateway.ledger import schema
from gateway.ledger.reports import summary
from gateway.ledger.schema import open_engine
from tests.faults.proxy import TcpProxy
from tests.integration.lines import MASTERDATA, ROOT, Simulators, line_mapping, spawn, wait_for
from tests.support import free_port

MACHINES = ("PRESS-01", "ASSY-03", "LATHE-04")


@dataclass
class Figures:
    """One scenario run on one database, per machine summed: the report's row."""

    scenario: str
    database: str
    produced: int
    confirmed: int
    held: int
    unobservable: int
    lost: int
    duplicated: int
    faults: int
    seconds: float


class FaultLine:
    """Simulators + proxies + gateway process + ledger for one scenario run."""

    def __init__(self, ledger_url: str, folder: Path, *, scenario: str, db_proxy: bool = False,
                 press_plausibility: int | None = None, assy_initial: int = 0, press_initial: int = 0,
                 assy_every: int = 15, assy_seconds: float = 1, rates: tuple[float, float, float] = (25, 30, 20)):
        self.url, self.folder, self.scenario = ledger_url, folder, scenario
        self.database = make_url(ledger_url).get_backend_name()
        self.log = folder / "processes.log"
        self.opc_port, self.modbus_port, self.control_port = free_port(), free_port(), free_port()
        self.opc_proxy = TcpProxy(self.opc_port).start()
        self.modbus_proxy = TcpProxy(self.modbus_port).start()
        self.db_proxy = None
        gateway_url = ledger_url
        if db_proxy:
            target = make_url(ledger_url)
            self.db_proxy = TcpProxy(target.port or 5432, target_host=target.host or "127.0.0.1").start()
            gateway_url = target.set(port=self.db_proxy.port).render_as_string(hide_password=False)
        plausibility = ("" if press_plausibility is None else
                        f"\n    plausibility: {{max_units_per_reading: {press_plausibility}}}")
        self.mapping = folder / "mapping.yaml"
        self.mapping.write_text(line_mapping(
            self.opc_proxy.port, self.modbus_proxy.port, assy_type="uint16", plausibility=plausibility,
            assy_every=assy_every, assy_seconds=assy_seconds))
        self.opc_args = ["-m", "simulators.opcua_plc", "--port", str(self.opc_port),
                         "--machine", (f"PRESS-01,rate={rates[0]},upc=4,scrap=0.05,order=1000123,seed=7,"
                                       f"initial={press_initial}"),
                         "--machine", (f"ASSY-03,rate={rates[1]},scrap=0.1,order=1000124,seed=8,width=16,"
                                       f"initial={assy_initial}")]
        self.modbus_args = ["-m", "simulators.modbus_plc", "--port", str(self.modbus_port),
                            "--control-port", str(self.control_port),
                            "--machine", f"LATHE-04,rate={rates[2]},scrap=0.05,order=1000125,seed=9"]
        self.gateway_args = ["-m", "gateway.cli", "run", "--mapping", str(self.mapping), "--db", gateway_url,
                             "--log-json"]
        self.sims = Simulators(f"opc.tcp://127.0.0.1:{self.opc_port}", self.control_port)
        self.opc_sim = self.modbus_sim = self.gateway = None
        self.faults = 0
        self.began = time.monotonic()
        # Units made by a simulator process that was replaced (PLC restart): truth of the old one.
        self.retired: dict[str, dict] = {}

    # -- lifecycle ------------------------------------------------------------------------

    def start(self) -> FaultLine:
        """Simulators paused, master data loaded, gateway baseline taken; ``start`` is the truth then."""
        self.opc_sim = spawn(self.opc_args, self.log)
        self.modbus_sim = spawn(self.modbus_args, self.log)
        wait_for(self.sims.truth, 30, "the simulators")
        self.sims.command("pause")
        load = subprocess.run([sys.executable, "-m", "gateway.cli", "masterdata", "load", MASTERDATA, "--db", self.url],
                              cwd=ROOT, capture_output=True, text=True, timeout=60, check=False)
        assert load.returncode == 0, load.stderr
        self.engine = open_engine(self.url, create=False)
        self.start_gateway()
        self.wait_caught_up(60, "the gateway's baseline")
        self.start = self.sims.truth()
        return self

    def close(self) -> None:
        for proc in (self.gateway, self.opc_sim, self.modbus_sim):
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait(10)
        for proxy in (self.opc_proxy, self.modbus_proxy, self.db_proxy):
            if proxy is not None:
                proxy.stop()

    def __enter__(self) -> FaultLine:
        try:
            return self.start()
        except BaseException:
            self.close()
            raise

    def __exit__(self, *exc) -> None:
        self.close()

    def start_gateway(self) -> None:
        self.gateway = spawn(self.gateway_args, self.log)

    def kill_gateway(self) -> None:
        self.gateway.send_signal(signal.SIGKILL)
        self.gateway.wait(10)
        self.faults += 1

    def stop_gateway(self, timeout: float = 60) -> tuple[int, float]:
        """SIGTERM; (exit code, seconds it took). A gateway that hangs fails with its stacks."""
        began = time.monotonic()
        self.gateway.send_signal(signal.SIGTERM)
        try:
            code = self.gateway.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"the gateway did not stop within {timeout} s of SIGTERM; where it hung:\n"
                                 + self._dump_stacks()) from None
        return code, time.monotonic() - began

    def warn_if_stop_was_forced(self) -> None:
        """A stop that needed the bounds (a task or thread that ignored it) passes, visibly."""
        text = self.log_text()
        for event in ("task_did_not_stop", "exit_forced"):
            at = text.find(f'"event": "{event}"')
            if at >= 0:
                warnings.warn(f"gateway stop needed its bound ({event}); see {self.log}:\n"
                              + text[max(0, at - 2_000):at + 6_000], stacklevel=2)

    def _dump_stacks(self) -> str:
        """SIGUSR1 makes the gateway print its thread and task stacks into the log; return them."""
        mark = self.log.stat().st_size
        self.gateway.send_signal(signal.SIGUSR1)
        time.sleep(3)
        self.gateway.kill()
        self.gateway.wait(10)
        with self.log.open("rb") as f:
            f.seek(mark)
            return f.read().decode(errors="replace")[-20_000:]

    def restart_opcua_plc(self, *, paused: bool = False) -> None:
        """Kill the OPC UA simulator process and start a new one: its counters start at 0 again.

        ``paused``: the new PLC comes back in stop (machines paused until ``resume``).
        """
        before = self.sims.command("pause")
        self.opc_sim.send_signal(signal.SIGKILL)
        self.opc_sim.wait(10)
        for machine in ("PRESS-01", "ASSY-03"):
            old = self.retired.get(machine)
            t_ = before[machine]
            self.retired[machine] = t_ if old is None else {
                k: old[k] + t_[k] for k in ("good_units", "scrap_units")} | {
                k: t_[k] for k in ("good_count", "scrap_count")}
        args = [f"{a},paused=1" if paused and a.startswith(("PRESS-01,", "ASSY-03,")) else a for a in self.opc_args]
        self.opc_sim = spawn(args, self.log)
        wait_for(self.sims.truth, 30, "the restarted OPC UA simulator")
        self.faults += 1

    # -- observing ------------------------------------------------------------------------

    def counters_in_ledger(self) -> dict:
        with self.engine.connect() as conn:
            return {(r.machine, r.counter): r.raw for r in conn.execute(select(schema.counter_states))}

    def caught_up(self) -> bool:
        truth = self.sims.truth()
        want = {(m, c): truth[m][f"{c}_count"] for m in MACHINES for c in ("good", "scrap")}
        return self.counters_in_ledger() == want

    def wait_caught_up(self, timeout: float = 60, what: str = "the gateway to catch up") -> None:
        wait_for(self.caught_up, timeout, what)

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")

    def made(self, end: dict) -> dict[str, int]:
        """Units each machine made since the baseline, across simulator restarts."""
        out = {}
        for m in MACHINES:
            units = end[m]["good_units"] + end[m]["scrap_units"] - self.start[m]["good_units"] - self.start[m]["scrap_units"]
            if m in self.retired:  # the new process counted from 0; the old one's since the baseline
                r = self.retired[m]
                units = (r["good_units"] + r["scrap_units"] - self.start[m]["good_units"] - self.start[m]["scrap_units"]
                         + end[m]["good_units"] + end[m]["scrap_units"])
            out[m] = units
        return out

    # -- the proof ------------------------------------------------------------------------

    def finish(self, *, unobservable: dict[str, int] | None = None, min_units: int = 50,
               graceful: bool = True) -> Figures:
        """Pause, let the gateway catch up, stop it with SIGTERM and reconcile."""
        self.sims.command("pause")
        self.wait_caught_up()
        if graceful:
            code, _ = self.stop_gateway()
            assert code == 0, f"the gateway exited with {code}; see {self.log}"
            self.warn_if_stop_was_forced()
        return reconcile(self, self.sims.truth(), unobservable or {}, min_units=min_units)


def reconcile(line: FaultLine, end: dict, unobservable: dict[str, int], *, min_units: int) -> Figures:
    """units confirmed + units held = ground truth − unobservable; no duplicates; stock invariant."""
    made = line.made(end)
    s = summary(line.engine)
    confirmed = held = 0
    problems = []
    for m in MACHINES:
        totals = s.machines.get(m)
        assert totals is not None, f"{m}: nothing in the ledger"
        assert made[m] >= min_units, f"{m} made {made[m]} units, too few to prove anything"
        assert totals.pending == 0, f"{m}: {totals.pending} units still pending after a graceful stop"
        got = totals.confirmed_yield + totals.confirmed_scrap + totals.held
        want = Decimal(made[m] - unobservable.get(m, 0))
        if got != want:
            problems.append(f"{m}: confirmed {totals.confirmed_yield + totals.confirmed_scrap} + held "
                            f"{totals.held} = {got}, ground truth {made[m]} − unobservable "
                            f"{unobservable.get(m, 0)} = {want}")
        confirmed += int(totals.confirmed_yield + totals.confirmed_scrap)
        held += int(totals.held)
    duplicated = s.duplicate_confirmation_ids + _overlapping_units(line.engine)
    produced, unobs = sum(made.values()), sum(unobservable.values())
    figures = Figures(line.scenario, line.database, produced, confirmed, held, unobs,
                      produced - unobs - confirmed - held, duplicated, line.faults,
                      round(time.monotonic() - line.began, 1))
    _record(figures)
    assert not problems, "\n".join(problems)
    assert duplicated == 0, f"{duplicated} counter positions confirmed twice"
    assert _stock_invariant(line.engine), "stock ≠ opening + receipts − issues"
    return figures


def _overlapping_units(engine) -> int:
    """Counter positions covered by more than one confirmation (or accepted anomaly)."""
    spans = defaultdict(list)
    with engine.connect() as conn:
        for r in conn.execute(select(schema.confirmations)):
            for (c, a), (_, b) in zip(parse_positions(r.start_pos), parse_positions(r.end_pos), strict=True):
                spans[(r.machine, c)].append(((a.epoch, a.raw), (b.epoch, b.raw)))
    overlap = 0
    for ranges in spans.values():
        ranges.sort()
        for (_, prev_end), (next_start, next_end) in itertools.pairwise(ranges):
            if next_start < prev_end:  # the same epoch: raw positions are comparable
                overlap += (min(prev_end, next_end)[1] - next_start[1]) if prev_end[0] == next_start[0] else 1
    return overlap


def _stock_invariant(engine) -> bool:
    with engine.connect() as conn:
        moved = defaultdict(Decimal)
        for m in conn.execute(select(schema.goods_movements)):
            moved[(m.material, m.location)] += m.qty
        balances = defaultdict(Decimal)
        for r in conn.execute(select(schema.stock)):
            balances[(r.material, r.location)] += r.qty
    return {k: v for k, v in balances.items() if v} == {k: v for k, v in moved.items() if v}


def _record(figures: Figures) -> None:
    path = os.environ.get("FAULTS_RESULTS")
    if path:
        with open(path, "a", encoding="utf-8") as out:
            out.write(json.dumps(asdict(figures)) + "\n")
