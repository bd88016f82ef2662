"""The ledger's schema version: another version is refused at once; ``gateway db upgrade`` upgrades."""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, datetime
from decimal import Decimal as D

import pytest
from sqlalchemy import select, text, update

from gateway.ledger import schema
from gateway.ledger.migrate import upgrade
from gateway.ledger.reports import summary
from gateway.ledger.schema import SCHEMA_VERSION, LedgerVersionError, open_engine
from tests.integration.lines import ROOT

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def _ledger_of_version_1(url: str):
    """A ledger as the gateway wrote it before version numbers: no schema_version, no counted_units."""
    engine = open_engine(url)
    with engine.begin() as conn:
        conn.execute(schema.counter_states.insert(), [{"machine": "M1", "counter": "good", "epoch": 0, "raw": 30,
                                                  "source_time": T0, "updated_at": T0}])
        conn.execute(schema.pending_units.insert(), [{
            "machine": "M1", "order_no": "1000123", "operation": "0010", "yield_qty": D(5), "scrap_qty": D(0),
            "start_pos": "good=0:20", "end_pos": "good=0:25", "first_source_time": T0, "last_source_time": T0,
            "opened_at": T0}])
        conn.execute(schema.confirmations.insert(), [{
            "id": "C-1", "machine": "M1", "order_no": "1000123", "operation": "0010", "yield_qty": D(20),
            "scrap_qty": D(0), "uom": "PC", "start_pos": "good=0:0", "end_pos": "good=0:20",
            "first_source_time": T0, "last_source_time": T0, "trigger": "every_units", "posted_at": T0}])
        for later in ("counted_units", "machine_leases", "gateway_instances", "mapping_reloads",
                      "mapping_versions", "audit_log", "outbox", "outbox_routes",  # versions 2-7
                      "production_versions", "cost_collectors"):  # version 11
            conn.execute(text(f"DROP TABLE {later}"))
        for column in ("job_reset_pending", "job_change_unseen"):  # version 8
            conn.execute(text(f"ALTER TABLE machine_states DROP COLUMN {column}"))
        for table, column in (("materials", "tracking"), ("materials", "serial_pattern"),
                              ("confirmations", "serials"), ("pending_units", "serials"),
                              ("order_components", "selection"),  # version 9
                              ("materials", "standard_price"), ("materials", "currency"),
                              ("materials", "auto_reprocess"), ("order_components", "basis"),
                              ("order_components", "basis_source"), ("goods_movements", "value"),
                              ("error_queue", "resolved_by"), ("anomalies", "order_no")):  # version 10
            conn.execute(text(f"ALTER TABLE {table} DROP COLUMN {column}"))
        conn.execute(text("DROP TABLE schema_version"))
        conn.execute(text("DROP TABLE alembic_version"))
    engine.dispose()


def test_a_fresh_ledger_is_stamped_with_the_current_version(ledger_url):
    engine = open_engine(ledger_url)
    with engine.connect() as conn:
        assert conn.execute(select(schema.schema_version.c.version)).scalar() == SCHEMA_VERSION
        assert conn.execute(text("SELECT version_num FROM alembic_version")).scalar() == f"{SCHEMA_VERSION:04d}"
    open_engine(ledger_url)  # and opens again


def test_an_older_ledger_is_refused_naming_both_versions_and_the_command_then_upgraded(ledger_url):
    _ledger_of_version_1(ledger_url)
    with pytest.raises(LedgerVersionError) as refused:
        open_engine(ledger_url)
    message = str(refused.value)
    assert "schema version 1" in message and f"needs version {SCHEMA_VERSION}" in message
    assert "gateway db upgrade --db" in message

    assert upgrade(ledger_url) == (1, SCHEMA_VERSION)
    engine = open_engine(ledger_url)  # opens now
    m1 = summary(engine).machines["M1"]
    assert m1.counted == 25 and m1.balanced  # counted starts from what the old ledger accounted for
    assert upgrade(ledger_url) == (SCHEMA_VERSION, SCHEMA_VERSION)  # again: nothing to do
    # The migrations build the same tables as a fresh ledger.
    from sqlalchemy import inspect

    found = inspect(engine)
    tables = set(found.get_table_names()) - {"alembic_version"}
    assert tables == set(schema.metadata.tables)
    for name in tables:
        assert {c["name"] for c in found.get_columns(name)} == set(schema.metadata.tables[name].columns.keys()), name


def test_a_newer_ledger_is_refused(ledger_url):
    engine = open_engine(ledger_url)
    with engine.begin() as conn:
        conn.execute(update(schema.schema_version).values(version=SCHEMA_VERSION + 1))
    with pytest.raises(LedgerVersionError) as refused:
        open_engine(ledger_url)
    message = str(refused.value)
    assert f"schema version {SCHEMA_VERSION + 1}" in message and f"needs version {SCHEMA_VERSION}" in message
    assert "newer gateway" in message and "gateway db upgrade" in message
    with pytest.raises(ValueError, match="newer than this gateway"):
        upgrade(ledger_url)


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "gateway.cli", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=60)


def test_the_cli_says_it_in_one_line_and_exits_1_and_run_does_not_wait(sqlite_url):
    _ledger_of_version_1(sqlite_url)
    report = _cli("report", "--db", sqlite_url)
    assert report.returncode == 1
    [line] = report.stderr.strip().splitlines()
    assert "schema version 1" in line and f"version {SCHEMA_VERSION}" in line and "gateway db upgrade" in line
    run = _cli("run", "--mapping", str(ROOT / "mappings" / "demo-plant.yaml"), "--db", sqlite_url, "--log-json")
    assert run.returncode == 1 and "ledger_version_mismatch" in run.stderr
    assert run.stderr.strip().splitlines()[-1].startswith("error: the ledger at")
    done = _cli("db", "upgrade", "--db", sqlite_url)
    assert done.returncode == 0 and f"schema version 1 → {SCHEMA_VERSION}" in done.stdout
    assert _cli("report", "--db", sqlite_url).returncode == 0
