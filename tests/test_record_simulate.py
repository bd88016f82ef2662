"""``gateway simulate`` / ``record`` / ``dry-run`` against real servers over real sockets.

A mapping is served by ``gateway simulate`` (a subprocess, as a controls engineer runs it),
checked by ``gateway validate --live``, recorded by ``gateway record`` and run by ``gateway
run`` on a SQLite ledger; every unit the simulator's machines made while the gateway ran
must be in the ledger exactly once. The mappings: the demo plant, and one with ``nsu=`` and
``ns=<index>`` node ids and little-endian Modbus tags (input registers, uint64, a string
with its bytes swapped) on a unit id other than 1. In-process: a recording made from the
simulator dry-runs to the simulator's own ground truth, and ``--replay`` serves a recording
back value for value.
"""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from io import StringIO
from pathlib import Path

import pytest
from sqlalchemy import select

from gateway.commissioning.dryrun import dry_run
from gateway.commissioning.record import record
from gateway.commissioning.recording import read_recording, replay
from gateway.demo import wait_until
from gateway.ledger import schema
from gateway.ledger.reports import summary
from gateway.ledger.schema import open_engine
from gateway.mapping.load import load_mapping
from gateway.masterdata.load import load_masterdata
from simulators.from_mapping import MappingPlc, machine_configs
from simulators.json_control import json_command
from tests.support import first_line_with, free_port

ROOT = Path(__file__).resolve().parents[1]
MASTERDATA = ROOT / "mappings" / "demo-masterdata.yaml"


def demo_mapping(folder: Path) -> Path:
    """The demo plant's mapping on free ports, its master data named by absolute path."""
    text = (ROOT / "mappings" / "demo-plant.yaml").read_text()
    text = text.replace("127.0.0.1:4840", f"127.0.0.1:{free_port()}").replace("port: 5020", f"port: {free_port()}")
    text = text.replace("masterdata: demo-masterdata.yaml", f"masterdata: {MASTERDATA}")
    path = folder / "plant.yaml"
    path.write_text(text)
    return path


def nsu_little_endian_mapping(folder: Path) -> Path:
    path = folder / "plant.yaml"
    path.write_text(f"""masterdata: {MASTERDATA}
sources:
  presses:
    opcua: {{endpoint: "opc.tcp://127.0.0.1:{free_port()}", publishing_interval_ms: 50}}
  lathes:
    modbus: {{host: 127.0.0.1, port: {free_port()}, unit: 7, poll_interval_ms: 50}}
machines:
  PRESS-01:
    source: presses
    work_center: WC-PRESS
    units_per_cycle: 4
    counters:
      good:  {{node: "nsu=urn:example:press-line;s=Line1/Press01/Counters.Good", type: uint64}}
      scrap: {{node: "nsu=urn:example:press-line;s=Line1/Press01/Counters.Scrap", type: uint64}}
    order: {{node: "ns=3;i=5001"}}
    confirm: {{every_units: 40, every_seconds: 2}}
  LATHE-04:
    source: lathes
    work_center: WC-LATHE
    counters:
      good:  {{register: 300, table: input, type: uint64, word_order: little, byte_order: little}}
      scrap: {{register: 310, table: input, type: uint64, word_order: little, byte_order: little}}
    order: {{register: 320, table: input, type: string, length: 6, byte_order: little}}
    confirm: {{every_units: 15, every_seconds: 2}}
""")
    return path


def gated_mapping(folder: Path) -> Path:
    """``nsu_little_endian_mapping`` with a ``count_when`` state tag on each machine (OPC UA, Modbus)."""
    path = nsu_little_endian_mapping(folder)
    text = path.read_text()
    text = text.replace('    order: {node: "ns=3;i=5001"}\n', '    order: {node: "ns=3;i=5001"}\n'
                        '    count_when: {node: "nsu=urn:example:press-line;s=Line1/Press01/State", in: [6]}\n')
    text = text.replace("    order: {register: 320,", "    count_when: {register: 296, table: input, type: int16, "
                        "byte_order: little, in: [4, 6]}\n    order: {register: 320,")
    assert text.count("count_when") == 2
    path.write_text(text)
    return path


def gateway(*args: str, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "gateway.cli", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=120, **kw)


async def truth(port: int) -> dict:
    return await json_command("127.0.0.1", port, "*", "truth")


def committed_raw(engine) -> dict[tuple[str, str], int]:
    with engine.connect() as conn:
        return {(r.machine, r.counter): r.raw for r in conn.execute(select(schema.counter_states))}


def caught_up(engine, now: dict) -> bool:
    raw = committed_raw(engine)
    return all(raw.get((m, c)) == now[m][f"{c}_count"] for m in now for c in ("good", "scrap")
               if (m, c) in raw or c == "good")


@pytest.mark.slow
@pytest.mark.parametrize("make_mapping", [demo_mapping, nsu_little_endian_mapping], ids=["demo", "nsu-little-endian"])
async def test_simulate_then_validate_live_record_and_run_reconcile(tmp_path, make_mapping):
    mapping = make_mapping(tmp_path)
    control = free_port()
    sim = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "gateway.cli", "simulate", "--mapping", str(mapping), "--rate", "20",
        "--control-port", str(control), cwd=ROOT, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    db = f"sqlite:///{tmp_path / 'ledger.sqlite'}"
    run = None
    try:
        line = await asyncio.wait_for(first_line_with(sim.stdout, "simulating"), 60)
        assert "counting at 20 cycles/s" in line, line
        machines = list(load_mapping(mapping).machines)
        assert line.startswith(f"simulating {', '.join(machines)} on opc.tcp://127.0.0.1:")

        live = await asyncio.to_thread(gateway, "validate", str(mapping), "--live")
        assert (live.returncode, live.stdout) == (0, f"{mapping}: ok (every tag read from the PLCs)\n"), live.stderr

        out = tmp_path / "recording.jsonl"
        recorded = await asyncio.to_thread(gateway, "record", "--mapping", str(mapping), "--seconds", "1.5",
                                           "--out", str(out))
        assert recorded.returncode == 0, recorded.stderr
        rec = read_recording(out)
        tags = {(v.machine, v.role) for v in rec.values}
        config = load_mapping(mapping)
        assert tags == {(m, role) for m, c in config.machines.items() for role, tag in
                        [*c.counters, ("order", None if isinstance(c.order, str) else c.order)] if tag is not None}
        assert recorded.stdout.startswith(f"{out}: {len(rec.values)} values of {len(tags)} tags from "
                                          f"{len(config.sources)} source(s)")

        assert (await asyncio.to_thread(gateway, "masterdata", "load", str(MASTERDATA), "--db", db)).returncode == 0
        await json_command("127.0.0.1", control, "*", "pause")
        run = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "gateway.cli", "run", "--mapping", str(mapping), "--db", db, "--http", "off",
            cwd=ROOT, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL)
        engine = open_engine(db)
        paused = await truth(control)
        await wait_until(lambda: caught_up(engine, paused), 60, "the gateway's baseline")
        start = {m: paused[m]["good_units"] + paused[m]["scrap_units"] for m in paused}
        await json_command("127.0.0.1", control, "*", "resume")
        await asyncio.sleep(3)
        end_truth = await json_command("127.0.0.1", control, "*", "pause")
        await wait_until(lambda: caught_up(engine, end_truth), 60, "the gateway to read the last values")
        run.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(run.wait(), 60) == 0
        run = None
        result = summary(engine)
        for m in machines:
            made = end_truth[m]["good_units"] + end_truth[m]["scrap_units"] - start[m]
            assert made > 0
            assert result.machines[m].accounted == made, m
            assert result.machines[m].pending == 0 and result.machines[m].held == 0, m
        assert result.open_anomalies == 0 and result.duplicate_confirmation_ids == 0
        engine.dispose()
    finally:
        if run is not None:
            run.kill()
            await run.wait()
        sim.send_signal(signal.SIGTERM)
        tail = (await asyncio.wait_for(sim.stdout.read(), 30)).decode()
        assert await asyncio.wait_for(sim.wait(), 30) == 0
    # At its end the simulator prints each machine's ground truth.
    for m in machines:
        t_ = end_truth[m]
        assert (f"{m}: order {t_['order']}, {t_['good_units']} good and {t_['scrap_units']} scrap units made "
                f"(counters {t_['good_count']}, {t_['scrap_count']})") in tail


@pytest.mark.slow
@pytest.mark.parametrize("make_mapping", [nsu_little_endian_mapping, gated_mapping], ids=["plain", "count_when"])
async def test_a_recording_of_the_simulator_dry_runs_to_its_ground_truth(tmp_path, make_mapping):
    mapping = load_mapping(make_mapping(tmp_path))
    md = load_masterdata(MASTERDATA)
    plc = MappingPlc(mapping, machine_configs(mapping, rate_hz=25, masterdata=md, paused=True), tick_s=0.01)
    out = StringIO()
    async with plc:
        before = {m: model.truth() for m, model in plc.models.items()}
        recording = asyncio.create_task(record(mapping, 60, out, mapping_name="plant.yaml", stop=(stop := asyncio.Event())))
        await asyncio.sleep(1.5)  # connected, first values (the baseline) recorded
        await plc.command("*", "resume")
        await asyncio.sleep(2)
        await plc.command("*", "pause")
        await asyncio.sleep(1)
        stop.set()
        result = await recording
    assert not result.silent and not result.sources_down
    path = tmp_path / "recording.jsonl"
    path.write_text(out.getvalue())
    states = {m: [v.value for v in read_recording(path).values if (v.machine, v.role) == (m, "state")]
              for m, c in mapping.machines.items() if c.count_when is not None}
    # The state tag is served and recorded: stopped (the first state not allowed), producing, stopped.
    assert states in ({}, {"PRESS-01": [0, 6, 0], "LATHE-04": [0, 4, 0]}), states
    run = dry_run(mapping, read_recording(path), md, mapping_name="plant.yaml")
    assert run.clean, (run.not_recorded, run.undecodable, [m.anomalies for m in run.machines.values()])
    for m, model in plc.models.items():
        t_ = model.truth()
        made = Decimal(t_["good_units"] + t_["scrap_units"] - before[m]["good_units"] - before[m]["scrap_units"])
        outcome = run.machines[m]
        assert made > 0 and outcome.counted == made, m
        assert outcome.confirmed_yield == t_["good_units"] - before[m]["good_units"], m
        assert outcome.confirmed_scrap == t_["scrap_units"] - before[m]["scrap_units"], m
        assert outcome.pending == 0 and outcome.held == 0, m


@pytest.mark.slow
async def test_replay_serves_the_recording_value_for_value(tmp_path):
    mapping_path = nsu_little_endian_mapping(tmp_path)
    mapping = load_mapping(mapping_path)
    t0 = datetime(2026, 11, 30, 6, tzinfo=UTC)
    goods = [1000, 1010, 1030, 2**40 + 5]
    lines = []
    for i, good in enumerate(goods):
        at = (t0 + timedelta(seconds=1.2 * i)).isoformat()
        lines.append({"at": at, "batch": 2 * i, "source": "presses", "machine": "PRESS-01", "role": "good",
                      "address": "nsu=urn:example:press-line;s=Line1/Press01/Counters.Good", "value": good,
                      "source_time": at})
        regs = [(good >> (16 * k)) & 0xFFFF for k in range(4)]  # word_order little …
        regs = [((w & 0xFF) << 8) | (w >> 8) for w in regs]  # … byte_order little
        lines.append({"at": at, "batch": 2 * i + 1, "source": "lathes", "machine": "LATHE-04", "role": "good",
                      "address": "input 300..303 uint64", "value": good, "table": "input", "register": 300,
                      "registers": regs})
    path = tmp_path / "replay.jsonl"
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    replayed = replay(read_recording(path), mapping)
    assert sorted(replayed.not_recorded) == [
        "LATHE-04 order: input 320..325 string byte_order=little", "LATHE-04 scrap: input 310..313 uint64 "
        "word_order=little byte_order=little", "PRESS-01 order: ns=3;i=5001",
        "PRESS-01 scrap: nsu=urn:example:press-line;s=Line1/Press01/Counters.Scrap"]
    plc = MappingPlc(mapping, machine_configs(mapping, rate_hz=0), replay=replayed)
    out = StringIO()
    async with plc:
        await record(mapping, 1.2 * len(goods) + 1.5, out, mapping_name="plant.yaml")
    path.write_text(out.getvalue())
    got = read_recording(path).values
    for machine in ("PRESS-01", "LATHE-04"):
        values = [v.value for v in got if (v.machine, v.role) == (machine, "good")]
        assert [v for v in values if v != 0] == goods, machine  # 0: the node before the first value, if seen


def test_dry_run_refusals_are_one_line_each(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from gateway.cli import app

    monkeypatch.chdir(tmp_path)
    case = ROOT / "tests" / "recordings" / "plc_reset_counts_after_the_reset"
    mapping = (case / "mapping.yaml").read_text().replace("masterdata: ../../../mappings/demo-masterdata.yaml\n", "")
    Path("mapping.yaml").write_text(mapping)
    lines = (case / "recording.jsonl").read_text().splitlines()
    Path("rec.jsonl").write_text("\n".join([lines[0], "garbage", lines[2].replace('"machine": "ASSY-03", ', "")]))
    runner = CliRunner()
    result = runner.invoke(app, ["dry-run", "-m", "mapping.yaml", "-r", "rec.jsonl"])
    assert (result.exit_code, result.stderr) == (1, "mapping.yaml: a dry-run plans against master data: give "
                                                    "--masterdata FILE, or name it in the mapping (`masterdata: "
                                                    "FILE`)\n")
    result = runner.invoke(app, ["dry-run", "-m", "mapping.yaml", "-r", "rec.jsonl", "--masterdata", str(MASTERDATA)])
    assert (result.exit_code, result.stderr) == (1, "rec.jsonl:2: not JSON: Expecting value\n"
                                                    "rec.jsonl:3: machine: Field required\n")
    Path("rec.jsonl").write_text("\n".join(lines))
    result = runner.invoke(app, ["dry-run", "-m", "mapping.yaml", "-r", "rec.jsonl", "--masterdata", str(MASTERDATA)])
    assert result.exit_code == 1  # the PLC reset
    assert "ASSY-03: 75 units counted, yield 75, scrap 0, 1 confirmation(s)\n" in result.stdout
    assert ("  anomaly reset good: counter went down from 1050 to 5 (PLC restart or clear); counted 5 after the "
            "reset, the counts between the last reading and the reset are unknown\n") in result.stdout
    assert result.stdout.endswith("\n1 anomaly(ies)\n")
