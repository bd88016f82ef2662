"""The simulated machine's serial per good cycle, and its missed / repeated serial faults."""

import pytest

from simulators.commands import SimCommandError, apply_command
from simulators.machine import MachineModel, SimMachineConfig


def test_each_good_cycle_writes_its_serial_before_its_count_and_faults_miss_or_repeat_one():
    m = MachineModel(SimMachineConfig("A", rate_hz=10, serials=True))
    m.advance(0.2)
    apply_command(m, "miss_serial")
    m.advance(0.1)
    apply_command(m, "repeat_serial", "1")
    m.advance(0.2)
    assert m.serial_events() == [("A-0000001", 1), ("A-0000002", 2), (None, 3), ("A-0000001", 4), ("A-0000003", 5)]
    assert m.serial_events() == []  # handed out once
    truth = m.truth()
    assert (truth["serials"], truth["serials_missed"], truth["serials_repeated"], truth["good_cycles"]) == (
        ["A-0000001", "A-0000002", "A-0000003"], 1, 1, 5)
    assert m.serial == "A-0000003"


def test_serial_faults_are_refused_for_a_machine_without_serials_or_with_a_bad_count():
    plain = MachineModel(SimMachineConfig("B", rate_hz=1))
    with pytest.raises(SimCommandError) as refused:
        apply_command(plain, "miss_serial")
    assert str(refused.value) == "B miss_serial: B writes no serials (start it with serials)"
    with pytest.raises(SimCommandError) as refused:
        apply_command(MachineModel(SimMachineConfig("C", rate_hz=1, serials=True)), "repeat_serial", "two")
    assert str(refused.value) == "C repeat_serial: expected a number of cycles, e.g. '2', got 'two'"
    assert "serials" not in plain.truth()
