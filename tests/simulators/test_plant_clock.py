"""The plant's clock: a tick advances only the machines whose cycle may have ended.

Reference: the same machines advanced at every tick by the same slices of time. What the
plant shows after each tick (counters, truth) must be the same, through pauses, resumes and
rate changes given as commands between ticks.
"""

from __future__ import annotations

import asyncio
from fractions import Fraction

from hypothesis import given, settings
from hypothesis import strategies as st

from simulators import plant as plant_module
from simulators.commands import apply_to_machines
from simulators.machine import MachineModel, SimMachineConfig
from simulators.plant import SimulatedPlant


class _Plant(SimulatedPlant):
    """A plant that shows nothing: the clock alone."""

    async def _publish(self) -> None:
        pass


class _Clock:
    def __init__(self) -> None:
        self.ns = 10**12

    def __call__(self) -> int:
        return self.ns


machines = st.lists(
    st.tuples(st.sampled_from([0.0, 0.3, 1.0, 1 / 3, 7.0, 50.0]), st.floats(min_value=0, max_value=0.999)),
    min_size=1, max_size=6,
)
steps = st.lists(
    st.one_of(
        st.integers(min_value=0, max_value=3 * 10**9).map(lambda ns: ("tick", ns)),
        st.tuples(st.just("command"), st.sampled_from(["pause", "resume", "set_rate"]),
                  st.sampled_from(["2.5", "0.7", "20"])),
    ),
    max_size=40,
)


@settings(max_examples=150, deadline=None)
@given(machines=machines, steps=steps, seed=st.integers(min_value=0, max_value=3))
def test_skipping_the_machines_that_make_nothing_changes_nothing(machines, steps, seed):
    clock = _Clock()
    real = plant_module.time.monotonic_ns
    plant_module.time.monotonic_ns = clock
    try:
        configs = [SimMachineConfig(name=f"m{i}", rate_hz=rate, phase=phase, seed=seed + i)
                   for i, (rate, phase) in enumerate(machines)]
        plc = _Plant(configs, tick_s=0.05)
        reference = {c.name: MachineModel(c) for c in configs}
        for step in steps:
            if step[0] == "tick":
                clock.ns += step[1]
                plc._advance_models()
                for model in reference.values():
                    model.advance(Fraction(step[1], 10**9))
            else:
                _, command, argument = step
                argument = argument if command == "set_rate" else ""
                asyncio.run(plc.command("*", command, argument))
                apply_to_machines(reference, "*", command, argument)
            # After every step, the machines that were left out show what they would have shown.
            for name, model in reference.items():
                shown = plc.models[name]
                assert (shown.good_count, shown.scrap_count) == (model.good_count, model.scrap_count), step
        clock.ns += 10**10
        plc._advance_models()
        for model in reference.values():
            model.advance(10)
        assert [m.truth() for m in plc.models.values()] == [m.truth() for m in reference.values()]
    finally:
        plant_module.time.monotonic_ns = real


def test_a_machine_between_cycles_is_not_advanced_and_not_shown_again():
    """The point of it: 1 Hz machines ticked every 50 ms are advanced once per cycle."""
    clock = _Clock()
    real = plant_module.time.monotonic_ns
    plant_module.time.monotonic_ns = clock
    try:
        plc = _Plant([SimMachineConfig(name="m", rate_hz=1.0)], tick_s=0.05)
        model = plc.models["m"]
        advanced, advance = [], model.advance
        model.advance = lambda dt: advanced.append(dt) or advance(dt)
        revisions = []
        for _ in range(60):  # 3 s of 50 ms ticks
            clock.ns += 50_000_000
            plc._advance_models()
            revisions.append(model.revision)
        assert model.good_count + model.scrap_count == 3
        assert sorted(set(revisions)) == [0, 1, 2, 3]  # moved once per cycle: the publisher writes three times
        # Advanced at the first tick (to learn when its cycle ends), then at each cycle's end only.
        assert advanced == [Fraction(1, 20), Fraction(19, 20), Fraction(1), Fraction(1)]
    finally:
        plant_module.time.monotonic_ns = real


def test_a_machine_too_slow_for_a_float_does_not_stop_the_others():
    clock = _Clock()
    real = plant_module.time.monotonic_ns
    plant_module.time.monotonic_ns = clock
    try:
        plc = _Plant([SimMachineConfig(name="slow", rate_hz=1e-300), SimMachineConfig(name="m", rate_hz=2.0)],
                     tick_s=0.05)
        for _ in range(40):  # 2 s
            clock.ns += 50_000_000
            plc._advance_models()
        assert plc.models["m"].truth()["good_cycles"] + plc.models["m"].truth()["scrap_cycles"] == 4
        assert plc.models["slow"].revision == 0
    finally:
        plant_module.time.monotonic_ns = real
