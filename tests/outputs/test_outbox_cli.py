"""``gateway outbox`` on a real ledger: list, park, retry, skip; refusals are one line; each action audited."""

from __future__ import annotations

import subprocess
import sys

from gateway.ledger import audit
from gateway.ledger import outbox
from tests.outputs.test_webhook_delivery import MASTERDATA, confirm
from tests.support import ledger_with_masterdata


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "gateway.cli", *args], capture_output=True, text=True, timeout=60)


def test_outbox_commands(sqlite_url, tmp_path):
    engine = ledger_with_masterdata(sqlite_url, MASTERDATA, tmp_path)
    outbox.set_routes(engine, {"hook": None})
    keys = confirm(engine, 2)
    ids = {r.key: r.id for r in outbox.listed(engine)}
    first = ids[keys[0]]

    listed = cli("outbox", "list", "--db", sqlite_url, "--format", "csv")
    assert listed.returncode == 0 and len(listed.stdout.strip().splitlines()) == 3  # header + 2

    refused = cli("outbox", "park", str(first), "--db", sqlite_url, "--reason", " ")
    assert refused.returncode == 1 and refused.stderr.strip().endswith("give a reason to park a delivery (--reason)")

    parked = cli("outbox", "park", str(first), "--reason", "ERP closed for the audit", "--db", sqlite_url)
    assert parked.stdout.strip() == f"delivery {first} ({keys[0]}): parked"
    again = cli("outbox", "park", str(first), "--reason", "twice", "--db", sqlite_url)
    assert again.returncode == 1
    assert f"delivery {first} ({keys[0]}) is parked; park applies to pending or unknown deliveries" in again.stderr

    retried = cli("outbox", "retry", str(first), "--db", sqlite_url)
    assert retried.stdout.strip() == f"delivery {first} ({keys[0]}): pending"
    skipped = cli("outbox", "skip", str(ids[keys[1]]), "--reason", "posted by hand in the ERP", "--db", sqlite_url)
    assert skipped.stdout.strip() == f"delivery {ids[keys[1]]} ({keys[1]}): skipped"
    missing = cli("outbox", "retry", "999", "--db", sqlite_url)
    assert missing.returncode == 1 and "no delivery 999 in the outbox" in missing.stderr

    trail = [(r.action, r.reason, r.subject) for r in audit.read(engine)]
    assert trail[-3:] == [("outbox.park", "ERP closed for the audit", f"outbox:{first}"),
                          ("outbox.retry", "", f"outbox:{first}"),
                          ("outbox.skip", "posted by hand in the ERP", f"outbox:{ids[keys[1]]}")]
