"""Outbox → ERPNext, Odoo and SAP through the real delivery workers: confirmations posted in a
real ledger (SQLite and PostgreSQL) reach each ERP stand-in exactly once by key while the
stand-ins are down, fail, answer slowly and commit then time out; a wizard parks its row with
Odoo's words, and a person's retry finishes the same production."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import select

from gateway.ledger import outbox
from gateway.ledger import schema
from gateway.mapping.model import Output
from gateway.outputs import registry
from gateway.outputs.odoo import external_id
from gateway.outputs.sap_odata import confirmation_text
from gateway.outputs.worker import DeliveryWorker, WorkerOptions
from tests.outputs.standins import ErpNextStandIn, OdooStandIn, SapStandIn
from tests.outputs.test_webhook_delivery import MASTERDATA, T
from tests.support import ledger_with_masterdata, post_units

ORDERS = ("7000001", "7000002")


@pytest.fixture
def engine(ledger_url, tmp_path):
    e = ledger_with_masterdata(ledger_url, MASTERDATA, tmp_path)
    outbox.set_routes(e, {"erpnext": None, "odoo": None, "s4": None})
    yield e
    e.dispose()


def worker(engine, name: str, settings: dict, monkeypatch) -> DeliveryWorker:
    secret = settings.pop("secret")  # what `${NAME}` in a mapping file expands to when it is read
    secret_field = "api_secret" if name == "erpnext" else "password"
    kind = {"erpnext": "erpnext", "odoo": "odoo", "s4": "sap_odata"}[name]
    out = Output(**{kind: {**settings, secret_field: secret, "timeout_s": 1.0}},
                 retry_min_s=0.05, retry_max_s=0.3)
    target = registry.BUILDERS[kind](name, out.settings, None)
    return DeliveryWorker(engine, target, out, options=WorkerOptions(poll_s=0.05, call_timeout_s=10))


def confirm(engine, n: int) -> list[str]:
    """n confirmations of 10 caps, alternating the two orders; their documents (confirmation ids)."""
    return [post_units(engine, i * 10, (i + 1) * 10, order=ORDERS[i % 2], at=T).id for i in range(n)]


def rows(engine, target: str) -> dict[str, tuple[str, str]]:
    with engine.connect() as conn:
        found = conn.execute(select(schema.outbox).where(schema.outbox.c.target == target))
        return {r.key: (r.status, r.last_error) for r in found}


async def run_until(workers: list[DeliveryWorker], check, timeout_s: float = 30.0) -> None:
    tasks = [asyncio.create_task(w.run()) for w in workers]
    try:
        deadline = asyncio.get_running_loop().time() + timeout_s
        while not check():
            assert asyncio.get_running_loop().time() < deadline, "timed out"
            await asyncio.sleep(0.05)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for w in workers:
            await w.target.close()


async def test_every_confirmation_reaches_every_erp_once_by_key_through_faults(engine, monkeypatch):
    documents = confirm(engine, 6)
    async with ErpNextStandIn() as erp, OdooStandIn(products=("CAP",)) as odoo, SapStandIn(orders=ORDERS) as sap:
        erp.fail("create", "down")
        erp.fail("create", "hang")  # committed, never answered: found by name, not sent again
        erp.fail("create", "error")
        odoo.fail("mrp.production.load", "twice")  # odoo#65876: the same import executed twice
        odoo.fail("mrp.production.button_mark_done", "hang")
        odoo.fail("mrp.production.action_confirm", "down")
        sap.fail("create", "hang")  # saved, never answered: found by ConfirmationText
        sap.fail("create", "error")
        sap.fail("create", "slow")
        workers = [
            worker(engine, "erpnext", {"url": erp.url, "api_key": "k1", "secret": "s1"}, monkeypatch),
            worker(engine, "odoo", {"url": odoo.url, "database": "plant", "user": "gateway", "secret": "odoo-pw"},
                   monkeypatch),
            worker(engine, "s4", {"url": sap.url, "user": "GATEWAY", "secret": "sap-pw"}, monkeypatch),
        ]

        def all_delivered() -> bool:
            return all(status == "delivered" for name in ("erpnext", "odoo", "s4")
                       for status, _ in rows(engine, name).values())

        await run_until(workers, all_delivered)

    assert erp.effects == {f"{d}:confirmation:erpnext": 1 for d in documents}
    assert odoo.effects == {external_id("backflush_gateway", f"{d}:confirmation:odoo"): 1 for d in documents}
    assert odoo.done == odoo.effects and len(odoo.productions) == 6
    assert sap.effects == {confirmation_text(f"{d}:confirmation:s4"): 1 for d in documents}
    assert erp.calls["create"] == 6 + 2  # the 503 and the 500 were sent again; the hang was found, not resent
    assert sap.calls["create"] == 6 + 1  # the 500 was sent again; the hang was found
    # What each ERP got: the resin issued from LS1 and the caps received into FG, 10 at a time.
    entry = erp.docs[("Stock Entry", f"{documents[0]}:confirmation:erpnext")]
    assert [(i["item_code"], i["qty"], i.get("s_warehouse"), i.get("t_warehouse")) for i in entry["items"]] == [
        ("RESIN", "0.100", "LS1", None), ("CAP", "10", None, "FG")]
    assert entry["work_order"] == "7000001" and entry["purpose"] == "Manufacture"
    saved = sap.confirmations[0]
    assert (saved["OrderID"], saved["ConfirmationYieldQuantity"]) in {(o, "10") for o in ORDERS}


async def test_a_wizard_parks_the_row_with_odoos_words_and_a_retry_finishes_it(engine, monkeypatch):
    [document] = confirm(engine, 1)
    key = f"{document}:confirmation:odoo"
    async with OdooStandIn(products=("CAP",)) as odoo:
        odoo.fail("mrp.production.button_mark_done", "wizard", wizard="consumption")
        w = worker(engine, "odoo", {"url": odoo.url, "database": "plant", "user": "gateway", "secret": "odoo-pw"},
                   monkeypatch)
        await run_until([w], lambda: rows(engine, "odoo")[key][0] == "parked")
        record = odoo.xmlids[external_id("backflush_gateway", key)]
        assert rows(engine, "odoo")[key] == ("parked", (
            f"Odoo did not finish production {record} ({external_id('backflush_gateway', key)}): button_mark_done "
            "answered with the wizard mrp.consumption.warning (Consumption Warning)"))
        assert odoo.done == {}
        with engine.connect() as conn:
            row_id = conn.execute(select(schema.outbox.c.id).where(schema.outbox.c.key == key)).scalar()
        outbox.act(engine, "retry", [row_id])
        w = worker(engine, "odoo", {"url": odoo.url, "database": "plant", "user": "gateway", "secret": "odoo-pw"},
                   monkeypatch)
        await run_until([w], lambda: rows(engine, "odoo")[key][0] == "delivered")
    assert odoo.effects == {external_id("backflush_gateway", key): 1} and odoo.done == odoo.effects
