"""Data-driven Modbus read plans: which requests a mapping's Modbus sources send per poll.

One folder per behaviour under ``modbus_plans/``: ``mapping.yaml`` (Modbus sources and
their machines; its comments say what the case pins) and ``expected.reads``, one block
per request in the order a poll sends them::

    press-line unit 1: 03 read holding registers, start 100, count 12
      PRESS-01.good 100..101 uint32
      PRESS-01.scrap 110..111 uint32

The header line is the request on the wire (source, unit id, function code, first
register, register count); the indented lines are the tags it carries (machine.role,
their registers, type, and word/byte order when not big). The plan comes from the
sources the service would run (``build_sources`` on the loaded mapping), so the cases
pin the whole path from the file to the requests. Expected reads are worked out by hand
from the register layout, not copied from the planner. Adding a case is adding a folder.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.mapping.load import load_mapping
from gateway.sources import build_sources
from gateway.sources.modbus.source import ModbusSource

HERE = Path(__file__).parent / "modbus_plans"
CASES = sorted(p for p in HERE.iterdir() if (p / "mapping.yaml").is_file())
# The request each table is read with (Modbus application protocol spec, 6.1-6.4).
FUNCTIONS = {
    "coil": "01 read coils",
    "discrete_input": "02 read discrete inputs",
    "holding": "03 read holding registers",
    "input": "04 read input registers",
}


def planned(mapping_file: Path) -> list[str]:
    """The plan of every Modbus source of the mapping, as ``expected.reads`` writes it."""
    mapping = load_mapping(mapping_file)
    lines: list[str] = []
    for source in build_sources(mapping, lambda _batch: None):
        assert isinstance(source, ModbusSource), "plan cases have Modbus sources only"
        for read in source.plan:
            lines.append(f"{source.name} unit {source.config.unit}: {FUNCTIONS[read.table]}, "
                         f"start {read.start}, count {read.count}")
            lines += [f"  {t.machine}.{t.role} {t.address.removeprefix(t.table + ' ')}" for t in read.tags]
    return lines


@pytest.mark.parametrize("case", CASES, ids=lambda p: p.name)
def test_plan(case: Path) -> None:
    expected = (case / "expected.reads").read_text(encoding="utf-8").splitlines()
    assert planned(case / "mapping.yaml") == expected
