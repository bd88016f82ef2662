"""The repetitive worked example of docs/backflush.md, run through the real gateway and ledger.

MOLD-05 makes housings on LINE-2 without orders; the gateway runs on a clock of the test's
across midnight of 30 November in Berlin. Each step's ledger lines are compared with the
block between ``<!-- rem-step:NAME -->`` and ``<!-- /rem-step -->``; ``UPDATE_DOCS=1 pytest …``
rewrites the blocks.
"""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal as D

from gateway.app.collectors import close_period, list_collectors
from gateway.app.models import ClosePeriod
from gateway.domain.valuation import money
from gateway.ledger import adjustments
from gateway.ledger.audit import Actor
from gateway.ledger.reports import journal
from gateway.cli.tables import fmt, journal_markdown
from tests.ledger.test_worked_example import assert_document_shows
from tests.test_repetitive_service import DEC, MIDNIGHT, NOV, Line

SHIFT_LEAD = Actor("shift-lead", "cli", "line-2-terminal", "gateway period close 2026-11")


class Shown:
    """The journal lines of both collectors not shown yet, with one set of short document names."""

    def __init__(self, engine) -> None:
        self.engine, self.aliases, self.shown = engine, {}, {}

    def new_lines(self, line: Line, *collectors: str) -> str:
        if line.gateway.writer.alive:  # what the gateway handed its writer is committed
            line.gateway.writer.barrier().result(30)
        blocks = []
        for number in collectors:
            j = journal(self.engine, number)
            j.pop("error queue")
            new = {}
            for table, rows in j.items():
                new[table] = rows[self.shown.get((number, table), 0):]
                self.shown[(number, table)] = len(rows)
            text = journal_markdown(new, short_ids=True, aliases=self.aliases).strip()
            if text:
                blocks.append(f"*{number}*\n\n{text}")
        return "\n\n".join(blocks)


def balance_table(rows) -> str:
    out = ["| collector | status | yield | received | components | activities | actual | target | variance |",
           "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        out.append(f"| {r.number} | {r.status} | {fmt(r.yield_qty)} | {fmt(r.received)} | {money(r.materials)} "
                   f"| {money(r.activities)} | {money(r.actual)} | {money(r.target)} | {money(r.variance)} |")
    return "\n".join(out)


def run_repetitive_example(folder) -> dict[str, str]:
    line = Line(folder, confirm={"every_units": 250, "every_seconds": 600, "jitter_seconds": 0},
                start=MIDNIGHT - timedelta(minutes=10))  # 23:50 in Berlin
    shown = Shown(line.engine)
    out = {}
    line.count("MOLD-05", 250)  # 250 pending: the count rule fires
    line.clock.now = MIDNIGHT - timedelta(minutes=1)
    line.count("MOLD-05", 48, scrap=2)
    out["november"] = shown.new_lines(line, NOV)
    line.clock.now = MIDNIGHT + timedelta(milliseconds=250)
    line.gateway.tick()  # the confirm timer's next tick, in December
    out["midnight"] = shown.new_lines(line, NOV)
    line.clock.now = MIDNIGHT + timedelta(minutes=5)
    line.count("MOLD-05", 120)
    line.clock.now = MIDNIGHT + timedelta(minutes=15, seconds=1)
    line.gateway.tick()  # 600 s after the first of them
    out["december"] = shown.new_lines(line, DEC)
    line.stop()
    adjustments.consumption(line.engine, NOV, "0010", D("1.5"), "PURGE", "purged after a colour change",
                            now=MIDNIGHT - timedelta(minutes=30))
    out["purge"] = shown.new_lines(line, NOV)
    closed = close_period(line.engine, ClosePeriod(period="2026-11", reason="month-end close"), actor=SHIFT_LEAD,
                          now=MIDNIGHT + timedelta(hours=6))
    out["close"] = shown.new_lines(line, NOV) + "\n\n" + balance_table(closed.collectors + list_collectors(
        line.engine, status="open"))
    line.engine.dispose()
    return out


def test_the_repetitive_example_posts_what_the_document_shows(tmp_path):
    assert_document_shows("rem-step", run_repetitive_example(tmp_path))


def test_the_repetitive_example_numbers(tmp_path):
    """The figures the document's prose quotes, checked by hand."""
    steps = run_repetitive_example(tmp_path)
    assert "| C1 | MOLD-05 | 0010 | 250 | 0 | PC | every_units |" in steps["november"]
    assert "| C2 | MOLD-05 | 0010 | 48 | 2 | PC | period_change |" in steps["midnight"]
    assert "| C3 | MOLD-05 | 0010 | 120 | 0 | PC | every_seconds |" in steps["december"]
    # 250 + 48 good: 5.96 cartons accrued, rounded once with the carry: 6 issued at close
    assert "| O1 | 261 | 0030 | CARTON | LS-ASSY |  | -6 | PC |" in steps["close"]
    # components 16.5 kg × 3.20 + 600 × 0.04 + 6 × 0.60 = 80.40; activities 267.55 + 46.58 = 314.13;
    # target 298 × 1.20 = 357.60; variance 394.53 − 357.60
    assert f"| {NOV} | closed | 298 | 298 | 80.40 | 314.13 | 394.53 | 357.60 | 36.93 |" in steps["close"]
