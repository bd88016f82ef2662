"""Run the fault suite and write docs/reliability.md from what it measured.

    .venv/bin/python -m tests.faults.report            # every scenario once, as CI does
    .venv/bin/python -m tests.faults.report --soak     # SOAK_ROUNDS rounds, longer outages

Each scenario appends its figures (produced, confirmed, held, unobservable, lost,
duplicated) to a JSON-lines file named by ``FAULTS_RESULTS``; this script runs pytest
with that variable set, then tabulates per scenario and database. The document is only
ever written from a run: this script must never invent or edit a figure.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "reliability.md"

SCENARIOS = [  # (name in the figures, what is broken)
    ("gateway kill -9", "gateway SIGKILLed at 20 seeded random moments (60 with --soak) while the machines count"),
    ("PLC restart", "OPC UA simulator process killed and started again, counters back at 0, link cut before"),
    ("rollover while down", "uint16 (ASSY-03) and uint32 (PRESS-01) counters wrap while the gateway is killed"),
    ("network cut", "proxy blackholes both PLC links for 10 s, then resets them for 5 s (30 s / 15 s with --soak)"),
    ("database gone", "PostgreSQL: proxy resets every connection for 10 s; SQLite: another writer holds the lock 10 s"),
    ("slow database", "PostgreSQL only: proxy delays every chunk by 50 ms for 10 s at 4× the usual rate"),
    ("bad values", "Bad, Uncertain, Float, String, negative on a counter node; a jump beyond plausibility held"),
    ("bad values, jump accepted", "the same line after `gateway anomalies accept ID` (accept again: refused)"),
    ("SIGTERM", "SIGTERM while counting with units pending; restart; exit 0 within the shutdown timeout"),
    ("second instance refused", "a second `gateway run` for the same machines while the first counts: exit 2"),
    ("standby failover after kill -9", "owner SIGKILLed 10 times (20 with --soak) with a `--standby` beside it "
     "(lease TTL 3 s); each takeover within TTL + 2 s; the killed one restarts as the standby"),
    ("stalled owner (SIGSTOP) fenced off", "PostgreSQL: the owner is SIGSTOPped past its TTL twice, the standby "
     "takes over, the stalled one is woken and tries to post what it counted"),
    ("refused posting, reprocess racing the writer", "planning of PRESS-01's order fails (injected) until "
     "fixed: its confirmations wait in the error queue; after the fix `gateway errors reprocess` runs while "
     "the gateway posts the same order's first rows"),
    ("mapping reload", "the mapping rewritten and reloaded 6 times while every machine counts: a machine added "
     "(`gateway reload`), changed (SIGHUP), its OPC UA source's interval changed, a machine removed, an invalid "
     "file and one with a bad master-data reference refused; each machine reconciled over its time in the mapping"),
    ("CLI stock postings while the gateway backflushes", "`gateway stock receive`, `stock issue` and `stock count` "
     "of the steel coil PRESS-01's confirmations issue, 4 rounds while it counts: each command succeeds once"),
    ("job changes during kill -9", "EUROMAP 77 preset on PRESS-01: the job changes (ResetJobCounters) 8 times "
     "(24 with --soak), half while the gateway reads, half while it is SIGKILLed; the old job's unread tail "
     "of a change while down is measured and reported as unobservable"),
    ("writer thread dies", "the ledger writer thread ends (injected SystemExit): the gateway exits 1 within "
     "10 s; restarted, it recounts from the last commit"),
    ("kill -9 after a claimed posting", "gateway SIGKILLed the moment a new `confirmation_posted` appears in its "
     "log, 12 rounds (40 with --soak): every confirmation the log claimed is in the ledger, none claimed twice"),
    ("outputs: gateway kill -9 during delivery", "`gateway run` with a webhook output to a receiver that takes "
     "0.4 s per POST, SIGKILLed 10 times (30 with --soak), each 0–0.3 s after a POST arrived; restarted once more "
     "after the stop to deliver what its shutdown posted. Asserted besides the units: one delivery row per "
     "confirmation, all delivered, none parked; the receiver took each key's effect once and got no key twice "
     "(what was in flight is asked about by key first) (tests/faults/test_outputs.py)"),
    ("outputs: webhook down 30 s", "the webhook receiver refuses connections for 30 s while the machines count "
     "(at least 10 confirmations wait); back, each is delivered once by key, none parked, no row near "
     "`max_attempts` (tests/faults/test_outputs.py)"),
    ("outputs: commit then timeout", "every POST takes its effect, then answers after the 1 s timeout: each "
     "delivery is looked up (HEAD by key) and marked delivered, none POSTed twice, none parked "
     "(tests/faults/test_outputs.py; the broker restart is tests/outputs/test_mqtt_delivery.py, no units)"),
]

# Written by hand, not measured: kept here so that it survives regenerating the document.
PROMISES = """## What the log and the audit trail promise

* A log line that claims a posting — `confirmation_posted`, `confirmation_reversed`, `adjustment_posted`,
  `stock_received`, `stock_issued`, `stock_counted`, `order_completed`, `anomaly_accepted`,
  `error_reprocessed`, `confirmation_not_posted` / `confirmation_not_planned` (kept whole in the error
  queue), `backflush_error_queued` — is written only after the transaction that made the posting
  committed (COMMIT returned; SQLite runs `synchronous=FULL`), once per posting, with that commit's
  time as `committed_at`. What the log claims is in the ledger, even if the process is killed the
  moment after: the scenario "kill -9 after a claimed posting" kills the gateway as soon as a new
  `confirmation_posted` appears in its log and checks every claimed confirmation in the ledger, each
  claimed once (tests/faults/test_claimed_postings.py). Run against the earlier code, which logged
  `confirmation_posted` inside the transaction, that test failed on SQLite within 10 s.
* A transaction that does not commit (a full disk, a lost connection, a refusal, at any statement or
  at COMMIT) logs what it attempted as `…_attempted` with the error (`confirmation_posted_attempted`,
  `stock_received_attempted`, …): an attempted line is never evidence of a posting. A retried
  transaction writes its claims once, when it finally commits (tests/ledger/test_claims.py: 60
  confirmations on a full disk, three failed attempts, then exactly 60 `confirmation_posted`).
* Every manual action — `orders complete`, `confirmations reverse`, `adjust …`, `stock receive | issue |
  count`, `anomalies accept | reject`, `errors reprocess`, `masterdata load`, from the CLI, the HTTP API
  or the console — writes one `audit_log` row in the same transaction as its postings: the row exists
  exactly when the postings do. It names who (the OS user for a command, the token's name for an API
  call), from where (host and command line without the database password; the client's address and
  the endpoint), when, the reason given, the order and what it acted on, the ids of what it posted
  (documents, confirmations, `movement:ID`, `count:ID`) and, as JSON, what the ledger held before and
  what changed; a master-data load records its file's SHA-256 and how many materials, work centers
  and orders were new or updated. A refused action writes nothing, so it leaves no row.
* The audit trail is append-only: no code issues UPDATE or DELETE on `audit_log` (a test listens to
  every statement sent while each manual action runs), and the database refuses both (and TRUNCATE on
  PostgreSQL) with a trigger. `gateway report audit [--since] [--actor] [--order]` and
  `GET /api/v1/audit` read it.
* A failure says its real cause with what to do next: a full disk ("no space left on the ledger's disk:
  free space; nothing is lost, the PLC counters keep the units"), a read-only ledger, a permission
  denied, tables of another schema version, another writer storing the same change first, the write
  lock held by another process, a server that refuses connections, a failed login, a database that
  does not exist. A full disk, a read-only ledger and a missing permission are retried whole, never
  set aside as refused changes.
* Not promised: the log reaching its destination. A line is written to stderr after the commit; a
  kill between the commit and the write loses the line, never the posting (the ledger and the audit
  trail are the record, the log is the account of it).
"""


def main(argv: list[str]) -> int:
    soak = "--soak" in argv
    with tempfile.TemporaryDirectory() as folder:
        results = Path(folder) / "results.jsonl"
        command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/faults"]
        if soak:
            command.append("--soak")
        began = time.monotonic()
        run = subprocess.run(command, cwd=ROOT, env=os.environ | {"FAULTS_RESULTS": str(results)},
                             capture_output=True, text=True, check=False)
        took = time.monotonic() - began
        rows = [json.loads(line) for line in results.read_text().splitlines()] if results.exists() else []
    tail = run.stdout.strip().splitlines()[-1] if run.stdout.strip() else run.stderr.strip()[-200:]
    DOC.write_text(render(rows, soak=soak, took=took, outcome=tail))
    print(f"{DOC.relative_to(ROOT)}: {len(rows)} runs; pytest: {tail}")
    if run.returncode != 0:
        print(run.stdout[-4000:], run.stderr[-2000:], sep="\n")
    return run.returncode


def render(rows: list[dict], *, soak: bool, took: float, outcome: str) -> str:
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                            check=False).stdout.strip()
    dirty = subprocess.run(["git", "status", "--porcelain"], cwd=ROOT, capture_output=True, text=True,
                           check=False).stdout.strip()
    by = defaultdict(list)
    for r in rows:
        by[(r["scenario"], r["database"])].append(r)
    out = [
        "# Reliability: fault injection against the simulators' ground truth",
        "",
        "Generated by `.venv/bin/python -m tests.faults.report" + (" --soak" if soak else "")
        + "` — do not edit by hand;",
        "run it again to refresh. Every figure below comes from that run.",
        "",
        (f"* run: {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, commit {commit}{' with local changes' if dirty else ''}, "
         f"Python {platform.python_version()}, {os.cpu_count()} CPUs"),
        f"* pytest: {outcome}; the fault suite took {took:.0f} s",
        f"* seed: {os.environ.get('FAULTS_SEED', '20261125')} (`FAULTS_SEED`), rounds per scenario: "
        + (os.environ.get("SOAK_ROUNDS", "5") if soak else "1"),
        "",
        "What every scenario asserts (tests/faults/harness.py `reconcile`): units confirmed + units held in",
        "open anomalies = units the simulators made since the gateway's baseline − the unobservable",
        "window (only for a PLC reset: what the old PLC counted after the gateway's last reading, taken",
        "from the `reset` anomaly's last known value); no counter position in two confirmations; nothing",
        "left pending after a graceful stop; stock = opening + receipts − issues.",
        "",
        "Units: PRESS-01 counts 4 units per cycle, ASSY-03 and LATHE-04 one. *lost* = produced −",
        "unobservable − confirmed − held; *duplicated* = counter positions confirmed more than once plus",
        "repeated confirmation ids.",
        "",
    ]
    for name, what in SCENARIOS:
        out += [f"## {name}", "", what, "",
                ("| database | runs | faults injected | units produced | confirmed | held | unobservable | lost "
                 "| duplicated | seconds |"),
                "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
        found = False
        for db in ("sqlite", "postgresql"):
            runs = by.get((name, db))
            if not runs:
                continue
            found = True
            total = {k: sum(r[k] for r in runs) for k in ("faults", "produced", "confirmed", "held", "unobservable",
                                                          "lost", "duplicated", "seconds")}
            out.append(f"| {db} | {len(runs)} | {total['faults']} | {total['produced']} | {total['confirmed']} "
                       f"| {total['held']} | {total['unobservable']} | {total['lost']} | {total['duplicated']} "
                       f"| {total['seconds']:.0f} |")
        if not found:
            out.append("| — | 0 | | | | | | | | |")
        out.append("")
    out += [
        "## malformed input",
        "",
        "Hypothesis mutates a valid mapping and the demo master data (60 examples each per run) for",
        "`gateway validate` and `gateway masterdata load`, and sends 200 arbitrary order-tag values into",
        "the service: every answer is success or an error starting `file:line:`, never a traceback",
        "(tests/faults/test_malformed_input.py). No units are involved, so there is no table.",
        "",
        PROMISES,
        "## Bounds",
        "",
        "* Slow database: the writer merges everything queued into one transaction, so what waits is one",
        "  counter state per counter, one pending per order operation and the confirmations made",
        "  meanwhile — never one object per reading. The test samples the gateway's VmRSS every 0.2 s and",
        "  asserts growth under 40 MB during the slowdown.",
        "* The test proxy holds at most one 64 KiB chunk per direction per connection and 64 connections.",
        "",
        "## Limits of what is shown",
        "",
        "* SQLite: the ledger engine waits up to its 30 s busy timeout inside one commit, so a lock held",
        "  10 s (the CI run) is ridden out without a retry or a log line; only a lock longer than 30 s is",
        "  reported (`ledger_commit_failed`, then `ledger_recovered`), which the `--soak` run checks.",
        "* The slow-database case exists for PostgreSQL only: SQLite has no link to slow down.",
        "",
    ]
    return "\n".join(out)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
