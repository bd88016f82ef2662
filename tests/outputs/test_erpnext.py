"""ERPNext target against the Frappe stand-in over real HTTP: one Stock Entry per key, whatever
the network does, and refusals parked with Frappe's own message."""

from __future__ import annotations

import pytest

from gateway.outputs.base import Target, Verdict
from gateway.outputs.erpnext import ErpNextConfig, ErpNextTarget, stock_entry
from gateway.outputs.erp_common import read_confirmation
from tests.outputs.erp_support import delivery, settle
from tests.outputs.standins import ErpNextStandIn

TARGET = "erpnext-main"


def config(url: str, **extra) -> ErpNextConfig:
    return ErpNextConfig(url=url, api_key="k1", api_secret="s1", **extra)


@pytest.fixture
async def erp():
    async with ErpNextStandIn() as standin:
        yield standin


@pytest.fixture
async def target(erp):
    t = ErpNextTarget(TARGET, config(erp.url, timeout_s=1.0, warehouses={"LS-PRESS": "Line Side - P"}))
    yield t
    await t.close()


def test_the_stock_entry_of_a_final_confirmation():
    c = read_confirmation(delivery(TARGET).payload)
    body = stock_entry(c, "KEY", config("http://erp", items={"RM-CLIP": "CLIP-7"}))
    assert body["name"] == "KEY" and body["purpose"] == "Manufacture" and body["work_order"] == "1000123"
    assert body["fg_completed_qty"] == "40" and body["docstatus"] == 1
    assert body["items"] == [
        {"item_code": "RM-STEEL", "qty": "8.400", "uom": "KG", "s_warehouse": "LS-PRESS"},
        {"item_code": "CLIP-7", "qty": "84", "uom": "PC", "s_warehouse": "LS-PRESS"},
        {"item_code": "FG-100", "qty": "40", "uom": "PC", "t_warehouse": "FG-STORE", "is_finished_item": 1,
         "batch_no": "1000123"},
    ]
    earlier = stock_entry(read_confirmation(delivery(TARGET, final=False).payload), "KEY", config("http://erp"))
    assert earlier["purpose"] == "Material Consumption for Manufacture" and earlier["fg_completed_qty"] == "42"


def test_the_secret_stays_out_of_the_config_repr():
    assert "s1" not in repr(config("http://erp")) and "**********" in repr(config("http://erp"))


async def test_delivered_once_named_by_its_key(erp, target):
    assert isinstance(target, Target)
    d = delivery(TARGET)
    assert [o.verdict for o in await settle(target, d)] == [Verdict.DELIVERED]
    assert erp.effects == {d.key: 1}
    doc = erp.docs[("Stock Entry", d.key)]
    assert doc["docstatus"] == 1 and doc["items"][0]["s_warehouse"] == "Line Side - P"
    assert await target.find(d) is True
    assert await target.find(delivery(TARGET, confirmation_id="C-ffffffffffffffffffff")) is False


async def test_sent_again_after_it_went_through_is_a_name_conflict_and_delivered(erp, target):
    d = delivery(TARGET)
    assert (await target.deliver(d)).verdict is Verdict.DELIVERED
    again = await target.deliver(d)
    assert again.verdict is Verdict.DELIVERED
    assert erp.calls["create"] == 2 and erp.effects == {d.key: 1}


async def test_committed_then_no_answer_is_unknown_and_found(erp, target):
    erp.fail("create", "hang")
    d = delivery(TARGET)
    outcomes = await settle(target, d)
    assert [o.verdict for o in outcomes] == [Verdict.UNKNOWN, Verdict.DELIVERED]
    assert outcomes[0].reason.startswith(f"{TARGET} (ERPNext) sent, no answer: ReadTimeout")
    assert erp.calls["create"] == 1 and erp.effects == {d.key: 1}


async def test_a_proxy_504_after_the_commit_is_unknown_and_found(erp, target):
    erp.fail("create", "timeout504")
    d = delivery(TARGET)
    assert [o.verdict for o in await settle(target, d)] == [Verdict.UNKNOWN, Verdict.DELIVERED]
    assert erp.effects == {d.key: 1}


async def test_5xx_is_retried_and_posts_once(erp, target):
    erp.fail("create", "down")
    erp.fail("create", "error")
    d = delivery(TARGET)
    outcomes = await settle(target, d)
    assert [o.verdict for o in outcomes] == [Verdict.RETRY, Verdict.RETRY, Verdict.DELIVERED]
    assert outcomes[0].reason == f"{TARGET} (ERPNext) HTTP 503: Service Unavailable"
    assert erp.calls["create"] == 3 and erp.effects == {d.key: 1}


async def test_a_slow_answer_within_the_timeout_is_delivered(erp, target):
    erp.fail("create", "slow")
    d = delivery(TARGET)
    assert [o.verdict for o in await settle(target, d)] == [Verdict.DELIVERED]
    assert erp.effects == {d.key: 1}


async def test_target_down_is_retry_without_effect():
    t = ErpNextTarget(TARGET, config("http://127.0.0.1:9", timeout_s=1.0))
    try:
        outcome = await t.deliver(delivery(TARGET))
        assert outcome.verdict is Verdict.RETRY
        assert outcome.reason.startswith(f"{TARGET} (ERPNext) not reachable: ConnectError")
        assert await t.find(delivery(TARGET)) is None  # cannot tell: never "not there"
    finally:
        await t.close()


async def test_insufficient_stock_is_parked_with_frappes_message(erp, target):
    erp.fail("create", "refuse", exc_type="NegativeStockError",
             message='8.4 units of Item <a href="/app/item/RM-STEEL">RM-STEEL</a> needed in Warehouse '
                     'Line Side - P to complete this transaction.')
    d = delivery(TARGET)
    outcomes = await settle(target, d)
    assert [o.verdict for o in outcomes] == [Verdict.PARK]
    assert outcomes[0].reason == (
        f"ERPNext refused Stock Entry {d.key} (HTTP 417): NegativeStockError: 8.4 units of Item RM-STEEL needed "
        "in Warehouse Line Side - P to complete this transaction.")
    assert erp.effects == {}


async def test_a_naming_series_that_drops_our_name_is_parked_saying_what_to_set():
    async with ErpNextStandIn(naming="naming_series") as erp:
        t = ErpNextTarget(TARGET, config(erp.url))
        try:
            outcome = await t.deliver(delivery(TARGET))
        finally:
            await t.close()
    assert outcome.verdict is Verdict.PARK
    assert outcome.reason.startswith("ERPNext named the Stock Entry MAT-STE-2026-00001, not C-0123456789abcdef0123:"
                                     "confirmation:erpnext-main: its naming ignores the client's name")
    assert "'Set by user'" in outcome.reason


async def test_wrong_credentials_are_retried_with_frappes_answer(erp):
    t = ErpNextTarget(TARGET, ErpNextConfig(url=erp.url, api_key="k1", api_secret="wrong"))
    try:
        outcome = await t.deliver(delivery(TARGET))
    finally:
        await t.close()
    assert outcome.verdict is Verdict.RETRY
    assert outcome.reason == f"{TARGET} (ERPNext) refused the login (HTTP 401): AuthenticationError: " \
                             "Invalid API key or secret"
    assert erp.effects == {}


async def test_other_kinds_and_broken_payloads_are_parked(target, erp):
    reversal = await target.deliver(delivery(TARGET, what="reversal"))
    assert reversal.verdict is Verdict.PARK
    assert reversal.reason == f"{TARGET}: ERPNext gets confirmations only; a reversal is posted there by hand"
    broken = delivery(TARGET)
    broken.payload.pop("operation")
    outcome = await target.deliver(broken)
    assert (outcome.verdict, outcome.reason) == (Verdict.PARK, f"{TARGET}: payload lacks operation")
    assert erp.effects == {} and erp.calls["create"] == 0
