"""What a reload of the mapping changes (``gateway.reloading.diff_mappings``), and a reload refused
because a machine it adds is owned by another running gateway (nothing changes)."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from gateway.ledger import leases
from gateway.ledger import schema
from gateway.ledger.leases import Me
from gateway.ledger.schema import open_engine
from gateway.mapping.load import load_mapping
from gateway.ownership import LeaseOptions
from gateway.reloading import MappingChange, diff_mappings
from gateway.service import Gateway

HEAD = """
sources:
  line:
    opcua: {{endpoint: "opc.tcp://127.0.0.1:4840", publishing_interval_ms: {interval}}}
  cell:
    modbus: {{host: 127.0.0.1, port: 5020}}
machines:
"""
PRESS = """  PRESS-01:
    source: {source}
    work_center: WC-PRESS
    counters:
      good: {{{tag}}}
    order: "1000123"
    confirm: {{every_units: {every}}}
"""
ASSY = """  ASSY-03:
    source: line
    work_center: WC-ASSY
    counters:
      good: {node: "ns=2;s=ASSY-03.GoodCount"}
    order: "1000124"
"""
OPC_TAG = 'node: "ns=2;s=PRESS-01.GoodCount"'


def mapping(tmp_path, name="m.yaml", *, interval=100, every=100, source="line", tag=OPC_TAG, assy=True):
    path = tmp_path / name
    path.write_text(HEAD.format(interval=interval) + PRESS.format(source=source, tag=tag, every=every)
                    + (ASSY if assy else ""))
    return path


def diff(tmp_path, **new):
    return diff_mappings(load_mapping(mapping(tmp_path, "old.yaml")), load_mapping(mapping(tmp_path, **new)))


@pytest.mark.parametrize("new, change", [
    ({}, MappingChange(unchanged=("ASSY-03", "PRESS-01"))),
    # A confirm rule is not read from the PLC: the source goes on, the machine is redefined.
    ({"every": 40}, MappingChange(changed=("PRESS-01",), unchanged=("ASSY-03",))),
    # Settings of a source: a new connection; its machines are unchanged.
    ({"interval": 250}, MappingChange(unchanged=("ASSY-03", "PRESS-01"), sources_reconnected=("line",))),
    # Another tag: the source reads a new set of tags, over a new connection.
    ({"tag": 'node: "ns=2;s=PRESS-01.ShotCount"'},
     MappingChange(changed=("PRESS-01",), unchanged=("ASSY-03",), sources_reconnected=("line",))),
    ({"assy": False}, MappingChange(removed=("ASSY-03",), unchanged=("PRESS-01",), sources_reconnected=("line",))),
    # Moved to the Modbus source: read there from now on; the OPC UA source keeps ASSY-03.
    ({"source": "cell", "tag": "register: 100, type: uint32"},
     MappingChange(changed=("PRESS-01",), unchanged=("ASSY-03",), sources_reconnected=("line",),
                   sources_started=("cell",))),
])
def test_what_a_new_mapping_changes(tmp_path, new, change):
    assert diff(tmp_path, **new) == change


def test_the_summary_names_every_change(tmp_path):
    added = diff_mappings(load_mapping(mapping(tmp_path, "old.yaml", assy=False)), load_mapping(mapping(tmp_path)))
    assert added.summary() == ("machines added: ASSY-03; removed: none; changed: none; unchanged: 1; "
                               "sources reconnected: line; started: none; stopped: none")


@pytest.mark.postgres
async def test_a_reload_adding_a_machine_another_gateway_owns_is_refused_and_changes_nothing(pg_url, tmp_path):
    engine = open_engine(pg_url)
    other = Me("line-b", "edge-2", 4242)
    with engine.begin() as conn:
        leases.acquire(conn, other, ["ASSY-03"], 60, all_or_nothing=True)
    path = mapping(tmp_path, assy=False)
    running = load_mapping(path)
    gateway = Gateway(running, engine, lease=LeaseOptions("line-a", 10, me=Me.here("line-a")), mapping_file=path)
    gateway.keeper.start()
    gateway._restore()
    mapping(tmp_path)  # ASSY-03 added to the file

    assert await gateway.reload() == ("refused", "machines it adds are owned by another running gateway\n"
                                                 "ASSY-03: instance 'line-b' on host edge-2, pid 4242")
    assert gateway.mapping is running and list(gateway.machines) == ["PRESS-01"]
    assert gateway.keeper.names == ["PRESS-01"] and list(gateway.keeper.tokens) == ["PRESS-01"]
    with engine.connect() as conn:
        owner = conn.execute(select(schema.machine_leases.c.owner).where(schema.machine_leases.c.machine == "ASSY-03"))
        assert owner.scalar_one() == "line-b"
        recorded = conn.execute(select(schema.mapping_reloads)).one()
    assert (recorded.instance, recorded.requested_by, recorded.outcome) == ("line-a", "signal", "refused")
    gateway.keeper.release()


def test_a_new_application_uri_or_pki_folder_reconnects_the_opc_ua_sources_only(tmp_path):
    old = load_mapping(mapping(tmp_path, "old.yaml"))
    path = mapping(tmp_path)
    path.write_text('application_uri: "urn:other:backflush-gateway"\npki: certificates\n' + path.read_text())
    assert diff_mappings(old, load_mapping(path)) == MappingChange(unchanged=("ASSY-03", "PRESS-01"),
                                                                  sources_reconnected=("line",))


def test_the_same_pki_folder_written_relative_or_absolute_changes_nothing(tmp_path, monkeypatch):
    """The workbench checks an edited text from a file beside the running one, by its absolute path."""
    monkeypatch.chdir(tmp_path)
    mapping(tmp_path, "old.yaml")
    old = load_mapping("old.yaml")
    assert diff_mappings(old, load_mapping(tmp_path / "old.yaml")) == MappingChange(
        unchanged=("ASSY-03", "PRESS-01"))
