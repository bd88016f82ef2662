"""The serial-tracked worked example of docs/backflush.md, run against a real ledger.

It continues the first worked example (``test_worked_example``): pumps, each with its own
serial, are assembled from the housings of lot 2000001 and serial-tracked motors. Each
step's ledger lines are compared with the block between ``<!-- serial-step:NAME -->`` and
``<!-- /serial-step -->``; ``UPDATE_DOCS=1 pytest …`` rewrites the blocks.
"""

from __future__ import annotations

import os
import re
from decimal import Decimal as D

from gateway.ledger.masters import store_masterdata
from gateway.ledger.operations import receive_stock, trace
from gateway.masterdata.load import load_masterdata, to_domain
from gateway.cli.tables import fmt
from tests.ledger.test_worked_example import DOC, ROOT, T, Example, run_example

ORDER = "3000001"


def trace_text(engine, lot: str, forward: bool = False) -> str:
    """What `gateway trace` prints."""
    lines = []
    for x in trace(engine, lot, direction="forward" if forward else "back"):
        arrow = "" if x.depth == 0 else ("used in " if forward else "made from ")
        qty = f"  {fmt(x.qty)} {x.uom}" if x.depth else ""
        lines.append(f"{'  ' * x.depth}{arrow}{x.material} {'serial' if x.serial else 'lot'} {x.lot}{qty}")
    return "\n".join(lines)


def run_serial_example(url: str) -> dict[str, str]:
    run_example(url)  # lot 2000001: 10 housings at FG-01
    ex = Example(url, order=ORDER)  # the same ledger, seen from the pump order
    md = load_masterdata(ROOT / "docs" / "worked-example-serials.yaml")
    store_masterdata(ex.engine, to_domain(md), md.stock)
    out = {}
    ex.confirm("PUMP-1", "0010", good=2)
    out["pumps"] = ex.new_lines()
    ex.confirm("PUMP-1", "0010", good=1, scrap=1)
    out["short"] = ex.new_lines()
    receive_stock(ex.engine, "MOTOR", D(1), "LS-PUMP", lot="M-1004", now=T)  # issues it to C2 (self-reprocessing)
    out["motor"] = ex.new_lines()
    out["trace"] = ("```text\n$ gateway trace 3000001-003\n" + trace_text(ex.engine, "3000001-003")
                    + "\n$ gateway trace M-1004 --forward\n" + trace_text(ex.engine, "M-1004", forward=True)
                    + "\n```")
    return out


STEP = re.compile(r"(<!-- serial-step:(?P<name>[a-z-]+) -->\n)(?P<body>.*?)\n?(<!-- /serial-step -->)", re.S)


def test_the_serial_example_posts_what_the_document_shows(sqlite_url):
    steps = run_serial_example(sqlite_url)
    text = DOC.read_text(encoding="utf-8")
    if os.environ.get("UPDATE_DOCS"):
        DOC.write_text(STEP.sub(lambda m: m.group(1) + steps[m.group("name")] + "\n" + m.group(4), text),
                       encoding="utf-8")
        text = DOC.read_text(encoding="utf-8")
    found = {m.group("name"): m.group("body") for m in STEP.finditer(text)}
    assert set(found) == set(steps), "every step has its block in the document"
    for name, body in steps.items():
        assert found[name] == body, f"docs/backflush.md serial step {name!r} differs from what the gateway posts"


def test_the_serial_example_numbers(sqlite_url):
    steps = run_serial_example(sqlite_url)
    # FIFO by receipt: M-0998 (20 February) before M-1001 (10 March)
    assert "| C1 | 261 | 0020 | MOTOR | LS-PUMP | M-0998 | -1 | PC |" in steps["pumps"]
    assert "| C1 | 261 | 0020 | MOTOR | LS-PUMP | M-1001 | -1 | PC |" in steps["pumps"]
    assert "| C1 | 101 |  | PUMP | FG-01 | 3000001-002 | 1 | PC |" in steps["pumps"]
    assert "| C2 | 101 |  | PUMP | FG-01 | 3000001-003 | 1 | PC |" in steps["short"]
    assert "made from PUMP-HOUSING lot 2000001  4 PC" in steps["trace"]
