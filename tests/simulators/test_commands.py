"""Text control commands: parsing, refusals and the all-machines form."""

from __future__ import annotations

import pytest

from simulators.commands import SimCommandError, apply_command, apply_to_machines
from simulators.machine import MachineModel, SimMachineConfig


@pytest.fixture
def models() -> dict[str, MachineModel]:
    configs = [SimMachineConfig("A", rate_hz=10.0, order="1"), SimMachineConfig("B", rate_hz=5.0, width_bits=16)]
    return {config.name: MachineModel(config) for config in configs}


def test_each_command_answers_with_the_truth_afterwards(models):
    a = models["A"]
    a.advance(1)
    assert apply_command(a, "pause")["paused"] is True
    assert apply_command(a, "resume")["paused"] is False
    assert apply_command(a, "jump_near_rollover", " 10 ")["good_count"] == 2**32 - 10
    assert apply_command(a, "reset")["resets"] == 1
    assert apply_command(a, "set_rate", "2.5")["rate_hz"] == 2.5
    truth = apply_command(a, "truth")
    assert truth == a.truth()
    assert truth["good_cycles"] == 10


def test_reset_job_counters_restarts_the_job_counters_without_changing_the_job(models):
    a = models["A"]
    a.advance(1)
    truth = apply_command(a, "reset_job_counters")
    assert (truth["order"], truth["good_count"], truth["scrap_count"]) == ("1", 0, 0)
    assert (truth["job_resets"], truth["resets"], truth["good_cycles"]) == (1, 0, 10)


@pytest.mark.parametrize(
    ("argument", "order", "job_resets"),
    [("2", "2", 0), ("2,reset", "2", 1), (" 2 , reset ", "2", 1)],
)
def test_set_order_with_and_without_job_reset(models, argument, order, job_resets):
    models["A"].advance(1)
    truth = apply_command(models["A"], "set_order", argument)
    assert (truth["order"], truth["job_resets"]) == (order, job_resets)
    assert truth["good_count"] == (0 if job_resets else 10)


@pytest.mark.parametrize(
    ("command", "argument", "message"),
    [
        ("explode", "", "unknown command 'explode'; known: pause, resume"),
        ("pause", "now", "takes no argument"),
        ("jump_near_rollover", "", "expected margin"),
        ("jump_near_rollover", "0", "margin must be in 1.."),
        ("set_rate", "fast", "expected rate"),
        ("set_rate", "-1", "rate must be"),
        ("set_order", "", "needs an order number"),
        ("set_order", "2,keep", "only 'reset'"),
    ],
)
def test_refusals_say_what_was_wrong(models, command, argument, message):
    before = models["A"].truth()
    with pytest.raises(SimCommandError, match=message):
        apply_command(models["A"], command, argument)
    assert models["A"].truth() == before


def test_star_applies_to_every_machine(models):
    result = apply_to_machines(models, "*", "pause")
    assert set(result) == {"A", "B"}
    assert all(model.paused for model in models.values())


def test_unknown_machine_is_refused_with_the_known_ones(models):
    with pytest.raises(SimCommandError, match="unknown machine 'C'; known: A, B"):
        apply_to_machines(models, "C", "pause")
