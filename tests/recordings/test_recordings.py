"""Data-driven dry-run cases: one folder per behaviour a recording pins, run by ``gateway dry-run``.

Each folder (named after what it pins, e.g. ``counter_rollover_uint16``) holds:

* ``mapping.yaml`` — the mapping under test; it names its master data with ``masterdata:``
  (relative to the folder, usually ``../../../mappings/demo-masterdata.yaml``);
* ``recording.jsonl`` — a recording as ``gateway record`` writes it (see
  ``gateway.commissioning.recording``): an optional header line, then one JSON object per tag
  value with ``at``, ``batch``, ``source``, ``machine``, ``role``, ``address``, ``value``,
  ``source_time``, ``quality`` and, for Modbus, ``table``, ``register`` and ``registers``
  (the raw words, decoded by the mapping under test). Values are matched to the mapping's
  tags by source name and address, so a hand-written recording names the mapping's sources;
* ``against.yaml`` — optional: a second mapping, run as ``--against``;
* ``expected.json`` — what the dry-run must say: ``exit_code``, per machine ``counted``,
  ``yield``, ``scrap``, ``pending``, ``held``, each confirmation as
  ``[order/operation, yield, scrap, trigger]`` and each anomaly as
  ``[kind, counter, units held, detail]``, plus ``not_recorded`` and ``undecodable``; with
  ``against.yaml`` the same under ``against``, and ``differences``: per machine the lines
  that differ as ``[line, under mapping.yaml, under against.yaml]``.

Quantities are decimal strings. The case runs inside its folder, through the CLI with
``--format json``. Adding a case is adding a folder; ``GATEWAY_REGENERATE=1`` rewrites every
``expected.json`` from what the dry-run says now (read the diff before committing it).
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from gateway.cli import app

HERE = Path(__file__).parent
CASES = sorted(p for p in HERE.iterdir() if (p / "mapping.yaml").is_file() and (p / "recording.jsonl").is_file())


def pinned(run: dict) -> dict:
    """The part of one dry-run's JSON a case pins."""
    return {
        "machines": {
            name: {
                "counted": m["counted"], "yield": m["confirmed_yield"], "scrap": m["confirmed_scrap"],
                "pending": m["pending"], "held": m["held"],
                "confirmations": [[f"{c['order']}/{c['operation']}", c["yield_qty"], c["scrap_qty"], c["trigger"]]
                                  for c in m["confirmations"]],
                "anomalies": [[a["kind"], a["counter"], a["units_held"], a["detail"]] for a in m["anomalies"]],
            }
            for name, m in run["machines"].items()
        },
        "not_recorded": run["not_recorded"],
        "undecodable": run["undecodable"],
    }


def outcome(case: Path, monkeypatch: pytest.MonkeyPatch) -> dict:
    monkeypatch.chdir(case)
    args = ["dry-run", "--mapping", "mapping.yaml", "--recording", "recording.jsonl", "--format", "json"]
    if (case / "against.yaml").is_file():
        args += ["--against", "against.yaml"]
    result = CliRunner().invoke(app, args)
    assert result.exception is None or isinstance(result.exception, SystemExit), result.output
    data = json.loads(result.stdout)
    if "against" not in data:
        return {"exit_code": result.exit_code, **pinned(data)}
    return {"exit_code": result.exit_code, **pinned(data["mapping"]), "against": pinned(data["against"]),
            "differences": {m: [[d["line"], d["mapping"], d["against"]] for d in lines]
                            for m, lines in data["differences"].items()}}


def _compact(text: str) -> str:
    """A list of plain values on one line (JSON text has no raw newline inside a string)."""
    return re.sub(r"\[\n\s+([^\[\]{}]*?)\n\s+\]",
                  lambda m: "[" + ", ".join(x.strip() for x in m.group(1).split(",\n")) + "]", text)


@pytest.mark.parametrize("case", CASES, ids=lambda p: p.name)
def test_case(case: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    got = outcome(case, monkeypatch)
    expected_file = case / "expected.json"
    if os.environ.get("GATEWAY_REGENERATE") == "1":
        expected_file.write_text(_compact(json.dumps(got, indent=2, ensure_ascii=False)) + "\n", encoding="utf-8")
    assert got == json.loads(expected_file.read_text(encoding="utf-8"))
