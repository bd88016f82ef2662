"""The mapping workbench's API against a real gateway on real simulators.

A gateway runs on a mapping file with one machine (PRESS-01) of a simulated OPC UA PLC
that has two; a controls engineer browses the PLC, finds ASSY-03's counters, writes the
machine with the tags the browse offers, checks it, sees what a reload would change and
applies it: it counts, equal to the simulator's truth. An invalid edit is refused with
its ``file:line`` errors and leaves the file alone; a stale edit is a 409; a viewer cannot
apply; the history grows and a restore brings the first mapping back. The Modbus browse
reads a simulated device whose numbers are word-swapped and decodes them every way. A valid
text the gateway refuses (a machine another gateway owns) puts the previous file back.
"""

from __future__ import annotations

import pytest
from sqlalchemy import func, select

from gateway.ledger import leases
from gateway.ledger import schema
from gateway.ledger.leases import Me
from gateway.ledger.reports import summary
from gateway.ledger.schema import open_engine
from gateway.mapping.load import load_mapping
from gateway.ownership import LeaseOptions
from gateway.service import Gateway
from tests.http.plant_file import ASSY, NS, RUNNING, plcs, sha
from tests.http.served import OPERATOR, VIEWER, auth, dec, served
from tests.integration.lines import Line
from tests.support import free_port

@pytest.mark.slow
async def test_a_machine_added_through_the_workbench_counts_and_an_invalid_edit_is_refused(sqlite_url, tmp_path):
    opc, lathe = plcs()
    (tmp_path / "plant").mkdir()
    file = tmp_path / "plant" / "plant.yaml"
    running = RUNNING.format(opc=opc.port, modbus=lathe.port, ns=NS)
    file.write_text(running)
    ln = Line(sqlite_url, opc, load_mapping(file))
    ln.gateway.mapping_file = file
    v, o = auth(VIEWER), auth(OPERATOR)
    async with lathe, served(ln.gateway) as (_, client), ln:
        # What runs.
        got = (await client.get("/api/v1/mapping", headers=v)).json()
        assert got == {"path": str(file), "text": running, "hash": sha(running), "version_id": None}

        # Browse: Objects → the machine → its variables, with their tags.
        top = (await client.get("/api/v1/browse/opcua/line", headers=v)).json()
        assert top["node"]["node_id"] == "i=85" and top["endpoint"] == f"opc.tcp://127.0.0.1:{opc.port}"
        objects = {n["name"]: n for n in top["children"]}
        assert objects["ASSY-03"]["node_id"] == f"{NS}ASSY-03" and objects["ASSY-03"]["has_children"] is True
        level = (await client.get("/api/v1/browse/opcua/line", params={"node": f"{NS}ASSY-03"}, headers=v)).json()
        nodes = {n["name"]: n for n in level["children"]}
        assert sorted(nodes) == ["GoodCount", "OrderNumber", "ScrapCount", "State"]
        truth = opc.models["ASSY-03"].truth()
        good, scrap = nodes["GoodCount"], nodes["ScrapCount"]
        assert (good["data_type"], good["value"], good["has_children"]) == ("UInt32", truth["good_count"], False)
        assert good["counter_tag"] == f'{{node: "{NS}ASSY-03.GoodCount", type: uint32}}'
        assert nodes["OrderNumber"]["order_tag"] == f'{{node: "{NS}ASSY-03.OrderNumber"}}'
        assert nodes["OrderNumber"]["counter_tag"] is None
        assert nodes["State"]["counter_problem"] == ("is Int32, signed: cannot be a counter "
                                                     "(the gateway reads UInt16, UInt32 or UInt64)")
        unknown = await client.get("/api/v1/browse/opcua/nowhere", headers=v)
        wrong = await client.get("/api/v1/browse/opcua/lathes", headers=v)
        assert (unknown.status_code, wrong.status_code) == (404, 422)
        assert unknown.json()["detail"] == "no source 'nowhere' in the running mapping (it has lathes, line)"

        # An invalid edit: its errors at their lines, and nothing applied.
        invalid = running + ASSY.format(good=good["counter_tag"].replace("uint32", "uint33"), scrap="{node: 7}")
        checked = (await client.post("/api/v1/mapping/validate", json={"text": invalid}, headers=v)).json()
        assert checked["valid"] is False and checked["warnings"] == []
        assert [(e["line"], e["key"], e["in_mapping"]) for e in checked["errors"]] == [
            (20, "machines.ASSY-03.counters.good.type", True), (21, "machines.ASSY-03.counters.scrap.node", True)]
        assert checked["errors"][0]["text"] == (
            f"{file}:20: machines.ASSY-03.counters.good.type: {checked['errors'][0]['message']}")
        assert "uint33" in checked["errors"][0]["message"]
        refused = await client.post("/api/v1/mapping/apply", headers=o,
                                    json={"text": invalid, "base_hash": sha(running), "comment": "typo"})
        assert refused.status_code == 200 and refused.json()["outcome"] == "refused"
        assert refused.json()["errors"] == checked["errors"] and refused.json()["hash"] == sha(running)
        assert file.read_text() == running and sorted(ln.gateway.machines) == ["PRESS-01"]
        assert list(file.parent.iterdir()) == [file]  # no checking leftovers beside it

        # The valid edit: what it would change, then applied (not by a viewer, not on a stale hash).
        edited = running + ASSY.format(good=good["counter_tag"], scrap=scrap["counter_tag"])
        assert (await client.post("/api/v1/mapping/validate", json={"text": edited}, headers=v)).json() == {
            "valid": True, "errors": [], "warnings": []}
        diff = (await client.post("/api/v1/mapping/diff", json={"text": edited}, headers=v)).json()
        assert (diff["added"], diff["removed"], diff["changed"], diff["unchanged"], diff["sources_reconnected"]) == (
            ["ASSY-03"], [], [], ["PRESS-01"], ["line"])
        assert "+  ASSY-03:\n" in diff["text_diff"] and diff["text_diff"].startswith(f"--- {file} (running)\n")
        assert file.read_text() == running  # checking and diffing never write the file
        apply = {"text": edited, "base_hash": sha(running), "comment": "ASSY-03 commissioned"}
        by_viewer = await client.post("/api/v1/mapping/apply", json=apply, headers=v)
        stale = await client.post("/api/v1/mapping/apply", json={**apply, "base_hash": sha("older")}, headers=o)
        assert by_viewer.status_code == 403 and by_viewer.json()["detail"] == (
            "token 'board' has role viewer; this needs operator")
        assert stale.status_code == 409 and stale.headers["content-type"] == "application/problem+json"
        assert stale.json()["type"] == "urn:backflush-gateway:problem:mapping-changed"
        applied = (await client.post("/api/v1/mapping/apply", json=apply, headers=o)).json()
        assert applied["outcome"] == "applied" and applied["hash"] == sha(edited)
        assert applied["detail"] == ("machines added: ASSY-03; removed: none; changed: none; unchanged: 1; "
                                     "sources reconnected: line; started: none; stopped: none")
        assert file.read_text() == edited and sorted(ln.gateway.machines) == ["ASSY-03", "PRESS-01"]
        assert list(file.parent.iterdir()) == [file]
        again = await client.post("/api/v1/mapping/apply", json=apply, headers=o)
        assert again.status_code == 409  # the edit began on the file before the apply

        # It counts, equal to the simulator's truth.
        await ln.settle()
        ln.starts["ASSY-03"] = ln.truth_units("ASSY-03")
        await ln.produce(1.0, "ASSY-03")
        made = ln.made("ASSY-03")
        assert made > 0
        machine = (await client.get("/api/v1/machines/ASSY-03", headers=v)).json()
        assert machine["counters"] == {"good": opc.models["ASSY-03"].truth()["good_count"],
                                       "scrap": opc.models["ASSY-03"].truth()["scrap_count"]}
        assert dec(machine["counted_units"]) == made == summary(ln.engine).machines["ASSY-03"].counted

        # The history: the file as it was, then the applied version; the running version is the newest.
        versions = (await client.get("/api/v1/mapping/versions", headers=v)).json()
        assert [(x["actor"], x["hash"], x["comment"]) for x in versions] == [
            ("shift-lead", sha(edited), "ASSY-03 commissioned"),
            ("file", sha(running), "the mapping file before the workbench applied the next version")]
        assert versions[0]["diff_summary"] == applied["detail"] and versions[0]["id"] == applied["version_id"]
        now = (await client.get("/api/v1/mapping", headers=v)).json()
        assert (now["text"], now["version_id"]) == (edited, applied["version_id"])
        first = (await client.get(f"/api/v1/mapping/versions/{versions[1]['id']}", headers=v)).json()
        assert first["text"] == running
        assert (await client.get("/api/v1/mapping/versions/999", headers=v)).status_code == 404

        # Restore the first: a new version with its text; ASSY-03 is gone again.
        restored = (await client.post(f"/api/v1/mapping/versions/{first['id']}/restore", headers=o,
                                      json={"base_hash": sha(edited)})).json()
        assert restored["outcome"] == "applied" and restored["detail"].startswith(
            "machines added: none; removed: ASSY-03;")
        assert file.read_text() == running and sorted(ln.gateway.machines) == ["PRESS-01"]
        history = (await client.get("/api/v1/mapping/versions", headers=v)).json()
        assert [(x["actor"], x["hash"], x["comment"]) for x in history][0] == (
            "shift-lead", sha(running), f"restored version {first['id']}")
        assert len(history) == 3

        # Modbus: a register range, every decoding side by side, through the gateway's codec.
        lathe_truth = lathe.models["LATHE-04"].truth()
        read = await client.get("/api/v1/browse/modbus/lathes", params={"start": 100, "count": 12}, headers=v)
        assert read.status_code == 200, read.text
        rows = {r["address"]: r for r in read.json()["rows"]}
        assert read.json()["orders"]["CDAB"] == {"word_order": "little", "byte_order": "big"}
        assert rows[100]["uint32"]["CDAB"] == lathe_truth["good_count"] == 70_000
        assert rows[100]["uint32"]["ABCD"] == (70_000 % 65_536) * 65_536 + 70_000 // 65_536
        assert rows[100]["raw"] == 70_000 % 65_536 and rows[100]["hex"] == f"{70_000 % 65_536:04x}"
        assert rows[100]["uint16"] == {"AB": 70_000 % 65_536, "BA": int.from_bytes(
            (70_000 % 65_536).to_bytes(2, "big"), "little")}
        assert rows[104]["uint32"]["CDAB"] == lathe_truth["scrap_count"]
        assert rows[109]["uint64"] == {} and rows[111]["uint32"] == {}  # past the range read
        assert set(rows[108]["uint64"]) == {"ABCD", "CDAB", "BADC", "DCBA"}
        beyond = await client.get("/api/v1/browse/modbus/lathes", params={"start": 65_530, "count": 10}, headers=v)
        assert beyond.status_code == 422
    with ln.engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(schema.mapping_versions)).scalar() == 3
        # Each apply (the restore too) is a person's action in the audit trail, with its version.
        trail = conn.execute(select(schema.audit_log.c.actor, schema.audit_log.c.actor_kind, schema.audit_log.c.action,
                                    schema.audit_log.c.postings).where(schema.audit_log.c.action == "mapping.apply")
                             .order_by(schema.audit_log.c.id)).all()
        assert [(r.actor, r.actor_kind, r.action) for r in trail] == [("shift-lead", "api", "mapping.apply")] * 2
        assert [r.postings for r in trail] == [f"mapping_version:{x['id']}" for x in reversed(history[:2])]


@pytest.mark.slow
async def test_an_unreachable_plc_is_a_problem_and_a_gateway_without_its_file_cannot_be_edited(sqlite_url, tmp_path):
    opc, lathe = plcs()  # the Modbus device is never started
    file = tmp_path / "plant.yaml"
    file.write_text(RUNNING.format(opc=opc.port, modbus=lathe.port, ns=NS))
    ln = Line(sqlite_url, opc, load_mapping(file))
    async with served(ln.gateway) as (_, client):
        v = auth(VIEWER)
        no_file = await client.get("/api/v1/mapping", headers=v)
        assert no_file.status_code == 409 and no_file.json()["type"] == "urn:backflush-gateway:problem:no-mapping-file"
        ln.gateway.mapping_file = file
        down = await client.get("/api/v1/browse/modbus/lathes", headers=v)
        assert down.status_code == 502 and down.json()["type"] == "urn:backflush-gateway:problem:modbus-read-failed"
        assert down.json()["detail"].startswith(f"lathes (127.0.0.1:{lathe.port} unit 1), holding 0..15: cannot connect")
        opc_down = await client.get("/api/v1/browse/opcua/line", headers=v)
        assert opc_down.status_code == 502 and opc_down.json()["type"] == "urn:backflush-gateway:problem:browse-failed"


@pytest.mark.postgres
async def test_an_apply_the_gateway_refuses_puts_the_file_back(pg_url, tmp_path):
    """Valid, but ASSY-03 is owned by another running gateway: the reload refuses, the file is as before."""
    engine = open_engine(pg_url)
    with engine.begin() as conn:
        leases.acquire(conn, Me("line-b", "edge-2", 4242), ["ASSY-03"], 60, all_or_nothing=True)
    (tmp_path / "plant").mkdir()
    file = tmp_path / "plant" / "plant.yaml"
    running = RUNNING.format(opc=free_port(), modbus=free_port(), ns=NS)
    file.write_text(running)
    gateway = Gateway(load_mapping(file), engine, lease=LeaseOptions("line-a", 10, me=Me.here("line-a")),
                      mapping_file=file)
    gateway.keeper.start()
    gateway._restore()
    edited = running + ASSY.format(good=f'{{node: "{NS}ASSY-03.GoodCount", type: uint32}}',
                                   scrap=f'{{node: "{NS}ASSY-03.ScrapCount", type: uint32}}')
    try:
        async with served(gateway) as (_, client):
            result = (await client.post("/api/v1/mapping/apply", headers=auth(OPERATOR), json={
                "text": edited, "base_hash": sha(running), "comment": "ASSY-03"})).json()
            versions = (await client.get("/api/v1/mapping/versions", headers=auth(VIEWER))).json()
    finally:
        gateway.keeper.release()
    assert (result["outcome"], result["errors"], result["hash"], result["version_id"]) == (
        "refused", [], sha(running), None)
    assert result["detail"] == ("machines it adds are owned by another running gateway\n"
                                "ASSY-03: instance 'line-b' on host edge-2, pid 4242\nthe file is back as it was")
    assert file.read_text() == running and list(file.parent.iterdir()) == [file]
    assert list(gateway.machines) == ["PRESS-01"] and versions == []
    with engine.connect() as conn:
        recorded = conn.execute(select(schema.mapping_reloads)).one()
    assert (recorded.instance, recorded.requested_by, recorded.outcome) == ("line-a", "workbench", "refused")
