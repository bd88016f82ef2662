"""The commands as a user runs them: exit codes, messages, nothing half-done."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from sqlalchemy import func, select

from gateway.ledger import schema
from gateway.ledger.schema import open_engine

ROOT = Path(__file__).resolve().parents[1]


def gateway(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "gateway.cli", *args], cwd=cwd, capture_output=True,
                          text=True, timeout=120)


def test_validate_accepts_the_demo_mapping():
    result = gateway("validate", "mappings/demo-plant.yaml")
    assert result.returncode == 0, result.stderr
    assert "ok" in result.stdout


def test_validate_lists_every_error_with_file_and_line(tmp_path):
    (tmp_path / "plant.yaml").write_text(
        "sources:\n"
        "  line:\n"
        "    opcua: {endpoint: 'opc.tcp://127.0.0.1:4840'}\n"
        "machines:\n"
        "  PRESS-01:\n"
        "    source: line\n"
        "    work_center: WC-PRESS\n"
        "    order: '1000123'\n"
        "    counters:\n"
        "      good: {node: 'ns=2;s=P.Good', type: unit32}\n"
        "    countres: {}\n"
    )
    result = gateway("validate", "plant.yaml", cwd=tmp_path)
    assert result.returncode == 1
    lines = result.stderr.splitlines()
    assert "plant.yaml:10: machines.PRESS-01.counters.good.type: 'unit32' is not one of uint16, uint32, uint64" in lines
    assert any(line.startswith("plant.yaml:11: machines.PRESS-01: unknown key 'countres'") for line in lines)
    assert "Traceback" not in result.stderr


def test_bad_master_data_is_refused_whole_and_nothing_is_loaded(tmp_path):
    good = (ROOT / "mappings/demo-masterdata.yaml").read_text()
    broken = good.replace("quantity: 12.5,", "quantity: -12.5,")
    (tmp_path / "md.yaml").write_text(broken)
    url = f"sqlite:///{tmp_path / 'l.sqlite'}"
    result = gateway("masterdata", "load", "md.yaml", "--db", url, cwd=tmp_path)
    assert result.returncode == 1
    assert result.stderr.startswith("md.yaml:")
    assert "nothing was loaded" in result.stderr
    engine = open_engine(url)
    with engine.connect() as conn:
        for table in (schema.materials, schema.production_orders, schema.goods_movements, schema.stock):
            assert conn.execute(select(func.count()).select_from(table)).scalar() == 0


def test_loading_master_data_twice_posts_opening_stock_once(tmp_path):
    url = f"sqlite:///{tmp_path / 'l.sqlite'}"
    first = gateway("masterdata", "load", "mappings/demo-masterdata.yaml", "--db", url)
    second = gateway("masterdata", "load", "mappings/demo-masterdata.yaml", "--db", url)
    assert first.returncode == second.returncode == 0, first.stderr + second.stderr
    assert "0 opening stock postings" in second.stdout and "3 unchanged" in second.stdout
    opening = int(first.stdout.split(" opening stock postings")[0].rsplit(" ", 1)[1])
    assert opening >= 7  # one per stock row (per lot and serial) of the demo's master data
    with open_engine(url).connect() as conn:
        assert conn.execute(select(func.count()).select_from(schema.goods_movements)).scalar() == opening


def test_run_refuses_a_bad_mapping_without_a_traceback(tmp_path):
    (tmp_path / "bad.yaml").write_text("sources: [\n")
    result = gateway("run", "--mapping", "bad.yaml", "--db", f"sqlite:///{tmp_path / 'l.sqlite'}", cwd=tmp_path)
    assert result.returncode == 1
    assert result.stderr.startswith("bad.yaml:") and "Traceback" not in result.stderr


def test_validate_live_reads_every_tag_from_the_plc(tmp_path):
    """--live: a node that does not exist on the server is a file:line error; the rest are fine."""
    from tests.support import free_port

    port = free_port()
    sim = subprocess.Popen([sys.executable, "-m", "simulators.opcua_plc", "--port", str(port),
                            "--machine", "PRESS-01,rate=1,order=1000123"], cwd=ROOT,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        nsu = "nsu=urn:backflush-gateway:simulator;s="
        (tmp_path / "plant.yaml").write_text(
            "sources:\n"
            f"  line: {{opcua: {{endpoint: 'opc.tcp://127.0.0.1:{port}'}}}}\n"
            "machines:\n"
            "  PRESS-01:\n"
            "    source: line\n"
            "    work_center: WC-PRESS\n"
            f"    order: {{node: '{nsu}PRESS-01.OrderNumber'}}\n"
            "    counters:\n"
            f"      good: {{node: '{nsu}PRESS-01.GoodCount', type: uint32}}\n"
            f"      scrap: {{node: '{nsu}PRESS-01.ScrapCuont', type: uint32}}\n"
        )
        import time

        deadline = time.monotonic() + 30
        while True:
            result = gateway("validate", "plant.yaml", "--live", cwd=tmp_path)
            if "cannot read from the PLC" not in result.stderr or time.monotonic() > deadline:
                break
            time.sleep(0.5)  # the simulator is still starting
        assert result.returncode == 1, result.stdout + result.stderr
        lines = result.stderr.splitlines()
        assert len(lines) == 2 and lines[0].startswith("plant.yaml:10: machines.PRESS-01.counters.scrap: cannot be read")
        (tmp_path / "plant.yaml").write_text((tmp_path / "plant.yaml").read_text().replace("ScrapCuont", "ScrapCount"))
        ok = gateway("validate", "plant.yaml", "--live", cwd=tmp_path)
        assert ok.returncode == 0 and "every tag read from the PLCs" in ok.stdout, ok.stderr
    finally:
        sim.kill()
        sim.wait(10)
