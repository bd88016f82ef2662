"""The ``--stats`` file: one JSON line per committed ledger transaction, for benchmarks.

``gateway run --stats FILE`` adds ``StatsFile.committed`` to the ledger writer's
``after_commit`` hooks (the same hook ``/metrics`` takes its committed figures from). Each
line says when the transaction began and committed, how many counter changes it covered
(``readings``), the oldest and newest PLC source time among them and each one's age at
commit in ms (``ages_ms``), how many confirmations it posted and how many counter states it
wrote, so a benchmark measures commit rates and reading-to-ledger latency from outside the
process (``bench/e2e.py`` reads it).

Every figure is read from what the transaction committed; nothing on the reading path
counts for it. Written in the writer thread after COMMIT: a file that cannot be written
loses its lines (logged), never a transaction.
"""

from __future__ import annotations

import json
import os
from typing import TextIO

from gateway.ledger.writer import Committed


def stats_line(done: Committed) -> dict:
    """The figures of one committed transaction (times in epoch seconds)."""
    changes = done.changes
    sources = [s.source_time.timestamp() for s in changes.counter_states]
    return {
        "ages_ms": sorted(round(1000 * (done.committed_at - st)) for st in sources),
        "began_at": done.began_at, "committed_at": done.committed_at, "readings": len(sources),
        "oldest_source": min(sources, default=None), "newest_source": max(sources, default=None),
        "confirmations": done.posted, "counter_states": len(changes.latest_states()),
    }


class StatsFile:
    """Appends ``stats_line`` of every committed transaction to a file."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        # Line-buffered: a benchmark reads it while the gateway runs, and after a kill.
        self._file: TextIO = open(path, "a", buffering=1, encoding="utf-8")  # noqa: SIM115

    def committed(self, done: Committed) -> None:
        """The writer's after-commit hook (writer thread)."""
        self._file.write(json.dumps(stats_line(done)) + "\n")

    def close(self) -> None:
        self._file.close()
