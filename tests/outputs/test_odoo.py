"""Odoo target against the JSON-RPC stand-in over real HTTP: one production per external id and
one "done" per production, whatever the network or a twice-executed RPC does; wizards parked."""

from __future__ import annotations

import pytest

from gateway.outputs.base import Target, Verdict
from gateway.outputs.odoo import OdooConfig, OdooTarget, external_id
from tests.outputs.erp_support import delivery, settle
from tests.outputs.standins import OdooStandIn

TARGET = "odoo-main"
XMLID = "backflush_gateway.C_0123456789abcdef0123_confirmation_odoo_main"


def config(url: str, **extra) -> OdooConfig:
    return OdooConfig(**{"url": url, "database": "plant", "user": "gateway", "password": "odoo-pw", **extra})


@pytest.fixture
async def odoo():
    async with OdooStandIn() as standin:
        yield standin


@pytest.fixture
async def target(odoo):
    t = OdooTarget(TARGET, config(odoo.url, timeout_s=1.0))
    yield t
    await t.close()


def test_external_ids_keep_to_odoos_characters():
    assert external_id("backflush_gateway", delivery(TARGET).key) == XMLID


async def test_delivered_once_as_a_done_production(odoo, target):
    assert isinstance(target, Target)
    d = delivery(TARGET)
    assert [o.verdict for o in await settle(target, d)] == [Verdict.DELIVERED]
    assert odoo.effects == {XMLID: 1} and odoo.done == {XMLID: 1}
    production = odoo.productions[odoo.xmlids[XMLID]]
    assert (production["product_id"], production["product_qty"], production["qty_producing"]) == ("FG-100", "40", "40")
    assert production["origin"] == "1000123 C-0123456789abcdef0123" and production["state"] == "done"
    assert await target.find(d) is True
    # Delivered again (the worker crashed before recording it): found done, nothing sent.
    loads = odoo.calls["mrp.production.load"]
    assert (await target.deliver(d)).verdict is Verdict.DELIVERED
    assert odoo.calls["mrp.production.load"] == loads and odoo.done == {XMLID: 1}


async def test_a_load_executed_twice_creates_one_production(odoo, target):
    odoo.fail("mrp.production.load", "twice")
    d = delivery(TARGET)
    assert [o.verdict for o in await settle(target, d)] == [Verdict.DELIVERED]
    assert len(odoo.productions) == 1 and odoo.effects == {XMLID: 1} and odoo.done == {XMLID: 1}


async def test_load_committed_then_no_answer_continues_the_same_production(odoo, target):
    odoo.fail("mrp.production.load", "hang")
    d = delivery(TARGET)
    outcomes = await settle(target, d)
    # Unknown; find: the production exists but is not done -> send again, which continues it.
    assert [o.verdict for o in outcomes] == [Verdict.UNKNOWN, Verdict.DELIVERED]
    assert outcomes[0].reason.startswith(f"{TARGET} (Odoo) sent, no answer: ReadTimeout")
    assert odoo.calls["mrp.production.load"] == 1
    assert len(odoo.productions) == 1 and odoo.effects == {XMLID: 1} and odoo.done == {XMLID: 1}


async def test_mark_done_committed_then_no_answer_is_found_done(odoo, target):
    odoo.fail("mrp.production.button_mark_done", "hang")
    d = delivery(TARGET)
    assert [o.verdict for o in await settle(target, d)] == [Verdict.UNKNOWN, Verdict.DELIVERED]
    assert odoo.calls["mrp.production.button_mark_done"] == 1 and odoo.done == {XMLID: 1}


async def test_5xx_and_a_slow_answer(odoo, target):
    odoo.fail("mrp.production.action_confirm", "down")
    odoo.fail("mrp.production.write", "error")
    odoo.fail("mrp.production.button_mark_done", "slow")
    d = delivery(TARGET)
    outcomes = await settle(target, d)
    assert [o.verdict for o in outcomes] == [Verdict.RETRY, Verdict.RETRY, Verdict.DELIVERED]
    assert [o.reason for o in outcomes[:2]] == [f"{TARGET} (Odoo) HTTP 503: Service Unavailable",
                                                f"{TARGET} (Odoo) HTTP 500: Internal Server Error"]
    assert odoo.effects == {XMLID: 1} and odoo.done == {XMLID: 1}


@pytest.mark.parametrize(("wizard", "text"), [
    ("backorder", "mrp.production.backorder (You produced less than initial demand)"),
    ("consumption", "mrp.consumption.warning (Consumption Warning)"),
])
async def test_a_wizard_instead_of_done_is_parked_with_its_name(odoo, target, wizard, text):
    odoo.fail("mrp.production.button_mark_done", "wizard", wizard=wizard)
    d = delivery(TARGET)
    outcomes = await settle(target, d)
    assert [o.verdict for o in outcomes] == [Verdict.PARK]
    record = odoo.xmlids[XMLID]
    assert outcomes[0].reason == (f"Odoo did not finish production {record} ({XMLID}): button_mark_done answered "
                                  f"with the wizard {text}")
    assert odoo.done == {} and odoo.productions[record]["state"] == "confirmed"
    assert await target.find(d) is False
    # A person dealt with it in Odoo and retries: the same production is finished, not a new one.
    assert [o.verdict for o in await settle(target, d)] == [Verdict.DELIVERED]
    assert odoo.effects == {XMLID: 1} and odoo.done == {XMLID: 1}


async def test_a_user_error_is_parked_with_odoos_message(odoo, target):
    odoo.fail("mrp.production.button_mark_done", "refuse", name="odoo.exceptions.UserError",
              message="You need to supply Lot/Serial Number for products and 'consume' them: RM-STEEL")
    outcomes = await settle(target, delivery(TARGET))
    record = odoo.xmlids[XMLID]
    assert [(o.verdict, o.reason) for o in outcomes] == [(Verdict.PARK, (
        f"Odoo refused marking production {record} ({XMLID}) done: odoo.exceptions.UserError: You need to supply "
        "Lot/Serial Number for products and 'consume' them: RM-STEEL"))]
    assert odoo.done == {}


async def test_an_unknown_product_is_parked_with_the_import_message(odoo):
    t = OdooTarget(TARGET, config(odoo.url, products={"FG-100": "FG-100-OLD"}))
    try:
        outcome = await t.deliver(delivery(TARGET))
    finally:
        await t.close()
    assert (outcome.verdict, outcome.reason) == (Verdict.PARK, (
        f"Odoo refused creating the production of {XMLID}: No matching record found for name 'FG-100-OLD' in "
        "field 'Product'"))
    assert odoo.effects == {}


async def test_earlier_operations_send_nothing_and_a_wrong_password_is_retried(odoo, target):
    assert (await target.deliver(delivery(TARGET, final=False))).verdict is Verdict.DELIVERED
    assert sum(odoo.calls.values()) == 0
    t = OdooTarget(TARGET, config(odoo.url, password="nope"))
    try:
        outcome = await t.deliver(delivery(TARGET))
    finally:
        await t.close()
    assert (outcome.verdict, outcome.reason) == (
        Verdict.RETRY, f"{TARGET} (Odoo) refused the login of gateway on database plant")
    assert "nope" not in repr(t.config)
