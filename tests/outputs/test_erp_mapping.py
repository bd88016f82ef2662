"""The ERP outputs in a mapping file: their settings checked where they are written, secrets from
the environment and never shown, and a target of the right kind built for each."""

from __future__ import annotations

import pytest

from gateway.mapping.load import load_mapping, read_mapping
from gateway.outputs import registry
from gateway.outputs.erpnext import ErpNextTarget
from gateway.outputs.odoo import OdooTarget
from gateway.outputs.sap_odata import SapODataTarget

MAPPING = """\
sources:
  line-1:
    opcua: {endpoint: "opc.tcp://127.0.0.1:4840"}
machines:
  PRESS-01:
    source: line-1
    work_center: WC-PRESS
    counters:
      good: {node: "ns=2;s=Press01.GoodCount"}
    order: "1000123"
outputs:
  erpnext-main:
    erpnext: {url: "https://erp.example.com", api_key: gateway, api_secret: "${ERPNEXT_API_SECRET}",
              warehouses: {LS-PRESS: "Line Side - P"}}
  odoo-main:
    odoo: {url: "https://odoo.example.com", database: plant, user: gateway, password: "${ODOO_API_KEY}"}
  s4:
    sap_odata: {url: "https://s4.example.com:44300", sap_client: "100", user: GATEWAY, password: "${SAP_PASSWORD}",
                plant: "1010", storage_locations: {LS-PRESS: PR01}}
    machines: [PRESS-01]
"""


@pytest.fixture
def secrets(monkeypatch):
    values = {"ERPNEXT_API_SECRET": "erp-Secret-1", "ODOO_API_KEY": "odoo-Secret-2", "SAP_PASSWORD": "sap-Secret-3"}
    for name, value in values.items():
        monkeypatch.setenv(name, value)
    return values


async def test_each_erp_output_builds_its_target_with_the_secret_from_the_environment(tmp_path, secrets):
    (tmp_path / "mapping.yaml").write_text(MAPPING)
    mapping = load_mapping(tmp_path / "mapping.yaml")
    assert {name: out.kind for name, out in mapping.outputs.items()} == {
        "erpnext-main": "erpnext", "odoo-main": "odoo", "s4": "sap_odata"}
    assert registry.routes(mapping) == {"erpnext-main": None, "odoo-main": None, "s4": ["PRESS-01"]}
    built = {name: registry.build(name, mapping) for name in mapping.outputs}
    try:
        assert [type(t) for t in built.values()] == [ErpNextTarget, OdooTarget, SapODataTarget]
        assert built["erpnext-main"]._client.headers["authorization"] == "token gateway:erp-Secret-1"
        assert built["odoo-main"]._password == "odoo-Secret-2"
        assert built["s4"].config.storage_locations == {"LS-PRESS": "PR01"}
        shown = repr(mapping)
        assert not any(secret in shown for secret in secrets.values())
    finally:
        for target in built.values():
            await target.close()


def test_a_mistake_in_an_erp_output_names_its_line_and_key(tmp_path, secrets):
    (tmp_path / "mapping.yaml").write_text(
        MAPPING.replace("api_key: gateway,", "api_kee: gateway,").replace('sap_client: "100"', 'sap_client: "1"'))
    errors = [str(e).replace(f"{tmp_path}/", "") for e in read_mapping(tmp_path / "mapping.yaml").errors]
    assert errors == [
        "mapping.yaml:13: outputs.erpnext-main.erpnext: missing required key 'api_key'",
        "mapping.yaml:13: outputs.erpnext-main.erpnext: unknown key 'api_kee' (allowed: url, api_key, api_secret, "
        "timeout_s, work_order, company, items, warehouses)",
        "mapping.yaml:18: outputs.s4.sap_odata.sap_client: a SAP client is three digits, such as 100; got '1'",
    ]
