"""`gateway report audit` after commands a person ran: who (the OS user), where from (the host and the
command line), what master-data file (its SHA-256) and what it changed."""

from __future__ import annotations

import getpass
import hashlib
import json
import socket

from tests.integration.lines import MASTERDATA, ROOT
from tests.test_cli_reports import gateway


def test_commands_are_audited_with_user_host_and_command_line_and_reported(tmp_path):
    db = f"sqlite:///{tmp_path / 'ledger.sqlite'}"
    masterdata = ROOT / MASTERDATA
    assert gateway("masterdata", "load", str(masterdata), "--db", db).returncode == 0
    assert gateway("masterdata", "load", str(masterdata), "--db", db).returncode == 0  # again: nothing changes
    received = gateway("stock", "receive", "CARTON", "25", "-l", "LS-ASSY", "--db", db)
    assert received.returncode == 0 and received.stderr == ""
    completed = gateway("orders", "complete", "1000124", "--db", db, "--format", "json")
    assert completed.returncode == 0 and json.loads(completed.stdout)["status"] == "completed"  # stdout stays JSON

    report = gateway("report", "audit", "--db", db, "--format", "json")
    assert report.returncode == 0, report.stderr
    first, again, receipt, completion = json.loads(report.stdout)
    me, here = getpass.getuser(), socket.gethostname()
    assert {(e["actor"], e["actor_kind"], e["host"]) for e in (first, again, receipt, completion)} == {
        (me, "cli", here)}
    assert receipt["via"] == f"gateway stock receive CARTON 25 -l LS-ASSY --db {db}"
    assert receipt["action"] == "stock.receive" and receipt["postings"][0].startswith("movement:")
    assert receipt["detail"]["asked"] == {"material": "CARTON", "qty": "25", "location": "LS-ASSY", "lot": "",
                                          "expires_on": None}  # what was asked, beside what it found
    assert completion["postings"] == ["O-1000124"] and completion["order"] == "1000124"
    sha256 = hashlib.sha256(masterdata.read_bytes()).hexdigest()
    assert first["action"] == "masterdata.load" and first["subject"] == masterdata.name
    assert first["detail"]["sha256"] == again["detail"]["sha256"] == sha256
    assert first["detail"]["changed"]["materials_new"] == first["detail"]["changed"]["materials"] > 0
    assert first["detail"]["changed"]["orders_new"] > 0 and first["detail"]["changed"]["stock_posted"] > 0
    assert {k: v for k, v in again["detail"]["changed"].items() if k.endswith(("_new", "_updated", "_posted"))} == {
        "materials_new": 0, "materials_updated": 0, "work_centers_new": 0, "work_centers_updated": 0,
        "orders_new": 0, "orders_updated": 0, "stock_posted": 0}

    of_order = gateway("report", "audit", "--order", "1000124", "--db", db, "--format", "csv")
    assert of_order.stdout.splitlines()[0] == ("id,at,actor,actor_kind,host,via,action,reason,order,subject,postings,"
                                               "detail")
    assert [r.split(",")[6] for r in of_order.stdout.splitlines()[1:]] == ["orders.complete"]
    table = gateway("report", "audit", "--last", "1", "--db", db)
    assert "Audit trail (1 action(s))" in table.stdout and "orders.complete" in table.stdout
    nobody = gateway("report", "audit", "--actor", "nobody", "--db", db)
    assert nobody.stdout == "no manual actions recorded that match\n"
    bad = gateway("report", "audit", "--since", "yesterday", "--db", db)
    assert (bad.returncode, bad.stderr) == (1, "bad --since 'yesterday': write it as YYYY-MM-DD or YYYY-MM-DDTHH:MM, "
                                               "e.g. 2026-03-31T14:00 (UTC unless it gives an offset)\n")
