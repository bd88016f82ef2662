"""The worked example of docs/backflush.md, run against a real ledger.

Each step's ledger lines are rendered and compared with the block between
``<!-- step:NAME -->`` and ``<!-- /step -->`` in the document, so the document can never
drift from what the gateway posts. ``UPDATE_DOCS=1 pytest …`` rewrites the blocks.
"""

from __future__ import annotations

import os
import re
from datetime import UTC, datetime
from decimal import Decimal as D
from pathlib import Path

from gateway.domain.confirming import accumulate, confirm
from gateway.domain.records import Increment, Position
from gateway.ledger import adjustments
from gateway.ledger.masters import MasterCache, store_masterdata
from gateway.ledger.operations import receive_stock, reprocess_errors, reverse_confirmation
from gateway.ledger.orders import order_view
from gateway.ledger.queries import journal
from gateway.ledger.schema import open_engine
from gateway.ledger.posting import apply
from gateway.ledger.changes import ChangeSet
from gateway.masterdata.load import load_masterdata, to_domain
from gateway.cli.tables import fmt, journal_markdown

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "backflush.md"
ORDER = "2000001"
T = datetime(2026, 4, 1, 6, tzinfo=UTC)


class Example:
    def __init__(self, url: str, order: str = ORDER) -> None:
        self.order = order
        md = load_masterdata(ROOT / "docs" / "worked-example.yaml")
        self.engine = open_engine(url)
        store_masterdata(self.engine, to_domain(md), md.stock)
        self.positions: dict[str, int] = {}
        self.aliases: dict[str, str] = {}
        self.shown: dict[str, int] = {}
        self.errors_shown: list[dict] = []

    def confirm(self, machine: str, operation: str, good: int, scrap: int = 0) -> str:
        start = self.positions.get(machine, 0)
        incs = [Increment(machine, "good", good, Position(0, start), Position(0, start + good), T)]
        if scrap:
            incs.append(Increment(machine, "scrap", scrap, Position(0, 0), Position(0, scrap), T))
        pending = None
        for inc in incs:
            pending = accumulate(pending, inc, order=self.order, operation=operation, now=T)
        self.positions[machine] = start + good
        c = confirm(pending, "every_units", "PC")
        with self.engine.begin() as conn:
            apply(conn, ChangeSet(confirmations=[c]), MasterCache())
        return c.id

    def new_lines(self) -> str:
        """The ledger lines this step added (the error queue: its state, when it changed)."""
        j = journal(self.engine, self.order)
        errors = j.pop("error queue")
        new = {}
        for table, rows in j.items():
            new[table] = rows[self.shown.get(table, 0):]
            self.shown[table] = len(rows)
        if errors != self.errors_shown:
            new["error queue (now)"] = errors
            self.errors_shown = errors
        return journal_markdown(new, short_ids=True, aliases=self.aliases).strip()


def run_example(url: str) -> dict[str, str]:
    ex = Example(url)
    out = {}
    ex.confirm("CAST-1", "0010", good=20, scrap=1)
    out["cast"] = ex.new_lines()
    ex.confirm("CNC-2", "0020", good=20)
    out["machine"] = ex.new_lines()
    receive_stock(ex.engine, "CUTTING-OIL", D(5), "LS-CNC", now=T)
    reprocess_errors(ex.engine, now=T)
    out["reprocess"] = ex.new_lines()
    ex.confirm("ASSY-3", "0030", good=10)
    out["assemble"] = ex.new_lines()
    wrong = ex.confirm("ASSY-3", "0030", good=5)
    reverse_confirmation(ex.engine, wrong, "test parts counted as production", now=T)
    out["reversal"] = ex.new_lines()
    adjustments.substitute(ex.engine, ORDER, "0030", "O-RING-V", D(4), "SUBSTITUTION",
                           "NBR rings failed incoming inspection", now=T)
    out["substitution"] = ex.new_lines()
    view = order_view(ex.engine, ORDER)
    rows = ["| item | material | planned | backflushed | adjusted | variance | uom |", "|---|---|---|---|---|---|---|"]
    for c in view.components + view.extra:
        rows.append(f"| {c.item} | {c.material} | {fmt(c.planned)} | {fmt(c.backflushed)} | {fmt(c.adjusted)} "
                    f"| {fmt(c.variance)} | {c.uom} |")
    out["variance"] = "\n".join(rows)
    return out


STEP = re.compile(r"(<!-- step:(?P<name>[a-z-]+) -->\n)(?P<body>.*?)\n?(<!-- /step -->)", re.S)


def test_the_worked_example_posts_what_the_document_shows(sqlite_url):
    steps = run_example(sqlite_url)
    text = DOC.read_text(encoding="utf-8")
    if os.environ.get("UPDATE_DOCS"):
        DOC.write_text(STEP.sub(lambda m: m.group(1) + steps[m.group("name")] + "\n" + m.group(4), text), encoding="utf-8")
        text = DOC.read_text(encoding="utf-8")
    found = {m.group("name"): m.group("body") for m in STEP.finditer(text)}
    assert set(found) == set(steps), "every step has its block in the document"
    for name, body in steps.items():
        assert found[name] == body, f"docs/backflush.md step {name!r} differs from what the gateway posts"


def test_the_worked_example_numbers(sqlite_url):
    """The figures the document's prose quotes, checked by hand."""
    steps = run_example(sqlite_url)
    assert "| C1 | 261 | 0010 | ALU-INGOT | LS-CAST | A1 | -30 | KG |" in steps["cast"]  # lot split: 54.6 kg
    assert "| C1 | 261 | 0010 | ALU-INGOT | LS-CAST | A2 | -24.6 | KG |" in steps["cast"]
    assert "| C2 | 261 | 0020 | CUTTING-OIL | LS-CNC |  | -0.4 | L |" in steps["machine"]
    assert "| 1 | C2 | CUTTING-OIL | LS-CNC | 0.6 | L | open | 0 |" in steps["machine"]
    assert "| C2 | 261 | 0020 | CUTTING-OIL | LS-CNC |  | -0.6 | L |" in steps["reprocess"]
    assert "| C3 | 101 |  | PUMP-HOUSING | FG-01 | 2000001 | 10 | PC |" in steps["assemble"]
    assert "| 0030 | O-RING | 20 | 20 | -4 | -4 | PC |" in steps["variance"]
