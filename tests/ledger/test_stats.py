"""The ``--stats`` lines come from what each transaction committed (the writer's after_commit hook)."""

import json
import time
from datetime import UTC, datetime, timedelta

from gateway.domain.records import CounterState, Position
from gateway.ledger.changes import ChangeSet
from gateway.ledger.queries import resume_state
from gateway.ledger.schema import open_engine
from gateway.ledger.stats import StatsFile
from gateway.ledger.writer import LedgerWriter


def test_every_counter_change_committed_is_a_reading_with_its_age(sqlite_url, tmp_path):
    engine = open_engine(sqlite_url)
    stats = StatsFile(tmp_path / "stats.jsonl")
    writer = LedgerWriter(engine)
    writer.after_commit.append(stats.committed)
    now = datetime.now(UTC)
    read = [now - timedelta(seconds=3), now - timedelta(seconds=2), now - timedelta(seconds=1)]
    # The same counter twice in one change-set: two readings, one counter state stored.
    changes = ChangeSet(counter_states=[CounterState("M1", "good", Position(0, 10), read[0]),
                                        CounterState("M2", "good", Position(0, 5), read[1]),
                                        CounterState("M1", "good", Position(0, 12), read[2])])
    began = time.time()
    writer.submit(changes)  # both queued before the thread starts: merged into one transaction
    writer.submit(ChangeSet(counter_states=[CounterState("M2", "good", Position(0, 6), read[2])]))
    writer.start()
    assert writer.stop(30)
    stats.close()
    [line] = [json.loads(x) for x in (tmp_path / "stats.jsonl").read_text().splitlines()]
    assert (line["readings"], line["counter_states"], line["confirmations"]) == (4, 2, 0)
    assert (line["oldest_source"], line["newest_source"]) == (read[0].timestamp(), read[2].timestamp())
    assert began <= line["began_at"] <= line["committed_at"]
    # Each reading's age: from its PLC source time to the commit.
    assert line["ages_ms"] == sorted(round(1000 * (line["committed_at"] - st.timestamp()))
                                     for st in (read[0], read[1], read[2], read[2]))
    assert resume_state(engine).counter_states[("M1", "good")].position == Position(0, 12)
