"""Repetitive machines in the service: units go to the cost collector of the period the clock is
in; at a boundary the old collector's pending units are confirmed to it, new ones go to the new
one — exactly once, also when the gateway stops without confirming (as after kill -9) and
restarts on either side of the boundary. The gateway runs for real (writer thread, SQLite
ledger) on an injected clock, fed tag values as a source delivers them."""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC, datetime, timedelta
from decimal import Decimal as D
from zoneinfo import ZoneInfo

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import select

from gateway.domain.repetitive import CollectorKey, period_of
from gateway.ledger import schema
from gateway.ledger.collectors import list_collectors
from gateway.ledger.reports import summary
from gateway.mapping.model import Mapping
from gateway.service import Gateway
from gateway.sources.base import Quality, TagValue
from tests.integration.lines import ROOT
from tests.support import ledger_with_masterdata

MASTERDATA = (ROOT / "docs" / "worked-example-repetitive.yaml").read_text()  # monthly; "day" for the property
BERLIN = ZoneInfo("Europe/Berlin")
MIDNIGHT = datetime(2026, 11, 30, 23, tzinfo=UTC)  # 1 December 00:00 in Berlin


def mapping(confirm: dict) -> Mapping:
    return Mapping.model_validate({
        "sources": {"sim": {"opcua": {"endpoint": "opc.tcp://127.0.0.1:9"}}},  # never connected here
        "machines": {name: {
            "source": "sim", "work_center": "WC-ASSY", "order": "none", "product": "HOUSING-B", "line": "LINE-2",
            "counters": {"good": {"node": f"ns=2;s={name}.Good"}, "scrap": {"node": f"ns=2;s={name}.Scrap"}},
            "confirm": confirm,
        } for name in ("MOLD-05", "MOLD-06")},
    })


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


class Line:
    """Two repetitive machines on LINE-2, a gateway on a clock of the test's, and the truth."""

    def __init__(self, folder, period: str = "month", every_units: int | None = 100, *,
                 confirm: dict | None = None, start: datetime = MIDNIGHT - timedelta(minutes=1)) -> None:
        self.engine = ledger_with_masterdata(f"sqlite:///{folder / 'ledger.sqlite'}",
                                             MASTERDATA.replace("length: month", f"length: {period}"), folder)
        self.mapping = mapping(confirm or {"every_units": every_units, "every_seconds": None})
        self.period = period
        self.clock = Clock(start)
        self.counters = {(m, c): 0 for m in self.mapping.machines for c in ("good", "scrap")}
        self.truth: dict[str, int] = defaultdict(int)  # collector number → units counted in its period
        self.gateway = self._start()

    def _start(self) -> Gateway:
        gateway = Gateway(self.mapping, self.engine, clock=self.clock)
        gateway.open_replay()
        gateway.on_batch([self._value(m, c) for (m, c) in self.counters])  # baselines
        return gateway

    def _value(self, machine: str, counter: str) -> TagValue:
        return TagValue(machine, counter, self.counters[(machine, counter)], self.clock.now, Quality.GOOD,
                        self.clock.now)

    def count(self, machine: str, good: int, scrap: int = 0) -> None:
        values = []
        for counter, units in (("good", good), ("scrap", scrap)):
            if units:
                self.counters[(machine, counter)] += units
                values.append(self._value(machine, counter))
        self.truth[self.collector()] += good + scrap
        self.gateway.on_batch(values)

    def collector(self) -> str:
        return CollectorKey("HOUSING-B", "0001", "LINE-2", period_of(self.clock.now, self.period, BERLIN).key).number

    def crash(self) -> None:
        """Stop as kill -9 would after the last commit: nothing confirmed on the way out; restart."""
        assert self.gateway.writer.stop(30)
        self.gateway = self._start()

    def stop(self) -> None:
        assert self.gateway.close_replay()

    def per_collector(self) -> dict[str, D]:
        out: dict[str, D] = defaultdict(D)
        with self.engine.connect() as conn:
            for r in conn.execute(select(schema.confirmations)):
                out[r.order_no] += r.yield_qty + r.scrap_qty
            for r in conn.execute(select(schema.pending_units)):
                out[r.order_no] += r.yield_qty + r.scrap_qty
        return dict(out)

    def confirmations(self) -> list[tuple[str, str, D, str]]:
        """(machine, collector, units, trigger), by collector, machine and counter range."""
        with self.engine.connect() as conn:
            rows = conn.execute(select(schema.confirmations)).all()
        return [(r.machine, r.order_no, r.yield_qty + r.scrap_qty, r.trigger)
                for r in sorted(rows, key=lambda r: (r.order_no, r.machine, r.end_pos))]


NOV = "HOUSING-B.0001@LINE-2:2026-11"
DEC = "HOUSING-B.0001@LINE-2:2026-12"


def test_at_midnight_the_old_collector_gets_its_pending_units_and_the_new_one_the_rest(tmp_path):
    line = Line(tmp_path)
    line.count("MOLD-05", 100)  # every 100 units: confirmed at once, to November's collector
    line.count("MOLD-05", 25, scrap=5)
    line.count("MOLD-06", 40)
    line.clock.now = MIDNIGHT + timedelta(milliseconds=100)
    line.gateway.tick()  # the period ended: what November's collector has pending is confirmed to it
    line.count("MOLD-05", 60)
    line.stop()  # shutdown confirms December's
    assert line.confirmations() == [
        ("MOLD-05", NOV, D(100), "every_units"),
        ("MOLD-05", NOV, D(30), "period_change"),
        ("MOLD-06", NOV, D(40), "period_change"),
        ("MOLD-05", DEC, D(60), "shutdown"),
    ]
    assert [(r.number, r.status) for r in list_collectors(line.engine)] == [(NOV, "open"), (DEC, "open")]
    assert line.per_collector() == {NOV: D(170), DEC: D(60)}
    report = summary(line.engine)
    assert not report.unbalanced and report.duplicate_confirmation_ids == 0
    with line.engine.connect() as conn:
        orders = {r.machine: r.order_no for r in conn.execute(select(schema.machine_states))}
    assert orders == {"MOLD-05": DEC, "MOLD-06": DEC}  # committed with the move: a restart resumes there


def test_a_restart_after_the_boundary_confirms_the_old_periods_units_to_the_old_collector(tmp_path):
    line = Line(tmp_path, every_units=None)
    line.count("MOLD-05", 70)
    line.crash()  # its 70 units are pending in the ledger, on November's collector
    line.clock.now = MIDNIGHT + timedelta(hours=3)  # it comes back in December
    line.count("MOLD-05", 20)
    line.stop()
    assert line.confirmations() == [("MOLD-05", NOV, D(70), "period_change"), ("MOLD-05", DEC, D(20), "shutdown")]
    assert line.per_collector() == line.truth == {NOV: 70, DEC: 20}


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(steps=st.lists(st.one_of(
    st.tuples(st.just("count"), st.sampled_from(["MOLD-05", "MOLD-06"]), st.integers(0, 60), st.integers(0, 5)),
    st.tuples(st.just("wait"), st.integers(1, 4 * 3600)),  # seconds
    st.tuples(st.just("tick")),
    st.tuples(st.just("crash")),
), min_size=1, max_size=40), every_units=st.sampled_from([None, 25, 100]))
def test_units_land_in_their_periods_collector_exactly_once(tmp_path_factory, steps, every_units):
    """Days in Berlin, 2 machines, random counts, waits across midnights, ticks and crashes: every
    unit counted is in exactly one confirmation or pending, on the collector of the day it was
    counted in; no confirmation twice."""
    line = Line(tmp_path_factory.mktemp("line"), period="day", every_units=every_units)
    for step in steps:
        if step[0] == "count":
            line.count(step[1], step[2], step[3])
        elif step[0] == "wait":
            line.clock.now += timedelta(seconds=step[1])
        elif step[0] == "tick":
            line.gateway.tick()
        else:
            line.crash()
    line.stop()
    truth = {number: D(units) for number, units in line.truth.items() if units}
    assert {k: v for k, v in line.per_collector().items() if v} == truth
    report = summary(line.engine)
    assert not report.unbalanced and report.duplicate_confirmation_ids == 0
    with line.engine.connect() as conn:
        assert conn.execute(select(schema.pending_units)).first() is None  # the last shutdown confirmed everything
        ids = [r.id for r in conn.execute(select(schema.confirmations))]
    assert len(ids) == len(set(ids))
    line.engine.dispose()
