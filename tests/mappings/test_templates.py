"""Machine templates and presets: what a templated machine expands to, exactly."""

from __future__ import annotations

from pathlib import Path

from gateway.mapping.load import load_mapping
from gateway.mapping.model import ModbusCounterTag, ModbusOrderTag, ModbusStateTag, OrderTag, StateTag
from gateway.mapping.presets import PRESETS
from gateway.machine import counter_specs

CASE = Path(__file__).parent / "valid_templates_and_presets" / "mapping.yaml"
SIM = "nsu=urn:backflush-gateway:simulator;s="


def test_presets_shipped():
    assert PRESETS == ("euromap77", "packml")


def test_template_parameters_and_register_offsets():
    m = load_mapping(CASE).machines
    assert m["PRESS-01"].units_per_cycle == 4 and m["PRESS-02"].units_per_cycle == 1  # the default
    assert m["PRESS-02"].counters.good.node == "ns=2;s=Press02.GoodCount"
    assert m["PRESS-02"].confirm.every_units == 50  # the machine's own key laid over the template
    lathe = m["LATHE-05"]
    assert lathe.counters.good == ModbusCounterTag(register=200, type="uint32")
    assert lathe.counters.scrap == ModbusCounterTag(register=202, type="uint32")
    assert lathe.order == ModbusOrderTag(register=204, length=5)
    assert lathe.count_when == ModbusStateTag(register=209, states=[6])
    assert lathe.operation == "0020"


def test_euromap77_preset():
    imm = load_mapping(CASE).machines["IMM-01"]
    assert imm.order == OrderTag(node=f"{SIM}IMM-01.Jobs.ActiveJob.JobName")
    assert imm.counters.good.node == f"{SIM}IMM-01.Jobs.ActiveJobValues.JobGoodPartsCounter"
    assert imm.counters.scrap.node == f"{SIM}IMM-01.Jobs.ActiveJobValues.JobBadPartsCounter"
    assert (imm.counters.good.type, imm.counters.scrap.type) == ("uint64", "uint64")
    assert imm.count_when == StateTag(node=f"{SIM}IMM-01.Jobs.ActiveJobValues.JobStatus", states=[4])
    assert imm.job_counters == "reset"
    assert all(spec.resets_with_job for spec in counter_specs("IMM-01", imm).values())


def test_packml_preset_with_a_named_order_tag():
    fill = load_mapping(CASE).machines["FILL-01"]
    assert fill.order == OrderTag(node=f"{SIM}FILL-01.OrderNumber")  # the machine's own order tag wins
    # ProdProcessedCount counts good and defective: the total, yield is total − scrap.
    assert fill.counters.good is None
    assert fill.counters.total.node == f"{SIM}FILL-01.Admin.ProdProcessedCount[0].Count"
    assert fill.counters.scrap.node == f"{SIM}FILL-01.Admin.ProdDefectiveCount[0].Count"
    assert fill.count_when == StateTag(node=f"{SIM}FILL-01.Status.StateCurrent", states=[6])
    assert fill.job_counters == "reset"


def test_a_machine_without_a_template_is_unchanged():
    press = load_mapping(Path(__file__).parent / "valid_two_machines_checked_against_masterdata" / "mapping.yaml").machines["PRESS-01"]
    assert press.count_when is None and press.job_counters == "continue"
