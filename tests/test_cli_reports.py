"""`gateway stock count`, `gateway report accuracy` and `gateway report errors` as a user runs them."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest
from sqlalchemy import insert

from gateway.ledger import schema as t
from gateway.ledger.schema import open_engine
from tests.support import ledger_with_masterdata, masterdata_fixture, post_units

ROOT = Path(__file__).resolve().parents[1]


def gateway(*args: str) -> subprocess.CompletedProcess:
    """The command at 120 columns (tables follow COLUMNS; at 80 the names in these wide reports wrap)."""
    return subprocess.run([sys.executable, "-m", "gateway.cli", *args], check=False, cwd=ROOT,
                          capture_output=True, text=True, timeout=120, env={**os.environ, "COLUMNS": "120"})


@pytest.fixture
def db(tmp_path) -> str:
    """A SQLite ledger with one confirmation of 8 valves: 6 seals and 8 clips on the error queue.

    (A valve takes 2 seals, 0.5 g grease and 1 clip; 10 seals and no clips are in stock.)
    """
    url = f"sqlite:///{tmp_path / 'ledger.sqlite'}"
    engine = ledger_with_masterdata(url, masterdata_fixture("valve_errors_wait_for_reprocess"), tmp_path)
    post_units(engine, 0, 8, order="5000001", at=datetime.now(UTC))
    engine.dispose()
    return url


def rows(result: subprocess.CompletedProcess, first: str) -> list[list[str]]:
    """The cells of the table rows that start with ``first``, table after table (cells are │ apart)."""
    return [[c.strip() for c in line.strip().strip("│").split("│")]
            for line in result.stdout.splitlines() if line.strip().strip("│").strip().startswith(first)]


def test_count_then_accuracy_report(db):
    counted = gateway("stock", "count", "SEAL", "4", "--location", "LS1", "--db", db)
    assert counted.returncode == 0, counted.stderr
    assert counted.stdout.strip() == "counted 4 PC SEAL at LS1: book was 0; posted 701 (gain) 4 PC"
    again = gateway("stock", "count", "SEAL", "4", "-l", "LS1", "--db", db)
    assert again.stdout.strip() == "counted 4 PC SEAL at LS1: book was 4; no difference, nothing posted"

    report = gateway("report", "accuracy", "--db", db)
    assert report.returncode == 0, report.stderr
    assert "Inventory accuracy: last count vs book" in report.stdout
    [accuracy, since] = rows(report, "SEAL")
    assert accuracy[:2] == ["SEAL", "LS1"] and accuracy[3:] == ["4", "4", "0", "PC", "100.00 %", "0.00 EUR",
                                                                        "0.00 EUR"]
    assert since[:2] == ["SEAL", "LS1"] and since[2] == accuracy[2], "the window starts at the first count"
    assert since[3:] == ["0", "0", "0.00 EUR", "0", "0", "0", ""], "the error came before the previous count"


def test_accuracy_report_shows_what_happened_since_the_count_before(db):
    add_anomaly(db, "M1")  # M1 confirmed the order that takes seals from LS1
    add_anomaly(db, "M7")  # M7 did not
    gateway("stock", "count", "SEAL", "3", "-l", "LS1", "--db", db)
    report = gateway("report", "accuracy", "--db", db)
    [accuracy, since] = rows(report, "SEAL")
    assert accuracy[3:] == ["0", "3", "+3", "PC", "0.00 %", "0.00 EUR", "0.00 EUR"]  # no standard price
    assert since[2:] == ["start", "1", "6", "0.00 EUR", "0", "0", "1", "M1"]


def add_anomaly(db: str, machine: str) -> None:
    now = datetime.now(UTC)
    engine = open_engine(db)
    with engine.begin() as conn:
        conn.execute(insert(t.anomalies), [{"machine": machine, "counter": "good", "kind": "reset", "detail": "test",
                                            "units_held": Decimal(0), "source_time": now, "status": "recorded",
                                            "created_at": now}])
    engine.dispose()


def test_errors_report(db):
    result = gateway("report", "errors", "--db", db)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "Open backflush errors by age (2 open)" in out
    assert rows(result, "< 1 h") == [["< 1 h", "2"]] and rows(result, "> 7 d") == [["> 7 d", "0"]]
    assert [r[:4] for r in rows(result, "SEAL") + rows(result, "CLIP")] == [["SEAL", "1", "6", "PC"],
                                                                           ["CLIP", "1", "8", "PC"]]
    assert "error rate, overall: 2000.0 per 1 000 confirmations (2 error item(s) / 1 confirmation(s))" in out
    assert "error rate, last 24 h: 2000.0 per 1 000 confirmations" in out


@pytest.mark.parametrize(("args", "message"), [
    (("NOPE", "1", "-l", "LS1"), "unknown material 'NOPE'; load it with `gateway masterdata load`"),
    (("SEAL", "1.5", "-l", "LS1"), "SEAL is counted in 0 decimal(s) of PC; got 1.5"),
    (("SEAL", "1", "-l", "LS1", "--lot", "L1"), "SEAL is not lot-tracked: leave out --lot"),
    (("SEAL", "abc", "-l", "LS1"), "bad quantity 'abc': write a number like 4940 or 12.5"),
    (("SEAL", "1", "-l", "LS-1"), "unknown location 'LS-1'; did you mean LS1?"),
])
def test_refused_counts_are_one_line_and_exit_1(db, args, message):
    result = gateway("stock", "count", *args, "--db", db)
    assert (result.returncode, result.stderr, result.stdout) == (1, message + "\n", "")


def test_reports_on_a_missing_or_empty_ledger(tmp_path):
    missing = f"sqlite:///{tmp_path / 'nothing.sqlite'}"
    for report in ("accuracy", "errors"):
        result = gateway("report", report, "--db", missing)
        assert (result.returncode, result.stderr) == (1, f"no ledger at {tmp_path / 'nothing.sqlite'} (give it with --db)\n")
    assert not (tmp_path / "nothing.sqlite").exists(), "a report must not create a ledger"

    empty = f"sqlite:///{tmp_path / 'empty.sqlite'}"
    open_engine(empty).dispose()
    result = gateway("report", "accuracy", "--db", empty)
    assert result.returncode == 0 and result.stdout.startswith("no stock counts yet")
    errors = gateway("report", "errors", "--db", empty)
    assert errors.returncode == 0 and "n/a (no confirmations)" in errors.stdout

    (tmp_path / "junk.sqlite").write_text("not a database\n" * 100)
    junk = f"sqlite:///{tmp_path / 'junk.sqlite'}"
    for args in (("report", "errors"), ("stock", "count", "SEAL", "1", "-l", "LS1")):
        result = gateway(*args, "--db", junk)
        assert (result.returncode, result.stderr) == (1, f"cannot use the ledger at {junk}: file is not a database\n")
