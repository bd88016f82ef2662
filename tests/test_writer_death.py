"""The writer cannot die quietly: if its thread ends, the gateway stops with a failure within seconds.

The fault: the writer thread is ended with ``SystemExit`` (which no ``except Exception``
catches and ``threading`` reports to nobody), the way any fatal error of the thread would.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time

import pytest

from gateway.ledger.schema import open_engine
from gateway.mapping.load import load_mapping
from gateway.service import Gateway
from tests.integration.lines import ROOT, line_mapping
from tests.support import free_port

# The thread ends as soon as it runs; the gateway itself runs unchanged.
KILL_THE_WRITER = """
import sys
import gateway.ledger.writer as w

def _dies(self, *, block):
    raise SystemExit("the ledger writer thread ends")

w.LedgerWriter._drain = _dies
sys.argv = ["gateway", *sys.argv[1:]]
from gateway.cli import app
app()
"""


def _mapping_text() -> str:
    return line_mapping(free_port(), free_port())  # nothing listens there: the sources retry meanwhile


def test_the_gateway_process_exits_non_zero_within_seconds_when_the_writer_thread_dies(tmp_path):
    mapping = tmp_path / "mapping.yaml"
    mapping.write_text(_mapping_text())
    db = f"sqlite:///{tmp_path / 'ledger.sqlite'}"
    began = time.monotonic()
    done = subprocess.run([sys.executable, "-c", KILL_THE_WRITER, "run", "--mapping", str(mapping), "--db", db,
                           "--log-json"], cwd=ROOT, capture_output=True, text=True, timeout=60)
    took = time.monotonic() - began
    assert done.returncode == 1, done.stderr[-3000:]
    assert '"event": "ledger_writer_died"' in done.stderr
    assert '"event": "ledger_writer_dead"' in done.stderr
    assert '"committed": false' in done.stderr
    assert took < 20, f"took {took:.1f} s"


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
async def test_run_returns_false_when_the_writer_thread_dies(tmp_path, monkeypatch):
    import gateway.ledger.writer as w

    def dies(self, *, block):
        raise SystemExit("the ledger writer thread ends")

    monkeypatch.setattr(w.LedgerWriter, "_drain", dies)
    engine = open_engine(f"sqlite:///{tmp_path / 'ledger.sqlite'}")
    path = tmp_path / "mapping.yaml"
    path.write_text(_mapping_text())
    gateway = Gateway(load_mapping(path), engine)
    began = time.monotonic()
    done = await asyncio.wait_for(gateway.run(asyncio.Event(), shutdown_timeout_s=5), 30)  # no one sets the stop
    assert done is False
    assert time.monotonic() - began < 15
