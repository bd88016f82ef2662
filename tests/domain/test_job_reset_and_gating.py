"""Job resets (EUROMAP 77 / PackML job counters) and state gating (``count_when``) in the pure core.

A table pins each rule with its exact outcome; properties run random jobs over a
counter that restarts with every job, read with and without outages, and random
machine states, and check that every count is either counted once, held, or — only
for a job change the gateway did not see — named as unknown.
"""

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.domain.counting import advance
from gateway.domain.records import AnomalyKind, CounterReading, CounterSpec, CounterState, Position

T0 = datetime(2026, 1, 1, tzinfo=UTC)
JOB_SPEC = CounterSpec("IMM-01", "good", 64, resets_with_job=True)
PLAIN_SPEC = CounterSpec("IMM-01", "good", 64)


def reading(value, t=1):
    return CounterReading("IMM-01", "good", value, T0 + timedelta(seconds=t))


def state(raw, epoch=0, t=0):
    return CounterState("IMM-01", "good", Position(epoch, raw), T0 + timedelta(seconds=t))


# (case, spec, state raw, value, keyword arguments) -> (counts, position after, anomaly kind, counts held)
CASES = [
    ("job reset counts the new job from 0", JOB_SPEC, 500, 3, {"job_changed": True}, 3, Position(1, 3), None, 0),
    ("job reset to 0 opens an epoch, counts nothing", JOB_SPEC, 500, 0, {"job_changed": True}, 0, Position(1, 0), None, 0),
    ("new job already past the old value still counts from 0", JOB_SPEC, 5, 9, {"job_changed": True},
     9, Position(1, 9), None, 0),
    ("new job at the old value exactly counts it", JOB_SPEC, 7, 7, {"job_changed": True}, 7, Position(1, 7), None, 0),
    ("a counter that does not restart with the job counts the delta", PLAIN_SPEC, 5, 9, {"job_changed": True},
     4, Position(0, 9), None, 0),
    ("a decrease without a job change is a PLC reset", JOB_SPEC, 500, 3, {}, 3, Position(1, 3), AnomalyKind.RESET, 0),
    ("a job change not seen: counted, the old tail named unknown", JOB_SPEC, 500, 40,
     {"job_changed": True, "job_change_unseen": True}, 40, Position(1, 40), AnomalyKind.JOB_CHANGE_UNSEEN, 0),
    ("counts outside count_when are held", PLAIN_SPEC, 100, 130, {"not_producing": "state 5"},
     None, Position(0, 130), AnomalyKind.NOT_PRODUCING, 30),
    ("a job reset while not producing is held from 0", JOB_SPEC, 100, 4,
     {"job_changed": True, "not_producing": "state 4"}, None, Position(1, 4), AnomalyKind.NOT_PRODUCING, 4),
    ("nothing made while not producing: nothing held", PLAIN_SPEC, 100, 100, {"not_producing": "state 5"},
     None, Position(0, 100), None, 0),
]


@pytest.mark.parametrize("sp,raw,value,kw,counts,after,kind,held", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_job_reset_and_gating_rules(sp, raw, value, kw, counts, after, kind, held):
    step = advance(state(raw), reading(value), sp, **kw)
    assert (step.increment.counts if step.increment else None) == counts
    assert step.state.position == after
    assert (step.anomaly.kind if step.anomaly else None) == kind
    assert (step.anomaly.counts_held if step.anomaly else 0) == held


def test_unseen_job_change_says_what_is_known():
    step = advance(state(500, t=0), reading(40, t=9), JOB_SPEC, job_changed=True, job_change_unseen=True)
    assert step.anomaly.detail == (
        "the job changed while the gateway was not reading: counted 40 for the new job from its job reset; "
        "the previous job's counts after 500 (its last reading, 2026-01-01T00:00:00+00:00) until the reset "
        "are unknown")
    assert (step.anomaly.start, step.anomaly.end) == (Position(0, 500), Position(1, 40))


def test_held_while_not_producing_says_why():
    step = advance(state(100), reading(130), PLAIN_SPEC, not_producing="JobStatus is 1, counting only in 4")
    assert step.anomaly.detail == (
        "30 counts while the machine was not producing (JobStatus is 1, counting only in 4); held as an open "
        "anomaly, not posted: accept to post them, reject to write them off")
    assert (step.anomaly.start, step.anomaly.end) == (Position(0, 100), Position(0, 130))


# A machine runs jobs; each job's counter restarts at 0 and goes up by random steps. The
# gateway reads some of the values. While it reads (no outage) it sees every job's last
# value, as a subscription delivering every change does; an outage across a job change
# hides the old job's last values and the new job's first ones.
jobs = st.lists(st.lists(st.integers(1, 50), min_size=1, max_size=8), min_size=1, max_size=8)


def _reads(jobs, seen, outages):
    """(job, value) the gateway reads, in order."""
    bit = iter(seen)
    out = []
    for j, steps in enumerate(jobs):
        values = [sum(steps[: k + 1]) for k in range(len(steps))]
        for k, value in enumerate(values):
            final = k == len(values) - 1
            if final and j + 1 < len(jobs) and outages[j + 1]:
                continue  # down before this job ended
            if not final and outages[j] and k < len(values) // 2:
                continue  # still down when this job began
            if final or next(bit, True):
                out.append((j, value))
    return out


@settings(max_examples=400, deadline=None)
@given(jobs=jobs, seen=st.lists(st.booleans(), min_size=64, max_size=64),
       outages=st.lists(st.booleans(), min_size=8, max_size=8))
def test_each_job_is_counted_up_to_its_last_value_read(jobs, seen, outages):
    """Counted per job == the last value read of it: nothing twice, no PLC reset, and with
    no outage that is everything made. Each job change the gateway did not see leaves
    exactly one JOB_CHANGE_UNSEEN anomaly, holding nothing."""
    outages = [False, *outages[1:]]  # the gateway took its baseline at 0 before the first job
    st_ = state(0)
    counted: dict[int, int] = {}
    unseen = set()
    previous = 0
    for t, (job, value) in enumerate(_reads(jobs, seen, outages), start=1):
        first_of_job = job != previous or t == 1 and job > 0
        step = advance(st_, reading(value, t), JOB_SPEC, job_changed=first_of_job and job > 0,
                       job_change_unseen=first_of_job and job > 0 and outages[job])
        if step.anomaly is not None:
            assert step.anomaly.kind is AnomalyKind.JOB_CHANGE_UNSEEN and step.anomaly.counts_held == 0
            unseen.add(job)
        counted[job] = counted.get(job, 0) + (step.increment.counts if step.increment else 0)
        st_, previous = step.state, job
    last_read: dict[int, int] = {}
    for job, value in _reads(jobs, seen, outages):
        last_read[job] = value
    assert counted == last_read
    assert unseen == {j for j in last_read if j > 0 and outages[j]}
    if not any(outages):
        assert sum(counted.values()) == sum(sum(steps) for steps in jobs)


@settings(max_examples=300, deadline=None)
@given(run=st.lists(st.tuples(st.integers(0, 40), st.booleans()), min_size=1, max_size=40))
def test_gated_counts_are_counted_or_held_never_both(run):
    """Each reading's counts go to an increment while producing, to a hold otherwise."""
    st_ = state(0)
    value = produced = counted = held = 0
    for t, (inc, producing) in enumerate(run, start=1):
        value += inc
        step = advance(st_, reading(value, t), PLAIN_SPEC, not_producing=None if producing else "state 5")
        counted += step.increment.counts if step.increment else 0
        held += step.anomaly.counts_held if step.anomaly else 0
        produced += inc if producing else 0
        st_ = step.state
    assert counted == produced
    assert counted + held == value
