"""The machine model: exact rate, seeded scrap, raw counters vs ground truth, faults."""

from __future__ import annotations

import json
import math
from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from simulators.machine import PACKML_EXECUTE, PACKML_SUSPENDED, MachineModel, SimMachineConfig


def machine(**overrides) -> MachineModel:
    fields = {"name": "M", "rate_hz": 10.0} | overrides
    return MachineModel(SimMachineConfig(**fields))


# --- rate --------------------------------------------------------------------------

durations = st.one_of(
    st.floats(min_value=0, max_value=2, allow_nan=False),
    st.fractions(min_value=0, max_value=2),
)


@given(
    rate=st.one_of(st.floats(min_value=0, max_value=200, allow_nan=False), st.sampled_from([0.1, 1 / 3, 5.0])),
    dts=st.lists(durations, max_size=60),
)
def test_cycles_equal_rate_times_elapsed_time_however_time_is_sliced(rate, dts):
    model = machine(rate_hz=rate)
    made = sum(model.advance(dt) for dt in dts)
    assert made == math.floor(Fraction(rate) * sum(Fraction(dt) for dt in dts))


def test_a_rate_below_one_cycle_per_tick_still_adds_up():
    model = machine(rate_hz=5.0)
    made = sum(model.advance(0.02) for _ in range(1000))  # 20 s of 20 ms ticks
    assert made == 100


def test_a_phase_moves_when_the_cycles_end_not_how_many_there_are():
    """Machines out of step: at 1 Hz, one a quarter into its cycle ends its cycles at 0.75 s, 1.75 s, …"""
    model = machine(rate_hz=1.0, phase=0.25)
    ends = [round(0.05 * (k + 1), 2) for k in range(60) if model.advance(0.05)]
    assert ends == [0.75, 1.75, 2.75]
    assert machine(rate_hz=1.0).advance(0.75) == 0
    with pytest.raises(ValueError, match="phase"):
        machine(phase=1.0)


def test_pausing_makes_nothing_and_resuming_brings_no_burst():
    model = machine(rate_hz=10.0)
    model.advance(0.25)  # 2 cycles and half a cycle of credit
    model.pause()
    assert model.advance(3600) == 0
    model.resume()
    assert model.advance(0.05) == 1  # the half cycle kept from before the pause completes
    assert model.truth()["good_cycles"] == 3


def test_set_rate_applies_from_now_on():
    model = machine(rate_hz=10.0)
    model.advance(1)
    model.set_rate(2.0)
    model.advance(1)
    assert model.truth()["good_cycles"] == 12
    assert model.rate_hz == 2.0


@pytest.mark.parametrize("bad", [-1.0, math.inf, math.nan])
def test_time_and_rate_refuse_nonsense(bad):
    model = machine()
    with pytest.raises(ValueError):
        model.advance(bad)
    with pytest.raises(ValueError):
        model.set_rate(bad)


# --- scrap ---------------------------------------------------------------------------


def test_scrap_follows_the_ratio_and_the_seed():
    a, b, c = (machine(rate_hz=1000.0, scrap_ratio=0.1, seed=seed) for seed in (7, 7, 8))
    for model in (a, b, c):
        model.advance(10)
    assert a.truth() == b.truth()  # same seed, same history
    assert a.truth()["scrap_cycles"] != c.truth()["scrap_cycles"]
    assert 0.08 < a.truth()["scrap_cycles"] / 10_000 < 0.12


@pytest.mark.parametrize(("ratio", "good", "scrap"), [(0.0, 50, 0), (1.0, 0, 50)])
def test_scrap_ratio_extremes(ratio, good, scrap):
    model = machine(scrap_ratio=ratio)
    model.advance(5)
    assert (model.good_count, model.scrap_count) == (good, scrap)


def test_units_are_cycles_times_units_per_cycle():
    model = machine(units_per_cycle=4, scrap_ratio=0.5, seed=3)
    model.advance(10)
    truth = model.truth()
    assert truth["good_units"] == 4 * truth["good_cycles"]
    assert truth["scrap_units"] == 4 * truth["scrap_cycles"]
    assert truth["good_cycles"] + truth["scrap_cycles"] == 100


# --- raw counters vs truth ----------------------------------------------------------


def test_counters_wrap_at_their_width():
    model = machine(width_bits=16, initial_count=2**16 - 3)
    model.advance(0.5)  # 5 cycles
    assert model.good_count == 2
    assert model.truth()["good_cycles"] == 5


def test_reset_zeroes_the_counters_not_the_truth():
    model = machine(scrap_ratio=0.5, seed=1)
    model.advance(2)
    before = model.truth()
    model.reset()
    after = model.truth()
    assert (model.good_count, model.scrap_count) == (0, 0)
    assert after["last_reset_raw"] == {"good": before["good_count"], "scrap": before["scrap_count"]}
    assert after["resets"] == 1
    assert (after["good_cycles"], after["scrap_cycles"]) == (before["good_cycles"], before["scrap_cycles"])


def test_jump_near_rollover_moves_the_counters_not_the_truth():
    model = machine(width_bits=32)
    model.advance(1)  # 10 good cycles
    model.jump_near_rollover(5)
    truth = model.truth()
    assert model.good_count == model.scrap_count == 2**32 - 5
    assert truth["good_cycles"] == 10
    assert truth["jumped"] == {"good": 2**32 - 5 - 10, "scrap": 2**32 - 5}
    model.advance(1)
    assert model.good_count == 5  # rolled over


@pytest.mark.parametrize("margin", [0, -1, 2**16 + 1])
def test_jump_margin_must_fit_the_counter(margin):
    with pytest.raises(ValueError, match="margin"):
        machine(width_bits=16).jump_near_rollover(margin)


def test_production_is_booked_to_the_order_running_at_the_time():
    model = machine(order="A")
    model.advance(1)
    model.set_order("B")  # counters keep running
    model.advance(2)
    assert model.good_count == 30
    model.set_order("C", reset_counters=True)  # a new job restarts its counters
    model.advance(0.5)
    truth = model.truth()
    assert model.good_count == 5
    assert {order: v["good_cycles"] for order, v in truth["by_order"].items()} == {"A": 10, "B": 20, "C": 5}
    assert (truth["order"], truth["job_resets"], truth["resets"]) == ("C", 1, 0)


def test_state_follows_pause():
    model = machine()
    assert model.state == PACKML_EXECUTE
    model.pause()
    assert (model.state, model.truth()["paused"]) == (PACKML_SUSPENDED, True)


def test_truth_is_json():
    model = machine(order="1000123", scrap_ratio=0.2)
    model.advance(1)
    model.reset()
    model.jump_near_rollover(3)
    truth = model.truth()
    assert json.loads(json.dumps(truth)) == truth


# --- any sequence of operations ------------------------------------------------------

operations = st.lists(
    st.one_of(
        st.tuples(st.just("advance"), durations),
        st.tuples(st.just("pause")),
        st.tuples(st.just("resume")),
        st.tuples(st.just("reset")),
        st.tuples(st.just("jump"), st.integers(min_value=1, max_value=2**16)),
        st.tuples(st.just("order"), st.sampled_from("ABC"), st.booleans()),
        st.tuples(st.just("rate"), st.floats(min_value=0, max_value=100)),
    ),
    max_size=40,
)


class Reference:
    """What the raw counters must show, worked out independently of the model."""

    def __init__(self, model: MachineModel) -> None:
        self.start = {"good": model.config.initial_count, "scrap": model.config.initial_count}
        self.truth_at_start = {"good": 0, "scrap": 0}
        self.jumped_at_start = {"good": 0, "scrap": 0}

    def counters_zeroed(self, truth: dict) -> None:
        self.start = {"good": 0, "scrap": 0}
        self.truth_at_start = {"good": truth["good_cycles"], "scrap": truth["scrap_cycles"]}
        self.jumped_at_start = dict(truth["jumped"])

    def raw(self, truth: dict, counter: str, modulus: int) -> int:
        made = truth[f"{counter}_cycles"] - self.truth_at_start[counter]
        jumped = truth["jumped"][counter] - self.jumped_at_start[counter]
        return (self.start[counter] + made + jumped) % modulus


def apply(model: MachineModel, op: tuple) -> None:
    kind, *args = op
    if kind == "advance":
        made = model.advance(args[0])
        assert made == 0 or not model.paused
    elif kind == "jump":
        model.jump_near_rollover(args[0])
    elif kind == "order":
        model.set_order(args[0], reset_counters=args[1])
    elif kind == "rate":
        model.set_rate(args[0])
    else:
        getattr(model, kind)()


@settings(max_examples=300)
@given(
    width=st.sampled_from([16, 32, 64]),
    initial=st.integers(min_value=0, max_value=2**16 - 1),
    scrap=st.floats(min_value=0, max_value=1),
    ops=operations,
)
def test_raw_counters_equal_start_plus_truth_plus_jumps_since_last_zeroing(width, initial, scrap, ops):
    model = machine(rate_hz=50.0, width_bits=width, initial_count=initial, scrap_ratio=scrap, order="A", seed=5)
    reference = Reference(model)
    previous = model.truth()
    for op in ops:
        apply(model, op)
        truth = model.truth()
        if op[0] == "reset" or op[:1] == ("order",) and op[2]:
            reference.counters_zeroed(truth)
        for counter in ("good", "scrap"):
            assert truth[f"{counter}_count"] == reference.raw(truth, counter, 2**width)
            # Ground truth never goes down, whatever happens to the counters.
            assert truth[f"{counter}_cycles"] >= previous[f"{counter}_cycles"]
            by_order = sum(v[f"{counter}_cycles"] for v in truth["by_order"].values())
            assert by_order == truth[f"{counter}_cycles"]
        previous = truth


# --- configuration -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"name": ""}, "name"),
        ({"name": "*"}, "name"),
        ({"rate_hz": -1.0}, "rate"),
        ({"units_per_cycle": 0}, "units_per_cycle"),
        ({"scrap_ratio": 1.5}, "scrap_ratio"),
        ({"width_bits": 8}, "width_bits"),
        ({"width_bits": 16, "initial_count": 2**16}, "initial_count"),
        ({"initial_count": -1}, "initial_count"),
    ],
)
def test_config_refuses_what_no_machine_could_be(overrides, message):
    with pytest.raises(ValueError, match=message):
        SimMachineConfig(**({"name": "M", "rate_hz": 1.0} | overrides))
